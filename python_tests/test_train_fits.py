"""Fits dictionary (training/smplfast_train/fits.py) and training/make_static_fits.py."""
import math
import os

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body import samplers
from smplfast.data.augment import augment_smpl_pose
from smplfast.fitting import SMPLify, estimate_translation
from smplfast_train import fits as F

CENTER = 112.0


def random_poses(n, seed, max_angle=3.0):
    """Axis-angle poses (n, 72) with every rotation angle below ``max_angle`` (< pi: unique vectors)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 24, 3, generator=g)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return (axis * torch.rand(n, 24, 1, generator=g) * max_angle).reshape(n, 72)


def mixed_batch(fd, B, seed):
    """B distinct (dataset id, index) pairs drawn over all datasets of ``fd``."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(fd), generator=g)[:B]
    offsets = torch.tensor([0] + list(np.cumsum([fd.sizes[n] for n in fd.names])[:-1]))
    ids = torch.bucketize(rows, offsets, right=True) - 1
    return ids, rows - offsets[ids]


def augmentation(B, seed):
    g = torch.Generator().manual_seed(seed + 7)
    rot = (torch.rand(B, generator=g) * 2 - 1) * math.radians(60)
    rot[::3] = 0.0
    flip = torch.rand(B, generator=g) < 0.5
    return rot, flip


# ---------------------------------------------------------------------------------- read / write
def test_read_write_identity_mixed_datasets():
    fd = F.FitsDict({"lab": 40, "wild": 70, "rig": 25})
    B = 64
    ids, idx = mixed_batch(fd, B, seed=0)
    assert len(set(ids.tolist())) == 3
    rot, flip = augmentation(B, 0)
    assert flip.any() and (~flip).any() and (rot != 0).any()
    pose, betas = random_poses(B, 1), torch.randn(B, 10)
    loss = torch.rand(B, dtype=torch.float64) * 50
    upd = fd.write(ids, idx, rot, flip, torch.ones(B, dtype=torch.bool), pose, betas, loss)
    assert len(upd) == B and upd.skipped == 0
    p2, b2 = fd.read(ids, idx, rot, flip)
    assert p2.shape == (B, 72) and p2.dtype == torch.float32
    torch.testing.assert_close(p2, pose, atol=2e-5, rtol=0)
    torch.testing.assert_close(b2, betas)
    torch.testing.assert_close(fd.read_loss(ids, idx), loss)
    # The same rows addressed by per-sample names, and by ids into another name table.
    names = [fd.names[i] for i in ids.tolist()]
    p3, _ = fd.read(names, idx, rot, flip)
    torch.testing.assert_close(p3, p2, atol=0, rtol=0)
    table = ["rig", "wild", "lab"]
    other = torch.tensor([table.index(n) for n in names])
    p4, _ = fd.read(other, idx, rot, flip, names=table)
    torch.testing.assert_close(p4, p2, atol=0, rtol=0)
    # Degrees give the same result.
    p5, _ = fd.read(ids, idx, torch.rad2deg(rot), flip, degrees=True)
    torch.testing.assert_close(p5, p2, atol=1e-6, rtol=0)
    assert fd.updated("lab").sum() + fd.updated("wild").sum() + fd.updated("rig").sum() == B


def test_storage_is_canonical():
    fd = F.FitsDict({"a": 30, "b": 30})
    B = 24
    ids, idx = mixed_batch(fd, B, seed=3)
    canon = random_poses(B, 4, max_angle=2.5)
    betas = torch.randn(B, 10)
    rot, flip = augmentation(B, 5)
    flip[:4] = True
    rot[:4] = torch.tensor([0.5, -0.9, 0.0, 1.0])
    seen = augment_smpl_pose(canon.double(), rot.double(), flip).float()  # the batch's frame
    assert not torch.allclose(seen[:4], canon[:4], atol=1e-2)
    fd.write(ids, idx, rot, flip, torch.ones(B, dtype=torch.bool), seen, betas, torch.zeros(B))
    rows, _, _ = fd.rows(ids, idx)
    stored = torch.cat([torch.from_numpy(fd.pose("a")), torch.from_numpy(fd.pose("b"))])[rows]
    torch.testing.assert_close(stored, canon, atol=2e-5, rtol=0)
    # An unaugmented read gives the canonical fit; reading with the batch's draw gives what was written.
    torch.testing.assert_close(fd.read(ids, idx)[0], canon, atol=2e-5, rtol=0)
    torch.testing.assert_close(fd.read(ids, idx, rot, flip)[0], seen, atol=2e-5, rtol=0)


