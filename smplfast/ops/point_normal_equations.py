"""HoloPose's DensePose term as Gauss–Newton normal equations, accumulated point by point.

Given the skeleton's state (world transforms, joint positions, the rotation and shape derivatives
that :class:`smplfast.surface.RefineProblem` computes) and each DensePose point's rest-space data,
:func:`point_normal_equations` returns the term's value and its IRLS normal equations
``H = Σ_i s_i J_iᵀ J_i``, ``g = Σ_i s_i J_iᵀ e_i`` without forming the (B, N, 2, n) Jacobian: each
point's two rows are folded into H as they are computed. :func:`point_normal_equations_reference`
is the same maths in PyTorch (the specification; it builds the Jacobian).
"""
from __future__ import annotations

import inspect
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._backend import _C, check_float, check_shape, dtype_code, target as _target
from ..geometry import MIN_DEPTH
from ._value_checks import check_once

OP = "smplfast.point_normal_equations"


def subtree_matrix(parents: Tensor, dtype) -> Tensor:
    """(J, J) with D[k, j] = 1 when joint j is in the subtree of joint k (k itself included)."""
    J = parents.shape[0]
    D = torch.zeros(J, J, dtype=dtype)
    par = parents.tolist()
    for j in range(J):  # D[k, j] = 1 when j is in the subtree of k (k itself included)
        k = j
        while k >= 0:
            D[k, j] = 1
            k = par[k]
    return D.to(parents.device)


