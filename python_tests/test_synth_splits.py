"""Controls of the synthetic engine for learning experiments: pose families, viewpoints, annotation noise,
occluders, skeleton joints, hidden labels and the standard splits."""
import json
import os

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body.keypoints import flip_permutation
from smplfast.body.samplers import POSE_FAMILIES, axis_angle_to_matrix
from smplfast.data import synth
from smplfast.data.cameras import facing_azimuth, project, view_angles
from smplfast.data.detections import annotation_noise, random_occluders
from smplfast.data.splits import LAB_FAMILIES, SPLITS, split_statistics

SIZE = 32
HERE = os.path.dirname(__file__)


def _gen(path, num, **kw):
    kw.setdefault("size", SIZE)
    kw.setdefault("densepose_points", 0)
    return synth.generate(path, num, workers=1, progress=False, **kw)


def _load(summary):
    with np.load(summary.npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("lab"), 48, split="lab_train", shard_size=24)


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    """2,000 people with the wild split's cameras and 2 % annotation noise only (no swaps or guesses)."""
    return _gen(tmp_path_factory.mktemp("wild"), 2000, split="wild_train", occluders=0.0, mislabel_prob=0.0,
                swap_prob=0.0, keypoint_noise=0.02, bbox_jitter=0.0, shard_size=500)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("rig"), 3, split="rig_train", shard_size=2, densepose_points=10)


def _angles(d):
    """Per image: azimuth relative to the person's facing, elevation, roll (degrees), camera distance."""
    n = len(d["world_orient"])
    V = d["cam_rot"].shape[1] if d["cam_rot"].ndim == 4 else 1
    R, t = d["cam_rot"].reshape(n, V, 3, 3), d["cam_transl"].reshape(n, V, 3)
    root_cam = d["smpl_joints_3d"].reshape(n, V, 24, 3)[:, :, 0]
    root = np.einsum("nvji,nvj->nvi", R, root_cam - t)
    facing = facing_azimuth(axis_angle_to_matrix(torch.from_numpy(d["world_orient"])).numpy())
    az, el, roll = view_angles(R, t, root, facing[:, None])
    dist = np.linalg.norm(-np.einsum("nvji,nvj->nvi", R, t) - root, axis=-1)
    return az, el, roll, dist


# ----------------------------------------------------------------------------------------- families
def _knee_flexion_deg(pose):
    """Rotation angle (degrees) of both knees (SMPL joints 4 and 5) of axis-angle poses (n, 72)."""
    body = np.asarray(pose, np.float64).reshape(-1, 24, 3)
    return np.rad2deg(np.linalg.norm(body[:, [4, 5]], axis=-1))


def test_families_are_honoured_and_stored(lab, tmp_path):
    d = _load(lab)
    lab_index = {POSE_FAMILIES.index(f) for f in LAB_FAMILIES}
    assert d["pose_family"].shape == (48,) and d["pose_family"].dtype == np.int64
    assert set(d["pose_family"].tolist()) <= lab_index
    assert len(set(d["pose_family"].tolist())) >= 4  # every lab family appears in 48 draws (almost surely)
    # The families' ranges (samplers' templates): lab activities bend the knees < 90 deg (walking's swing
    # leg <= 80 + noise), crouching bends them 110-145 deg (+- the sampler's 2-degree noise per axis).
    assert _knee_flexion_deg(d["pose"]).max() < 90
    crouch = _load(_gen(tmp_path / "crouch", 6, families=["crouching"], shard_size=6))
    assert (crouch["pose_family"] == POSE_FAMILIES.index("crouching")).all()
    assert _knee_flexion_deg(crouch["pose"]).min() > 100


def test_lab_cameras_are_honoured(lab):
    d = _load(lab)
    az, el, roll, dist = _angles(d)
    offsets = np.array(SPLITS["lab_train"]["azimuths"])
    nearest = np.abs(np.angle(np.exp(1j * np.deg2rad(az[..., None] - offsets))))
    assert np.rad2deg(nearest.min(-1)).max() <= 10 + 1e-6
    assert el.min() >= -5 - 1e-6 and el.max() <= 5 + 1e-6
    np.testing.assert_allclose(roll, 0.0, atol=1e-6)
    assert dist.min() >= 3 - 1e-6 and dist.max() <= 5 + 1e-6
    assert (d["has_smpl"] == 1).all() and (d["has_pose_3d"] == 1).all()
    np.testing.assert_array_equal(d["part"], d["part_gt"])  # lab labels are exact