def test_write_mask_nan_rows_and_validation():
    fd = F.FitsDict({"a": 10})
    B = 4
    idx = torch.tensor([3, 5, 7, 9])
    pose, betas = random_poses(B, 8), torch.randn(B, 10)
    pose[1, 5] = float("nan")
    betas[2, 0] = float("inf")
    before = fd.array("a").copy()
    mask = torch.tensor([1, 1, 1, 0], dtype=torch.uint8)  # a byte mask is converted, never used as indices
    upd = fd.write("a", idx, 0.0, False, mask, pose, betas, torch.ones(B))
    assert len(upd) == 1 and upd.skipped == 2 and fd.skipped_nonfinite == 2
    assert fd.updated("a").nonzero()[0].tolist() == [3]
    assert np.isfinite(fd.array("a")).all()
    np.testing.assert_array_equal(fd.array("a")[[0, 1, 5, 7, 9]], before[[0, 1, 5, 7, 9]])
    assert fd.loss("a")[3] == 1.0 and np.isinf(fd.loss("a")[5])
    # NaN loss is skipped too; +inf (unknown) is allowed.
    upd = fd.write("a", idx[:2], 0.0, False, True, random_poses(2, 9), torch.zeros(2, 10),
                   torch.tensor([float("nan"), float("inf")]))
    assert len(upd) == 1 and upd.skipped == 1
    ok = dict(ds="a", idx=idx, rot=0.0, flip=False, update_mask=torch.ones(B, dtype=torch.bool),
              pose=random_poses(B, 1), betas=torch.zeros(B, 10))
    with pytest.raises(IndexError, match="out of range"):
        fd.write(**{**ok, "idx": torch.tensor([0, 1, 2, 10])})
    with pytest.raises(IndexError, match="out of range"):
        fd.read("a", torch.tensor([-1]))
    with pytest.raises(KeyError, match="unknown dataset"):
        fd.read("nope", torch.tensor([0]))
    with pytest.raises(IndexError, match="dataset id"):
        fd.read(torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"pose must have shape \(4, 72\)"):
        fd.write(**{**ok, "pose": torch.zeros(B, 69)})
    with pytest.raises(ValueError, match=r"betas must have shape"):
        fd.write(**{**ok, "betas": torch.zeros(B, 11)})
    with pytest.raises(TypeError, match="integers"):
        fd.write(**{**ok, "idx": idx.float()})
    with pytest.raises(TypeError, match="update_mask must be boolean"):
        fd.write(**{**ok, "update_mask": torch.ones(B)})
    with pytest.raises(ValueError, match="update_mask must be boolean"):
        fd.write(**{**ok, "update_mask": torch.tensor([0, 1, 2, 0])})
    with pytest.raises(ValueError, match=r"rot must be a scalar or have shape \(4,\)"):
        fd.write(**{**ok, "rot": torch.zeros(3)})
    with pytest.raises(ValueError, match="rot contains NaN"):
        fd.read("a", idx, torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(TypeError, match="floating point"):
        fd.write(**{**ok, "pose": torch.zeros(B, 72, dtype=torch.int64)})
    with pytest.raises(ValueError, match="size"):
        F.FitsDict({"a": 0})
    with pytest.raises(ValueError, match="dataset name"):
        F.FitsDict({"a/b": 3})


def test_duplicate_rows_in_one_write_keep_the_lowest_loss():
    fd = F.FitsDict({"a": 5})
    pose = random_poses(3, 2)
    fd.write("a", torch.tensor([2, 2, 2]), 0.0, False, True, pose, torch.zeros(3, 10), torch.tensor([5.0, 1.0, 1.0]))
    torch.testing.assert_close(torch.from_numpy(fd.pose("a")[2]), pose[1], atol=1e-6, rtol=0)
    assert fd.loss("a")[2] == 1.0


def test_oracle_and_arrays_constructors():
    pose, betas = random_poses(6, 3).numpy(), np.random.default_rng(0).normal(size=(6, 10))
    fd = F.FitsDict.from_gt({"x": (pose, betas)})
    np.testing.assert_array_equal(fd.pose("x"), pose.astype(np.float32))
    assert (fd.loss("x") == 0).all() and not fd.updated("x").any()
    with pytest.raises(ValueError, match="NaN"):
        F.FitsDict.from_arrays({"x": (pose * np.nan, betas)})
    with pytest.raises(ValueError, match="betas must be"):
        F.FitsDict.from_arrays({"x": (pose, betas[:5])})


# ------------------------------------------------------------------------------- fair comparison
@pytest.fixture(scope="module")
def fitter():
    return SMPLify()


def synthetic_observations(fitter, n, seed):
    pose = samplers.sample_poses(n, seed=seed).float()
    betas = samplers.sample_betas(n, num_betas=10, seed=seed).float() * 0.7
    g = torch.Generator().manual_seed(seed)
    s = 0.8 + 0.2 * torch.rand(n, generator=g)
    cam_t = torch.stack([0.2 * torch.randn(n, generator=g), 0.2 * torch.randn(n, generator=g), 2 * 5000 / (224 * s)], 1)
    J = fitter.keypoints(pose, betas) + cam_t[:, None]
    uv = 5000 * J[..., :2] / J[..., 2:] + CENTER + 3 * torch.randn(n, 49, 2, generator=g)
    uv[:, 30] += 150  # an outlier for the robust kernel
    kp = torch.cat([uv, torch.rand(n, 49, 1, generator=g)], -1)
    kp[:, 40:43, 2] = 0  # missed keypoints
    # The stored fit: a perturbed body.
    return pose + 0.1 * torch.randn(pose.shape, generator=g), betas, kp


def test_refit_translation_matches_get_fitting_loss_and_never_worsens(fitter):
    pose, betas, kp = synthetic_observations(fitter, 32, seed=1)
    kp_before = kp.clone()
    center = torch.full((32, 2), CENTER)
    t, loss = F.refit_translation(fitter, pose, betas, kp)
    torch.testing.assert_close(kp, kp_before, atol=0, rtol=0)  # inputs untouched (S5)
    ref = fitter.get_fitting_loss(pose, betas, t, center, kp).mean(-1)
    torch.testing.assert_close(loss, ref, atol=0, rtol=1e-6)
    t0 = estimate_translation(fitter.keypoints(pose, betas), kp, focal_length=5000.0, center=center)
    loss0 = fitter.get_fitting_loss(pose, betas, t0, center, kp).mean(-1)
    assert (loss <= loss0).all()
    assert loss.mean() < 0.8 * loss0.mean()  # the robust refit does improve on SPIN's linear camera
    # Zero iterations: the start itself. A bad start is never made worse.
    t_z, loss_z = F.refit_translation(fitter, pose, betas, kp, iters=0)
    torch.testing.assert_close(t_z, t0)
    torch.testing.assert_close(loss_z, loss0)
    far = t0 + torch.tensor([3.0, -2.0, 40.0])
    t_f, loss_f = F.refit_translation(fitter, pose, betas, kp, init_t=far, iters=2)
    start_f = fitter.get_fitting_loss(pose, betas, far, center, kp).mean(-1)
    assert (loss_f <= start_f).all()
    torch.testing.assert_close(loss_f, fitter.get_fitting_loss(pose, betas, t_f, center, kp).mean(-1), atol=0, rtol=1e-6)
    # An SMPL model with SPIN-49 keypoints gives the same answer as the fitter built on it.
    model = smplfast.SMPL(keypoints="spin_49")
    t_m, loss_m = F.refit_translation(model, pose, betas, kp)
    torch.testing.assert_close(loss_m, loss, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="keypoints_px"):
        F.refit_translation(fitter, pose, betas, kp[..., :2])
    with pytest.raises(ValueError, match="NaN"):
        F.refit_translation(fitter, pose * float("nan"), betas, kp)


def test_accept_rule():
    new = torch.tensor([1.0, float("nan"), float("inf"), 5.0, 3.0, 2.0, 4.0])
    old = torch.tensor([2.0, 10.0, 10.0, 4.0, 3.0, float("inf"), float("nan")])
    assert F.accept(new, old).tolist() == [True, False, False, False, False, True, False]


def test_fair_comparison_never_accepts_a_worse_canonical_fit(fitter):
    """The in-loop decision: a new fit replaces the stored one only with a lower loss than the
    stored fit's own best translation (so a worse body is never accepted just for its camera)."""
    pose, betas, kp = synthetic_observations(fitter, 16, seed=2)
    center = torch.full((16, 2), CENTER)
    _, old = F.refit_translation(fitter, pose, betas, kp)
    worse = pose + 0.3 * torch.randn(pose.shape, generator=torch.Generator().manual_seed(5))
    t_w, _ = F.refit_translation(fitter, worse, betas, kp)
    new = fitter.get_fitting_loss(worse, betas, t_w, center, kp).mean(-1)
    upd = F.accept(new, old)
    assert (new[upd] < old[upd]).all()
    # The stored fit judged with SPIN's linear camera looks worse than it is.
    t_lin = estimate_translation(fitter.keypoints(pose, betas), kp, focal_length=5000.0, center=center)
    old_spin = fitter.get_fitting_loss(pose, betas, t_lin, center, kp).mean(-1)
    assert upd.sum() <= F.accept(new, old_spin).sum()


# ------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip_and_refusals(tmp_path):
    fd = F.FitsDict({"lab": 12, "wild": 20}, provenance="test")
    B = 10
    ids, idx = mixed_batch(fd, B, seed=6)
    rot, flip = augmentation(B, 6)
    fd.write(ids, idx, rot, flip, torch.ones(B, dtype=torch.bool), random_poses(B, 2), torch.randn(B, 10), torch.rand(B))
    meta = fd.save(tmp_path, extra={"step": 7})
    assert meta.name == "fits_meta.json"
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["fits_meta.json"] + [f"{d}_fits{s}.npy" for d in ("lab", "wild") for s in ("", "_loss", "_updated")])
    assert np.load(tmp_path / "wild_fits.npy").shape == (20, 82)
    back = F.FitsDict.load(tmp_path, sizes={"lab": 12, "wild": 20})
    for n in fd.names:
        np.testing.assert_array_equal(back.array(n), fd.array(n))
        np.testing.assert_array_equal(back.loss(n), fd.loss(n))
        np.testing.assert_array_equal(back.updated(n), fd.updated(n))
    # Saving again replaces the files atomically (no temporary files left behind).
    fd.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == names
    with pytest.raises(F.FitsFileError, match="sizes"):
        F.FitsDict.load(tmp_path, sizes={"lab": 12, "wild": 21})
    with pytest.raises(F.FitsFileError, match="sizes"):
        F.FitsDict.load(tmp_path, sizes={"lab": 12, "other": 5})
    # A corrupted file is refused.
    p = tmp_path / "wild_fits.npy"
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(F.FitsFileError, match="sha256"):
        F.FitsDict.load(tmp_path)
    # A fits file of another size is refused even though it is a valid array.
    np.save(p, np.zeros((19, 82), dtype=np.float32))
    with pytest.raises(F.FitsFileError, match="sha256|shape"):
        F.FitsDict.load(tmp_path)
    (tmp_path / "fits_meta.json").unlink()
    with pytest.raises(F.FitsFileError, match="does not exist"):
        F.FitsDict.load(tmp_path)


