"""Tests for smplfast.surface.uvgrid: HoloPose's per-part UV-grid body model."""
import numpy as np
import pytest
import torch

import smplfast
from smplfast.body.default_model import load_default_model
from smplfast.body.random_model import random_model
from smplfast.body.samplers import sample_betas, sample_poses
from smplfast.surface import (ChartTriangles, SurfaceCharts, UVGrid, densepose_parts_from_weights, flatten_charts,
                              grid_accuracy, load_densepose_uv, sample_chart_points, skin_points)

scipy_io = pytest.importorskip("scipy.io")


@pytest.fixture(scope="module")
def default():
    m = load_default_model()
    return m, SurfaceCharts.from_npz_dict(m.extras)


@pytest.fixture(scope="module")
def grid32(default):
    return UVGrid.from_model(default[0], resolution=32, dtype=torch.float64)


def _bodies(B, seed, dtype=torch.float64):
    pose = sample_poses(B, seed=seed, dtype=dtype)
    betas = sample_betas(B, 10, seed=seed + 1, dtype=dtype)
    pose[0] = 0
    betas[0] = 0  # the first body is the rest body
    transl = torch.randn(B, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 0.1
    return pose, betas, transl


def _errors(grid, smpl, charts, n=4000, B=3, seed=0):
    """Grid surface vs mesh surface (mm) at random chart points of B bodies (first: rest)."""
    tri = ChartTriangles(charts)
    part, uv, _, _ = sample_chart_points(charts, n, torch.Generator().manual_seed(seed))
    face, bary = tri.locate(part, uv)
    pose, betas, transl = _bodies(B, seed + 10)
    out = smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], transl=transl)
    gt = tri.interpolate(out.vertices, face, bary)
    posed = grid(betas, pose[:, 3:], pose[:, :3], transl)
    bi = torch.arange(B).repeat_interleave(n)
    pts = grid.surface_points(posed, part.repeat(B), uv.repeat(B, 1), bi).view(B, n, 3)
    return (pts - gt).norm(dim=-1).detach() * 1000


def test_grid_buffers(grid32):
    g = grid32
    R = 32
    assert g.template.shape == (24, R, R, 3) and g.shapedirs.shape == (24, R, R, 3, 10)
    assert g.weights.shape == (24, R, R, 24) and g.valid.shape == (24, R, R)
    assert g.posedirs is None  # the bundled model has no pose blend shapes
    assert bool((g.inside <= g.valid).all()) and bool(g.inside.flatten(1).any(1).all())
    for name in ("template", "shapedirs", "weights"):
        assert torch.isfinite(getattr(g, name)).all()
    torch.testing.assert_close(g.weights.sum(-1), torch.ones(24, R, R, dtype=torch.float64))
    assert bool((g.weights >= 0).all())
    # Invalid cells hold values of a valid cell of the same part (nothing is garbage).
    for p in (0, 3, 22):
        valid_vals = g.template[p][g.valid[p]]
        for v in g.template[p][~g.valid[p]][:50]:
            assert bool(((valid_vals - v).abs().amax(1) == 0).any())


def test_joints_match_mesh(grid32):
    smpl = smplfast.SMPL(dtype=torch.float64)
    pose, betas, transl = _bodies(4, 3)
    out = smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], transl=transl)
    joints, _, _ = grid32.joints(betas, pose[:, 3:], pose[:, :3], transl)
    torch.testing.assert_close(joints, out.joints[:, :24])


def test_accuracy_default_model(default, grid32):
    """The goal at R = 32: grid vs mesh surface mean < 2 mm and p95 < 5 mm, rest and posed bodies."""
    smpl = smplfast.SMPL(dtype=torch.float64)
    pose, betas, _ = _bodies(3, 10)
    acc = grid_accuracy(grid32, smpl, default[1], betas, pose[:, 3:], pose[:, :3], num_points=4000)
    err = acc["error"] * 1000
    assert err.shape == (3, 4000) and acc["border_distance"].shape == (4000,)
    for e in (err[0], err[1:].flatten()):  # rest body, posed bodies
        assert float(e.mean()) < 2.0
        assert float(e.quantile(0.95)) < 5.0
    # Points far from any chart border are much more accurate than those next to one.
    far = acc["border_distance"] > 3
    assert float(err[:, far].mean()) < 0.5 * float(err[:, ~far].mean())


