"""The skinning ops (rodrigues, kinematic_chain, sparse_lbs) against their pure-PyTorch references."""
import math

import pytest
import torch

import smplfast
from smplfast import ops

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def parents(device="cpu"):
    return torch.tensor(SMPL_PARENTS, device=device)


def random_weights(V, J, gen, dtype, device, max_k=4):
    W = torch.zeros(V, J, dtype=torch.float64)
    for v in range(V):
        k = int(torch.randint(1, max_k + 1, (1,), generator=gen))
        cols = torch.randperm(J, generator=gen)[:k]
        W[v, cols] = torch.rand(k, generator=gen, dtype=torch.float64) + 0.05
    W /= W.sum(dim=1, keepdim=True)
    idx, w = ops.dense_to_sparse_weights(W)
    return W.to(dtype=dtype, device=device), idx.to(device), w.to(dtype=dtype, device=device)


def special_axis_angles(dtype, device):
    """Zero, tiny, moderate, near-pi and beyond-pi rotations (where Rodrigues formulas go wrong)."""
    rows = [
        [0.0, 0.0, 0.0],
        [1e-9, 0.0, 0.0],
        [1e-6, -2e-6, 3e-7],
        [0.3, -0.2, 0.1],
        [math.pi - 1e-6, 0.0, 0.0],
        [0.0, math.pi, 0.0],
        [1.0, 1.0, 1.0 + 1e-3],
        [-2.5, 1.5, 2.0],
    ]
    return torch.tensor(rows, dtype=dtype, device=device)


# ------------------------------------------------------------------------------------ rodrigues
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rodrigues_matches_reference(device, dtype):
    gen = torch.Generator().manual_seed(1)
    aa = torch.cat([special_axis_angles(dtype, "cpu"), 3 * torch.randn(200, 3, generator=gen, dtype=dtype)]).to(device)
    aa.requires_grad_(True)
    R = ops.rodrigues(aa)
    aa_ref = aa.detach().clone().requires_grad_(True)
    R_ref = ops.rodrigues_reference(aa_ref)
    torch.testing.assert_close(R, R_ref, **TOL[dtype])
    g = torch.randn_like(R)
    R.backward(g)
    R_ref.backward(g)
    torch.testing.assert_close(aa.grad, aa_ref.grad, **TOL[dtype])


def test_rodrigues_is_a_rotation():
    # smplx's 1e-8 offset makes the axis not exactly unit: R is orthonormal to ~1e-8, not to 1e-15.
    aa = torch.randn(100, 3, dtype=torch.float64) * 2
    R = ops.rodrigues(aa)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-7, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=torch.float64), atol=1e-7, rtol=0)


def test_rodrigues_gradcheck():
    aa = torch.cat([special_axis_angles(torch.float64, "cpu")[2:], torch.randn(6, 3, dtype=torch.float64)])
    assert torch.autograd.gradcheck(ops.rodrigues, (aa.requires_grad_(),))


def test_rodrigues_any_leading_shape_and_empty():
    aa = torch.randn(2, 5, 3)
    assert ops.rodrigues(aa).shape == (2, 5, 3, 3)
    assert ops.rodrigues(torch.zeros(0, 3)).shape == (0, 3, 3)
    noncontig = torch.randn(3, 7)[:, 2:5]
    torch.testing.assert_close(ops.rodrigues(noncontig), ops.rodrigues_reference(noncontig))


