"""Datasets over the SPIN / MV-SPIN / DensePose formats: crop maths, augmentation, labels, errors."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from smplfast.body.keypoints import convert, flip_permutation, keypoint_names
from smplfast.data.augment import (
    IMG_NORM_MEAN,
    IMG_NORM_STD,
    NO_AUGMENTATION,
    SPIN_AUGMENTATION,
    AugmentationConfig,
    AugmentationParams,
    augment_joints_3d,
    augment_smpl_pose,
    flip_smpl_pose,
    make_rng,
    rotate_global_orient,
    sample_augmentation,
    undo_smpl_pose_augmentation,
)
from smplfast.data.crop import bbox_to_center_scale, crop_matrix, normalize_points, transform_points, warp_image
from smplfast.data.datasets import DensePoseDataset, MixedDataset, MultiViewDataset, SPINDataset
from smplfast.data.crop_cache import CropCacheError, build_crop_cache, load_crop_cache
from smplfast.data.formats import DataFormatError, load_spin_npz

RES = 224
PERM49 = np.asarray(flip_permutation("spin_49"))
PERM24 = np.asarray(flip_permutation("spin_24"))
PERM_SMPL = np.asarray(flip_permutation("smpl_24"))
# Marker keypoints drawn as dots, one per colour channel: (slot in the 49 keypoints, channel).
MARKERS = ((0, 0), (25 + 0, 1), (25 + 9, 2))  # nose (OpenPose), right ankle, left shoulder


# ------------------------------------------------------------------------------------------ fixtures
def _dot(draw_channels, c, x, y, r):
    d = ImageDraw.Draw(draw_channels[c])
    d.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _centroid(a):
    ys, xs = np.mgrid[0:a.shape[0], 0:a.shape[1]] + 0.5
    s = a.sum()
    return np.array([(a * xs).sum() / s, (a * ys).sum() / s])


def _make_spin_arrays(rng, tmp_path, n, *, prefix="img", multiview_views=None):
    """Images with three coloured dots at marker keypoints, plus the npz arrays of their labels."""
    views = multiview_views or 1
    shape = (n,) if multiview_views is None else (n, views)
    imgname = np.empty(shape, dtype=object)
    center = np.zeros(shape + (2,))
    scale = np.zeros(shape)
    part = np.zeros(shape + (24, 3))
    openpose = np.zeros(shape + (25, 3))
    os.makedirs(tmp_path / "images" / "sub", exist_ok=True)
    for idx in np.ndindex(*shape):
        W, H = int(rng.integers(320, 720)), int(rng.integers(260, 600))
        side = float(rng.uniform(120, min(W, H) * 1.1))
        c = np.array([rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H])
        kps = np.zeros((49, 3))
        kps[:, :2] = c + rng.uniform(-0.4, 0.4, size=(49, 2)) * side
        kps[:, 2] = rng.integers(0, 2, size=49)
        chans = [Image.new("L", (W, H), 0) for _ in range(3)]
        for slot, ch in MARKERS:
            kps[slot, :2] = c + rng.uniform(-0.22, 0.22, size=2) * side
            _dot(chans, ch, kps[slot, 0], kps[slot, 1], max(3.0, side / 60))
            # The drawn dot's own centroid is the label (Pillow rasterises the disk on whole pixels).
            kps[slot, :2] = _centroid(np.asarray(chans[ch], dtype=np.float64))
            kps[slot, 2] = 1
        name = f"sub/{prefix}_{'_'.join(map(str, idx))}.{'png' if sum(idx) % 2 else 'jpg'}"
        img = Image.merge("RGB", chans)
        if name.endswith("png"):
            img.save(tmp_path / "images" / name)
        else:
            # JPEG blurs the dots; keep the exact pixels by storing a lossless quality-100 4:4:4 file.
            img.save(tmp_path / "images" / name, quality=100, subsampling=0)
        imgname[idx] = name
        center[idx] = c
        scale[idx] = side / 200.0
        openpose[idx] = kps[:25]
        part[idx] = kps[25:]
    return dict(imgname=imgname.astype(str), center=center, scale=scale, part=part, openpose=openpose)


def _write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def spin_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spin")
    rng = np.random.default_rng(0)
    n = 8
    a = _make_spin_arrays(rng, tmp, n)
    a["S"] = np.concatenate([rng.normal(size=(n, 24, 3)) * 0.3 + [0, 0, 4], rng.integers(0, 2, (n, 24, 1))], axis=2)
    a["pose"] = rng.normal(size=(n, 72)) * 0.3
    a["shape"] = rng.normal(size=(n, 10))
    a["has_smpl"] = (np.arange(n) % 4 != 3).astype(np.float64)
    a["gender"] = np.array(["m", "f", "n", "m", "f", "f", "m", "n"])
    path = _write_npz(tmp / "toy_train.npz", a)
    return path, tmp / "images", a


def _centroids_in_item(item):
    img = item["img"].numpy() * np.asarray(IMG_NORM_STD)[:, None, None] + np.asarray(IMG_NORM_MEAN)[:, None, None]
    return [_centroid(np.clip(img[ch], 0, None)) for _, ch in MARKERS]


def _check_markers(item, tol=1.0):
    kps = item["keypoints"].numpy().copy()
    if bool(item["is_flipped"]):
        kps = kps[PERM49]  # back to the original labels (the permutation is an involution)
    px = (kps[:, :2] + 1) * RES / 2
    for (slot, _), cen in zip(MARKERS, _centroids_in_item(item)):
        assert np.linalg.norm(px[slot] - cen) < tol, (slot, px[slot], cen, item["imgname"])


# ------------------------------------------------------------------------------------------ crop maths
def test_crop_matrix_maps_box_onto_crop():
    c, s = (300.0, 200.0), 1.5
    M = crop_matrix(c, s, RES)
    corners = np.array([[150.0, 50.0], [450.0, 350.0], [300.0, 200.0]])
    np.testing.assert_allclose(transform_points(corners, M), [[0, 0], [RES, RES], [RES / 2, RES / 2]], atol=1e-9)
    # Flip mirrors about the crop's vertical centre line; positive rotation turns content counterclockwise.
    Mf = crop_matrix(c, s, RES, flip=True)
    np.testing.assert_allclose(transform_points(corners, Mf)[:, 0], [RES, 0, RES / 2], atol=1e-9)
    Mr = crop_matrix(c, s, RES, rot=math.pi / 2)
    right_of_centre = transform_points(np.array([[400.0, 200.0]]), Mr)[0]
    np.testing.assert_allclose(right_of_centre, [RES / 2, RES / 2 - 100 * RES / 300], atol=1e-9)
    np.testing.assert_allclose(normalize_points(np.array([[0.0, RES]]), RES), [[-1, 1]])
    with pytest.raises(ValueError, match="scale"):
        crop_matrix(c, 0.0, RES)
    cen, sc = bbox_to_center_scale([10, 20, 100, 50])
    np.testing.assert_allclose(cen, [60, 45])
    assert sc == pytest.approx(100 * 1.2 / 200)


@pytest.mark.parametrize("scale,rot,flip", [(1.0, 0.0, False), (1.6, 0.0, True), (0.7, 0.9, False),
                                            (1.2, -1.1, True), (5.0, 0.4, True), (0.3, 2.5, False)])
def test_warp_matches_point_transform(scale, rot, flip):
    """A dot drawn in the image lands where transform_points puts its centre (downscaling path included)."""
    W, H = 1400, 1100
    img = Image.new("L", (W, H), 0)
    x, y = 700.3, 540.8
    r = max(2.5, 4 * scale)
    ImageDraw.Draw(img).ellipse((x - r, y - r, x + r, y + r), fill=255)
    p = _centroid(np.asarray(img, dtype=np.float64))
    M = crop_matrix((x + 25 * scale, y - 35 * scale), scale, RES, rot, flip)
    out = np.asarray(warp_image(img, M, RES), dtype=np.float64)
    q = transform_points(p[None], M)[0]
    assert np.linalg.norm(_centroid(out) - q) < 0.25


# ------------------------------------------------------------------------------------------ augmentation
def test_sample_augmentation_statistics():
    rng = make_rng(3, 0, 0)
    draws = [sample_augmentation(rng) for _ in range(20000)]
    flips = np.array([d.flip for d in draws])
    rots = np.array([d.rot for d in draws])
    scales = np.array([d.scale for d in draws])
    noise = np.stack([d.pixel_noise for d in draws])
    assert abs(flips.mean() - 0.5) < 0.02
    assert abs((rots == 0).mean() - 0.6) < 0.02
    assert np.abs(rots).max() <= math.radians(60) + 1e-12
    nz = rots[rots != 0]
    assert abs(nz.std() - math.radians(28.4)) < math.radians(1.5)  # clip(N(0, 30°), ±60°)
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and abs(scales.mean() - 1) < 0.01
    assert noise.min() >= 0.6 and noise.max() <= 1.4 and abs(noise.mean() - 1) < 0.01
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentationConfig(flip_prob=1.5)
    none = sample_augmentation(make_rng(1), NO_AUGMENTATION)
    assert not none.flip and none.rot == 0 and none.scale == 1 and np.all(none.pixel_noise == 1)


def test_pose_augmentation_round_trip():
    rng = np.random.default_rng(1)
    pose = rng.normal(size=(16, 72)) * 0.5
    np.testing.assert_allclose(flip_smpl_pose(flip_smpl_pose(pose)), pose, atol=1e-12)
    rot = rng.uniform(-1, 1, size=16)
    flip = rng.uniform(size=16) < 0.5
    aug = augment_smpl_pose(pose, rot, flip)
    np.testing.assert_allclose(undo_smpl_pose_augmentation(aug, rot, flip), pose, atol=1e-9)
    assert np.array_equal(rotate_global_orient(pose, 0.0), pose)
    # Torch in, torch out, per-sample values, differentiable.
    t = torch.tensor(pose, requires_grad=True)
    out = augment_smpl_pose(t, torch.tensor(rot), torch.tensor(flip))
    out.sum().backward()
    assert torch.is_tensor(out) and t.grad is not None
    np.testing.assert_allclose(out.detach().numpy(), aug, atol=1e-9)
    with pytest.raises(ValueError, match=r"\(\.\.\., 72\)"):
        flip_smpl_pose(np.zeros((3, 69)))


def test_global_orient_rotation_rotates_smpl_joints_about_camera_z():
    """Rotating the global orientation by the in-plane rotation = rotating the posed joints about the
    camera z axis (through the root); the flip of the pose = the mirrored, relabelled joints."""
    import smplfast

    model = smplfast.SMPL()
    g = torch.Generator().manual_seed(0)
    B = 6
    pose = torch.randn(B, 72, generator=g, dtype=torch.float64) * 0.4
    betas = torch.randn(B, 10, generator=g) * 0.5
    rot = torch.tensor([0.0, 0.3, -0.7, 1.0, 2.5, -math.radians(60)], dtype=torch.float64)

    @torch.no_grad()
    def joints(p):
        out = model(betas=betas, global_orient=p[:, :3].float(), body_pose=p[:, 3:].float(), joints_only=True)
        j = out.joints[:, :24].double()
        return j - j[:, :1]

    j0 = joints(pose)
    j_rot = joints(rotate_global_orient(pose, rot))
    c, s = torch.cos(-rot), torch.sin(-rot)
    Rz = torch.zeros(B, 3, 3, dtype=torch.float64)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1
    torch.testing.assert_close(j_rot, j0 @ Rz.transpose(1, 2), atol=2e-5, rtol=0)
    # The same rotation as augment_joints_3d applies to the 3D labels.
    for b in range(B):
        np.testing.assert_allclose(augment_joints_3d(j0[b].numpy(), float(rot[b]), False, "smpl_24"),
                                   j_rot[b].numpy(), atol=2e-5)
    # Flip: mirrored joints with left/right swapped (the default model is left/right symmetric).
    j_flip = joints(flip_smpl_pose(pose))
    perm = list(flip_permutation("smpl_24"))
    mirrored = j0[:, perm] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(j_flip, mirrored, atol=1e-3, rtol=0)
    # Rotation then flip together = augment_joints_3d on the joints.
    j_aug = joints(torch.as_tensor(augment_smpl_pose(pose, rot, True)))
    for b in range(B):
        np.testing.assert_allclose(augment_joints_3d(j0[b].numpy(), float(rot[b]), True, "smpl_24"),
                                   j_aug[b].numpy(), atol=1e-3)


# ------------------------------------------------------------------------------------------ SPINDataset
def test_spin_eval_item(spin_files):
    path, img_dir, a = spin_files
    ds = SPINDataset(path, img_dir, is_train=False)
    assert len(ds) == 8 and ds.dataset_name == "toy_train"
    item = ds[1]
    assert set(item) == set(ds.item_keys)
    assert item["img"].shape == (3, RES, RES) and item["img"].dtype == torch.float32
    assert item["keypoints"].shape == (49, 3) and item["pose"].shape == (72,) and item["betas"].shape == (10,)
    assert item["pose_3d"].shape == (24, 4)
    assert not bool(item["is_flipped"]) and float(item["rot_angle"]) == 0.0
    assert float(item["scale"]) == pytest.approx(a["scale"][1])
    assert item["gender"].item() == 1 and bool(item["has_smpl"]) and bool(item["has_pose_3d"])
    assert not bool(ds[3]["has_smpl"]) and ds[2]["gender"].item() == -1
    assert item["imgname"] == os.path.join(str(img_dir), a["imgname"][1])
    H, W = Image.open(item["imgname"]).size[::-1]
    assert item["orig_shape"].tolist() == [H, W]
    # Labels without augmentation: keypoints = crop transform, pose / betas / S unchanged.
    M = crop_matrix(a["center"][1], a["scale"][1], RES)
    kps = normalize_points(transform_points(np.concatenate([a["openpose"][1], a["part"][1]]), M), RES)
    np.testing.assert_allclose(item["keypoints"].numpy(), kps, atol=1e-5)
    np.testing.assert_allclose(item["pose"].numpy(), a["pose"][1], atol=1e-6)
    np.testing.assert_allclose(item["pose_3d"].numpy(), a["S"][1], atol=1e-6)
    _check_markers(item)
    assert not bool(item["has_calibration"])


@pytest.mark.parametrize("aug", [
    AugmentationParams(flip=True),
    AugmentationParams(rot=0.8),
    AugmentationParams(rot=-math.radians(60), scale=0.75),
    AugmentationParams(flip=True, rot=0.5, scale=1.25, pixel_noise=np.array([0.6, 1.4, 1.0])),
])
def test_spin_augmented_dots_land_on_keypoints(spin_files, aug):
    path, img_dir, a = spin_files
    ds = SPINDataset(path, img_dir, is_train=True, seed=0)
    ds.augmentation_params = lambda i: aug
    for i in range(len(ds)):
        item = ds[i]
        assert bool(item["is_flipped"]) == aug.flip and float(item["rot_angle"]) == pytest.approx(aug.rot)
        _check_markers(item)
        # Labels follow the same draw.
        np.testing.assert_allclose(item["pose"].numpy(), augment_smpl_pose(a["pose"][i], aug.rot, aug.flip), atol=1e-5)
        np.testing.assert_allclose(item["pose_3d"].numpy(), augment_joints_3d(a["S"][i], aug.rot, aug.flip), atol=1e-5)
        assert float(item["scale"]) == pytest.approx(a["scale"][i] * aug.scale, rel=1e-6)


def test_spin_random_augmentation_deterministic(spin_files):
    path, img_dir, _ = spin_files
    ds = SPINDataset(path, img_dir, is_train=True, seed=7)
    ds2 = SPINDataset(path, img_dir, is_train=True, seed=7)
    for i in range(len(ds)):
        x, y = ds[i], ds2[i]
        assert torch.equal(x["img"], y["img"]) and torch.equal(x["keypoints"], y["keypoints"])
        _check_markers(x)
    params0 = [ds.augmentation_params(i) for i in range(len(ds))]
    ds.set_epoch(1)
    params1 = [ds.augmentation_params(i) for i in range(len(ds))]
    assert any(p.rot != q.rot or p.scale != q.scale for p, q in zip(params0, params1))
    unseeded = SPINDataset(path, img_dir, is_train=True)
    _check_markers(unseeded[0])


def test_spin_dataloader_collates(spin_files):
    path, img_dir, _ = spin_files
    ds = SPINDataset(path, img_dir, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["img"].shape == (4, 3, RES, RES) and batch["keypoints"].shape == (4, 49, 3)
    assert batch["has_smpl"].dtype == torch.bool and len(batch["imgname"]) == 4


def test_spin_smpl_labels_stay_consistent(tmp_path):
    """pose_3d built from SMPL joints of the pose: after augmentation SMPL(pose) still gives pose_3d."""
    import smplfast

    model = smplfast.SMPL()
    rng = np.random.default_rng(5)
    n = 4
    a = _make_spin_arrays(rng, tmp_path, n)
    pose = rng.normal(size=(n, 72)) * 0.3
    betas = rng.normal(size=(n, 10)) * 0.5
    with torch.no_grad():
        out = model(betas=torch.tensor(betas, dtype=torch.float32), global_orient=torch.tensor(pose[:, :3], dtype=torch.float32),
                    body_pose=torch.tensor(pose[:, 3:], dtype=torch.float32), joints_only=True)
    j24 = out.joints[:, :24].double().numpy() + [0.1, -0.2, 5.0]
    S = convert(np.concatenate([j24, np.ones((n, 24, 1))], axis=2), "smpl_24", "spin_24")
    valid = S[0, :, 3] > 0
    a.update(pose=pose, shape=betas, S=S)
    ds = SPINDataset(_write_npz(tmp_path / "smpl.npz", a), tmp_path / "images", seed=3)
    for i in range(n):
        for aug in (AugmentationParams(rot=0.6, flip=True), AugmentationParams(rot=-1.0)):
            ds.augmentation_params = lambda k: aug
            item = ds[i]
            with torch.no_grad():
                o = model(betas=item["betas"][None], global_orient=item["pose"][None, :3],
                          body_pose=item["pose"][None, 3:], joints_only=True)
            got = convert(o.joints[0, :24].double().numpy(), "smpl_24", "spin_24")[valid]
            want = item["pose_3d"].numpy()[valid, :3]
            np.testing.assert_allclose(got - got.mean(0), want - want.mean(0), atol=2e-3)


def test_spin_missing_optional_keys(tmp_path):
    rng = np.random.default_rng(2)
    a = _make_spin_arrays(rng, tmp_path, 3)
    del a["openpose"]
    ds = SPINDataset(_write_npz(tmp_path / "lsp.npz", a), tmp_path / "images", seed=1)
    item = ds[0]
    assert not bool(item["has_smpl"]) and not bool(item["has_pose_3d"])
    assert torch.all(item["pose"] == 0) and torch.all(item["betas"] == 0) and torch.all(item["pose_3d"] == 0)
    assert torch.all(item["keypoints"][:25, 2] == 0) and item["gender"].item() == -1
    assert item["maskname"] == "" and item["partname"] == "" and item["iuvname"] == ""
    # The newer optional keys: zeros and a False flag.
    for key in ("keypoints_gt", "smpl_joints_2d", "smpl_joints_2d_gt", "smpl_joints_3d"):
        assert torch.all(item[key] == 0) and not bool(item["has_" + key]), key
    assert item["pose_family"].item() == -1 and set(item) == set(ds.item_keys)


def test_spin_masks(tmp_path):
    rng = np.random.default_rng(4)
    a = _make_spin_arrays(rng, tmp_path, 2)
    names = []
    for i in range(2):
        im = Image.open(tmp_path / "images" / a["imgname"][i])
        m = Image.new("L", im.size, 0)
        x, y = a["part"][i, 9, :2]
        ImageDraw.Draw(m).rectangle((x - 10, y - 10, x + 10, y + 10), fill=255)
        names.append(f"sub/mask_{i}.png")
        m.save(tmp_path / "images" / names[-1])
    a["maskname"] = np.array(names)
    ds = SPINDataset(_write_npz(tmp_path / "m.npz", a), tmp_path / "images", is_train=False, load_masks=True)
    item = ds[0]
    assert item["mask"].dtype == torch.bool and item["mask"].any()
    cen = _centroid(item["mask"].numpy().astype(np.float64))
    np.testing.assert_allclose(cen, (item["keypoints"][25 + 9, :2].numpy() + 1) * RES / 2, atol=1.5)
    with pytest.raises(ValueError, match="maskname"):
        SPINDataset(_write_npz(tmp_path / "nomask.npz", {k: v for k, v in a.items() if k != "maskname"}),
                    tmp_path / "images", load_masks=True)


def test_spin_errors(tmp_path, spin_files):
    path, img_dir, a = spin_files
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        SPINDataset(tmp_path / "nope.npz", img_dir)
    with pytest.raises(FileNotFoundError, match="image directory"):
        SPINDataset(path, tmp_path / "no_images")
    bad = dict(a, part=a["part"][:, :23])
    with pytest.raises(DataFormatError, match=r"bad_shape\.npz: key 'part'.*\(N, 24, 3\) = \(8, 24, 3\); got \(8, 23, 3\)"):
        SPINDataset(_write_npz(tmp_path / "bad_shape.npz", bad), img_dir)
    bad = dict(a, scale=a["scale"][:7])
    with pytest.raises(DataFormatError, match=r"'scale'.*got \(7,\)"):
        SPINDataset(_write_npz(tmp_path / "bad_len.npz", bad), img_dir)
    bad = {k: v for k, v in a.items() if k != "center"}
    with pytest.raises(DataFormatError, match="missing required key.*center"):
        SPINDataset(_write_npz(tmp_path / "no_center.npz", bad), img_dir)
    bad = {k: v for k, v in a.items() if k != "shape"}
    with pytest.raises(DataFormatError, match="'shape' is missing"):
        SPINDataset(_write_npz(tmp_path / "no_shape.npz", bad), img_dir)
    bad = dict(a, cam_rot=np.tile(np.eye(3), (8, 1, 1)))
    with pytest.raises(DataFormatError, match="calibration keys come together"):
        SPINDataset(_write_npz(tmp_path / "cal.npz", bad), img_dir)
    bad = dict(a, scale=np.where(np.arange(8) == 5, 0.0, a["scale"]))
    with pytest.raises(DataFormatError, match=r"'scale'.*\[5\]"):
        SPINDataset(_write_npz(tmp_path / "zero_scale.npz", bad), img_dir)
    mv = dict(a, imgname=np.stack([a["imgname"]] * 2, 1))
    with pytest.raises(DataFormatError, match="MultiViewDataset"):
        SPINDataset(_write_npz(tmp_path / "mv.npz", mv), img_dir)
    gone = dict(a, imgname=np.array(list(a["imgname"][:4]) + ["sub/missing.jpg"] + list(a["imgname"][5:])))
    ds = SPINDataset(_write_npz(tmp_path / "gone.npz", gone), img_dir)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg.*sample index 4"):
        ds[4]
    assert ds.missing_files() == [(4, os.path.join(str(img_dir), "sub/missing.jpg"))]
    with pytest.raises(IndexError):
        ds[8]


# ------------------------------------------------------------------------------------------ multi-view
def _look_at(cam_pos, target):
    z = target - cam_pos
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)  # world y points down, as in camera frames
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ cam_pos


@pytest.fixture(scope="module")
def mv_files(tmp_path_factory):
    """Two people seen by four calibrated cameras; 2D labels are exact projections of world joints."""
    tmp = tmp_path_factory.mktemp("mv")
    rng = np.random.default_rng(11)
    n, V = 2, 4
    a = _make_spin_arrays(rng, tmp, n, multiview_views=V)  # images (their dots are not used here)
    world = rng.normal(size=(n, 24, 3)) * 0.4
    cam_rot, cam_transl = np.zeros((n, V, 3, 3)), np.zeros((n, V, 3))
    focal, cc = np.zeros((n, V, 2)), np.zeros((n, V, 2))
    S = np.zeros((n, V, 24, 4))
    for i in range(n):
        for v in range(V):
            ang = 2 * math.pi * v / V + 0.3
            R, t = _look_at(np.array([4 * math.sin(ang), -0.5, 4 * math.cos(ang)]), np.zeros(3))
            W, H = Image.open(tmp / "images" / a["imgname"][i, v]).size
            f = rng.uniform(600, 1000, size=2)
            if v == 0:
                f[1] = f[0]  # square pixels: the crop camera must stay skew-free (checks the rotation sense)
            c = np.array([W / 2 + 10, H / 2 - 5])
            X = world[i] @ R.T + t
            uv = f * X[:, :2] / X[:, 2:] + c
            a["part"][i, v, :, :2], a["part"][i, v, :, 2] = uv, 1
            a["center"][i, v] = uv.mean(0)
            a["scale"][i, v] = (uv.max(0) - uv.min(0)).max() * 1.2 / 200
            S[i, v, :, :3], S[i, v, :, 3] = X, 1
            cam_rot[i, v], cam_transl[i, v], focal[i, v], cc[i, v] = R, t, f, c
    a.update(S=S, cam_rot=cam_rot, cam_transl=cam_transl, cam_focal=focal, cam_center=cc,
             pose=rng.normal(size=(n, V, 72)) * 0.2, shape=np.repeat(rng.normal(size=(n, 1, 10)), V, 1))
    return _write_npz(tmp / "h36m_mv.npz", a), tmp / "images", a, world


@pytest.mark.parametrize("independent", [True, False])
def test_multiview_calibration_follows_augmentation(mv_files, independent):
    path, img_dir, a, world = mv_files
    ds = MultiViewDataset(path, img_dir, seed=1, independent_views=independent,
                          augmentation=AugmentationConfig(rot_zero_prob=0.0))
    flips = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["img"].shape == (4, 3, RES, RES) and item["keypoints"].shape == (4, 49, 3)
            assert item["pose"].shape == (4, 72) and item["cam_K"].shape == (4, 3, 3) and bool(item["has_calibration"])
            assert len(item["imgname"]) == 4
            rots = item["rot_angle"].numpy()
            assert np.all(rots != 0) and (len(set(rots.tolist())) == (4 if independent else 1))
            flipped = bool(item["is_flipped"])
            flips.add(flipped)
            Xw = world[i] * ([-1.0, 1.0, 1.0] if flipped else 1.0)
            if flipped:
                Xw = Xw[PERM24]  # the flipped item's labels are swapped left/right
            for v in range(4):
                K, R, t = (item[k][v].double().numpy() for k in ("cam_K", "cam_rot", "cam_transl"))
                assert abs(np.linalg.det(R) - 1) < 1e-5
                if v == 0:
                    assert abs(K[0, 1]) < 1e-6 * K[0, 0] and abs(K[1, 0]) < 1e-6 * K[0, 0]
                    assert K[0, 0] == pytest.approx(K[1, 1], rel=1e-6) and K[0, 0] > 0
                Xc = Xw @ R.T + t
                np.testing.assert_allclose(Xc, item["pose_3d"][v, :, :3].numpy(), atol=1e-4)
                p = Xc @ K.T
                uv = p[:, :2] / p[:, 2:]
                kp = (item["keypoints"][v, 25:, :2].double().numpy() + 1) * RES / 2
                np.testing.assert_allclose(uv, kp, atol=2e-3)
                np.testing.assert_allclose(item["pose"][v].numpy(),
                                           augment_smpl_pose(a["pose"][i, v], float(rots[v]), flipped), atol=1e-5)
    assert flips == {True, False}


def test_multiview_views_and_errors(mv_files, tmp_path):
    path, img_dir, a, _ = mv_files
    ds = MultiViewDataset(path, img_dir, is_train=False, views=[2, 0])
    item = ds[0]
    assert item["img"].shape[0] == 2 and item["imgname"][0].endswith(a["imgname"][0, 2])
    with pytest.raises(ValueError, match="views"):
        MultiViewDataset(path, img_dir, views=[4])
    bad = dict(a, cam_focal=a["cam_focal"][:, :3])
    with pytest.raises(DataFormatError, match=r"'cam_focal'.*\(N, V, 2\) = \(2, 4, 2\); got \(2, 3, 2\)"):
        MultiViewDataset(_write_npz(tmp_path / "bad.npz", bad), img_dir)
    single = dict(a, imgname=a["imgname"][:, 0])
    with pytest.raises(DataFormatError, match=r"'imgname' must have shape \(N, V\)"):
        MultiViewDataset(_write_npz(tmp_path / "single.npz", single), img_dir)


def test_single_view_calibration(mv_files, tmp_path):
    """A single-view npz may carry the calibration; the crop camera reprojects its labels."""
    _, img_dir, a, world = mv_files
    single = {k: v[:, 1] for k, v in a.items()}
    ds = SPINDataset(_write_npz(tmp_path / "single_cal.npz", single), img_dir, seed=2)
    for i in range(2):
        ds.augmentation_params = lambda k: AugmentationParams(flip=True, rot=0.4, scale=0.9)
        item = ds[i]
        Xc = item["pose_3d"][:, :3].double().numpy()
        p = Xc @ item["cam_K"].double().numpy().T
        np.testing.assert_allclose(p[:, :2] / p[:, 2:], (item["keypoints"][25:, :2].double().numpy() + 1) * RES / 2,
                                   atol=2e-3)


# ------------------------------------------------------------------------------------------ DensePose
@pytest.fixture(scope="module")
def densepose_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp")
    (tmp / "img").mkdir()
    (tmp / "iuv").mkdir()
    rng = np.random.default_rng(3)
    images, anns = [], []
    for k in range(2):
        W, H = 500 + 40 * k, 400
        img = Image.new("RGB", (W, H), (0, 0, 0))
        iuv = np.zeros((H, W, 3), dtype=np.uint8)
        bbox = [100.0 + 20 * k, 60.0, 180.0, 260.0]
        n = 30
        dx, dy = rng.uniform(40, 216, n), rng.uniform(40, 216, n)
        px = bbox[0] + dx / 256 * bbox[2]
        py = bbox[1] + dy / 256 * bbox[3]
        # A red dot at point 0; IUV part 7 in a block around point 1.
        ImageDraw.Draw(img).ellipse((px[0] - 4, py[0] - 4, px[0] + 4, py[0] + 4), fill=(255, 0, 0))
        ix, iy = int(px[1]), int(py[1])
        iuv[iy - 6:iy + 7, ix - 6:ix + 7] = (7, 128, 64)
        # Move point 0 to the dot's drawn centroid.
        cen = _centroid(np.asarray(img, dtype=np.float64)[..., 0])
        dx[0], dy[0] = (cen[0] - bbox[0]) / bbox[2] * 256, (cen[1] - bbox[1]) / bbox[3] * 256
        img.save(tmp / "img" / f"im{k}.jpg", quality=100, subsampling=0)
        Image.fromarray(iuv).save(tmp / "iuv" / f"im{k}.png")
        images.append({"id": 10 + k, "file_name": f"im{k}.jpg", "width": W, "height": H})
        kp = np.zeros((17, 3))
        kp[0] = [px[0], py[0], 2]
        anns.append({"id": 100 + k, "image_id": 10 + k, "bbox": bbox, "dp_x": dx.tolist(), "dp_y": dy.tolist(),
                     "dp_I": rng.integers(1, 25, n).tolist(), "dp_U": rng.uniform(0, 1, n).tolist(),
                     "dp_V": rng.uniform(0, 1, n).tolist(), "keypoints": kp.ravel().tolist()})
    anns.append({"id": 200, "image_id": 10, "bbox": [300.0, 50.0, 80.0, 200.0]})  # a person without points
    data = {"images": images, "annotations": anns}
    path = tmp / "densepose_train.json"
    path.write_text(json.dumps(data))
    return path, tmp, data


@pytest.mark.parametrize("train", [False, True])
def test_densepose_points_follow_crop(densepose_files, train):
    path, tmp, data = densepose_files
    ds = DensePoseDataset(path, tmp / "img", tmp / "iuv", is_train=train, max_points=40, seed=4,
                          augmentation=AugmentationConfig(flip_prob=0.0, rot_zero_prob=0.0))
    assert len(ds) == 3
    for i in range(2):
        item = ds[i]
        assert set(item) == set(ds.item_keys)
        ann = data["annotations"][i]
        assert item["dp_points"].shape == (40, 5) and item["num_points"].item() == 30
        assert item["dp_mask"][:30].all() and not item["dp_mask"][30:].any()
        assert torch.all(item["dp_points"][30:] == 0)
        np.testing.assert_allclose(item["dp_points"][:30, 2].numpy(), ann["dp_I"])
        np.testing.assert_allclose(item["dp_points"][:30, 3].numpy(), ann["dp_U"], atol=1e-6)
        if train:
            assert float(item["rot_angle"]) != 0
        # The red dot lands on point 0, and the COCO nose keypoint with it.
        img = item["img"].numpy()[0] * IMG_NORM_STD[0] + IMG_NORM_MEAN[0]
        q0 = (item["dp_points"][0, :2].numpy() + 1) * RES / 2
        assert np.linalg.norm(_centroid(np.clip(img, 0, None)) - q0) < 1.0
        kp_nose = item["keypoints"][keypoint_names("spin_49").index("nose")]
        assert kp_nose[2] == 1
        np.testing.assert_allclose((kp_nose[:2].numpy() + 1) * RES / 2, q0, atol=0.6)
        # The IUV crop has part 7 under point 1.
        q1 = (item["dp_points"][1, :2].numpy() + 1) * RES / 2
        iuv = item["iuv"].numpy()
        assert iuv[0, int(q1[1]), int(q1[0])] == 7
        assert iuv[1, int(q1[1]), int(q1[0])] == pytest.approx(128 / 255)
    empty = ds[2]
    assert not bool(empty["has_densepose"]) and empty["num_points"].item() == 0 and not empty["dp_mask"].any()
    assert not bool(empty["has_keypoints"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["dp_points"].shape == (3, 40, 5)


def test_densepose_options_and_errors(densepose_files, tmp_path):
    path, tmp, data = densepose_files
    ds = DensePoseDataset(path, tmp / "img", only_with_points=True)
    assert len(ds) == 2 and ds.num_without_points == 1 and "iuv" not in ds[0]
    with pytest.raises(ValueError, match="flip"):
        DensePoseDataset(path, tmp / "img", augmentation=SPIN_AUGMENTATION)
    with pytest.raises(ValueError, match=r"max_points=10.*\(100, 30\)"):
        DensePoseDataset(path, tmp / "img", max_points=10)

    def write(d, name):
        p = tmp_path / name
        p.write_text(json.dumps(d))
        return p

    bad = json.loads(json.dumps(data))
    bad["annotations"][1]["dp_I"][3] = 25
    with pytest.raises(DataFormatError, match=r"annotations\[1\].*dp_I must be integers in 1..24"):
        DensePoseDataset(write(bad, "bad_i.json"), tmp / "img")
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["dp_U"] = bad["annotations"][0]["dp_U"][:-1]
    with pytest.raises(DataFormatError, match="one length"):
        DensePoseDataset(write(bad, "bad_len.json"), tmp / "img")
    bad = json.loads(json.dumps(data))
    bad["annotations"][0]["image_id"] = 99
    with pytest.raises(DataFormatError, match="image_id 99"):
        DensePoseDataset(write(bad, "bad_id.json"), tmp / "img")
    bad = json.loads(json.dumps(data))
    bad["images"][1]["file_name"] = "gone.jpg"
    ds = DensePoseDataset(write(bad, "gone.json"), tmp / "img")
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg.*sample index 1"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="DensePose json not found"):
        DensePoseDataset(tmp_path / "none.json", tmp / "img")


# ------------------------------------------------------------------------------------------ mixing
def test_mixed_dataset(spin_files, tmp_path):
    path, img_dir, a = spin_files
    small = {k: v[:2] for k, v in a.items()}
    d0 = SPINDataset(path, img_dir, seed=0, dataset_name="h36m")
    d1 = SPINDataset(_write_npz(tmp_path / "lsp.npz", small), img_dir, seed=0, dataset_name="lsp")
    d2 = SPINDataset(_write_npz(tmp_path / "mpii.npz", small), img_dir, seed=0, dataset_name="mpii")
    d3 = SPINDataset(_write_npz(tmp_path / "3dhp.npz", small), img_dir, seed=0, dataset_name="3dhp")
    mix = MixedDataset.spin(d0, [d1, d2], d3, seed=5)
    np.testing.assert_allclose(mix.ratios, [0.3, 0.3, 0.3, 0.1])
    assert len(mix) == 8
    big = MixedDataset([d0, d1, d2, d3], mix.ratios, length=20000, seed=5)
    counts = np.bincount([big.source_of(i) for i in range(20000)], minlength=4) / 20000
    np.testing.assert_allclose(counts, mix.ratios, atol=0.015)
    # Deterministic with a seed, and a different epoch changes the choices.
    again = MixedDataset([d0, d1, d2, d3], mix.ratios, length=20000, seed=5)
    assert [big.source_of(i) for i in range(200)] == [again.source_of(i) for i in range(200)]
    again.set_epoch(1)
    assert d0.epoch == 1
    assert [big.source_of(i) for i in range(200)] != [again.source_of(i) for i in range(200)]
    item = mix[3]
    k = mix.source_of(3)
    assert item["mixed_source"].item() == k and item["dataset_name"] == ["h36m", "lsp", "mpii", "3dhp"][k]
    batch = next(iter(torch.utils.data.DataLoader(mix, batch_size=8)))
    assert batch["img"].shape == (8, 3, RES, RES)
    with pytest.raises(ValueError, match="sum to 1"):
        MixedDataset([d0, d1], [0.5, 0.6])
    with pytest.raises(ValueError, match="one entry per dataset"):
        MixedDataset([d0, d1], [1.0])
    with pytest.raises(ValueError, match="different item keys"):
        MixedDataset([d0, _masked(tmp_path, a, img_dir)], [0.5, 0.5])


def _masked(tmp_path, a, img_dir):
    b = dict(a, maskname=a["imgname"])
    return SPINDataset(_write_npz(tmp_path / "masked.npz", b), img_dir, load_masks=True)


def test_load_spin_npz_fills_defaults(spin_files, tmp_path):
    _, _, a = spin_files
    d = load_spin_npz(_write_npz(tmp_path / "min.npz", {k: a[k] for k in ("imgname", "center", "scale")}))
    assert d["part"].shape == (8, 24, 3) and d["openpose"].shape == (8, 25, 3) and d["S"].shape == (8, 24, 4)
    assert d["pose"].shape == (8, 72) and np.all(d["has_smpl"] == 0) and np.all(d["has_pose_3d"] == 0)
    assert "cam_rot" not in d and list(d["gender"]) == ["n"] * 8
    # pose without has_smpl: all valid (SPIN's rule).
    d = load_spin_npz(_write_npz(tmp_path / "p.npz", {k: a[k] for k in ("imgname", "center", "scale", "pose", "shape")}))
    assert np.all(d["has_smpl"] == 1)


# ------------------------------------------------------------------------------------------ newer keys
def _skeleton_keys(rng, a, lead):
    """Annotated / exact SMPL joints, exact 2D keypoints and 3D joints for the arrays ``a``."""
    gt = np.concatenate([rng.uniform(50, 250, size=lead + (24, 2)), rng.integers(0, 2, lead + (24, 1))], -1)
    noisy = gt.copy()
    noisy[..., :2] += rng.normal(size=lead + (24, 2)) * 2.0
    return dict(smpl_joints_2d=noisy, smpl_joints_2d_gt=gt,
                smpl_joints_3d=rng.normal(size=lead + (24, 3)) * 0.3 + [0.0, 0.0, 4.0],
                part_gt=a["part"] + [0.5, -0.25, 0.0], openpose_gt=a["openpose"] + [-0.5, 0.25, 0.0])


def test_new_keys_read_and_checked(spin_files, tmp_path):
    _, img_dir, a = spin_files
    rng = np.random.default_rng(8)
    b = dict(a, **_skeleton_keys(rng, a, (8,)), has_pose_3d=np.ones(8), pose_family=np.arange(8),
             world_transl=rng.normal(size=(8, 3)), world_orient=rng.normal(size=(8, 3)),
             iuvname=np.array([f"iuv/{i}.png" for i in range(8)]))
    d = load_spin_npz(_write_npz(tmp_path / "full.npz", b))
    for key, tail in (("part_gt", (24, 3)), ("openpose_gt", (25, 3)), ("smpl_joints_2d", (24, 3)),
                      ("smpl_joints_2d_gt", (24, 3)), ("smpl_joints_3d", (24, 3)), ("has_pose_3d", ()),
                      ("pose_family", ()), ("world_transl", (3,)), ("iuvname", ())):
        assert d[key].shape == (8,) + tail, key
        assert key in d["present"]
    assert d["pose_family"].dtype == np.int64 and d["iuvname"][3] == "iuv/3.png"
    np.testing.assert_allclose(d["smpl_joints_3d"], b["smpl_joints_3d"], atol=1e-6)
    # A wrong shape names the key.
    for key, bad in (("part_gt", b["part_gt"][:, :23]), ("openpose_gt", b["openpose_gt"][:, :24]),
                     ("smpl_joints_2d", b["smpl_joints_2d"][..., :2]),
                     ("smpl_joints_2d_gt", b["smpl_joints_2d_gt"][:7]),
                     ("smpl_joints_3d", np.zeros((8, 24, 4))), ("has_pose_3d", np.ones((8, 1))),
                     ("pose_family", np.zeros((8, 2), int)), ("iuvname", b["iuvname"][:, None])):
        with pytest.raises(DataFormatError, match=rf"bad_{key}\.npz: key '{key}' must have shape"):
            load_spin_npz(_write_npz(tmp_path / f"bad_{key}.npz", dict(b, **{key: bad})))
    with pytest.raises(DataFormatError, match=r"'pose_family' must lie in -1 \.\. 8.*\[2\]"):
        load_spin_npz(_write_npz(tmp_path / "fam.npz", dict(b, pose_family=np.where(np.arange(8) == 2, 9, 0))))
    with pytest.raises(DataFormatError, match="'pose_family' must hold integers"):
        load_spin_npz(_write_npz(tmp_path / "famf.npz", dict(b, pose_family=np.full(8, 0.5))))
    with pytest.raises(DataFormatError, match="'has_pose_3d' is present without 'S'"):
        load_spin_npz(_write_npz(tmp_path / "nos.npz", {k: v for k, v in b.items() if k != "S"}))
    with pytest.raises(DataFormatError, match="'iuvname' must hold strings"):
        load_spin_npz(_write_npz(tmp_path / "iuvnum.npz", dict(b, iuvname=np.zeros(8))))
    # Multi-view: per-view keys carry the view axis, per-person keys do not.
    mv = {k: (v if k in ("pose_family", "world_transl", "world_orient") else np.stack([v, v], 1)) for k, v in b.items()}
    d = load_spin_npz(_write_npz(tmp_path / "mv.npz", mv), multiview=True)
    assert d["pose_family"].shape == (8,) and d["world_transl"].shape == (8, 3)
    assert d["smpl_joints_2d"].shape == (8, 2, 24, 3) and d["has_pose_3d"].shape == (8, 2)
    with pytest.raises(DataFormatError, match=r"'pose_family' must have shape \(N,\) \(one entry per person, no view "
                                              r"axis\) = \(8,\); got \(8, 2\)"):
        load_spin_npz(_write_npz(tmp_path / "mvfam.npz", dict(mv, pose_family=np.stack([b["pose_family"]] * 2, 1))),
                      multiview=True)
    with pytest.raises(DataFormatError, match=r"'smpl_joints_3d' must have shape \(N, V, 24, 3\)"):
        load_spin_npz(_write_npz(tmp_path / "mvsj.npz", dict(mv, smpl_joints_3d=b["smpl_joints_3d"])), multiview=True)


def test_has_pose_3d_from_file(spin_files, tmp_path):
    _, img_dir, a = spin_files
    rng = np.random.default_rng(9)
    hp = (np.arange(8) % 2).astype(np.float64)  # wild-style samples: S kept for evaluation, not for training
    b = dict(a, **_skeleton_keys(rng, a, (8,)), has_pose_3d=hp)
    path = _write_npz(tmp_path / "wild.npz", b)
    ds = SPINDataset(path, img_dir, is_train=False)
    for i in range(8):
        item = ds[i]
        assert bool(item["has_pose_3d"]) == bool(hp[i]) == bool(item["has_smpl_joints_3d"])
        np.testing.assert_allclose(item["pose_3d"].numpy(), a["S"][i], atol=1e-6)  # still there for evaluation
        np.testing.assert_allclose(item["smpl_joints_3d"].numpy(), b["smpl_joints_3d"][i], atol=1e-6)
    item = SPINDataset(path, img_dir, is_train=False, ignore_3d=True)[1]
    assert not bool(item["has_pose_3d"]) and not bool(item["has_smpl_joints_3d"]) and not bool(item["has_smpl"])
    # Without the key: SPIN's rule (1 where S is present).
    assert bool(SPINDataset(_write_npz(tmp_path / "spin.npz", dict(a, **_skeleton_keys(rng, a, (8,)))), img_dir,
                            is_train=False)[0]["has_smpl_joints_3d"])


@pytest.mark.parametrize("rot,scale", [(0.0, 1.0), (0.7, 0.8), (-1.0, 1.2)])
def test_skeleton_joints_follow_augmentation(spin_files, tmp_path, rot, scale):
    _, img_dir, a = spin_files
    b = dict(a, **_skeleton_keys(np.random.default_rng(10), a, (8,)))
    ds = SPINDataset(_write_npz(tmp_path / "skel.npz", b), img_dir, seed=0)
    for i in range(3):
        items = {}
        for flip in (False, True):
            ds.augmentation_params = lambda k: AugmentationParams(flip=flip, rot=rot, scale=scale)
            items[flip] = item = ds[i]
            M = crop_matrix(a["center"][i], a["scale"][i] * scale, RES, rot, flip)
            for key in ("smpl_joints_2d", "smpl_joints_2d_gt"):
                want = normalize_points(transform_points(b[key][i], M), RES)
                np.testing.assert_allclose(item[key].numpy(), want[PERM_SMPL] if flip else want, atol=1e-5)
                assert bool(item["has_" + key])
            gt = normalize_points(transform_points(np.concatenate([b["openpose_gt"][i], b["part_gt"][i]]), M), RES)
            np.testing.assert_allclose(item["keypoints_gt"].numpy(), gt[PERM49] if flip else gt, atol=1e-5)
            np.testing.assert_allclose(item["smpl_joints_3d"].numpy(),
                                       augment_joints_3d(b["smpl_joints_3d"][i], rot, flip, "smpl_24"), atol=1e-5)
            assert bool(item["has_keypoints_gt"]) and bool(item["has_smpl_joints_3d"])
        # The flipped item is the mirrored unflipped one, relabelled with smpl_24's flip permutation.
        for key in ("smpl_joints_2d", "smpl_joints_2d_gt"):
            mirrored = items[False][key].numpy()[PERM_SMPL] * [-1.0, 1.0, 1.0]
            np.testing.assert_allclose(items[True][key].numpy(), mirrored, atol=1e-5)
        mirrored = items[False]["smpl_joints_3d"].numpy()[PERM_SMPL] * [-1.0, 1.0, 1.0]
        np.testing.assert_allclose(items[True]["smpl_joints_3d"].numpy(), mirrored, atol=1e-5)
    # Only one of the exact 2D keys: the other's rows are zero.
    only = SPINDataset(_write_npz(tmp_path / "op_gt.npz", {k: v for k, v in b.items() if k != "part_gt"}), img_dir,
                       is_train=False)[0]
    assert bool(only["has_keypoints_gt"]) and torch.all(only["keypoints_gt"][25:] == 0)
    assert torch.all(only["keypoints_gt"][:25, 2] == torch.as_tensor(b["openpose_gt"][0, :, 2], dtype=torch.float32))


def test_multiview_skeleton_joints_follow_calibration(mv_files, tmp_path):
    """SMPL joints given in each camera frame and projected: after any augmentation the item's
    smpl_joints_3d are cam_rot X' + cam_transl and project with cam_K onto smpl_joints_2d."""
    path, img_dir, a, world = mv_files
    n, V = a["imgname"].shape
    sj3d = np.einsum("nvij,nkj->nvki", a["cam_rot"], world) + a["cam_transl"][:, :, None]
    uv = a["cam_focal"][:, :, None] * sj3d[..., :2] / sj3d[..., 2:] + a["cam_center"][:, :, None]
    sj2d = np.concatenate([uv, np.ones((n, V, 24, 1))], -1)
    b = dict(a, smpl_joints_3d=sj3d, smpl_joints_2d=sj2d, smpl_joints_2d_gt=sj2d, pose_family=np.array([3, 5]))
    ds = MultiViewDataset(_write_npz(tmp_path / "mv_skel.npz", b), img_dir, seed=4,
                          augmentation=AugmentationConfig(rot_zero_prob=0.0))
    flips = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(n):
            item = ds[i]
            assert item["pose_family"].shape == () and item["pose_family"].item() == b["pose_family"][i]
            assert item["smpl_joints_2d"].shape == (V, 24, 3) and item["has_smpl_joints_3d"].shape == (V,)
            flipped = bool(item["is_flipped"])
            flips.add(flipped)
            Xw = world * [-1.0, 1.0, 1.0] if flipped else world
            Xw = Xw[i][PERM_SMPL] if flipped else Xw[i]
            for v in range(V):
                K, R, t = (item[k][v].double().numpy() for k in ("cam_K", "cam_rot", "cam_transl"))
                Xc = Xw @ R.T + t
                np.testing.assert_allclose(item["smpl_joints_3d"][v].numpy(), Xc, atol=1e-4)
                p = Xc @ K.T
                np.testing.assert_allclose((item["smpl_joints_2d"][v, :, :2].double().numpy() + 1) * RES / 2,
                                           p[:, :2] / p[:, 2:], atol=2e-3)
    assert flips == {True, False}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["pose_family"].shape == (2,) and batch["smpl_joints_3d"].shape == (2, V, 24, 3)


