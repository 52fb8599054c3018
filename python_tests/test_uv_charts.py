"""Tests for smplfast.surface.charts: DensePose-style per-part (u, v) charts."""

import sys

import numpy as np
import pytest

from smplfast.body.random_model import random_model
from smplfast.surface import (
    DENSEPOSE_PART_NAMES,
    SurfaceCharts,
    chart_quality,
    densepose_parts_from_weights,
    flatten_charts,
    load_densepose_uv,
    plot_charts,
)

try:
    import scipy.io  # noqa: F401

    HAVE_SCIPY = True
except ImportError:  # pragma: no cover
    HAVE_SCIPY = False
needs_scipy = pytest.mark.skipif(not HAVE_SCIPY, reason="needs scipy")

LEFT_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "Left" in n]
RIGHT_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "Right" in n]
FRONT_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "front" in n]
BACK_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "back" in n]
INSIDE_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "inside" in n]
OUTSIDE_PARTS = [p for p, n in enumerate(DENSEPOSE_PART_NAMES, 1) if "outside" in n]


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def body():
    m = random_model(6890, seed=0)
    joints = m.extras.get("J", m.J_regressor @ m.v_template)
    parts = densepose_parts_from_weights(m.v_template, m.f, m.weights, joints)
    return m, joints, parts


@pytest.fixture(scope="module")
def body_charts(body):
    if not HAVE_SCIPY:
        pytest.skip("needs scipy")
    m, _, parts = body
    return flatten_charts(m.v_template, m.f, parts)


def _face_normals(v, f):
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _grid(nx, ny, h):
    """A planar triangulated grid: 2D points (nx*ny, 2) and counter-clockwise faces."""
    x, y = np.meshgrid(np.arange(nx) * h, np.arange(ny) * h, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel()], axis=1)
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return pts, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _small_charts():
    """Two parts, one seam vertex duplicated."""
    return SurfaceCharts(
        vertex_ids=[0, 1, 2, 1, 2, 3],
        part_ids=[1, 1, 1, 2, 2, 2],
        uv=[[0, 0], [1, 0], [0, 1], [0, 0], [1, 0], [0, 1]],
        faces=[[0, 1, 2], [3, 4, 5]],
        face_part_ids=[1, 2],
    )


# ---------------------------------------------------------------------------
# part names and the SurfaceCharts container
# ---------------------------------------------------------------------------


def test_part_names():
    assert len(DENSEPOSE_PART_NAMES) == 24 and len(set(DENSEPOSE_PART_NAMES)) == 24
    # DensePose's dp_I grouping: 1,2 torso; 3 right hand; 4 left hand; 5 left foot; 6 right foot;
    # 7,9 upper leg right; 8,10 upper leg left; 11,13 lower leg right; 12,14 lower leg left;
    # 15,17 upper arm left; 16,18 upper arm right; 19,21 lower arm left; 20,22 lower arm right; 23,24 head.
    groups = {
        "Torso": [1, 2], "Right Hand": [3], "Left Hand": [4], "Left Foot": [5], "Right Foot": [6],
        "Upper Leg Right": [7, 9], "Upper Leg Left": [8, 10], "Lower Leg Right": [11, 13],
        "Lower Leg Left": [12, 14], "Upper Arm Left": [15, 17], "Upper Arm Right": [16, 18],
        "Lower Arm Left": [19, 21], "Lower Arm Right": [20, 22], "Head": [23, 24],
    }
    for prefix, ids in groups.items():
        assert [i for i, n in enumerate(DENSEPOSE_PART_NAMES, 1) if n.startswith(prefix)] == ids
    assert DENSEPOSE_PART_NAMES[22] == "Head Right" and DENSEPOSE_PART_NAMES[23] == "Head Left"


def test_surface_charts_container():
    c = _small_charts()
    assert c.vertex_ids.dtype == np.int64 and c.faces.dtype == np.int64 and c.uv.dtype == np.float64
    assert c.num_chart_vertices == 6 and c.num_faces == 2 and c.num_parts == 2
    assert c.parts.tolist() == [1, 2]
    assert c.part_faces(2).tolist() == [1] and c.part_vertices(1).tolist() == [0, 1, 2]
    assert c.charts_per_vertex().tolist() == [1, 2, 2, 1]
    assert c.charts_per_vertex(6).tolist() == [1, 2, 2, 1, 0, 0]
    assert "SurfaceCharts" in repr(c)
    c.validate(4)
    with pytest.raises(ValueError, match="< 3"):
        c.validate(3)


