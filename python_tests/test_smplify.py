"""SMPLify (single- and multi-view): recovery of known bodies, SPIN equivalence, bad input."""
import math

import pytest
import torch

import smplfast
from smplfast import metrics
from smplfast.body import samplers
from smplfast.fitting import MaxMixturePrior, MultiViewSMPLify, SMPLify

F = 5000.0
CENTER = 112.0


@pytest.fixture(scope="module")
def fitter_model():
    return smplfast.SMPL(keypoints="spin_49", create_betas=False, create_global_orient=False, create_body_pose=False,
                         create_transl=False)


def make_bodies(model, n, seed, dtype=torch.float32, upright=False):
    """Known bodies (pose sampler + default model) seen by random SPIN-style cameras: the pose (B, 72),
    betas, camera translation, 3D keypoints and exact 2D keypoints with confidence 1. ``upright``: the
    sampler's orientations (model frame, y up) turned by pi about x, so people stand upright in the
    y-down image, as in real data."""
    g = torch.Generator().manual_seed(seed)
    pose = samplers.sample_poses(n, seed=seed).to(dtype)
    if upright:
        R = samplers.axis_angle_to_matrix(pose[:, :3].double())
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        pose[:, :3] = samplers.matrix_to_axis_angle(flip @ R).reshape(n, 3).to(dtype)
    betas = samplers.sample_betas(n, num_betas=10, seed=seed).to(dtype) * 0.7
    scale = 0.8 + 0.2 * torch.rand(n, generator=g)
    cam_t = torch.stack([0.2 * torch.randn(n, generator=g), 0.2 * torch.randn(n, generator=g),
                         2 * F / (224 * scale)], dim=1).to(dtype)
    with torch.no_grad():
        joints = model.to(dtype)(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints
    kp2d = joints + cam_t[:, None]
    kp2d = F * kp2d[..., :2] / kp2d[..., 2:] + CENTER
    kp = torch.cat([kp2d, torch.ones_like(kp2d[..., :1])], dim=-1)
    return pose, betas, cam_t, joints, kp


def perturb(pose, betas, cam_t, seed, pose_sigma=0.15, beta_sigma=0.5):
    g = torch.Generator().manual_seed(seed + 1000)
    p = pose + pose_sigma * torch.randn(pose.shape, generator=g, dtype=pose.dtype)
    b = betas + beta_sigma * torch.randn(betas.shape, generator=g, dtype=betas.dtype)
    t = cam_t * (1 + 0.05 * torch.randn(cam_t.shape, generator=g, dtype=cam_t.dtype))
    return p, b, t


def center(B, dtype=torch.float32):
    return torch.full((B, 2), CENTER, dtype=dtype)


def mean_reprojection_px(fitter, res, kp):
    joints = fitter.keypoints(res.pose, res.betas) + res.camera_translation[:, None]
    proj = F * joints[..., :2] / joints[..., 2:] + CENTER
    err = (proj - kp[..., :2]).norm(dim=-1)
    conf = kp[..., 2].clone()
    conf[:, fitter.ign_joints] = 0
    return ((err * (conf > 0)).sum(1) / (conf > 0).sum(1))


@pytest.fixture(scope="module")
def bodies(fitter_model):
    return make_bodies(fitter_model, 8, seed=3)


def test_lm_recovers_noise_free_bodies_better_than_adam(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=3)
    B = pose.shape[0]
    # Noise-free data: the priors at a tenth of SPIN's weights, so the data term decides (at SPIN's
    # weights the pose prior alone moves the optimum ~1 px away from exact keypoints).
    light = dict(pose_prior_weight=0.478, shape_prior_weight=0.5, angle_prior_weight=1.52)
    lm = SMPLify(model=fitter_model, lm_iters=50, **light)
    res = lm.fit(p0, b0, t0, center(B), kp)
    px = mean_reprojection_px(lm, res, kp)
    assert px.mean() < 0.5, px
    adam = SMPLify(model=fitter_model, optimizer="adam", **light)
    res_a = adam.fit(p0, b0, t0, center(B), kp)
    err_lm = metrics.pa_mpjpe(res.joints[:, 25:], joints[:, 25:])
    err_adam = metrics.pa_mpjpe(res_a.joints[:, 25:], joints[:, 25:])
    assert err_lm.mean() < err_adam.mean()
    assert (res.loss <= res_a.loss * 1.0001).all()
    assert res.converged.float().mean() >= 0.75
    for t in res.as_tuple():
        assert torch.isfinite(t).all()


def test_converged_needs_every_stage(fitter_model, bodies):
    """A capped camera stage is not converged, whatever the body stage does; Adam (a fixed number of
    steps) reports convergence only on a plateau of its objective."""
    pose, betas, cam_t, joints, kp = bodies
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=4)
    B = pose.shape[0]
    capped = SMPLify(model=fitter_model, camera_lm_iters=1).fit(p0, b0, t0, center(B), kp)
    full = SMPLify(model=fitter_model).fit(p0, b0, t0, center(B), kp)
    assert not capped.converged.any()  # (the body stage alone converges for most of them)
    assert full.converged.float().mean() >= 0.5
    short = SMPLify(model=fitter_model, optimizer="adam", num_iters=5).fit(p0, b0, t0, center(B), kp)
    assert not short.converged.any()  # too few steps to judge a plateau
    from smplfast.fitting.smplify import _adam_plateaued

    flat = [torch.tensor([10.0, 10.0])] * 11 + [torch.tensor([10.0, 9.0])]
    assert _adam_plateaued(flat, 2, "cpu").tolist() == [True, False]


