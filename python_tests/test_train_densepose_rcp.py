"""Tests for smplfast_train.eval.densepose_rcp: the landmark geodesic table against exact Dijkstra on
small meshes, the cache, surface points, and the RCP / AUC / FR10 numbers on error sets with known
answers."""
import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import dijkstra

from smplfast_train.eval.densepose_rcp import (
    GeodesicTable,
    SurfacePoints,
    failure_rate,
    mesh_checksum,
    mesh_graph,
    per_sample_rcp,
    point_errors,
    rcp_auc,
    rcp_curve,
    rcp_summary,
    surface_points_from_raster,
)


def plane(n=21, size=1.0, jitter=0.0, seed=0):
    """A flat n x n grid in z = 0 (alternating diagonals), optionally with jittered interior vertices."""
    xs = np.linspace(0, size, n)
    X, Y = np.meshgrid(xs, xs, indexing="xy")
    v = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], 1)
    if jitter:
        rng = np.random.default_rng(seed)
        inner = (X.ravel() > 0) & (X.ravel() < size) & (Y.ravel() > 0) & (Y.ravel() < size)
        v[inner, :2] += rng.uniform(-jitter, jitter, (inner.sum(), 2)) * size / (n - 1)
    f = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            if (r + c) % 2:
                f += [[a, b, e], [a, e, d]]
            else:
                f += [[a, b, d], [b, e, d]]
    return v, np.array(f, dtype=np.int64)


def tube(n_around=16, n_along=12, radius=0.1, length=0.6):
    """An open cylinder (a curved surface whose geodesics are not straight lines in 3D)."""
    th = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    zs = np.linspace(0, length, n_along)
    v = np.array([[radius * np.cos(t), radius * np.sin(t), z] for z in zs for t in th])
    f = []
    for i in range(n_along - 1):
        for j in range(n_around):
            a, b = i * n_around + j, i * n_around + (j + 1) % n_around
            c, d = a + n_around, b + n_around
            f += [[a, b, d], [a, d, c]]
    return v, np.array(f, dtype=np.int64)


@pytest.mark.parametrize("mesh", ["plane", "tube"])
@pytest.mark.parametrize("graph", ["edges", "unfolded"])
def test_vertex_distances_against_exact_dijkstra(mesh, graph):
    v, f = plane(17, jitter=0.3) if mesh == "plane" else tube()
    V = len(v)
    exact = dijkstra(mesh_graph(v, f, graph), directed=False)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, V, 3000), rng.integers(0, V, 3000)
    truth = exact[i, j]
    L = V // 6
    table = GeodesicTable.build(v, f, L, graph)
    est, lo, up = (x.numpy() for x in table.vertex_distance(i, j, return_bounds=True))
    # The triangle-inequality bracket always holds for vertices; the estimate lies inside it.
    assert np.all(lo <= truth + 1e-5) and np.all(up >= truth - 1e-5)
    assert np.all((est >= lo - 1e-9) & (est <= up + 1e-9))
    err = np.abs(est - truth)
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()
    spacing = math.sqrt(area / L)  # typical distance between neighbouring landmarks
    assert err.mean() < 0.1 * spacing, (err.mean(), spacing)
    assert err.max() < 1.5 * spacing, (err.max(), spacing)
    # Landmarks are their own exact sources.
    lm = table.landmarks
    k = np.repeat(lm[:5], 50)
    m = rng.integers(0, V, 250)
    assert np.allclose(table.vertex_distance(k, m).numpy(), exact[k, m], atol=1e-5)


def test_every_vertex_a_landmark_is_exact():
    v, f = tube(10, 6)
    exact = dijkstra(mesh_graph(v, f, "edges"), directed=False)
    table = GeodesicTable.build(v, f, len(v), "edges")
    i, j = np.meshgrid(np.arange(len(v)), np.arange(len(v)), indexing="ij")
    est = table.vertex_distance(i.ravel(), j.ravel()).numpy().reshape(len(v), len(v))
    assert np.allclose(est, exact, atol=1e-5)
    # The farthest-point order: every landmark is distinct.
    assert len(set(table.landmarks.tolist())) == len(v)


def test_surface_points_on_a_plane_match_straight_lines():
    """On a flat mesh the true geodesic is the straight line; points inside faces (barycentric
    blends of the vertices' rows) stay within the graph's metrication error of it (an irregular
    triangulation: the jittered grid)."""
    n = 31
    v, f = plane(n, jitter=0.3)
    h = 1.0 / (n - 1)
    table = GeodesicTable.build(v, f, 300, "unfolded")
    rng = np.random.default_rng(1)
    N = 2000
    fa, fb = rng.integers(0, len(f), N), rng.integers(0, len(f), N)
    ba = rng.dirichlet(np.ones(3), N)
    bb = rng.dirichlet(np.ones(3), N)
    pa = SurfacePoints(torch.as_tensor(f[fa]), torch.as_tensor(ba), torch.ones(N, dtype=torch.bool))
    pb = SurfacePoints(torch.as_tensor(f[fb]), torch.as_tensor(bb), torch.ones(N, dtype=torch.bool))
    est = table.distance(pa, pb).numpy()
    straight = np.linalg.norm((v[f[fa]] * ba[..., None]).sum(1) - (v[f[fb]] * bb[..., None]).sum(1), axis=1)
    assert np.all(est >= straight - 1e-9)            # the straight line is a lower bound
    rel = (est - straight)[straight > 5 * h] / straight[straight > 5 * h]
    assert np.median(rel) < 0.04 and rel.max() < 0.08
    assert np.all(est - straight < 2 * h)
    # The unfolded graph is closer to the straight line than the plain edge graph.
    t_edges = GeodesicTable.build(v, f, 300, "edges")
    rel_e = (t_edges.distance(pa, pb).numpy() - straight)[straight > 5 * h] / straight[straight > 5 * h]
    assert np.median(rel) < np.median(rel_e)