# ------------------------------------------------------------------------------------------ IUV crops
@pytest.fixture(scope="module")
def synth_files(tmp_path_factory):
    """A tiny set from the synthetic data engine (4 people x 2 views, 96 px), and its single-view npz."""
    from smplfast.data import generate

    out = tmp_path_factory.mktemp("synth")
    s = generate(out, num=4, views=2, size=96, workers=1, progress=False, densepose_points=0)
    with np.load(s.npz, allow_pickle=False) as z:
        mv = {k: z[k] for k in z.files}
    n, V = mv["imgname"].shape
    single = {k: (np.repeat(v, V, 0) if v.shape[:2] != (n, V) else v.reshape((n * V,) + v.shape[2:]))
              for k, v in mv.items()}
    return out, s.npz, _write_npz(out / "single.npz", single)


def test_iuv_crop_aligns_with_image(synth_files):
    out, _, single = synth_files
    aug = AugmentationConfig(flip_prob=0.0, rot_zero_prob=0.0)
    ds = SPINDataset(single, out, seed=3, img_res=64, augmentation=aug, load_iuv=True, load_masks=True)
    d = load_spin_npz(single)
    key = "part_gt" if "part_gt" in d["present"] else "part"  # exact projections when the file has them
    hits, iou = [], []
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == set(ds.item_keys) and float(item["rot_angle"]) != 0
        iuv = item["iuv"]
        assert iuv.shape == (3, 64, 64) and iuv.dtype == torch.float32
        I = iuv[0].numpy()
        assert np.all(I == np.round(I)) and I.max() <= 24 and iuv[1:].max() <= 1
        M = crop_matrix(d["center"][i], float(item["scale"]), 64, float(item["rot_angle"]))
        q = transform_points(d[key][i], M)
        for (x, y), vis in zip(q[:, :2], q[:, 2]):
            if vis > 0 and 0 <= x < 64 and 0 <= y < 64:
                hits.append(I[int(y), int(x)] > 0)
        # The IUV foreground is the silhouette, warped with the same matrix.
        fg, m = I > 0, item["mask"].numpy()
        iou.append((fg & m).sum() / max(1, (fg | m).sum()))
    assert len(hits) > 50 and np.mean(hits) > 0.8, np.mean(hits)
    assert np.mean(iou) > 0.9, iou


