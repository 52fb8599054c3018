"""Pavlakos 2018 Human2D (TRAINING_SPEC §5.2): the stacked hourglass's shapes at both tiers, the loss terms
by hand, Gaussian targets, keypoint extraction (argmax / soft-argmax, the coordinate convention, gradients,
missing joints), augmentation consistency of masks and keypoints, non-finite input, the preset, and a
smoke run of the cpu tier with evaluation, checkpoint loading and bit-identical resume."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smplfast.body.keypoints import flip_permutation
from smplfast.data import SPINDataset, generate
from smplfast.data.augment import AugmentationConfig

from smplfast_train.config import ConfigError, load_config
from smplfast_train.data import collate
from smplfast_train.heads import hourglass as H
from smplfast_train.pavlakos import annotated_keypoints
from smplfast_train.trainers import TRAINERS, Human2DTrainer
from smplfast_train.trainers.pavlakos_human2d import (evaluate_human2d, load_human2d_checkpoint,
                                                      mask_at_resolution)

torch.set_num_threads(1)

SMALL = dict(batch_size=4, log_every=1, ckpt_every=0, eval_max_samples=4, eval_splits=["wild_test"], tensorboard=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("human2d")
    for split, n in (("wild_train", 6), ("wild_test", 4)):
        generate(root / split, n, size=96, split=split, workers=1, progress=False)
    return root


def _cfg(data, **over):
    return load_config("pavlakos_human2d", "cpu", {**SMALL, "data": str(data), **over})


def _ds(data, res=128, split="wild_train", **aug):
    npz = data / split / "synth_spin.npz"
    if not aug:
        return SPINDataset(npz, data / split, is_train=False, img_res=res, load_masks=True)
    return SPINDataset(npz, data / split, is_train=True, img_res=res, load_masks=True, seed=0,
                       augmentation=AugmentationConfig(**{"noise_factor": 0.0, **aug}))


# ------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("res,width", [(128, 64), (256, 256)])
def test_shapes_at_both_tiers(res, width):
    net = H.StackedHourglass(num_stacks=2, width=width).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, res, res))
    assert len(outs) == 2
    for o in outs:
        assert o.heatmaps.shape == (1, 14, res // 4, res // 4)
        assert o.silhouette.shape == (1, 2, res // 4, res // 4)
    assert len(net.remap_heatmaps) == 1 and net.stem[0].kernel_size == (7, 7) and net.stem[0].stride == (2, 2)
    with pytest.raises(ValueError, match="multiple of 64"):
        net(torch.randn(1, 3, 96, 96))


# -------------------------------------------------------------------------------------- targets
def test_gaussian_target_peak_at_the_right_pixel():
    kp = torch.tensor([[[5.5, 3.5], [2.0, 6.0]]])                     # pixel (col 5, row 3); a pixel corner
    hm = H.gaussian_heatmaps(kp, torch.tensor([[True, True]]), 8, sigma=1.0)
    assert hm.shape == (1, 2, 8, 8)
    assert hm[0, 0, 3, 5] == 1.0 and hm[0, 0].argmax() == 3 * 8 + 5
    assert math.isclose(float(hm[0, 0, 3, 6]), math.exp(-0.5), rel_tol=1e-6)
    assert math.isclose(float(hm[0, 0, 4, 6]), math.exp(-1.0), rel_tol=1e-6)
    assert math.isclose(float(hm[0, 1, 5, 1]), math.exp(-0.25), rel_tol=1e-6)  # 0.5 px off in x and y
    none = H.gaussian_heatmaps(kp, torch.tensor([[False, True]]), 8)
    assert none[0, 0].abs().sum() == 0
    outside = H.gaussian_heatmaps(torch.tensor([[[9.0, 3.0]]]), torch.tensor([[True]]), 8)
    assert outside.abs().sum() == 0


def test_mask_at_resolution_by_area():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, :2, :2] = True         # a full 2x2 block -> body
    m[0, 4, 4] = True           # 1 of 4 pixels -> background
    m[0, 6:8, 0] = True         # 2 of 4 -> body (at least half)
    out = mask_at_resolution(m, 4)
    want = torch.zeros(1, 4, 4)
    want[0, 0, 0] = want[0, 3, 0] = 1.0
    assert torch.equal(out, want)


# ------------------------------------------------------------------------------------ loss by hand
def test_loss_terms_by_hand():
    g = torch.Generator().manual_seed(0)
    B, K, R = 2, 2, 2
    outs = [H.StackOutput(torch.randn(B, K, R, R, generator=g), torch.randn(B, 2, R, R, generator=g)) for _ in range(2)]
    target = torch.rand(B, K, R, R, generator=g)
    mask = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [0, 1]]])
    kp_w = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, terms = H.human2d_loss(outs, target, mask, kp_w, lam=100.0)
    hm = sil = 0.0
    for o in outs:
        # MSE over the pixels of the 3 labelled joint maps
        sq = [float((o.heatmaps[b, k, i, j] - target[b, k, i, j]) ** 2)
              for b in range(B) for k in range(K) if kp_w[b, k] > 0 for i in range(R) for j in range(R)]
        hm += sum(sq) / len(sq)
        ce = []
        for b in range(B):
            for i in range(R):
                for j in range(R):
                    z0, z1 = float(o.silhouette[b, 0, i, j]), float(o.silhouette[b, 1, i, j])
                    z = z1 if mask[b, i, j] else z0
                    ce.append(-(z - math.log(math.exp(z0) + math.exp(z1))))
        sil += sum(ce) / len(ce)
    assert math.isclose(float(terms["hm"]), hm, rel_tol=1e-5)
    assert math.isclose(float(terms["sil"]), sil, rel_tol=1e-5)
    assert math.isclose(float(loss), 100.0 * hm + sil, rel_tol=1e-5)
    # an unlabelled joint's prediction does not matter; a masked sample's silhouette neither
    outs2 = [H.StackOutput(o.heatmaps.clone(), o.silhouette.clone()) for o in outs]
    outs2[0].heatmaps[0, 1] += 7.0
    outs2[1].silhouette[1] -= 3.0
    _, t2 = H.human2d_loss(outs2, target, mask, kp_w, mask_weight=torch.tensor([1.0, 0.0]))
    _, t1 = H.human2d_loss(outs, target, mask, kp_w, mask_weight=torch.tensor([1.0, 0.0]))
    assert float(t2["hm"]) == pytest.approx(float(t1["hm"])) and float(t2["sil"]) == pytest.approx(float(t1["sil"]))
    _, t0 = H.human2d_loss(outs, target, mask, torch.zeros(B, K), mask_weight=torch.zeros(B))
    assert float(t0["hm"]) == 0.0 and float(t0["sil"]) == 0.0


# -------------------------------------------------------------------------------- keypoint read-out
def test_extract_keypoints_exact_on_a_synthetic_peak():
    W = 16
    hm = torch.zeros(1, 2, W, W)
    hm[0, 0] = H.gaussian_heatmaps(torch.tensor([[[6.5, 9.5]]]), torch.tensor([[True]]), W, sigma=1.0)[0, 0] * 0.8
    hm[0, 1, 5, 8] = 0.3                                               # a single pixel
    # soft-argmax is exact for a peak symmetric within its window (window inside the map)
    want = torch.tensor([[6.5 * 2 / W - 1, 9.5 * 2 / W - 1], [8.5 * 2 / W - 1, 5.5 * 2 / W - 1]])
    for mode in ("argmax", "softargmax"):
        kp = H.extract_keypoints(hm, mode)
        assert kp.shape == (1, 2, 3)
        assert torch.allclose(kp[0, :, :2], want, atol=1e-6), mode
        assert torch.allclose(kp[0, :, 2], torch.tensor([0.8, 0.3]))
    # confidence is clamped to [0, 1]
    assert float(H.extract_keypoints(hm * 3.0)[0, 0, 2]) == 1.0


def test_keypoint_convention_round_trip(data):
    """Normalised crop keypoints -> Gaussian targets -> extraction gives them back (pixel centres exactly,
    any point within half a heatmap pixel), and the dataset's annotated keypoints land on their peak."""
    W = 32
    centres = (torch.tensor([[[3, 7], [20, 11], [31, 0]]], dtype=torch.float32) + 0.5) * (2 / W) - 1
    vis = torch.ones(1, 3, dtype=torch.bool)
    hm = H.gaussian_heatmaps(H.normalised_to_heatmap_pixels(centres, W), vis, W)
    for mode in ("argmax", "softargmax"):
        back = H.extract_keypoints(hm, mode)[..., :2]
        assert torch.allclose(back[:, :2], centres[:, :2], atol=1e-6), mode
        # at the map's corner the Gaussian is cut: soft-argmax is pulled inward, by less than half a pixel
        assert torch.allclose(back[:, 2], centres[:, 2], atol=1e-6 if mode == "argmax" else 1.0 / W), mode
    it = _ds(data)[0]
    kp = annotated_keypoints(it["keypoints"][None])
    inside = (kp[..., 2] > 0) & (kp[..., :2].abs() < 1).all(-1)
    assert inside.sum() >= 8
    hm = H.gaussian_heatmaps(H.normalised_to_heatmap_pixels(kp, W), inside, W)
    for mode in ("argmax", "softargmax"):
        back = H.extract_keypoints(hm, mode)
        err = (back[..., :2] - kp[..., :2]).abs()[inside]
        assert err.max() <= 1.0 / W + 1e-6, mode                     # half a pixel = 1/W normalised
        assert (back[..., 2][~inside] == 0).all()


