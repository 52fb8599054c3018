"""The MV-SPIN loop: multi-view batches (any V >= 2, odd B), the per-view dictionary written a subject at
a time (shared body and betas, each view's orientation, the mean loss over views), exact re-scoring of
calibrated fits, the threshold on the mean (or MV-SPIN's sum) over views, bad input (V = 1, no
extrinsics, a view without keypoints, a wrong rig), DDP, and evaluation on a rig."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_helpers import join_group_env, spawn

from smplfast.data import generate, views_as_samples
from smplfast.fitting.multiview import rotation_mean

from smplfast_train import fits as fitsmod
from smplfast_train.config import load_config
from smplfast_train.data import collate
from smplfast_train.loop import TrainingError
from smplfast_train.rotations import axis_angle_to_matrix
from smplfast_train.trainers import MvSpinTrainer
from smplfast_train.trainers.mvspin import _mean_over_views

PRESETS = ["mvspin", "mvspin_calibrated", "mvspin_sv", "mvspin_l2d_l3d"]
SMALL = dict(batch_size=3, img_res=64, log_every=1, ckpt_every=0, diag_every=2, eval_max_samples=8,
             eval_splits=["rig_test"], tensorboard=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny rigs: 9 people x 4 views for training, 4 x 4 for evaluation, and a single-view split."""
    root = tmp_path_factory.mktemp("rigs")
    generate(root / "rig_train", 9, size=96, split="rig_train", workers=1, progress=False, densepose_points=0)
    generate(root / "rig_test", 4, size=96, split="rig_test", workers=1, progress=False, densepose_points=0)
    generate(root / "lab_train", 6, size=96, split="lab_train", workers=1, progress=False, densepose_points=0)
    return root


def _cfg(preset, data, **over):
    return load_config(preset, "cpu", {**SMALL, "data": str(data), **over})


def _batch(trainer, indices, epoch=0):
    ds = trainer.train_set.dataset
    ds.set_epoch(epoch)
    return collate([ds[i] for i in indices])


# ------------------------------------------------------------------------------------- smoke runs
@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_run_every_preset_and_evaluate_on_the_rig(preset, data, tmp_path):
    t = MvSpinTrainer(_cfg(preset, data, num_steps=4), tmp_path / preset, progress=False)
    summary = t.train()
    assert summary["step"] == 4 and summary["skipped_steps"] == 0
    lines = [json.loads(x) for x in open(tmp_path / preset / "log.jsonl")]
    assert len(lines) == 4 and all(math.isfinite(x["loss"]) for x in lines)
    # every view of a rig_test person is one evaluation sample
    assert summary["eval"]["rig_test"]["num"] == 8
    if preset != "mvspin_l2d_l3d":
        assert t.fits.updated("rig_train").any()
        assert np.isfinite(t.fits.array("rig_train")).all()


@pytest.mark.parametrize("V", [2, 3])
def test_any_number_of_views_and_an_odd_batch(V, data, tmp_path):
    t = MvSpinTrainer(_cfg("mvspin", data, num_steps=2, num_views=V, eval_splits=[]), tmp_path / "v", progress=False)
    loss, stats, _ = t.train_step(_batch(t, [0, 4, 7]))
    assert torch.isfinite(loss) and stats["fit_rows"] == 3
    assert len(t.fits) == 9 * V


# ------------------------------------------------------------------------------------ the dictionary
def test_a_multiview_fit_writes_every_view_of_a_subject(data, tmp_path):
    t = MvSpinTrainer(_cfg("mvspin", data, num_steps=1, eval_splits=[]), tmp_path / "mv", progress=False)
    b = _batch(t, [0, 1, 2])
    t.train_step(b)
    V = t.num_views
    rows = t.fits.array("rig_train").reshape(9, V, -1)
    loss = t.fits.loss("rig_train").reshape(9, V)
    upd = t.fits.updated("rig_train").reshape(9, V)
    for i in b["sample_index"].tolist():
        assert upd[i].all() and (loss[i] == loss[i, 0]).all()            # one loss per subject
        np.testing.assert_array_equal(rows[i, :, 72:], rows[i, :1, 72:].repeat(V, 0))   # shared betas
        # the shared body, stored in each view's canonical frame (equal up to the float32 round trip)
        np.testing.assert_allclose(rows[i, :, 3:72], rows[i, :1, 3:72].repeat(V, 0), atol=1e-5)
    assert not upd[[i for i in range(9) if i not in b["sample_index"].tolist()]].any()


