"""Projected body-model keypoints, their robust 2D residuals and the residuals' analytic Jacobian.

This is the inner step of a Gauss-Newton / Levenberg-Marquardt SMPLify: one call gives, for a batch
of (pose, betas, transl, camera) states, each keypoint's weighted Geman-McClure residual against a 2D
target and its derivative with respect to every pose, shape and translation parameter.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from .._backend import _C, check_float, check_shape, dtype_code, target as _target
from ..geometry import MIN_DEPTH  # camera-space depth below which a point is clamped (zero depth derivative there)
from ._value_checks import check_once
from .kinematic_chain import kinematic_chain_reference
from .rodrigues import rodrigues_reference
from .sparse_lbs import sparse_lbs_reference

OP = "smplfast.project_keypoints"
MAX_JOINTS = int(_C.build_info()["max_joints"])

# KeypointModel's tensors in the order the kernel takes them.
_MODEL_FIELDS = ("parents", "joint_template", "joint_shapedirs", "vertex_template", "vertex_shapedirs",
                 "vertex_posedirs", "lbs_idx", "lbs_weights", "regressor_ptr", "regressor_col", "regressor_val")
_INDEX_DTYPES = {"parents": torch.int64, "lbs_idx": torch.int32, "regressor_ptr": torch.int32,
                 "regressor_col": torch.int32}


def _robust(e: Tensor, sigma: float) -> Tensor:
    return sigma * e / torch.sqrt(sigma * sigma + e * e) if sigma > 0 else e


def _reference_forward(model, pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight, sigma):
    B, J = pose.shape[:2]
    Nk = model.num_keypoints
    R = rodrigues_reference(pose)
    rest = model.joint_template + torch.einsum("jcn,bn->bjc", model.joint_shapedirs, betas)
    posed, transforms = kinematic_chain_reference(R, rest, model.parents)
    v = model.vertex_template + torch.einsum("scn,bn->bsc", model.vertex_shapedirs, betas)
    if model.has_pose_blend and J > 1:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (R[:, 1:] - eye).reshape(B, -1)
        v = v + torch.einsum("scq,bq->bsc", model.vertex_posedirs, pose_feature)
    verts = sparse_lbs_reference(transforms, v, model.lbs_idx, model.lbs_weights, torch.zeros_like(transl))
    points = torch.cat([posed, verts], dim=1)  # (B, J + S, 3)
    counts = (model.regressor_ptr[1:] - model.regressor_ptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(Nk, device=pose.device), counts)
    contrib = model.regressor_val[:, None] * points[:, model.regressor_col.long()]
    keypoints = torch.zeros(B, Nk, 3, dtype=pose.dtype, device=pose.device).index_add(1, rows, contrib)
    keypoints3d = keypoints + transl[:, None]
    X = torch.einsum("bij,bkj->bki", cam_rot, keypoints3d) + cam_transl[:, None]
    Z = torch.clamp(X[..., 2:], min=MIN_DEPTH)
    points2d = focal[:, None] * X[..., :2] / Z + center[:, None]
    residual = weight[..., None] * _robust(points2d - target, sigma)
    return residual, points2d, keypoints3d


def project_keypoints_reference(model, pose: Tensor, betas: Tensor, transl: Tensor, cam_rot: Tensor,
                                cam_transl: Tensor, focal: Tensor, center: Tensor, target: Tensor, weight: Tensor,
                                sigma: float, compute_jacobian: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pure-PyTorch specification of :func:`project_keypoints` (same arguments and outputs).

    Forward: rodrigues (smplx's convention) -> rest joints ``joint_template + joint_shapedirs @ betas``
    -> kinematic chain -> support vertices (shape and, when the model has them, pose blend shapes)
    skinned -> keypoints = sparse rows over [posed joints; support vertices] -> ``+ transl`` ->
    camera ``cam_rot @ x + cam_transl`` -> ``focal * xy / max(z, 1e-4) + center`` -> residual
    ``weight * sigma e / sqrt(sigma^2 + e^2)`` (``weight * e`` for ``sigma == 0``), e = points2d - target.
    The Jacobian is autograd's (``torch.func.jacrev``) of that forward."""
    _check(OP + "_reference", _model_tensors(model), bool(model.has_pose_blend), pose, betas, transl, cam_rot,
           cam_transl, focal, center, target, weight, sigma)
    args = (cam_rot, cam_transl, focal, center, target, weight, sigma)
    residual, points2d, keypoints3d = _reference_forward(model, pose, betas, transl, *args)
    B, Nk = residual.shape[:2]
    J, nb = pose.shape[1], betas.shape[1]
    if not compute_jacobian:
        return residual, residual.new_zeros(B, Nk, 2, 0), points2d, keypoints3d
    P = 3 * J + nb + 3
    if B == 0:
        return residual, residual.new_zeros(0, Nk, 2, P), points2d, keypoints3d

    def summed(params):
        # Samples are independent, so d(sum over the batch)/d params[b] is sample b's Jacobian.
        pose_, betas_, transl_ = params[:, :3 * J].reshape(B, J, 3), params[:, 3 * J:3 * J + nb], params[:, 3 * J + nb:]
        return _reference_forward(model, pose_, betas_, transl_, *args)[0].sum(0)

    params = torch.cat([pose.reshape(B, 3 * J), betas, transl], dim=1).detach()
    jac = torch.func.jacrev(summed)(params)  # (Nk, 2, B, P)
    return residual, jac.permute(2, 0, 1, 3).contiguous(), points2d, keypoints3d