def test_border_extrapolation_helps(default):
    """Cells just outside a chart extrapolated from the nearest triangle beat nearest-cell filling."""
    smpl = smplfast.SMPL(dtype=torch.float64)
    near = UVGrid.from_model(default[0], resolution=16, border="nearest", dtype=torch.float64)
    extra = UVGrid.from_model(default[0], resolution=16, border="extrapolate", dtype=torch.float64)
    e_near, e_extra = _errors(near, smpl, default[1], n=3000), _errors(extra, smpl, default[1], n=3000)
    assert float(e_extra.mean()) < 0.7 * float(e_near.mean())
    assert bool((near.valid == near.inside).all()) and int(extra.valid.sum()) > int(extra.inside.sum())


def test_point_skinning_matches_grid_lookup(default, grid32):
    part, uv, _, _ = sample_chart_points(default[1], 2000, torch.Generator().manual_seed(1))
    pose, betas, transl = _bodies(2, 5)
    posed = grid32(betas, pose[:, 3:], pose[:, :3], transl)
    bi = torch.arange(2).repeat_interleave(2000)
    a = grid32.surface_points(posed, part.repeat(2), uv.repeat(2, 1), bi).view(2, 2000, 3)
    gp = grid32.lookup_points(part, uv)
    _, rot, A = grid32.joints(betas, pose[:, 3:], pose[:, :3])
    b = skin_points(gp, rot, A, betas, transl)
    d = (a - b).norm(dim=-1) * 1000
    assert float(d.mean()) < 0.5 and float(d.max()) < 15.0  # skinning and bilinear blending commute to 2nd order


def test_surface_points_gradient(grid32, default):
    part, uv, _, _ = sample_chart_points(default[1], 50, torch.Generator().manual_seed(2))
    pose, betas, transl = _bodies(1, 7)
    body_pose = pose[:, 3:].clone().requires_grad_(True)

    def f(bp):
        return grid32.surface_points(grid32(betas, bp, pose[:, :3], transl), part, uv).sum()

    f(body_pose).backward()
    g = body_pose.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    k = int(g.abs().argmax())
    h = 1e-6
    e = torch.zeros_like(body_pose)
    e[0, k] = h
    fd = (f(body_pose.detach() + e) - f(body_pose.detach() - e)) / (2 * h)
    torch.testing.assert_close(fd, g[0, k], rtol=1e-5, atol=1e-8)


def test_locate_and_interpolate(default):
    charts = default[1]
    tri = ChartTriangles(charts)
    part, uv, face, bary = sample_chart_points(charts, 3000, torch.Generator().manual_seed(3))
    f2, b2 = tri.locate(part, uv)
    assert bool((f2 >= 0).all())
    # Where triangles overlap (folded chart regions) another face may be picked; the uv must agree.
    uv_tri = torch.as_tensor(charts.uv)[torch.as_tensor(charts.faces)[f2]]
    torch.testing.assert_close((uv_tri * b2[..., None]).sum(1), uv, atol=1e-9, rtol=0)
    assert float((f2 == face).double().mean()) > 0.9
    far = tri.locate(torch.tensor([1]), torch.tensor([[0.0, 0.0]], dtype=torch.float64))[0]
    near = tri.locate(torch.tensor([1]), torch.tensor([[0.0, 0.0]], dtype=torch.float64), nearest=True)[0]
    assert int(near[0]) >= 0 and int(far[0]) in (-1, int(near[0]))


def _random_model_charts(n=900, seed=0):
    m = random_model(n, seed=seed)
    joints = m.J_regressor @ m.v_template
    parts = densepose_parts_from_weights(m.v_template, m.f, m.weights, joints)
    return m, flatten_charts(m.v_template, m.f, parts)


