"""smplfast.ops.project_keypoints (projected keypoints, robust residuals, analytic Jacobian) against
its pure-PyTorch reference (autograd Jacobian), finite differences and the SMPL layer."""
import math

import numpy as np
import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.fitting import KeypointModel

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
F64 = dict(atol=1e-9, rtol=1e-10)


# ------------------------------------------------------------------------------------- models
def _random_smpl(num_joints, num_vertices, seed, extra_rows):
    data = smplfast.body.random_model(num_vertices=num_vertices, seed=seed, num_joints=num_joints)
    rng = np.random.default_rng(seed)
    # Extra joints as random sparse convex rows over the mesh, so the model has support vertices.
    reg = np.zeros((extra_rows, num_vertices))
    for e in range(extra_rows):
        cols = rng.choice(num_vertices, int(rng.integers(1, 8)), replace=False)
        w = rng.random(cols.size) + 0.1
        reg[e, cols] = w / w.sum()
    return smplfast.SMPL(data_struct=data, keypoints=None, vertex_ids=None, extra_joint_regressor=reg,
                         dtype=torch.float64)


@pytest.fixture(scope="module")
def default_smpl():
    return smplfast.SMPL(keypoints="spin_49", dtype=torch.float64)


@pytest.fixture(scope="module")
def models(default_smpl):
    """name -> float64 KeypointModel: the bundled model with SPIN's 49 keypoints (no pose blend
    shapes), a random model with dense pose blend shapes and extra regressor rows, and a random
    64-joint model (the largest tree the kernels take)."""
    out = {
        "default_spin49": KeypointModel.from_smpl(default_smpl),
        "random_pose_blend": KeypointModel.from_smpl(_random_smpl(24, 300, 1, 7)),
        "random_64_joints": KeypointModel.from_smpl(_random_smpl(64, 400, 2, 6)),
    }
    assert not out["default_spin49"].has_pose_blend
    assert out["random_pose_blend"].has_pose_blend and out["random_pose_blend"].num_support > 0
    assert out["random_pose_blend"].vertex_posedirs.abs().sum() > 0
    return out


def make_inputs(model, B, seed=0, dtype=torch.float64, device="cpu", special=True, behind_camera=False):
    """Random states with calibrated (non-identity) cameras. With `special`, sample 0 has the zero
    pose and sample 1 near-pi, beyond-pi and tiny rotations; with `behind_camera` the last sample's
    body is behind its camera (clamped depth)."""
    g = torch.Generator().manual_seed(seed)
    J, nb, Nk = model.num_joints, model.num_betas, model.num_keypoints
    f64 = torch.float64
    pose = 0.4 * torch.randn(B, J, 3, generator=g, dtype=f64)
    if special and B >= 2:
        pose[0] = 0
        pose[1, 0] = torch.tensor([math.pi - 1e-6, 0.0, 0.0])
        pose[1, 1] = torch.tensor([0.0, math.pi, 0.0])
        pose[1, 2] = torch.tensor([-2.5, 1.5, 2.0])
        pose[1, 3] = torch.tensor([1e-9, 0.0, 0.0])
        pose[1, 5] = torch.tensor([1e-6, -2e-6, 3e-7])
    betas = torch.randn(B, nb, generator=g, dtype=f64)
    transl = 0.2 * torch.randn(B, 3, generator=g, dtype=f64)
    cam_rot = ops.rodrigues_reference(0.3 * torch.randn(B, 3, generator=g, dtype=f64))
    cam_transl = torch.tensor([0.0, 0.2, 4.0], dtype=f64) + 0.2 * torch.randn(B, 3, generator=g, dtype=f64)
    if behind_camera:
        cam_transl[-1, 2] = -6.0
    focal = torch.tensor([1000.0, 1100.0], dtype=f64) + 50 * torch.rand(B, 2, generator=g, dtype=f64)
    center = torch.tensor([112.0, 120.0], dtype=f64) + torch.randn(B, 2, generator=g, dtype=f64)
    target = center[:, None] + 150 * torch.randn(B, Nk, 2, generator=g, dtype=f64)
    weight = torch.rand(B, Nk, generator=g, dtype=f64)
    weight[:, ::7] = 0  # missing detections
    out = (pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight)
    return tuple(t.to(dtype=dtype, device=device) for t in out)


def run(model, inputs, sigma, device="cpu", dtype=torch.float64, **kw):
    return ops.project_keypoints(model.to(device=device, dtype=dtype), *inputs, sigma, **kw)


