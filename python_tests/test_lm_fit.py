"""The fused LM kernel (smplfast.ops.lm_fit) against the unfused LM it replaces (SMPLify(fused=False)):
the same objective, iterations and fits in float64, every term and layout; its block-parallel (CUDA)
path emulated on CPU threads; bad input."""
import math

import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.fitting import MultiViewSMPLify, SMPLify
from smplfast.ops.lm_fit import _lm_fit_team

from test_smplify import CENTER, center, make_bodies, make_rig, per_view_init, perturb

F64 = torch.float64


@pytest.fixture(scope="module")
def fitter_model():
    return smplfast.SMPL(keypoints="spin_49", create_betas=False, create_global_orient=False, create_body_pose=False,
                         create_transl=False)


def noisy_problem(model, B, seed, dtype=F64):
    """Known bodies, perturbed starts, keypoints with pixel noise and a few missing ones."""
    pose, betas, cam_t, joints, kp = make_bodies(model, B, seed=seed, dtype=dtype, upright=True)
    p0, b0, t0 = perturb(pose, betas, cam_t, seed=seed)
    g = torch.Generator().manual_seed(seed)
    kp = kp.clone()
    kp[..., :2] += 2.0 * torch.randn(kp[..., :2].shape, generator=g, dtype=dtype)
    kp[:, 25:, 2] = torch.rand(B, kp.shape[1] - 25, generator=g, dtype=dtype) + 0.2
    kp[0, 30, 2] = 0.0
    return p0, b0, t0, kp


def assert_same_fits(a, b, rtol=1e-6, atol=1e-7):
    assert torch.equal(a.iterations, b.iterations), (a.iterations, b.iterations)
    assert torch.equal(a.converged, b.converged)
    rel = ((a.loss - b.loss).abs() / b.loss.abs()).max().item()
    assert rel < rtol, rel
    for name in ("pose", "betas", "camera_translation"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=0), name


@pytest.mark.parametrize("mode", ["spin", "single_stage", "smplify4"])
def test_fused_matches_unfused_in_float64(fitter_model, mode):
    p0, b0, t0, kp = noisy_problem(fitter_model, 6, seed=11)
    kw = dict(model=fitter_model, mode=mode, dtype=F64)
    fused = SMPLify(fused=True, **kw).fit(p0, b0, t0, center(6, F64), kp)
    ref = SMPLify(fused=False, **kw).fit(p0, b0, t0, center(6, F64), kp)
    assert fused.iterations.min() < fused.iterations.max() or mode == "smplify4"
    assert_same_fits(fused, ref)


def test_fused_matches_unfused_with_anchor_and_shape_bound(fitter_model):
    p0, b0, t0, kp = noisy_problem(fitter_model, 5, seed=12)
    b0 = 3.0 * b0  # outside the bound, so the IRLS term is active
    kw = dict(model=fitter_model, mode="single_stage", dtype=F64, anchor_weight=3.0, shape_bound_weight=20.0)
    fused = SMPLify(fused=True, **kw).fit(p0, b0, t0, center(5, F64), kp)
    ref = SMPLify(fused=False, **kw).fit(p0, b0, t0, center(5, F64), kp)
    assert_same_fits(fused, ref)


def test_fused_matches_unfused_with_the_cg_solver(fitter_model):
    p0, b0, t0, kp = noisy_problem(fitter_model, 4, seed=13)
    kw = dict(model=fitter_model, dtype=F64, linear_solver="cg", cg_iters=30)
    fused = SMPLify(fused=True, **kw).fit(p0, b0, t0, center(4, F64), kp)
    ref = SMPLify(fused=False, **kw).fit(p0, b0, t0, center(4, F64), kp)
    assert_same_fits(fused, ref, rtol=1e-6, atol=1e-5)  # CG solves inexactly: flat directions differ


