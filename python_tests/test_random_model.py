"""Tests for smplfast.body.random_model."""

import time

import numpy as np
import pytest

from smplfast.body.model_file import REQUIRED_KEYS, ModelData, load_model, save_model, validate_model
from smplfast.body.random_model import (
    MIN_VERTICES,
    SMPL_PARENTS,
    SMPL_REST_JOINTS,
    random_model,
)


@pytest.fixture(scope="module")
def smpl_sized():
    return random_model(6890, num_betas=10, seed=0)


def _check_mesh(m: ModelData, V: int):
    assert m.v_template.shape == (V, 3)
    f = m.f
    assert f.dtype == np.int64 and f.ndim == 2 and f.shape[1] == 3 and f.shape[0] >= 1
    assert f.min() >= 0 and f.max() < V
    # no repeated index inside a face
    assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    used = np.zeros(V, dtype=bool)
    used[f.ravel()] = True
    assert used.all(), f"{np.count_nonzero(~used)} vertices in no face"


@pytest.mark.parametrize("V", [MIN_VERTICES, 25, 30, 47, 83, 84, 100, 257, 1000, 6890])
def test_valid_at_many_sizes(V):
    m = random_model(V)
    assert validate_model(m) is m
    assert isinstance(m, ModelData)
    _check_mesh(m, V)
    assert m.num_vertices == V and m.num_joints == 24 and m.num_betas == 10
    assert m.shapedirs.shape == (V, 3, 10)
    assert m.posedirs.shape == (V, 3, 207)
    assert m.J_regressor.shape == (24, V)
    assert m.weights.shape == (V, 24)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert getattr(m, key).dtype == np.float64
    assert m.kintree_table.dtype == np.int64


def test_too_few_vertices():
    with pytest.raises(ValueError, match=str(MIN_VERTICES)):
        random_model(MIN_VERTICES - 1)