def test_synthetic_skeleton_follows_crop_camera(synth_files):
    """On the engine's files: the item's smpl_joints_3d project with cam_K onto smpl_joints_2d_gt."""
    out, mv_npz, _ = synth_files
    ds = MultiViewDataset(mv_npz, out, seed=2, img_res=64, augmentation=AugmentationConfig(rot_zero_prob=0.0))
    if "smpl_joints_3d" not in ds.present or "smpl_joints_2d_gt" not in ds.present:
        pytest.skip("the engine's files carry no skeleton joints")
    for i in range(len(ds)):
        item = ds[i]
        for v in range(ds.num_views):
            X = item["smpl_joints_3d"][v].double().numpy()
            p = X @ item["cam_K"][v].double().numpy().T
            q = item["smpl_joints_2d_gt"][v].double().numpy()
            vis = q[:, 2] > 0
            np.testing.assert_allclose(p[vis, :2] / p[vis, 2:], (q[vis, :2] + 1) * 64 / 2, atol=1e-2)


def test_iuv_options_and_multiview(synth_files, spin_files):
    out, mv_npz, single = synth_files
    with pytest.raises(ValueError, match=r"load_iuv=True.*flip.*chart symmetry.*flip_prob=0\.0"):
        SPINDataset(single, out, load_iuv=True)  # SPIN's augmentation flips with p = 0.5
    with pytest.raises(ValueError, match="flip_prob"):
        MultiViewDataset(mv_npz, out, load_iuv=True)
    SPINDataset(single, out, is_train=False, load_iuv=True)  # no augmentation: nothing to mirror
    path, img_dir, _ = spin_files
    with pytest.raises(ValueError, match="no 'iuvname' key"):
        SPINDataset(path, img_dir, is_train=False, load_iuv=True)
    ds = MultiViewDataset(mv_npz, out, is_train=False, load_iuv=True, views=[1], img_res=48)
    item = ds[0]
    assert item["iuv"].shape == (1, 3, 48, 48) and set(item) == set(ds.item_keys)
    np.testing.assert_array_equal(item["iuv"][0].numpy(),
                                  SPINDataset(single, out, is_train=False, load_iuv=True, img_res=48)[1]["iuv"].numpy())


