"""The bundled default body model: file format, mesh, skinning, shape space, keypoints, charts."""

import warnings

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body import SMPL, load_model
from smplfast.body.default_model import (
    default_model_dir,
    default_model_path,
    default_model_report,
    load_default_model,
)
from smplfast.body.keypoints import definitions_from_arrays
from smplfast.body.random_model import SMPL_JOINT_NAMES
from smplfast.surface.charts import SurfaceCharts, chart_quality

GENDERS = ("neutral", "female", "male")


@pytest.fixture(scope="module", params=GENDERS)
def data(request):
    return load_default_model(request.param)


@pytest.fixture(scope="module")
def neutral():
    return load_default_model("neutral")


def _mesh_volume_area(v: np.ndarray, f: np.ndarray):
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    return volume, area


def _winding_numbers(points: np.ndarray, v: np.ndarray, f: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Generalised winding number of each point w.r.t. the closed mesh (1 inside, 0 outside)."""
    tri = torch.as_tensor(v[f], dtype=torch.float64)  # (F, 3, 3)
    out = []
    for p in torch.as_tensor(points, dtype=torch.float64).split(chunk):
        d = tri[None] - p[:, None, None, :]  # (P, F, 3, 3)
        n = d.norm(dim=-1)
        a, b, c = d.unbind(2)
        na, nb, nc = n.unbind(2)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = na * nb * nc + (a * b).sum(-1) * nc + (b * c).sum(-1) * na + (c * a).sum(-1) * nb
        out.append(torch.atan2(det, den).sum(1) / (2 * torch.pi))
    return torch.cat(out).numpy()


def test_files_are_bundled_and_load():
    for g in GENDERS:
        p = default_model_path(g)
        assert p.parent == default_model_dir() and p.name == f"SMPL_{g.upper()}.pkl"
        m = load_model(p)
        assert m.num_joints == 24 and m.num_betas >= 10
    with pytest.raises(ValueError, match="gender"):
        default_model_path("child")


def test_smpl_without_model_path_uses_default():
    with torch.no_grad():
        out = SMPL()()
        female = SMPL(gender="female")(betas=torch.zeros(1, 10)).vertices
        male = SMPL(gender="male")(betas=torch.zeros(1, 10)).vertices
    n = load_default_model().num_vertices
    assert out.vertices.shape == (1, n, 3)
    assert out.joints.shape == (1, 45, 3)  # smplx's 24 + 21, from the model's own keypoints
    assert (female - male).abs().max() > 0.01


def test_smplx_reads_the_file_and_agrees():
    smplx = pytest.importorskip("smplx")
    gen = torch.Generator().manual_seed(0)
    betas = torch.randn(3, 10, generator=gen)
    pose = 0.3 * torch.randn(3, 69, generator=gen)
    orient = torch.randn(3, 3, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smplx.SMPL(model_path=str(default_model_dir()), gender="female")
    ours = SMPL(model_path=default_model_dir(), gender="female")
    with torch.no_grad():
        a = ours(betas=betas, body_pose=pose, global_orient=orient)
        b = ref(betas=betas, body_pose=pose, global_orient=orient)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.joints[:, :24], b.joints[:, :24], atol=1e-5, rtol=0)


def test_skinning_weights(data):
    w = data.weights
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert (w >= 0).all()
    assert ((w > 0).sum(1) <= 4).all()
    assert ((w > 0).sum(1) >= 1).all()  # every vertex is reached by some joint
    assert ((w > 0).sum(0) > 0).all()  # every joint moves some vertices


def test_posedirs_are_zero_and_skipped(neutral):
    assert not np.any(neutral.posedirs)
    assert not SMPL()._has_pose_blend


def test_mesh_is_one_closed_oriented_surface(neutral):
    f = neutral.f.astype(np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # Closed and consistently oriented: every directed edge once, its reverse once.
    assert len(np.unique(directed, axis=0)) == len(directed)
    und, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert (counts == 2).all()
    v = neutral.num_vertices
    assert np.array_equal(np.unique(f), np.arange(v))  # no unused vertices
    assert v - len(und) + len(f) == 2  # Euler characteristic of a sphere: one genus-0 shell
    volume, _ = _mesh_volume_area(neutral.v_template, f)
    assert volume > 0  # normals point outwards


def test_rest_pose_is_t_pose_in_smpl_frame(neutral):
    j = neutral.J_regressor @ neutral.v_template
    names = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    # y up: head above pelvis above ankles; left on +x; arms horizontal along x.
    assert j[names["head"], 1] > j[names["pelvis"], 1] > j[names["left_ankle"], 1]
    assert j[names["left_shoulder"], 0] > 0 > j[names["right_shoulder"], 0]
    for side in ("left", "right"):
        arm = j[names[f"{side}_wrist"]] - j[names[f"{side}_shoulder"]]
        assert abs(arm[1]) < 0.02 and abs(arm[2]) < 0.03 and abs(arm[0]) > 0.4
    # Facing +z: toes in front of the ankles, nose in front of the head joint.
    assert j[names["left_foot"], 2] > j[names["left_ankle"], 2] + 0.05
    defs = definitions_from_arrays(neutral.extras)
    nose = neutral.v_template[list(defs["nose"][0])].mean(0)
    assert nose[2] > j[names["head"], 2] + 0.05


@pytest.mark.parametrize("gender", GENDERS)
def test_shape_space_heights_volumes_areas(gender):
    model = SMPL(gender=gender, dtype=torch.float64)
    faces = model.faces.astype(np.int64)
    heights = []
    for s in (-3.0, 0.0, 3.0):
        betas = torch.zeros(1, model.num_betas, dtype=torch.float64)
        betas[0, 0] = s
        with torch.no_grad():
            v = model(betas=betas).vertices[0].numpy()
        heights.append(v[:, 1].max() - v[:, 1].min())
        volume, area = _mesh_volume_area(v, faces)
        assert 0.03 < volume < 0.16, (s, volume)  # m^3: about 30-160 kg at body density
        assert 1.1 < area < 2.6, (s, area)  # m^2
    lo, mid, hi = heights
    assert lo < mid < hi
    assert 1.25 < lo < 1.6 and 1.55 < mid < 1.85 and 1.8 < hi < 2.2, heights


def test_rest_pose_has_no_self_intersection(neutral):
    v, f = neutral.v_template, neutral.f.astype(np.int64)
    # A vertex on the surface has a winding number near 1/2 (its own surface); one that has passed
    # through another part of the body adds 1. Touching surfaces (lips) add less than 1/2.
    idx = np.arange(0, len(v), 3)
    w = _winding_numbers(v[idx], v, f)
    inside = idx[w > 1.0]
    toes = np.isin(neutral.weights[inside].argmax(1), [SMPL_JOINT_NAMES.index("left_foot"),
                                                       SMPL_JOINT_NAMES.index("right_foot")])
    # MakeHuman's toes are pressed together: a handful of toe vertices overlap the next toe. Nothing
    # else may be inside the body.
    assert toes.all(), f"vertices inside the body: {inside[~toes].tolist()}"
    assert len(inside) <= 6
    # The check can fail: push the left hand into the chest.
    moved = v.copy()
    hand = neutral.weights[:, [SMPL_JOINT_NAMES.index("left_wrist"), SMPL_JOINT_NAMES.index("left_hand")]].sum(1) > 0.5
    moved[hand] -= np.array([0.55, 0.0, 0.0])
    assert (_winding_numbers(moved[idx], moved, f) > 1.0).sum() > 50


def test_joint_regressor(data):
    r = data.J_regressor
    assert r.shape == (24, data.num_vertices)
    assert (r >= 0).all()
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-5)
    assert ((r > 0).sum(1) <= 24).all()


def test_build_report_numbers():
    report = default_model_report()
    for g in GENDERS:
        m = report["models"][g]
        assert m["joint_regressor_error_mm"]["mean"] < 5.0
        assert m["explained_variance_total"] > 0.99
        assert 1.3 < m["sample_height_m"]["min"] < m["sample_height_m"]["max"] < 2.15


def test_own_keypoints_are_anatomical(neutral):
    defs = definitions_from_arrays(neutral.extras)
    v = neutral.v_template
    p = {n: v[list(ids)].T @ np.asarray(w) for n, (ids, w) in defs.items()}
    assert p["left_eye"][0] > 0.01 > -0.01 > p["right_eye"][0]
    assert p["left_ear"][0] > p["left_eye"][0] and p["right_ear"][0] < p["right_eye"][0]
    assert p["left_eye"][1] > p["nose"][1] > p["jaw_h36m"][1]
    assert p["head_top_lsp"][1] == v[:, 1].max()
    for side, sign in (("left", 1), ("right", -1)):
        assert p[f"{side}_big_toe"][2] > p[f"{side}_heel"][2] + 0.15
        assert sign * (p[f"{side}_big_toe"][0] - p[f"{side}_small_toe"][0]) < 0  # big toe is medial
        for tip in ("thumb", "index", "middle", "ring", "pinky"):
            assert sign * p[f"{side}_{tip}"][0] > 0.6


@pytest.mark.parametrize("convention", ["smpl_24", "smplx_45", "openpose_25", "coco_17", "h36m_17", "lsp_14",
                                        "mpii_16", "spin_49"])
def test_layer_outputs_every_keypoint_set(convention):
    from smplfast.body.keypoints import keypoint_names

    model = SMPL(keypoints=convention)
    with torch.no_grad():
        out = model()
    assert out.joints.shape == (1, len(keypoint_names(convention)), 3)
    assert torch.isfinite(out.joints).all()


def test_surface_charts_stored_with_the_model(neutral):
    charts = SurfaceCharts.from_npz_dict(neutral.extras)
    charts.validate(neutral.num_vertices)
    assert set(charts.parts.tolist()) == set(range(1, 25))
    assert (charts.charts_per_vertex(neutral.num_vertices) >= 1).all()
    quality = chart_quality(charts, neutral.v_template)
    # Hands (fingers folded into one chart) flip more triangles than the other parts.
    for part, q in quality.items():
        assert q["flipped_fraction"] < (0.1 if part in (3, 4) else 0.01), (part, q)


def test_package_exports():
    assert smplfast.body.default_model_dir() == default_model_dir()