def test_softargmax_gradient_flows_to_the_heatmaps():
    g = torch.Generator().manual_seed(1)
    hm = (torch.rand(2, 14, 32, 32, generator=g) * 0.5).requires_grad_(True)
    kp = H.extract_keypoints(hm, "softargmax", temperature=10.0)
    (kp[..., 0].sum() + 2.0 * kp[..., 1].sum()).backward()
    assert torch.isfinite(hm.grad).all() and hm.grad.abs().sum() > 0
    assert (hm.grad.flatten(2).abs().sum(-1) > 0).all()             # every joint's map gets a gradient
    # the whole-map variant too; argmax carries a gradient through the confidence only
    hm.grad = None
    H.extract_keypoints(hm, "softargmax", window=None)[..., :2].sum().backward()
    assert hm.grad.abs().sum() > 0
    hm.grad = None
    H.extract_keypoints(hm, "argmax")[..., 2].sum().backward()
    assert hm.grad.abs().sum() > 0


@pytest.mark.parametrize("fill", [0.0, -0.7])
@pytest.mark.parametrize("mode", ["argmax", "softargmax"])
def test_a_heatmap_without_a_positive_maximum_is_a_missing_joint(fill, mode):
    hm = torch.full((1, 2, 8, 8), fill)
    hm[0, 1, 4, 4] = 0.9                                              # one real joint next to the missing one
    hm.requires_grad_(True)
    kp = H.extract_keypoints(hm, mode)
    assert torch.equal(kp[0, 0], torch.zeros(3))
    assert float(kp[0, 1, 2].detach()) == pytest.approx(0.9)
    kp.sum().backward()
    assert torch.isfinite(hm.grad).all()
    assert (hm.grad[0, 0] == 0).all()