@pytest.mark.parametrize("calibrated", [False, True])
def test_fused_matches_unfused_multiview(fitter_model, calibrated):
    pose, betas, joints, R, T, kp = make_rig(fitter_model, 3, seed=31, dtype=F64)
    init, b0, t0 = per_view_init(pose, betas, R, T, seed=31)
    init, b0, t0 = init.to(F64), b0.to(F64), t0.to(F64)
    kp = kp.clone()
    kp[..., :2] += torch.randn(kp[..., :2].shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    c = torch.full((3, 4, 2), CENTER, dtype=F64)
    extra = dict(cam_rot=R, cam_transl=T, init_transl=torch.zeros(3, 3, dtype=F64)) if calibrated else {}
    res = [MultiViewSMPLify(model=fitter_model, calibrated=calibrated, dtype=F64, fused=fused).fit(
        init, b0, None if calibrated else t0, c, kp, **extra) for fused in (True, False)]
    assert_same_fits(res[0], res[1])


def test_float32_fit_is_as_good_as_unfused(fitter_model):
    # float32 rounding makes the two trajectories drift apart: compare where they end, not the path
    p0, b0, t0, kp = noisy_problem(fitter_model, 16, seed=14, dtype=torch.float32)
    fused = SMPLify(model=fitter_model).fit(p0, b0, t0, center(16), kp)
    ref = SMPLify(model=fitter_model, fused=False).fit(p0, b0, t0, center(16), kp)
    assert torch.isfinite(fused.loss).all()
    assert fused.loss.mean() <= 1.001 * ref.loss.mean(), (fused.loss.mean(), ref.loss.mean())


def test_objective_at_the_start_is_the_reference_objective(fitter_model):
    """With zero iterations the kernel returns its objective at x0: SPIN's body loss from
    body_fitting_loss (an independent formula) plus the depth term, every optional term on."""
    p0, b0, t0, kp = noisy_problem(fitter_model, 4, seed=15)
    b0 = 3.0 * b0
    f = SMPLify(model=fitter_model, mode="single_stage", dtype=F64, anchor_weight=2.0, shape_bound_weight=7.0)
    conf = kp[..., 2].clone()
    conf[:, f.ign_joints] = 0
    init = p0 + 0.1
    expected = f._body_objective(p0, b0, t0, init, center(4, F64), kp[..., :2], conf, f.weights)
    expected = expected + f.weights.depth_loss_weight ** 2 * (t0[:, 2] - 0.9 * t0[:, 2]) ** 2
    x0 = torch.cat([p0, b0, t0], 1)
    x, obj, it, conv = ops.lm_fit(f._kp_model, x0, **body_stage_kwargs(f, x0, init, 0.9 * t0, kp, conf, max_iters=0))
    assert torch.equal(x, x0) and (it == 0).all() and not conv.any()
    assert torch.allclose(obj, expected, rtol=1e-12, atol=0), (obj, expected)


def body_stage_kwargs(f, x0, init_pose, init_t, kp, conf, **over):
    """ops.lm_fit's arguments for SMPLify's single-stage body fit, x = [pose, betas, translation]."""
    B = x0.shape[0]
    w = f.weights
    km = f._kp_model
    P, nb = km.num_params, km.num_betas
    kwargs = dict(base=x0[:, None].clone(), cols=torch.arange(P, dtype=torch.int32)[None],
                  cam_rot=torch.eye(3, dtype=x0.dtype).expand(B, 1, 3, 3), cam_transl=x0.new_zeros(B, 1, 3),
                  focal=x0.new_full((B, 1, 2), f.focal_length), center=x0.new_full((B, 1, 2), CENTER),
                  target=kp[:, None, :, :2], weight=conf[:, None], sigma=w.sigma,
                  gmm=tuple(getattr(f.pose_prior, k) for k in ("means", "prec_chol", "precisions", "constants")),
                  pose_w2=w.pose_prior_weight ** 2, angle_w2=w.angle_prior_weight ** 2, body_col=3, shape_col=72,
                  shape_w2=w.shape_prior_weight ** 2, bound_w2=w.shape_bound_weight ** 2, bound=w.shape_bound,
                  anchor_col=0, anchor_target=init_pose, anchor_w2=w.anchor_weight ** 2, anchor_sigma=w.anchor_sigma,
                  depth_col=72 + nb + 2, depth_target=init_t[:, 2], depth_w2=w.depth_loss_weight ** 2)
    kwargs.update(over)
    return kwargs


@pytest.mark.parametrize("threads,lanes", [(4, 2), (3, 1)])
def test_block_path_matches_the_serial_kernel(fitter_model, threads, lanes):
    """The CUDA kernel's work split (entry-parallel JᵀJ, shared reductions, barriers) run by CPU threads."""
    p0, b0, t0, kp = noisy_problem(fitter_model, 3, seed=16)
    f = SMPLify(model=fitter_model, mode="single_stage", dtype=F64, anchor_weight=2.0, shape_bound_weight=5.0)
    conf = kp[..., 2].clone()
    conf[:, f.ign_joints] = 0
    x0 = torch.cat([p0, 3 * b0, t0], 1)
    active = torch.tensor([True, False, True])
    kwargs = body_stage_kwargs(f, x0, p0, t0, kp, conf, max_iters=20, active=active)
    serial = ops.lm_fit(f._kp_model, x0, **kwargs)
    team = _lm_fit_team(f._kp_model, x0, threads, lanes, **kwargs)
    assert torch.equal(serial[2], team[2]) and torch.equal(serial[3], team[3])
    assert torch.allclose(serial[1][active], team[1][active], rtol=1e-10)
    assert torch.allclose(serial[0], team[0], atol=1e-8, rtol=0)
    assert torch.equal(serial[0][1], x0[1]) and math.isnan(serial[1][1]) and serial[2][1] == 0


def test_unfittable_samples_keep_their_start_and_inputs_are_not_mutated(fitter_model):
    p0, b0, t0, kp = noisy_problem(fitter_model, 4, seed=17, dtype=torch.float32)
    kp[1, :, :2] = float("nan")  # no keypoint at all: not fittable
    kp[2, :, 2] = 0.0            # no confidence: not fittable
    copies = [t.clone() for t in (p0, b0, t0, kp)]
    res = SMPLify(model=fitter_model).fit(p0, b0, t0, center(4), kp)
    for a, b in zip(copies, (p0, b0, t0, kp)):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())
    assert torch.isfinite(res.pose).all() and torch.isfinite(res.loss).all()
    assert not res.converged[1] and not res.converged[2]
    assert torch.equal(res.pose[1], p0[1]) and torch.equal(res.betas[2], b0[2])


