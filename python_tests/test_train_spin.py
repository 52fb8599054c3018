"""The SPIN training loop: configs, losses against hand-computed values, the step's semantics (static fits
never written, in-loop fits written only when better, hidden labels never read), exact resume, smoke runs
of every preset, distributed fits synchronisation, evaluation from a checkpoint."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_helpers import join_group_env, spawn

from smplfast.data import generate

from smplfast_train import fits as fitsmod
from smplfast_train.config import ConfigError, load_config, parse_overrides, preset_names
from smplfast_train.data import ResumableSampler
from smplfast_train.losses import (LossWeights, betas_loss, camera_loss, keypoint_2d_loss, keypoint_3d_loss, pose_loss,
                                   total_loss)
from smplfast_train.loop import TrainingError
from smplfast_train.trainers import SpinTrainer

ROOT = Path(__file__).resolve().parent.parent
TRAIN_PY = ROOT / "training" / "train.py"
PRESETS = ["spin_pretrain_lab", "hmr2d", "hmr2d_prior", "spin_static", "spin", "spin_unpaired", "spin_oracle_fits"]
SMALL = dict(batch_size=6, img_res=64, log_every=1, ckpt_every=0, diag_every=2, eval_max_samples=6,
             eval_splits=["wild_test"], tensorboard=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny copy of the standard splits (24 people each) with static fits of every split."""
    root = tmp_path_factory.mktemp("synth")
    for split in ("lab_train", "wild_train", "wild_test"):
        generate(root / split, 24, size=96, split=split, workers=1, progress=False, densepose_points=0, shard_size=24)
    for split in ("wild_train", "lab_train"):
        fitsmod.write_static_fits(*_mean_pose_fits(root, split))
    return root


def _mean_pose_fits(root, split):
    """Static fits = the bundled mean pose (a deliberately poor, cheap start), loss +inf (never accepted
    by the threshold until SMPLify improves it)."""
    with np.load(root / split / "synth_spin.npz") as z:
        n = len(z["imgname"])
    pose = np.zeros((n, 72), np.float32)
    pose[:, 0] = np.pi
    path = fitsmod.static_fits_path(root / "static_fits", split)
    path.parent.mkdir(exist_ok=True)
    return path, pose, np.zeros((n, 10), np.float32), np.full(n, 50.0), "test: mean pose"


def _cfg(preset, data, **over):
    return load_config(preset, "cpu", {**SMALL, "data": str(data), **over})


def _train(preset, data, out, steps=3, **over):
    t = SpinTrainer(_cfg(preset, data, num_steps=steps, **over), out, progress=False)
    return t, t.train()


# ---------------------------------------------------------------------------------------- configs
def test_every_preset_loads_at_both_tiers():
    assert set(PRESETS) <= set(preset_names())
    for p in PRESETS:
        for tier in ("cpu", "paper"):
            cfg = load_config(p, tier)
            assert cfg.preset == p and cfg.tier == tier
    assert load_config("spin", "paper").backbone == "resnet50" and load_config("spin", "cpu").backbone == "tiny"
    assert load_config("spin_static").run_fit is False and load_config("spin").run_fit is True  # S11
    assert load_config("spin_unpaired").unpaired and load_config("spin_oracle_fits").fits == "gt"