def test_surface_charts_npz_round_trip(tmp_path):
    c = _small_charts()
    d = c.to_npz_dict()
    assert sorted(d) == ["uv_face_part_ids", "uv_faces", "uv_part_ids", "uv_uv", "uv_vertex_ids"]
    assert all(type(a) is np.ndarray for a in d.values())
    path = tmp_path / "model.npz"
    np.savez(path, v_template=np.zeros((4, 3)), **d)  # alongside a model's own arrays
    with np.load(path, allow_pickle=False) as z:
        back = SurfaceCharts.from_npz_dict(z)
    for k in ("vertex_ids", "part_ids", "uv", "faces", "face_part_ids"):
        np.testing.assert_array_equal(getattr(back, k), getattr(c, k))
    other = SurfaceCharts.from_npz_dict(c.to_npz_dict(prefix="dp_"), prefix="dp_")
    np.testing.assert_array_equal(other.uv, c.uv)
    with pytest.raises(ValueError, match="uv_faces"):
        SurfaceCharts.from_npz_dict({k: v for k, v in d.items() if k != "uv_faces"})


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(vertex_ids=np.zeros((6, 1))), "vertex_ids"),
        (dict(vertex_ids=[0, 1, 2, 1, 2, -3]), ">= 0"),
        (dict(part_ids=[1, 1, 1, 2, 2]), "part_ids"),
        (dict(part_ids=[0, 0, 0, 2, 2, 2], face_part_ids=[0, 2]), r"1\.\.24"),
        (dict(part_ids=[1, 1, 1, 25, 25, 25], face_part_ids=[1, 25]), r"1\.\.24"),
        (dict(uv=np.zeros((6, 3))), "uv"),
        (dict(uv=np.full((6, 2), 1.5)), r"\[0, 1\]"),
        (dict(uv=np.full((6, 2), np.nan)), "finite"),
        (dict(faces=[[0, 1, 2, 3], [3, 4, 5, 0]]), r"\(F, 3\)"),
        (dict(faces=[[0, 1, 2], [3, 4, 6]]), "index the 6"),
        (dict(face_part_ids=[1]), "face_part_ids"),
        (dict(faces=[[0, 1, 2], [2, 4, 5]]), "another part"),
        (dict(faces=[[0, 1, 2.5], [3, 4, 5]]), "integers"),
    ],
)
def test_surface_charts_validation(change, match):
    good = _small_charts()
    kwargs = {k: getattr(good, k) for k in ("vertex_ids", "part_ids", "uv", "faces", "face_part_ids")}
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        SurfaceCharts(**kwargs)


# ---------------------------------------------------------------------------
# DensePose's UV_Processed.mat
# ---------------------------------------------------------------------------


def _synthetic_uv(int_type=np.float64):
    """A 3 x 3 vertex "body" whose left column of quads is part 2 and right column part 23.

    The middle column of body vertices is on the seam, so the UV mesh has 12 vertices.
    Returns (the .mat dict with MATLAB-like shapes and types, expected body faces).
    """
    body = np.arange(9).reshape(3, 3)  # body[row, col]
    uv_of = {}
    verts, u, v = [], [], []

    def uv_vertex(r, c, part):
        key = (r, c, part)
        if key not in uv_of:
            uv_of[key] = len(verts)
            verts.append(body[r, c])
            u.append(0.5 * (c - (0 if part == 2 else 1)))
            v.append(0.5 * r)
        return uv_of[key]

    faces, fparts, body_faces = [], [], []
    for part, c0 in ((2, 0), (23, 1)):
        for r in range(2):
            quad = [(r, c0), (r, c0 + 1), (r + 1, c0 + 1), (r + 1, c0)]
            for tri in ((0, 1, 2), (0, 2, 3)):
                faces.append([uv_vertex(*quad[t], part) for t in tri])
                body_faces.append([body[quad[t]] for t in tri])
                fparts.append(part)
    n = len(verts)
    assert n == 12
    mat = {
        "All_FaceIndices": np.array(fparts, dtype=np.uint8).reshape(-1, 1),  # (F, 1)
        "All_Faces": (np.array(faces) + 1).astype(int_type),  # (F, 3), 1-based
        "All_U_norm": np.array(u, dtype=np.float64).reshape(n, 1),  # (N, 1)
        "All_V_norm": np.array(v, dtype=np.float64).reshape(n, 1),
        "All_vertices": (np.array(verts) + 1).astype(np.uint32).reshape(1, n),  # (1, N), 1-based
    }
    return mat, np.array(body_faces)


