"""Keypoint conventions, conversion, flips and keypoint regressors (smplfast.body.keypoints)."""
import warnings

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body import random_model, save_model
from smplfast.body import keypoints as kp
from smplfast.body.random_model import SMPL_JOINT_NAMES

# Facts from SPIN's constants.py and its dataset preprocessing.
SPIN_J24_FLIP_PERM = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22]
SPIN_J49_FLIP_PERM = [0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18, 17, 22, 23, 24, 19, 20, 21] + [
    25 + i for i in SPIN_J24_FLIP_PERM]
SPIN_SMPL_JOINTS_FLIP_PERM = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
# JOINT_MAP of SPIN's 49 joints into cat(smplx's 45 SMPL joints, J_regressor_extra @ vertices).
SPIN_JOINT_MAP = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
                  8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50, 51, 52, 53, 24, 26, 25, 28, 27]
H36M_TO_J17 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]
J24_TO_J17 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]
# Slots of SPIN's 24 ground-truth joints each data set's joints are written to.
COCO_TO_J24 = [19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0]
MPII_TO_J24 = [0, 1, 2, 3, 4, 5, 14, 15, 12, 13, 6, 7, 8, 9, 10, 11]
H36M_TO_J24 = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
SMPLX_EXTRA_VERTEX_IDS = [332, 6260, 2800, 4071, 583, 3216, 3226, 3387, 6617, 6624, 6787,
                          2746, 2319, 2445, 2556, 2673, 6191, 5782, 5905, 6016, 6133]

LENGTHS = {"smpl_24": 24, "smplx_45": 45, "openpose_25": 25, "coco_17": 17, "h36m_17": 17, "lsp_14": 14,
           "mpii_16": 16, "spin_24": 24, "spin_49": 49}


# ------------------------------------------------------------------------------------------ names
def test_conventions_lengths_and_unique_names():
    assert set(LENGTHS) <= set(kp.CONVENTIONS)
    for name, n in LENGTHS.items():
        names = kp.keypoint_names(name)
        assert len(names) == n, name
        assert len(set(names)) == n, name
        assert all(isinstance(s, str) and s == s.lower() for s in names)
    assert kp.keypoint_names("smpl_24") == tuple(SMPL_JOINT_NAMES)
    assert kp.keypoint_names("smplx_45")[:24] == tuple(SMPL_JOINT_NAMES)
    assert kp.keypoint_names("spin_49") == kp.keypoint_names("openpose_25") + kp.keypoint_names("spin_24")
    assert kp.keypoint_names("lsp_14") == kp.keypoint_names("spin_24")[:14]
    assert all(n.endswith("_openpose") for n in kp.keypoint_names("openpose_25"))
    assert kp.keypoint_names("spin_24")[12:19] == kp.SPIN_EXTRA_JOINT_NAMES[2:]


def test_approximate_groups_use_known_names():
    known = {n for names in kp.CONVENTIONS.values() for n in names}
    seen = [n for g in kp.APPROXIMATE_GROUPS for n in g]
    assert set(seen) <= known
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("name", sorted(LENGTHS))
def test_flip_permutation_is_an_involution(name):
    perm = np.array(kp.flip_permutation(name))
    assert sorted(perm) == list(range(LENGTHS[name]))
    np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
    names = kp.keypoint_names(name)
    for i, j in enumerate(perm):
        assert ("left" in names[i]) == ("right" in names[j])


def test_flip_permutations_match_spin():
    assert list(kp.flip_permutation("spin_49")) == SPIN_J49_FLIP_PERM
    assert list(kp.flip_permutation("spin_24")) == SPIN_J24_FLIP_PERM
    assert list(kp.flip_permutation("smpl_24")) == SPIN_SMPL_JOINTS_FLIP_PERM


# ------------------------------------------------------------------------------------ SPIN's maps
def slots(src, dst):
    """For each src keypoint, the dst index it lands in (-1 if none)."""
    dst_idx, src_idx = kp.get_mapping(src, dst)
    out = -np.ones(len(kp.keypoint_names(src)), dtype=np.int64)
    out[src_idx] = dst_idx
    return out.tolist()


