"""SMPLify's Levenberg–Marquardt in one kernel call: every iteration of every sample on the device.

A problem is a batch of independent least-squares fits over parameter vectors ``x`` (B, n). Each
sample's objective is the sum of

* per view ``v``: :func:`~smplfast.ops.project_keypoints`' squared residuals, the kernel's inputs
  ``[pose (3 J), betas (nb), transl (3)]`` taken from ``base[b, v]`` except the columns mapped by
  ``cols[v]`` (kernel column ``q`` reads ``x[cols[v, q]]``; -1 = fixed);
* optional priors on columns of ``x``: the max-mixture GMM pose prior and SPIN's angle prior on the
  69 body-pose entries at ``body_col``, the shape prior and HoloPose's shape bound on the ``nb``
  betas at ``shape_col``, Pavlakos' anchor at ``anchor_col``, a depth term at ``depth_col``;

and the loop is :func:`smplfast.fitting.lm.levenberg_marquardt`'s, per sample, with the same damping,
acceptance and stopping rules. The Jacobian is never stored for the batch: each keypoint's two rows
are folded into JᵀJ and Jᵀr as they are computed. A whole stage is one launch and no host
synchronisation happens inside it, so a fit can be captured in a CUDA graph.

The reference is the unfused path, :class:`smplfast.fitting.SMPLify` with ``fused=False``: the same
objective built from ``project_keypoints``, the prior modules and the batched solve, driven from
Python.
"""
from __future__ import annotations

import inspect
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._backend import _C, check_float, check_shape, dtype_code, target as _target
from ._value_checks import check_once, value_checks_enabled
from .keypoint_projection import _check_indices, _model_tensors
from .keypoint_projection import _check as _kp_check
from .keypoint_projection import OP as _KP_OP

OP = "smplfast.lm_fit"
BODY_DIM = 69  # the GMM and angle priors act on SMPL's 23 body joints
SOLVERS = {"cholesky": 0, "cg": 1}


def _empty(like: Tensor, dtype=None) -> Tensor:
    return torch.empty(0, dtype=dtype or like.dtype, device=like.device)