# ------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sigma", [100.0, 0.0])
@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend", "random_64_joints"])
def test_matches_reference_float64(models, name, sigma, device):
    model = models[name]
    inputs = make_inputs(model, 5, seed=3, behind_camera=True)
    ref = ops.project_keypoints_reference(model, *inputs, sigma)
    out = run(model, tuple(t.to(device) for t in inputs), sigma, device)
    P = model.num_params
    B, Nk = 5, model.num_keypoints
    shapes = [(B, Nk, 2), (B, Nk, 2, P), (B, Nk, 2), (B, Nk, 3)]
    for got, want, shape, what in zip(out, ref, shapes, ["residual", "jacobian", "points2d", "keypoints3d"]):
        assert got.shape == shape, what
        assert got.dtype == torch.float64 and got.device.type == device, what
        torch.testing.assert_close(got.cpu(), want, **F64, msg=lambda m: f"{what}: {m}")
    # The clamped sample has no depth derivative, and zero-weight keypoints have zero rows.
    assert out[1].abs().sum() > 0
    assert torch.all(out[1][:, ::7] == 0)


@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend"])
def test_residual_is_spin_robust_loss(models, name):
    """sum(residual^2) = sum(weight^2 gmof(e, sigma)) with SPIN's gmof(e, sigma) = sigma^2 e^2 / (sigma^2 + e^2)."""
    model = models[name]
    inputs = make_inputs(model, 3, seed=4)
    sigma = 100.0
    res, _, p2d, _ = run(model, inputs, sigma, compute_jacobian=False)
    e2 = (p2d - inputs[7]) ** 2
    gmof = sigma**2 * e2 / (sigma**2 + e2)
    torch.testing.assert_close((res**2).sum(), (inputs[8][..., None] ** 2 * gmof).sum(), rtol=1e-12, atol=0)
    res0, _, p2d0, _ = run(model, inputs, 0.0, compute_jacobian=False)
    torch.testing.assert_close(res0, inputs[8][..., None] * (p2d0 - inputs[7]), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend"])
def test_keypoints_match_smpl_layer(models, default_smpl, name):
    model = models[name]
    smpl = default_smpl if name == "default_spin49" else _random_smpl(24, 300, 1, 7)
    pose, betas, transl, *rest = make_inputs(model, 4, seed=5)
    _, _, _, kp3d = run(model, (pose, betas, transl, *rest), 100.0, compute_jacobian=False)
    joints = smpl(betas=betas, global_orient=pose[:, 0], body_pose=pose[:, 1:].reshape(4, -1),
                  transl=torch.zeros_like(transl)).joints
    assert joints.shape == kp3d.shape
    torch.testing.assert_close(kp3d - transl[:, None], joints, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend", "random_64_joints"])
def test_jacobian_matches_finite_differences(models, name):
    model = models[name]
    inputs = make_inputs(model, 2, seed=6, special=False)
    sigma = 50.0
    _, jac, _, _ = run(model, inputs, sigma)
    J, nb = model.num_joints, model.num_betas
    pose, betas, transl = inputs[:3]
    h = 1e-6
    # Root, a mid-chain and the last joint's pose, two betas, one translation.
    for col in [0, 4, 3 * 9 + 2, 3 * (J - 1) + 1, 3 * J, 3 * J + nb - 1, 3 * J + nb + 2]:
        diffs = []
        for step in (h, -h):
            params = torch.cat([pose.reshape(2, -1), betas, transl], dim=1).clone()
            params[:, col] += step
            p, b, t = params[:, :3 * J].reshape(2, J, 3), params[:, 3 * J:3 * J + nb], params[:, 3 * J + nb:]
            diffs.append(run(model, (p, b, t, *inputs[3:]), sigma, compute_jacobian=False)[0])
        fd = (diffs[0] - diffs[1]) / (2 * h)
        torch.testing.assert_close(jac[..., col], fd, atol=1e-5 * (1 + fd.abs().max().item()), rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend"])
def test_float32_close_to_float64(models, name, device):
    model = models[name]
    inputs = make_inputs(model, 6, seed=7)
    out64 = run(model, inputs, 100.0)
    out32 = run(model, tuple(t.float().to(device) for t in inputs), 100.0, device, torch.float32)
    for a, b in zip(out32, out64):
        assert a.dtype == torch.float32
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double().cpu(), b, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_without_jacobian_same_outputs(models, device):
    model = models["random_pose_blend"]
    inputs = tuple(t.to(device) for t in make_inputs(model, 4, seed=8))
    full = run(model, inputs, 100.0, device)
    light = run(model, inputs, 100.0, device, compute_jacobian=False)
    assert light[1].shape == (4, model.num_keypoints, 2, 0)
    for i in (0, 2, 3):
        torch.testing.assert_close(light[i], full[i], rtol=0, atol=0)
    ref = ops.project_keypoints_reference(model, *[t.cpu() for t in inputs], 100.0, compute_jacobian=False)
    assert ref[1].shape == (4, model.num_keypoints, 2, 0)


def test_multi_view_same_body(models):
    """One body seen by several calibrated cameras: each view's rows equal a single-view call's."""
    model = models["default_spin49"]
    inputs = make_inputs(model, 4, seed=9, special=False)
    body = [t[:1].expand(4, *t.shape[1:]).contiguous() for t in inputs[:3]]
    multi = run(model, (*body, *inputs[3:]), 100.0)
    for v in range(4):
        single = run(model, tuple(t[v:v + 1] for t in (*body, *inputs[3:])), 100.0)
        for a, b in zip(multi, single):
            torch.testing.assert_close(a[v:v + 1], b, rtol=0, atol=0)


def test_noncontiguous_inputs(models):
    model = models["default_spin49"]
    inputs = make_inputs(model, 3, seed=10)
    pose = inputs[0].transpose(1, 2).contiguous().transpose(1, 2)
    target = inputs[7].transpose(0, 1).contiguous().transpose(0, 1)
    assert not (pose.is_contiguous() or target.is_contiguous())
    out = run(model, (pose, *inputs[1:7], target, inputs[8]), 100.0)
    ref = run(model, inputs, 100.0)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(models, device):
    model = models["default_spin49"]
    inputs = tuple(t[:0].to(device) for t in make_inputs(model, 2))
    Nk, P = model.num_keypoints, model.num_params
    for fn in (ops.project_keypoints, ops.project_keypoints_reference):
        res, jac, p2d, kp3d = fn(model.to(device=device), *inputs, 100.0)
        assert res.shape == (0, Nk, 2) and jac.shape == (0, Nk, 2, P)
        assert p2d.shape == (0, Nk, 2) and kp3d.shape == (0, Nk, 3)


@pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA build and a GPU")
@pytest.mark.parametrize("name", ["default_spin49", "random_pose_blend", "random_64_joints"])
def test_cuda_matches_cpu(models, name):
    model = models[name]
    inputs = make_inputs(model, 130, seed=11, behind_camera=True)
    cpu = run(model, inputs, 100.0)
    gpu = run(model, tuple(t.cuda() for t in inputs), 100.0, "cuda")
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- torch integration
def _op_args(model, inputs, sigma=100.0, jac=True):
    m = model
    return (m.parents, m.joint_template, m.joint_shapedirs, m.vertex_template, m.vertex_shapedirs, m.vertex_posedirs,
            m.lbs_idx, m.lbs_weights, m.regressor_ptr, m.regressor_col, m.regressor_val, m.has_pose_blend,
            *inputs, sigma, jac)


def test_opcheck(models):
    for name in ("default_spin49", "random_pose_blend"):
        model = models[name]
        inputs = make_inputs(model, 3, seed=12)
        for jac in (True, False):
            torch.library.opcheck(torch.ops.smplfast.project_keypoints.default, _op_args(model, inputs, 100.0, jac))


def test_compile_fullgraph(models):
    model = models["default_spin49"].to(dtype=torch.float32)
    inputs = make_inputs(model, 2, seed=13, dtype=torch.float32)

    def step(pose, betas, transl, *rest):
        res, jac, _, _ = ops.project_keypoints(model, pose, betas, transl, *rest, 100.0)
        # One Gauss-Newton right-hand side: J^T r per sample.
        return torch.einsum("bkcp,bkc->bp", jac, res)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), step(*inputs))


def test_backward_raises_clear_error(models):
    model = models["default_spin49"]
    pose, *rest = make_inputs(model, 2)
    pose.requires_grad_(True)
    res = ops.project_keypoints(model, pose, *rest, 100.0)[0]
    with pytest.raises(RuntimeError, match="not differentiable.*jacobian output"):
        res.sum().backward()


# ----------------------------------------------------------------------------------- bad inputs
def _replace(model, **fields):
    kw = {f: getattr(model, f) for f in ("parents", "joint_template", "joint_shapedirs", "vertex_template",
                                         "vertex_shapedirs", "vertex_posedirs", "lbs_idx", "lbs_weights",
                                         "regressor_ptr", "regressor_col", "regressor_val", "has_pose_blend")}
    kw.update(fields)
    return KeypointModel(**kw)


def test_bad_inputs(models):
    model = models["default_spin49"]
    inputs = list(make_inputs(model, 2))
    pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight = inputs

    def call(m=model, sigma=100.0, **over):
        args = dict(pose=pose, betas=betas, transl=transl, cam_rot=cam_rot, cam_transl=cam_transl, focal=focal,
                    center=center, target=target, weight=weight)
        args.update(over)
        return ops.project_keypoints(m, sigma=sigma, **args)

    with pytest.raises(ValueError, match=r"pose must have shape \(\*, \*, 3\); got \(2, 24, 4\)"):
        call(pose=torch.zeros(2, 24, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(B, 24, 3\) for a model with 24 joints; got \(2, 23, 3\)"):
        call(pose=pose[:, :23])
    with pytest.raises(ValueError, match=r"betas must have shape \(2, 10\); got \(2, 11\)"):
        call(betas=torch.zeros(2, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"transl must have shape \(2, 3\); got \(3, 3\)"):
        call(transl=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"cam_rot must have shape \(2, 3, 3\); got \(2, 9\)"):
        call(cam_rot=cam_rot.reshape(2, 9))
    with pytest.raises(ValueError, match="target has 48 keypoints but the model has 49"):
        call(target=target[:, :48])
    with pytest.raises(ValueError, match=r"weight must have shape \(2, 49\); got \(2, 49, 1\)"):
        call(weight=weight[..., None])
    with pytest.raises(TypeError, match="pose must be float32 or float64, got torch.int64"):
        call(pose=pose.long())
    with pytest.raises(TypeError, match="focal has dtype torch.float32 but pose has torch.float64"):
        call(focal=focal.float())
    with pytest.raises(ValueError, match="center is on meta but pose is on cpu"):
        call(center=center.to("meta"))
    with pytest.raises(TypeError, match=r"model.joint_template must be torch.float32 on cpu.*model.to\("):
        call(**{k: v.float() for k, v in zip(["pose", "betas", "transl", "cam_rot", "cam_transl", "focal", "center",
                                                "target", "weight"], inputs)})
    with pytest.raises(TypeError, match="model.regressor_col must be torch.int32"):
        call(m=_replace(model, regressor_col=model.regressor_col.long()))
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
            call(sigma=bad)
    with pytest.raises(TypeError, match="model must be a smplfast.fitting.KeypointModel"):
        ops.project_keypoints(object(), *inputs, 100.0)

    col = model.regressor_col.clone()
    col[3] = model.num_joints + model.num_support
    with pytest.raises(ValueError, match=r"regressor_col must lie in \[0, J \+ S\) = \[0, 113\)"):
        call(m=_replace(model, regressor_col=col))
    idx = model.lbs_idx.clone()
    idx[0, 0] = 24
    with pytest.raises(ValueError, match=r"lbs_idx must lie in \[0, 24\)"):
        call(m=_replace(model, lbs_idx=idx))
    par = model.parents.clone()
    par[5] = 7
    with pytest.raises(ValueError, match="joint 5 has parent 7"):
        call(m=_replace(model, parents=par))
    ptr = model.regressor_ptr.clone()
    ptr[2] = 0
    with pytest.raises(ValueError, match="regressor_ptr must rise from 0 to nnz"):
        call(m=_replace(model, regressor_ptr=ptr))
    with pytest.raises(ValueError, match=r"model.vertex_posedirs must have shape \(89, 3, 207\)"):
        call(m=_replace(model, vertex_posedirs=model.vertex_posedirs[..., :9]))


def test_too_many_joints():
    J = 65
    f = torch.float64
    big = KeypointModel(
        parents=torch.arange(-1, J - 1), joint_template=torch.zeros(J, 3, dtype=f),
        joint_shapedirs=torch.zeros(J, 3, 1, dtype=f), vertex_template=torch.zeros(0, 3, dtype=f),
        vertex_shapedirs=torch.zeros(0, 3, 1, dtype=f), vertex_posedirs=torch.zeros(0, 3, 9 * (J - 1), dtype=f),
        lbs_idx=torch.zeros(0, 1, dtype=torch.int32), lbs_weights=torch.zeros(0, 1, dtype=f),
        regressor_ptr=torch.tensor([0, 1], dtype=torch.int32), regressor_col=torch.tensor([3], dtype=torch.int32),
        regressor_val=torch.ones(1, dtype=f))
    inputs = make_inputs(big, 1)
    with pytest.raises(ValueError, match="between 1 and 64 joints; got 65"):
        ops.project_keypoints(big, *inputs, 1.0)