def test_silhouette_from_logits():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 0] = math.log(3.0)
    p = H.silhouette_from_logits(logits)
    assert p.shape == (1, 1, 2, 2)
    assert float(p[0, 0, 0, 0]) == pytest.approx(0.75) and float(p[0, 0, 1, 1]) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- augmentation
def test_flip_swaps_keypoints_and_mirrors_the_mask(data):
    plain = _ds(data)
    flipped = _ds(data, flip_prob=1.0, rot_std=0.0, rot_max=0.0, rot_zero_prob=1.0, scale_std=0.0)
    perm = list(flip_permutation("lsp_14"))
    for i in range(3):
        a, b = plain[i], flipped[i]
        assert bool(b["is_flipped"])
        assert torch.equal(b["mask"], a["mask"].flip(-1))
        ka, kb = annotated_keypoints(a["keypoints"][None])[0], annotated_keypoints(b["keypoints"][None])[0]
        mirrored = ka[perm] * torch.tensor([-1.0, 1.0, 1.0])
        assert torch.allclose(kb, mirrored, atol=1e-4)


def test_rotation_and_scale_move_mask_and_keypoints_together(data):
    """The annotated joints lie on the silhouette about as often in rotated / rescaled crops as in plain ones."""
    def on_mask(ds):
        hits = total = 0
        for i in range(len(ds)):
            it = ds[i]
            kp = annotated_keypoints(it["keypoints"][None])[0]
            ok = (kp[:, 2] > 0) & (kp[:, :2].abs() < 0.98).all(-1)
            m = F.max_pool2d(it["mask"].float()[None, None], 5, 1, 2)[0, 0]  # 2-px tolerance at the outline
            px = ((kp[ok, :2] + 1) * 64).long().clamp(0, 127)
            hits += int(m[px[:, 1], px[:, 0]].sum())
            total += int(ok.sum())
        return hits / total

    base = on_mask(_ds(data))
    rotated = on_mask(_ds(data, flip_prob=0.0, rot_std=0.6, rot_max=0.6, rot_zero_prob=0.0, scale_std=0.25))
    assert base > 0.8 and rotated > base - 0.1


