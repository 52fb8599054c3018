"""CPU-side checks of the CUDA hardening work: torch.compile with the inductor backend on the main ops
(forward and backward), torch.library.opcheck on every registered backward op, the deterministic flag
reaching the skinning backward, and the clear error for an NVIDIA driver older than the statically
linked CUDA runtime. The CUDA kernels themselves (device guard, deterministic reduction, grid limits)
are exercised by the op test files' CUDA variants when a GPU is present."""
import functools
import types

import pytest
import torch

import smplfast
from smplfast import _backend, ops

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])


@functools.lru_cache(maxsize=None)
def _inductor_problem():
    """None when inductor can compile (and run) a small function on this machine, else why not."""
    try:
        torch._dynamo.reset()
        fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, backend="inductor", fullgraph=True)
        x = torch.randn(8)
        torch.testing.assert_close(fn(x), torch.sin(x) * 2 + 1)
        return None
    except Exception as exc:  # no C++ compiler, no Triton for the device, ...
        return f"inductor cannot compile here: {type(exc).__name__}: {exc}"


needs_inductor = pytest.mark.skipif("_inductor_problem() is not None", reason="inductor unavailable")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _lbs_inputs(B, V, J=24, K=4, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.zeros(V, J, dtype=torch.float64)
    for v in range(V):
        cols = torch.randperm(J, generator=gen)[: 1 + v % K]
        W[v, cols] = torch.rand(len(cols), generator=gen, dtype=torch.float64) + 0.05
    W /= W.sum(dim=1, keepdim=True)
    idx, w = ops.dense_to_sparse_weights(W)
    A = torch.randn(B, J, 3, 4, generator=gen, dtype=torch.float64)
    vp = torch.randn(B, V, 3, generator=gen, dtype=torch.float64)
    tr = torch.randn(B, 3, generator=gen, dtype=torch.float64)
    to = dict(dtype=dtype, device=device)
    return A.to(**to), vp.to(**to), idx.to(device), w.to(**to), tr.to(**to)


def _grads(fn, *leaves):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves)
    loss = out if out.dim() == 0 else (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out)).sum()
    loss.backward()
    return loss.detach(), [t.grad for t in leaves]


def _assert_same_run(compiled, eager, leaves, **tol):
    loss_c, grads_c = _grads(compiled, *leaves)
    loss_e, grads_e = _grads(eager, *leaves)
    torch.testing.assert_close(loss_c, loss_e, **tol)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, **tol)


# ------------------------------------------------------------------------- inductor (forward + backward)
@needs_inductor
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inductor_skinning_pipeline(dtype):
    """rodrigues -> kinematic_chain -> sparse_lbs, with torch arithmetic around the custom ops that inductor
    fuses, compiled with fullgraph=True; forward and every gradient match eager."""
    A, vp, idx, w, tr = _lbs_inputs(3, 40, dtype=dtype)
    par = torch.tensor(SMPL_PARENTS)
    gen = torch.Generator().manual_seed(1)
    aa = (0.4 * torch.randn(3, 24, 3, generator=gen, dtype=torch.float64)).to(dtype)
    rest = torch.randn(3, 24, 3, generator=gen, dtype=torch.float64).to(dtype)

    def pipeline(aa, rest, vp, tr, w):
        R = ops.rodrigues(aa * 1.0)
        posed, A = ops.kinematic_chain(R, rest, par)
        verts = ops.sparse_lbs(A, vp + 0.0, idx, w, tr)
        return (verts ** 2).sum() + (posed.sin()).sum()

    compiled = torch.compile(pipeline, fullgraph=True, backend="inductor")
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    _assert_same_run(compiled, pipeline, [aa, rest, vp, tr, w], **tol)


@needs_inductor
def test_inductor_sparse_lbs_all_gradients():
    A, vp, idx, w, tr = _lbs_inputs(4, 70)

    def f(A, vp, w, tr):
        return ops.sparse_lbs(A, vp, idx, w, tr).tanh().sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    _assert_same_run(compiled, f, [A, vp, w, tr], atol=1e-12, rtol=1e-10)