def _save(tmp_path, mat, name="UV_Processed.mat"):
    from scipy.io import savemat

    path = tmp_path / name
    savemat(str(path), mat)
    return path


@needs_scipy
@pytest.mark.parametrize("int_type", [np.float64, np.int32, np.uint32])
def test_load_densepose_uv_round_trip(tmp_path, int_type):
    mat, body_faces = _synthetic_uv(int_type)
    charts = load_densepose_uv(_save(tmp_path, mat))
    assert isinstance(charts, SurfaceCharts)
    assert charts.num_chart_vertices == 12 and charts.num_faces == 8
    assert charts.parts.tolist() == [2, 23]
    np.testing.assert_array_equal(charts.vertex_ids, mat["All_vertices"].ravel().astype(np.int64) - 1)
    np.testing.assert_array_equal(charts.faces, mat["All_Faces"].astype(np.int64) - 1)
    np.testing.assert_array_equal(charts.face_part_ids, mat["All_FaceIndices"].ravel())
    np.testing.assert_allclose(charts.uv[:, 0], mat["All_U_norm"].ravel())
    np.testing.assert_allclose(charts.uv[:, 1], mat["All_V_norm"].ravel())
    np.testing.assert_array_equal(charts.vertex_ids[charts.faces], body_faces)
    # the seam column (body vertices 1, 4, 7) is in both parts
    assert charts.charts_per_vertex(9).tolist() == [1, 2, 1, 1, 2, 1, 1, 2, 1]
    # row vectors instead of column vectors load the same
    flipped = {k: (a.T if a.shape[1] == 1 or a.shape[0] == 1 else a) for k, a in mat.items()}
    again = load_densepose_uv(_save(tmp_path, flipped, "other.mat"))
    np.testing.assert_array_equal(again.uv, charts.uv)
    np.testing.assert_array_equal(again.part_ids, charts.part_ids)


def test_load_densepose_uv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="UV_Processed.mat") as info:
        load_densepose_uv(tmp_path / "nowhere" / "UV_Processed.mat")
    assert "nowhere" in str(info.value)


def _corrupt(mat, key, value):
    mat = dict(mat)
    if value is None:
        del mat[key]
    else:
        mat[key] = value
    return mat


@needs_scipy
@pytest.mark.parametrize(
    "key, value, match",
    [
        ("All_U_norm", None, "All_U_norm"),
        ("All_Faces", None, "All_Faces"),
        ("All_vertices", None, "All_vertices"),
        ("All_FaceIndices", None, "All_FaceIndices"),
        ("All_Faces", np.ones((8, 4)), r"All_Faces.*\(F, 3\)"),
        ("All_U_norm", np.full((3, 4), 0.5), r"All_U_norm.*\(N,\), \(1, N\) or \(N, 1\)"),
        ("All_V_norm", np.full((11, 1), 0.5), "All_V_norm.*12"),
        ("All_vertices", np.ones((1, 13), np.uint32), "All_vertices.*12"),
        ("All_FaceIndices", np.full((7, 1), 2, np.uint8), "All_FaceIndices.*8"),
        ("All_FaceIndices", np.full((8, 1), 25, np.uint8), r"All_FaceIndices.*1\.\.24"),
        ("All_Faces", np.zeros((8, 3)), r"All_Faces.*1\.\.12"),
        ("All_Faces", np.full((8, 3), 1.5), "All_Faces.*integers"),
        ("All_vertices", np.zeros((1, 12), np.uint32), "All_vertices"),
        ("All_U_norm", np.full((12, 1), 2.0), r"\[0, 1\]"),
        ("All_U_norm", np.array(["abc"]), "All_U_norm.*numeric"),
    ],
)
def test_load_densepose_uv_bad_contents(tmp_path, key, value, match):
    mat, _ = _synthetic_uv()
    with pytest.raises(ValueError, match=match):
        load_densepose_uv(_save(tmp_path, _corrupt(mat, key, value)))