def test_wild_cameras_cover_the_circle(wild):
    d = _load(wild)
    az, el, roll, _ = _angles(d)
    assert el.min() >= -10 - 1e-6 and el.max() <= 35 + 1e-6
    assert roll.min() >= -10 - 1e-6 and roll.max() <= 10 + 1e-6 and roll.std() > 4
    hist, _ = np.histogram(az, bins=8, range=(-180, 180))
    assert hist.min() > 0.08 * len(az)  # every 45-degree sector is seen
    assert set(d["pose_family"].tolist()) == set(range(len(POSE_FAMILIES)))
    assert (d["has_smpl"] == 0).all() and (d["has_pose_3d"] == 0).all()


# ------------------------------------------------------------------------------- annotation noise
def test_annotation_noise_statistics_match_sigma(wild):
    d = _load(wild)
    ann, gt = d["part"], d["part_gt"]
    np.testing.assert_array_equal(ann[..., 2], gt[..., 2])
    lab = gt[..., 2] > 0
    # The annotation box is the silhouette's (no jitter here): its larger side scales the noise.
    side = d["bbox"][:, 2:].max(1)
    err = (ann[..., :2] - gt[..., :2]) / side[:, None, None]
    e = err[lab]
    assert len(e) > 20000
    np.testing.assert_allclose(e.mean(0), 0.0, atol=0.02 * 0.03)
    np.testing.assert_allclose(e.std(0), 0.02, rtol=0.03)
    np.testing.assert_array_equal(ann[~lab], gt[~lab])
    # The skeleton joints carry the same kind of noise.
    s_err = (d["smpl_joints_2d"][..., :2] - d["smpl_joints_2d_gt"][..., :2]) / side[:, None, None]
    np.testing.assert_allclose(s_err[d["smpl_joints_2d_gt"][..., 2] > 0].std(0), 0.02, rtol=0.03)


def test_annotation_noise_swaps_and_guesses():
    rng = np.random.default_rng(0)
    n, K = 2000, 24
    pts = np.concatenate([rng.uniform(0, 100, (n, K, 2)), np.ones((n, K, 1))], -1)
    pts[:, 0, 2] = 0  # an unlabelled joint stays as it is
    occluded = np.zeros((n, K), bool)
    occluded[:, 5] = True
    perm = np.asarray(flip_permutation("spin_24"))
    out = annotation_noise(rng, pts, occluded, np.full(n, 100.0), perm, sigma=0.0, swap_prob=0.25, mislabel_prob=0.5,
                           mislabel_sigma=0.1)
    keep = np.setdiff1d(np.arange(K), [5, perm[5]])  # joints that only a swap can move
    swapped = np.all(out[:, keep, :2] == pts[:, perm[keep], :2], axis=(1, 2)) & ~np.all(out[:, keep, :2] == pts[:, keep, :2], axis=(1, 2))
    assert abs(swapped.mean() - 0.25) < 0.04
    moved = np.any(out[~swapped][..., :2] != pts[~swapped][..., :2], axis=-1)
    assert not moved[:, np.arange(K) != 5].any()  # only the hidden joint gets guesses
    assert abs(moved[:, 5].mean() - 0.5) < 0.05
    step = (out[~swapped][:, 5, :2] - pts[~swapped][:, 5, :2])[moved[:, 5]]
    np.testing.assert_allclose(step.std(0), 10.0, rtol=0.1)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        annotation_noise(rng, pts, occluded, np.full(n, 100.0), perm, sigma=-0.1)
    with pytest.raises(ValueError, match="swap_prob"):
        annotation_noise(rng, pts, occluded, np.full(n, 100.0), perm, sigma=0.1, swap_prob=2)


def test_occluders_cover_the_requested_fraction():
    rng = np.random.default_rng(1)
    boxes = np.tile([[40.0, 30.0, 60.0, 120.0]], (400, 1))
    masks = random_occluders(rng, boxes, (200, 200), 0.3)
    frac = masks.sum((1, 2)) / (60 * 120)
    assert frac.max() <= 0.3 * 1.1 + 0.02 and 0.1 < frac.mean() < 0.2  # uniform in [0, 0.3]: mean 0.15
    assert not random_occluders(rng, boxes[:3], (200, 200), 0.0).any()