def test_empty_batch_and_bad_arguments(fitter_model):
    f = SMPLify(model=fitter_model, dtype=F64)
    km = f._kp_model
    p0, b0, t0, kp = noisy_problem(fitter_model, 2, seed=18)
    conf = kp[..., 2]
    x0 = torch.cat([p0, b0, t0], 1)

    def run(x=x0, **over):
        B = x.shape[0]
        return ops.lm_fit(km, x, **body_stage_kwargs(f, x, p0[:B], t0[:B], kp[:B], conf[:B], **over))

    x, obj, it, conv = run(x0[:0], max_iters=5)
    assert x.shape == (0, 85) and obj.shape == (0,) and it.dtype == torch.int64 and conv.dtype == torch.bool
    cols = torch.arange(85, dtype=torch.int32)[None].clone()
    cols[0, 5] = 4
    with pytest.raises(ValueError, match="same x column"):
        run(cols=cols)
    with pytest.raises(ValueError, match="cols must lie"):
        run(cols=torch.full((1, 85), 90, dtype=torch.int32))
    with pytest.raises(ValueError, match="base must have shape"):
        run(base=x0[:, None, :80])
    with pytest.raises(TypeError, match="depth_target must be torch.float64"):
        run(depth_target=t0[:, 2].float())
    with pytest.raises(ValueError, match="linear_solver"):
        run(linear_solver="qr")
    with pytest.raises(ValueError, match="body_col"):
        run(body_col=30)
    with pytest.raises(ValueError, match="sigma"):
        run(sigma=float("nan"))
    nan_x = x0.clone()
    nan_x[1, 7] = float("nan")
    with pytest.raises(ValueError, match="x0 contains NaN"):
        run(nan_x)
    x, obj, it, conv = run(nan_x, active=torch.tensor([True, False]), max_iters=3)  # inactive: kept as given
    assert torch.isnan(x[1, 7]) and torch.isnan(obj[1]) and it[1] == 0 and not conv[1] and torch.isfinite(obj[0])
    with pytest.raises(TypeError, match="fused"):
        SMPLify(model=fitter_model, fused="yes")