def test_rodrigues_bad_inputs():
    with pytest.raises(ValueError, match=r"aa must have shape \(\*, 3\); got \(4, 2\)"):
        ops.rodrigues(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.rodrigues(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.rodrigues(torch.zeros(4, 3, dtype=torch.float16))


# ------------------------------------------------------------------------------ kinematic chain
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 7])
def test_chain_matches_reference(device, dtype, B):
    gen = torch.Generator().manual_seed(2)
    R = ops.rodrigues_reference(torch.randn(B, 24, 3, generator=gen, dtype=dtype)).to(device).requires_grad_(True)
    rest = torch.randn(B, 24, 3, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    posed, A = ops.kinematic_chain(R, rest, parents(device))
    R2, rest2 = R.detach().clone().requires_grad_(True), rest.detach().clone().requires_grad_(True)
    posed_ref, A_ref = ops.kinematic_chain_reference(R2, rest2, parents(device))
    torch.testing.assert_close(posed, posed_ref, **TOL[dtype])
    torch.testing.assert_close(A, A_ref, **TOL[dtype])
    gp, gA = torch.randn_like(posed), torch.randn_like(A)
    ((posed * gp).sum() + (A * gA).sum()).backward()
    ((posed_ref * gp).sum() + (A_ref * gA).sum()).backward()
    torch.testing.assert_close(R.grad, R2.grad, **TOL[dtype])
    torch.testing.assert_close(rest.grad, rest2.grad, **TOL[dtype])


def test_chain_gradcheck_and_single_output_use():
    R = ops.rodrigues_reference(torch.randn(2, 24, 3, dtype=torch.float64)).requires_grad_(True)
    rest = torch.randn(2, 24, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda R, r: ops.kinematic_chain(R, r, parents()), (R, rest))
    # Only one of the two outputs used: the other's gradient arrives as None.
    assert torch.autograd.gradcheck(lambda R, r: ops.kinematic_chain(R, r, parents())[0], (R, rest))
    assert torch.autograd.gradcheck(lambda R, r: ops.kinematic_chain(R, r, parents())[1], (R, rest))


def test_chain_empty_batch_and_bad_inputs():
    posed, A = ops.kinematic_chain(torch.zeros(0, 24, 3, 3), torch.zeros(0, 24, 3), parents())
    assert posed.shape == (0, 24, 3) and A.shape == (0, 24, 3, 4)
    R = torch.eye(3).expand(2, 24, 3, 3)
    with pytest.raises(ValueError, match=r"rest_joints must have shape \(2, 24, 3\); got \(2, 23, 3\)"):
        ops.kinematic_chain(R, torch.zeros(2, 23, 3), parents())
    with pytest.raises(ValueError, match="joint 3 has parent 5"):
        bad = parents().clone()
        bad[3] = 5
        ops.kinematic_chain(R, torch.zeros(2, 24, 3), bad)
    with pytest.raises(ValueError, match="int64"):
        ops.kinematic_chain(R, torch.zeros(2, 24, 3), parents().int())
    with pytest.raises(TypeError, match="dtype"):
        ops.kinematic_chain(R, torch.zeros(2, 24, 3, dtype=torch.float64), parents())


# -------------------------------------------------------------------------------- sparse skinning
def lbs_inputs(B, V, dtype, device, seed=3, shared_mesh=False):
    gen = torch.Generator().manual_seed(seed)
    R = ops.rodrigues_reference(torch.randn(B, 24, 3, generator=gen, dtype=dtype))
    _, A = ops.kinematic_chain_reference(R, torch.randn(B, 24, 3, generator=gen, dtype=dtype), parents())
    vp = torch.randn(1 if shared_mesh else B, V, 3, generator=gen, dtype=dtype)
    tr = torch.randn(B, 3, generator=gen, dtype=dtype)
    W, idx, w = random_weights(V, 24, gen, dtype, "cpu")
    return A.to(device), vp.to(device), idx.to(device), w.to(device), tr.to(device), W.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 50), (3, 300), (1, 6000), (16, 700)])
def test_lbs_matches_reference(device, dtype, B, V):
    A, vp, idx, w, tr, W = lbs_inputs(B, V, dtype, device)
    leaves = [t.requires_grad_(True) for t in (A, vp, tr)]
    out = ops.sparse_lbs(A, vp, idx, w, tr)
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    ref = ops.sparse_lbs_reference(ref_leaves[0], ref_leaves[1], idx, w, ref_leaves[2])
    torch.testing.assert_close(out, ref, **TOL[dtype])
    # Dense-weight formulation (smplx's) agrees too.
    T = torch.einsum("vj,bjrc->bvrc", W, A.detach())
    dense = (T[..., :3] @ vp.detach().unsqueeze(-1))[..., 0] + T[..., 3] + tr.detach()[:, None]
    torch.testing.assert_close(out.detach(), dense, **TOL[dtype])
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, atol=TOL[dtype]["atol"] * 10, rtol=TOL[dtype]["rtol"] * 10)


def test_lbs_shared_mesh_broadcast_and_gradcheck():
    A, vp, idx, w, tr, _ = lbs_inputs(3, 40, torch.float64, "cpu", shared_mesh=True)
    fn = lambda A, vp, tr: ops.sparse_lbs(A, vp.expand(3, -1, -1), idx, w, tr)  # noqa: E731
    ref = ops.sparse_lbs_reference(A, vp.expand(3, -1, -1), idx, w, tr)
    torch.testing.assert_close(fn(A, vp, tr), ref)
    assert torch.autograd.gradcheck(fn, (A.requires_grad_(), vp.requires_grad_(), tr.requires_grad_()))


def test_lbs_noncontiguous_inputs():
    A, vp, idx, w, tr, _ = lbs_inputs(4, 60, torch.float64, "cpu")
    A_nc = A.transpose(2, 3).contiguous().transpose(2, 3)
    vp_nc = vp.transpose(1, 2).contiguous().transpose(1, 2)
    tr_nc = torch.stack([tr, tr], dim=2)[..., 0]
    assert not (A_nc.is_contiguous() or vp_nc.is_contiguous())
    torch.testing.assert_close(ops.sparse_lbs(A_nc, vp_nc, idx, w, tr_nc), ops.sparse_lbs_reference(A, vp, idx, w, tr))