# ---------------------------------------------------------------------------------------- preset
def test_preset_config():
    assert TRAINERS["pavlakos_human2d"] is Human2DTrainer
    cfg = load_config("pavlakos_human2d", "cpu")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.hg_in_res, cfg.img_res, cfg.hg_width) == ("rmsprop", 3e-4, 16, 128, 128, 64)
    assert (cfg.hg_stacks, cfg.hg_lambda, cfg.hg_sigma, cfg.threads, cfg.train_splits) == (2, 100.0, 1.0, 1, {"wild_train": 1.0})
    cfg = load_config("pavlakos_human2d", "paper")
    assert (cfg.batch_size, cfg.num_steps, cfg.hg_in_res, cfg.img_res, cfg.hg_width) == (4, 1200000, 256, 256, 256)
    with pytest.raises(ConfigError):
        load_config("spin", "cpu", {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError):
        load_config("pavlakos_human2d", "cpu", {"hg_stacks": 1.5})


# ------------------------------------------------------------------------------------- the loop
def _batch(trainer, rows):
    ds = trainer.train_set.members[0]
    return collate([{**ds[i], "mixed_source": torch.tensor(0)} for i in rows])


def test_nonfinite_image_is_masked_like_the_other_loops(data, tmp_path):
    t = Human2DTrainer(_cfg(data, num_steps=1, eval_splits=[], hg_width=16), tmp_path / "bad", progress=False)
    b = _batch(t, [0, 1, 2])
    b["img"][0, 1, 5, 5] = float("nan")
    loss, stats, _ = t.train_step(b)
    assert torch.isfinite(loss) and stats["masked_nonfinite"] == 1.0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in t.model.parameters())
    b["img"][:] = float("nan")                                        # a whole batch of bad images
    t.optimizer.zero_grad()
    loss, stats, _ = t.train_step(b)
    assert float(loss.detach()) == 0.0 and stats["masked_nonfinite"] == 3.0


def test_img_res_must_match_hg_in_res(data, tmp_path):
    from smplfast_train.loop import TrainingError
    with pytest.raises(TrainingError, match="hg_in_res"):
        Human2DTrainer(_cfg(data, img_res=64, hg_width=16), tmp_path / "x", progress=False)


def test_smoke_run_of_the_cpu_tier_evaluation_and_resume(data, tmp_path):
    full = Human2DTrainer(_cfg(data, num_steps=4), tmp_path / "full", progress=False)
    assert isinstance(full.optimizer, torch.optim.RMSprop)
    assert full.train_set.members[0].load_masks
    out = full.train()
    lines = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(math.isfinite(ln["loss"]) and "loss_hm" in ln and "loss_sil" in ln for ln in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]
    r = out["eval"]["wild_test"]
    assert r["num"] == 4
    for k in ("pck_0.05", "pck_0.1", "sil_iou", "fb_acc", "fb_f1"):
        assert len(r["per_sample"][k]) == 4, k
    assert all(0 <= v <= 1 for v in r["per_sample"]["fb_acc"])
    assert r["mean"]["pck_0.05"] <= r["mean"]["pck_0.1"]
    saved = json.loads((tmp_path / "full" / "eval" / "step_4.json").read_text())
    assert saved["results"]["wild_test"]["per_sample"]["fb_acc"] == r["per_sample"]["fb_acc"]
    # the checkpoint rebuilds the network
    net, cfg = load_human2d_checkpoint(tmp_path / "full" / "ckpt" / "last.pt")
    assert cfg.trainer == "pavlakos_human2d" and not net.training
    again = evaluate_human2d(net, data / "wild_test", in_res=cfg.hg_in_res)
    assert again["per_sample"]["fb_acc"] == r["per_sample"]["fb_acc"]
    # stopped after two steps and resumed: the same weights
    part = Human2DTrainer(_cfg(data, num_steps=2, eval_splits=[]), tmp_path / "part", progress=False)
    part.train()
    res = Human2DTrainer(_cfg(data, num_steps=4, eval_splits=[]), tmp_path / "part", resume=True, progress=False)
    assert isinstance(res.optimizer, torch.optim.RMSprop) and res.step == 2
    res.train()
    a, b = full.model.state_dict(), res.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_metrics_of_an_oracle(data):
    """A network that outputs the targets scores PCK 1 and IoU ~1."""
    ds = _ds(data, split="wild_test")
    items = [ds[i] for i in range(4)]

    class Oracle(torch.nn.Module):
        def forward(self, img):
            kp = annotated_keypoints(torch.stack([it["keypoints"] for it in items]))
            vis = (kp[..., 2] > 0)
            hm = H.gaussian_heatmaps(H.normalised_to_heatmap_pixels(kp, 32), vis, 32)
            m = 2 * mask_at_resolution(torch.stack([it["mask"] for it in items]), 32) - 1
            return [H.StackOutput(hm, torch.stack([-10 * m, 10 * m], 1))]

    r = evaluate_human2d(Oracle(), data / "wild_test", in_res=128)
    assert r["mean"]["pck_0.05"] == 1.0 and r["mean"]["pck_0.1"] == 1.0
    # the mask at 32^2 upsampled to the 128^2 crop: thin limbs of these small bodies are lost (no offset)
    assert r["mean"]["sil_iou"] > 0.75 and r["mean"]["fb_acc"] > 0.95
    assert np.isfinite(r["per_sample"]["fb_f1"]).all()