@needs_scipy
def test_load_densepose_uv_vertex_in_two_parts(tmp_path):
    mat, _ = _synthetic_uv()
    faces = mat["All_Faces"].copy()
    # make a face of part 23 use a UV vertex of part 2
    faces[-1, 0] = faces[0, 0]
    with pytest.raises(ValueError, match="several parts"):
        load_densepose_uv(_save(tmp_path, _corrupt(mat, "All_Faces", faces)))


@needs_scipy
def test_load_densepose_uv_unused_vertex(tmp_path):
    mat, _ = _synthetic_uv()
    n = 13
    mat = dict(mat, All_U_norm=np.full((n, 1), 0.5), All_V_norm=np.full((n, 1), 0.5),
               All_vertices=np.arange(1, n + 1, dtype=np.uint32).reshape(1, n))
    with pytest.raises(ValueError, match="no face"):
        load_densepose_uv(_save(tmp_path, mat))


@needs_scipy
def test_load_densepose_uv_not_a_mat_file(tmp_path):
    path = tmp_path / "UV_Processed.mat"
    path.write_bytes(b"this is not a MATLAB file" * 20)
    with pytest.raises(ValueError, match="MATLAB"):
        load_densepose_uv(path)


def test_scipy_missing_message(tmp_path, monkeypatch):
    path = tmp_path / "UV_Processed.mat"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        load_densepose_uv(path)
    with pytest.raises(ImportError, match="pip install scipy"):
        flatten_charts(np.eye(3), [[0, 1, 2]], [1])


# ---------------------------------------------------------------------------
# parts of a body from its skinning weights
# ---------------------------------------------------------------------------


def test_parts_from_weights(body):
    m, _, parts = body
    assert parts.shape == (m.f.shape[0],) and parts.dtype == np.int64
    assert parts.min() >= 1 and parts.max() <= 24
    counts = np.bincount(parts, minlength=25)[1:]
    # the tube body has all 24 parts, each with a sizeable share of the surface
    assert np.all(counts >= 100), dict(zip(DENSEPOSE_PART_NAMES, counts.tolist()))


def test_parts_sides(body):
    m, joints, parts = body
    v, f = m.v_template, m.f
    centroid = v[f].mean(axis=1)
    normal = _face_normals(v, f)
    # (the fat tubes from the pelvis to the hips reach a few cm over the midline)
    for p in LEFT_PARTS:
        assert np.mean(centroid[parts == p, 0] > 0) > 0.95, DENSEPOSE_PART_NAMES[p - 1]
    for p in RIGHT_PARTS:
        assert np.mean(centroid[parts == p, 0] < 0) > 0.95, DENSEPOSE_PART_NAMES[p - 1]
    for p in FRONT_PARTS:
        assert normal[parts == p, 2].mean() > 0.3, DENSEPOSE_PART_NAMES[p - 1]
    for p in BACK_PARTS:
        assert normal[parts == p, 2].mean() < -0.3, DENSEPOSE_PART_NAMES[p - 1]
    inside = np.array([0.0, -1.0, 1.0]) / np.sqrt(2.0)
    for p in INSIDE_PARTS:
        assert (normal[parts == p] @ inside).mean() > 0.3, DENSEPOSE_PART_NAMES[p - 1]
    for p in OUTSIDE_PARTS:
        assert (normal[parts == p] @ inside).mean() < -0.3, DENSEPOSE_PART_NAMES[p - 1]
    # limbs and extremities are ordered along the body: feet below lower legs below upper legs, etc.
    height = {p: centroid[parts == p, 1].mean() for p in range(1, 25)}
    assert height[5] < height[14] < height[10] < height[2] < height[24]
    reach = {p: np.abs(centroid[parts == p, 0]).mean() for p in range(1, 25)}
    assert reach[2] < reach[15] < reach[19] < reach[4]