def test_lbs_empty_batch_and_bad_inputs():
    A, vp, idx, w, tr, _ = lbs_inputs(2, 30, torch.float32, "cpu")
    out = ops.sparse_lbs(A[:0], vp[:0], idx, w, tr[:0])
    assert out.shape == (0, 30, 3)
    with pytest.raises(ValueError, match=r"v_posed must have shape \(2, \*, 3\); got \(2, 30, 4\)"):
        ops.sparse_lbs(A, torch.zeros(2, 30, 4), idx, w, tr)
    with pytest.raises(TypeError, match="idx must be int32"):
        ops.sparse_lbs(A, vp, idx.long(), w, tr)
    bad = idx.clone()
    bad[0, 0] = 24
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 24\)"):
        ops.sparse_lbs(A, vp, bad, w, tr)
    with pytest.raises(TypeError, match="dtype"):
        ops.sparse_lbs(A, vp.double(), idx, w, tr)


def test_dense_to_sparse_weights_keeps_everything():
    W = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    idx, w = ops.dense_to_sparse_weights(W)
    assert idx.shape == (3, 3) and idx.dtype == torch.int32
    rebuilt = torch.zeros_like(W).scatter_add_(1, idx.long(), w)
    torch.testing.assert_close(rebuilt, W)
    with pytest.raises(ValueError, match="vertex 2 has 3 non-zero"):
        ops.dense_to_sparse_weights(W, max_influences=2)


def test_double_backward_fails_loudly():
    aa = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ops.rodrigues(aa).sum(), aa, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ------------------------------------------------------------------------- torch.library checks