def test_opcheck(fitter_model):
    from smplfast.ops.lm_fit import _arguments, _lm_fit
    f = SMPLify(model=fitter_model, dtype=F64)
    p0, b0, t0, kp = noisy_problem(fitter_model, 2, seed=19)
    x0 = torch.cat([p0, b0, t0], 1)
    kwargs = {**body_stage_kwargs(f, x0, p0, t0, kp, kp[..., 2].clone(), max_iters=3),
              **dict(active=None, ftol=1e-6, xtol=1e-8, gtol=1e-9, init_damping=1e-3, max_damping=1e10,
                     linear_solver="cholesky", cg_iters=20, cg_rel_tol=1e-6)}
    args = _arguments(f._kp_model, x0, **kwargs)
    torch.library.opcheck(_lm_fit, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu(fitter_model):
    p0, b0, t0, kp = noisy_problem(fitter_model, 8, seed=20)
    cpu = SMPLify(model=fitter_model, dtype=F64).fit(p0, b0, t0, center(8, F64), kp)
    gpu = SMPLify(model=fitter_model, dtype=F64, device="cuda").fit(p0.cuda(), b0.cuda(), t0.cuda(),
                                                                     center(8, F64).cuda(), kp.cuda())
    assert (cpu.iterations - gpu.iterations.cpu()).abs().max() <= 1  # rounding may move a borderline stop
    assert torch.allclose(cpu.loss, gpu.loss.cpu(), rtol=1e-6)
    assert torch.allclose(cpu.pose, gpu.pose.cpu(), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_kernel_matches_cpu_kernel_and_graph_capture(fitter_model, dtype):
    """The CUDA block path against the CPU kernel on the same problem (every term on), then the same
    call captured in a CUDA graph and replayed: no host synchronisation inside it."""
    p0, b0, t0, kp = noisy_problem(fitter_model, 16, seed=21, dtype=dtype)
    f = SMPLify(model=fitter_model, mode="single_stage", dtype=dtype, anchor_weight=2.0, shape_bound_weight=5.0)
    conf = kp[..., 2].clone()
    conf[:, f.ign_joints] = 0
    x0 = torch.cat([p0, 3 * b0, t0], 1)
    kwargs = body_stage_kwargs(f, x0, p0, t0, kp, conf, max_iters=30)
    cpu = ops.lm_fit(f._kp_model, x0, **kwargs)
    dev = torch.device("cuda")
    km = f._kp_model.to(dev)
    gk = {k: (tuple(t.to(dev) for t in v) if isinstance(v, tuple) else v.to(dev) if torch.is_tensor(v) else v)
          for k, v in kwargs.items()}
    xg = x0.to(dev)
    gpu = ops.lm_fit(km, xg, **gk)
    torch.cuda.synchronize()
    if dtype == F64:  # the same fits, up to the order of the block's sums (a borderline stop may move by one)
        assert (cpu[2] - gpu[2].cpu()).abs().max() <= 1
        assert torch.allclose(cpu[1], gpu[1].cpu(), rtol=1e-6)
        assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-5, rtol=0)
    else:  # float32 trajectories drift apart: compare where they end
        assert torch.isfinite(gpu[1]).all()
        assert gpu[1].mean().item() <= 1.001 * cpu[1].mean().item()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.lm_fit(km, xg, **gk)  # warm-up on the side stream (first-call checks are cached)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.lm_fit(km, xg, **gk)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured[0], gpu[0]) and torch.equal(captured[2], gpu[2])
