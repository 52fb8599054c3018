"""The batched damped solves (damped_cholesky_solve, conjugate_gradient_solve) against their
pure-PyTorch references and torch.linalg.solve, on cpu (and cuda when present)."""
import math

import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.ops.batched_solve import MAX_SYSTEM_SIZE, _team_emulation

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
SIZES = [1, 6, 82, 110]
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-4), torch.float64: dict(rtol=1e-9, atol=1e-10)}


def spd_system(B, n, dtype=torch.float64, device="cpu", seed=0, rows=None):
    """Random SPD normal equations H = J^T J / m (condition number ~ 30), with random right-hand
    sides, damping in [0.01, 0.51) and diagonal scales in [0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    m = rows or 2 * n + 2
    J = torch.randn(B, m, n, generator=gen, dtype=torch.float64)
    H = J.mT @ J / m
    g = torch.randn(B, n, generator=gen, dtype=torch.float64)
    damping = torch.rand(B, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    diag = torch.rand(B, n, generator=gen, dtype=torch.float64) + 0.5
    return [t.to(dtype=dtype, device=device) for t in (H, g, damping, diag)]


def dense_solution(H, g, damping, diag):
    """The float64 solution of the damped systems by torch.linalg.solve on the symmetrised lower triangle."""
    H64 = H.double()
    A = torch.tril(H64) + torch.tril(H64, -1).mT + torch.diag_embed(damping.double()[:, None] * diag.double())
    return torch.linalg.solve(A, g.double())


# ------------------------------------------------------------------------------------ Cholesky
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cholesky_matches_reference_and_linalg_solve(device, dtype, n):
    H, g, damping, diag = spd_system(9, n, dtype, device, seed=n)
    # Only the lower triangle may be read: poison the strict upper one.
    H = H + torch.triu(torch.full_like(H, float("nan")), diagonal=1)
    x, ok = ops.damped_cholesky_solve(H, g, damping, diag)
    assert x.shape == (9, n) and x.dtype == dtype and ok.dtype == torch.bool and ok.device == x.device
    assert bool(ok.all())
    x_ref, ok_ref = ops.damped_cholesky_solve_reference(H, g, damping, diag)
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
    assert torch.equal(ok, ok_ref)
    torch.testing.assert_close(x.double(), dense_solution(H, g, damping, diag), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cholesky_failures_are_flagged_and_isolated(device, dtype):
    n = 7
    H, g, damping, diag = spd_system(10, n, dtype, "cpu", seed=3)
    H[1] = -torch.eye(n, dtype=dtype)                     # negative definite
    damping[1] = 0.0
    H[2, 4, 2] = float("nan")                             # NaN in the lower triangle
    g[3, 5] = float("inf")                                # Inf right-hand side
    damping[4] = float("nan")                             # NaN damping
    H[5, 6, 0] = float("inf")                             # Inf off the diagonal
    H[6] = 0.0                                            # singular: zero pivot
    damping[6] = 0.0
    diag[7, 3] = float("inf")                             # Inf damping scale
    H[8, 0, 6] = float("nan")                             # NaN only in the upper triangle: fine
    H, g, damping, diag = (t.to(device) for t in (H, g, damping, diag))
    x, ok = ops.damped_cholesky_solve(H, g, damping, diag)
    expected = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert torch.equal(ok.cpu(), expected)
    assert bool(torch.isfinite(x).all())
    assert bool((x[~ok] == 0).all())
    x_ref, ok_ref = ops.damped_cholesky_solve_reference(H, g, damping, diag)
    assert torch.equal(ok, ok_ref)
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
    # The good samples are exactly what a batch of only them gives.
    good = expected.nonzero()[:, 0].to(device)
    x_alone, _ = ops.damped_cholesky_solve(H[good], g[good], damping[good], diag[good])
    torch.testing.assert_close(x[good], x_alone, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_cholesky_barely_indefinite_after_damping(device):
    # Indefinite H made positive definite by enough damping, and not by too little.
    n = 5
    H = torch.diag(torch.tensor([2.0, 1.0, -0.5, 3.0, 1.0], dtype=torch.float64)).expand(2, n, n).to(device)
    g = torch.ones(2, n, dtype=torch.float64, device=device)
    damping = torch.tensor([0.4, 0.6], dtype=torch.float64, device=device)
    x, ok = ops.damped_cholesky_solve(H, g, damping, torch.ones_like(g))
    assert ok.tolist() == [False, True]
    torch.testing.assert_close(x[1], 1 / (torch.diagonal(H[1]) + 0.6))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cholesky_inactive_samples_are_skipped(device, dtype):
    H, g, damping, diag = spd_system(6, 11, dtype, device, seed=4)
    H[2] = float("nan")  # inactive samples are not even read
    active = torch.tensor([True, False, False, True, True, False], device=device)
    x, ok = ops.damped_cholesky_solve(H, g, damping, diag, active)
    assert bool(ok.all())
    assert bool((x[~active] == 0).all())
    x_all, _ = ops.damped_cholesky_solve(H[active], g[active], damping[active], diag[active])
    torch.testing.assert_close(x[active], x_all, rtol=0, atol=0)
    x_ref, ok_ref = ops.damped_cholesky_solve_reference(H, g, damping, diag, active)
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
    assert torch.equal(ok, ok_ref)


@pytest.mark.parametrize("device", DEVICES)
def test_inputs_are_not_modified_and_any_layout_works(device):
    H, g, damping, diag = spd_system(4, 9, torch.float64, device, seed=5)
    H = H + torch.triu(torch.randn_like(H), diagonal=1)  # garbage in the unread upper triangle
    Ht = H.mT.contiguous().mT                             # same values, column-major
    g2 = torch.stack([g, g], dim=2)[..., 0]               # strided
    before = [t.clone() for t in (Ht, g2, damping, diag)]
    x1, ok1 = ops.damped_cholesky_solve(Ht, g2, damping, diag)
    c1 = ops.conjugate_gradient_solve(Ht, g2, damping, diag, max_iters=5)
    for b, a in zip(before, (Ht, g2, damping, diag)):
        assert torch.equal(a, b)
    x2, ok2 = ops.damped_cholesky_solve(H.contiguous(), g.contiguous(), damping, diag)
    c2 = ops.conjugate_gradient_solve(H.contiguous(), g.contiguous(), damping, diag, max_iters=5)
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
    for a, b in zip(c1, c2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------- conjugate gradient
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cg_fixed_budget_matches_reference(device, dtype, n):
    H, g, damping, diag = spd_system(9, n, dtype, device, seed=10 + n)
    H = H + torch.triu(torch.full_like(H, float("nan")), diagonal=1)
    budget = min(n, 5)
    # rel_tol = 0: every sample runs the whole budget, so the iteration counts are exact.
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=budget, rel_tol=0.0)
    assert iters.dtype == torch.int32 and rel.dtype == dtype
    x_ref, iters_ref, rel_ref = ops.conjugate_gradient_solve_reference(H, g, damping, diag, budget, 0.0)
    if n > 1:
        assert iters.tolist() == [budget] * 9
    assert torch.equal(iters, iters_ref)
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
    torch.testing.assert_close(rel, rel_ref, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cg_converges_to_the_cholesky_solution(device, dtype, n):
    H, g, damping, diag = spd_system(9, n, dtype, device, seed=20 + n)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=n + 5, rel_tol=tol)
    x_chol, ok = ops.damped_cholesky_solve(H, g, damping, diag)
    assert bool(ok.all())
    # Exact arithmetic converges within n iterations; at condition ~30 it takes far fewer.
    assert int(iters.max()) <= n
    assert bool((rel <= tol).all()), rel
    scale = 1e-3 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(x, x_chol, rtol=scale, atol=scale)
    # The reference takes the same number of iterations up to rounding at the stopping threshold.
    x_ref, iters_ref, _ = ops.conjugate_gradient_solve_reference(H, g, damping, diag, n + 5, tol)
    assert int((iters - iters_ref).abs().max()) <= 1
    torch.testing.assert_close(x, x_ref, rtol=scale, atol=scale)


@pytest.mark.parametrize("device", DEVICES)
def test_cg_respects_max_iters_and_zero_budget(device):
    # Badly conditioned: 3 iterations cannot reach 1e-12.
    H, g, damping, diag = spd_system(5, 40, torch.float64, device, seed=30, rows=41)
    damping.zero_()
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=3, rel_tol=1e-12)
    assert iters.tolist() == [3] * 5
    assert bool((rel > 1e-12).all()) and bool(torch.isfinite(rel).all())
    x0, iters0, rel0 = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=0)
    assert bool((x0 == 0).all()) and iters0.tolist() == [0] * 5
    torch.testing.assert_close(rel0, torch.ones_like(rel0))
    # The default budget is HoloPose's 20 iterations.
    _, iters20, _ = ops.conjugate_gradient_solve(H, g, damping, diag, rel_tol=1e-14)
    assert iters20.tolist() == [20] * 5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cg_failures_never_give_nan(device, dtype):
    n = 6
    H, g, damping, diag = spd_system(7, n, dtype, "cpu", seed=40)
    H[1] = -torch.eye(n, dtype=dtype)  # negative curvature on the first step
    damping[1] = 0.0
    H[2, 3, 1] = float("nan")
    g[3, 0] = float("inf")
    g[4] = 0.0                         # nothing to solve
    damping[5] = float("inf")
    H, g, damping, diag = (t.to(device) for t in (H, g, damping, diag))
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=10, rel_tol=1e-6)
    assert bool(torch.isfinite(x).all())
    assert not bool(torch.isnan(rel).any())
    assert iters[[1, 2, 3, 4, 5]].tolist() == [0] * 5
    assert bool((x[[1, 2, 3, 4, 5]] == 0).all())
    assert rel[1].item() == 1.0 and rel[4].item() == 0.0
    assert math.isinf(rel[2].item()) and math.isinf(rel[3].item()) and math.isinf(rel[5].item())
    x_ref, iters_ref, rel_ref = ops.conjugate_gradient_solve_reference(H, g, damping, diag, 10, 1e-6)
    assert int((iters - iters_ref).abs().max()) <= 1
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
    for good in (0, 6):
        xg, _, _ = ops.conjugate_gradient_solve(H[good:good + 1], g[good:good + 1], damping[good:good + 1],
                                                diag[good:good + 1], max_iters=10, rel_tol=1e-6)
        torch.testing.assert_close(x[good:good + 1], xg, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_cg_inactive_samples_are_skipped(device):
    H, g, damping, diag = spd_system(5, 8, torch.float64, device, seed=50)
    H[0] = float("nan")
    active = torch.tensor([False, True, False, True, True], device=device)
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=8, rel_tol=1e-9, active=active)
    assert bool((x[~active] == 0).all()) and bool((iters[~active] == 0).all()) and bool((rel[~active] == 0).all())
    xa, ia, ra = ops.conjugate_gradient_solve(H[active], g[active], damping[active], diag[active], 8, 1e-9)
    torch.testing.assert_close(x[active], xa, rtol=0, atol=0)
    assert torch.equal(iters[active], ia)
    ref = ops.conjugate_gradient_solve_reference(H, g, damping, diag, 8, 1e-9, active)
    torch.testing.assert_close(x, ref[0])
    assert int((iters - ref[1]).abs().max()) <= 1


# ----------------------------------------------------------------- the GPU's block-parallel split
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 5, 6, 9, 33])
@pytest.mark.parametrize("threads,lanes", [(1, 1), (4, 2), (6, 3)])
def test_block_parallel_algorithm_matches_serial(dtype, n, threads, lanes):
    """The CUDA kernels run the per-sample maths with a thread block as the team (warps over rows,
    lanes over columns, barriers between phases). Running that path on CPU threads checks the work
    split and barrier placement without a GPU."""
    H, g, damping, diag = spd_system(6, n, dtype, seed=60 + n)
    H[1, n - 1, 0] = float("nan")
    if n > 1:
        H[2] = -torch.eye(n, dtype=dtype)
        damping[2] = 0.0
    active = torch.tensor([True, True, True, False, True, True])
    x, ok = ops.damped_cholesky_solve(H, g, damping, diag, active)
    xt, okt = _team_emulation("cholesky", H, g, damping, diag, active, threads=threads, lanes=lanes)
    assert torch.equal(ok, okt)
    torch.testing.assert_close(x, xt, **TOL[dtype])
    c = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=4, rel_tol=0.0, active=active)
    ct = _team_emulation("cg", H, g, damping, diag, active, max_iters=4, rel_tol=0.0, threads=threads, lanes=lanes)
    torch.testing.assert_close(c[0], ct[0], **TOL[dtype])
    assert torch.equal(c[1], ct[1])
    torch.testing.assert_close(c[2], ct[2], **TOL[dtype])


# ----------------------------------------------------------------------------- torch integration
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    H, g, damping, diag = spd_system(3, 5, torch.float64, device, seed=70)
    active = torch.tensor([True, False, True], device=device)
    for act in (None, active):
        torch.library.opcheck(torch.ops.smplfast.damped_cholesky_solve.default, (H, g, damping, diag, act))
        torch.library.opcheck(torch.ops.smplfast.conjugate_gradient_solve.default,
                              (H, g, damping, diag, 6, 1e-8, act))


def test_compile_fullgraph():
    H, g, damping, diag = spd_system(4, 6, torch.float32, seed=71)

    def lm_step(H, g, damping, diag):
        x, ok = ops.damped_cholesky_solve(H, g, damping, diag)
        x_cg, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=6, rel_tol=1e-6)
        return torch.where(ok[:, None], x, x_cg), iters, rel

    compiled = torch.compile(lm_step, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(H, g, damping, diag), lm_step(H, g, damping, diag)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    H, g, damping, diag = spd_system(0, 4, torch.float32, device)
    x, ok = ops.damped_cholesky_solve(H, g, damping, diag)
    assert x.shape == (0, 4) and ok.shape == (0,)
    x, iters, rel = ops.conjugate_gradient_solve(H, g, damping, diag)
    assert x.shape == (0, 4) and iters.shape == (0,) and rel.shape == (0,)
    x, ok = ops.damped_cholesky_solve_reference(H, g, damping, diag)
    assert x.shape == (0, 4) and ok.shape == (0,)


def test_not_differentiable():
    H, g, damping, diag = spd_system(2, 3, torch.float64, seed=72)
    g.requires_grad_(True)
    x, _ = ops.damped_cholesky_solve(H, g, damping, diag)
    with pytest.raises(RuntimeError, match="not differentiable"):
        x.sum().backward()
    x, _, _ = ops.conjugate_gradient_solve(H, g, damping, diag)
    with pytest.raises(RuntimeError, match="not differentiable"):
        x.sum().backward()


def test_bad_inputs():
    H, g, damping, diag = spd_system(2, 3, torch.float32, seed=73)
    solve = ops.damped_cholesky_solve
    with pytest.raises(ValueError, match=r"H must have shape \(B, n, n\); got \(2, 3, 4\)"):
        solve(torch.zeros(2, 3, 4), g, damping, diag)
    with pytest.raises(ValueError, match=r"H must have shape \(B, n, n\); got \(3, 3\)"):
        solve(torch.zeros(3, 3), g, damping, diag)
    with pytest.raises(ValueError, match=r"g must have shape \(2, 3\); got \(2, 4\)"):
        solve(H, torch.zeros(2, 4), damping, diag)
    with pytest.raises(ValueError, match=r"damping must have shape \(2\); got \(2, 1\)"):
        solve(H, g, damping[:, None], diag)
    with pytest.raises(ValueError, match=r"diag must have shape \(2, 3\); got \(3,\)"):
        solve(H, g, damping, diag[0])
    with pytest.raises(TypeError, match="float32 or float64"):
        solve(H.to(torch.float16), g, damping, diag)
    with pytest.raises(TypeError, match="g has dtype torch.float64 but H has torch.float32"):
        solve(H, g.double(), damping, diag)
    with pytest.raises(TypeError, match="active must be a bool tensor"):
        solve(H, g, damping, diag, torch.ones(2))
    with pytest.raises(ValueError, match=r"active must have shape \(2\); got \(3,\)"):
        solve(H, g, damping, diag, torch.ones(3, dtype=torch.bool))
    big = MAX_SYSTEM_SIZE + 1
    with pytest.raises(ValueError, match=f"n <= {MAX_SYSTEM_SIZE}"):
        solve(torch.empty(0, big, big), torch.empty(0, big), torch.empty(0), torch.empty(0, big))
    cg = ops.conjugate_gradient_solve
    with pytest.raises(ValueError, match=r"max_iters must be in \[0, 2\^31\); got -1"):
        cg(H, g, damping, diag, max_iters=-1)
    with pytest.raises(TypeError, match="max_iters must be an int"):
        cg(H, g, damping, diag, max_iters=2.5)
    with pytest.raises(ValueError, match="rel_tol must be finite and >= 0; got -0.1"):
        cg(H, g, damping, diag, rel_tol=-0.1)
    with pytest.raises(ValueError, match="rel_tol must be finite and >= 0; got nan"):
        cg(H, g, damping, diag, rel_tol=float("nan"))


@pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [6, 110, 200])
def test_cuda_matches_cpu(dtype, n):
    """n = 200 in float64 does not fit in shared memory: the kernels use the global workspace."""
    H, g, damping, diag = spd_system(33, n, dtype, seed=80)
    x_cpu, ok_cpu = ops.damped_cholesky_solve(H, g, damping, diag)
    x_gpu, ok_gpu = ops.damped_cholesky_solve(*(t.cuda() for t in (H, g, damping, diag)))
    assert torch.equal(ok_cpu, ok_gpu.cpu())
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, **TOL[dtype])
    c_cpu = ops.conjugate_gradient_solve(H, g, damping, diag, max_iters=10, rel_tol=0.0)
    c_gpu = ops.conjugate_gradient_solve(*(t.cuda() for t in (H, g, damping, diag)), max_iters=10, rel_tol=0.0)
    torch.testing.assert_close(c_gpu[0].cpu(), c_cpu[0], **TOL[dtype])
    assert torch.equal(c_gpu[1].cpu(), c_cpu[1])


@pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA device")
def test_cuda_device_mismatch():
    H, g, damping, diag = spd_system(2, 3, torch.float32, seed=81)
    with pytest.raises(ValueError, match="g is on cpu but H is on cuda"):
        ops.damped_cholesky_solve(H.cuda(), g, damping.cuda(), diag.cuda())