def test_opcheck_all_ops():
    gen = torch.Generator().manual_seed(5)
    aa = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.smplfast.rodrigues.default, (aa,))
    R = ops.rodrigues_reference(torch.randn(2, 24, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    rest = torch.randn(2, 24, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.smplfast.kinematic_chain.default, (R, rest, parents()))
    A, vp, idx, w, tr, _ = lbs_inputs(2, 20, torch.float64, "cpu")
    torch.library.opcheck(
        torch.ops.smplfast.sparse_lbs.default, (A.requires_grad_(), vp.requires_grad_(), idx, w, tr.requires_grad_())
    )


def test_compile_fullgraph():
    A, vp, idx, w, tr, _ = lbs_inputs(2, 20, torch.float32, "cpu")
    rest = torch.randn(2, 24, 3)
    par = parents()

    def pipeline(aa, rest, vp, tr):
        R = ops.rodrigues(aa)
        _, A = ops.kinematic_chain(R, rest, par)
        return ops.sparse_lbs(A, vp, idx, w, tr)

    aa = torch.randn(2, 24, 3)
    compiled = torch.compile(pipeline, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(aa, rest, vp, tr), pipeline(aa, rest, vp, tr))


def test_cuda_tensor_on_cpu_only_build_gives_clear_error(monkeypatch):
    import types

    from smplfast import _backend

    real = _backend._C
    cpu_only = types.SimpleNamespace(build_info=lambda: {**real.build_info(), "cuda": False}, Target=real.Target)
    monkeypatch.setattr(_backend, "_C", cpu_only)  # what a build without nvcc reports
    monkeypatch.setattr(_backend, "_BUILT_WITH_CUDA", False)  # read from build_info() once, at import

    class CudaTensorStandIn:  # torch's CPU wheel cannot allocate a CUDA tensor; only .device is read
        device = torch.device("cuda", 0)

    with pytest.raises(RuntimeError, match="built without CUDA kernels.*SMPLFAST_CUDA=ON"):
        _backend.target(CudaTensorStandIn())


@pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA build and a GPU")
def test_cuda_matches_cpu_pipeline():
    gen = torch.Generator().manual_seed(9)
    aa = torch.randn(64, 24, 3, generator=gen, dtype=torch.float64)
    A, vp, idx, w, tr, _ = lbs_inputs(64, 500, torch.float64, "cpu")
    rest = torch.randn(64, 24, 3, generator=gen, dtype=torch.float64)

    def run(device):
        R = ops.rodrigues(aa.to(device))
        _, A = ops.kinematic_chain(R, rest.to(device), parents(device))
        return ops.sparse_lbs(A, vp.to(device), idx.to(device), w.to(device), tr.to(device)).cpu()

    torch.testing.assert_close(run("cuda"), run("cpu"), atol=1e-12, rtol=1e-10)


def test_lbs_backward_reads_strided_gradients():
    """Gradients of sum() arrive as stride-0 broadcasts and transposed ones as strided views; the
    kernel reads both in place."""
    A, vp, idx, w, tr, _ = lbs_inputs(3, 80, torch.float64, "cpu")
    for make_loss in (lambda v: v.sum(), lambda v: (v.transpose(0, 2) * torch.arange(3.0, dtype=v.dtype)).sum()):
        leaves = [t.detach().clone().requires_grad_(True) for t in (A, vp, tr)]
        ref_leaves = [t.detach().clone().requires_grad_(True) for t in (A, vp, tr)]
        make_loss(ops.sparse_lbs(leaves[0], leaves[1], idx, w, leaves[2])).backward()
        make_loss(ops.sparse_lbs_reference(ref_leaves[0], ref_leaves[1], idx, w, ref_leaves[2])).backward()
        for a, b in zip(leaves, ref_leaves):
            torch.testing.assert_close(a.grad, b.grad)


# ------------------------------------------------------- zero influences, gradient w.r.t. weights
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_lbs_zero_influences_gives_translation(device, dtype):
    """K = 0: the empty blend is the zero transform, so every vertex sits at transl (was a segfault)."""
    gen = torch.Generator().manual_seed(11)
    A = torch.randn(3, 24, 3, 4, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    vp = torch.randn(3, 7, 3, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    tr = torch.randn(3, 3, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    idx = torch.zeros(7, 0, dtype=torch.int32, device=device)
    w = torch.zeros(7, 0, dtype=dtype, device=device, requires_grad=True)
    out = ops.sparse_lbs(A, vp, idx, w, tr)
    torch.testing.assert_close(out, ops.sparse_lbs_reference(A, vp, idx, w, tr))
    torch.testing.assert_close(out.detach(), tr.detach()[:, None, :].expand(3, 7, 3))
    out.backward(torch.ones_like(out))
    assert torch.count_nonzero(A.grad) == 0 and torch.count_nonzero(vp.grad) == 0
    torch.testing.assert_close(tr.grad, torch.full_like(tr, 7.0))
    assert w.grad.shape == (7, 0)
    # No vertices and no influences at all.
    e = ops.sparse_lbs(A.detach(), vp.detach()[:, :0], idx[:0], w.detach()[:0], tr.detach())
    assert e.shape == (3, 0, 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 50), (4, 300), (2, 6000)])
def test_lbs_weights_gradient_matches_reference(device, dtype, B, V):
    A, vp, idx, w, tr, _ = lbs_inputs(B, V, dtype, device)
    w = w.clone().requires_grad_(True)
    A.requires_grad_(True)
    out = ops.sparse_lbs(A, vp, idx, w, tr)
    w_ref = w.detach().clone().requires_grad_(True)
    A_ref = A.detach().clone().requires_grad_(True)
    ref = ops.sparse_lbs_reference(A_ref, vp, idx, w_ref, tr)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    tol = dict(atol=TOL[dtype]["atol"] * 50, rtol=TOL[dtype]["rtol"] * 50)
    torch.testing.assert_close(w.grad, w_ref.grad, **tol)
    torch.testing.assert_close(A.grad, A_ref.grad, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_lbs_weights_gradcheck(device):
    A, vp, idx, w, tr, _ = lbs_inputs(2, 25, torch.float64, device)
    fn = lambda A, vp, w, tr: ops.sparse_lbs(A, vp, idx, w, tr)  # noqa: E731
    args = (A.requires_grad_(), vp.requires_grad_(), w.clone().requires_grad_(), tr.requires_grad_())
    assert torch.autograd.gradcheck(fn, args)
    # Shared (batch-broadcast) mesh and a strided gradient from sum(): weights only.
    A2, vp2, idx2, w2, tr2, _ = lbs_inputs(3, 20, torch.float64, device, shared_mesh=True)
    fw = lambda w: ops.sparse_lbs(A2, vp2.expand(3, -1, -1), idx2, w, tr2)  # noqa: E731
    assert torch.autograd.gradcheck(fw, (w2.clone().requires_grad_(),))
    w3 = w2.clone().requires_grad_(True)
    fw(w3).sum().backward()
    w4 = w2.clone().requires_grad_(True)
    ops.sparse_lbs_reference(A2, vp2.expand(3, -1, -1), idx2, w4, tr2).sum().backward()
    torch.testing.assert_close(w3.grad, w4.grad)


def test_lbs_opcheck_with_weights_grad():
    A, vp, idx, w, tr, _ = lbs_inputs(2, 20, torch.float64, "cpu")
    torch.library.opcheck(torch.ops.smplfast.sparse_lbs.default,
                          (A.requires_grad_(), vp, idx, w.clone().requires_grad_(), tr))
    idx0, w0 = idx[:, :0].contiguous(), w[:, :0].contiguous().requires_grad_()
    torch.library.opcheck(torch.ops.smplfast.sparse_lbs.default, (A, vp.requires_grad_(), idx0, w0, tr))
