"""The synthetic data engine: files, formats, geometry of the labels, determinism, resuming, errors."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import smplfast
from smplfast.data import synth
from smplfast.data.cameras import look_at, project, rig_cameras, single_view_cameras
from smplfast.data.detections import DetectionNoise, simulate_detections
from smplfast.body.keypoints import flip_permutation

SIZE = 32  # small images: these tests render with whatever rasterizer is installed


def _gen(path, num, views, workers=1, shard_size=2, **kw):
    return synth.generate(path, num, views=views, size=SIZE, seed=7, workers=workers, shard_size=shard_size,
                          densepose_points=25, progress=False, **kw)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("single"), 4, 1, workers=1)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("multi"), 2, 4, workers=2, shard_size=1)


def _load(summary):
    with np.load(summary.npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------------------- files, keys
@pytest.mark.parametrize("which", ["single", "multi"])
def test_files_keys_shapes(which, request):
    s = request.getfixturevalue(which)
    d = _load(s)
    N, V = s.num_people, (1 if which == "single" else 4)
    lead = (N,) if V == 1 else (N, V)
    expect = {"imgname": (), "maskname": (), "partname": (), "iuvname": (), "center": (2,), "scale": (),
              "part": (24, 3), "S": (24, 4), "openpose": (25, 3), "openpose_gt": (25, 3), "pose": (72,),
              "shape": (10,), "transl": (3,), "has_smpl": (), "gender": (), "cam_rot": (3, 3), "cam_transl": (3,),
              "cam_focal": (2,), "cam_center": (2,), "bbox": (4,)}
    for key, tail in expect.items():
        assert d[key].shape == lead + tail, key
    for key in ("center", "scale", "part", "S", "openpose", "pose", "shape", "cam_rot"):
        assert d[key].dtype == np.float64, key
    assert set(np.unique(d["gender"])) <= {"m", "f", "n"}
    for key in ("imgname", "maskname", "partname", "iuvname"):
        for name in d[key].reshape(-1):
            assert os.path.isfile(os.path.join(s.out_dir, name)), name
    assert os.path.basename(s.npz) == ("synth_spin.npz" if V == 1 else "synth_mvspin.npz")
    cams = json.load(open(s.cameras))
    assert len(cams["cameras"]) == N * V
    np.testing.assert_allclose(cams["cameras"][-1]["rotation"], d["cam_rot"].reshape(-1, 3, 3)[-1])
    # The readers of real data accept the files.
    formats = pytest.importorskip("smplfast.data.formats")
    formats.load_spin_npz(s.npz, multiview=V > 1)
    formats.load_densepose_json(s.densepose)


def test_images_decode(single):
    d = _load(single)
    img = Image.open(os.path.join(single.out_dir, d["imgname"][0]))
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    assert np.asarray(img).std() > 5  # background and person, not a blank picture


# ----------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("which", ["single", "multi"])
def test_keypoints_are_projections_of_3d_joints(which, request):
    s = request.getfixturevalue(which)
    d = _load(s)
    S3 = d["S"][..., :3].reshape(-1, 24, 3)
    f, c = d["cam_focal"].reshape(-1, 2), d["cam_center"].reshape(-1, 2)
    uv = project(S3, f, c)
    part = d["part"].reshape(-1, 24, 3)
    inside = (uv >= 0).all(-1) & (uv < SIZE).all(-1)
    np.testing.assert_array_equal(part[..., 2], inside.astype(float))
    np.testing.assert_allclose(part[..., :2][inside], uv[inside], atol=1e-6)
    assert inside.mean() > 0.5
    np.testing.assert_array_equal(d["S"][..., 3], 1.0)


@pytest.mark.parametrize("which", ["single", "multi"])
def test_smpl_parameters_in_camera_frame_reproduce_joints(which, request):
    """SMPL(pose, shape, transl) with the stored camera-frame parameters gives the stored 3D joints."""
    s = request.getfixturevalue(which)
    d = _load(s)
    gender = d["gender"].reshape(-1)
    pose, shape, transl = (torch.from_numpy(d[k].reshape(len(gender), -1)).float() for k in ("pose", "shape", "transl"))
    names = {"f": "female", "m": "male", "n": "neutral"}
    for g in np.unique(gender):
        idx = np.flatnonzero(gender == g)
        model = smplfast.SMPL(gender=names[g], keypoints="spin_49")
        with torch.no_grad():
            out = model(global_orient=pose[idx, :3], body_pose=pose[idx, 3:], betas=shape[idx], transl=transl[idx])
        S = d["S"].reshape(-1, 24, 4)[idx, :, :3]
        np.testing.assert_allclose(out.joints[:, 25:].numpy(), S, atol=2e-4)
        op = d["openpose_gt"].reshape(-1, 25, 3)[idx]
        uv = project(out.joints[:, :25].double().numpy(), d["cam_focal"].reshape(-1, 2)[idx], d["cam_center"].reshape(-1, 2)[idx])
        vis = op[..., 2] > 0
        np.testing.assert_allclose(op[..., :2][vis], uv[vis], atol=0.02)


def test_multiview_rig_is_consistent(multi):
    d = _load(multi)
    R, t, S = d["cam_rot"], d["cam_transl"], d["S"][..., :3]
    # The same world joints in every view: X = R^T (X_cam - t).
    world = np.einsum("nvji,nvkj->nvki", R, S - t[:, :, None, :])
    np.testing.assert_allclose(world, np.broadcast_to(world[:, :1], world.shape), atol=1e-5)
    centres = -np.einsum("nvji,nvj->nvi", R, t)
    assert ((centres[..., 1] >= 1.0) & (centres[..., 1] <= 2.0)).all()
    radius = np.hypot(centres[..., 0], centres[..., 2])
    assert ((radius >= 3.0) & (radius <= 6.0)).all()
    # The body pose is shared by the views; only the global orientation differs.
    np.testing.assert_allclose(d["pose"][..., 3:], np.broadcast_to(d["pose"][:, :1, 3:], d["pose"][..., 3:].shape))
    assert not np.allclose(d["pose"][:, 0, :3], d["pose"][:, 1, :3])
    # Subjects stand on the floor (y = 0).
    assert np.all(np.abs(world[..., 1]).max(-1) < 2.5)


def test_center_scale_frame_the_silhouette(single):
    d = _load(single)
    for i in range(single.num_people):
        m = np.asarray(Image.open(os.path.join(single.out_dir, d["maskname"][i]))) > 0
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        side = max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0])
        assert d["scale"][i] == pytest.approx(1.2 * side / 200)
        np.testing.assert_allclose(d["center"][i], [(cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2])


# ------------------------------------------------------------------------------------- image maps
@pytest.mark.parametrize("which", ["single", "multi"])
def test_iuv_parts_and_silhouette_agree(which, request):
    s = request.getfixturevalue(which)
    d = _load(s)
    for b in range(d["imgname"].size):
        mask = np.asarray(Image.open(os.path.join(s.out_dir, d["maskname"].reshape(-1)[b])))
        parts = np.asarray(Image.open(os.path.join(s.out_dir, d["partname"].reshape(-1)[b])))
        iuv = np.asarray(Image.open(os.path.join(s.out_dir, d["iuvname"].reshape(-1)[b])))
        assert mask.shape == parts.shape == iuv.shape[:2] == (SIZE, SIZE)
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(iuv[..., 0] > 0, mask > 0)
        np.testing.assert_array_equal(parts, iuv[..., 0])
        assert parts.max() <= 24


@pytest.mark.parametrize("which", ["single", "multi"])
def test_densepose_points_on_the_surface(which, request):
    s = request.getfixturevalue(which)
    dp = json.load(open(s.densepose))
    assert len(dp["images"]) == len(dp["annotations"]) == s.num_images
    files = {im["id"]: im for im in dp["images"]}
    for ann in dp["annotations"]:
        im = files[ann["image_id"]]
        iuv = np.asarray(Image.open(os.path.join(s.out_dir, im["iuv_file_name"])))
        x, y, w, h = ann["bbox"]
        assert len(ann["dp_x"]) == 25
        px = np.floor(x + np.asarray(ann["dp_x"]) / 256 * w).astype(int)
        py = np.floor(y + np.asarray(ann["dp_y"]) / 256 * h).astype(int)
        assert np.all(iuv[py, px, 0] > 0)
        np.testing.assert_array_equal(iuv[py, px, 0], ann["dp_I"])
        np.testing.assert_allclose(iuv[py, px, 1] / 255, ann["dp_U"], atol=1 / 255 + 1e-4)
        np.testing.assert_allclose(iuv[py, px, 2] / 255, ann["dp_V"], atol=1 / 255 + 1e-4)
        assert min(ann["dp_x"] + ann["dp_y"]) >= 0 and max(ann["dp_x"] + ann["dp_y"]) <= 256
        assert len(ann["keypoints"]) == 51


def test_detections_in_the_files(single, multi):
    for s in (single, multi):
        d = _load(s)
        op, gt = d["openpose"].reshape(-1, 25, 3), d["openpose_gt"].reshape(-1, 25, 3)
        assert (op[..., 2] >= 0).all() and (op[..., 2] <= 1).all()
        missed = op[..., 2] == 0
        assert (op[missed] == 0).all()
        assert not missed[gt[..., 2] > 0].all()
        # Missing where the ground truth is outside the image.
        assert missed[gt[..., 2] == 0].all()


# ------------------------------------------------------------------ determinism, resume, arguments
def test_same_seed_same_arrays_for_any_worker_count(single, tmp_path):
    other = _gen(tmp_path / "w2", 4, 1, workers=2)
    a, b = _load(single), _load(other)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    for name in a["maskname"]:
        assert open(os.path.join(single.out_dir, name), "rb").read() == open(os.path.join(other.out_dir, name), "rb").read()


def test_resume_skips_finished_shards(single, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(single.out_dir, out)
    for f in ("synth_spin.npz", "densepose.json"):
        os.remove(out / f)
    os.remove(out / "shards" / "00001.done")  # as if the run was killed while writing shard 1
    stamp = os.path.getmtime(out / "shards" / "00000.npz")
    again = _gen(out, 4, 1)
    assert (again.shards_generated, again.shards_skipped) == (1, 1)
    assert os.path.getmtime(out / "shards" / "00000.npz") == stamp
    a, b = _load(single), _load(again)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert _gen(out, 4, 1).shards_generated == 0


def test_bad_arguments(tmp_path, single):
    with pytest.raises(ValueError, match=r"num \(--num\) must be >= 1; got 0"):
        _gen(tmp_path / "a", 0, 1)
    with pytest.raises(ValueError, match=r"size \(--size\) must be >= 32; got 16"):
        synth.generate(tmp_path / "a", 2, size=16)
    with pytest.raises(ValueError, match=r"views \(--views\) must be >= 1"):
        _gen(tmp_path / "a", 2, 0)
    with pytest.raises(ValueError, match=r"seed \(--seed\) must be >= 0"):
        synth.generate(tmp_path / "a", 2, seed=-1)
    with pytest.raises(ValueError, match="image_format"):
        synth.generate(tmp_path / "a", 2, image_format="gif")
    with pytest.raises(ValueError, match="workers"):
        synth.generate(tmp_path / "a", 2, workers=0)
    with pytest.raises(TypeError, match=r"num \(--num\) must be an int"):
        synth.generate(tmp_path / "a", 2.5)
    with pytest.raises(ValueError, match="other settings"):
        _gen(single.out_dir, 5, 1)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        _gen(tmp_path / "foreign", 1, 1)


def test_overwrite_replaces_other_settings(tmp_path):
    out = tmp_path / "o"
    _gen(out, 1, 1, shard_size=1)
    s = _gen(out, 1, 1, shard_size=1, overwrite=True, image_format="png")
    assert s.shards_generated == 1
    assert not list((out / "images").glob("*.jpg")) and list((out / "images").glob("*.png"))


def test_cli_synth_errors(capsys, tmp_path):
    from smplfast.cli import main

    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", str(tmp_path / "x"), "--num", "0"])
    assert e.value.code == 2
    assert "num (--num) must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------- building blocks
def test_look_at_and_rig_aim_at_the_subject():
    rng = np.random.default_rng(0)
    R, t = look_at(np.array([[0.0, 1.0, 5.0]]), np.array([[0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(R[0], np.diag([1.0, -1.0, -1.0]), atol=1e-12)  # sees the body's front, y down
    subject = rng.uniform(-1, 1, (5, 3))
    cams = rig_cameras(rng, subject, np.full(5, 1.8), 224, 4, aim_jitter=0.0, center_jitter=0.0)
    np.testing.assert_allclose(np.linalg.det(cams.rotation), 1.0)
    uv = cams.project(cams.to_camera(np.repeat(subject[:, None, None], 4, 1)))
    np.testing.assert_allclose(uv[..., 0, :], 112.0, atol=1e-9)
    one = single_view_cameras(rng, subject, np.full(5, 1.8), 224, aim_jitter=0.0, center_jitter=0.0, roll_deg=(0.0, 0.0))
    np.testing.assert_allclose(one.project(one.to_camera(subject[:, None]))[:, 0], 112.0, atol=1e-9)


def test_simulated_detections_follow_occlusion_border_and_swaps():
    rng = np.random.default_rng(0)
    n, K, H = 400, 25, 100
    pts = np.tile(np.array([[50.0, 50.0]]), (n, K, 1))
    pts[:, 1] = [-5.0, 50.0]       # outside the image: always missed
    pts[:, 2] = [1.0, 50.0]        # at the border: lower confidence
    depth = np.full((n, K), 4.0)
    depth_map = np.full((n, H, H), 3.95, np.float32)
    depth_map[:, 50, 50] = 3.5     # a surface 0.5 m in front of joints at pixel (50, 50): occluded
    depth[:, 3] = 3.5              # ... except joint 3, which is that surface
    perm = flip_permutation("openpose_25")
    out = simulate_detections(rng, pts, depth, depth_map, np.full(n, 80.0), perm,
                              params=DetectionNoise(swap=0.0))
    assert (out[:, 1] == 0).all()
    conf = out[..., 2]
    hit = conf > 0
    assert conf[:, 0][hit[:, 0]].mean() < 0.6 * conf[:, 3][hit[:, 3]].mean()  # occluded vs visible
    assert conf[:, 2][hit[:, 2]].mean() < 0.8 * conf[:, 3][hit[:, 3]].mean()  # border
    assert hit[:, 0].mean() < hit[:, 3].mean()                                 # occluded: missed more often
    err = np.linalg.norm(out[:, 3, :2] - 50.0, axis=-1)[hit[:, 3]]
    assert 0.3 < np.median(err) < 3.0                                          # noise ~ 1% of the size
    # Swaps exchange a joint with its mirror image.
    pts2 = rng.uniform(10, 90, (50, K, 2))
    clean = simulate_detections(np.random.default_rng(1), pts2, np.full((50, K), 4.0), np.zeros((50, H, H), np.float32),
                                np.full(50, 80.0), perm, params=DetectionNoise(swap=0.0, miss=0.0))
    swapped = simulate_detections(np.random.default_rng(1), pts2, np.full((50, K), 4.0), np.zeros((50, H, H), np.float32),
                                  np.full(50, 80.0), perm, params=DetectionNoise(swap=1.0, miss=0.0))
    changed = (clean != swapped).any(-1)
    assert changed.any(1).mean() > 0.8
    assert np.array_equal(swapped[changed], clean[np.nonzero(changed)[0], np.asarray(perm)[np.nonzero(changed)[1]]])


# ------------------------------------------------------------------------------- readers round trip
def test_datasets_read_the_output(single, multi):
    datasets = pytest.importorskip("smplfast.data.datasets")
    ds = datasets.SPINDataset(single.npz, single.out_dir, is_train=False, load_masks=True)
    assert len(ds) == single.num_people
    d = _load(single)
    item = ds[0]
    kp = item["keypoints"].numpy()
    vis = kp[25:, 2] > 0
    assert vis.any() and np.abs(kp[25:][vis, :2]).max() <= 1.0  # the 1.2-margin box frames the joints
    assert item["mask"].float().mean() > 0.05
    np.testing.assert_allclose(item["betas"].numpy(), d["shape"][0], atol=1e-6)
    mv = datasets.MultiViewDataset(multi.npz, multi.out_dir, is_train=False)
    assert len(mv) == multi.num_people
    first = mv[0]
    assert first["img"].shape[0] == 4


def test_overwrite_deletes_only_files_generate_wrote(tmp_path):
    # A folder without synth.json: overwrite writes into it and deletes nothing.
    out = tmp_path / "mixed"
    for d in ("images", "masks", "parts", "iuv"):
        (out / d).mkdir(parents=True)
        (out / d / "mine.png").write_bytes(b"user data")
    with pytest.raises(ValueError, match="not empty"):
        _gen(out, 1, 1, shard_size=1)
    _gen(out, 1, 1, shard_size=1, overwrite=True)
    for d in ("images", "masks", "parts", "iuv"):
        assert (out / d / "mine.png").read_bytes() == b"user data"
    # A synth output re-made with other settings: the old run's files go, the user's stay.
    _gen(out, 1, 1, shard_size=1, overwrite=True, image_format="png")
    assert not list((out / "images").glob("*.jpg"))
    for d in ("images", "masks", "parts", "iuv"):
        assert (out / d / "mine.png").read_bytes() == b"user data"


def test_unwritable_output_folder_is_named(tmp_path, monkeypatch):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(synth, "atomic_write_bytes", refuse)
    with pytest.raises(PermissionError, match=r"synth: cannot write into .*ro.*Permission denied"):
        _gen(tmp_path / "ro", 1, 1, shard_size=1)
