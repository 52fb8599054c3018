"""Batched Levenberg–Marquardt over independent least-squares problems (one per sample).

Each sample keeps its own damping, acceptance test and convergence state; samples that have
converged drop out of the active set, so they stop costing work. A problem supplies, for a subset of
samples, its objective (the true sum of squares, robust terms included) and the Gauss–Newton normal
equations H = JᵀJ, g = Jᵀr at that point; the damped system (H + λ D) δ = −g is solved by the
batched Cholesky kernel, or by the fixed-budget conjugate-gradient kernel.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from .. import ops

# evaluate(x (b, n), rows (b,) long) -> (objective (b,), H (b, n, n), g (b, n))
EvaluateFn = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]


@dataclass
class LMOptions:
    """Stopping rules and damping schedule.

    A sample stops when an accepted step lowers its objective by less than ``ftol`` relative to it,
    when its step is below ``xtol`` relative to its parameters, when its gradient norm falls below
    ``gtol``, when its damping exceeds ``max_damping`` (no step helps any more), or after ``max_iters``.
    """

    max_iters: int = 30
    ftol: float = 1e-6
    xtol: float = 1e-8
    gtol: float = 1e-9
    init_damping: float = 1e-3
    max_damping: float = 1e10
    linear_solver: str = "cholesky"  # or "cg"
    cg_iters: int = 20
    record_history: bool = False
    # Samples that stop are frozen at once (no further change to any of their values) but leave the
    # batch only every `check_every` iterations: each removal reads a flag on the host, a device
    # synchronisation on CUDA. Any value gives the same results (up to the rounding of batched kernels,
    # whose blocking depends on the batch size); larger ones sync less and evaluate the stopped samples
    # a few extra times.
    check_every: int = 1


@dataclass
class LMResult:
    x: Tensor                 # (B, n) final parameters
    objective: Tensor         # (B,) final objective
    iterations: Tensor        # (B,) iterations run (accepted or not)
    converged: Tensor         # (B,) bool: stopped by a convergence test, not by max_iters
    history: List[Tuple[float, Tensor]] = field(default_factory=list)  # (seconds, objective (B,)) per iteration


def levenberg_marquardt(evaluate: EvaluateFn, x0: Tensor, options: Optional[LMOptions] = None,
                        active: Optional[Tensor] = None) -> LMResult:
    """Minimise each sample's sum of squares from ``x0`` (B, n); ``active`` (B,) bool leaves the other
    samples at ``x0`` with zero iterations and ``converged=False``."""
    opt = options or LMOptions()
    if opt.linear_solver not in ("cholesky", "cg"):
        raise ValueError(f"linear_solver must be 'cholesky' or 'cg'; got {opt.linear_solver!r}")
    if isinstance(opt.check_every, bool) or not isinstance(opt.check_every, int) or opt.check_every < 1:
        raise ValueError(f"check_every must be an int >= 1; got {opt.check_every!r}")
    B, n = x0.shape
    device, dtype = x0.device, x0.dtype
    x = x0.clone()
    iterations = torch.zeros(B, dtype=torch.long, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    objective = torch.full((B,), float("nan"), dtype=dtype, device=device)
    live = torch.ones(B, dtype=torch.bool, device=device) if active is None else active.clone()
    history: List[Tuple[float, Tensor]] = []
    t0 = time.perf_counter()

    rows = torch.nonzero(live).flatten()
    if rows.numel() == 0:
        return LMResult(x, objective, iterations, converged, history)
    f, H, g = evaluate(x[rows], rows)
    objective[rows] = f
    lam = torch.full((rows.numel(),), opt.init_damping, dtype=dtype, device=device)
    nu = torch.full_like(lam, 2.0)
    if opt.record_history:
        history.append((time.perf_counter() - t0, objective.clone()))

    frozen = torch.zeros(rows.numel(), dtype=torch.bool, device=device)  # stopped, still in the batch
    for it in range(opt.max_iters):
        if rows.numel() == 0:
            break
        # Marquardt's scaling: damp each parameter by its own curvature (floored, for unused ones).
        diag = torch.diagonal(H, dim1=1, dim2=2)
        D = torch.maximum(diag, 1e-6 * diag.mean(dim=1, keepdim=True).clamp_min(1e-12))
        if opt.linear_solver == "cholesky":
            step, ok = ops.damped_cholesky_solve(H, -g, lam, D)
        else:
            step, _, _ = ops.conjugate_gradient_solve(H, -g, lam, D, max_iters=opt.cg_iters)
            ok = torch.isfinite(step).all(dim=1)
        moving = ~frozen
        x_rows = x[rows]
        x_new = torch.where(moving[:, None], x_rows + step, x_rows)  # a stopped sample is evaluated where it is
        f_new, H_new, g_new = evaluate(x_new, rows)
        iterations[rows] += moving.long()
        # Gain ratio: actual decrease over the decrease the linear model predicts.
        predicted = -(2.0 * (step * g).sum(dim=1) + (step * (H @ step.unsqueeze(-1)).squeeze(-1)).sum(dim=1))
        accept = moving & ok & torch.isfinite(f_new) & (f_new < f)
        rho = (f - f_new) / predicted.clamp_min(torch.finfo(dtype).tiny)
        lam = torch.where(moving, torch.where(accept, lam * torch.clamp(1 - (2 * rho - 1) ** 3, min=1.0 / 3.0),
                                              lam * nu), lam)
        nu = torch.where(moving, torch.where(accept, torch.full_like(nu, 2.0), nu * 2), nu)
        small_f = accept & ((f - f_new) <= opt.ftol * f.abs())
        small_x = step.norm(dim=1) <= opt.xtol * (x_rows.norm(dim=1) + opt.xtol)
        small_g = g.abs().amax(dim=1) <= opt.gtol
        stalled = lam > opt.max_damping
        f = torch.where(accept, f_new, f)
        x_rows = torch.where(accept[:, None], x_new, x_rows)
        H = torch.where(accept[:, None, None], H_new, H)
        g = torch.where(accept[:, None], g_new, g)
        x[rows] = x_rows
        objective[rows] = f
        done = moving & (small_f | small_x | small_g | stalled)
        converged[rows] = converged[rows] | done
        frozen = frozen | done
        if opt.record_history:
            history.append((time.perf_counter() - t0, objective.clone()))
        if (it + 1) % opt.check_every == 0 and bool(frozen.any()):
            keep = ~frozen
            rows, f, H, g, lam, nu, frozen = rows[keep], f[keep], H[keep], g[keep], lam[keep], nu[keep], frozen[keep]
    return LMResult(x, objective, iterations, converged, history)