def _check(model, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, gmm, anchor_target,
           depth_target, active, ints: List[int]) -> None:
    """Shapes, dtypes, devices and column ranges (no tensor values: this also runs on fake tensors)."""
    check_float(OP, "x0", x0, [None, None])
    B, n = x0.shape
    dt, dev = x0.dtype, x0.device
    parents, joint_shapedirs, regressor_ptr = model[0], model[2], model[8]
    if not all(isinstance(t, Tensor) for t in (parents, joint_shapedirs, regressor_ptr)) or \
            parents.dim() != 1 or joint_shapedirs.dim() != 3 or regressor_ptr.dim() != 1:
        raise ValueError(f"{OP}: model.parents, joint_shapedirs and regressor_ptr must be 1-, 3- and 1-dimensional "
                         "tensors (a KeypointModel)")
    J, nb = parents.shape[0], joint_shapedirs.shape[2]
    Nk = regressor_ptr.shape[0] - 1
    # The model's types, devices and shapes, checked as project_keypoints checks them (on an empty batch of
    # x0's dtype and device).
    e = x0.new_empty
    _kp_check(OP, model, True, e(0, J, 3), e(0, nb), e(0, 3), e(0, 3, 3), e(0, 3), e(0, 2), e(0, 2), e(0, Nk, 2),
              e(0, Nk), 0.0)
    P = 3 * J + nb + 3
    check_float(OP, "base", base, [B, None, P])
    V = base.shape[1]
    if V < 1:
        raise ValueError(f"{OP}: base must have at least one view; got shape {tuple(base.shape)}")
    if not isinstance(cols, Tensor) or cols.dtype != torch.int32 or cols.device != dev:
        raise TypeError(f"{OP}: cols must be an int32 tensor on {dev}")
    check_shape(OP, "cols", cols, [V, P])
    for name, t, shape in (("cam_rot", cam_rot, [B, V, 3, 3]), ("cam_transl", cam_transl, [B, V, 3]),
                           ("focal", focal, [B, V, 2]), ("center", center, [B, V, 2]),
                           ("target", target, [B, V, Nk, 2]), ("weight", weight, [B, V, Nk])):
        check_float(OP, name, t, shape)
    body_col, M, shape_col, anchor_col, anchor_len, depth_col = ints
    if body_col >= 0:
        if body_col + BODY_DIM > n:
            raise ValueError(f"{OP}: body_col + 69 must be <= n = {n}; got body_col = {body_col}")
        if M < 1:
            raise ValueError(f"{OP}: the pose prior needs at least one Gaussian")
        means, prec_chol, precisions, constants = gmm
        for name, t, shape in (("gmm means", means, [M, BODY_DIM]), ("gmm prec_chol", prec_chol, [M, BODY_DIM, BODY_DIM]),
                               ("gmm precisions", precisions, [M, BODY_DIM, BODY_DIM]), ("gmm constants", constants, [M])):
            check_float(OP, name, t, shape)
    if shape_col >= 0 and shape_col + nb > n:
        raise ValueError(f"{OP}: shape_col + nb must be <= n = {n}; got shape_col = {shape_col}, nb = {nb}")
    if anchor_col >= 0:
        if anchor_len < 1 or anchor_col + anchor_len > n:
            raise ValueError(f"{OP}: the anchor's columns [{anchor_col}, {anchor_col + anchor_len}) must lie in [0, {n})")
        check_float(OP, "anchor_target", anchor_target, [B, anchor_len])
    if depth_col >= 0:
        if depth_col >= n:
            raise ValueError(f"{OP}: depth_col must be < n = {n}; got {depth_col}")
        check_float(OP, "depth_target", depth_target, [B])
    tensors = [("base", base), ("cam_rot", cam_rot), ("cam_transl", cam_transl), ("focal", focal),
               ("center", center), ("target", target), ("weight", weight)]
    if body_col >= 0:
        tensors += list(zip(("gmm means", "gmm prec_chol", "gmm precisions", "gmm constants"), gmm))
    if anchor_col >= 0:
        tensors.append(("anchor_target", anchor_target))
    if depth_col >= 0:
        tensors.append(("depth_target", depth_target))
    for name, t in tensors:
        if t.device != dev or t.dtype != dt:
            raise TypeError(f"{OP}: {name} must be {dt} on {dev} (as x0); got {t.dtype} on {t.device}")
    if active is not None:
        if not isinstance(active, Tensor) or active.dtype != torch.bool or active.device != dev:
            raise TypeError(f"{OP}: active must be a bool tensor on {dev}")
        check_shape(OP, "active", active, [B])


def _check_cols(cols: Tensor, n: int) -> None:
    """Column values: in [-1, n) and no x column twice within a view (one small host copy)."""
    c = cols.cpu()
    if c.numel() and (int(c.min()) < -1 or int(c.max()) >= n):
        raise ValueError(f"{OP}: cols must lie in [-1, n) = [-1, {n}); got values in [{int(c.min())}, {int(c.max())}]")
    for v, row in enumerate(c):
        mapped = row[row >= 0]
        if mapped.unique().numel() != mapped.numel():
            raise ValueError(f"{OP}: cols[{v}] maps two kernel columns to the same x column")


def _sorted_columns(cols: Tensor) -> Tensor:
    """Per view, the mapped kernel columns in increasing x column, then -1 (on the device, no sync)."""
    big = torch.iinfo(torch.int32).max
    key = torch.where(cols >= 0, cols, torch.full_like(cols, big))
    order = torch.argsort(key, dim=1, stable=True)
    return torch.where(torch.gather(cols, 1, order) >= 0, order.to(torch.int32), torch.full_like(cols, -1))


def _outputs_like(x0: Tensor):
    B = x0.shape[0]
    return (x0.new_empty(x0.shape), x0.new_empty((B,)), torch.empty(B, dtype=torch.int64, device=x0.device),
            torch.empty(B, dtype=torch.bool, device=x0.device))