def test_noise_and_dropped_joints_stay_finite_and_bounded(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    g = torch.Generator().manual_seed(5)
    noisy = kp.clone()
    noisy[..., :2] += 2.0 * torch.randn(noisy[..., :2].shape, generator=g)
    drop = torch.rand(noisy.shape[:2], generator=g) < 0.1
    noisy[..., 2][drop] = 0
    noisy[..., :2][drop] = 1e4 * torch.rand(int(drop.sum()), 2, generator=g)  # garbage where conf = 0
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=5)
    res = SMPLify(model=fitter_model).fit(p0, b0, t0, center(8), noisy)
    for t in res.as_tuple():
        assert torch.isfinite(t).all()
    err = metrics.pa_mpjpe(res.joints[:, 25:], joints[:, 25:])
    assert (err < 0.08).all(), err  # metres


def test_nan_keypoints_are_missing_and_reported(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    kp = kp.clone()
    kp[0, 30] = float("nan")
    kp[1, 2, 0] = float("inf")
    res = SMPLify(model=fitter_model).fit(pose, betas, cam_t, center(8), kp)
    assert res.missing_keypoints.tolist()[:3] == [1, 1, 0]
    assert torch.isfinite(res.pose).all() and torch.isfinite(res.reprojection_loss).all()
    assert kp[0, 30].isnan().all()  # the input is not modified


def test_too_few_visible_joints_returns_initialisation(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    kp = kp.clone()
    kp[2, :, 2] = 0
    kp[2, 40:42, 2] = 1
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=7)
    res = SMPLify(model=fitter_model).fit(p0, b0, t0, center(8), kp)
    assert not res.converged[2]
    assert torch.equal(res.pose[2], p0[2]) and torch.equal(res.betas[2], b0[2])
    assert torch.equal(res.camera_translation[2], t0[2])
    # the other samples are fitted as they would be without it
    ref = SMPLify(model=fitter_model).fit(p0, b0, t0, center(8), bodies[4])
    others = [0, 1, 3, 4, 5, 6, 7]
    assert not torch.equal(res.pose[others], p0[others])
    assert torch.equal(res.converged[others], ref.converged[others])
    torch.testing.assert_close(res.loss[others], ref.loss[others])


def test_spin_call_signature_and_fitting_loss(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    f = SMPLify(model=fitter_model)
    out = f(pose, betas, cam_t, center(8), kp)
    assert len(out) == 6
    vertices, joints_out, pose_out, betas_out, cam_out, reproj = out
    assert vertices.shape == (8, fitter_model.get_num_verts(), 3) and joints_out.shape == (8, 49, 3)
    assert pose_out.shape == (8, 72) and betas_out.shape == (8, 10) and cam_out.shape == (8, 3)
    assert reproj.shape == (8, 49)
    again = f.get_fitting_loss(pose_out, betas_out, cam_out, center(8), kp)
    torch.testing.assert_close(again, reproj, atol=1e-3, rtol=1e-4)
    assert (reproj[:, f.ign_joints] == 0).all()


def test_chunks_and_cg_solver(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=9)
    whole = SMPLify(model=fitter_model).fit(p0, b0, t0, center(8), kp)
    chunked = SMPLify(model=fitter_model, chunk_size=3).fit(p0, b0, t0, center(8), kp)
    # Same problems, same answers (float32 trajectories may part at GMM component switches).
    torch.testing.assert_close(chunked.loss, whole.loss, atol=0.0, rtol=1e-3)
    cg = SMPLify(model=fitter_model, linear_solver="cg", lm_iters=60).fit(p0, b0, t0, center(8), kp)
    assert torch.isfinite(cg.pose).all()
    assert (cg.loss < SMPLify(model=fitter_model, lm_iters=0).fit(p0, b0, t0, center(8), kp).loss).all()


def test_float64_and_single_stage_with_anchor(fitter_model):
    pose, betas, cam_t, joints, kp = make_bodies(fitter_model, 4, seed=11, dtype=torch.float64)
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=11, pose_sigma=0.05)
    f = SMPLify(model=fitter_model, dtype=torch.float64, mode="single_stage", anchor_weight=1.0)
    res = f.fit(p0, b0, t0, center(4, torch.float64), kp)
    assert res.pose.dtype == torch.float64
    assert (mean_reprojection_px(f, res, kp) < 2.0).all()


def test_smplify4_from_mean_pose(fitter_model):
    # upright people in the y-down camera frame (SMPLify's start: orientation (pi, 0, 0), facing the camera)
    pose, betas, cam_t, joints, kp = make_bodies(fitter_model, 8, seed=3, upright=True)
    f = SMPLify(model=fitter_model, mode="smplify4")
    res = f.fit(None, None, None, center(8), kp)
    start = f.keypoints(torch.zeros(8, 72), torch.zeros(8, 10))
    assert torch.isfinite(res.pose).all()
    err = metrics.pa_mpjpe(res.joints[:, 25:], joints[:, 25:])
    err0 = metrics.pa_mpjpe(start[:, 25:], joints[:, 25:])
    assert err.mean() < 0.5 * err0.mean()


@pytest.mark.parametrize("mode", ["spin", "single_stage"])
def test_lm_check_every_gives_the_same_fits(fitter_model, mode):
    # stopped samples stay frozen in the batch until the next check: the same fits (up to the rounding of
    # batched kernels, whose blocking depends on the batch size), fewer host reads
    pose, betas, cam_t, joints, kp = make_bodies(fitter_model, 8, seed=3, dtype=torch.float64)
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=5)
    kp = kp.clone()
    kp[:, 25:, :2] += torch.randn(kp[:, 25:, :2].shape, generator=torch.Generator().manual_seed(5), dtype=kp.dtype)
    results = [SMPLify(model=fitter_model, mode=mode, lm_check_every=k, dtype=torch.float64, fused=False).fit(
        p0, b0, t0, center(8, torch.float64), kp) for k in (1, 3, 1000)]
    iters = results[0].iterations
    assert iters.min() < iters.max()  # samples stop at different iterations, so the checks matter
    for r in results[1:]:
        assert torch.equal(r.iterations, iters) and torch.equal(r.converged, results[0].converged)
        for name in ("pose", "betas", "camera_translation"):
            assert torch.allclose(getattr(r, name), getattr(results[0], name), atol=1e-9, rtol=0), name
    with pytest.raises(ValueError, match="lm_check_every"):
        SMPLify(model=fitter_model, lm_check_every=0)