def test_calibrated_fits_keep_one_world_orientation_and_rescore_exactly(data, tmp_path):
    """Stored per-view orientations seen from the (canonical) cameras are one world orientation, and
    without augmentation a stored fit scores exactly the loss it was stored with."""
    cfg = _cfg("mvspin_calibrated", data, num_steps=1, eval_splits=[], augment=False)
    t = MvSpinTrainer(cfg, tmp_path / "cal", progress=False)
    b = _batch(t, [0, 1, 2])
    _, stats, _ = t.train_step(b)
    assert stats["fit_updated"] == 3
    V = t.num_views
    cam_rot = torch.as_tensor(t.train_set.members[0].data["cam_rot"][:3], dtype=torch.float32)
    pose = torch.as_tensor(t.fits.pose("rig_train").reshape(9, V, 72)[:3])
    Rw = cam_rot.transpose(-1, -2) @ axis_angle_to_matrix(pose[..., :3])
    torch.testing.assert_close(Rw, rotation_mean(Rw)[:, None].expand_as(Rw), atol=1e-4, rtol=0)
    stored = torch.as_tensor(t.fits.loss("rig_train").reshape(9, V)[:3, 0])
    # score again without fitting: the network's prediction made non-finite, so no fit runs
    captured = {}
    real = t._fits_stage

    def score_only(c, s, tm):
        c.rotmat = c.rotmat * float("nan")
        out = real(c, s, tm)
        captured["loss"] = out[2].view(3, V)[:, 0]
        return out

    t._fits_stage = score_only
    t.train_step(_batch(t, [0, 1, 2]))
    torch.testing.assert_close(captured["loss"].cpu(), stored, rtol=1e-3, atol=1e-3)


def test_mean_over_views_and_the_sum_threshold(data, tmp_path):
    per_view = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 0.0, 5.0]], dtype=torch.float64)
    visible = torch.tensor([[True, True, True, True], [True, True, False, True]])
    torch.testing.assert_close(_mean_over_views(per_view, visible), torch.tensor([25.0, 5.0], dtype=torch.float64))
    assert _mean_over_views(per_view, torch.zeros_like(visible)).isinf().all()
    t = MvSpinTrainer(_cfg("mvspin", data, num_steps=1, eval_splits=[], fit_threshold_views="sum"), tmp_path / "s",
                      progress=False)
    assert float(t._threshold_loss(torch.tensor([30.0]))) == 30.0 * t.num_views   # MV-SPIN's code: 4x stricter


def test_first_visit_rows_supervise_nothing_before_their_first_fit(data, tmp_path):
    t = MvSpinTrainer(_cfg("mvspin", data, num_steps=1, eval_splits=[], run_fit=False), tmp_path / "fv", progress=False)
    _, stats, _ = t.train_step(_batch(t, [0, 1, 2]))
    assert stats["valid"] == 0.0 and stats["loss_pose"] == 0.0
    assert np.isinf(t.fits.loss("rig_train")).all()