def _model_tensors(model) -> Tuple[Tensor, ...]:
    # Duck-typed (no import of smplfast.fitting here: it builds on these ops).
    missing = [f for f in _MODEL_FIELDS + ("has_pose_blend",) if not hasattr(model, f)]
    if missing:
        raise TypeError(f"{OP}: model must be a smplfast.fitting.KeypointModel (see KeypointModel.from_smpl); "
                        f"got {type(model).__name__} without .{missing[0]}")
    return tuple(getattr(model, f) for f in _MODEL_FIELDS)


def _check(op, model, has_pose_blend, pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight,
           sigma) -> None:
    """Shapes, dtypes and devices (no values: this also runs on fake tensors)."""
    check_float(op, "pose", pose, [None, None, 3])
    B, J = pose.shape[:2]
    (parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
     lbs_weights, regressor_ptr, regressor_col, regressor_val) = model
    for name, t in zip(_MODEL_FIELDS, model):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: model.{name} must be a torch.Tensor; got {type(t).__name__}")
        want = _INDEX_DTYPES.get(name, pose.dtype)
        if t.device != pose.device or t.dtype != want:
            raise TypeError(
                f"{op}: model.{name} must be {want} on {pose.device} (the model's float tensors must match pose's "
                f"dtype and device; use model.to(device=pose.device, dtype=pose.dtype)); got {t.dtype} on {t.device}")
    check_shape(op, "model.parents", parents, [None])
    Jm = parents.shape[0]
    if J != Jm:
        raise ValueError(f"{op}: pose must have shape (B, {Jm}, 3) for a model with {Jm} joints; "
                         f"got {tuple(pose.shape)}")
    if not 1 <= J <= MAX_JOINTS:
        raise ValueError(f"{op}: the model must have between 1 and {MAX_JOINTS} joints; got {J}")
    check_shape(op, "model.joint_template", joint_template, [J, 3])
    check_shape(op, "model.joint_shapedirs", joint_shapedirs, [J, 3, None])
    nb = joint_shapedirs.shape[2]
    check_shape(op, "model.vertex_template", vertex_template, [None, 3])
    S = vertex_template.shape[0]
    check_shape(op, "model.vertex_shapedirs", vertex_shapedirs, [S, 3, nb])
    check_shape(op, "model.vertex_posedirs", vertex_posedirs, [S, 3, 9 * (J - 1)])
    check_shape(op, "model.lbs_idx", lbs_idx, [S, None])
    check_shape(op, "model.lbs_weights", lbs_weights, [S, lbs_idx.shape[1]])
    check_shape(op, "model.regressor_ptr", regressor_ptr, [None])
    if regressor_ptr.shape[0] < 1:
        raise ValueError(f"{op}: model.regressor_ptr must have Nk + 1 >= 1 entries; "
                         f"got shape {tuple(regressor_ptr.shape)}")
    Nk = regressor_ptr.shape[0] - 1
    check_shape(op, "model.regressor_col", regressor_col, [None])
    check_shape(op, "model.regressor_val", regressor_val, [regressor_col.shape[0]])
    check_float(op, "betas", betas, [B, nb])
    check_float(op, "transl", transl, [B, 3])
    check_float(op, "cam_rot", cam_rot, [B, 3, 3])
    check_float(op, "cam_transl", cam_transl, [B, 3])
    check_float(op, "focal", focal, [B, 2])
    check_float(op, "center", center, [B, 2])
    if target.dim() == 3 and target.shape[0] == B and target.shape[2] == 2 and target.shape[1] != Nk:
        raise ValueError(f"{op}: target has {target.shape[1]} keypoints but the model has {Nk}; "
                         f"target must have shape ({B}, {Nk}, 2)")
    check_float(op, "target", target, [B, Nk, 2])
    check_float(op, "weight", weight, [B, Nk])
    for name, t in (("betas", betas), ("transl", transl), ("cam_rot", cam_rot), ("cam_transl", cam_transl),
                    ("focal", focal), ("center", center), ("target", target), ("weight", weight)):
        if t.device != pose.device:
            raise ValueError(f"{op}: {name} is on {t.device} but pose is on {pose.device}")
        if t.dtype != pose.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but pose has {pose.dtype}")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"{op}: sigma must be a float; got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{op}: sigma must be a finite number >= 0 (0: plain residuals); got {sigma}")


