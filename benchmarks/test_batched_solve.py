"""Batched damped solves: smplfast's kernels against what users would otherwise write.

- cholesky: ``ops.damped_cholesky_solve`` vs torch (form the damped matrix, ``torch.linalg.cholesky_ex``
  + ``torch.cholesky_solve``);
- cg: ``ops.conjugate_gradient_solve`` (Jacobi PCG, 20 iterations, rel_tol 1e-6) vs the same
  algorithm in batched torch (``ops.conjugate_gradient_solve_reference``).

At batch 64 and 1024, n = 6 (camera), 82 (body + camera), 110 (multi-view), float32 and float64.
Run: ``pytest benchmarks/test_batched_solve.py``.
"""
import pytest
import torch

import smplfast
from smplfast import ops

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
BATCHES = [64, 1024]
SIZES = [6, 82, 110]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
IMPLS = ["smplfast-cholesky", "torch-cholesky", "smplfast-cg", "torch-reference-cg"]


def make_system(batch, n, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(batch, 2 * n, n, generator=gen, dtype=torch.float64)
    H = J.mT @ J / (2 * n)
    g = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    damping = torch.rand(batch, generator=gen, dtype=torch.float64) * 0.1 + 1e-3
    diag = torch.diagonal(H, dim1=1, dim2=2).clone()  # Marquardt's scaling
    return [t.to(dtype=dtype, device=device) for t in (H, g, damping, diag)]


def torch_cholesky(H, g, damping, diag):
    A = H + torch.diag_embed(damping[:, None] * diag)
    L, info = torch.linalg.cholesky_ex(A)
    return torch.cholesky_solve(g[..., None], L)[..., 0], info == 0


RUNNERS = {
    "smplfast-cholesky": lambda H, g, d, s: ops.damped_cholesky_solve(H, g, d, s),
    "torch-cholesky": torch_cholesky,
    "smplfast-cg": lambda H, g, d, s: ops.conjugate_gradient_solve(H, g, d, s, max_iters=20, rel_tol=1e-6),
    "torch-reference-cg": lambda H, g, d, s: ops.conjugate_gradient_solve_reference(H, g, d, s, 20, 1e-6),
}


def _rounds(batch, n, impl, device):
    if device == "cuda":
        return 50
    slow = impl == "torch-reference-cg" or batch * n * n * n > 1e8
    return 5 if slow else 20


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_batched_solve(benchmark, impl, n, batch, dtype, device):
    H, g, damping, diag = make_system(batch, n, DTYPES[dtype], device)
    fn = RUNNERS[impl]

    def run():
        out = fn(H, g, damping, diag)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{device} {dtype} batch {batch} n {n}"
    benchmark.extra_info.update(impl=impl, n=n, batch=batch, dtype=dtype, device=device)
    benchmark.pedantic(run, rounds=_rounds(batch, n, impl, device), iterations=1, warmup_rounds=1)