def test_static_fits_file_round_trip(tmp_path):
    pose, betas = random_poses(5, 1).numpy(), np.zeros((5, 10), np.float32)
    loss = np.array([1.0, 2.0, np.inf, 4.0, 5.0])
    p = F.write_static_fits(tmp_path / "wild_static_fits.npz", pose, betas, loss, "unit test", {"mode": "x"})
    sf = F.read_static_fits(p, expected_size=5)
    np.testing.assert_array_equal(sf.pose, pose)
    np.testing.assert_array_equal(sf.loss, loss)
    assert sf.provenance == "unit test" and sf.meta["mode"] == "x"
    fd = F.FitsDict.from_static_fits(tmp_path, sizes={"wild": 5})
    assert fd.names == ["wild"] and "unit test" in fd.provenance["wild"]
    np.testing.assert_array_equal(fd.pose("wild"), pose)
    with pytest.raises(F.FitsFileError, match="hold 5 samples"):
        F.read_static_fits(p, expected_size=6)
    with pytest.raises(F.FitsFileError, match="do not exist"):
        F.FitsDict.from_static_fits(tmp_path, names=["lab"])
    with pytest.raises(ValueError, match="finite"):
        F.write_static_fits(tmp_path / "bad_static_fits.npz", pose * np.nan, betas, loss, "x")
    (tmp_path / "junk_static_fits.npz").write_bytes(b"not a zip")
    with pytest.raises(F.FitsFileError, match="cannot be read"):
        F.read_static_fits(tmp_path / "junk_static_fits.npz")