def test_mappings_reproduce_spin_preprocessing():
    assert slots("coco_17", "spin_24") == COCO_TO_J24
    assert slots("mpii_16", "spin_24") == MPII_TO_J24
    assert slots("h36m_17", "spin_24") == H36M_TO_J24
    assert slots("lsp_14", "spin_24") == list(range(14))
    assert slots("openpose_25", "spin_49") == list(range(25))
    # SPIN's evaluation: regressor output [H36M_TO_J17] against ground truth [J24_TO_J17].
    j24_to_h36m = {d: s for s, d in enumerate(slots("h36m_17", "spin_24"))}
    assert [j24_to_h36m[j] for j in J24_TO_J17] == H36M_TO_J17


def test_get_mapping_index_arrays():
    dst_idx, src_idx = kp.get_mapping("spin_49", "lsp_14")
    np.testing.assert_array_equal(dst_idx, np.arange(14))
    np.testing.assert_array_equal(src_idx, np.arange(25, 39))
    dst_idx, src_idx = kp.get_mapping("spin_49", "openpose_25")
    np.testing.assert_array_equal(src_idx, np.arange(25))
    assert dst_idx.dtype == np.int64 and not dst_idx.flags.writeable
    # OpenPose detections and COCO annotations share their 17 landmarks
    for approximate in (False, True):
        dst_idx, src_idx = kp.get_mapping("openpose_25", "coco_17", approximate=approximate)
        names_src, names_dst = kp.keypoint_names("openpose_25"), kp.keypoint_names("coco_17")
        assert len(dst_idx) == 17
        for d, s in zip(dst_idx, src_idx):
            assert names_src[s] == names_dst[d].replace("_lsp", "") + "_openpose"
    # An exact match wins over an approximate one.
    dst_idx, src_idx = kp.get_mapping("spin_49", "coco_17", approximate=True)
    assert all(s >= 25 for s in src_idx)