def test_densepose_mat_charts_random_model(tmp_path):
    """Charts read by load_densepose_uv (the real SMPL path) on a model with pose blend shapes."""
    m, charts = _random_model_charts()
    path = tmp_path / "UV_Processed.mat"
    scipy_io.savemat(str(path), {
        "All_vertices": (charts.vertex_ids + 1)[None].astype(np.float64),
        "All_U_norm": charts.uv[:, :1], "All_V_norm": charts.uv[:, 1:],
        "All_Faces": (charts.faces + 1).astype(np.float64),
        "All_FaceIndices": charts.face_part_ids[:, None].astype(np.float64)})
    loaded = load_densepose_uv(path)
    model_path = tmp_path / "SMPL_NEUTRAL.pkl"
    from smplfast.body import save_model
    save_model(m, str(model_path))
    smpl = smplfast.SMPL(str(model_path), dtype=torch.float64)
    for source in (m, str(model_path), smpl):
        grid = UVGrid.from_model(source, charts=loaded, resolution=16, dtype=torch.float64)
        assert grid.posedirs is not None and grid.has_pose_blend
    err = _errors(grid, smpl, loaded, n=2000, B=3)
    assert float(err.mean()) < 5.0 and float(err.flatten().quantile(0.95)) < 15.0
    with pytest.raises(ValueError, match="carries no surface charts"):
        UVGrid.from_model(m, resolution=8)


