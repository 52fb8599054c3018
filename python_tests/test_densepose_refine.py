"""Tests for smplfast.surface.densepose (HoloPose's DensePose loss) and smplfast.surface.refine."""
import pytest
import torch

import smplfast
from smplfast.body.default_model import load_default_model
from smplfast.body.samplers import sample_betas, sample_poses
from smplfast.metrics import pa_mpjpe
from smplfast.surface import (BodyParams, ChartTriangles, IUVPoints, PerspectiveCamera, RefineOptions, RefineProblem,
                              SurfaceCharts, UVGrid, WeakPerspectiveCamera, densepose_loss, posed_points,
                              project_points, refine, sample_chart_points)
from smplfast.surface.densepose import _grid_points

pytest.importorskip("scipy")
D = torch.float64


@pytest.fixture(scope="module")
def setup():
    m = load_default_model()
    charts = SurfaceCharts.from_npz_dict(m.extras)
    grid = UVGrid.from_model(m, resolution=16, dtype=D)
    return m, charts, grid


def _camera(B):
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=D)).expand(B, 3, 3)  # image y down, facing the body
    return PerspectiveCamera(1000.0, torch.tensor([256.0, 256.0], dtype=D), flip,
                             torch.tensor([0.0, 0.0, 5.0], dtype=D).expand(B, 3))


@pytest.fixture(scope="module")
def synthetic(setup):
    """B bodies seen by a perspective camera: DensePose points from the mesh surface, 2D/3D joints,
    and a perturbed (regressor-like) initialisation."""
    _, charts, grid = setup
    B, N = 4, 400
    smpl = smplfast.SMPL(dtype=D)
    g = torch.Generator().manual_seed(0)
    pose = sample_poses(B, seed=3, dtype=D, max_tilt_deg=10, yaw_range=(-0.5, 0.5))
    betas = sample_betas(B, 10, seed=4, dtype=D)
    transl = torch.tensor([0.0, 0.2, 0.0], dtype=D) + 0.05 * torch.randn(B, 3, generator=g, dtype=D)
    out = smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], transl=transl)
    tri = ChartTriangles(charts)
    part, uv, face, bary = sample_chart_points(charts, B * N, g)
    bi = torch.arange(B).repeat_interleave(N)
    X = tri.interpolate(out.vertices, face, bary, bi).view(B, N, 3)
    cam = _camera(B)
    pts = IUVPoints(part.view(B, N), uv.view(B, N, 2), project_points(X, cam))
    joints = out.joints[:, :24]
    kp2 = project_points(joints, cam)
    kp3 = joints - transl[:, None]
    g2 = torch.Generator().manual_seed(5)
    init = BodyParams(betas + 0.5 * torch.randn(B, 10, generator=g2, dtype=D),
                      pose[:, 3:] + 0.15 * torch.randn(B, 69, generator=g2, dtype=D),
                      pose[:, :3] + 0.1 * torch.randn(B, 3, generator=g2, dtype=D),
                      transl + torch.tensor([0.05, -0.05, 0.3], dtype=D))

    def metrics(p):
        o = smpl(betas=p.betas, body_pose=p.body_pose, global_orient=p.global_orient, transl=p.transl)
        Xp = tri.interpolate(o.vertices, face, bary, bi).view(B, N, 3)
        surface = (Xp - X).norm(dim=-1).mean(1) * 1000                   # mm, corresponding points
        dp2d = (project_points(Xp, cam) - pts.xy).norm(dim=-1).mean(1)    # px
        pa = pa_mpjpe(o.joints[:, :24], joints) * 1000                     # mm
        return dict(surface=float(surface.mean()), dp2d=float(dp2d.mean()), pa=float(pa.mean()))

    return dict(pts=pts, kp2=kp2, kp3=kp3, cam=cam, init=init, metrics=metrics, B=B, N=N)


# ------------------------------------------------------------------------------------------- Jacobian
def _autograd_residuals(grid, pts, cam_builder, kp2, kp3, Kmat, fixed_transl, weak):
    def f(x):
        bp = BodyParams(x[:, 72:82], x[:, 3:72], x[:, :3], fixed_transl if weak else x[:, 82:])
        camx = cam_builder(x)
        X = posed_points(grid, bp, _grid_points(grid, pts))
        e_dp = project_points(X, camx) - pts.xy
        jt, _, _ = grid.joints(bp.betas, bp.body_pose, bp.global_orient, bp.transl)
        jk = jt if Kmat is None else torch.einsum("kj,bjc->bkc", Kmat, jt)
        e2 = project_points(jk, camx) - kp2[..., :2]
        j0 = jk - bp.transl[:, None]
        e3 = (j0 - j0[:, :1]) - (kp3 - kp3[:, :1])
        return e_dp, e2, e3
    return f