def test_parts_from_weights_errors(body):
    m, joints, _ = body
    with pytest.raises(ValueError, match="weights"):
        densepose_parts_from_weights(m.v_template, m.f, m.weights[:, :23], joints)
    with pytest.raises(ValueError, match="joints"):
        densepose_parts_from_weights(m.v_template, m.f, m.weights, joints[:10])
    with pytest.raises(ValueError, match="faces"):
        densepose_parts_from_weights(m.v_template, m.f + m.num_vertices, m.weights, joints)
    with pytest.raises(ValueError, match="vertices"):
        densepose_parts_from_weights(m.v_template[:, :2], m.f, m.weights, joints)


# ---------------------------------------------------------------------------
# flattening
# ---------------------------------------------------------------------------


@needs_scipy
def test_flatten_body(body, body_charts):
    m, _, parts = body
    c = body_charts
    assert c.num_parts == 24
    assert c.uv.min() >= 0.0 and c.uv.max() <= 1.0
    # chart face i is mesh face i
    np.testing.assert_array_equal(c.face_part_ids, parts)
    np.testing.assert_array_equal(c.vertex_ids[c.faces], m.f)
    # every mesh vertex is in as many charts as the parts of its faces: >= 1, >= 2 on seams
    per_vertex = c.charts_per_vertex(m.num_vertices)
    pairs = np.unique(np.stack([m.f.ravel(), np.repeat(parts, 3)], 1), axis=0)
    expected = np.bincount(pairs[:, 0], minlength=m.num_vertices)
    np.testing.assert_array_equal(per_vertex, expected)
    assert per_vertex.min() >= 1
    assert (per_vertex >= 2).sum() > 100  # the seams
    # each part's (u, v) fills [0, 1] along both axes (per-axis normalisation)
    for p in range(1, 25):
        uv = c.uv[c.part_vertices(p)]
        np.testing.assert_allclose(uv.min(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(uv.max(axis=0), 1.0, atol=1e-9)


@needs_scipy
def test_flatten_body_quality(body, body_charts):
    m, _, _ = body
    q = chart_quality(body_charts, m.v_template)
    assert sorted(q) == list(range(1, 25))
    for p, s in q.items():
        name = DENSEPOSE_PART_NAMES[p - 1]
        assert s["flipped_fraction"] < 0.02, (name, s)
        assert s["area_distortion"] < 0.5, (name, s)
        assert s["num_faces"] == body_charts.part_faces(p).size
        assert 0.0 < s["uv_coverage"] <= 1.0 + 1e-9


@needs_scipy
def test_flatten_body_orientation(body, body_charts):
    """v grows upwards on torso, head and legs, towards the shoulder on arms and hands."""
    m, _, _ = body
    c = body_charts
    pos = m.v_template[c.vertex_ids]
    up = {p: np.array([0.0, 1.0, 0.0]) for p in range(1, 25)}
    for p in (4, 15, 17, 19, 21):
        up[p] = np.array([-1.0, 0.0, 0.0])
    for p in (3, 16, 18, 20, 22):
        up[p] = np.array([1.0, 0.0, 0.0])
    up[5] = up[6] = np.array([0.0, 0.0, -1.0])
    for p in range(1, 25):
        s = c.part_vertices(p)
        assert np.corrcoef(c.uv[s, 1], pos[s] @ up[p])[0, 1] > 0.5, DENSEPOSE_PART_NAMES[p - 1]


@needs_scipy
def test_flatten_charts_npz_round_trip(body_charts, tmp_path):
    path = tmp_path / "charts.npz"
    np.savez(path, **body_charts.to_npz_dict())
    with np.load(path) as z:
        back = SurfaceCharts.from_npz_dict(z)
    np.testing.assert_array_equal(back.uv, body_charts.uv)
    np.testing.assert_array_equal(back.faces, body_charts.faces)
    np.testing.assert_array_equal(back.vertex_ids, body_charts.vertex_ids)


def _bent_grid():
    pts, f = _grid(31, 21, 0.01)
    radius = pts[:, 0].max() / (np.pi / 2)  # the 0.3 m side becomes a quarter circle
    theta = pts[:, 0] / radius
    verts = np.stack([radius * np.sin(theta), pts[:, 1], radius * np.cos(theta)], axis=1)
    return pts, verts, f


@needs_scipy
@pytest.mark.parametrize("landmark", [False, True])
def test_flatten_is_isometric_on_developable_patch(landmark):
    flat, verts, f = _bent_grid()
    kw = dict(max_exact=100, landmarks=150) if landmark else {}
    c = flatten_charts(verts, f, np.ones(len(f), dtype=np.int64), normalize="uniform", **kw)
    assert c.num_chart_vertices == len(verts)
    uv = np.empty((len(verts), 2))
    uv[c.vertex_ids] = c.uv
    i, j = np.triu_indices(len(verts), 1)
    d_true = np.linalg.norm(flat[i] - flat[j], axis=1)
    d_uv = np.linalg.norm(uv[i] - uv[j], axis=1)
    scale = np.median(d_uv / d_true)
    # uniform normalisation: the longer side (0.3 m) spans [0, 1]
    assert scale == pytest.approx(1 / 0.3, rel=0.03)
    err = np.abs(d_uv / scale - d_true) / d_true
    far = d_true > 0.05
    assert np.median(err[far]) < 0.015
    assert np.percentile(err[far], 95) < 0.04
    assert err[far].max() < 0.1
    q = chart_quality(c, verts)[1]
    assert q["flipped_fraction"] == 0.0 and q["area_distortion"] < 0.05
    # uniform: the 0.3 x 0.2 rectangle keeps its aspect ratio and is centred
    ext = uv.max(axis=0) - uv.min(axis=0)
    assert ext[0] == pytest.approx(1.0, abs=1e-9) and ext[1] == pytest.approx(2 / 3, rel=0.05)
    assert (uv.min(axis=0) + uv.max(axis=0))[1] == pytest.approx(1.0, abs=1e-9)
    # v runs along +y, u along the arc, and the triangles stay counter-clockwise
    assert np.corrcoef(uv[:, 1], flat[:, 1])[0, 1] > 0.99


@needs_scipy
def test_flatten_cuts_closed_surfaces():
    """A closed box cannot be flattened in one piece: it is cut into islands without flips."""
    pts, f = _grid(9, 9, 1.0 / 8)
    n = len(pts)
    sides, faces = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            v = np.zeros((n, 3))
            u, w = (axis + 1) % 3, (axis + 2) % 3
            v[:, axis] = sign * 0.5
            v[:, u], v[:, w] = pts[:, 0] - 0.5, pts[:, 1] - 0.5
            ff = f if sign > 0 else f[:, ::-1]
            faces.append(ff + len(sides) * n)
            sides.append(v)
    verts = np.concatenate(sides)
    # weld the duplicated edge vertices so the box is closed
    _, first, inverse = np.unique(np.round(verts, 9), axis=0, return_index=True, return_inverse=True)
    verts, faces = verts[first], inverse.reshape(-1)[np.concatenate(faces)]
    assert len(verts) == 6 * 64 + 2  # V - E + F = 2
    c = flatten_charts(verts, faces, np.full(len(faces), 3))
    q = chart_quality(c, verts)[3]
    assert q["flipped_fraction"] < 0.02
    assert c.num_chart_vertices > len(verts)  # the cuts duplicate vertices
    assert c.charts_per_vertex(len(verts)).tolist() == [1] * len(verts)


def test_flatten_charts_errors():
    v = np.eye(3)
    with pytest.raises(ValueError, match="face_part_ids"):
        flatten_charts(v, [[0, 1, 2]], [0])
    with pytest.raises(ValueError, match="face_part_ids"):
        flatten_charts(v, [[0, 1, 2]], [1, 2])
    with pytest.raises(ValueError, match="faces"):
        flatten_charts(v, [[0, 1, 3]], [1])
    with pytest.raises(ValueError, match="vertices"):
        flatten_charts(v[:, :2], [[0, 1, 2]], [1])
    with pytest.raises(ValueError, match="normalize"):
        flatten_charts(v, [[0, 1, 2]], [1], normalize="stretch")


@needs_scipy
def test_flatten_single_triangle():
    c = flatten_charts(np.eye(3), [[0, 1, 2]], [7], normalize="uniform")
    assert c.parts.tolist() == [7]
    assert chart_quality(c, np.eye(3))[7]["flipped_fraction"] == 0.0


def test_plot_charts(body_charts, tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_charts(body_charts, tmp_path / "charts.png")
    assert out.exists() and out.stat().st_size > 10_000
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
