"""Batched small dense SPD solves for Levenberg–Marquardt steps.

Per sample ``b`` both ops solve the damped normal equations

    (H[b] + damping[b] * diag_matrix(diag[b])) x[b] = g[b]

reading only the lower triangle of ``H`` (the upper one may hold anything, even NaN):
:func:`damped_cholesky_solve` exactly, by Cholesky, and :func:`conjugate_gradient_solve`
approximately, by Jacobi-preconditioned conjugate gradients with a fixed iteration budget.

They are solver internals and not differentiable: their backward raises. Each op has a
pure-PyTorch ``*_reference`` implementing the same rules, used by the tests.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._backend import _C, check_float, check_same, check_shape, dtype_code, target

OP_CHOLESKY = "smplfast.damped_cholesky_solve"
OP_CG = "smplfast.conjugate_gradient_solve"

#: Largest system size ``n`` the kernels accept (they are meant for small systems, n ~ 6 to ~110).
MAX_SYSTEM_SIZE = 4096

_KIND_CHOLESKY, _KIND_CG = 0, 1


# ----------------------------------------------------------------------------------- validation
def _check(op: str, H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, active: Optional[Tensor]) -> None:
    if not isinstance(H, torch.Tensor):
        raise TypeError(f"{op}: H must be a torch.Tensor, got {type(H).__name__}")
    if H.dim() != 3 or H.shape[1] != H.shape[2]:
        raise ValueError(f"{op}: H must have shape (B, n, n); got {tuple(H.shape)}")
    check_float(op, "H", H, [None, None, None])
    B, n = H.shape[0], H.shape[1]
    check_float(op, "g", g, [B, n])
    check_float(op, "damping", damping, [B])
    check_float(op, "diag", diag, [B, n])
    others = [("g", g), ("damping", damping), ("diag", diag)]
    if active is not None:
        if not isinstance(active, torch.Tensor) or active.dtype != torch.bool:
            got = active.dtype if isinstance(active, torch.Tensor) else type(active).__name__
            raise TypeError(f"{op}: active must be a bool tensor of shape ({B},) or None; got {got}")
        check_shape(op, "active", active, [B])
        others.append(("active", active))
    check_same(op, "H", H, others)
    if n > MAX_SYSTEM_SIZE:
        raise ValueError(
            f"{op}: systems of size n <= {MAX_SYSTEM_SIZE} are supported; got n = {n} "
            "(use torch.linalg.cholesky_ex / cholesky_solve for large systems)"
        )


def _check_cg_options(max_iters: int, rel_tol: float) -> None:
    if isinstance(max_iters, torch.SymInt):  # symbolic under torch.compile: checked when it is known
        return
    if isinstance(max_iters, bool) or not isinstance(max_iters, int):
        raise TypeError(f"{OP_CG}: max_iters must be an int; got {type(max_iters).__name__}")
    if not 0 <= max_iters < 2**31:
        raise ValueError(f"{OP_CG}: max_iters must be in [0, 2^31); got {max_iters}")
    if not isinstance(rel_tol, (int, float)) or isinstance(rel_tol, bool):
        raise TypeError(f"{OP_CG}: rel_tol must be a float; got {type(rel_tol).__name__}")
    if not (math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"{OP_CG}: rel_tol must be finite and >= 0; got {rel_tol}")


def _not_differentiable(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{op} is not differentiable: it is a Gauss-Newton / Levenberg-Marquardt solver step. "
            "Detach its inputs, or use torch.linalg.solve for a solve that needs gradients."
        )

    def setup_context(ctx, inputs, output):
        pass

    return backward, setup_context


def _workspace(t, code: int, kind: int, B: int, n: int, like: Tensor) -> Optional[Tensor]:
    elems = _C.batched_solve_workspace_size(t, code, kind, B, n)
    return like.new_empty((elems,)) if elems else None


def _ptr(t: Optional[Tensor]) -> int:
    return t.data_ptr() if t is not None else 0


# ----------------------------------------------------------------------------- references
def _damped_matrix(H: Tensor, damping: Tensor, diag: Tensor) -> Tensor:
    """The full symmetric damped matrix built from the lower triangle of H."""
    return torch.tril(H) + torch.tril(H, -1).mT + torch.diag_embed(damping[:, None] * diag)


def damped_cholesky_solve_reference(
    H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, active: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Pure-PyTorch specification of :func:`damped_cholesky_solve` (torch.linalg.cholesky_ex +
    cholesky_solve, plus the same failure rules)."""
    B, n = g.shape
    if B == 0 or n == 0:
        return g.new_zeros((B, n)), torch.ones(B, dtype=torch.bool, device=g.device)
    A = _damped_matrix(H, damping, diag)
    good = torch.isfinite(A).flatten(1).all(1) & torch.isfinite(g).all(1)
    eye = torch.eye(n, dtype=A.dtype, device=A.device).expand(B, n, n)
    L, info = torch.linalg.cholesky_ex(torch.where(good[:, None, None], A, eye))
    pd = good & (info == 0) & torch.isfinite(L).flatten(1).all(1)
    L = torch.where(pd[:, None, None], L, eye)
    x = torch.cholesky_solve(torch.where(pd[:, None], g, 0)[..., None], L)[..., 0]
    ok = pd & torch.isfinite(x).all(1)
    x = torch.where(ok[:, None], x, 0)
    if active is not None:
        x = torch.where(active[:, None], x, 0)
        ok = ok | ~active
    return x, ok


