"""Pavlakos 2018 priors (TRAINING_SPEC §5.3): network shapes, the synthetic-instance bank (determinism,
the exact keypoints against a direct projection, detection-noise statistics, packed silhouettes), the
losses by hand, the per-vertex loss's gradient reaching the PosePrior (§8 P1), a smoke run with exact
resume, evaluation on a tiny split, and bad input."""
import json
import math

import numpy as np
import pytest
import torch

import smplfast
from smplfast.data import generate

from smplfast_train import pavlakos as P
from smplfast_train.config import ConfigError, load_config
from smplfast_train.trainers import TRAINERS, PavlakosPriorsTrainer
from smplfast_train.trainers.pavlakos import evaluate_priors

torch.set_num_threads(1)

SMALL = dict(batch_size=8, num_steps=3, prior_vertex_steps=2, prior_vertex_subsample=256, prior_bank_size=64,
             prior_sil_bank_size=32, prior_width=64, log_every=1, ckpt_every=0, eval_max_samples=4,
             eval_splits=["wild_test"], tensorboard=False)


@pytest.fixture(scope="module")
def bank():
    return P.make_instances(96, bank="matched", seed=3, silhouettes=40)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pavlakos")
    generate(root / "wild_test", 4, size=96, split="wild_test", workers=1, progress=False)
    return root


# ------------------------------------------------------------------------------------- networks
def test_network_shapes_and_bad_input():
    net = P.PavlakosPriors().eval()
    assert net.pose_prior.inp[0].in_features == 42 and net.pose_prior.out.out_features == 72
    assert len(net.pose_prior.blocks) == 2 and len(net.shape_prior.blocks) == 1
    assert net.shape_prior.fc[0].in_features == 512 and net.shape_prior.out.out_features == 10
    convs = [m.out_channels for m in net.shape_prior.features if isinstance(m, torch.nn.Conv2d)]
    assert convs == [32, 64, 128, 128, 128]
    kp = torch.zeros(3, 14, 3)             # every keypoint missing (conf 0)
    sil = torch.zeros(3, 1, 64, 64)        # empty silhouette
    with torch.no_grad():
        pose, betas = net(kp, sil)
        assert pose.shape == (3, 72) and betas.shape == (3, 10)
        assert torch.isfinite(pose).all() and torch.isfinite(betas).all()
        kp[0, 0, 0] = float("nan")
        assert torch.isfinite(net.pose_prior(kp)).all()
    net.train()
    pose, betas = net(torch.zeros(4, 14, 3), torch.zeros(4, 1, 64, 64))  # train mode (BN batch statistics)
    assert torch.isfinite(pose).all() and torch.isfinite(betas).all()
    with pytest.raises(ValueError):
        net.pose_prior(torch.zeros(2, 13, 3))


# ------------------------------------------------------------------------------------------ bank
def test_bank_deterministic_prefix_and_provenance(bank):
    again = P.make_instances(96, bank="matched", seed=3, silhouettes=40)
    for k in ("pose", "betas", "focal", "transl", "box", "kp", "sil_packed"):
        assert np.array_equal(bank[k], again[k]), k
    other = P.make_instances(50, bank="matched", seed=4, silhouettes=1)
    assert not np.allclose(other["pose"], bank["pose"][:50])
    assert int(bank["seed"]) == 3 and int(bank["count"]) == 96 and int(bank["sil_count"]) == 40
    assert tuple(bank["families"]) == tuple(smplfast.body.samplers.POSE_FAMILIES)
    assert bank["sil_packed"].shape == (40, 512)
    shifted = P.bank_families("shifted")
    from smplfast.data.splits import LAB_FAMILIES
    assert shifted == tuple(LAB_FAMILIES)