@pytest.mark.parametrize("weak", [False, True])
@pytest.mark.parametrize("with_matrix", [False, True])
def test_jacobian_matches_autograd(setup, weak, with_matrix):
    _, charts, _ = setup
    grid = UVGrid.from_model(setup[0], resolution=8, dtype=D)
    B, N = 2, 40
    g = torch.Generator().manual_seed(1)
    part, uv, _, _ = sample_chart_points(charts, B * N, g)
    pts = IUVPoints(part.view(B, N), uv.view(B, N, 2), torch.randn(B, N, 2, generator=g, dtype=D) * 50 + 300,
                    torch.rand(B, N, generator=g) > 0.2).check()
    Kmat = None
    K = 24
    if with_matrix:
        Kmat = torch.rand(5, 24, generator=g, dtype=D)
        Kmat = Kmat / Kmat.sum(1, keepdim=True)
        K = 5
    kp2 = torch.randn(B, K, 3, generator=g, dtype=D) * 50 + 300
    kp3 = torch.randn(B, K, 3, generator=g, dtype=D) * 0.3
    fixed = torch.randn(B, 3, generator=g, dtype=D) * 0.1
    if weak:
        cam = WeakPerspectiveCamera(torch.tensor([[0.9, 0.1, -0.2], [1.1, 0.0, 0.3]], dtype=D))
        c = cam.params
        builder = lambda x: WeakPerspectiveCamera(x[:, 82:])  # noqa: E731
    else:
        rot = torch.linalg.matrix_exp(torch.tensor([[0, 0.1, 0], [-0.1, 0, 0.2], [0, -0.2, 0]], dtype=D))
        cam = PerspectiveCamera(torch.tensor([[800.0, 820.0], [900.0, 880.0]], dtype=D),
                                torch.tensor([400.0, 300.0], dtype=D), rot.expand(B, 3, 3),
                                torch.tensor([[0.1, 0.2, 0.1], [0.0, 0.0, 0.3]], dtype=D))
        c = torch.tensor([[0.0, 0.1, 3.0], [0.2, 0.0, 4.0]], dtype=D)
        builder = lambda x: cam  # noqa: E731
    prob = RefineProblem(grid, cam, RefineOptions(), B, pts, kp2, torch.cat([kp3, torch.ones_like(kp3[..., :1])], -1),
                         Kmat, fixed_transl=fixed if weak else None)
    x = torch.cat([torch.randn(B, 72, generator=g, dtype=D) * 0.4, torch.randn(B, 10, generator=g, dtype=D), c], 1)
    mine = prob.residuals(x)
    f = _autograd_residuals(grid, pts, builder, kp2, kp3, Kmat, fixed, weak)
    ref = f(x)
    jac = torch.autograd.functional.jacobian(lambda x: tuple(t.sum(0) for t in f(x)), x)
    for name, e, jr in zip(("dp", "kp2d", "kp3d"), ref, jac):
        e_mine, J_mine = mine[name]
        torch.testing.assert_close(e_mine, e, rtol=1e-10, atol=1e-9)
        jr = jr.permute(2, 0, 1, 3)
        # smplx's Rodrigues (angle |aa + 1e-8|) differs from the exact exponential map by ~1e-8.
        assert float((J_mine - jr).abs().max() / jr.abs().max()) < 1e-6, name