def test_bad_inputs_raise_clear_errors(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    f = SMPLify(model=fitter_model)
    with pytest.raises(ValueError, match=r"keypoints_2d must be \(B, 49, 3\)"):
        f(pose, betas, cam_t, center(8), kp[:, :40])
    with pytest.raises(ValueError, match=r"init_betas must be \(8, 10\)"):
        f(pose, betas[:, :5], cam_t, center(8), kp)
    with pytest.raises(ValueError, match="NaN"):
        f(pose * float("nan"), betas, cam_t, center(8), kp)
    with pytest.raises(ValueError, match="optimizer"):
        SMPLify(model=fitter_model, optimizer="sgd")
    with pytest.raises(TypeError, match="unexpected argument"):
        SMPLify(model=fitter_model, pose_weight=3)
    if smplfast.cuda_available():
        with pytest.raises(ValueError, match="cuda"):
            f(pose.cuda(), betas, cam_t, center(8), kp)


# ------------------------------------------------------------------------- SPIN equivalence (Adam)
def spin_reference_fit(model, prior: MaxMixturePrior, init_pose, init_betas, init_cam_t, camera_center, keypoints_2d,
                       num_iters, focal_length=F):
    """SPIN's SMPLify procedure and losses written out directly (its losses.py and smplify.py), with
    the GMM term computed from the prior's means, covariances and weights."""
    means = prior.means.double()
    covs = prior.covs.double() if hasattr(prior, "covs") else prior.covars.double()
    weights = prior.weights.double().flatten()
    precisions = torch.linalg.inv(covs)
    sqrdets = torch.sqrt(torch.linalg.det(covs))
    nll_weights = weights / ((2 * math.pi) ** (69 / 2.0) * (sqrdets / sqrdets.min()))

    def gmm(body_pose):
        d = body_pose.double()[:, None] - means
        quad = torch.einsum("bmi,mij,bmj->bm", d, precisions, d)
        return (0.5 * quad - torch.log(nll_weights)).min(dim=1).values.to(body_pose.dtype)

    def gmof(x, s):
        return s ** 2 * x ** 2 / (s ** 2 + x ** 2)

    def project(j, t):
        p = j + t[:, None]
        return p[..., :2] / p[..., 2:] * focal_length + camera_center[:, None]

    joints_2d, joints_conf = keypoints_2d[..., :2], keypoints_2d[..., 2].clone()
    body_pose = init_pose[:, 3:].clone()
    global_orient = init_pose[:, :3].clone().requires_grad_(True)
    betas = init_betas.clone()
    t = init_cam_t.clone().requires_grad_(True)
    opt = torch.optim.Adam([global_orient, t], lr=1e-2, betas=(0.9, 0.999))
    op, gt = [9, 12, 2, 5], [27, 28, 33, 34]
    for _ in range(num_iters):
        j = model(global_orient=global_orient, body_pose=body_pose, betas=betas).joints
        proj = project(j, t)
        e_op = ((joints_2d[:, op] - proj[:, op]) ** 2).sum((1, 2))
        e_gt = ((joints_2d[:, gt] - proj[:, gt]) ** 2).sum((1, 2))
        valid = (joints_conf[:, op].min(-1).values > 0).float()
        loss = (valid * e_op + (1 - valid) * e_gt + 100 ** 2 * (t[:, 2] - init_cam_t[:, 2]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = t.detach()
    joints_conf[:, [1, 9, 12, 27, 28]] = 0
    body_pose.requires_grad_(True)
    betas.requires_grad_(True)
    opt = torch.optim.Adam([body_pose, betas, global_orient], lr=1e-2, betas=(0.9, 0.999))

    def body_loss(output="sum"):
        j = model(global_orient=global_orient, body_pose=body_pose, betas=betas).joints
        reproj = joints_conf ** 2 * gmof(project(j, t) - joints_2d, 100.0).sum(-1)
        if output == "reprojection":
            return reproj
        angle = torch.exp(body_pose[:, [52, 55, 9, 12]] * torch.tensor([1.0, -1.0, -1.0, -1.0])) ** 2
        total = reproj.sum(-1) + 4.78 ** 2 * gmm(body_pose) + 15.2 ** 2 * angle.sum(-1) + 5.0 ** 2 * (betas ** 2).sum(-1)
        return total.sum() if output == "sum" else total

    for _ in range(num_iters):
        loss = body_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (torch.cat([global_orient, body_pose], 1), betas.detach(), t, body_loss("reprojection"),
                body_loss("per_sample"))


def test_adam_reproduces_spin(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=13)
    kp = kp.clone()
    kp[::2, [2, 5], 2] = 0  # half the samples fall back to the ground-truth torso in the camera stage
    f = SMPLify(model=fitter_model, optimizer="adam", num_iters=12)
    res = f.fit(p0, b0, t0, center(8), kp)
    ref_pose, ref_betas, ref_t, ref_reproj, ref_total = spin_reference_fit(fitter_model, f.pose_prior, p0, b0, t0,
                                                                           center(8), kp, num_iters=12)
    torch.testing.assert_close(res.camera_translation, ref_t, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(res.pose, ref_pose, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.betas, ref_betas, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(res.reprojection_loss, ref_reproj, atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(res.loss, ref_total, atol=1e-2, rtol=1e-4)


# --------------------------------------------------------------------------------------- multi-view
def make_rig(model, n, seed, dtype=torch.float32, views=4):
    """n bodies at the origin seen by `views` calibrated cameras on a circle (Human3.6M-like rig)."""
    pose, betas, _, joints, _ = make_bodies(model, n, seed, dtype)
    pose = pose.clone()
    pose[:, :3] = 0.0
    pose[:, 0] = math.pi  # upright in a y-down camera frame, as SPIN's bodies
    with torch.no_grad():
        joints = model.to(dtype)(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints
    rots, trans, kps = [], [], []
    for v in range(views):
        yaw = 2 * math.pi * v / views + 0.3
        aa = torch.tensor([0.0, yaw, 0.0], dtype=dtype)
        R = samplers.axis_angle_to_matrix(aa).expand(n, 3, 3)
        T = torch.tensor([0.0, 0.1, 45.0], dtype=dtype).expand(n, 3)
        X = torch.einsum("bij,bkj->bki", R, joints) + T[:, None]
        kp = torch.cat([F * X[..., :2] / X[..., 2:] + CENTER, torch.ones_like(X[..., :1])], dim=-1)
        rots.append(R)
        trans.append(T)
        kps.append(kp)
    return pose, betas, joints, torch.stack(rots, 1), torch.stack(trans, 1), torch.stack(kps, 1)


def per_view_init(pose, betas, R, T, seed, sigma=0.2):
    """Coarse per-view estimates in each camera's frame, as a regressor would give."""
    g = torch.Generator().manual_seed(seed)
    B, V = R.shape[:2]
    go_world = samplers.axis_angle_to_matrix(pose[:, :3])
    go = samplers.matrix_to_axis_angle(R @ go_world[:, None])
    init = pose[:, None].repeat(1, V, 1)
    init[..., :3] = go
    init[..., 3:] += sigma * torch.randn(init[..., 3:].shape, generator=g)
    b = betas[:, None].repeat(1, V, 1) + 0.5 * torch.randn(B, V, betas.shape[1], generator=g)
    t = T * (1 + 0.05 * torch.randn(T.shape, generator=g))
    return init, b, t


def test_multiview_recovers_body_better_than_single_view(fitter_model):
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 4, seed=21)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=21)
    c = torch.full((4, 4, 2), CENTER)
    mv = MultiViewSMPLify(model=fitter_model, lm_iters=50)
    res = mv.fit(init, b0, t0, c, kp)
    assert res.pose.shape == (4, 4, 72) and res.camera_translation.shape == (4, 4, 3)
    assert torch.isfinite(res.pose).all()
    err_mv = metrics.pa_mpjpe(res.joints[:, 0, 25:], joints[:, 25:])
    assert (err_mv < 0.010).all(), err_mv
    sv = SMPLify(model=fitter_model, lm_iters=50).fit(init[:, 0], b0[:, 0], t0[:, 0], c[:, 0], kp[:, 0])
    err_sv = metrics.pa_mpjpe(sv.joints[:, 25:], joints[:, 25:])
    assert err_mv.mean() < err_sv.mean()
    # The shared body pose is one pose: every view's body pose is the same.
    assert torch.equal(res.pose[:, 0, 3:], res.pose[:, 3, 3:])


def test_multiview_calibrated(fitter_model):
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 3, seed=23)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=23)
    c = torch.full((3, 4, 2), CENTER)
    mv = MultiViewSMPLify(model=fitter_model, calibrated=True, lm_iters=50)
    res = mv.fit(init, b0, None, c, kp, cam_rot=R, cam_transl=T, init_transl=torch.zeros(3, 3))
    err = metrics.pa_mpjpe(res.joints[:, 0, 25:], joints[:, 25:])
    assert (err < 0.010).all(), err
    assert (res.reprojection_loss.mean(-1) < 1.0).all()  # about 1 px² per keypoint


def test_multiview_adam_runs(fitter_model):
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 2, seed=25)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=25)
    c = torch.full((2, 4, 2), CENTER)
    lm = MultiViewSMPLify(model=fitter_model).fit(init, b0, t0, c, kp)
    adam = MultiViewSMPLify(model=fitter_model, optimizer="adam").fit(init, b0, t0, c, kp)
    assert torch.isfinite(adam.pose).all()
    assert (lm.loss <= adam.loss).all()


@pytest.mark.parametrize("calibrated", [False, True])
def test_multiview_normal_equations_match_autograd(fitter_model, calibrated):
    """The assembled gradient Jᵀr of the multi-view problem is half the gradient of its objective
    (central finite differences in float64)."""
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 2, seed=27, dtype=torch.float64)
    mv = MultiViewSMPLify(model=fitter_model, calibrated=calibrated, dtype=torch.float64)
    B, V = kp.shape[:2]
    conf = kp[..., 2].reshape(B * V, -1).clone()
    c = torch.full((B * V, 2), CENTER, dtype=torch.float64)
    calib = (R.reshape(B * V, 3, 3), T.reshape(B * V, 3), torch.full((B * V, 2), F, dtype=torch.float64)) if calibrated else None
    evaluate = mv._evaluator(B, V, kp[..., :2].reshape(B * V, -1, 2), conf, c, calib)
    n = 72 + 10 + 3 if calibrated else 69 + 10 + 6 * V
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(B, n, generator=g, dtype=torch.float64)
    if calibrated:
        x[:, 0] += math.pi
    else:
        x[:, 69 + 10:69 + 10 + 3 * V] = torch.tensor([math.pi, 0, 0], dtype=torch.float64).repeat(V)
        x[:, 69 + 10 + 3 * V:] = T.reshape(B, 3 * V)
    rows = torch.arange(B)
    f, H, gvec = evaluate(x, rows)
    eps = 1e-6
    grad = torch.empty_like(x)
    for i in range(n):
        d = torch.zeros_like(x)
        d[:, i] = eps
        grad[:, i] = (evaluate(x + d, rows, with_jacobian=False)[0] - evaluate(x - d, rows, with_jacobian=False)[0]) / (2 * eps)
    torch.testing.assert_close(2 * gvec, grad, atol=1e-3, rtol=1e-5)
    assert torch.allclose(H, H.transpose(1, 2))


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize("V", [2, 3, 4])
def test_multiview_returns_a_fresh_forward_of_its_final_parameters(fitter_model, calibrated, V):
    """Vertices, joints and reprojection losses belong to the returned parameters (MV-SPIN's fitter
    returned those of its initialisation), for any number of views and an odd batch."""
    from smplfast.body.samplers import axis_angle_to_matrix as aa2R

    B = 3
    pose, betas, joints, R, T, kp = make_rig(fitter_model, B, seed=31)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=31)
    init, b0, t0, R, T, kp = init[:, :V], b0[:, :V], t0[:, :V], R[:, :V], T[:, :V], kp[:, :V]
    c = torch.full((B, V, 2), CENTER)
    mv = MultiViewSMPLify(model=fitter_model, calibrated=calibrated, lm_iters=10)
    calib = dict(cam_rot=R, cam_transl=T) if calibrated else {}
    res = mv.fit(init, b0, None if calibrated else t0, c, kp, init_transl=torch.zeros(B, 3) if calibrated else None,
                 **calib)
    assert res.pose.shape == (B, V, 72) and res.betas.shape == (B, 10) and res.reprojection_loss.shape == (B, V, 49)
    p = res.pose.reshape(B * V, 72)
    out = fitter_model(global_orient=p[:, :3], body_pose=p[:, 3:], betas=res.betas.repeat_interleave(V, 0))
    torch.testing.assert_close(res.vertices.reshape(B * V, -1, 3), out.vertices)
    torch.testing.assert_close(res.joints.reshape(B * V, -1, 3), out.joints)
    again = mv.reprojection_loss(res.pose, res.betas, res.camera_translation, c, kp, **calib)
    torch.testing.assert_close(again, res.reprojection_loss)
    # The fit moved away from its initialisation (so the check above can tell the two apart).
    assert not torch.allclose(res.pose[..., 3:], init[..., 3:])
    # The shared body starts at the per-joint rotation mean of the views, not the mean of axis-angles:
    # views whose body poses sit at +-(pi - e) about one axis average to a rotation near pi, not to 0.
    mv0 = MultiViewSMPLify(model=fitter_model, lm_iters=0)
    near_pi = torch.zeros(1, 2, 72)
    near_pi[0, 0, 3] = math.pi - 0.05
    near_pi[0, 1, 3] = -(math.pi - 0.05)
    body0 = mv0.fit(near_pi, torch.zeros(1, 2, 10), torch.tensor([[[0.0, 0.0, 10.0]] * 2]), torch.full((1, 2, 2), CENTER),
                    torch.zeros(1, 2, 49, 3)).pose[0, 0, 3:6]
    assert torch.linalg.norm(aa2R(body0) - aa2R(near_pi[0, 0, 3:6])) < 0.2, body0