@pytest.mark.parametrize("kwargs", [dict(num_betas=0), dict(num_joints=0), dict(max_influences=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        random_model(100, **kwargs)


def test_smpl_size_and_face_count(smpl_sized):
    m = smpl_sized
    _check_mesh(m, 6890)
    assert 10000 < m.f.shape[0] < 16000  # SMPL has 13776


def test_deterministic_by_seed():
    a = random_model(500, num_betas=8, seed=3)
    b = random_model(500, num_betas=8, seed=3)
    c = random_model(500, num_betas=8, seed=4)
    for key in REQUIRED_KEYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert np.array_equal(a.extras["J"], b.extras["J"])
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert not np.array_equal(getattr(a, key), getattr(c, key)), key


def test_skeleton_is_smpl(smpl_sized):
    m = smpl_sized
    kt = m.kintree_table
    assert kt.shape == (2, 24)
    assert kt[0, 0] == 4294967295
    assert np.array_equal(kt[0, 1:], SMPL_PARENTS[1:])
    assert np.array_equal(kt[1], np.arange(24))
    assert np.array_equal(m.parents, SMPL_PARENTS)
    J = m.extras["J"]
    assert J.shape == (24, 3)
    assert np.abs(J - SMPL_REST_JOINTS).max() < 0.03
    # Rough T-pose layout: y up, head ~0.5 m above the pelvis, feet ~0.9 m below,
    # arms along +-x with the model's left side on +x, feet pointing to +z.
    assert np.linalg.norm(J[0]) < 0.05
    assert 0.4 < J[15, 1] - J[0, 1] < 0.65
    assert -1.0 < J[10, 1] < -0.8 and -1.0 < J[11, 1] < -0.8
    assert J[20, 0] > 0.5 and J[21, 0] < -0.5 and J[16, 0] > 0 and J[1, 0] > 0
    assert abs(J[20, 1] - J[16, 1]) < 0.05
    assert J[10, 2] > J[7, 2]
    v = m.v_template
    assert v[:, 1].max() > J[15, 1] + 0.05  # top of the head
    assert v[:, 1].min() < -0.9  # soles
    assert v[:, 0].max() > 0.8 and v[:, 0].min() < -0.8  # finger tips


def test_template_vertices_lie_near_the_skeleton(smpl_sized):
    m = smpl_sized
    J = m.extras["J"]
    par = SMPL_PARENTS
    a, b = J[par[1:]], J[1:]  # bones
    v = m.v_template[:, None, :]
    ab = b - a
    t = np.clip(((v - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    dist = np.linalg.norm(v - (a + t[..., None] * ab), axis=-1).min(axis=1)
    assert np.quantile(dist, 0.95) < 0.15
    assert dist.max() < 0.25


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
def test_max_influences(K):
    m = random_model(2000, seed=1, max_influences=K)
    nnz = np.count_nonzero(m.weights, axis=1)
    assert nnz.max() == K
    assert nnz.min() >= 1
    np.testing.assert_allclose(m.weights.sum(axis=1), 1.0, atol=1e-12)
    assert (m.weights >= 0).all()


def test_max_influences_reached_on_small_models():
    for V in (30, 100):
        m = random_model(V, seed=2, max_influences=4)
        assert np.count_nonzero(m.weights, axis=1).max() == 4


def test_weights_mostly_one_joint_and_local(smpl_sized):
    w = smpl_sized.weights
    assert np.median(w.max(axis=1)) > 0.8
    assert (w.max(axis=1) >= 0.45).mean() > 0.95
    # Influences come from joints close together in the tree.
    par = SMPL_PARENTS

    def depth_path(j):
        out = [j]
        while par[out[-1]] >= 0:
            out.append(par[out[-1]])
        return out

    paths = [depth_path(j) for j in range(24)]

    def tree_dist(i, j):
        pi, pj = paths[i], paths[j]
        common = next(x for x in pi if x in pj)
        return pi.index(common) + pj.index(common)

    rows = np.random.default_rng(0).choice(6890, 300, replace=False)
    for r in rows:
        joints = np.nonzero(w[r])[0]
        main = int(np.argmax(w[r]))
        assert all(tree_dist(main, int(j)) <= 3 for j in joints)


def test_j_regressor_structure(smpl_sized):
    m = smpl_sized
    R = m.J_regressor
    assert (R >= 0).all()
    np.testing.assert_allclose(R.sum(axis=1), 1.0, atol=1e-12)
    nnz = np.count_nonzero(R, axis=1)
    assert nnz.min() >= 3 and nnz.max() <= 10


@pytest.mark.parametrize("V, tol", [(6890, 0.01), (1000, 0.03), (300, 0.05)])
def test_j_regressor_reproduces_rest_joints(V, tol):
    m = random_model(V, seed=5)
    J = m.J_regressor @ m.v_template
    err = np.linalg.norm(J - m.extras["J"], axis=1)
    assert err.max() < tol, err
    assert np.linalg.norm(J - SMPL_REST_JOINTS, axis=1).max() < tol + 0.03


def test_regressor_vertices_are_near_their_joint(smpl_sized):
    m = smpl_sized
    J = m.extras["J"]
    for j in range(24):
        idx = np.nonzero(m.J_regressor[j])[0]
        d = np.linalg.norm(m.v_template[idx] - J[j], axis=1)
        assert d.max() < 0.2


def test_dense_pose_blend_shapes(smpl_sized):
    pd = smpl_sized.posedirs
    assert np.count_nonzero(pd) / pd.size > 0.999
    assert 0.005 < pd.std() < 0.02
    m = random_model(500, pose_blend_scale=0.1)
    assert 0.05 < m.posedirs.std() < 0.2


def test_sparse_pose_blend_shapes():
    m = random_model(2000, seed=3, dense_pose_blend_shapes=False)
    pd = m.posedirs
    assert pd.shape == (2000, 3, 207)
    nz = pd != 0
    frac = nz.mean()
    assert 0.02 < frac < 0.35
    # Whole 9-feature blocks (all 3 coordinates) are on or off together.
    blocks = nz.reshape(2000, 3, 23, 9)
    on = blocks.any(axis=(1, 3))
    assert np.array_equal(blocks.all(axis=(1, 3)), on)
    assert on.any(axis=1).all()  # every vertex has some pose blend shape
    # The active joints of a vertex are a joint and its tree neighbours.
    par = SMPL_PARENTS
    for r in range(0, 2000, 7):
        joints = set(int(j) + 1 for j in np.nonzero(on[r])[0])
        assert len(joints) <= 5
        ok = False
        for c in range(24):
            star = {c} | {j for j in range(1, 24) if par[j] == c}
            if par[c] >= 0:
                star.add(int(par[c]))
            if joints <= star:
                ok = True
                break
        assert ok, joints


def test_shape_blend_shapes(smpl_sized):
    sd = smpl_sized.shapedirs
    assert sd.shape == (6890, 3, 10)
    assert np.isfinite(sd).all()
    assert np.count_nonzero(sd) == sd.size
    # First coefficients matter more, like PCA.
    norms = np.linalg.norm(sd.reshape(-1, 10), axis=0)
    assert norms[0] > norms[-1]
    big = random_model(6890, shape_blend_scale=0.3)
    assert np.abs(big.shapedirs).mean() > 5 * np.abs(sd).mean()
    # A unit beta moves the surface by centimetres, not metres.
    disp = np.linalg.norm(sd, axis=1)
    assert 0.001 < np.median(disp) < 0.05 and disp.max() < 0.3


@pytest.mark.parametrize("J", [1, 2, 5, 16, 30, 52])
def test_other_joint_counts(J):
    m = random_model(800, num_joints=J, num_betas=4, seed=J)
    _check_mesh(m, 800)
    assert m.num_joints == J
    assert m.posedirs.shape == (800, 3, 9 * (J - 1))
    assert m.J_regressor.shape == (J, 800) and m.weights.shape == (800, J)
    n0 = min(J, 24)
    assert np.array_equal(m.parents[:n0], SMPL_PARENTS[:n0])


def test_num_betas_variants():
    for S in (1, 3, 300):
        m = random_model(200, num_betas=S)
        assert m.shapedirs.shape == (200, 3, S)


def test_fast_at_smpl_size():
    random_model(6890, seed=123)  # warm-up
    t0 = time.perf_counter()
    random_model(6890, seed=124)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_save_load_round_trip(tmp_path, suffix):
    m = random_model(400, seed=9)
    path = save_model(m, tmp_path / f"rand{suffix}")
    back = load_model(path)
    for key in REQUIRED_KEYS:
        assert np.array_equal(getattr(m, key), getattr(back, key)), key


def test_smplx_runs_random_model(tmp_path, smpl_sized):
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    path = save_model(smpl_sized, tmp_path / "SMPL_NEUTRAL.pkl")
    body = smplx.SMPL(model_path=str(tmp_path), num_betas=10)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = body(
            betas=torch.randn(3, 10, generator=gen),
            body_pose=0.4 * torch.randn(3, 69, generator=gen),
            global_orient=torch.randn(3, 3, generator=gen),
            transl=torch.randn(3, 3, generator=gen),
        )
        rest = body()
    assert out.vertices.shape == (3, 6890, 3)
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()
    assert not torch.allclose(out.vertices[0], out.vertices[1])
    # Posed bodies stay body-sized.
    extent = out.vertices.max(dim=1).values - out.vertices.min(dim=1).values
    assert (extent.norm(dim=-1) < 5).all()
    np.testing.assert_allclose(rest.vertices[0].numpy(), smpl_sized.v_template, atol=1e-5)
    np.testing.assert_allclose(
        rest.joints[0, :24].numpy(), smpl_sized.J_regressor @ smpl_sized.v_template, atol=1e-5
    )