def point_normal_equations_reference(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R=None, cam_t=None,
                                     focal=None, center=None, fixed_transl=None, weak=False, squared=False,
                                     weight=1.0, eps=1e-3) -> Tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch specification of :func:`point_normal_equations` (same arguments and outputs)."""
    B, N = v.shape[:2]
    J = A.shape[1]
    y = torch.einsum("bjrc,bnc->bnjr", A[..., :3], v) + A[:, None, :, :, 3]          # (B, N, J, 3)
    wy = w[..., None] * y
    x = wy.sum(2)
    D = subtree_matrix(parents, v.dtype)
    X = torch.einsum("kj,bnjr->bnkr", D, wy)
    W = torch.einsum("kj,bnj->bnk", D, w)
    lever = X - W[..., None] * p[:, None]                                               # (B, N, J, 3)
    if weak:
        x = x + fixed_transl[:, None]
        s = c[:, None, :1]
        xt = x[..., :2] + c[:, None, 1:]
        proj = s * xt
        P = x.new_zeros(B, N, 2, 3)
        P[..., 0, 0] = s[..., 0]
        P[..., 1, 1] = s[..., 0]
        Jc = torch.cat([xt[..., None], P[..., :2]], dim=-1)
    else:
        X3 = torch.einsum("bij,bnj->bni", cam_R, x + c[:, None]) + cam_t[:, None]
        Z = X3[..., 2:].clamp_min(MIN_DEPTH)
        proj = focal[:, None] * X3[..., :2] / Z + center[:, None]
        fz = focal[:, None] / Z
        dz = -fz * X3[..., :2] / Z
        P = fz[..., None] * cam_R[:, None, :2] + dz[..., None] * cam_R[:, None, 2:3]     # (B, N, 2, 3)
        Jc = P
    cross = torch.cross(lever[:, :, None].expand(B, N, 2, J, 3), P[:, :, :, None].expand(B, N, 2, J, 3), dim=-1)
    Jpose = torch.einsum("bnrkc,bkcq->bnrkq", cross, M).reshape(B, N, 2, 3 * J)
    dxdb = torch.einsum("bnj,bjrc->bnrc", w, A[..., :3]) @ Sd + torch.einsum("bnj,bjrs->bnrs", w, dT)
    Jrow = torch.cat([Jpose, P @ dxdb, Jc], dim=-1)                                    # (B, N, 2, n)
    e = proj - xy
    sq = (e * e).sum(-1)
    if squared:
        value = (sq * mask).sum(1) / count
        s2 = weight * mask / count[:, None]
    else:
        dist = torch.where(sq > 0, sq, 1.0).sqrt() * (sq > 0)
        value = (dist * mask).sum(1) / count
        s2 = weight * mask / count[:, None] / (2 * dist.clamp_min(eps))
    H = torch.einsum("bnri,bn,bnrj->bij", Jrow, s2, Jrow)
    g = torch.einsum("bnri,bn,bnr->bi", Jrow, s2, e)
    return value, H, g


def _check(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl, weak):
    check_float(OP, "v", v, [None, None, 3])
    B, N = v.shape[:2]
    dt, dev = v.dtype, v.device
    if not isinstance(parents, Tensor) or parents.dtype != torch.int64 or parents.device != dev:
        raise TypeError(f"{OP}: parents must be an int64 tensor on {dev}")
    check_shape(OP, "parents", parents, [None])
    J = parents.shape[0]
    check_float(OP, "dT", dT, [B, J, 3, None])
    S = dT.shape[3]
    named = [("A", A, [B, J, 3, 4]), ("p", p, [B, J, 3]), ("M", M, [B, J, 3, 3]), ("Sd", Sd, [B, N, 3, S]),
             ("w", w, [B, N, J]), ("xy", xy, [B, N, 2]), ("mask", mask, [B, N]), ("count", count, [B]),
             ("c", c, [B, 3])]
    if weak:
        named.append(("fixed_transl", fixed_transl, [B, 3]))
    else:
        named += [("cam_R", cam_R, [B, 3, 3]), ("cam_t", cam_t, [B, 3]), ("focal", focal, [B, 2]),
                  ("center", center, [B, 2])]
    for name, t, shape in named:
        if t is None:
            raise ValueError(f"{OP}: {name} is required for a {'weak-perspective' if weak else 'perspective'} camera")
        check_float(OP, name, t, shape)
        if t.dtype != dt or t.device != dev:
            raise TypeError(f"{OP}: {name} must be {dt} on {dev} (as v); got {t.dtype} on {t.device}")


def _check_parents(parents: Tensor) -> None:
    par = parents.cpu()
    J = par.shape[0]
    if J < 1 or int(par[0]) != -1 or any(not (0 <= int(par[j]) < j) for j in range(1, J)):
        raise ValueError(f"{OP}: parents must have parents[0] == -1 and 0 <= parents[j] < j; got {par.tolist()}")


@torch.library.custom_op("smplfast::point_normal_equations", mutates_args=())
def _pne(parents: Tensor, A: Tensor, p: Tensor, M: Tensor, dT: Tensor, v: Tensor, Sd: Tensor, w: Tensor, xy: Tensor,
         mask: Tensor, count: Tensor, c: Tensor, cam_R: Optional[Tensor], cam_t: Optional[Tensor],
         focal: Optional[Tensor], center: Optional[Tensor], fixed_transl: Optional[Tensor], weak: bool, squared: bool,
         weight: float, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    _check(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl, weak)
    return _launch(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl,
                   weak, squared, weight, eps)


def _outputs(v: Tensor, J: int, S: int):
    B, n = v.shape[0], 3 * J + S + 3
    return v.new_empty(B), v.new_empty(B, n, n), v.new_empty(B, n)


def _launch(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl, weak,
            squared, weight, eps, team: Optional[Tuple[int, int]] = None):
    check_once(f"{OP}:parents", (parents,), lambda: _check_parents(parents))
    B, N = v.shape[:2]
    J, S = parents.shape[0], dT.shape[3]
    outs = _outputs(v, J, S)
    if B == 0:
        return outs
    empty = v.new_empty(0)
    data_t = [parents.contiguous()] + [t.contiguous() for t in (A, p, M, dT, v, Sd, w, xy, mask, count, c)]
    data_t += [empty] * 4 + [fixed_transl.contiguous()] if weak else \
        [cam_R.contiguous(), cam_t.contiguous(), focal.contiguous(), center.contiguous(), empty]
    ptrs = [t.data_ptr() for t in data_t]
    sizes, flags, reals = [B, N, J, S], [bool(weak), bool(squared)], [float(weight), float(eps), MIN_DEPTH]
    out_ptrs = [t.data_ptr() for t in outs]
    if team is not None:
        if v.device.type != "cpu":
            raise ValueError(f"{OP}: the team emulation runs on the CPU; got v on {v.device}")
        _C.point_normal_equations_team(dtype_code(v), sizes, flags, reals, ptrs, out_ptrs, int(team[0]), int(team[1]))
        return outs
    where = _target(v)
    workspace = empty
    if v.device.type == "cuda":
        workspace = v.new_empty(_C.point_normal_equations_workspace(v.device.index or 0, sizes))
    _C.point_normal_equations(where, dtype_code(v), sizes, flags, reals, ptrs, out_ptrs, workspace.data_ptr())
    return outs


@_pne.register_fake
def _(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl, weak, squared,
      weight, eps):
    _check(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl, weak)
    return _outputs(v, parents.shape[0], dT.shape[3])


def _no_backward(ctx, *grads):
    raise RuntimeError(f"{OP} is not differentiable: it returns normal equations (use them for Gauss-Newton steps)")


_pne.register_autograd(_no_backward, setup_context=lambda ctx, inputs, output: None)


def point_normal_equations(parents: Tensor, A: Tensor, p: Tensor, M: Tensor, dT: Tensor, v: Tensor, Sd: Tensor,
                           w: Tensor, xy: Tensor, mask: Tensor, count: Tensor, c: Tensor,
                           cam_R: Optional[Tensor] = None, cam_t: Optional[Tensor] = None,
                           focal: Optional[Tensor] = None, center: Optional[Tensor] = None,
                           fixed_transl: Optional[Tensor] = None, weak: bool = False, squared: bool = False,
                           weight: float = 1.0, eps: float = 1e-3) -> Tuple[Tensor, Tensor, Tensor]:
    """The DensePose term's value (B,) and IRLS normal equations H (B, n, n), g (B, n), n = 3 J + S + 3.

    Args:
        parents (J,) int64; A (B, J, 3, 4) world transforms (posed point = A[..., :3] v + A[..., 3]);
        p (B, J, 3) posed joints; M (B, J, 3, 3) d(world rotation)/d(axis-angle) per joint; dT (B, J, 3, S)
        the skeleton's shape derivative (as :class:`smplfast.surface.RefineProblem` builds them).
        v (B, N, 3) rest positions of the points, Sd (B, N, 3, S) their shape basis, w (B, N, J) skinning
        weights, xy (B, N, 2) targets, mask (B, N) 0/1, count (B,) the mean's normaliser.
        c (B, 3): the camera part of x (perspective: body translation, with cam_R (B, 3, 3), cam_t (B, 3),
        focal (B, 2), center (B, 2); ``weak``: [s, tx, ty], with fixed_transl (B, 3)).
        squared: |e|² per point instead of |e| (then no reweighting); weight: the term's weight (in H, g,
        not in the value); eps: the IRLS floor on |e|.

    Float32 or float64, CPU or CUDA, not differentiable.
    """
    return _pne(parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl,
                bool(weak), bool(squared), float(weight), float(eps))


def _point_normal_equations_team(*args, threads: int, lanes: int, **kwargs):
    """:func:`point_normal_equations` through the CUDA kernel's block path on ``threads`` CPU threads
    (tests: the GPU's work split without a GPU)."""
    bound = inspect.signature(point_normal_equations).bind(*args, **kwargs)
    bound.apply_defaults()
    ordered = list(bound.arguments.values())
    _check(*ordered[:18])
    return _launch(*ordered, team=(threads, lanes))