def test_multiview_calibrated_initial_translation_accounts_for_the_root_joint(fitter_model):
    """Per-view body translations of a body at world translation 0 give back 0: SMPL rotates about
    the root joint J0, so t_v = Rc J0 + Tc - J0, not Rc · 0 + Tc."""
    B = 2
    pose, betas, joints, R, T, kp = make_rig(fitter_model, B, seed=33)
    V = R.shape[1]
    mv = MultiViewSMPLify(model=fitter_model, calibrated=True, lm_iters=0)
    J0 = mv._root_joint(betas)
    t_v = (R @ J0[:, None, :, None]).squeeze(-1) + T - J0[:, None]
    init = pose[:, None].repeat(1, V, 1)
    init[..., :3] = samplers.matrix_to_axis_angle(R @ samplers.axis_angle_to_matrix(pose[:, :3])[:, None])
    res = mv.fit(init, betas[:, None].repeat(1, V, 1), t_v, torch.full((B, V, 2), CENTER), kp, cam_rot=R, cam_transl=T)
    torch.testing.assert_close(res.world_transl, torch.zeros(B, 3), atol=1e-4, rtol=0)
    # camera frame in, camera frame out: the per-view translations and orientations come back
    torch.testing.assert_close(res.camera_translation, t_v, atol=1e-4, rtol=0)
    torch.testing.assert_close(samplers.axis_angle_to_matrix(res.pose[..., :3]), samplers.axis_angle_to_matrix(init[..., :3]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("frame", ["world", "camera"])
def test_multiview_calibrated_one_frame_in_the_same_frame_out(fitter_model, frame):
    """From the ground truth given in either frame, a calibrated fit stays at the ground truth and
    returns it in that frame; the two frames give the same body."""
    B = 2
    pose, betas, joints, R, T, kp = make_rig(fitter_model, B, seed=35)
    V = R.shape[1]
    J0 = MultiViewSMPLify(model=fitter_model, calibrated=True)._root_joint(betas)
    world = pose[:, None].repeat(1, V, 1)
    cam = world.clone()
    cam[..., :3] = samplers.matrix_to_axis_angle(R @ samplers.axis_angle_to_matrix(pose[:, :3])[:, None])
    t_cam = (R @ J0[:, None, :, None]).squeeze(-1) + T - J0[:, None]  # the world translation is 0
    init, t0 = (world, torch.zeros(B, V, 3)) if frame == "world" else (cam, t_cam)
    mv = MultiViewSMPLify(model=fitter_model, calibrated=True, lm_iters=10)
    res = mv.fit(init, betas[:, None].repeat(1, V, 1), t0, torch.full((B, V, 2), CENTER), kp, cam_rot=R, cam_transl=T,
                 frame=frame)
    aa2R = samplers.axis_angle_to_matrix
    # The fitted body stays at the ground truth (the priors move it by millimetres; the old behaviour read a
    # world start as camera-frame orientations and ended ~80 mm away).
    with torch.no_grad():
        fitted = fitter_model(global_orient=res.world_orient, body_pose=res.pose[:, 0, 3:], betas=res.betas,
                              joints_only=True).joints + res.world_transl[:, None]
    assert float((fitted - joints).norm(dim=-1).mean()) < 0.01
    # ... and comes back in the frame it went in
    Rw = aa2R(res.world_orient)
    if frame == "world":
        assert (res.pose[:, 1:] == res.pose[:, :1]).all() and (res.camera_translation[:, 1:] == res.camera_translation[:, :1]).all()
        torch.testing.assert_close(aa2R(res.pose[:, 0, :3]), Rw, atol=1e-5, rtol=0)
        torch.testing.assert_close(res.camera_translation[:, 0], res.world_transl, atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(aa2R(res.pose[..., :3]), R @ Rw[:, None], atol=1e-4, rtol=0)
        J0f = mv._root_joint(res.betas)  # the fitted shape's root joint
        t_want = (R @ (J0f + res.world_transl)[:, None, :, None]).squeeze(-1) + T - J0f[:, None]
        torch.testing.assert_close(res.camera_translation, t_want, atol=1e-4, rtol=0)
    torch.testing.assert_close(res.world_transl, torch.zeros(B, 3), atol=0.02, rtol=0)
    assert float(res.reprojection_loss.mean()) < 1.0  # px², GMoF (the priors keep a little)
    # the reprojection term reads the result in its own frame
    again = mv.reprojection_loss(res.pose, res.betas, res.camera_translation, torch.full((B, V, 2), CENTER), kp,
                                 cam_rot=R, cam_transl=T, frame=frame)
    torch.testing.assert_close(again, res.reprojection_loss, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="frame must be"):
        mv.fit(init, betas[:, None].repeat(1, V, 1), t0, torch.full((B, V, 2), CENTER), kp, cam_rot=R, cam_transl=T,
               frame="rig")


def test_out_of_range_inputs_are_rejected_and_results_stay_finite(fitter_model, bodies):
    pose, betas, cam_t, joints, kp = bodies
    B = pose.shape[0]
    f = SMPLify(model=fitter_model, lm_iters=3, camera_lm_iters=2)
    with pytest.raises(ValueError, match=r"init_pose must satisfy \|value\| < 30 rad"):
        f.fit(torch.full_like(pose, 1e20), betas, cam_t, center(B), kp)
    big = kp.clone()
    big[0, 3, 0] = 1e20
    with pytest.raises(ValueError, match="keypoints_2d coordinates"):
        f.fit(pose, betas, cam_t, center(B), big)
    big = kp.clone()
    big[0, 3, 2] = 1e20
    with pytest.raises(ValueError, match=r"confidences must be in \[0, 1000\]"):
        f.fit(pose, betas, cam_t, center(B), big)
    behind = cam_t.clone()
    behind[1, 2] = -3.0
    with pytest.raises(ValueError, match=r"init_cam_t .*depth t_z > 0"):
        f.fit(pose, betas, behind, center(B), kp)
    for focal in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="focal_length must be finite and > 0"):
            SMPLify(model=fitter_model, focal_length=focal)
    # Large but accepted inputs (a 25 rad pose, 1e5 px keypoints with confidence 1e3) give finite results.
    wild = kp.clone()
    wild[:, :, :2] *= 400.0
    wild[:, :, 2] = 1e3
    res = f.fit((pose + 25.0).clamp(max=29.0), betas, cam_t, center(B), wild)
    for name in ("vertices", "joints", "pose", "betas", "camera_translation", "reprojection_loss", "loss"):
        assert torch.isfinite(getattr(res, name)).all(), name


def test_multiview_rejects_invalid_cameras_and_handles_empty_batches(fitter_model):
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 2, seed=27)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=27)
    c = torch.full((2, 4, 2), CENTER)
    cal = MultiViewSMPLify(model=fitter_model, calibrated=True, lm_iters=2)
    with pytest.raises(ValueError, match="init_transl contains NaN"):
        cal.fit(init, b0, None, c, kp, cam_rot=R, cam_transl=T, init_transl=torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="cam_rot must be rotation matrices"):
        cal.fit(init, b0, None, c, kp, cam_rot=torch.zeros_like(R), cam_transl=T, init_transl=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"focal_length must be > 0"):
        cal.fit(init, b0, None, c, kp, cam_rot=R, cam_transl=T, init_transl=torch.zeros(2, 3),
                focal_length=torch.zeros(2, 4, 2))
    unc = MultiViewSMPLify(model=fitter_model, lm_iters=2, camera_lm_iters=1)
    with pytest.raises(ValueError, match=r"init_cam_t .*depth t_z > 0"):
        unc.fit(init, b0, -t0, c, kp)
    with pytest.raises(ValueError, match=r"init_pose must satisfy"):
        unc.fit(init + 1e20, b0, t0, c, kp)
    empty = unc.fit(init[:0], b0[:0], t0[:0], c[:0], kp[:0])
    assert empty.pose.shape == (0, 4, 72) and empty.betas.shape == (0, 10) and empty.converged.shape == (0,)
    empty = cal.fit(init[:0], b0[:0], None, c[:0], kp[:0], cam_rot=R[:0], cam_transl=T[:0], init_transl=torch.zeros(0, 3))
    assert empty.camera_translation.shape == (0, 4, 3)
    res = cal.fit(init, b0, None, c, kp, cam_rot=R, cam_transl=T, init_transl=torch.zeros(2, 3))
    assert torch.isfinite(res.vertices).all() and torch.isfinite(res.loss).all()