def _launch(model, has_pose_blend, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, sigma, gmm,
            anchor_target, depth_target, active, ints, reals, team: Optional[Tuple[int, int]] = None):
    B, n = x0.shape
    parents, lbs_idx, regressor_col = model[0], model[6], model[9]
    J, nb, K = parents.shape[0], model[2].shape[2], lbs_idx.shape[1]
    Nk, nnz, V = model[8].shape[0] - 1, regressor_col.shape[0], base.shape[1]
    S = model[3].shape[0]
    check_once(f"{_KP_OP}:S={S}", (parents, lbs_idx, model[8], regressor_col),
               lambda: _check_indices(OP, parents, lbs_idx, model[8], regressor_col, S))
    if value_checks_enabled(x0.device):  # always on the CPU
        _check_cols(cols, n)
        # A non-finite start would make every step fail and the sample "stall" with a NaN objective.
        live = x0 if active is None else x0[active]
        if not bool(torch.isfinite(live).all()):
            raise ValueError(f"{OP}: x0 contains NaN or Inf in an active sample; a fit must start from finite "
                             "parameters (mark the sample inactive instead)")
    else:
        check_once(f"{OP}:cols:n={n}", (cols,), lambda: _check_cols(cols, n))
    outs = _outputs_like(x0)
    if B == 0:
        return outs
    outs[0].copy_(x0)
    order = _sorted_columns(cols)
    body_col = ints[0]
    gmm_c = [t.contiguous() for t in gmm] if body_col >= 0 else [_empty(x0)] * 4
    act = active.to(torch.uint8).contiguous() if active is not None else None
    data_t = [base.contiguous(), cols.contiguous(), order, cam_rot.contiguous(), cam_transl.contiguous(),
              focal.contiguous(), center.contiguous(), target.contiguous(), weight.contiguous(), *gmm_c,
              anchor_target.contiguous(), depth_target.contiguous()]
    model_c = [t.contiguous() for t in model]
    all_ints = [B, V, n, J, nb, K, Nk, nnz, *ints]
    data = [t.data_ptr() for t in data_t] + [act.data_ptr() if act is not None else 0]
    out_ptrs = [t.data_ptr() for t in outs]
    model_ptrs = [t.data_ptr() for t in model_c]
    if team is not None:
        if x0.device.type != "cpu":
            raise ValueError(f"{OP}: the team emulation runs on the CPU; got x0 on {x0.device}")
        _C.lm_fit_team(dtype_code(x0), all_ints, bool(has_pose_blend), [float(sigma), *reals], model_ptrs, data,
                       out_ptrs, int(team[0]), int(team[1]))
        return outs
    where = _target(x0)  # first: a CUDA tensor on a build without CUDA kernels gets its clear error here
    workspace, workspace_int = _empty(x0), _empty(x0, torch.int32)
    if x0.device.type == "cuda":
        n_float, n_int = _C.lm_fit_workspace(dtype_code(x0), x0.device.index or 0, all_ints, bool(has_pose_blend))
        workspace = x0.new_empty((n_float,))
        workspace_int = torch.empty(n_int, dtype=torch.int32, device=x0.device)
    _C.lm_fit(where, dtype_code(x0), all_ints, bool(has_pose_blend), [float(sigma), *reals], model_ptrs, data,
              out_ptrs, workspace.data_ptr(), workspace_int.data_ptr())
    return outs