# ------------------------------------------------------------------------------------- DensePose loss
def test_densepose_loss(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    B, N = s["B"], s["N"]
    init = s["init"]
    # Targets made by the grid itself at the initialisation: exactly zero loss there.
    X = posed_points(grid, init, _grid_points(grid, s["pts"].check()))
    own = IUVPoints(s["pts"].part, s["pts"].uv, project_points(X, s["cam"]).detach())
    assert float(densepose_loss(init, own, s["cam"], grid).abs().max()) < 1e-8
    loss = densepose_loss(init, s["pts"], s["cam"], grid)
    assert loss.shape == (B,) and bool((loss > 1).all())
    sq = densepose_loss(init, s["pts"], s["cam"], grid, squared=True)
    assert bool((sq > loss).all())  # pixel errors > 1 px
    # Differentiable, and exactly zero-gradient-safe at a perfect fit.
    bp = init.body_pose.clone().requires_grad_(True)
    densepose_loss(BodyParams(init.betas, bp, init.global_orient, init.transl), s["pts"], s["cam"], grid).sum().backward()
    assert torch.isfinite(bp.grad).all() and bp.grad.abs().sum() > 0
    bp2 = init.body_pose.clone().requires_grad_(True)
    densepose_loss(BodyParams(init.betas, bp2, init.global_orient, init.transl), own, s["cam"], grid).sum().backward()
    assert torch.isfinite(bp2.grad).all()
    # Padding is ignored, whatever it holds; flat points with batch_index give the same loss.
    mask = torch.rand(B, N, generator=torch.Generator().manual_seed(2)) > 0.3
    p = s["pts"]
    junk = IUVPoints(torch.where(mask, p.part, 99), torch.where(mask[..., None], p.uv, float("nan")),
                     torch.where(mask[..., None], p.xy, float("nan")), mask)
    masked = densepose_loss(init, junk, s["cam"], grid)
    b, n = torch.nonzero(mask, as_tuple=True)
    flat = IUVPoints.from_flat(p.part[b, n], p.uv[b, n], p.xy[b, n], b, B)
    torch.testing.assert_close(densepose_loss(init, flat, s["cam"], grid), masked)
    assert torch.isfinite(masked).all()
    res = refine(init, iuv_points=junk, camera=s["cam"], grid=grid, max_iters=2)
    assert torch.isfinite(res.loss).all() and not bool(res.fell_back.any())
    # Weak perspective: SPIN's s (x + t).
    cam = WeakPerspectiveCamera(torch.tensor([[2.0, 0.1, -0.1]], dtype=D).expand(B, 3))
    Xp = posed_points(grid, init, _grid_points(grid, p.check()))
    torch.testing.assert_close(project_points(Xp, cam), 2.0 * (Xp[..., :2] + torch.tensor([0.1, -0.1], dtype=D)))
    assert torch.isfinite(densepose_loss(init, p, cam, grid)).all()


def test_densepose_loss_bad_inputs(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    p = s["pts"]
    with pytest.raises(ValueError, match=r"iuv_points.uv must be \(4, 400, 2\)"):
        densepose_loss(s["init"], IUVPoints(p.part, p.uv[..., :1], p.xy), s["cam"], grid)
    with pytest.raises(ValueError, match="part must be in 1..24"):
        densepose_loss(s["init"], IUVPoints(p.part * 0, p.uv, p.xy), s["cam"], grid)
    with pytest.raises(ValueError, match="samples but params has"):
        densepose_loss(s["init"], IUVPoints(p.part[:2], p.uv[:2], p.xy[:2]), s["cam"], grid)
    with pytest.raises(TypeError, match="params must be torch.float64"):
        bp = s["init"]
        densepose_loss(BodyParams(bp.betas.float(), bp.body_pose.float(), bp.global_orient.float(), bp.transl.float()),
                       p, s["cam"], grid)
    with pytest.raises(TypeError, match="camera must be"):
        densepose_loss(s["init"], p, "pinhole", grid)


def test_iuv_image_points():
    iuv = torch.zeros(2, 3, 4, 5)
    iuv[0, :, 1, 2] = torch.tensor([3.0, 51.0, 102.0])
    iuv[1, :, 3, 0] = torch.tensor([24.0, 255.0, 0.0])
    iuv[1, :, 0, 4] = torch.tensor([1.0, 0.0, 255.0])
    pts = IUVPoints.from_iuv_image(iuv, uv_scale=255.0).check()
    assert pts.part.shape == (2, 2) and pts.mask.sum().item() == 3
    assert pts.part[0, 0] == 3 and torch.allclose(pts.xy[0, 0], torch.tensor([2.5, 1.5]))
    torch.testing.assert_close(pts.uv[0, 0], torch.tensor([0.2, 0.4]))
    got = {(int(pts.part[1, i]), tuple(pts.xy[1, i].tolist())) for i in range(2)}
    assert got == {(24, (0.5, 3.5)), (1, (4.5, 0.5))}
    one = IUVPoints.from_iuv_image(iuv, max_points=1, uv_scale=255.0)
    assert one.mask.sum(1).tolist() == [1, 1]


# ----------------------------------------------------------------------------------------- refinement
@pytest.fixture(scope="module")
def refined(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    kw = dict(camera=s["cam"], grid=grid, max_iters=25, kp3d_weight=1000.0)
    return {
        "init": s["metrics"](s["init"]),
        "dp": refine(s["init"], iuv_points=s["pts"], **kw),
        "kp": refine(s["init"], keypoints_2d=s["kp2"], keypoints_3d=s["kp3"], **kw),
        "all": refine(s["init"], iuv_points=s["pts"], keypoints_2d=s["kp2"], keypoints_3d=s["kp3"], **kw),
    }


def test_refinement_improves_each_metric(synthetic, refined):
    """HoloPose's Table 3 on synthetic data: the DensePose term improves the surface, the keypoint terms
    the joints (PA-MPJPE), and their combination both."""
    m = synthetic["metrics"]
    init = refined["init"]
    dp, kp, both = (m(refined[k].params) for k in ("dp", "kp", "all"))
    for r in ("dp", "kp", "all"):
        res = refined[r]
        assert not bool(res.fell_back.any())
        assert bool((res.loss_history[:, -1] < 0.5 * res.loss_history[:, 0]).all())
        assert torch.isfinite(res.loss_history).all()
        assert bool((res.loss_history[:, 1:] <= res.loss_history[:, :-1] + 1e-9).all())  # monotone
    # Every variant improves both the surface error and PA-MPJPE over the initialisation ...
    for r in (dp, kp, both):
        assert r["surface"] < 0.5 * init["surface"] and r["pa"] < 0.5 * init["pa"]
    # ... each term is best on its own metric ...
    assert dp["dp2d"] < kp["dp2d"]
    assert kp["pa"] < dp["pa"]
    # ... and the combination gets the best surface and keeps the keypoints' joint accuracy.
    assert both["surface"] < min(dp["surface"], kp["surface"])
    assert both["pa"] < 1.5 * kp["pa"] + 1.0 and both["pa"] < dp["pa"]


def test_refine_lm_and_weak_perspective(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    res = refine(s["init"], iuv_points=s["pts"], camera=s["cam"], grid=grid, method="lm", max_iters=15)
    assert s["metrics"](res.params)["dp2d"] < 0.2 * s["metrics"](s["init"])["dp2d"]
    # Weak perspective (SPIN's [s, tx, ty], normalised units): the camera is refined with the body.
    B = s["B"]
    g = torch.Generator().manual_seed(7)
    truth = BodyParams(torch.randn(B, 10, generator=g, dtype=D) * 0.5, 0.2 * torch.randn(B, 69, generator=g, dtype=D),
                       torch.tensor([[torch.pi, 0.0, 0.0]], dtype=D).expand(B, 3).clone(), None)
    true_cam = torch.tensor([[0.8, 0.05, -0.1]], dtype=D).expand(B, 3)
    X = posed_points(grid, truth.check("test"), _grid_points(grid, s["pts"].check()))
    weak_pts = IUVPoints(s["pts"].part, s["pts"].uv, true_cam[:, None, :1] * (X[..., :2] + true_cam[:, None, 1:]))
    start = BodyParams(truth.betas + 0.3, truth.body_pose + 0.1 * torch.randn(B, 69, generator=g, dtype=D),
                       truth.global_orient + 0.1, None)
    cam0 = WeakPerspectiveCamera(torch.tensor([[0.7, 0.0, 0.0]], dtype=D).expand(B, 3).clone())
    # HoloPose's 20 CG iterations lower the loss but, on this ill-conditioned problem (no depth), leave
    # some samples in a local minimum; solving the steps fully recovers bodies and camera.
    res = refine(start, iuv_points=weak_pts, camera=cam0, grid=grid, max_iters=30)
    assert bool((res.loss < 0.95 * res.loss_history[:, 0]).all())
    res = refine(start, iuv_points=weak_pts, camera=cam0, grid=grid, max_iters=30, cg_iters=200)
    assert isinstance(res.camera, WeakPerspectiveCamera)
    good = res.loss < 1e-4
    assert int(good.sum()) >= 3
    torch.testing.assert_close(res.camera.params[good], true_cam[good], atol=1e-4, rtol=0)
    torch.testing.assert_close(res.params.transl, torch.zeros(B, 3, dtype=D))  # no effect: left unchanged


def test_refine_never_nan(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    p = s["pts"]
    xy = p.xy.clone()
    xy[1] = 1e200  # overflows the squared distances: sample 1 must keep its initialisation
    res = refine(s["init"], iuv_points=IUVPoints(p.part, p.uv, xy), camera=s["cam"], grid=grid, max_iters=5)
    assert bool(res.fell_back[1]) and not bool(res.fell_back[[0, 2, 3]].any())
    torch.testing.assert_close(res.params.body_pose[1], s["init"].body_pose[1])
    for t in (res.params.betas, res.params.body_pose, res.params.global_orient, res.params.transl):
        assert torch.isfinite(t).all()
    assert not bool(res.loss_history.isnan().any())  # sample 1's objective is honestly infinite
    assert torch.isfinite(res.loss_history[[0, 2, 3]]).all()
    # A sample without any data keeps its initialisation too.
    mask = torch.ones(s["B"], s["N"], dtype=torch.bool)
    mask[2] = False
    res = refine(s["init"], iuv_points=IUVPoints(p.part, p.uv, p.xy, mask), camera=s["cam"], grid=grid, max_iters=3)
    assert res.fell_back.tolist() == [False, False, True, False]
    torch.testing.assert_close(res.params.betas[2], s["init"].betas[2])


def test_shape_bound(setup, synthetic):
    """The bound's IRLS term: objective sum max(0, |beta| - 2), gradient its own, and a Gauss-Newton step
    on it alone lands exactly on the bound."""
    _, _, grid = setup
    s = synthetic
    B = s["B"]
    kp = s["kp2"].clone()
    kp = torch.cat([kp, torch.zeros_like(kp[..., :1])], -1)  # confidence 0: only the bound counts
    prob = RefineProblem(grid, s["cam"], RefineOptions(shape_bound_weight=3.0), B, None, kp, None)
    init = s["init"]
    betas = torch.zeros(B, 10, dtype=D)
    betas[:, 0], betas[:, 1], betas[:, 2] = 4.0, -2.5, 1.0
    x = torch.cat([init.pose, betas, init.transl], 1)
    f, H, g, terms = prob.evaluate(x)
    torch.testing.assert_close(f, torch.full((B,), 3.0 * 2.5, dtype=D))
    torch.testing.assert_close(terms["shape_bound"], torch.full((B,), 2.5, dtype=D))
    sl = slice(72, 82)
    grad = 3.0 * torch.tensor([1.0, -1.0] + [0.0] * 8, dtype=D)
    torch.testing.assert_close(2 * g[:, sl], grad.expand(B, 10))  # the model's gradient is 2 g
    Hb = H[:, sl, sl][:, :2, :2]
    step = torch.linalg.solve(Hb, -g[:, sl][:, :2])
    torch.testing.assert_close(betas[:, :2] + step, torch.tensor([[2.0, -2.0]], dtype=D).expand(B, 2))


def test_refine_bad_inputs(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    init, cam = s["init"], s["cam"]
    with pytest.raises(ValueError, match="at least one of"):
        refine(init, camera=cam, grid=grid)
    with pytest.raises(ValueError, match="camera is required"):
        refine(init, keypoints_2d=s["kp2"], grid=grid)
    with pytest.raises(TypeError, match="camera must be"):
        refine(init, keypoints_2d=s["kp2"], camera=object(), grid=grid)
    with pytest.raises(ValueError, match=r"keypoints_2d must be \(4, 24, 2\) or \(4, 24, 3\)"):
        refine(init, keypoints_2d=s["kp2"][:, :10], camera=cam, grid=grid)
    bad = BodyParams(init.betas.clone(), init.body_pose, init.global_orient, init.transl)
    bad.betas[0, 0] = float("nan")
    with pytest.raises(ValueError, match="init_params.betas contains NaN"):
        refine(bad, keypoints_2d=s["kp2"], camera=cam, grid=grid)
    with pytest.raises(ValueError, match="method must be"):
        refine(init, keypoints_2d=s["kp2"], camera=cam, grid=grid, method="adam")
    with pytest.raises(TypeError, match="unexpected argument"):
        refine(init, keypoints_2d=s["kp2"], camera=cam, grid=grid, learning_rate=1.0)
    with pytest.raises(ValueError, match="must sum to 1"):
        refine(init, keypoints_2d=s["kp2"][:, :3], camera=cam, grid=grid, keypoint_matrix=torch.ones(3, 24, dtype=D))
    # Missing keypoints (NaN rows) are fine: confidence 0.
    kp = s["kp2"].clone()
    kp[:, :5] = float("nan")
    res = refine(init, keypoints_2d=kp, camera=cam, grid=grid, max_iters=2)
    assert torch.isfinite(res.loss).all()


# ---------------------------------------------------------------------------------- rotation matrices
def _poses_near_pi(B, seed):
    """(B, 72) axis-angle poses: random axes, angles uniform in [0, π] and, on a few joints, at π or
    within 1e-3..1e-7 of it (on both sides)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(B, 24, 3, generator=g, dtype=D), dim=-1)
    angle = torch.rand(B, 24, 1, generator=g, dtype=D) * torch.pi
    special = torch.tensor([torch.pi, torch.pi - 1e-7, torch.pi + 1e-7, torch.pi - 1e-3, torch.pi + 1e-3], dtype=D)
    for b in range(B):
        angle[b, torch.randperm(24, generator=g)[:special.numel()], 0] = special
    return (axis * angle).reshape(B, 72)


def _rotmat_params(p: BodyParams) -> BodyParams:
    return BodyParams(p.betas, rotmat=smplfast.ops.rodrigues(p.pose.reshape(p.batch_size, 24, 3)), transl=p.transl)


def test_densepose_loss_rotmat_matches_axis_angle(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    B = s["B"]
    init = s["init"]
    wild = BodyParams.from_pose(init.betas, _poses_near_pi(B, 7), init.transl)
    weak = WeakPerspectiveCamera(torch.tensor([[2.0, 0.1, -0.1]], dtype=D).expand(B, 3))
    data = _grid_points(grid, s["pts"].check())
    for aa in (init, wild):
        rm = _rotmat_params(aa)
        assert rm.is_rotmat and not aa.is_rotmat
        torch.testing.assert_close(posed_points(grid, rm, data), posed_points(grid, aa, data), rtol=0, atol=1e-12)
        for cam in (s["cam"], weak):
            for kw in ({}, {"squared": True}, {"reduction": "sum"}):
                torch.testing.assert_close(densepose_loss(rm, s["pts"], cam, grid, **kw),
                                           densepose_loss(aa, s["pts"], cam, grid, **kw), rtol=1e-12, atol=1e-12)
    # The gradient w.r.t. the axis-angle pose is the same through either route (chain rule through
    # Rodrigues), and the gradient w.r.t. the matrices themselves is finite.
    pa = wild.pose.clone().requires_grad_(True)
    densepose_loss(BodyParams.from_pose(wild.betas, pa, wild.transl), s["pts"], s["cam"], grid).sum().backward()
    pb = wild.pose.clone().requires_grad_(True)
    rot = smplfast.ops.rodrigues(pb.reshape(B, 24, 3))
    rot.retain_grad()
    densepose_loss(BodyParams(wild.betas, rotmat=rot, transl=wild.transl), s["pts"], s["cam"], grid).sum().backward()
    torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(rot.grad).all() and float(rot.grad.abs().sum()) > 0
    # to_axis_angle (one-off conversion): same body up to smplx's 1e-8 Rodrigues offset.
    back = _rotmat_params(wild).to_axis_angle()
    assert not back.is_rotmat and float(back.pose.reshape(B, 24, 3).norm(dim=-1).max()) <= torch.pi + 1e-12
    torch.testing.assert_close(densepose_loss(back, s["pts"], s["cam"], grid),
                               densepose_loss(wild, s["pts"], s["cam"], grid), rtol=1e-7, atol=1e-6)
    assert init.to_axis_angle() is init
    # detach / clone keep the representation.
    for q in (rm.detach(), rm.clone()):
        assert q.is_rotmat and q.body_pose is None and torch.equal(q.rotmat, rm.rotmat)


def test_densepose_loss_rotmat_gradcheck(setup):
    """densepose_loss w.r.t. rotation matrices against central differences (float64), with two
    joints rotated by exactly π."""
    _, charts, _ = setup
    grid = UVGrid.from_model(setup[0], resolution=8, dtype=D)
    B, N = 2, 30
    g = torch.Generator().manual_seed(11)
    pose = _poses_near_pi(B, 12)
    pose[0, :3] = torch.tensor([0.0, torch.pi, 0.0])      # global orientation: exactly π about y
    pose[1, 16 * 3:16 * 3 + 3] = torch.tensor([-torch.pi, 0.0, 0.0])
    rot = smplfast.ops.rodrigues(pose.reshape(B, 24, 3)).requires_grad_(True)
    betas = torch.randn(B, 10, generator=g, dtype=D) * 0.5
    transl = torch.tensor([0.0, 0.0, 5.0], dtype=D).expand(B, 3)
    part, uv, _, _ = sample_chart_points(charts, B * N, g)
    pts = IUVPoints(part.view(B, N), uv.view(B, N, 2), torch.randn(B, N, 2, generator=g, dtype=D) * 40 + 256,
                    torch.rand(B, N, generator=g) > 0.2)
    cam = PerspectiveCamera(1000.0, torch.tensor([256.0, 256.0], dtype=D))
    for squared in (False, True):
        def f(r, squared=squared):
            return densepose_loss(BodyParams(betas, rotmat=r, transl=transl), pts, cam, grid, squared=squared)

        (gr,) = torch.autograd.grad(f(rot).sum(), rot)
        assert torch.isfinite(gr).all() and float(gr[0, 0].abs().sum()) > 0 and float(gr[1, 16].abs().sum()) > 0
        # Squared pixel losses are ~1e4: float64 round-off of the central differences is ~1e-6 there.
        assert torch.autograd.gradcheck(f, (rot,), eps=1e-6, atol=1e-5, rtol=1e-6)


def test_body_params_rotmat_bad_inputs(setup, synthetic):
    _, _, grid = setup
    s = synthetic
    p, init, cam = s["pts"], s["init"], s["cam"]
    rm = _rotmat_params(init)
    R = rm.rotmat
    with pytest.raises(TypeError, match="not both"):
        densepose_loss(BodyParams(init.betas, init.body_pose, init.global_orient, init.transl, R), p, cam, grid)
    with pytest.raises(TypeError, match="body_pose and params.global_orient missing"):
        densepose_loss(BodyParams(init.betas), p, cam, grid)
    with pytest.raises(TypeError, match="global_orient missing"):
        densepose_loss(BodyParams(init.betas, body_pose=init.body_pose), p, cam, grid)
    with pytest.raises(ValueError, match=r"params.rotmat must be \(4, 24, 3, 3\)"):
        densepose_loss(BodyParams(init.betas, rotmat=R[:, 1:]), p, cam, grid)
    with pytest.raises(ValueError, match=r"params.rotmat must be \(4, 24, 3, 3\)"):
        densepose_loss(BodyParams(init.betas, rotmat=R.reshape(4, 24, 9)), p, cam, grid)
    with pytest.raises(TypeError, match="params.rotmat is torch.float32"):
        densepose_loss(BodyParams(init.betas, rotmat=R.float()), p, cam, grid)
    with pytest.raises(TypeError, match="rotmat must be a floating point"):
        densepose_loss(BodyParams(init.betas, rotmat=R.long()), p, cam, grid)
    with pytest.raises(TypeError, match="rotmat must be a torch.Tensor"):
        densepose_loss(BodyParams(init.betas, rotmat=R.tolist()), p, cam, grid)
    with pytest.raises(ValueError, match="holds? rotation matrices"):
        _ = rm.pose
    with pytest.raises(ValueError, match=r"pose must be \(\?, 72\)"):
        BodyParams.from_pose(init.betas, init.body_pose)
    # The refinement optimises axis-angle: it says so, and runs on the one-off conversion.
    with pytest.raises(ValueError, match=r"refine works on axis-angle.*to_axis_angle\(\)"):
        refine(rm, keypoints_2d=s["kp2"], camera=cam, grid=grid, max_iters=1)
    a = refine(init, keypoints_2d=s["kp2"], camera=cam, grid=grid, max_iters=2)
    b = refine(rm.to_axis_angle(), keypoints_2d=s["kp2"], camera=cam, grid=grid, max_iters=2)
    # Same starting body (the conversion may pick another axis-angle of the same rotation, so the
    # iterates need not coincide), and the refinement does not make it worse.
    torch.testing.assert_close(b.loss_history[:, 0], a.loss_history[:, 0], rtol=1e-7, atol=1e-9)
    assert bool((b.loss <= b.loss_history[:, 0]).all()) and not b.params.is_rotmat
    # to_axis_angle needs finite rotations.
    nan = R.clone()
    nan[1, 3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="rotmat contains NaN or Inf"):
        BodyParams(init.betas, rotmat=nan).to_axis_angle()
    with pytest.raises(ValueError, match="must hold rotation matrices"):
        BodyParams(init.betas, rotmat=1.1 * R).to_axis_angle()
    with pytest.raises(ValueError, match="negative determinant"):
        BodyParams(init.betas, rotmat=-R).to_axis_angle()


# ------------------------------------------------------------- DensePose normal equations, point by point
def _dense_problem(setup, weak, squared, B=3, N=60, seed=11):
    _, charts, _ = setup
    grid = UVGrid.from_model(setup[0], resolution=8, dtype=D)
    g = torch.Generator().manual_seed(seed)
    part, uv, _, _ = sample_chart_points(charts, B * N, g)
    pts = IUVPoints(part.view(B, N), uv.view(B, N, 2), torch.randn(B, N, 2, generator=g, dtype=D) * 50 + 300,
                    torch.rand(B, N, generator=g) > 0.2).check()
    kp2 = torch.randn(B, 24, 3, generator=g, dtype=D) * 50 + 300
    if weak:
        cam = WeakPerspectiveCamera(torch.tensor([[0.9, 0.1, -0.2]], dtype=D).expand(B, 3).clone())
        c = cam.params
    else:
        rot = torch.linalg.matrix_exp(torch.tensor([[0, 0.1, 0], [-0.1, 0, 0.2], [0, -0.2, 0]], dtype=D))
        cam = PerspectiveCamera(torch.tensor([800.0, 820.0], dtype=D), torch.tensor([400.0, 300.0], dtype=D),
                                rot.expand(B, 3, 3), torch.tensor([0.1, 0.2, 0.1], dtype=D).expand(B, 3))
        c = torch.tensor([0.0, 0.1, 3.0], dtype=D).expand(B, 3)
    fixed = torch.randn(B, 3, generator=g, dtype=D) * 0.1 if weak else None
    prob = RefineProblem(grid, cam, RefineOptions(squared_dp=squared, dp_weight=1.7), B, pts, kp2, None,
                         fixed_transl=fixed)
    x = torch.cat([torch.randn(B, 72, generator=g, dtype=D) * 0.4, torch.randn(B, 10, generator=g, dtype=D), c], 1)
    return prob, x


def _op_args(prob, x, weak):
    """point_normal_equations' positional arguments and camera keywords for a RefineProblem at x."""
    st = prob._state(x)
    d = prob.points
    cam = (dict(fixed_transl=prob.fixed_transl) if weak else
           dict(cam_R=prob.cam_R, cam_t=prob.cam_t, focal=prob.focal, center=prob.center))
    args = (prob.grid.parents, st["A"], st["p"], st["M"], st["dT"], prob._rest_points(st, None), d.shapedirs,
            d.weights, prob.xy, prob.dp_mask, prob.dp_count, x[:, 82:])
    return args, cam


@pytest.mark.parametrize("weak", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_point_normal_equations_match_the_explicit_jacobian(setup, weak, squared):
    """The fused DensePose normal equations against the explicit (B, N, 2, n) Jacobian path, the op's
    own PyTorch reference, and the CUDA kernel's block path run on CPU threads."""
    from dataclasses import replace

    from smplfast import ops
    from smplfast.ops.point_normal_equations import _point_normal_equations_team

    prob, x = _dense_problem(setup, weak, squared)
    fused = prob.evaluate(x)
    prob.opt = replace(prob.opt, fused=False)
    explicit = prob.evaluate(x)
    for a, b in zip(fused[:3], explicit[:3]):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-9)
    torch.testing.assert_close(fused[3]["densepose"], explicit[3]["densepose"], rtol=1e-12, atol=0)
    args, cam = _op_args(prob, x, weak)
    kw = dict(weak=weak, squared=squared, weight=1.7, eps=1e-3, **cam)
    op = ops.point_normal_equations(*args, **kw)
    ref = ops.point_normal_equations_reference(*args, **kw)
    team = _point_normal_equations_team(*args, threads=4, lanes=2, **kw)
    for a, b, t in zip(op, ref, team):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-9)
        torch.testing.assert_close(t, b, rtol=1e-11, atol=1e-9)
    if not weak and not squared:
        torch.library.opcheck(ops.point_normal_equations.__globals__["_pne"],
                              args + tuple(kw[k] for k in ("cam_R", "cam_t", "focal", "center")) + (None, weak, squared,
                                                                                                   1.7, 1e-3),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_refine_fused_matches_explicit(setup, synthetic):
    # LM with Cholesky steps: the same fits. (The default Gauss-Newton loop solves its nearly singular
    # systems by 20 CG steps at a damping of 1e-6, which turns the ~1e-16 rounding differences of H into
    # ~1e-4 differences of the first step, so its trajectories are not comparable this way.)
    _, _, grid = setup
    s = synthetic
    kw = dict(iuv_points=s["pts"], keypoints_2d=s["kp2"], camera=s["cam"], grid=grid, max_iters=8, method="lm",
              linear_solver="cholesky")
    a = refine(s["init"], **kw)
    b = refine(s["init"], fused=False, **kw)
    assert torch.equal(a.iterations, b.iterations)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-7, atol=0)
    torch.testing.assert_close(a.params.body_pose, b.params.body_pose, rtol=0, atol=1e-6)


def test_point_normal_equations_bad_inputs(setup):
    from smplfast import ops

    prob, x = _dense_problem(setup, weak=False, squared=False, B=2, N=10)
    args, cam = _op_args(prob, x, weak=False)
    args = list(args)
    d = prob.points
    with pytest.raises(ValueError, match="cam_R is required"):
        ops.point_normal_equations(*args)
    bad = list(args)
    bad[7] = d.weights[..., :20]
    with pytest.raises(ValueError, match="w must have shape"):
        ops.point_normal_equations(*bad, **cam)
    bad = list(args)
    bad[8] = prob.xy.float()
    with pytest.raises(TypeError, match="xy must be torch.float64"):
        ops.point_normal_equations(*bad, **cam)
    bad = list(args)
    bad[0] = torch.tensor([-1] + list(range(1, 24)))
    with pytest.raises(ValueError, match="parents"):
        ops.point_normal_equations(*bad, **cam)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("weak", [False, True])
def test_point_normal_equations_cuda_matches_cpu(setup, weak):
    from smplfast import ops

    prob, x = _dense_problem(setup, weak, squared=False, B=3, N=300)
    args, cam = _op_args(prob, x, weak)
    cpu = ops.point_normal_equations(*args, weak=weak, **cam)
    gpu = ops.point_normal_equations(*(a.cuda() for a in args), weak=weak, **{k: v.cuda() for k, v in cam.items()})
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-10, atol=1e-8)