def conjugate_gradient_solve_reference(
    H: Tensor,
    g: Tensor,
    damping: Tensor,
    diag: Tensor,
    max_iters: int = 20,
    rel_tol: float = 1e-6,
    active: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch specification of :func:`conjugate_gradient_solve`: the same per-sample Jacobi-PCG
    iteration and stopping rules, run on the whole batch with masks."""
    B, n = g.shape
    if B == 0 or n == 0:
        return g.new_zeros((B, n)), torch.zeros(B, dtype=torch.int32, device=g.device), g.new_zeros((B,))
    A = _damped_matrix(H, damping, diag)
    finite = torch.isfinite(A).flatten(1).all(1) & torch.isfinite(g).all(1)
    A = torch.where(finite[:, None, None], A, 0)
    gs = torch.where(finite[:, None], g, 0)
    aii = torch.diagonal(A, dim1=1, dim2=2)
    minv = torch.where(aii > 0, 1 / aii, torch.ones_like(aii))
    x = torch.zeros_like(gs)
    r = gs.clone()
    z = minv * r
    p = z.clone()
    rz = (r * z).sum(1)
    gnorm = (gs * gs).sum(1).sqrt()
    threshold = rel_tol * gnorm
    rnorm = gnorm.clone()
    iters = torch.zeros(B, dtype=torch.int32, device=g.device)
    running = finite & ~(rnorm <= threshold)
    if active is not None:
        running = running & active
    for _ in range(max_iters):
        if not bool(running.any()):
            break
        q = (A @ p[..., None])[..., 0]
        pq = (p * q).sum(1)
        alpha = rz / pq
        step = running & (pq > 0) & torch.isfinite(pq) & torch.isfinite(alpha)
        x = torch.where(step[:, None], x + alpha[:, None] * p, x)
        r = torch.where(step[:, None], r - alpha[:, None] * q, r)
        z = minv * r
        rz_new = (r * z).sum(1)
        iters = iters + step.to(torch.int32)
        rnorm = torch.where(step, (r * r).sum(1).sqrt(), rnorm)
        running = step & ~(rnorm <= threshold) & (rz_new > 0) & torch.isfinite(rz_new)
        beta = rz_new / rz
        p = torch.where(running[:, None], z + beta[:, None] * p, p)
        rz = torch.where(running, rz_new, rz)
    rel = torch.where(gnorm > 0, rnorm / gnorm, 0)
    rel = torch.where(finite, rel, math.inf)
    if active is not None:
        x = torch.where(active[:, None], x, 0)
        iters = torch.where(active, iters, 0)
        rel = torch.where(active, rel, 0)
    return x, iters, rel


# ------------------------------------------------------------------------------ custom ops
@torch.library.custom_op("smplfast::damped_cholesky_solve", mutates_args=())
def _damped_cholesky_solve(
    H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, active: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    _check(OP_CHOLESKY, H, g, damping, diag, active)
    B, n = g.shape
    x = H.new_empty((B, n))
    ok = torch.ones((B,), dtype=torch.bool, device=H.device)
    if B == 0 or n == 0:
        return x, ok
    # Keep every contiguous copy alive in a local until the kernel has returned.
    Hc, gc, dc, dgc = H.contiguous(), g.contiguous(), damping.contiguous(), diag.contiguous()
    act = active.contiguous() if active is not None else None
    t, code = target(Hc), dtype_code(Hc)
    ws = _workspace(t, code, _KIND_CHOLESKY, B, n, Hc)
    _C.damped_cholesky_solve(t, code, B, n, Hc.data_ptr(), gc.data_ptr(), dc.data_ptr(), dgc.data_ptr(), _ptr(act),
                             _ptr(ws), x.data_ptr(), ok.data_ptr())
    return x, ok


@_damped_cholesky_solve.register_fake
def _(H, g, damping, diag, active):
    _check(OP_CHOLESKY, H, g, damping, diag, active)
    B, n = g.shape
    return H.new_empty((B, n)), torch.empty((B,), dtype=torch.bool, device=H.device)


_backward, _setup = _not_differentiable(OP_CHOLESKY)
_damped_cholesky_solve.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("smplfast::conjugate_gradient_solve", mutates_args=())
def _conjugate_gradient_solve(
    H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, max_iters: int, rel_tol: float, active: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:
    _check(OP_CG, H, g, damping, diag, active)
    _check_cg_options(max_iters, rel_tol)
    B, n = g.shape
    x = H.new_zeros((B, n)) if n == 0 else H.new_empty((B, n))
    iters = torch.zeros((B,), dtype=torch.int32, device=H.device)
    rel = H.new_zeros((B,))
    if B == 0 or n == 0:
        return x, iters, rel
    Hc, gc, dc, dgc = H.contiguous(), g.contiguous(), damping.contiguous(), diag.contiguous()
    act = active.contiguous() if active is not None else None
    t, code = target(Hc), dtype_code(Hc)
    ws = _workspace(t, code, _KIND_CG, B, n, Hc)
    _C.conjugate_gradient_solve(t, code, B, n, max_iters, float(rel_tol), Hc.data_ptr(), gc.data_ptr(),
                                dc.data_ptr(), dgc.data_ptr(), _ptr(act), _ptr(ws), x.data_ptr(), iters.data_ptr(),
                                rel.data_ptr())
    return x, iters, rel


@_conjugate_gradient_solve.register_fake
def _(H, g, damping, diag, max_iters, rel_tol, active):
    _check(OP_CG, H, g, damping, diag, active)
    _check_cg_options(max_iters, rel_tol)
    B, n = g.shape
    return H.new_empty((B, n)), torch.empty((B,), dtype=torch.int32, device=H.device), H.new_empty((B,))


_backward, _setup = _not_differentiable(OP_CG)
_conjugate_gradient_solve.register_autograd(_backward, setup_context=_setup)


# ------------------------------------------------------------------------------- public API
def damped_cholesky_solve(
    H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, active: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Solve ``(H[b] + damping[b] * diag_matrix(diag[b])) x[b] = g[b]`` for every sample by Cholesky.

    Args:
        H: ``(B, n, n)`` float32/float64; only its lower triangle is read.
        g: ``(B, n)`` right-hand sides.
        damping: ``(B,)`` Levenberg–Marquardt damping per sample.
        diag: ``(B, n)`` damping scale per unknown (ones for plain LM, ``diagonal(H)`` for
            Marquardt's scaling).
        active: optional ``(B,)`` bool; inactive samples are skipped at no cost and return
            ``x = 0, ok = True``.

    Returns:
        ``x (B, n)`` and ``ok (B,)`` bool. ``ok[b]`` is False, and ``x[b]`` all zeros, when the damped
        matrix is not positive definite (a non-positive or non-finite pivot), when any value the
        sample reads is NaN/Inf, or when its solution overflows; other samples are unaffected.

    Inputs are never modified. Not differentiable (backward raises).
    """
    return _damped_cholesky_solve(H, g, damping, diag, active)


def conjugate_gradient_solve(
    H: Tensor,
    g: Tensor,
    damping: Tensor,
    diag: Tensor,
    max_iters: int = 20,
    rel_tol: float = 1e-6,
    active: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Approximately solve the same damped systems as :func:`damped_cholesky_solve` by
    Jacobi-preconditioned conjugate gradients from ``x = 0``.

    Each sample stops on its own when ``||r|| <= rel_tol * ||g||`` (``r = g - A x``), after
    ``max_iters`` iterations (``max_iters = 0`` returns ``x = 0``), or, keeping its current ``x``, when a
    step would divide by a non-positive or non-finite number (non-positive curvature ``p^T A p``,
    i.e. the damped matrix is not positive definite). A non-positive diagonal entry of the damped
    matrix is left unpreconditioned.

    Returns:
        ``x (B, n)``, ``iters (B,)`` int32 (iterations taken) and ``rel_residual (B,)``
        (``||r|| / ||g||``, 0 when ``g = 0``). A sample with any non-finite value returns ``x = 0``,
        ``iters = 0`` and ``rel_residual = inf``; an inactive sample (``active[b] = False``) returns
        ``x = 0``, ``iters = 0``, ``rel_residual = 0``. ``x`` is never NaN.

    Not differentiable (backward raises).
    """
    _check_cg_options(max_iters, rel_tol)  # before the dispatcher's own, less clear, type check
    return _conjugate_gradient_solve(H, g, damping, diag, max_iters, float(rel_tol), active)


def _team_emulation(kind: str, H: Tensor, g: Tensor, damping: Tensor, diag: Tensor, active: Optional[Tensor] = None,
                    max_iters: int = 20, rel_tol: float = 1e-6, threads: int = 8, lanes: int = 4):
    """Run the CUDA kernels' block-parallel algorithm on ``threads`` CPU threads (rows spread over
    groups of ``lanes``), for testing that work split on machines without a GPU. CPU tensors only."""
    op = OP_CHOLESKY if kind == "cholesky" else OP_CG
    _check(op, H, g, damping, diag, active)
    if H.device.type != "cpu":
        raise ValueError(f"{op}: the team emulation runs on the CPU; got a tensor on {H.device}")
    B, n = g.shape
    Hc, gc, dc, dgc = H.contiguous(), g.contiguous(), damping.contiguous(), diag.contiguous()
    act = active.contiguous() if active is not None else None
    x = H.new_empty((B, n))
    code = dtype_code(Hc)
    if kind == "cholesky":
        ok = torch.ones((B,), dtype=torch.bool)
        _C.batched_solve_team_emulation(_KIND_CHOLESKY, code, B, n, 0, 0.0, Hc.data_ptr(), gc.data_ptr(),
                                        dc.data_ptr(), dgc.data_ptr(), _ptr(act), x.data_ptr(), ok.data_ptr(), 0,
                                        threads, lanes)
        return x, ok
    _check_cg_options(max_iters, rel_tol)
    iters = torch.zeros((B,), dtype=torch.int32)
    rel = H.new_zeros((B,))
    _C.batched_solve_team_emulation(_KIND_CG, code, B, n, max_iters, float(rel_tol), Hc.data_ptr(), gc.data_ptr(),
                                    dc.data_ptr(), dgc.data_ptr(), _ptr(act), x.data_ptr(), iters.data_ptr(),
                                    rel.data_ptr(), threads, lanes)
    return x, iters, rel