def test_occluded_split_shares_people_and_hides_joints(tmp_path):
    """wild_test_occ = wild_test's people and cameras with occluders in front: same labels, more joints
    marked hidden, detections more often missed, DensePose points only on the visible body."""
    a = _load(_gen(tmp_path / "clean", 12, split="wild_test", shard_size=12, densepose_points=20))
    occ_summary = _gen(tmp_path / "occ", 12, split="wild_test_occ", shard_size=12, densepose_points=20)
    b = _load(occ_summary)
    for key in ("pose", "shape", "S", "part_gt", "cam_rot", "smpl_joints_3d", "pose_family"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (b["occluded"] >= a["occluded"]).all() and b["occluded"].sum() > a["occluded"].sum()
    assert (b["openpose"][..., 2] > 0).sum() <= (a["openpose"][..., 2] > 0).sum()
    dp = json.load(open(occ_summary.densepose))
    assert all(len(ann["dp_x"]) == 20 for ann in dp["annotations"] if "dp_x" in ann)


# ---------------------------------------------------------------------------------- labels and keys
@pytest.mark.parametrize("which", ["lab", "rig"])
def test_gt_2d_and_skeleton_joints_are_projections_of_the_stored_smpl(which, request):
    s = request.getfixturevalue(which)
    d = _load(s)
    gender = d["gender"].reshape(-1)
    pose, shape, transl = (torch.from_numpy(d[k].reshape(len(gender), -1)) for k in ("pose", "shape", "transl"))
    f, c = d["cam_focal"].reshape(-1, 2), d["cam_center"].reshape(-1, 2)
    names = {"f": "female", "m": "male", "n": "neutral"}
    for g in np.unique(gender):
        idx = np.flatnonzero(gender == g)
        spin = smplfast.SMPL(gender=names[g], keypoints="spin_49", dtype=torch.float64)
        plain = smplfast.SMPL(gender=names[g], dtype=torch.float64)
        kw = dict(global_orient=pose[idx, :3], body_pose=pose[idx, 3:], betas=shape[idx], transl=transl[idx])
        with torch.no_grad():
            j49, j_skel = spin(**kw).joints.numpy(), plain(**kw).joints[:, :24].numpy()
        gt = d["part_gt"].reshape(-1, 24, 3)[idx]
        vis = gt[..., 2] > 0
        np.testing.assert_allclose(gt[..., :2][vis], project(j49[:, 25:], f[idx], c[idx])[vis], atol=0.02)
        np.testing.assert_allclose(d["smpl_joints_3d"].reshape(-1, 24, 3)[idx], j_skel, atol=2e-4)
        s2 = d["smpl_joints_2d_gt"].reshape(-1, 24, 3)[idx]
        vis = s2[..., 2] > 0
        assert vis.mean() > 0.5
        np.testing.assert_allclose(s2[..., :2][vis], project(j_skel, f[idx], c[idx])[vis], atol=0.02)


def test_rig_split_hides_smpl_keeps_3d(rig):
    d = _load(rig)
    assert d["pose_family"].shape == (3,) and d["smpl_joints_2d"].shape == (3, 4, 24, 3)
    assert (d["has_smpl"] == 0).all() and (d["has_pose_3d"] == 1).all()


def test_defaults_unchanged():
    """The default settings draw exactly what the engine drew before the learning-experiment controls
    existed (values recorded from that version for this seed)."""
    import tempfile

    gold = np.load(os.path.join(HERE, "data", "synth_defaults_v1.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        sv = _load(synth.generate(os.path.join(tmp, "sv"), 4, views=1, size=32, seed=7, workers=1, shard_size=2,
                                  densepose_points=25, progress=False))
        mv = _load(synth.generate(os.path.join(tmp, "mv"), 2, views=4, size=32, seed=7, workers=1, shard_size=1,
                                  densepose_points=25, progress=False))
    for prefix, d in (("sv_", sv), ("mv_", mv)):
        for key in ("pose", "shape", "part", "openpose", "center", "scale", "cam_rot", "cam_transl", "cam_focal", "S"):
            np.testing.assert_allclose(d[key], gold[prefix + key], rtol=1e-6, atol=1e-6, err_msg=prefix + key)
        np.testing.assert_array_equal(d["part"], d["part_gt"])
        np.testing.assert_array_equal(d["smpl_joints_2d"], d["smpl_joints_2d_gt"])
        assert (d["has_pose_3d"] == 1).all()


# ----------------------------------------------------------------------------- splits, config, CLI
def test_split_table_and_statistics(lab):
    assert set(SPLITS) == {"lab_train", "lab_test", "wild_train", "wild_test", "wild_test_occ", "rig_train", "rig_test"}
    st = split_statistics(lab.out_dir)
    assert st["split"] == "lab_train" and st["people"] == 48
    assert sum(st["families"][f] for f in LAB_FAMILIES) == pytest.approx(1.0, abs=1e-3)
    assert -5.01 <= st["elevation_deg"]["min"] and st["elevation_deg"]["max"] <= 5.01
    settings = json.load(open(os.path.join(lab.out_dir, synth.SETTINGS_FILE)))["settings"]
    assert settings["split"] == "lab_train" and settings["families"] == list(LAB_FAMILIES)


def test_resolve_settings_precedence(tmp_path):
    s = synth.resolve_settings(split="wild_train")
    assert (s.num, s.seed, s.occluders, s.hide_3d) == (6000, 1003, 0.3, True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("split: lab_test\nnum: 10\nelevation: [0, 2]\n")
    s = synth.resolve_settings(config=cfg, num=5)
    assert (s.split, s.num, s.elevation, s.families) == ("lab_test", 5, (0.0, 2.0), LAB_FAMILIES)
    assert synth.resolve_settings(split="lab_train", azimuths="all").azimuths is None
    (tmp_path / "c.json").write_text(json.dumps({"num": 3, "fill": [0.5, 0.6]}))
    assert synth.resolve_settings(config=tmp_path / "c.json").fill == (0.5, 0.6)


@pytest.mark.parametrize("options, message", [
    (dict(families=["standing", "flying"]), r"families \(--families\) must be distinct names from standing, walking"),
    (dict(families=[]), r"families \(--families\)"),
    (dict(fill=(0.5, 1.2)), r"fill \(--fill\) must be \(lo, hi\) with 0.0 < lo <= hi <= 1.0"),
    (dict(fill=(0.0, 0.5)), r"fill \(--fill\)"),
    (dict(elevation=(10, 95)), r"elevation \(--elevation\) must be \(lo, hi\) with -90.0 <= lo <= hi <= 90.0"),
    (dict(elevation=(10, 5)), r"elevation \(--elevation\)"),
    (dict(distance=(-1, 3)), r"distance \(--distance\)"),
    (dict(keypoint_noise=-0.1), r"keypoint_noise \(--keypoint-noise\) must be a number in \[0.0, 1.0\]"),
    (dict(swap_prob=1.5), r"swap_prob \(--swap-prob\)"),
    (dict(occluders=2.0), r"occluders \(--occluders\)"),
    (dict(azimuths=[]), r"azimuths \(--azimuths\) must be a non-empty list"),
    (dict(views=4, elevation=(0, 10)), r"elevation \(--elevation\) applies to single-view data"),
    (dict(split="moon"), r"split \(--split\) must be one of lab_train, lab_test, wild_train"),
    (dict(colour="red"), r"unknown synth option key\(s\) \['colour'\]"),
])
def test_bad_settings_name_the_option(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path / "x", 2, progress=False, **options)
    assert not (tmp_path / "x").exists()


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        synth.resolve_settings(config=tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        synth.resolve_settings(config=tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        synth.resolve_settings(config=tmp_path / "list.yaml")
    with pytest.raises(ValueError, match=r"num \(--num\) is required"):
        synth.resolve_settings(size=64)


def test_cli_split_and_errors(tmp_path, capsys):
    from smplfast.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--split", "wild_test_occ", "--num", "2", "--size", "32", "--workers", "1", "--no-progress",
                 "--densepose-points", "0", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    settings = json.load(open(out / synth.SETTINGS_FILE))["settings"]
    assert summary["num_people"] == 2 and settings["occluders"] == 0.3 and settings["seed"] == 1004
    for argv, message in ((["--split", "nope"], "split (--split) must be one of"),
                          (["--num", "2", "--families", "standing,flying"], "families (--families)"),
                          (["--num", "2", "--fill", "0.2"], "expected LO,HI"),
                          (["--num", "2", "--elevation", "0,100"], "elevation (--elevation)")):
        with pytest.raises(SystemExit) as e:
            main(["synth", "--out", str(tmp_path / "e"), *argv])
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_resume_with_new_options_is_byte_identical(tmp_path):
    kw = dict(split="wild_train", shard_size=2, densepose_points=5)
    full = _load(_gen(tmp_path / "a", 4, **kw))
    out = tmp_path / "b"
    _gen(out, 4, **kw)
    os.remove(out / "shards" / "00001.done")  # as if killed while writing shard 1
    os.remove(out / "synth_spin.npz")
    again = _gen(out, 4, **kw)
    assert again.shards_generated == 1
    b = _load(again)
    for k in full:
        assert full[k].tobytes() == b[k].tobytes(), k


# -------------------------------------------------------------------------- IUV crops align with images
def _allowed_parts():
    """spin_24 joint -> the DensePose parts (1-based) whose surface lies in front of it."""
    from smplfast.body.keypoints import keypoint_names
    from smplfast.surface.charts import DENSEPOSE_PART_NAMES

    def parts(*words):
        return {i + 1 for i, n in enumerate(DENSEPOSE_PART_NAMES) if any(w in n for w in words)}

    table = []
    for name in keypoint_names("spin_24"):
        side = "Left" if name.startswith("left") else "Right"
        if "ankle" in name:
            allowed = parts(f"Lower Leg {side}", f"{side} Foot")
        elif "knee" in name:
            allowed = parts(f"Upper Leg {side}", f"Lower Leg {side}")
        elif "hip" in name:
            allowed = parts(f"Upper Leg {side}", "Torso")
        elif "wrist" in name:
            allowed = parts(f"Lower Arm {side}", f"{side} Hand")
        elif "elbow" in name:
            allowed = parts(f"Upper Arm {side}", f"Lower Arm {side}")
        elif "shoulder" in name:
            allowed = parts(f"Upper Arm {side}", "Torso")
        elif name.startswith("neck"):
            allowed = parts("Torso", "Head")
        elif name.startswith(("pelvis",)):
            allowed = parts("Torso", "Upper Leg")
        elif name.startswith(("thorax", "spine")):
            allowed = parts("Torso")
        else:  # head top, jaw, head, nose, eyes, ears
            allowed = parts("Head")
        table.append(allowed)
    return table


def test_iuv_crops_align_with_image_crops(tmp_path):
    """In SPINDataset(load_iuv=True) crops (rotated and scaled), the IUV part under each visible,
    unoccluded ground-truth joint (within its 3x3 pixel neighbourhood: joints near the contour) is a part
    that joint belongs to, on >= 95 % of the joints. The face and head-top keypoints are surface points
    on the contour (background half the time at 96 px) and are left out."""
    import dataclasses

    from smplfast.data.augment import SPIN_AUGMENTATION
    from smplfast.data.datasets import SPINDataset

    s = _gen(tmp_path / "iuv", 24, size=128, split="wild_test", shard_size=24)
    d = _load(s)
    aug = dataclasses.replace(SPIN_AUGMENTATION, flip_prob=0.0)
    ds = SPINDataset(s.npz, s.out_dir, is_train=True, augmentation=aug, img_res=96, seed=0, load_iuv=True)
    allowed = _allowed_parts()
    from smplfast.body.keypoints import keypoint_names

    contour = {"nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top_lsp"}
    interior = [j for j, name in enumerate(keypoint_names("spin_24")) if name not in contour]
    hits = total = 0
    for i in range(len(ds)):
        item = ds[i]
        kp = item["keypoints_gt"][25:].numpy()  # exact spin_24 joints in the crop, normalised
        iuv = item["iuv"][0].numpy()
        px = np.floor((kp[:, :2] + 1) * 96 / 2).astype(int)
        for j in interior:
            x, y = px[j]
            if kp[j, 2] <= 0 or d["occluded"][i, j] > 0 or not (1 <= x < 95 and 1 <= y < 95):
                continue
            total += 1
            hits += bool(set(np.rint(iuv[y - 1:y + 2, x - 1:x + 2]).astype(int).ravel().tolist()) & allowed[j])
    assert total > 24 * 18 * 0.4
    assert hits / total >= 0.95, (hits, total)