def _check_indices(op, parents, lbs_idx, regressor_ptr, regressor_col, S) -> None:
    """Index values the kernel trusts (on CUDA one small host copy, so one device sync); run once per
    set of model tensors by :func:`~smplfast.ops._value_checks.check_once`."""
    J = parents.shape[0]
    tensors = (parents, lbs_idx.reshape(-1), regressor_ptr, regressor_col)
    if parents.device.type == "cpu":
        par, idx, ptr, col = (t.numpy() for t in tensors)
    else:
        host = torch.cat([t.long() for t in tensors]).cpu().numpy()
        par, idx, ptr, col = np.split(host, np.cumsum([t.shape[0] for t in tensors[:3]]))
    bad = np.flatnonzero((par[1:] < 0) | (par[1:] >= np.arange(1, J))) + 1
    if par[0] != -1 or bad.size:
        j = int(bad[0]) if bad.size else 0
        raise ValueError(f"{op}: model.parents must have parents[0] == -1 and 0 <= parents[j] < j; "
                         f"joint {j} has parent {int(par[j])}")
    if idx.size and (idx.min() < 0 or idx.max() >= J):
        raise ValueError(f"{op}: model.lbs_idx must lie in [0, {J}); got values in [{idx.min()}, {idx.max()}]")
    if ptr[0] != 0 or ptr[-1] != col.size or (np.diff(ptr) < 0).any():
        raise ValueError(f"{op}: model.regressor_ptr must rise from 0 to nnz = {col.size}; got {ptr.tolist()}")
    if col.size and (col.min() < 0 or col.max() >= J + S):
        raise ValueError(f"{op}: model.regressor_col must lie in [0, J + S) = [0, {J + S}) "
                         f"({J} joints, {S} support vertices); got values in [{col.min()}, {col.max()}]")


def _outputs_like(pose, Nk, P, compute_jacobian):
    B = pose.shape[0]
    return (pose.new_empty((B, Nk, 2)), pose.new_empty((B, Nk, 2, P if compute_jacobian else 0)),
            pose.new_empty((B, Nk, 2)), pose.new_empty((B, Nk, 3)))