# ------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fd = F.FitsDict({"lab": 8, "wild": 6})
        g = torch.Generator().manual_seed(100 + rank)
        # Both ranks update wild[2] (rank 1 with the lower loss) and lab[5] (a tie: rank 0 wins);
        # each also updates rows of its own; rank 1 updates one more row than rank 0.
        if rank == 0:
            ids, idx, loss = [1, 0, 0, 0], [2, 5, 0, 1], [9.0, 4.0, 1.0, 1.5]
        else:
            ids, idx, loss = [1, 0, 1, 1, 0], [2, 5, 4, 5, 7], [3.0, 4.0, 2.0, 2.5, 6.0]
        B = len(idx)
        rot = (torch.rand(B, generator=g) - 0.5) * 1.5
        flip = torch.rand(B, generator=g) < 0.5
        pose = random_poses(B, 200 + rank)
        upd = fd.write(torch.tensor(ids), torch.tensor(idx), rot, flip, torch.ones(B, dtype=torch.bool), pose,
                       torch.full((B, 10), float(rank)), torch.tensor(loss))
        merged = fd.sync(upd)
        empty = fd.sync(F.FitsUpdate.empty())  # a step without updates on any rank
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), lab=fd.array("lab"), wild=fd.array("wild"),
                 lab_loss=fd.loss("lab"), wild_loss=fd.loss("wild"), lab_upd=fd.updated("lab"),
                 wild_upd=fd.updated("wild"), merged=len(merged), empty=len(empty))
    finally:
        dist.destroy_process_group()


