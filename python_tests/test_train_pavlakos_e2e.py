"""Pavlakos 2018 reprojection fine-tuning (TRAINING_SPEC §5.4, preset ``pavlakos_e2e``): the detached
least-squares camera, Eq. 3's terms against a value computed by hand and the pure-PyTorch soft-silhouette
reference, gradients reaching the PosePrior through the SMPL layer from either term, the detection items,
a smoke run from priors checkpoints with exact resume and evaluation, and bad input."""
import json
import math

import numpy as np
import pytest
import torch

from smplfast.data import generate
from smplfast.ops import soft_silhouette_reference

from smplfast_train import pavlakos as P
from smplfast_train.config import ConfigError, load_config
from smplfast_train.loop import TrainingError
from smplfast_train.trainers import TRAINERS, PavlakosE2ETrainer, PavlakosPriorsTrainer

torch.set_num_threads(1)

BANK = dict(prior_bank_size=64, prior_sil_bank_size=32, prior_width=64, prior_vertex_subsample=256)
SMALL = dict(batch_size=3, num_steps=3, e2e_prior_batch=4, log_every=1, ckpt_every=0, eval_max_samples=3,
             eval_splits=["wild_test"], tensorboard=False, **BANK)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pavlakos_e2e")
    generate(root / "wild_train", 4, size=96, split="wild_train", workers=1, progress=False)
    generate(root / "wild_test", 3, size=96, split="wild_test", workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def priors_ckpt(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("priors_run")
    cfg = load_config("pavlakos_priors", "cpu", {**BANK, "data": str(data), "batch_size": 4, "num_steps": 1,
                                                 "prior_vertex_steps": 0, "eval_splits": [], "ckpt_every": 0,
                                                 "tensorboard": False})
    PavlakosPriorsTrainer(cfg, run, progress=False).train()
    return run / "ckpt" / "last.pt"


# ------------------------------------------------------------------------------------------ camera
def test_weak_perspective_fit_exact_and_weighted():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    s_true, t_true = torch.tensor([0.7, 2.0], dtype=torch.float64), torch.tensor([[0.1, -0.2], [0.3, 0.05]], dtype=torch.float64)
    y = s_true[:, None, None] * x + t_true[:, None]
    w = torch.ones(2, 6, dtype=torch.float64)
    y[1, 5] = float("nan")  # an unlabelled joint: weight 0 and a NaN target are ignored
    w[1, 5] = 0.0
    y[0, 4] += 100.0         # an outlier with weight 0
    w[0, 4] = 0.0
    s, t, ok = P.weak_perspective_fit(x, y, w)
    assert ok.all()
    assert torch.allclose(s, s_true, atol=1e-12) and torch.allclose(t, t_true, atol=1e-12)
    # by hand, two points: s = |y1 - y0| / |x1 - x0|, t = mean(y) - s mean(x)
    x2 = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    y2 = torch.tensor([[[1.0, 1.0], [3.0, 1.0]]])
    s2, t2, ok2 = P.weak_perspective_fit(x2, y2, torch.ones(1, 2))
    assert ok2.all() and abs(float(s2) - 2.0) < 1e-6 and torch.allclose(t2, torch.tensor([[1.0, 1.0]]))


def test_weak_perspective_fit_invalid_cases():
    x = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]]).repeat(3, 1, 1)
    y = x.clone()
    y[1] = -x[1]                                  # mirrored in both axes: s < 0
    w = torch.ones(3, 3)
    w[2, 1:] = 0.0                                # one labelled point
    s, t, ok = P.weak_perspective_fit(x, y, w)
    assert ok.tolist() == [True, False, False]
    assert s[1:].tolist() == [1.0, 1.0] and (t[1:] == 0).all()
    s, t, ok = P.weak_perspective_fit(torch.zeros(1, 3, 2), torch.rand(1, 3, 2), torch.ones(1, 3))  # all points equal
    assert not ok.any() and torch.isfinite(s).all() and torch.isfinite(t).all()