def test_keypoints_equal_direct_projection(bank):
    """The exact keypoints are the perspective projection of the model's lsp_14 joints in the crop."""
    m = smplfast.SMPL(keypoints="lsp_14")
    pose, betas = (torch.from_numpy(bank[k][:16]) for k in ("pose", "betas"))
    j = m(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints.double()
    j = j + torch.from_numpy(bank["transl"][:16]).double()[:, None]
    f = torch.from_numpy(bank["focal"][:16])[:, None, None]
    uv = f * j[..., :2] / j[..., 2:]
    box = torch.from_numpy(bank["box"][:16]).double()
    kp = (uv - box[:, None, :2]) / (0.5 * box[:, None, 2:])
    assert torch.allclose(kp.float(), torch.from_numpy(bank["kp"][:16]), atol=2e-3)
    assert np.abs(bank["kp"]).max() <= 1.0 / 1.2 + 1e-3          # inside the box (1.2 margin)
    # upright bodies seen from the camera: head top above the ankles in the image (y down)
    assert (bank["kp"][:, 13, 1] < bank["kp"][:, 0, 1]).mean() > 0.9


def test_viewpoint_convention():
    """Zero yaw / elevation / roll: global orientation (pi, 0, 0), an upright body facing the camera."""
    R = P.viewpoint_rotation([0.0], [0.0], [0.0])[0]
    assert np.allclose(R, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    m = smplfast.SMPL()
    out = m(global_orient=torch.tensor([[math.pi, 0.0, 0.0]]), body_pose=torch.zeros(1, 69), betas=torch.zeros(1, 10))
    v = out.vertices[0]
    nose_z = v[:, 2][v[:, 1].argmin()]  # the highest point (y down) ...
    assert v[:, 1].argmin() != v[:, 1].argmax()
    # ... and the body's front (the model's +z) now faces -z (the camera)
    front = m(global_orient=torch.zeros(1, 3), body_pose=torch.zeros(1, 69), betas=torch.zeros(1, 10)).vertices[0, :, 2].argmax()
    assert v[front, 2] < v[:, 2].mean()
    assert torch.isfinite(nose_z)


def test_silhouettes_packed_round_trip_and_cover_the_body(bank):
    sil = P.unpack_silhouettes(bank["sil_packed"])
    assert sil.dtype == bool and sil.shape == (40, 64, 64)
    assert np.array_equal(P.pack_silhouettes(sil), bank["sil_packed"])
    rnd = np.random.default_rng(0).uniform(size=(5, 64, 64)) > 0.5
    assert np.array_equal(P.unpack_silhouettes(P.pack_silhouettes(rnd)), rnd)
    assert 0.03 < sil.mean() < 0.4
    px = ((bank["kp"][:40] + 1) * 32).astype(int).clip(0, 63)
    inside = sil[np.arange(40)[:, None], px[..., 1], px[..., 0]]
    assert inside.mean() > 0.9


def test_detection_noise_statistics(bank):
    b = P.InstanceBank(bank)
    ds = P.PriorInstances(b, seed=0)
    a = [ds[i]["keypoints"] for i in range(96)]
    assert all(torch.equal(x, ds[i]["keypoints"]) for i, x in enumerate(a))      # same (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(a[0], ds[0]["keypoints"])
    rng = np.random.default_rng(0)
    kp = np.zeros((14, 2), np.float32)
    draws = np.stack([P.simulate_detections(rng, kp, swap_prob=0.0) for _ in range(4000)])
    dropped = (draws[..., 2] == 0)
    frac_any = dropped.any(1).mean()
    assert abs(frac_any - 0.3) < 0.03
    assert dropped.sum(1).max() <= 3
    kept = draws[~dropped]
    assert kept[:, 2].min() >= 0.5 and kept[:, 2].max() <= 1.0
    sigma = kept[:, :2].std()
    assert abs(sigma - 0.02 * 2 / 1.2) < 0.002
    # a swap exchanges a left limb with its mirror
    kp = np.arange(28, dtype=np.float32).reshape(14, 2)
    sw = P.simulate_detections(np.random.default_rng(1), kp, noise=0.0, drop_prob=0.0, swap_prob=1.0)
    assert not np.allclose(sw[:, :2], kp) and np.allclose(np.sort(sw[:, 0]), np.sort(kp[:, 0]))


# ---------------------------------------------------------------------------------------- losses
def test_param_losses_by_hand():
    gt = torch.zeros(1, 72)
    pred = torch.zeros(1, 72)
    pred[0, 3] = 0.5
    assert P.param_loss(pred, gt, "aa").item() == pytest.approx(0.25)
    assert P.param_loss(pred, gt, "aa", "mean").item() == pytest.approx(0.25 / 72)
    # rotmat: R_x(0.5) - I has entries cos-1 (twice) and +-sin
    expect = 2 * (math.cos(0.5) - 1) ** 2 + 2 * math.sin(0.5) ** 2
    assert P.param_loss(pred, gt, "rotmat").item() == pytest.approx(expect, rel=1e-5)
    assert P.param_loss(pred, gt, "rotmat", "mean").item() == pytest.approx(expect / 216, rel=1e-5)
    # the axis-angle wrap-around (§8 P4): 2 pi apart is the same rotation
    far = gt.clone()
    far[0, 0] = 2 * math.pi
    assert P.param_loss(far, gt, "aa").item() == pytest.approx(4 * math.pi ** 2)
    assert P.param_loss(far, gt, "rotmat").item() < 1e-8
    b = torch.tensor([[1.0, 2.0] + [0.0] * 8, [0.0] * 10])
    assert P.betas_loss(b, torch.zeros(2, 10)).item() == pytest.approx(2.5)


def test_vertex_loss_normalisation():
    pred = torch.zeros(2, 4, 3)
    gt = torch.zeros(2, 4, 3)
    pred[0, 0, 0] = 2.0   # sample 0: one vertex off by 2 -> sum 4; sample 1: nothing
    assert P.vertex_loss(pred, gt).item() == pytest.approx(6890 / 4 * 4 / 2)
    assert P.vertex_loss(pred, gt, num_reference=4).item() == pytest.approx(2.0)
    # the full model: a uniform offset of 1 cm per axis costs 6890 * 3e-4 whatever the vertex count
    m = smplfast.SMPL()
    pose = torch.zeros(1, 72)
    v = m(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=torch.zeros(1, 10)).vertices
    assert P.vertex_loss(v + 0.01, v).item() == pytest.approx(6890 * 3e-4, rel=1e-4)
    # the rescaled subsample has the full loss's expectation
    noise = torch.randn_like(v) * 0.01
    full = P.vertex_loss(v + noise, v).item()
    sub = np.mean([P.vertex_loss((v + noise)[:, idx], v[:, idx]).item()
                   for idx in (torch.randperm(v.shape[1], generator=torch.Generator().manual_seed(s))[:1024]
                               for s in range(20))])
    assert sub == pytest.approx(full, rel=0.05)


def test_vertex_loss_gradient_reaches_pose_prior_first_layer():
    """§8 P1: the per-vertex loss alone trains the PosePrior (vertices inside the autograd graph)."""
    torch.manual_seed(0)
    net = P.PosePrior(width=64)
    smpl = smplfast.SMPL(create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False)
    kp = torch.rand(4, 14, 3)
    pose = net(kp)
    gt = torch.zeros(4, 72)
    gt[:, 0] = math.pi
    v = P.prior_vertex_losses(smpl, pose, gt, torch.zeros(4, 10), subsample=512,
                              generator=torch.Generator().manual_seed(0))
    assert set(v) == {"pose"} and v["pose"].item() > 0
    v["pose"].backward()
    g = net.inp[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # and the ShapePrior's, through SMPL(theta_gt, beta_hat)
    sp = P.ShapePrior(width=64)
    betas = sp(torch.rand(4, 1, 64, 64))
    v = P.prior_vertex_losses(smpl, gt.clone(), gt, torch.zeros(4, 10), pred_betas=betas, sil_pose=gt,
                              sil_betas=torch.ones(4, 10))
    v["shape"].backward()
    assert sp.features[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- the preset
def test_preset_config():
    assert TRAINERS["pavlakos_priors"] is PavlakosPriorsTrainer
    cfg = load_config("pavlakos_priors", "cpu")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.num_steps, cfg.prior_vertex_steps) == ("rmsprop", 3e-4, 128, 5000, 3000)
    cfg = load_config("pavlakos_priors", "paper")
    assert (cfg.batch_size, cfg.num_steps, cfg.prior_vertex_steps) == (256, 100000, 60000)
    with pytest.raises(ConfigError):
        load_config("pavlakos_priors", "cpu", {"prior_param_loss": "euler"})
    with pytest.raises(ConfigError):
        load_config("pavlakos_priors", "cpu", {"prior_vertex_steps": 6000})
    with pytest.raises(ConfigError):
        load_config("spin", "cpu", {"optimizer": "rmsprop"})


def _cfg(data, **over):
    return load_config("pavlakos_priors", "cpu", {**SMALL, "data": str(data), **over})


@pytest.mark.parametrize("param_loss", ["aa", "rotmat"])
def test_smoke_run_resume_bit_identical(data, tmp_path, param_loss):
    full = PavlakosPriorsTrainer(_cfg(data, prior_param_loss=param_loss, eval_splits=[]), tmp_path / "full", progress=False)
    assert isinstance(full.optimizer, torch.optim.RMSprop)
    assert [full.vertex_active(s) for s in range(3)] == [False, True, True]
    full.train()
    lines = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [ln["vertex_phase"] for ln in lines] == [0.0, 1.0, 1.0]
    assert "loss_pose_vertex" in lines[-1] and math.isfinite(lines[-1]["loss"])
    # the same run stopped after one step and resumed
    part = PavlakosPriorsTrainer(_cfg(data, prior_param_loss=param_loss, eval_splits=[], num_steps=1, prior_vertex_steps=0),
                                 tmp_path / "part", progress=False)
    part.train()
    res = PavlakosPriorsTrainer(_cfg(data, prior_param_loss=param_loss, eval_splits=[]), tmp_path / "part", resume=True,
                                progress=False)
    assert isinstance(res.optimizer, torch.optim.RMSprop) and res.step == 1
    res.train()
    a, b = full.model.state_dict(), res.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vertex_loss_ramp(data, tmp_path):
    tr = PavlakosPriorsTrainer(_cfg(data, eval_splits=[], num_steps=6, prior_vertex_steps=4, prior_vertex_ramp=3,
                                    prior_w_vertex=2.0), tmp_path / "ramp", progress=False)
    assert [tr.vertex_weight(s) for s in range(6)] == pytest.approx([0.0, 0.0, 2 / 3, 4 / 3, 2.0, 2.0])
    tr = PavlakosPriorsTrainer(_cfg(data, eval_splits=[], num_steps=6, prior_vertex_steps=4, prior_vertex_ramp=0),
                               tmp_path / "step", progress=False)
    assert [tr.vertex_weight(s) for s in range(6)] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError):
        _cfg(data, prior_vertex_ramp=-1)


def test_evaluation_on_a_tiny_split(data, tmp_path):
    tr = PavlakosPriorsTrainer(_cfg(data, num_steps=1, prior_vertex_steps=0), tmp_path / "run", progress=False)
    out = tr.train()
    r = out["eval"]["wild_test"]
    assert r["num"] == 4
    for k in ("pve_model", "pve_model_gt_shape", "pve", "pa_mpjpe"):
        assert len(r["per_sample"][k]) == 4 and math.isfinite(r["mean"][k]), k
    saved = json.loads((tmp_path / "run" / "eval" / "step_1.json").read_text())
    assert saved["results"]["wild_test"]["per_sample"]["pve_model"] == r["per_sample"]["pve_model"]
    # a perfect pose prediction has pve_model_gt_shape 0: check the metric with an oracle model
    from smplfast.data import SPINDataset
    ds = SPINDataset(data / "wild_test" / "synth_spin.npz", data / "wild_test", is_train=False, img_res=64,
                     load_masks=True)
    items = [ds[i] for i in range(4)]

    class Oracle(torch.nn.Module):
        def forward(self, kp, sil):
            pose = torch.stack([torch.as_tensor(it["pose"]) for it in items]).float()
            betas = torch.stack([torch.as_tensor(it["betas"]) for it in items]).float()
            return pose, betas

    o = evaluate_priors(Oracle(), data / "wild_test")
    neutral = all(int(it["gender"]) not in (0, 1) for it in items)
    if neutral:
        assert max(o["per_sample"]["pve_model"]) < 1e-3
    assert max(o["per_sample"]["pa_mpjpe"]) < 40.0


@pytest.mark.parametrize("which", ["pose", "shape"])
def test_train_one_prior_only(data, tmp_path, which):
    tr = PavlakosPriorsTrainer(_cfg(data, eval_splits=[], num_steps=2, prior_vertex_steps=1, prior_train=which),
                               tmp_path / which, progress=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train()
    after = tr.model.state_dict()
    other = "shape_prior." if which == "pose" else "pose_prior."
    mine = "pose_prior." if which == "pose" else "shape_prior."
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(other))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(mine + "out."))
    line = json.loads((tmp_path / which / "log.jsonl").read_text().splitlines()[-1])
    assert (f"loss_{which}_vertex" in line) and ("loss_pose_param" in line) == (which == "pose")