# ---------------------------------------------------------------------------------------- bad input
def test_single_view_data_and_missing_extrinsics_are_refused(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="single-view"):
        MvSpinTrainer(_cfg("mvspin", data, train_splits={"lab_train": 1.0}), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="num_views"):
        _cfg("mvspin", data, num_views=1)
    # a rig without calibration keys
    nocal = tmp_path / "nocal"
    (nocal / "rig_train").mkdir(parents=True)
    with np.load(data / "rig_train" / "synth_mvspin.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("cam_")}
    np.savez(nocal / "rig_train" / "synth_mvspin.npz", **arrays)
    os.symlink(data / "rig_train" / "images", nocal / "rig_train" / "images")
    with pytest.raises(TrainingError, match="extrinsics"):
        MvSpinTrainer(_cfg("mvspin_calibrated", nocal), tmp_path / "b", progress=False)
    MvSpinTrainer(_cfg("mvspin", nocal, eval_splits=[]), tmp_path / "c", progress=False)  # uncalibrated is fine


def test_a_view_without_keypoints_skips_the_subject(data, tmp_path):
    t = MvSpinTrainer(_cfg("mvspin", data, num_steps=1, eval_splits=[]), tmp_path / "e", progress=False)
    b = _batch(t, [0, 1, 2])
    b["keypoints"][1, 2, :, 2] = 0.0    # subject 1, view 2: nothing visible
    _, stats, _ = t.train_step(b)
    assert stats["mv_skipped_empty_view"] == 1.0 and stats["fit_rows"] == 2
    i = int(b["sample_index"][1])
    assert not t.fits.updated("rig_train").reshape(9, -1)[i].any()
    assert np.isfinite(t.fits.array("rig_train")).all()


def test_a_wrong_rig_never_supervises(data, tmp_path):
    """Calibrated fits on views whose extrinsics disagree (one camera turned by 90 degrees) cannot explain
    the keypoints: their loss stays above the threshold, so they supervise nothing; the dictionary stays
    finite."""
    t = MvSpinTrainer(_cfg("mvspin_calibrated", data, num_steps=1, eval_splits=[], augment=False), tmp_path / "w",
                      progress=False)
    b = _batch(t, [0, 1, 2])
    turn = axis_angle_to_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]]))[0].float()
    b["cam_rot"][:, 1] = turn @ b["cam_rot"][:, 1]
    _, stats, _ = t.train_step(b)
    assert stats["fit_above_threshold"] == 1.0 and stats["valid"] == 0.0
    assert np.isfinite(t.fits.array("rig_train")).all()


def test_views_as_samples_round_trip(data, tmp_path):
    out = views_as_samples(data / "rig_test" / "synth_mvspin.npz", tmp_path / "flat.npz")
    with np.load(out) as f, np.load(data / "rig_test" / "synth_mvspin.npz") as z:
        n, v = z["imgname"].shape
        assert f["imgname"].shape == (n * v,)
        np.testing.assert_array_equal(f["pose"][v + 2], z["pose"][1, 2])
        np.testing.assert_array_equal(f["pose_family"], np.repeat(z["pose_family"], v))


# ------------------------------------------------------------------------------------------ the DDP
def _ddp_worker(rank, world, port, data, out):
    join_group_env(rank, world, port)
    torch.set_num_threads(1)
    cfg = load_config("mvspin_calibrated", "cpu", {**SMALL, "data": str(data), "num_steps": 2, "batch_size": 2,
                                                   "eval_splits": []})
    t = MvSpinTrainer(cfg, out, progress=False)
    t.train()
    np.save(Path(out) / f"fits_rank{rank}.npy", t.fits.array("rig_train"))
    torch.distributed.destroy_process_group()


def test_distributed_ranks_keep_identical_multiview_fits(data, tmp_path):
    out = tmp_path / "ddp"
    spawn(_ddp_worker, str(data), str(out))
    a, b = np.load(out / "fits_rank0.npy"), np.load(out / "fits_rank1.npy")
    np.testing.assert_array_equal(a, b)
    assert a.shape[1] == 85   # pose, betas, world translation
    saved = fitsmod.FitsDict.load(out / "fits")
    np.testing.assert_array_equal(saved.array("rig_train"), a)
    assert saved.aux_dim == 3


def test_l3d_target_fit_supervises_3d_joints_without_3d_labels(data, tmp_path):
    """MV-SPIN's Eq. 5 (l3d_target: fit): the 3D joint loss compares with the supervising body's joints, so
    it is active on rows without 3D labels; against the (absent) labels it is zero."""
    losses = {}
    for target in ("gt", "fit"):
        t = MvSpinTrainer(_cfg("mvspin", data, num_steps=1, eval_splits=[], unpaired=True, fits="gt", run_fit=False,
                               l3d_target=target), tmp_path / target, progress=False)
        torch.manual_seed(0)
        _, stats, _ = t.train_step(_batch(t, [0, 1, 2]))
        losses[target] = stats["loss_kp_3d"]
    assert losses["gt"] == 0.0 and losses["fit"] > 0 and math.isfinite(losses["fit"])