@torch.library.custom_op("smplfast::lm_fit", mutates_args=())
def _lm_fit(parents: Tensor, joint_template: Tensor, joint_shapedirs: Tensor, vertex_template: Tensor,
            vertex_shapedirs: Tensor, vertex_posedirs: Tensor, lbs_idx: Tensor, lbs_weights: Tensor,
            regressor_ptr: Tensor, regressor_col: Tensor, regressor_val: Tensor, has_pose_blend: bool, x0: Tensor,
            base: Tensor, cols: Tensor, cam_rot: Tensor, cam_transl: Tensor, focal: Tensor, center: Tensor,
            target: Tensor, weight: Tensor, sigma: float, gmm_means: Tensor, gmm_prec_chol: Tensor,
            gmm_precisions: Tensor, gmm_constants: Tensor, anchor_target: Tensor, depth_target: Tensor,
            active: Optional[Tensor], ints: List[int], reals: List[float]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    model = (parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
             lbs_weights, regressor_ptr, regressor_col, regressor_val)
    gmm = (gmm_means, gmm_prec_chol, gmm_precisions, gmm_constants)
    _check(model, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, gmm, anchor_target,
           depth_target, active, ints[:6])
    return _launch(model, has_pose_blend, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, sigma,
                   gmm, anchor_target, depth_target, active, ints, reals)


@_lm_fit.register_fake
def _(parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
      lbs_weights, regressor_ptr, regressor_col, regressor_val, has_pose_blend, x0, base, cols, cam_rot, cam_transl,
      focal, center, target, weight, sigma, gmm_means, gmm_prec_chol, gmm_precisions, gmm_constants, anchor_target,
      depth_target, active, ints, reals):
    model = (parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
             lbs_weights, regressor_ptr, regressor_col, regressor_val)
    _check(model, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight,
           (gmm_means, gmm_prec_chol, gmm_precisions, gmm_constants), anchor_target, depth_target, active, ints[:6])
    return _outputs_like(x0)


def _no_backward(ctx, *grads):
    raise RuntimeError(f"{OP} is not differentiable: it returns the result of an optimisation")


_lm_fit.register_autograd(_no_backward, setup_context=lambda ctx, inputs, output: None)


def _arguments(model, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, sigma, gmm, pose_w2,
               angle_w2, body_col, shape_col, shape_w2, bound_w2, bound, anchor_col, anchor_target, anchor_w2,
               anchor_sigma, depth_col, depth_target, depth_w2, active, max_iters, ftol, xtol, gtol, init_damping,
               max_damping, linear_solver, cg_iters, cg_rel_tol):
    if linear_solver not in SOLVERS:
        raise ValueError(f"{OP}: linear_solver must be 'cholesky' or 'cg'; got {linear_solver!r}")
    for name, v in (("max_iters", max_iters), ("cg_iters", cg_iters), ("body_col", body_col), ("shape_col", shape_col),
                    ("anchor_col", anchor_col), ("depth_col", depth_col)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{OP}: {name} must be an int; got {type(v).__name__}")
    if max_iters < 0 or cg_iters < 1:
        raise ValueError(f"{OP}: max_iters must be >= 0 and cg_iters >= 1; got {max_iters} and {cg_iters}")
    reals = [pose_w2, angle_w2, shape_w2, bound_w2, bound, anchor_w2, anchor_sigma, depth_w2, ftol, xtol, gtol,
             init_damping, max_damping, cg_rel_tol]
    names = ["pose_w2", "angle_w2", "shape_w2", "bound_w2", "bound", "anchor_w2", "anchor_sigma", "depth_w2", "ftol",
             "xtol", "gtol", "init_damping", "max_damping", "cg_rel_tol"]
    for name, v in zip(["sigma"] + names, [sigma] + reals):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{OP}: {name} must be a finite number >= 0; got {v!r}")
    if anchor_col >= 0 and not anchor_sigma > 0:
        raise ValueError(f"{OP}: anchor_sigma must be > 0; got {anchor_sigma}")
    if body_col >= 0:
        if gmm is None or len(gmm) != 4:
            raise ValueError(f"{OP}: body_col >= 0 needs gmm = (means, prec_chol, precisions, constants)")
        M = int(gmm[0].shape[0]) if gmm[0].dim() >= 1 else 0
    else:
        gmm, M = (_empty(x0),) * 4, 0
    anchor_len = int(anchor_target.shape[1]) if anchor_col >= 0 and anchor_target is not None and anchor_target.dim() == 2 else 0
    if anchor_col < 0 or anchor_target is None:
        anchor_target = _empty(x0)
    if depth_col < 0 or depth_target is None:
        depth_target = _empty(x0)
    ints = [int(body_col), M, int(shape_col), int(anchor_col), anchor_len, int(depth_col), int(max_iters),
            SOLVERS[linear_solver], int(cg_iters)]
    return (*_model_tensors(model), bool(model.has_pose_blend), x0, base, cols, cam_rot, cam_transl, focal, center,
            target, weight, float(sigma), *gmm, anchor_target, depth_target, active, ints, [float(r) for r in reals])


def lm_fit(model, x0: Tensor, *, base: Tensor, cols: Tensor, cam_rot: Tensor, cam_transl: Tensor, focal: Tensor,
           center: Tensor, target: Tensor, weight: Tensor, sigma: float, gmm: Optional[Tuple[Tensor, ...]] = None,
           pose_w2: float = 0.0, angle_w2: float = 0.0, body_col: int = -1, shape_col: int = -1,
           shape_w2: float = 0.0, bound_w2: float = 0.0, bound: float = 2.0, anchor_col: int = -1,
           anchor_target: Optional[Tensor] = None, anchor_w2: float = 0.0, anchor_sigma: float = 0.2,
           depth_col: int = -1, depth_target: Optional[Tensor] = None, depth_w2: float = 0.0,
           active: Optional[Tensor] = None, max_iters: int = 30, ftol: float = 1e-6, xtol: float = 1e-8,
           gtol: float = 1e-9, init_damping: float = 1e-3, max_damping: float = 1e10, linear_solver: str = "cholesky",
           cg_iters: int = 20, cg_rel_tol: float = 1e-6) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run Levenberg–Marquardt to the end for every sample in one kernel call.

    Args:
        model: a :class:`~smplfast.fitting.KeypointModel` (J joints, nb betas, Nk keypoints; P = 3 J + nb + 3).
        x0: (B, n) starting parameters, finite for every active sample (checked on the CPU, and on CUDA
            inside :func:`smplfast.ops.value_checks`).
        base: (B, V, P) the kernel inputs [pose (joint-major axis-angle), betas, transl] of each view;
            cols: (V, P) int32, the x column each kernel column reads (-1: from base). Within a view no
            two kernel columns may read the same x column.
        cam_rot (B, V, 3, 3), cam_transl (B, V, 3), focal (B, V, 2), center (B, V, 2), target (B, V, Nk, 2),
            weight (B, V, Nk), sigma: each view's camera, 2D keypoints and weights, as :func:`project_keypoints`.
        body_col: x column of the first of the 69 body-pose entries for the GMM prior (``gmm`` = (means
            (M, 69), prec_chol (M, 69, 69), precisions (M, 69, 69), constants (M,)), as
            :class:`~smplfast.fitting.MaxMixturePrior`'s buffers; weight ``pose_w2``) and the angle prior
            (``angle_w2``); -1 for neither.
        shape_col: x column of the first beta for the shape prior (``shape_w2``) and shape bound
            (``bound_w2``, ``bound``); anchor_col, anchor_target (B, m), anchor_w2, anchor_sigma: the
            Geman–McClure anchor on x[anchor_col : anchor_col + m]; depth_col, depth_target (B,), depth_w2:
            the depth term. All weights are squared weights (SPIN's w²).
        active: (B,) bool; inactive samples keep x0 with objective NaN, 0 iterations, not converged.
        max_iters, ftol, xtol, gtol, init_damping, max_damping, linear_solver, cg_iters: as
            :class:`~smplfast.fitting.lm.LMOptions`; cg_rel_tol: the CG's relative residual target.

    Returns:
        x (B, n), objective (B,), iterations (B,) int64, converged (B,) bool.

    Float32 or float64, CPU or CUDA, not differentiable. Model index tensors and ``cols`` are validated
    once per tensor on CUDA (every call on the CPU; a host read each time they are new): to capture a
    call in a CUDA graph, run it once first with the same model and ``cols`` tensors, then capture.
    """
    return _lm_fit(*_arguments(model, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, sigma, gmm,
                               pose_w2, angle_w2, body_col, shape_col, shape_w2, bound_w2, bound, anchor_col,
                               anchor_target, anchor_w2, anchor_sigma, depth_col, depth_target, depth_w2, active,
                               max_iters, ftol, xtol, gtol, init_damping, max_damping, linear_solver, cg_iters,
                               cg_rel_tol))


def _lm_fit_team(model, x0: Tensor, threads: int, lanes: int, **kwargs) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`lm_fit` through the CUDA kernel's block-parallel path, run by ``threads`` CPU threads with
    ``lanes`` per row group (tests: the GPU's work split and barriers on a machine without a GPU)."""
    bound = inspect.signature(lm_fit).bind(model, x0, **kwargs)
    bound.apply_defaults()
    args = _arguments(**bound.arguments)
    tensors = args[:11]
    (has_pose_blend, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, sigma, gm, gp, gq, gc,
     anchor_target, depth_target, active, ints, reals) = args[11:]
    _check(tensors, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight, (gm, gp, gq, gc),
           anchor_target, depth_target, active, ints[:6])
    return _launch(tensors, has_pose_blend, x0, base, cols, cam_rot, cam_transl, focal, center, target, weight,
                   sigma, (gm, gp, gq, gc), anchor_target, depth_target, active, ints, reals, team=(threads, lanes))