def test_ddp_sync_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for k in ("lab", "wild", "lab_loss", "wild_loss", "lab_upd", "wild_upd"):
        np.testing.assert_array_equal(r0[k], r1[k])
    assert int(r0["merged"]) == 7 and int(r0["empty"]) == 0  # 9 rows, 2 duplicates
    # wild[2]: rank 1's lower loss wins (its betas are 1); lab[5]: a tie, rank 0 wins (betas 0).
    assert r0["wild_loss"][2] == 3.0 and (r0["wild"][2, 72:] == 1).all()
    assert r0["lab_loss"][5] == 4.0 and (r0["lab"][5, 72:] == 0).all()
    assert r0["lab_upd"].nonzero()[0].tolist() == [0, 1, 5, 7]
    assert r0["wild_upd"].nonzero()[0].tolist() == [2, 4, 5]
    assert np.isinf(r0["lab_loss"][[2, 3, 4, 6]]).all()


def test_sync_without_process_group_applies_local_updates():
    fd = F.FitsDict({"a": 4})
    upd = fd.canonical_update("a", torch.tensor([1]), 0.3, True, True, random_poses(1, 0), torch.ones(1, 10),
                              torch.tensor([2.0]))
    assert not fd.updated("a").any()
    merged = fd.sync(upd)
    assert len(merged) == 1 and fd.updated("a").tolist() == [False, True, False, False]


# ----------------------------------------------------------------------------- static fits, data
@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from smplfast.data import generate

    out = tmp_path_factory.mktemp("fits_data") / "tiny"
    s = generate(out, num=8, size=64, workers=1, progress=False, densepose_points=0)
    return out, dict(np.load(s.npz))


@pytest.fixture(scope="module")
def h36m_model():
    return smplfast.SMPL(keypoints="h36m_17")


def test_fit_keypoints_match_the_dataset_crop(tiny_set):
    from smplfast.data import SPINDataset

    out, d = tiny_set
    kp = F.fit_keypoints_px(d["openpose"], d["part"], d["center"], d["scale"])
    ds = SPINDataset(out / "synth_spin.npz", out, is_train=False, img_res=128)
    norm = torch.stack([ds[i]["keypoints"] for i in range(3)]).double().numpy()
    np.testing.assert_allclose(112.0 * (norm[..., :2] + 1), kp[:3, :, :2], atol=1e-3)
    np.testing.assert_allclose(norm[..., 2], kp[:3, :, 2], atol=1e-6)