# ------------------------------------------------------------------------------------------ losses
def _square_mesh():
    """Two triangles forming the square [-0.5, 0.5]^2 in the model's x, y (z = 1), and its joints."""
    v = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.5, 0.5, 1.0], [-0.5, 0.5, 1.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    joints = torch.tensor([[0.0, 0.0, 1.0], [0.25, -0.25, 1.0]], dtype=torch.float64)
    return v[None], faces, joints[None]


def test_reprojection_losses_by_hand():
    v, faces, j = _square_mesh()
    res = 8
    s, t = torch.tensor([0.8], dtype=torch.float64), torch.tensor([[0.1, 0.0]], dtype=torch.float64)
    target = torch.tensor([[[0.1, 0.0], [0.9, 0.9]]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    mask = torch.zeros(1, res, res, dtype=torch.float64)
    mask[0, 2:6, 2:6] = 1.0
    out = P.reprojection_losses(j, v, faces, s, t, target, w, mask, res=res, sigma=0.1)
    # keypoints by hand: joint 0 projects to (0.1, 0) -> pixel (4.4, 4.0), its target too: 0.
    # joint 1 projects to (0.3, -0.2) -> (5.2, 3.2); target (0.9, 0.9) -> (7.6, 7.6): 0.5 * (2.4^2 + 4.4^2)
    assert abs(float(out["kp"][0]) - 0.5 * (2.4 ** 2 + 4.4 ** 2)) < 1e-9
    # silhouette against the pure-PyTorch reference of the soft rasteriser
    uv = (s[:, None, None] * v[..., :2] + t[:, None] + 1.0) * (0.5 * res)
    ref = soft_silhouette_reference(uv, faces, res, 0.1)
    assert torch.allclose(out["silhouette"], ref, atol=1e-9)
    assert abs(float(out["sil"][0]) - float(((ref - mask) ** 2).sum())) < 1e-9
    # the square projects to u 2.8..6.0, v 2.4..5.6 px: ~1 at pixel (row 4, col 3), 1 px from every edge
    # (the shared diagonal included), ~0 far outside
    assert float(out["silhouette"][0, 4, 3]) > 0.99 and float(out["silhouette"][0, 7, 0]) < 1e-6


def test_reprojection_unlabelled_joint_gives_no_loss_and_no_nan():
    v, faces, j = _square_mesh()
    j = j.clone().requires_grad_(True)
    target = torch.tensor([[[float("nan"), 0.0], [0.0, 0.0]]], dtype=torch.float64)
    w = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    out = P.reprojection_losses(j, v, faces, torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                target, w, torch.zeros(1, 8, 8, dtype=torch.float64), res=8)
    out["kp"].sum().backward()
    assert float(out["kp"].detach()) == 0.0 and torch.isfinite(j.grad).all() and (j.grad == 0).all()


@pytest.mark.parametrize("term", ["kp", "sil"])
def test_gradient_reaches_the_pose_prior_through_smpl(term):
    import smplfast

    torch.manual_seed(0)
    net = P.PavlakosPriors(width=32).eval()
    smpl = smplfast.SMPL(keypoints="lsp_14", create_betas=False, create_global_orient=False, create_body_pose=False,
                         create_transl=False)
    faces = torch.as_tensor(np.asarray(smpl.faces, dtype=np.int64))
    kp = torch.rand(2, 14, 3) * 2 - 1
    kp[..., 2] = 1.0
    mask = torch.zeros(2, 64, 64)
    mask[:, 16:48, 24:40] = 1.0
    pose, betas = net(kp, mask[:, None])
    pose = pose * 0.1 + torch.tensor([math.pi, 0.0, 0.0] + [0.0] * 69)  # an upright body facing the camera
    out = smpl(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
    s, t, ok = P.weak_perspective_fit(out.joints[..., :2].detach(), kp[..., :2], kp[..., 2])
    terms = P.reprojection_losses(out.joints, out.vertices, faces, s, t, kp[..., :2], kp[..., 2], mask)
    terms[term].sum().backward()
    g = net.pose_prior.inp[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    if term == "kp":  # the silhouette input's ShapePrior gets its gradient through beta
        assert float(net.shape_prior.out.weight.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------ data
def test_detection_items(data):
    from smplfast.data import SPINDataset

    ds = SPINDataset(data / "wild_train" / "synth_spin.npz", data / "wild_train", is_train=False, img_res=64, load_masks=True)
    items = P.DetectionItems(ds, seed=5, noise=0.02, drop_prob=0.0, swap_prob=0.0)
    a, b = items[1], items[1]
    assert all(torch.equal(a[k], b[k]) for k in a)
    items.set_epoch(1)
    c = items[1]
    assert not torch.equal(a["detections"], c["detections"]) and torch.equal(a["keypoints"], c["keypoints"])
    assert a["mask"].shape == (64, 64) and a["keypoints"].shape == (14, 3)
    lab = a["keypoints"][:, 2] > 0
    assert (a["detections"][~lab] == 0).all()
    # the noise is 2 % of the box side (2 / 1.2 wide): far below 0.2 in normalised units
    assert (a["detections"][lab, :2] - a["keypoints"][lab, :2]).abs().max() < 0.2


# ------------------------------------------------------------------------------------------ runs
def _cfg(data, ckpt, **over):
    return load_config("pavlakos_e2e", "cpu", {**SMALL, "data": str(data), "e2e_pose_init": str(ckpt),
                                               "e2e_shape_init": str(ckpt), **over})


def test_preset_config(data, priors_ckpt):
    assert TRAINERS["pavlakos_e2e"] is PavlakosE2ETrainer
    cfg = load_config("pavlakos_e2e", "cpu")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.num_steps, cfg.e2e_mu) == ("rmsprop", 8e-5, 16, 500, 10.0)
    assert load_config("pavlakos_e2e", "paper").batch_size == 4
    with pytest.raises(ConfigError):
        load_config("pavlakos_e2e", "cpu", {"e2e_sigma": 0.0})
    with pytest.raises(ConfigError):
        load_config("pavlakos_e2e", "cpu", {"fits": "static"})


def test_init_from_priors_and_refuses_other_checkpoints(data, priors_ckpt, tmp_path):
    tr = PavlakosE2ETrainer(_cfg(data, priors_ckpt), tmp_path / "a", progress=False)
    src = torch.load(priors_ckpt, map_location="cpu", weights_only=False)["model"]
    mine = tr.model.state_dict()
    assert all(torch.equal(mine[k], src[k]) for k in src)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "config": {"trainer": "spin"}}, bad)
    with pytest.raises(TrainingError, match="pavlakos_priors"):
        PavlakosE2ETrainer(_cfg(data, bad), tmp_path / "b", progress=False)


def test_smoke_run_resume_bit_identical_and_evaluation(data, priors_ckpt, tmp_path):
    full = PavlakosE2ETrainer(_cfg(data, priors_ckpt), tmp_path / "full", progress=False)
    assert isinstance(full.optimizer, torch.optim.RMSprop) and isinstance(full.prior_optimizer, torch.optim.RMSprop)
    before = {k: v.clone() for k, v in full.model.state_dict().items()}
    out = full.train()
    lines = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    for k in ("loss_e2e_kp", "loss_e2e_sil", "loss_prior_param", "loss_prior_pose_vertex", "loss_prior_shape_vertex"):
        assert math.isfinite(lines[-1][k]) and lines[-1][k] > 0, k
    after = full.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("pose_prior.out."))
    r = out["eval"]["wild_test"]
    assert r["num"] == 3 and math.isfinite(r["mean"]["pve_model_gt_shape"])
    part = PavlakosE2ETrainer(_cfg(data, priors_ckpt, eval_splits=[], num_steps=1), tmp_path / "part", progress=False)
    part.train()
    res = PavlakosE2ETrainer(_cfg(data, priors_ckpt, eval_splits=[]), tmp_path / "part", resume=True, progress=False)
    assert res.step == 1 and len(res.prior_optimizer.state_dict()["state"]) > 0
    res.train()
    b = res.model.state_dict()
    assert all(torch.equal(after[k], b[k]) for k in after)


def test_no_labelled_joints_gives_zero_finite_loss(data, priors_ckpt, tmp_path):
    tr = PavlakosE2ETrainer(_cfg(data, priors_ckpt, eval_splits=[], e2e_alternate=False), tmp_path / "c", progress=False)
    assert tr.prior_optimizer is None
    batch = tr.stream.next_batch()
    batch["keypoints"] = torch.zeros_like(batch["keypoints"])
    batch["detections"][0, 0, 0] = float("nan")  # a NaN input is treated as a missing joint by the PosePrior
    loss, stats, _ = tr.train_step(batch)
    loss.backward()
    assert float(loss.detach()) == 0.0 and stats["camera_ok"] == 0.0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in tr.model.parameters())


# ------------------------------------------------------------------------------------------ whole network
@pytest.fixture(scope="module")
def human2d_ckpt(data, tmp_path_factory):
    from smplfast_train.trainers import Human2DTrainer

    run = tmp_path_factory.mktemp("human2d_run")
    cfg = load_config("pavlakos_human2d", "cpu", {"data": str(data), "train_splits": {"wild_train": 1.0},
                                                  "batch_size": 2, "num_steps": 1, "hg_width": 16, "img_res": 128,
                                                  "hg_in_res": 128, "eval_splits": [], "ckpt_every": 0,
                                                  "tensorboard": False})
    Human2DTrainer(cfg, run, progress=False).train()
    return run / "ckpt" / "last.pt"


@pytest.mark.parametrize("kp_extract", ["argmax", "softargmax"])
def test_whole_network_run_resume_and_gradient_paths(data, priors_ckpt, human2d_ckpt, tmp_path, kp_extract):
    over = dict(e2e_human2d_init=str(human2d_ckpt), hg_width=16, hg_in_res=128, e2e_kp_extract=kp_extract)
    full = PavlakosE2ETrainer(_cfg(data, priors_ckpt, **over), tmp_path / "full", progress=False)
    assert isinstance(full.model, P.PavlakosPipeline) and full.eval_images_res == 128
    # the reprojection loss alone reaches Human2D: through the confidences and the silhouette (argmax) and
    # the coordinates too (softargmax)
    batch = full.stream.next_batch()
    full.cfg.e2e_alternate = False
    full.human2d_optimizer, prior_opt, full.prior_optimizer = None, full.prior_optimizer, None
    loss, stats, _ = full.train_step(batch)
    loss.backward()
    g = [p.grad for p in full.model.human2d.parameters() if p.grad is not None]
    assert g and all(torch.isfinite(x).all() for x in g) and sum(float(x.abs().sum()) for x in g) > 0
    full.model.zero_grad(set_to_none=True)
    full.cfg.e2e_alternate, full.prior_optimizer = True, prior_opt
    full.human2d_optimizer = torch.optim.RMSprop(full.model.human2d.parameters(), lr=full.cfg.lr)
    full.stream = type(full.stream)(full.train_set.dataset, full.sampler, None, 0)
    out = full.train()
    line = json.loads((tmp_path / "full" / "log.jsonl").read_text().splitlines()[-1])
    for k in ("loss_e2e_kp", "loss_e2e_sil", "hg_loss", "loss_prior_param"):
        assert math.isfinite(line[k]), k
    assert math.isfinite(out["eval"]["wild_test"]["mean"]["pve_model_gt_shape"])
    part = PavlakosE2ETrainer(_cfg(data, priors_ckpt, **over, eval_splits=[], num_steps=1), tmp_path / "part",
                              progress=False)
    part.train()
    res = PavlakosE2ETrainer(_cfg(data, priors_ckpt, **over, eval_splits=[]), tmp_path / "part", resume=True,
                             progress=False)
    assert len(res.human2d_optimizer.state_dict()["state"]) > 0
    res.train()
    ref = PavlakosE2ETrainer(_cfg(data, priors_ckpt, **over, eval_splits=[]), tmp_path / "ref", progress=False)
    ref.train()
    a, b = ref.model.state_dict(), res.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_whole_network_refuses_a_mismatched_human2d(data, priors_ckpt, human2d_ckpt, tmp_path):
    with pytest.raises(TrainingError, match="hg_width"):
        PavlakosE2ETrainer(_cfg(data, priors_ckpt, e2e_human2d_init=str(human2d_ckpt), hg_width=32, hg_in_res=128),
                           tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="pavlakos_human2d"):
        PavlakosE2ETrainer(_cfg(data, priors_ckpt, e2e_human2d_init=str(priors_ckpt), hg_width=16, hg_in_res=128),
                           tmp_path / "y", progress=False)


def test_body_outside_the_crop_and_empty_silhouettes_are_defined():
    v, faces, j = _square_mesh()
    v = v.clone().requires_grad_(True)
    mask = torch.zeros(1, 8, 8, dtype=torch.float64)
    mask[0, 2:5, 2:5] = 1.0
    # the camera puts the whole body far right of the crop: no coverage, the loss is the mask's area
    out = P.reprojection_losses(j, v, faces, torch.ones(1, dtype=torch.float64), torch.tensor([[50.0, 0.0]], dtype=torch.float64),
                                torch.zeros(1, 2, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), mask,
                                res=8)
    assert float(out["sil"].detach()) == pytest.approx(9.0) and float(out["silhouette"].detach().abs().sum()) == 0.0
    out["sil"].sum().backward()
    assert torch.isfinite(v.grad).all() and (v.grad == 0).all()
    # an empty silhouette into the ShapePrior and as the target: finite betas and loss
    net = P.PavlakosPriors(width=16).eval()
    with torch.no_grad():
        _, betas = net(torch.zeros(1, 14, 3), torch.zeros(1, 1, 64, 64))
    assert torch.isfinite(betas).all()
    v2 = v.detach().clone().requires_grad_(True)
    out = P.reprojection_losses(j, v2, faces, torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                torch.zeros(1, 2, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                torch.zeros(1, 8, 8, dtype=torch.float64), res=8)
    out["sil"].sum().backward()
    assert float(out["sil"].detach()) > 0 and torch.isfinite(v2.grad).all() and float(v2.grad.abs().sum()) > 0