# ------------------------------------------------------------------------------------------ crop cache
def _items_equal(x, y, skip=()):
    assert set(x) == set(y)
    for k in x:
        if k in skip:
            continue
        if torch.is_tensor(x[k]):
            assert torch.equal(x[k], y[k]), k
        else:
            assert x[k] == y[k], k


def test_crop_cache_items_match(spin_files, tmp_path):
    path, img_dir, a = spin_files
    b = dict(a, **_skeleton_keys(np.random.default_rng(12), a, (8,)))
    npz = _write_npz(tmp_path / "c.npz", b)
    plain = SPINDataset(npz, img_dir, is_train=False)
    cache = build_crop_cache(plain, tmp_path / "cache")
    assert cache.crops.shape == (8, RES, RES, 3) and cache.crops.dtype == np.uint8
    assert sorted(os.listdir(tmp_path)) == ["c.npz", "cache"]  # nothing temporary left behind
    cached = SPINDataset(npz, img_dir, is_train=False, crop_cache=tmp_path / "cache")
    assert cached.crop_cache_path == str(tmp_path / "cache") and plain.crop_cache_path is None
    for i in range(8):
        x = plain[i]
        _items_equal(x, cached[i])
        # The stored keypoints are the crop's pixels.
        np.testing.assert_allclose(normalize_points(cache.keypoints[i], RES), x["keypoints"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(cache.orig_shape[i], x["orig_shape"].numpy())
    # Training: flip and gain drawn as usual, no rotation or rescale.
    train = SPINDataset(npz, img_dir, seed=5, crop_cache=tmp_path / "cache")
    ref = SPINDataset(npz, img_dir, seed=5)
    flips = set()
    for i in range(8):
        aug = train.augmentation_params(i)
        full = ref.augmentation_params(i)
        assert aug.rot == 0 and aug.scale == 1 and aug.flip == full.flip
        np.testing.assert_array_equal(aug.pixel_noise, full.pixel_noise)
        flips.add(aug.flip)
        ref.augmentation_params = lambda k: aug
        x, y = ref[i], train[i]
        _items_equal(x, y, skip=("img",))
        diff = (x["img"] - y["img"]).abs()  # a mirrored crop vs. a crop taken mirrored: rounding only
        assert diff.max() < 0.05 and (diff > 1e-6).float().mean() < 0.01
        _check_markers(y)
    assert flips == {True, False}


def test_crop_cache_refuses_other_settings(spin_files, tmp_path):
    path, img_dir, a = spin_files
    ds = SPINDataset(path, img_dir, is_train=False, img_res=64)
    cdir = tmp_path / "cache64"
    build_crop_cache(ds, cdir)
    stamp = os.path.getmtime(cdir / "crops.npy")
    assert build_crop_cache(ds, cdir).res == 64 and os.path.getmtime(cdir / "crops.npy") == stamp  # reused
    with pytest.raises(CropCacheError, match=r"made at res 64.*img_res 224.*img_res=64"):
        SPINDataset(path, img_dir, crop_cache=cdir)
    small = _write_npz(tmp_path / "small.npz", {k: v[:4] for k, v in a.items()})
    with pytest.raises(CropCacheError, match=r"shape \(8,\).*has \(4,\)"):
        SPINDataset(small, img_dir, img_res=64, crop_cache=cdir)
    moved = _write_npz(tmp_path / "moved.npz", dict(a, center=a["center"] + [3.0, 0.0]))
    with pytest.raises(CropCacheError, match="made from other data"):
        SPINDataset(moved, img_dir, img_res=64, crop_cache=cdir)
    with pytest.raises(CropCacheError, match="not found"):
        SPINDataset(path, img_dir, img_res=64, crop_cache=tmp_path / "none")
    # Building over a cache of other settings needs overwrite, and then replaces it whole.
    dm = SPINDataset(moved, img_dir, is_train=False, img_res=64)
    with pytest.raises(CropCacheError, match="overwrite=True"):
        build_crop_cache(dm, cdir)
    build_crop_cache(dm, cdir, overwrite=True)
    _items_equal(SPINDataset(moved, img_dir, is_train=False, img_res=64, crop_cache=cdir)[2], dm[2])
    assert sorted(os.listdir(tmp_path)) == ["cache64", "moved.npz", "small.npz"]
    # Pickling (DataLoader workers) does not copy the crops.
    import pickle

    c = load_crop_cache(cdir)
    c.crops
    assert len(pickle.dumps(c)) < c.crops.nbytes / 4


def test_crop_cache_multiview(mv_files, tmp_path):
    path, img_dir, _, _ = mv_files
    ds = MultiViewDataset(path, img_dir, is_train=False, views=[2, 0], img_res=64)
    build_crop_cache(ds, tmp_path / "mv_cache")
    cached = MultiViewDataset(path, img_dir, is_train=False, views=[2, 0], img_res=64, crop_cache=tmp_path / "mv_cache")
    for i in range(2):
        _items_equal(ds[i], cached[i])
    train = MultiViewDataset(path, img_dir, seed=0, img_res=64, crop_cache=tmp_path / "mv_cache")
    assert torch.all(train[0]["rot_angle"] == 0)


# ------------------------------------------------------------------------- hostile / corrupt inputs
def test_paths_outside_the_image_folder_are_refused(spin_files, tmp_path, densepose_files):
    path, img_dir, a = spin_files
    for name in ("../../x.png", "/etc/passwd", "sub/../../x.png"):
        imgname = a["imgname"].copy().astype(object)
        imgname[3] = name
        bad = dict(a, imgname=imgname.astype(str))
        with pytest.raises(DataFormatError, match=r"escape\.npz: key 'imgname' at sample index 3: path .* outside"):
            SPINDataset(_write_npz(tmp_path / "escape.npz", bad), img_dir)
    bad = dict(a, maskname=np.array(["ok.png"] * 7 + ["../m.png"]))
    with pytest.raises(DataFormatError, match=r"key 'maskname' at sample index 7"):
        SPINDataset(_write_npz(tmp_path / "escape_mask.npz", bad), img_dir)
    dp_path, tmp, data = densepose_files
    d = json.loads(json.dumps(data))
    d["images"][0]["file_name"] = "../../secret.jpg"
    p = tmp_path / "dp_escape.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DataFormatError, match=r"dp_escape\.json: images\[0\] .*file_name: path .* outside"):
        DensePoseDataset(p, tmp / "img")


def test_non_finite_labels_and_overflowing_boxes_are_refused(spin_files, tmp_path):
    path, img_dir, a = spin_files
    pose = a["pose"].copy()
    pose[2, 5] = np.nan                       # has_smpl[2] = 1: an error naming key and row
    with pytest.raises(DataFormatError, match=r"key 'pose' holds NaN or Inf .*has_smpl.* sample index 2"):
        SPINDataset(_write_npz(tmp_path / "nan_pose.npz", dict(a, pose=pose)), img_dir)
    pose = a["pose"].copy()
    pose[3, 5] = np.nan                       # has_smpl[3] = 0: flagged, loaded as 0
    ds = SPINDataset(_write_npz(tmp_path / "nan_unused.npz", dict(a, pose=pose)), img_dir, is_train=False)
    assert np.isfinite(ds.data["pose"]).all() and torch.isfinite(ds[3]["pose"]).all()
    S = a["S"].copy()
    S[1, 0, 0] = np.inf
    with pytest.raises(DataFormatError, match=r"key 'S' holds NaN or Inf .*sample index 1"):
        SPINDataset(_write_npz(tmp_path / "inf_S.npz", dict(a, S=S)), img_dir)
    for key, value in (("center", 1e300), ("scale", 1e300), ("center", np.inf)):
        arr = a[key].copy()
        arr[4] = value
        with pytest.raises(DataFormatError, match=rf"key '{key}'"):
            SPINDataset(_write_npz(tmp_path / "big_box.npz", dict(a, **{key: arr})), img_dir)


def test_corrupt_files_and_read_only_output_are_named(spin_files, tmp_path, densepose_files):
    from smplfast.data.formats import load_densepose_json, views_as_samples

    path, img_dir, a = spin_files
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(DataFormatError, match=r"corrupt\.npz: not a readable npz"):
        SPINDataset(corrupt, img_dir)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataFormatError, match=r"junk\.npz"):
        load_spin_npz(junk)
    dp_path, tmp, data = densepose_files
    for mangled in ({"images": "x", "annotations": []}, {"images": [1], "annotations": []},
                    dict(data, annotations=[dict(data["annotations"][0], bbox=["a", "b", "c", "d"])])):
        p = tmp_path / "malformed.json"
        p.write_text(json.dumps(mangled))
        with pytest.raises(DataFormatError, match=r"malformed\.json"):
            load_densepose_json(p)
    # A read-only output folder (simulated: root ignores permissions): the error names the file.
    import smplfast._io

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    mv = tmp_path / "mv.npz"
    np.savez(mv, imgname=np.array([["a.jpg", "b.jpg"]]), center=np.ones((1, 2, 2)), scale=np.ones((1, 2)))
    mp = pytest.MonkeyPatch()
    mp.setattr(smplfast._io, "atomic_write", refuse)
    try:
        with pytest.raises(PermissionError, match=r"cannot write .*ro/out\.npz.*Permission denied"):
            views_as_samples(mv, tmp_path / "ro" / "out.npz")
    finally:
        mp.undo()