@pytest.mark.parametrize("a", ["openpose_25", "coco_17", "h36m_17", "lsp_14", "mpii_16"])
@pytest.mark.parametrize("b", ["openpose_25", "coco_17", "h36m_17", "lsp_14", "mpii_16"])
def test_data_conventions_fill_every_shared_landmark(a, b):
    """Every landmark two data conventions share is filled, in both directions, with the same values."""
    def landmark(n):  # an OpenPose detection names its landmark with a suffix; its hips are the annotated hips
        n = n.replace("_openpose", "")
        return n + "_lsp" if n in ("left_hip", "right_hip") else n

    la = {landmark(n): i for i, n in enumerate(kp.keypoint_names(a))}
    lb = {landmark(n): i for i, n in enumerate(kp.keypoint_names(b))}
    shared = set(la) & set(lb)
    if a != b:
        shared -= {"neck", "mid_hip"}  # OpenPose's neck / mid-hip are midpoints, no data set annotates them
    x = np.random.default_rng(0).normal(size=(len(la), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, mask = kp.convert(x, a, b, return_mask=True)
    assert {n for n, j in lb.items() if mask[j]} == shared
    for n in shared:
        np.testing.assert_array_equal(y[lb[n]], x[la[n]])


def test_spin_49_keeps_detections_and_annotations_apart():
    coco = np.random.default_rng(1).normal(size=(17, 3))
    spin, mask = kp.convert(coco, "coco_17", "spin_49", return_mask=True)
    assert not mask[:25].any() and mask[25:].sum() == 17  # the OpenPose rows stay empty


def test_a_conversion_that_fills_little_warns():
    with pytest.warns(UserWarning, match="only 1 of 14 keypoints"):
        kp.convert(np.zeros((5, 3)), ["right_ankle", "nose", "pelvis", "jaw_h36m", "spine_h36m"], "lsp_14")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kp.convert(np.zeros((17, 3)), "coco_17", "spin_49")  # all of the source is used: no warning


# -------------------------------------------------------------------------------------- convert
def test_convert_round_trip_and_missing_confidence():
    rng = np.random.default_rng(0)
    op = rng.normal(size=(5, 25, 3)).astype(np.float32)
    op[..., 2] = rng.uniform(0.1, 1.0, size=(5, 25))
    spin, mask = kp.convert(op, "openpose_25", "spin_49", return_mask=True)
    assert spin.shape == (5, 49, 3) and spin.dtype == np.float32
    assert mask.dtype == bool and mask.shape == (49,)
    assert mask[:25].all() and not mask[25:].any()
    assert np.all(spin[:, 25:] == 0)  # missing joints: zeros, confidence 0
    np.testing.assert_array_equal(kp.convert(spin, "spin_49", "openpose_25"), op)

    coco = rng.normal(size=(17, 3))
    spin = kp.convert(coco, "coco_17", "spin_49")
    lsp, mask = kp.convert(spin, "spin_49", "lsp_14", return_mask=True)
    assert mask.all()  # the mask tells which keypoints the source convention has, not their values
    np.testing.assert_array_equal(lsp[:12], spin[25:37])
    np.testing.assert_array_equal(lsp[12:], 0)
    lsp2, mask = kp.convert(coco, "coco_17", "lsp_14", return_mask=True)
    assert mask.tolist() == [True] * 12 + [False, False]  # COCO has no neck nor head top
    np.testing.assert_array_equal(lsp2, lsp)


@pytest.mark.parametrize("D", [2, 3, 4])
@pytest.mark.parametrize("batch", [(), (3,), (2, 4)])
def test_convert_numpy_and_torch_agree(D, batch):
    x = np.random.default_rng(1).normal(size=(*batch, 49, D))
    ref, mask = kp.convert(x, "spin_49", "h36m_17", return_mask=True)
    t = torch.tensor(x, requires_grad=True)
    out, tmask = kp.convert(t, "spin_49", "h36m_17", return_mask=True)
    assert torch.is_tensor(out) and out.dtype == torch.float64 and out.shape == (*batch, 17, D)
    assert tmask.dtype == torch.bool
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    np.testing.assert_array_equal(tmask.numpy(), mask)
    out.sum().backward()
    grad = t.grad.numpy()
    _, src_idx = kp.get_mapping("spin_49", "h36m_17")
    used = np.zeros(49, bool)
    used[src_idx] = True
    assert np.all(grad[..., used, :] == 1) and np.all(grad[..., ~used, :] == 0)


def test_convert_accepts_lists_and_custom_name_lists():
    pts = [[float(i), 0.0] for i in range(14)]
    out = kp.convert(pts, "lsp_14", ["head_top_lsp", "right_ankle", "left_big_toe"])
    np.testing.assert_array_equal(out, [[13, 0], [0, 0], [0, 0]])


def test_convert_errors():
    x = np.zeros((2, 25, 3))
    with pytest.raises(ValueError, match="unknown keypoint convention 'openpose25'.*openpose_25"):
        kp.convert(x, "openpose25", "spin_49")
    with pytest.raises(ValueError, match="unknown keypoint convention"):
        kp.get_mapping("spin_49", "coco")
    with pytest.raises(ValueError, match=r"\(\.\.\., 49, D\).*spin_49.*\(2, 25, 3\)"):
        kp.convert(x, "spin_49", "openpose_25")
    with pytest.raises(ValueError, match="shape"):
        kp.convert(np.zeros(25), "openpose_25", "spin_49")
    with pytest.raises(ValueError, match="unique"):
        kp.convert(np.zeros((2, 2)), ["nose", "nose"], "coco_17")
    with pytest.raises(ValueError, match="unknown keypoint convention"):
        kp.flip_permutation("smpl")


# ---------------------------------------------------------------------------- model keypoints
@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kp_models") / "SMPL_NEUTRAL.pkl"
    save_model(random_model(6890, num_betas=10, seed=5), str(path))
    return str(path)


@pytest.fixture(scope="module")
def smplx_output(smpl_file):
    smplx = pytest.importorskip("smplx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = smplx.SMPL(model_path=smpl_file, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = layer(betas=torch.randn(3, 10, generator=gen, dtype=torch.float64),
                    body_pose=0.4 * torch.randn(3, 69, generator=gen, dtype=torch.float64),
                    global_orient=torch.randn(3, 3, generator=gen, dtype=torch.float64),
                    transl=torch.randn(3, 3, generator=gen, dtype=torch.float64))
    return out.joints, out.vertices


def random_regressor(rows, V, seed):
    """A sparse affine vertex regressor (rows sum to 1), like SPIN's."""
    rng = np.random.default_rng(seed)
    R = np.zeros((rows, V))
    for r in range(rows):
        ids = rng.choice(V, size=8, replace=False)
        w = rng.uniform(size=8)
        R[r, ids] = w / w.sum()
    return R


def test_smplx_45_matches_smplx_output(smplx_output):
    joints, vertices = smplx_output
    assert joints.shape[1] == 45
    sources = kp.smpl_keypoint_sources("smplx_45", 6890)
    assert [s.kind for s in sources] == ["joint"] * 24 + ["vertices"] * 21
    assert [s.index for s in sources[:24]] == list(range(24))
    ids = [s.vertex_ids[0] for s in sources[24:]]
    assert ids == SMPLX_EXTRA_VERTEX_IDS
    torch.testing.assert_close(joints[:, 24:], vertices[:, ids], rtol=0, atol=1e-12)
    reg = kp.build_keypoint_regressor("smplx_45", 6890)
    torch.testing.assert_close(reg(joints, vertices), joints, rtol=0, atol=1e-12)


def test_spin_49_reproduces_spin_construction(smpl_file, smplx_output):
    joints, vertices = smplx_output
    extra = random_regressor(9, 6890, seed=0)
    model = smplfast.body.load_model(smpl_file)
    reg = kp.build_keypoint_regressor("spin_49", model, {"extra": extra})
    assert reg.num_joints == 24 and reg.num_keypoints == 49
    assert reg.regressor.shape == (5 + 6 + 9, 6890)  # face and feet vertices (shared by OpenPose and GT) + 9 rows
    spin_all = torch.cat([joints, torch.matmul(torch.as_tensor(extra), vertices)], dim=1)
    expected = spin_all[:, SPIN_JOINT_MAP]
    torch.testing.assert_close(reg(joints[:, :24], vertices), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reg(joints.numpy(), vertices.numpy()), expected.numpy(), rtol=0, atol=1e-12)
    # Wired into the SMPL layer through extra_joint_regressor.
    layer = smplfast.SMPL(model_path=smpl_file, dtype=torch.float64, extra_joint_regressor=reg.regressor)
    assert layer.num_joints == 45 + reg.regressor.shape[0]
    with torch.no_grad():
        out = layer(betas=torch.zeros(1, 10, dtype=torch.float64),
                    body_pose=torch.full((1, 69), 0.1, dtype=torch.float64),
                    global_orient=torch.zeros(1, 3, dtype=torch.float64))
    index = torch.as_tensor(np.where(reg.index < 24, reg.index, reg.index + 21))
    torch.testing.assert_close(out.joints[:, index], reg(out.joints, out.vertices), rtol=0, atol=1e-10)
    # SPIN's evaluation joints: GT joints of the 49 = lsp_14 from the same output.
    lsp = kp.convert(reg(joints, vertices), "spin_49", "lsp_14")
    torch.testing.assert_close(lsp, expected[:, 25:39])


def test_h36m_17_uses_the_h36m_regressor(smplx_output):
    joints, vertices = smplx_output
    h36m = random_regressor(17, 6890, seed=1)
    reg = kp.build_keypoint_regressor("h36m_17", 6890, {"h36m": h36m})
    np.testing.assert_array_equal(reg.regressor, h36m)
    torch.testing.assert_close(reg(joints, vertices), torch.matmul(torch.as_tensor(h36m), vertices))
    sources = kp.smpl_keypoint_sources("h36m_17", 6890)
    assert all(s.kind == "regressor" and s.regressor == "h36m" and s.index == i for i, s in enumerate(sources))


def test_keypoint_sources_openpose_and_coco():
    op = kp.smpl_keypoint_sources("openpose_25", 6890)
    # SPIN's JOINT_MAP for the OpenPose joints into smplx's 45.
    want = SPIN_JOINT_MAP[:25]
    got = [s.index if s.kind == "joint" else 24 + SMPLX_EXTRA_VERTEX_IDS.index(s.vertex_ids[0]) for s in op]
    assert got == want
    coco = kp.smpl_keypoint_sources("coco_17", 6890)
    assert coco[11] == kp.KeypointSource("regressor", 1, regressor="extra")  # left hip: J_regressor_extra row 1
    assert kp.smpl_keypoint_sources("coco_17", 6890, regressors=())[11] is None


def test_missing_sources_raise_clear_errors():
    with pytest.raises(ValueError, match=r"neck_lsp.*J_regressor_extra"):
        kp.build_keypoint_regressor("spin_49", 6890)
    with pytest.raises(ValueError, match=r"\['nose'.*300 vertices|\['nose'.*has 300"):
        kp.build_keypoint_regressor("coco_17", 300, {"extra": random_regressor(9, 300, 0)})
    with pytest.raises(ValueError, match=r"\(9, 6890\)"):
        kp.build_keypoint_regressor("spin_49", 6890, {"extra": np.zeros((9, 100))})
    with pytest.raises(ValueError, match="unknown regressor key"):
        kp.build_keypoint_regressor("spin_49", 6890, {"lsp": np.zeros((9, 6890))})
    with pytest.raises(TypeError):
        kp.build_keypoint_regressor("spin_49", "model")
    assert kp.build_keypoint_regressor("smpl_24", 300).regressor.shape == (0, 300)


def test_model_keypoint_definitions():
    model = random_model(300, seed=2)
    face = {"nose": 10, "left_eye": ([11, 12], [0.5, 0.5]), "right_eye": (13, 1.0), "left_ear": ([14], [1.0]),
            "right_ear": ([15, 16, 17], np.full(3, 1 / 3))}
    extra = random_regressor(9, 300, 4)
    with pytest.raises(ValueError, match="nose"):
        kp.build_keypoint_regressor("coco_17", model, {"extra": extra})
    model.extras["keypoint_definitions"] = face
    reg = kp.build_keypoint_regressor("coco_17", model, {"extra": extra})
    J = torch.randn(2, 24, 3, dtype=torch.float64)
    V = torch.randn(2, 300, 3, dtype=torch.float64)
    out = reg(J, V)
    torch.testing.assert_close(out[:, 0], V[:, 10])
    torch.testing.assert_close(out[:, 1], V[:, 11:13].mean(1))
    torch.testing.assert_close(out[:, 4], V[:, 15:18].mean(1))
    torch.testing.assert_close(out[:, 11], torch.matmul(torch.as_tensor(extra[1]), V))
    torch.testing.assert_close(out[:, 5], J[:, 16])
    # OpenPose keypoints use the SMPL point they stand for.
    op = kp.build_keypoint_regressor("openpose_25", 300, definitions=face | {
        n: 20 + i for i, n in enumerate(["left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
                                         "right_small_toe", "right_heel"])})
    torch.testing.assert_close(op(J, V)[:, 0], V[:, 10])
    torch.testing.assert_close(op(J, V)[:, 8], J[:, 0])
    for bad, msg in [({"left_hip": 3}, "skeleton joint"), ({"nose": 300}, r"\[0, 300\)"),
                     ({"nose": ([1, 2], [0.5, 0.6])}, "sum to 1"), ({"nose": ([1, 2], [1.0])}, "weights")]:
        with pytest.raises(ValueError, match=msg):
            kp.build_keypoint_regressor("coco_17", 300, definitions=bad)


def test_load_spin_regressors(tmp_path):
    extra, h36m = random_regressor(9, 6890, 0), random_regressor(17, 6890, 1)
    np.save(tmp_path / "J_regressor_extra.npy", extra.astype(np.float32))
    np.save(tmp_path / "J_regressor_h36m.npy", h36m)
    regs = kp.load_spin_regressors(tmp_path / "J_regressor_extra.npy", str(tmp_path / "J_regressor_h36m.npy"),
                                   num_vertices=6890)
    assert set(regs) == {"extra", "h36m"} and regs["extra"].dtype == np.float64
    np.testing.assert_allclose(regs["extra"], extra, atol=1e-7)
    assert set(kp.load_spin_regressors(h36m_path=tmp_path / "J_regressor_h36m.npy")) == {"h36m"}
    assert kp.load_spin_regressors() == {}
    reg = kp.build_keypoint_regressor("spin_49", 6890, regs)
    assert reg.num_keypoints == 49

    missing = tmp_path / "nope" / "J_regressor_extra.npy"
    with pytest.raises(FileNotFoundError, match=r"nope.*J_regressor_extra\.npy.*9 extra joints"):
        kp.load_spin_regressors(missing)
    np.save(tmp_path / "bad.npy", np.zeros((10, 6890)))
    with pytest.raises(ValueError, match=r"bad\.npy.*\(9, V\).*\(10, 6890\)"):
        kp.load_spin_regressors(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"\(17, V\)"):
        kp.load_spin_regressors(h36m_path=tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"\(9, 100\)"):
        kp.load_spin_regressors(tmp_path / "J_regressor_extra.npy", num_vertices=100)
    np.save(tmp_path / "small.npy", np.zeros((17, 100)))
    with pytest.raises(ValueError, match="different vertex counts"):
        kp.load_spin_regressors(tmp_path / "J_regressor_extra.npy", tmp_path / "small.npy")
    nan = extra.copy()
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="NaN"):
        kp.load_spin_regressors(tmp_path / "nan.npy")