@needs_inductor
def test_inductor_smpl_forward_backward(tmp_path):
    from smplfast.body.random_model import random_model  # noqa: WPS433 (test-only import)
    from smplfast.body.model_file import save_model

    path = tmp_path / "small.pkl"
    save_model(random_model(num_vertices=200, num_betas=10, seed=3), str(path))
    model = smplfast.SMPL(model_path=str(path))
    gen = torch.Generator().manual_seed(2)
    bp, betas = 0.3 * torch.randn(2, 69, generator=gen), torch.randn(2, 10, generator=gen)

    def fn(body_pose, betas):
        out = model(body_pose=body_pose, betas=betas)
        return (out.vertices ** 2).sum() + out.joints.abs().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="inductor")
    _assert_same_run(compiled, fn, [bp, betas], atol=1e-4, rtol=1e-4)


def _uv_case(seed=4, G=2, P=3, R=6, N=90):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(G, P, R, R, 3, generator=gen, dtype=torch.float64)
    part = torch.randint(0, P, (N,), generator=gen)
    uv = torch.rand(N, 2, generator=gen, dtype=torch.float64)
    bidx = torch.randint(0, G, (N,), generator=gen)
    valid = torch.rand(P, R, R, generator=gen) > 0.3
    valid[:, 0, 0] = True
    return grid, part, uv, bidx, valid


