"""The HoloPose loop: each loss against a value computed by hand on a tiny batch, the 29-point 2D labels
(skeleton joints + annotated face points), stage 1 and stage 2 smoke runs of every preset, stage 2
starting from a stage-1 checkpoint's modules, resume, DDP, and bad input (non-finite images, no
visible joint, samples without IUV labels in a DensePose batch, flips with IUV labels)."""
import json
import math

import pytest
import torch
from ddp_helpers import join_group_env, spawn

from smplfast.body.keypoints import keypoint_names
from smplfast.data import generate

from smplfast_train import holopose_losses as L
from smplfast_train.config import ConfigError, load_config
from smplfast_train.data import collate
from smplfast_train.heads.moe import HOLOPOSE_KEYPOINTS
from smplfast_train.loop import TrainingError
from smplfast_train.trainers import HoloPoseTrainer
from smplfast_train.trainers.holopose import face_point_rows

PRESETS = ["holopose_stage1", "holopose", "holopose_global", "holopose_direct6d"]
SMALL = dict(batch_size=4, img_res=64, log_every=1, ckpt_every=0, eval_max_samples=4, eval_splits=["wild_test"],
             tensorboard=False, dp_points=20)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny lab / wild training splits (with IUV images) and a wild test split."""
    root = tmp_path_factory.mktemp("holo")
    for split, n in (("lab_train", 6), ("wild_train", 6), ("wild_test", 4)):
        generate(root / split, n, size=96, split=split, workers=1, progress=False, densepose_points=20)
    return root


def _cfg(preset, data, **over):
    return load_config(preset, "cpu", {**SMALL, "data": str(data), **over})


def _batch(trainer, lab=(), wild=()):
    """A batch of the given rows of the lab and wild members (``mixed_source`` as the mixed set gives it)."""
    items = []
    for name, rows in (("lab_train", lab), ("wild_train", wild)):
        k = trainer.names.index(name)
        for i in rows:
            it = dict(trainer.train_set.members[k][i])
            it["mixed_source"] = torch.tensor(k)
            items.append(it)
    return collate(items)


# ---------------------------------------------------------------------------- losses by hand
def test_heatmap_loss_by_hand_masks_unlabelled_keypoints():
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, 0, 0, 0] = 1.0
    pred[0, 1] = 5.0  # unlabelled: ignored
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 1, 1] = 0.5
    # labelled keypoint 0: squared errors 1 and 0.25 over 4 pixels
    assert L.heatmap_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(1.25 / 4)
    z = L.heatmap_loss(pred.requires_grad_(), target, torch.zeros(1, 2))
    assert z.item() == 0.0
    z.backward()
    assert torch.isfinite(pred.grad).all()


def test_integral_losses_by_hand():
    pred = torch.tensor([[[0.1, 0.0, 0.0], [0.2, 0.3, -0.1]]])
    gt = torch.tensor([[[1.0, 1.0, 1.0], [1.1, 1.5, 1.0]]])  # root-relative: (0,0,0), (0.1, 0.5, 0)
    # |0.1|+0+0 + |0.1|+|−0.2|+|−0.1| over 6
    assert L.integral_3d_loss(pred, gt, torch.tensor([True])).item() == pytest.approx(0.5 / 6)
    assert L.integral_3d_loss(pred, gt, torch.tensor([False])).item() == 0.0
    # 2D marginal up to scale: a prediction equal to half the label costs nothing ...
    g2 = torch.tensor([[[0.0, 0.0, 1.0], [0.4, 0.0, 1.0], [0.0, 0.6, 1.0], [0.4, 0.6, 1.0], [0.9, 0.9, 0.0]]])
    p = torch.cat([0.5 * g2[..., :2] + 0.3, torch.zeros(1, 5, 1)], -1)
    p[0, 4] = 7.0  # an unlabelled joint is ignored
    assert L.integral_2d_loss(p, g2, torch.tensor([True])).item() == pytest.approx(0.0, abs=1e-7)
    # ... and a distortion costs its L1 after the least-squares scale: centred labels g, p = c*g + d
    p2 = p.clone()
    p2[0, 0, 0] += 0.08
    pc = p2[0, :4, :2] - p2[0, :4, :2].mean(0)
    gc = g2[0, :4, :2] - g2[0, :4, :2].mean(0)
    c = (pc * gc).sum() / (gc * gc).sum()
    expect = (pc - c * gc).abs().sum() / 8
    assert L.integral_2d_loss(p2, g2, torch.tensor([True])).item() == pytest.approx(expect.item(), rel=1e-5)
    # too few visible joints: nothing
    g3 = g2.clone()
    g3[0, 1:, 2] = 0
    assert L.integral_2d_loss(p2, g3, torch.tensor([True])).item() == 0.0


def test_densepose_head_losses_by_hand():
    iuv = torch.zeros(1, 3, 2, 2)
    iuv[0, 0] = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    iuv[0, 1, 0, 1], iuv[0, 2, 0, 1] = 0.2, 0.4
    iuv[0, 1, 1, 0], iuv[0, 2, 1, 0] = 0.5, 0.5
    logits = torch.zeros(1, 25, 2, 2)
    # uniform logits: cross-entropy log(25) everywhere
    assert L.part_index_loss(logits, iuv[:, 0], torch.tensor([True])).item() == pytest.approx(math.log(25))
    uv = torch.full((1, 24, 2, 2, 2), 0.5)
    # part 3 channel at the two foreground pixels: errors (0.3, 0.1) and (0, 0): smooth-L1 0.5 e^2 / 1
    expect = (0.5 * 0.3 ** 2 + 0.5 * 0.1 ** 2) / 4
    assert L.uv_loss(uv, iuv, torch.tensor([True])).item() == pytest.approx(expect)
    assert L.uv_loss(uv, iuv, torch.tensor([False])).item() == 0.0
    big = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 3, 4, 4)
    assert L.iuv_at_heatmap(big, 2)[0, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]  # the pixel under each centre


def test_model_keypoint_and_shape_losses_by_hand():
    joints = torch.tensor([[[0.0, 0.0, 1.0], [0.5, -0.5, 2.0]]])
    cam = torch.tensor([[2.0, 0.1, 0.0]])  # projections (0.2, 0), (1.2, -1.0)
    gt = torch.tensor([[[0.0, 0.0, 1.0], [0.9, -0.9, 1.0]]])
    assert L.model_keypoint_2d_loss(joints, cam, gt).item() == pytest.approx((0.2 + 0.0 + 0.3 + 0.1) / 4)
    gt_out = gt.clone()
    gt_out[0, 1, 0] = 1.5  # outside the crop: not visible
    assert L.model_keypoint_2d_loss(joints, cam, gt_out).item() == pytest.approx(0.2 / 2)
    g3 = torch.tensor([[[1.0, 1.0, 1.0], [1.5, 0.5, 1.0]]])  # pelvis-centred (0.5, -0.5, 0) vs (0.5, -0.5, 1)
    assert L.model_keypoint_3d_loss(joints, g3, torch.tensor([True])).item() == pytest.approx(1.0 / 6)
    assert L.shape_l2_loss(torch.tensor([[1.0, 2.0], [0.0, 1.0]])).item() == pytest.approx((5 + 1) / 2)


# ------------------------------------------------------------------------------------- labels
def test_face_points_come_from_the_annotated_keypoints_by_name():
    names = keypoint_names("spin_49")
    rows = face_point_rows()
    assert [names[r] for r in rows] == list(HOLOPOSE_KEYPOINTS[24:])
    assert all(r >= 25 for r in rows)  # annotations, not OpenPose detections


def test_heatmap_targets_peak_at_the_labels(data, tmp_path):
    t = HoloPoseTrainer(_cfg("holopose_stage1", data, num_steps=1, eval_splits=[]), tmp_path / "r", progress=False)
    b = _batch(t, lab=[0, 1], wild=[0, 1])
    loss, stats, _ = t.train_step(b)
    assert torch.isfinite(loss)
    assert 0 < stats["has_iuv"] < 1  # the wild split carries IUV, the lab split does not
    assert 0 < stats["has_3d"] < 1
    # the stage-1 loss has no model terms
    assert not any(k in stats for k in ("loss_dp", "loss_kp2d"))


# ----------------------------------------------------------------------------------- smoke runs
@pytest.fixture(scope="module")
def stage1_ckpt(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1") / "run"
    t = HoloPoseTrainer(_cfg("holopose_stage1", data, num_steps=2, eval_splits=[]), run, progress=False)
    t.train()
    return run / "ckpt" / "last.pt"


@pytest.mark.parametrize("preset", PRESETS[1:])
def test_stage2_presets_start_from_stage1_and_evaluate(preset, data, stage1_ckpt, tmp_path):
    cfg = _cfg(preset, data, num_steps=3, init_checkpoint=str(stage1_ckpt))
    t = HoloPoseTrainer(cfg, tmp_path / preset, progress=False)
    # the keypoint heads come from stage 1, the rest from the seeded initialisation
    ref = torch.load(stage1_ckpt, weights_only=False)["model"]
    assert any(k.startswith("heatmap_head.") for k in t.init_loaded)
    assert all(k.split(".")[0] in cfg.init_modules for k in t.init_loaded)
    for k in t.init_loaded:
        assert torch.equal(t.model.state_dict()[k].cpu(), ref[k])
    summary = t.train()
    assert summary["step"] == 3 and summary["skipped_steps"] == 0
    lines = [json.loads(x) for x in open(tmp_path / preset / "log.jsonl")]
    assert all(math.isfinite(x["loss"]) for x in lines)
    assert {"loss_dp", "loss_kp2d", "loss_kp3d", "loss_dp_index", "loss_dp_uv"} <= set(lines[0])
    res = summary["eval"]["wild_test"]
    assert res["num"] == 4 and math.isfinite(res["mean"]["pa_mpjpe"])


def test_init_modules_must_match(data, stage1_ckpt, tmp_path):
    cfg = _cfg("holopose", data, num_steps=1, init_checkpoint=str(stage1_ckpt), init_modules=["no_such_head"])
    with pytest.raises(TrainingError, match="no module 'no_such_head'"):
        HoloPoseTrainer(cfg, tmp_path / "x", progress=False)
    cfg = _cfg("holopose", data, num_steps=1, init_checkpoint=str(stage1_ckpt), init_modules=["backbone"],
               backbone="resnet18")
    with pytest.raises(TrainingError, match="does not match"):
        HoloPoseTrainer(cfg, tmp_path / "y", progress=False)


def test_resume_continues_bit_identically(data, tmp_path):
    kw = dict(eval_splits=[], lr_schedule="constant")  # the schedule must not depend on num_steps here
    full = HoloPoseTrainer(_cfg("holopose", data, num_steps=4, **kw), tmp_path / "full", progress=False)
    full.train()
    part = HoloPoseTrainer(_cfg("holopose", data, num_steps=2, **kw), tmp_path / "part", progress=False)
    part.train()
    resumed = HoloPoseTrainer(_cfg("holopose", data, num_steps=4, **kw), tmp_path / "part", resume=True,
                              progress=False)
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors():
    with pytest.raises(ConfigError, match="moe_k"):
        load_config("holopose", "cpu", {"moe_k": 16})
    with pytest.raises(ConfigError, match="regressor"):
        load_config("holopose", "cpu", {"regressor": "gan"})
    with pytest.raises(ConfigError, match="no fits"):
        load_config("holopose", "cpu", {"fits": "static"})


# -------------------------------------------------------------------------------------- bad input
def test_nonfinite_inputs_and_no_visible_joint_give_finite_losses(data, tmp_path):
    t = HoloPoseTrainer(_cfg("holopose", data, num_steps=1, eval_splits=[]), tmp_path / "bad", progress=False)
    b = _batch(t, lab=[0, 1], wild=[0, 1])
    b["img"][0, 0, 0, 0] = float("nan")
    b["smpl_joints_3d"][1] = float("nan")     # a 3D label that is not finite: unlabelled, counted
    b["iuv"][2] = float("nan")                # an IUV label that is not finite: unlabelled, counted
    loss, stats, _ = t.train_step(b)
    assert torch.isfinite(loss)
    assert stats["masked_nonfinite"] == 1.0 and stats["bad_labels"] >= 1.0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in t.model.parameters())
    # an untrained heatmap head detects no joint: every MoE joint falls back to the rest pose, no NaN
    assert stats["any_visible"] == 0.0 and stats["heatmap_visible"] == 0.0


def test_a_densepose_batch_without_iuv_labels_and_empty_iuv(data, tmp_path):
    t = HoloPoseTrainer(_cfg("holopose", data, num_steps=1, eval_splits=[]), tmp_path / "e", progress=False)
    b = _batch(t, lab=[0, 1, 2, 3])               # lab rows only: no IUV label in the batch
    loss, stats, _ = t.train_step(b)
    assert torch.isfinite(loss) and stats["has_iuv"] == 0.0 and stats["loss_dp"] == 0.0
    b = _batch(t, wild=[0, 1, 2, 3])               # wild rows whose IUV crops are empty
    b["iuv"].zero_()
    loss, stats, _ = t.train_step(b)
    assert torch.isfinite(loss) and stats["loss_dp"] == 0.0 and stats["loss_dp_uv"] == 0.0


def test_iuv_splits_must_be_training_splits(data, tmp_path):
    with pytest.raises(TrainingError, match="iuv_splits"):
        HoloPoseTrainer(_cfg("holopose", data, num_steps=1, iuv_splits=["wild_test"], eval_splits=[]),
                        tmp_path / "s", progress=False)


def test_flips_are_off_for_densepose_labels(data, tmp_path):
    t = HoloPoseTrainer(_cfg("holopose", data, num_steps=1, eval_splits=[]), tmp_path / "f", progress=False)
    assert all(m.augmentation.flip_prob == 0.0 for m in t.train_set.members)
    from smplfast.data import SPINDataset
    from smplfast.data.augment import SPIN_AUGMENTATION

    with pytest.raises(ValueError, match="flip"):
        SPINDataset(data / "wild_train" / "synth_spin.npz", data / "wild_train", is_train=True,
                    augmentation=SPIN_AUGMENTATION, load_iuv=True)


# ------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, port, data, out, stage):
    join_group_env(rank, world, port)
    preset = "holopose_stage1" if stage == 1 else "holopose"
    t = HoloPoseTrainer(_cfg(preset, data, num_steps=2, batch_size=2, eval_splits=[]), out, progress=False)
    t.train()
    flat = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    torch.save(flat, f"{out}/params_{rank}.pt")


@pytest.mark.parametrize("stage", [1, 2])
def test_ddp_two_processes_agree(stage, data, tmp_path):
    spawn(_ddp_worker, str(data), str(tmp_path), stage)
    a, b = (torch.load(tmp_path / f"params_{r}.pt") for r in (0, 1))
    assert torch.equal(a, b)


def test_evaluate_script_rebuilds_a_holopose_network(stage1_ckpt):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "training" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("holopose_evaluate_script", path)
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    ckpt = ev.load_checkpoint(str(stage1_ckpt))
    net = ev.build_model(ckpt, str(stage1_ckpt))
    ref = torch.load(stage1_ckpt, weights_only=False)["model"]
    assert all(torch.equal(net.state_dict()[k], ref[k]) for k in ref)