def test_cache_roundtrip_and_checksum(tmp_path):
    v, f = tube(12, 8)
    t1 = GeodesicTable.cached(v, f, 20, "unfolded", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and mesh_checksum(v, f)[:16] in files[0].name
    t2 = GeodesicTable.cached(v, f, 20, "unfolded", cache_dir=tmp_path)
    assert np.array_equal(t1.landmarks, t2.landmarks)
    assert np.abs(t1.dist.numpy() - t2.dist.numpy()).max() <= 2.5e-5 + 1e-7   # 0.05 mm quantisation
    with pytest.raises(ValueError, match="checksum"):
        GeodesicTable.load(files[0], expected_checksum=mesh_checksum(v + 1e-3, f))
    # A different mesh never reuses the file.
    v2 = v.copy()
    v2[:, 2] *= 1.5
    t3 = GeodesicTable.cached(v2, f, 20, "unfolded", cache_dir=tmp_path)
    assert t3.checksum != t1.checksum and len(list(tmp_path.glob("*.npz"))) == 2
    # A damaged cache file is rebuilt.
    files[0].write_bytes(b"not an npz")
    t4 = GeodesicTable.cached(v, f, 20, "unfolded", cache_dir=tmp_path)
    assert t4.checksum == t1.checksum


def test_invalid_points_are_infinite_errors():
    v, f = tube(8, 5)
    table = GeodesicTable.build(v, f, 10)
    gt = SurfacePoints.from_vertices([0, 1, 2, 3])
    pred = surface_points_from_raster(torch.tensor([0, -1, 3, 5]), torch.full((4, 3), 1 / 3), f)
    e = point_errors(table, gt, pred).numpy()
    assert np.isfinite(e[[0, 2, 3]]).all() and np.isinf(e[1])
    e_eu = point_errors(table, gt, pred, kind="euclid").numpy()
    assert np.isinf(e_eu[1]) and np.all(e_eu[[0, 2, 3]] <= e[[0, 2, 3]] + 1e-9)
    gt_missing = SurfacePoints(gt.vid, gt.bary, torch.tensor([True, True, False, True]))
    assert np.isnan(point_errors(table, gt_missing, pred).numpy()[2])


def test_rcp_known_answers():
    # All errors 5 cm: RCP steps from 0 to 1 at 5 cm; AUC_a = 1 - 0.05 / a; no failure at 10 cm.
    e = np.full(100, 0.05)
    assert rcp_auc(e, 0.10) == pytest.approx(0.5)
    assert rcp_auc(e, 0.30) == pytest.approx(1 - 0.05 / 0.30)
    assert failure_rate(e, 0.10) == 0.0
    # Uniform errors on [0, 0.2] m: RCP(t) = t / 0.2 up to 0.2; AUC10 = 0.25, AUC30 = (0.1 + 0.1) / 0.3.
    e = (np.arange(200000) + 0.5) / 200000 * 0.2
    assert rcp_auc(e, 0.10) == pytest.approx(0.25, abs=1e-6)
    assert rcp_auc(e, 0.30) == pytest.approx((0.2 * 0.5 + 0.1) / 0.30, abs=1e-6)
    assert failure_rate(e, 0.10) == pytest.approx(50.0, abs=1e-3)
    # Failures (inf) count as zero area and as failures; NaN entries are ignored.
    e = np.array([0.0, np.inf, 0.02, np.inf, np.nan])
    assert rcp_auc(e, 0.10) == pytest.approx((1 + 0 + 0.8 + 0) / 4)
    assert failure_rate(e, 0.10) == pytest.approx(50.0)
    s = rcp_summary(e, curve=True)
    assert s["n"] == 4 and s["fr10"] == pytest.approx(100 * (1 - s["rcp10"]))
    # The exact AUC equals the numerical integral of the curve.
    rng = np.random.default_rng(0)
    e = np.abs(rng.normal(0, 0.08, 5000))
    t = np.linspace(0, 0.30, 30001)
    curve = rcp_curve(e, t)
    assert curve[0] == 0 and np.all(np.diff(curve) >= 0)
    for a in (0.10, 0.30):
        k = t <= a + 1e-12
        assert rcp_auc(e, a) == pytest.approx(np.trapezoid(curve[k], t[k]) / a, abs=2e-4)
    # RCP(t) counts errors strictly below t.
    assert rcp_curve([0.1, 0.1], [0.1, 0.1000001]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        rcp_auc([-0.1], 0.1)


def test_per_sample_rcp_matches_pooled():
    rng = np.random.default_rng(2)
    e = np.abs(rng.normal(0, 0.1, 300))
    e[::17] = np.inf
    idx = np.repeat(np.arange(3), 100)
    per = per_sample_rcp(e, idx, 4)
    assert np.isnan(per["fr10"][3])
    pooled = rcp_summary(e)
    # Equal counts per sample: the mean of the per-sample values is the pooled value.
    assert np.nanmean(per["fr10"]) == pytest.approx(pooled["fr10"])
    assert np.nanmean(per["auc10"]) == pytest.approx(pooled["auc10"])
    assert np.nanmean(per["auc30"]) == pytest.approx(pooled["auc30"])