def test_static_fits_gt_reproduce_the_ground_truth(tiny_set, h36m_model, tmp_path):
    import make_static_fits as msf

    out, d = tiny_set
    assert (d["has_smpl"] == 1).all()
    meta = msf.make_static_fits(out, tmp_path, "gt", name="tiny", verbose=False)
    sf = F.read_static_fits(tmp_path / "tiny_static_fits.npz", expected_size=8)
    np.testing.assert_array_equal(sf.pose, d["pose"].astype(np.float32))
    np.testing.assert_array_equal(sf.betas, d["shape"].astype(np.float32))
    assert np.isfinite(sf.loss).all() and (sf.loss >= 0).all()
    assert meta["diagnostics_neutral_gt"]["pa_mpjpe"] < 0.01 and meta["diagnostics_neutral_gt"]["pve"] < 0.01
    assert sf.meta["mode"] == "gt" and "diagnostics" in sf.meta
    fd = F.FitsDict.from_static_fits(tmp_path, sizes={"tiny": 8})
    dg = fd.diagnostics("tiny", d["pose"], d["shape"], h36m_model)
    assert dg["joints"] == "j14" and dg["pa_mpjpe"] < 0.01 and dg["pve"] < 0.01 and dg["updated"] == 0.0
    # The 24 skeleton joints, the GT-gender protocol and a subset of rows work too.
    dg24 = fd.diagnostics("tiny", d["pose"], d["shape"], smplfast.SMPL(), rows=[0, 2, 5], batch=2)
    assert dg24["joints"] == "smpl_24" and dg24["num"] == 3 and dg24["pa_mpjpe"] < 0.01
    models = {g: smplfast.SMPL(keypoints="h36m_17", gender={"m": "male", "f": "female"}[g]) for g in set(d["gender"])}
    dgg = fd.diagnostics("tiny", d["pose"], d["shape"], h36m_model, gt_model=models, gt_gender=d["gender"])
    assert 0 < dgg["pa_mpjpe"] < 60
    with pytest.raises(ValueError, match="gt_pose"):
        fd.diagnostics("tiny", d["pose"][:4], d["shape"], h36m_model)


def test_static_fits_mean_on_generated_data(tiny_set, h36m_model, tmp_path):
    out, d = tiny_set
    kp = F.fit_keypoints_px(d["openpose"], d["part"], d["center"], d["scale"])
    res = F.static_fits_mean(kp, batch=8)
    assert torch.isfinite(res.pose).all() and torch.isfinite(res.betas).all() and torch.isfinite(res.loss).all()
    fd = F.FitsDict.from_arrays({"tiny": (res.pose.numpy(), res.betas.numpy(), res.loss.numpy())})
    dg = fd.diagnostics("tiny", d["pose"], d["shape"], h36m_model)
    assert dg["pa_mpjpe"] < 300 and dg["pve"] < 400 and np.isfinite(dg["pve"])
    # The network hook: SMPLify(mode="spin") from any initialisation (here the mean fits themselves).
    cam = torch.tensor([[0.9, 0.0, 0.0]]).expand(8, 3)
    from smplfast.fitting import weak_perspective_to_translation
    res2 = F.static_fits_from_init(res.pose, res.betas, weak_perspective_to_translation(cam, 5000.0, 224), kp, batch=5)
    assert res2.pose.shape == (8, 72) and torch.isfinite(res2.loss).all()
    with pytest.raises(ValueError, match="init_betas"):
        F.static_fits_from_init(res.pose, res.betas[:, :5], res.cam_t, kp)


def test_make_static_fits_cli(tiny_set, tmp_path, capsys):
    import make_static_fits as msf

    out, d = tiny_set
    run = tmp_path / "run"
    (run / "fits").mkdir(parents=True)
    np.savez(tmp_path / "init.npz", pose=d["pose"], betas=d["shape"], cam=np.tile([0.9, 0.0, 0.0], (8, 1)))
    assert msf.main(["--data", str(out), "--out", str(run), "--init", "network", "--init-npz", str(tmp_path / "init.npz"),
                     "--batch", "4"]) == 0
    text = capsys.readouterr().out
    assert "PA-MPJPE" in text and "ms/sample" in text
    sf = F.read_static_fits(run / "fits" / "tiny_static_fits.npz", expected_size=8)
    assert sf.meta["mode"] == "network" and np.isfinite(sf.meta["diagnostics"]["pa_mpjpe"])
    with pytest.raises(SystemExit, match="init-npz"):
        msf.main(["--data", str(out), "--out", str(tmp_path), "--init", "network", "--checkpoint", "x.pt"])