@pytest.mark.parametrize("call, message", [
    (lambda: load_config("spinn"), "unknown preset 'spinn'; presets: hmr2d"),
    (lambda: load_config("spin", "gpu"), "unknown tier 'gpu'; tiers: paper, cpu"),
    (lambda: load_config("spin", overrides={"learning_rate": 1}), r"unknown config key\(s\) \['learning_rate'\]"),
    (lambda: load_config("spin", overrides={"lr": "fast"}), "config key 'lr' expects float"),
    (lambda: load_config("spin", overrides={"fit_compare": "best"}), "must be one of fair, spin"),
    (lambda: load_config("spin", overrides={"train_splits": {"lab_train": 0.5}}), "sum to 1"),
    (lambda: load_config("hmr2d", overrides={"run_fit": True}), "run_fit needs fits"),
    (lambda: load_config("spin", overrides={"preset": "hmr2d"}), "use --preset"),
    (lambda: parse_overrides(["lr"]), "--set expects key=value"),
])
def test_config_errors_name_what_is_allowed(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_overrides_are_yaml():
    o = parse_overrides(["lr=1e-4", "train_splits={lab_train: 1.0}", "eval_splits=[wild_test]", "run_fit=false"])
    cfg = load_config("spin", overrides=o)
    assert cfg.lr == 1e-4 and cfg.train_splits == {"lab_train": 1.0} and cfg.eval_splits == ["wild_test"]
    assert cfg.run_fit is False


# ----------------------------------------------------------------------------------------- losses
def test_losses_equal_hand_computed_values():
    # 2D: two samples, 49 keypoints; only keypoint 30 of sample 0 (a GT joint, conf 0.5) and keypoint 3
    # of sample 1 (an OpenPose one, conf 1) are off.
    pred = torch.zeros(2, 49, 2)
    gt = torch.zeros(2, 49, 3)
    gt[:, :, 2] = 1.0
    gt[0, 30] = torch.tensor([0.2, -0.4, 0.5])
    gt[1, 3] = torch.tensor([1.0, 1.0, 1.0])
    # SPIN: mean over 2*49*2 entries of conf * w * d^2; OpenPose rows have w = 0.
    want = (0.5 * 1.0 * (0.2 ** 2 + 0.4 ** 2)) / (2 * 49 * 2)
    assert keypoint_2d_loss(pred, gt).item() == pytest.approx(want, rel=1e-6)
    want_op = want + (1.0 * 0.5 * 2) / (2 * 49 * 2)
    assert keypoint_2d_loss(pred, gt, openpose_weight=0.5).item() == pytest.approx(want_op, rel=1e-6)
    # 3D: pelvis-centred (midpoint of joints 2 and 3), rows without labels ignored.
    p3 = torch.zeros(2, 24, 3)
    g3 = torch.zeros(2, 24, 4)
    g3[..., 3] = 1.0
    g3[0, 2, 0], g3[0, 3, 0] = 1.0, 1.0     # pelvis x = 1: every centred GT joint moves by -1 in x ...
    g3[0, 2, 0] = 1.0
    g3[0, 5, 1] = 0.3                        # ... and joint 5 also has y = 0.3
    g3[1] = float("nan")                     # an unlabelled row may hold anything
    # centred gt: joints 2, 3 -> 0; others x = -1; joint 5 y = 0.3 -> sum of squares = 22 * 1 + 0.09
    want3 = (22 * 1.0 + 0.09) / (24 * 3)
    got3 = keypoint_3d_loss(p3, g3, torch.tensor([True, False]))
    assert got3.item() == pytest.approx(want3, rel=1e-6)
    # pose: MSE over valid rows x 24 x 9; betas MSE; camera exp(-10 s)^2.
    R = torch.eye(3).expand(2, 24, 3, 3).clone()
    T = R.clone()
    T[0, 7, 0, 1] = 0.6
    assert pose_loss(R, T, torch.tensor([True, False])).item() == pytest.approx(0.36 / (24 * 9), rel=1e-6)
    b = torch.zeros(2, 10)
    tb = torch.zeros(2, 10)
    tb[1, 4] = 2.0
    assert betas_loss(b, tb, torch.tensor([True, True])).item() == pytest.approx(4.0 / 20, rel=1e-6)
    cam = torch.tensor([[0.1, 0, 0], [0.0, 0, 0]])
    assert camera_loss(cam).item() == pytest.approx((math.exp(-2.0) + 1.0) / 2, rel=1e-6)
    # nothing valid: exactly 0, differentiable, not NaN
    z = pose_loss(R.requires_grad_(), T, torch.tensor([False, False]))
    z.backward()
    assert z.item() == 0.0 and torch.isfinite(R.grad).all()
    # SPIN's total: 60 * (5 L2d + 5 L3d + 1 Lpose + 0.001 Lbeta + 1 Lcam)
    terms = {"kp_2d": torch.tensor(0.01), "kp_3d": torch.tensor(0.02), "pose": torch.tensor(0.03),
             "betas": torch.tensor(0.5), "cam": torch.tensor(0.001)}
    assert total_loss(terms, LossWeights()).item() == pytest.approx(60 * (0.05 + 0.1 + 0.03 + 0.0005 + 0.001), rel=1e-6)


def test_spin_step_loss_equals_an_independent_computation(data, tmp_path):
    """One SPIN step on a 2-sample batch, recomputed outside the trainer from the same network outputs."""
    from smplfast_train.rotations import axis_angle_to_matrix

    t = SpinTrainer(_cfg("spin_static", data, batch_size=2, num_steps=1), tmp_path / "r", progress=False)
    batch = t.stream.next_batch()
    torch.manual_seed(0)
    t.model.eval()  # no dropout, so the network's outputs can be recomputed
    t.net = t.model
    loss, stats, _ = t.train_step(batch)
    with torch.no_grad():
        out = t.model(batch["img"])
        pj = t.smpl(global_orient=out.rotmat[:, :1], body_pose=out.rotmat[:, 1:], betas=out.betas, pose2rot=False).joints
        s, tx, ty = out.cam[:, 0], out.cam[:, 1], out.cam[:, 2]
        tz = 2 * 5000.0 / (64 * s + 1e-9)
        X = pj + torch.stack([tx, ty, tz], -1)[:, None]
        proj = 5000.0 * X[..., :2] / X[..., 2:] / 32.0
        kp = batch["keypoints"]
        l2d = ((kp[..., 2:] * torch.cat([torch.zeros(25), torch.ones(24)])[:, None]) * (proj - kp[..., :2]) ** 2).mean()
        has3d = batch["has_pose_3d"]
        l3d = torch.tensor(0.0)
        if has3d.any():
            P, G = pj[has3d, 25:], batch["pose_3d"][has3d]
            P = P - (P[:, 2:3] + P[:, 3:4]) / 2
            Gc = G[..., :3] - (G[:, 2:3, :3] + G[:, 3:4, :3]) / 2
            l3d = (G[..., 3:] * (P - Gc) ** 2).mean()
        # targets: GT SMPL where has_smpl, else the static fits (their stored loss 50 < 100: valid)
        fp, fb = t.fits.read(batch["mixed_source"], batch["sample_index"], batch["rot_angle"].double(),
                             batch["is_flipped"], names=t.names)
        hs = batch["has_smpl"][:, None]
        tp = torch.where(hs, batch["pose"], fp)
        fb = torch.where((fb.abs() > 3).any(-1, keepdim=True), torch.zeros_like(fb), fb)
        tbeta = torch.where(hs, batch["betas"], fb)
    lpose = ((out.rotmat - axis_angle_to_matrix(tp.reshape(2, 24, 3))) ** 2).mean()
    lbeta = ((out.betas - tbeta) ** 2).mean()
    lcam = (torch.exp(-10 * s) ** 2).mean()
    want = 60 * (5 * l2d + 5 * l3d + lpose + 0.001 * lbeta + lcam)
    # the static fits' loss is re-evaluated (fair refit), so validity follows it: compare like with like
    if stats["valid"] == 1.0:
        assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    assert stats["loss_kp_2d"] == pytest.approx(l2d.item(), rel=1e-4)
    assert stats["loss_kp_3d"] == pytest.approx(float(l3d), rel=1e-4, abs=1e-9)
    assert stats["loss_cam"] == pytest.approx(lcam.item(), rel=1e-4)


# ------------------------------------------------------------------------------------ step semantics
def test_static_fits_are_never_written(data, tmp_path):
    t, _ = _train("spin_static", data, tmp_path / "static", steps=3)
    sf = fitsmod.read_static_fits(fitsmod.static_fits_path(data / "static_fits", "wild_train"))
    np.testing.assert_array_equal(t.fits.pose("wild_train"), sf.pose)
    np.testing.assert_array_equal(t.fits.betas("wild_train"), sf.betas)
    assert not t.fits.updated("wild_train").any()
    saved = fitsmod.FitsDict.load(tmp_path / "static" / "fits")
    np.testing.assert_array_equal(saved.pose("wild_train"), sf.pose)


def test_in_loop_fits_write_only_improved_rows(data, tmp_path):
    t, _ = _train("spin", data, tmp_path / "spin", steps=4)
    upd = t.fits.updated("wild_train")
    assert upd.any(), "SMPLify from the network should beat the mean pose somewhere"
    sf = fitsmod.read_static_fits(fitsmod.static_fits_path(data / "static_fits", "wild_train"))
    np.testing.assert_array_equal(t.fits.pose("wild_train")[~upd], sf.pose[~upd])
    loss = t.fits.loss("wild_train")
    assert np.isfinite(loss[upd]).all()
    lines = [json.loads(x) for x in open(tmp_path / "spin" / "log.jsonl")]
    assert all(0 <= line.get("fit_accept", 0) <= 1 for line in lines)
    assert any("fits_wild_train_pa_mpjpe" in line for line in lines)  # diagnostics against the hidden GT


def test_hidden_labels_poisoned_with_nan_do_not_change_training(data, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(data, poisoned)
    npz = poisoned / "wild_train" / "synth_spin.npz"
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    hidden = arrays["has_smpl"] == 0
    assert hidden.all()
    for k in ("pose", "shape", "S", "smpl_joints_3d"):
        arrays[k] = np.full_like(arrays[k], np.nan)
    np.savez(npz, **arrays)
    _, a = _train("spin", data, tmp_path / "clean", steps=3, eval_splits=[])
    _, b = _train("spin", poisoned, tmp_path / "dirty", steps=3, eval_splits=[])
    la = [json.loads(x) for x in open(tmp_path / "clean" / "log.jsonl")]
    lb = [json.loads(x) for x in open(tmp_path / "dirty" / "log.jsonl")]
    for x, y in zip(la, lb):
        assert x["loss"] == y["loss"] and math.isfinite(x["loss"])


def test_nonfinite_prediction_skips_the_step_without_crashing_the_fitter(data, tmp_path):
    t = SpinTrainer(_cfg("spin", data, batch_size=4, num_steps=3), tmp_path / "nanpred", progress=False)
    forward = t.model.forward

    def broken(img, *a, **k):
        out = forward(img, *a, **k)
        return out._replace(cam=out.cam * float("nan")) if t.step == 1 else out

    t.model.forward = broken
    before = t.fits.array("wild_train").copy()
    summary = t.train()
    assert summary["skipped_steps"] == 1 and summary["step"] == 3
    assert np.isfinite(t.fits.array("wild_train")).all() and before.shape == t.fits.array("wild_train").shape


def test_a_camera_behind_the_crop_is_not_fitted(data, tmp_path):
    """A predicted weak-perspective scale <= 0 (depth <= 0, which SMPLify refuses) skips those rows' fits
    instead of stopping the run."""
    t = SpinTrainer(_cfg("spin", data, batch_size=4, num_steps=2), tmp_path / "negcam", progress=False)
    forward = t.model.forward

    def flipped(img, *a, **k):
        out = forward(img, *a, **k)
        return out._replace(cam=out.cam * torch.tensor([-1.0, 1.0, 1.0]))

    t.model.forward = flipped
    summary = t.train()
    assert summary["step"] == 2
    rows = [json.loads(x) for x in open(tmp_path / "negcam" / "log.jsonl")]
    assert all(r.get("fit_updated", 0.0) == 0.0 for r in rows)


def test_a_fresh_run_never_reads_another_runs_fits(data, tmp_path):
    t, _ = _train("spin", data, tmp_path / "a", steps=3, eval_splits=[])
    assert t.fits.updated("wild_train").any()
    stale = tmp_path / "b" / "fits"
    shutil.copytree(tmp_path / "a" / "fits", stale)  # a dead run's dictionary, no checkpoint
    fresh = SpinTrainer(_cfg("spin", data, num_steps=1), tmp_path / "b", progress=False)
    assert not fresh.fits.updated("wild_train").any()


def test_pictures_of_prediction_and_fit(data, tmp_path):
    from PIL import Image

    _train("spin", data, tmp_path / "pic", steps=2, pic_every=2, eval_splits=[])
    img = Image.open(tmp_path / "pic" / "pictures" / "step_2.png")
    assert img.size == (3 * 64, 4 * 64)  # crop, prediction, fit; four samples


def test_nonfinite_inputs_are_masked_and_counted(data, tmp_path):
    t = SpinTrainer(_cfg("spin", data, batch_size=4, num_steps=1), tmp_path / "nan", progress=False)
    batch = t.stream.next_batch()
    batch["keypoints"][1, 30, 0] = float("nan")
    batch["img"][2, 0, 0, 0] = float("inf")
    loss, stats, _ = t.train_step(batch)
    assert stats["masked_nonfinite"] == 2.0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in t.model.parameters())


# --------------------------------------------------------------------------------------- resuming
def test_sampler_resumes_at_the_next_batch():
    s = ResumableSampler(10, 4, seed=3)
    full = [b for _, b in zip(range(7), s.batches())]
    state = s.advance({"epoch": 0, "position": 0}, 4)
    again = [b for _, b in zip(range(3), s.batches(state))]
    assert [b for _, b in again] == [b for _, b in full[4:]]
    assert all(len(b) == 4 for _, b in full)
    ranks = [ResumableSampler(10, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    first = [next(iter(r.batches()))[1] for r in ranks]
    assert not set(first[0]) & set(first[1])
    with pytest.raises(ValueError, match="batch boundary"):
        next(s.batches({"epoch": 0, "position": 3}))


class _Killed(Exception):
    pass


def test_worker_processes_load_the_same_batches(data):
    from smplfast_train.data import BatchStream, build_train_set

    cfg = _cfg("spin", data)
    train = build_train_set(cfg)
    sampler = ResumableSampler(len(train), 4, seed=1)
    state = {"epoch": 1, "position": 4}
    a = BatchStream(train.dataset, sampler, state, num_workers=0)
    b = BatchStream(build_train_set(cfg).dataset, sampler, state, num_workers=2)
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["img"], y["img"]) and torch.equal(x["keypoints"], y["keypoints"])
        assert torch.equal(x["sample_index"], y["sample_index"]) and torch.equal(x["is_flipped"], y["is_flipped"])
    assert a.state_dict() == b.state_dict() == sampler.advance(state, 3)


def test_resume_reproduces_the_uninterrupted_run(data, tmp_path):
    """A run killed after its step-2 checkpoint and resumed ends with the same weights, fits and losses as
    the uninterrupted run."""
    full, _ = _train("spin", data, tmp_path / "full", steps=5, eval_splits=[], ckpt_every=2)
    part = SpinTrainer(_cfg("spin", data, num_steps=5, eval_splits=[], ckpt_every=2), tmp_path / "part", progress=False)
    step = part.train_step

    def dying(batch):
        if part.step == 3:
            raise _Killed()
        return step(batch)

    part.train_step = dying
    with pytest.raises(_Killed):
        part.train()
    resumed = SpinTrainer(_cfg("spin", data, num_steps=5, eval_splits=[], ckpt_every=2), tmp_path / "part", resume=True,
                          progress=False)
    assert resumed.step == 2
    resumed.train()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(full.fits.array("wild_train"), resumed.fits.array("wild_train"))
    la = [json.loads(x)["loss"] for x in open(tmp_path / "full" / "log.jsonl")]
    lb = [json.loads(x)["loss"] for x in open(tmp_path / "part" / "log.jsonl")]
    assert la == lb


def test_bad_runs_are_refused(data, tmp_path):
    _train("hmr2d", data, tmp_path / "r", steps=1, eval_splits=[])
    with pytest.raises(TrainingError, match="already holds a run"):
        SpinTrainer(_cfg("hmr2d", data, num_steps=1), tmp_path / "r", progress=False)
    with pytest.raises(TrainingError, match="made with backbone='tiny'"):
        SpinTrainer(_cfg("hmr2d", data, num_steps=2, backbone="resnet18"), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(TrainingError, match="not found"):
        SpinTrainer(_cfg("hmr2d", data, num_steps=2), tmp_path / "none", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="smplfast synth --split lab_train"):
        SpinTrainer(_cfg("hmr2d", tmp_path / "nodata", num_steps=1), tmp_path / "x", progress=False)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read"):
        SpinTrainer(_cfg("hmr2d", data, num_steps=1, init_checkpoint=str(tmp_path / "bad.pt")), tmp_path / "y",
                    progress=False)
    wrong = dict(np.load(fitsmod.static_fits_path(data / "static_fits", "wild_train")))
    bad_dir = tmp_path / "bad_fits"
    bad_dir.mkdir()
    fitsmod.write_static_fits(fitsmod.static_fits_path(bad_dir, "wild_train"), wrong["pose"][:5], wrong["betas"][:5],
                              wrong["loss"][:5], "wrong size")
    with pytest.raises((fitsmod.FitsFileError, ValueError)):
        SpinTrainer(_cfg("spin", data, num_steps=1, static_fits=str(bad_dir)), tmp_path / "z", progress=False)


# ------------------------------------------------------------------------------ smoke runs, the CLI
@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_run_every_preset(preset, data, tmp_path):
    over = {"w_prior": 1e-4} if preset == "hmr2d_prior" else {}
    t, summary = _train(preset, data, tmp_path / preset, steps=20, **over)
    assert summary["step"] == 20 and summary["skipped_steps"] == 0
    lines = [json.loads(x) for x in open(tmp_path / preset / "log.jsonl")]
    assert len(lines) == 20 and all(math.isfinite(x["loss"]) for x in lines)
    assert summary["eval"]["wild_test"]["num"] == 6
    assert (tmp_path / preset / "ckpt" / "last.pt").is_file()


def test_cli_train_then_evaluate(data, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(TRAIN_PY), "--preset", "spin", "--data", str(data), "--out", str(out),
                        "--no-progress", "--set", "num_steps=3", "--set", "batch_size=4", "--set", "img_res=64",
                        "--set", "eval_max_samples=4", "--set", "eval_splits=[wild_test]"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| wild_test |" in r.stdout and json.loads(r.stdout.strip().splitlines()[-1])["step"] == 3
    r = subprocess.run([sys.executable, str(ROOT / "training" / "evaluate.py"), "--ckpt", str(out / "ckpt" / "last.pt"),
                        "--split", str(data / "wild_test"), "--max-samples", "4", "--out", str(tmp_path / "e.json")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "pa_mpjpe" in r.stdout and (tmp_path / "e.json").is_file()
    r = subprocess.run([sys.executable, str(TRAIN_PY), "--preset", "nope"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr


# ------------------------------------------------------------------------------------- distributed
def _ddp_worker(rank, world, port, data, out):
    join_group_env(rank, world, port)
    torch.set_num_threads(1)
    cfg = load_config("spin", "cpu", {**SMALL, "data": str(data), "num_steps": 3, "batch_size": 4, "eval_splits": []})
    t = SpinTrainer(cfg, out, progress=False)
    t.train()
    np.save(Path(out) / f"fits_rank{rank}.npy", t.fits.array("wild_train"))
    # parameters (BatchNorm running statistics stay per replica, as in SPIN's single-GPU training)
    torch.save(dict(t.model.named_parameters()), Path(out) / f"model_rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_distributed_ranks_keep_identical_fits_and_weights(data, tmp_path):
    out = tmp_path / "ddp"
    spawn(_ddp_worker, str(data), str(out))
    a, b = np.load(out / "fits_rank0.npy"), np.load(out / "fits_rank1.npy")
    np.testing.assert_array_equal(a, b)
    ma, mb = torch.load(out / "model_rank0.pt"), torch.load(out / "model_rank1.pt")
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    saved = fitsmod.FitsDict.load(out / "fits")
    np.testing.assert_array_equal(saved.array("wild_train"), a)