@torch.library.custom_op("smplfast::project_keypoints", mutates_args=())
def _project_keypoints(parents: Tensor, joint_template: Tensor, joint_shapedirs: Tensor, vertex_template: Tensor,
                       vertex_shapedirs: Tensor, vertex_posedirs: Tensor, lbs_idx: Tensor, lbs_weights: Tensor,
                       regressor_ptr: Tensor, regressor_col: Tensor, regressor_val: Tensor, has_pose_blend: bool,
                       pose: Tensor, betas: Tensor, transl: Tensor, cam_rot: Tensor, cam_transl: Tensor,
                       focal: Tensor, center: Tensor, target: Tensor, weight: Tensor, sigma: float,
                       compute_jacobian: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    model = (parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
             lbs_weights, regressor_ptr, regressor_col, regressor_val)
    inputs = (pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight)
    _check(OP, model, has_pose_blend, *inputs, sigma)
    S = vertex_template.shape[0]
    check_once(f"{OP}:S={S}", (parents, lbs_idx, regressor_ptr, regressor_col),
               lambda: _check_indices(OP, parents, lbs_idx, regressor_ptr, regressor_col, S))
    B, J = pose.shape[:2]
    nb = joint_shapedirs.shape[2]
    Nk = regressor_ptr.shape[0] - 1
    outs = _outputs_like(pose, Nk, 3 * J + nb + 3, compute_jacobian)
    if B == 0:
        return outs
    # Keep every contiguous copy alive in a local until the kernel has returned.
    model_c = [t.contiguous() for t in model]
    inputs_c = [t.contiguous() for t in inputs]
    K, nnz = lbs_idx.shape[1], regressor_col.shape[0]
    workspace, workspace_int = pose.new_empty((0,)), torch.empty(0, dtype=torch.int32)
    if pose.device.type == "cuda":
        n_float, n_int = _C.project_keypoints_workspace(B, J, nb, K, Nk, nnz, bool(has_pose_blend),
                                                        bool(compute_jacobian))
        workspace = pose.new_empty((n_float,))
        workspace_int = torch.empty(n_int, dtype=torch.int32, device=pose.device)
    _C.project_keypoints(_target(pose), dtype_code(pose), [B, J, nb, K, Nk, nnz], bool(has_pose_blend),
                         bool(compute_jacobian), float(sigma), [t.data_ptr() for t in model_c],
                         [t.data_ptr() for t in inputs_c], [t.data_ptr() for t in outs], workspace.data_ptr(),
                         workspace_int.data_ptr())
    return outs


@_project_keypoints.register_fake
def _(parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
      lbs_weights, regressor_ptr, regressor_col, regressor_val, has_pose_blend, pose, betas, transl, cam_rot,
      cam_transl, focal, center, target, weight, sigma, compute_jacobian):
    model = (parents, joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
             lbs_weights, regressor_ptr, regressor_col, regressor_val)
    _check(OP, model, has_pose_blend, pose, betas, transl, cam_rot, cam_transl, focal, center, target, weight, sigma)
    J, nb = pose.shape[1], joint_shapedirs.shape[2]
    return _outputs_like(pose, regressor_ptr.shape[0] - 1, 3 * J + nb + 3, compute_jacobian)


def _setup(ctx, inputs, output):
    pass  # nothing to save: the backward only raises


def _backward(ctx, *grads):
    raise RuntimeError(
        f"{OP} is not differentiable: its jacobian output already holds d residual / d [pose, betas, transl]; "
        "use it (e.g. for Gauss-Newton steps), or project_keypoints_reference for an autograd graph")


_project_keypoints.register_autograd(_backward, setup_context=_setup)


def project_keypoints(model, pose: Tensor, betas: Tensor, transl: Tensor, cam_rot: Tensor, cam_transl: Tensor,
                      focal: Tensor, center: Tensor, target: Tensor, weight: Tensor, sigma: float,
                      compute_jacobian: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Residuals of a body model's projected keypoints against 2D targets, and their Jacobian.

    Args:
        model: a :class:`~smplfast.fitting.KeypointModel` (J joints, nb betas, Nk keypoints) whose float
            tensors have pose's dtype and device (``model.to(device=..., dtype=...)``).
        pose: (B, J, 3) axis-angle per joint (global orientation first, smplx's Rodrigues convention).
        betas: (B, nb). transl: (B, 3) added to every keypoint before the camera.
        cam_rot: (B, 3, 3), cam_transl: (B, 3): camera-space point ``X = cam_rot @ x + cam_transl``.
        focal: (B, 2), center: (B, 2): pinhole ``points2d = focal * X[:2] / max(X[2], 1e-4) + center``.
        target: (B, Nk, 2) 2D keypoints; weight: (B, Nk) per-keypoint weights (e.g. confidences).
        sigma: Geman-McClure scale; residual = ``weight * sigma e / sqrt(sigma^2 + e^2)`` with
            e = points2d - target, so ``(residual ** 2).sum()`` = ``sum(weight^2 gmof(e, sigma))``
            with SPIN's ``gmof(e, sigma) = sigma^2 e^2 / (sigma^2 + e^2)``: SPIN's reprojection loss
            when weight is the keypoint confidence. ``sigma == 0`` gives plain ``weight * e``.
        compute_jacobian: False skips the Jacobian (returned with P = 0 columns).

    Returns:
        residual (B, Nk, 2); jacobian (B, Nk, 2, P) = d residual / d [pose.flatten() (3 J, joint-major),
        betas (nb), transl (3)], P = ``model.num_params`` (shape (B, Nk, 2, 0) when not computed);
        points2d (B, Nk, 2); keypoints3d (B, Nk, 3) (with transl, before the camera).

    Float32 or float64, CPU or CUDA, no autograd: the outputs are constants to autograd (calling
    backward through them raises); the Jacobian is the derivative. Index tensors of the model are
    validated once per model (a small host copy, one device sync on CUDA, on the first call; again if a
    tensor is replaced or modified in place).
    """
    return _project_keypoints(*_model_tensors(model), bool(model.has_pose_blend), pose, betas, transl, cam_rot,
                              cam_transl, focal, center, target, weight, sigma, compute_jacobian)