@needs_inductor
def test_inductor_uv_lookup():
    grid, part, uv, bidx, valid = _uv_case()

    def f(grid, uv):
        return (ops.uv_lookup(grid, part, uv, bidx, valid) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    _assert_same_run(compiled, f, [grid, uv], atol=1e-12, rtol=1e-10)


def _mesh():
    """Two triangles in front of a pinhole camera (camera coordinates, z forward)."""
    v = torch.tensor([[[-0.5, -0.4, 2.0], [0.5, -0.4, 2.2], [0.0, 0.5, 2.1], [0.6, 0.5, 2.4]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return v, faces


@needs_inductor
def test_inductor_rasterize_and_soft_silhouette():
    v, faces = _mesh()
    focal = torch.tensor([[20.0, 20.0]], dtype=torch.float64)
    center = torch.tensor([[8.0, 6.0]], dtype=torch.float64)

    def hard(v):
        out = ops.rasterize(v * 1.0, faces, focal, center, (12, 16))
        return out

    eager = hard(v)
    compiled = torch.compile(hard, fullgraph=True, backend="inductor")(v)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    # soft_silhouette takes projected (u, v) vertices
    uvs = (v[..., :2] / v[..., 2:] * 20.0 + torch.tensor([8.0, 6.0], dtype=torch.float64))

    def soft(uvs):
        return (ops.soft_silhouette(uvs, faces, (12, 16), 1.0) ** 2).sum()

    _assert_same_run(torch.compile(soft, fullgraph=True, backend="inductor"), soft, [uvs], atol=1e-12, rtol=1e-10)


# ----------------------------------------------------------------------- opcheck on the backward ops
def test_opcheck_backward_ops():
    gen = torch.Generator().manual_seed(6)
    f64 = dict(dtype=torch.float64)
    aa = torch.randn(5, 3, generator=gen, **f64)
    torch.library.opcheck(torch.ops.smplfast.rodrigues_backward.default, (torch.randn(5, 3, 3, generator=gen, **f64), aa))

    par = torch.tensor(SMPL_PARENTS)
    R = ops.rodrigues(0.5 * torch.randn(2, 24, 3, generator=gen, **f64))
    rest = torch.randn(2, 24, 3, generator=gen, **f64)
    posed, A = ops.kinematic_chain(R, rest, par)
    torch.library.opcheck(torch.ops.smplfast.kinematic_chain_backward.default,
                          (torch.randn_like(posed), torch.randn_like(A), R, rest, par, A))

    A, vp, idx, w, _ = _lbs_inputs(2, 30)
    g = torch.randn(2, 30, 3, generator=gen, **f64)
    for need_v, need_w in ((True, True), (False, False)):
        for det in (False, True):
            torch.library.opcheck(torch.ops.smplfast.sparse_lbs_backward.default,
                                  (g, A, vp, idx, w, need_v, need_w, det))

    grid, part, uv, bidx, valid = _uv_case(N=40)
    gout = torch.randn(40, 3, generator=gen, **f64)
    for det in (False, True):
        torch.library.opcheck(torch.ops.smplfast.uv_lookup_backward.default,
                              (gout, grid, part, uv, bidx, valid, True, True, det))


# -------------------------------------------------------------------- deterministic skinning backward
@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_flag_reaches_skinning_backward(device, monkeypatch):
    """torch.use_deterministic_algorithms(True) selects the fixed-order backward (the flag reaches the
    kernel call); on the CPU the gradients are the same bits either way, and on CUDA two deterministic
    runs are bit-identical."""
    import importlib

    lbs_module = importlib.import_module("smplfast.ops.sparse_lbs")  # the module (ops.sparse_lbs is the function)

    real = lbs_module._C
    seen = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(real, name)

        def lbs_backward(self, *args):
            seen.append(bool(args[19]) if len(args) > 19 else False)
            return real.lbs_backward(*args)

    monkeypatch.setattr(lbs_module, "_C", Recorder())
    A, vp, idx, w, tr = _lbs_inputs(3, 600, device=device, seed=8)

    def grads():
        leaves = [t.detach().clone().requires_grad_(True) for t in (A, vp, w, tr)]
        out = ops.sparse_lbs(leaves[0], leaves[1], idx, leaves[2], leaves[3])
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=device).reshape(out.shape)).sum().backward()
        return [t.grad.clone() for t in leaves]

    default = grads()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        det1, det2 = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(was)
    assert seen == [False, True, True]
    for a, b in zip(det1, det2):
        assert torch.equal(a, b)
    for a, b in zip(det1, default):
        if device == "cpu":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_deterministic_backward_op_matches_default():
    A, vp, idx, w, _ = _lbs_inputs(2, 300, J=30, K=6, seed=3)
    g = torch.randn(2, 300, 3, dtype=torch.float64)
    a = torch.ops.smplfast.sparse_lbs_backward(g, A, vp, idx, w, True, True, False)
    b = torch.ops.smplfast.sparse_lbs_backward(g, A, vp, idx, w, True, True, True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_lbs_backward_workspace_size():
    from smplfast._backend import _C

    assert _C.lbs_backward_workspace(4, 1000, 24, False) == 0
    assert _C.lbs_backward_workspace(0, 1000, 24, True) == 0
    assert _C.lbs_backward_workspace(4, 1000, 24, True) == 4 * 4 * (24 * 12 + 3)  # tiles of 256 vertices


# ------------------------------------------------------------------------- driver older than the runtime
def test_driver_problem_messages():
    assert _backend.cuda_driver_problem((13000, 13000)) is None
    assert _backend.cuda_driver_problem((13020, 13000)) is None
    assert _backend.cuda_driver_problem((0, 0)) is None  # CPU-only build
    msg = _backend.cuda_driver_problem((12080, 13000))
    assert "CUDA 13.0 runtime" in msg and "580" in msg and "supports CUDA 12.8" in msg
    assert "no NVIDIA driver" in _backend.cuda_driver_problem((0, 13000))


def test_old_driver_raises_at_first_cuda_call(monkeypatch):
    real = _backend._C
    stand_in = types.SimpleNamespace(build_info=lambda: {**real.build_info(), "cuda": True},
                                     cuda_driver_version=lambda: (12040, 13000), Target=real.Target)
    monkeypatch.setattr(_backend, "_C", stand_in)
    monkeypatch.setattr(_backend, "_driver_checked", False)

    class CudaTensorStandIn:  # a CPU-only torch cannot allocate a CUDA tensor; only .device is read
        device = torch.device("cuda", 1)

    with pytest.raises(RuntimeError, match=r"CUDA 13\.0 runtime.*driver >= 580.*supports CUDA 12\.4"):
        _backend.target(CudaTensorStandIn())


def test_build_reports_driver_and_runtime():
    driver, runtime = _backend._C.cuda_driver_version()
    info = smplfast.build_info()
    assert runtime == info["cuda_runtime_version"]
    assert driver >= 0