def test_bad_inputs(grid32, default):
    with pytest.raises(ValueError, match="resolution must be an int >= 2"):
        UVGrid.from_model(default[0], resolution=1)
    with pytest.raises(ValueError, match="border must be"):
        UVGrid.from_model(default[0], resolution=4, border="zero")
    with pytest.raises(TypeError, match="charts must be a SurfaceCharts"):
        UVGrid.from_model(default[0], charts={"uv": 1}, resolution=4)
    with pytest.raises(TypeError, match="model must be"):
        UVGrid.from_model(3.0, resolution=4)
    pose, betas, transl = _bodies(2, 1)
    with pytest.raises(ValueError, match=r"body_pose must be \(2, 69\)"):
        grid32(betas, pose[:, :60], pose[:, :3], transl)
    with pytest.raises(TypeError, match="float64"):
        grid32(betas.float(), pose[:, 3:].float(), pose[:, :3].float(), transl.float())
    posed = grid32(betas, pose[:, 3:], pose[:, :3], transl)
    uv = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"part must be in 1..24"):
        grid32.surface_points(posed, torch.tensor([0, 1, 2, 3, 4]), uv, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"uv must be \(5, 2\)"):
        grid32.surface_points(posed, torch.ones(5, dtype=torch.long), uv[:, :1], torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_index"):
        grid32.surface_points(posed, torch.ones(5, dtype=torch.long), uv)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        grid32.lookup_points(torch.ones(5, dtype=torch.long), uv + 1)


# ------------------------------------------------------------------------------- rotation matrices
def _poses_near_pi(B, seed, dtype=torch.float64):
    """(B, 72) axis-angle poses: random axes, angles uniform in [0, π] and, on a few joints, at π or
    within 1e-3..1e-7 of it (on both sides)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(B, 24, 3, generator=g, dtype=dtype), dim=-1)
    angle = torch.rand(B, 24, 1, generator=g, dtype=dtype) * np.pi
    special = torch.tensor([np.pi, np.pi - 1e-7, np.pi + 1e-7, np.pi - 1e-3, np.pi + 1e-3], dtype=dtype)
    for b in range(B):
        joints = torch.randperm(24, generator=g)[:special.numel()]
        angle[b, joints, 0] = special
    return (axis * angle).reshape(B, 72)


def test_rotmat_matches_axis_angle(grid32, default):
    """UVGrid posed by rotation matrices = posed by the same rotations in axis-angle (float64)."""
    from smplfast.body.samplers import axis_angle_to_matrix

    B = 3
    pose = _poses_near_pi(B, 21)
    _, betas, transl = _bodies(B, 22)
    rot = smplfast.ops.rodrigues(pose.reshape(B, 24, 3))  # the axis-angle route's own matrices
    ref = grid32(betas, pose[:, 3:], pose[:, :3], transl)
    torch.testing.assert_close(grid32(betas, rotmat=rot, transl=transl), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grid32.pose(betas, None, None, transl, rotmat=rot), ref, rtol=0, atol=1e-12)
    j_ref, r_ref, a_ref = grid32.joints(betas, pose[:, 3:], pose[:, :3], transl)
    j, r, a = grid32.joints(betas, rotmat=rot, transl=transl)
    torch.testing.assert_close(j, j_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(a, a_ref, rtol=0, atol=1e-12)
    assert r is rot or torch.equal(r, rot)
    # Exact exponential map (no smplx 1e-8 Rodrigues offset): equal to ~1e-8 m.
    exact = axis_angle_to_matrix(pose.reshape(B, 24, 3))
    torch.testing.assert_close(grid32(betas, rotmat=exact, transl=transl), ref, rtol=0, atol=1e-7)
    # Joints against the mesh model with pose2rot=False; surface points (lookup + skinning) alike.
    smpl = smplfast.SMPL(dtype=torch.float64)
    out = smpl(betas=betas, body_pose=rot[:, 1:], global_orient=rot[:, :1], transl=transl, pose2rot=False)
    torch.testing.assert_close(j, out.joints[:, :24], rtol=0, atol=1e-10)
    part, uv, _, _ = sample_chart_points(default[1], 300, torch.Generator().manual_seed(4))
    gp = grid32.lookup_points(part, uv)
    torch.testing.assert_close(skin_points(gp, r, a, betas, transl), skin_points(gp, r_ref, a_ref, betas, transl),
                               rtol=0, atol=1e-12)
    acc = grid_accuracy(grid32, smpl, default[1], betas, rotmat=rot, num_points=500)
    acc_ref = grid_accuracy(grid32, smpl, default[1], betas, pose[:, 3:], pose[:, :3], num_points=500)
    torch.testing.assert_close(acc["error"], acc_ref["error"], rtol=0, atol=1e-10)


def test_rotmat_gradient(default):
    """Gradients w.r.t. the rotation matrices are finite and match central differences (float64),
    with joints rotated by exactly π (where going through axis-angle is unstable)."""
    grid = UVGrid.from_model(default[0], resolution=8, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    pose = _poses_near_pi(1, 5)
    pose[0, 3:6] = torch.tensor([np.pi, 0.0, 0.0])                 # left hip: exactly π about x
    pose[0, 12 * 3:12 * 3 + 3] = torch.tensor([0.0, 0.0, -np.pi])  # neck: exactly π about -z
    rot = smplfast.ops.rodrigues(pose.reshape(1, 24, 3))
    betas = torch.randn(1, 10, generator=g, dtype=torch.float64) * 0.5
    transl = torch.randn(1, 3, generator=g, dtype=torch.float64) * 0.1
    part, uv, _, _ = sample_chart_points(default[1], 6, g)

    def surface(r):
        return grid.surface_points(grid(betas, rotmat=r, transl=transl), part, uv)

    def joints(r):
        return grid.joints(betas, rotmat=r, transl=transl)[0]

    r = rot.clone().requires_grad_(True)
    surface(r).square().sum().backward()
    assert torch.isfinite(r.grad).all() and float(r.grad[0, 1].abs().sum()) > 0
    assert torch.autograd.gradcheck(surface, (r,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradcheck(joints, (r,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_rotmat_bad_inputs(grid32):
    pose, betas, transl = _bodies(2, 1)
    rot = smplfast.ops.rodrigues(pose.reshape(2, 24, 3))
    with pytest.raises(TypeError, match="not both"):
        grid32(betas, pose[:, 3:], pose[:, :3], transl, rotmat=rot)
    with pytest.raises(TypeError, match="body_pose and global_orient missing"):
        grid32(betas)
    with pytest.raises(TypeError, match="global_orient missing"):
        grid32.joints(betas, pose[:, 3:])
    with pytest.raises(ValueError, match=r"rotmat must be \(2, 24, 3, 3\)"):
        grid32(betas, rotmat=rot.reshape(2, 24, 9))
    with pytest.raises(ValueError, match=r"rotmat must be \(2, 24, 3, 3\)"):
        grid32.joints(betas, rotmat=rot[:1])
    with pytest.raises(TypeError, match="rotmat must be torch.float64"):
        grid32(betas, rotmat=rot.float())
    with pytest.raises(TypeError, match="rotmat must be a torch.Tensor"):
        grid32(betas, rotmat=rot.tolist())
