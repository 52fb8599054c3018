"""Rotation representations used by the training package.

Conventions
-----------
* Rotation matrices act on column vectors: ``x' = R @ x``; shapes are ``(..., 3, 3)``.
* Axis-angle vectors are ``(..., 3)`` with the angle ``|aa|`` in [0, π].
* **6D** is SPIN's layout (Zhou et al. 2019): the 6 numbers are the first two *columns* of R stored
  row by row, ``x = (R00, R01, R10, R11, R20, R21)``, i.e. ``x.view(3, 2)`` has column
  ``a1 = (x0, x2, x4)`` and column ``a2 = (x1, x3, x5)``. Decoding is Gram–Schmidt:
  ``b1 = a1/|a1|``, ``b2 = normalise(a2 − (b1·a2) b1)``, ``b3 = b1 × b2``, ``R = [b1 b2 b3]``.
  The identity encodes to ``[1, 0, 0, 1, 0, 0]``; a SPIN pose vector (144) is 24 such blocks.
* **Euler angles** are intrinsic Tait–Bryan: ``order="XYZ"`` means
  ``R = R_x(angles[..., 0]) @ R_y(angles[..., 1]) @ R_z(angles[..., 2])`` (scipy's upper-case
  ``Rotation.from_euler("XYZ", ...)``). The decomposition returns the middle angle in [−π/2, π/2]
  and the others in (−π, π].

Axis-angle <-> matrix conversions go through the unit quaternion, built by Shepperd's rule (the
largest of |w|, |x|, |y|, |z| picks the formula), so they are exact near 0 and π, never NaN, and
differentiable away from the angle-π cut; they are ``smplfast.geometry``'s implementations,
which the tests of this package check at 0, π, π − 1e-6, 1e-8 and random rotations.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from smplfast import geometry as _geometry

__all__ = [
    "IDENTITY_6D",
    "rot6d_to_matrix",
    "matrix_to_rot6d",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "axis_angle_to_rot6d",
    "rot6d_to_axis_angle",
    "geodesic_angle",
    "project_to_so3",
    "chordal_mean",
    "EULER_ORDERS",
    "euler_to_matrix",
    "matrix_to_euler",
]

#: SPIN's 6D of the identity rotation.
IDENTITY_6D: Tuple[float, ...] = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)

#: The six intrinsic Tait–Bryan orders.
EULER_ORDERS: Tuple[str, ...] = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


def _check_last(x: Tensor, shape: Tuple[int, ...], name: str) -> None:
    if x.shape[x.dim() - len(shape):] != shape or x.dim() < len(shape):
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, shape))}); got {tuple(x.shape)}")


def _normalise(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


# ------------------------------------------------------------------------------------------------ 6D


def rot6d_to_matrix(x: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of SPIN-layout 6D vectors (..., 6) (Gram–Schmidt).

    ``x.view(..., 3, 2)`` holds the two raw columns ``a1 = x[..., 0::2]``, ``a2 = x[..., 1::2]``.
    """
    _check_last(x, (6,), "rot6d_to_matrix")
    m = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = m[..., 0], m[..., 1]
    b1 = _normalise(a1)
    b2 = _normalise(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(R: Tensor) -> Tensor:
    """SPIN-layout 6D (..., 6) of rotation matrices (..., 3, 3): the first two columns, row by row,
    ``(R00, R01, R10, R11, R20, R21)``. ``rot6d_to_matrix(matrix_to_rot6d(R)) == R`` for R in SO(3)."""
    _check_last(R, (3, 3), "matrix_to_rot6d")
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


# -------------------------------------------------------------------------------------- axis-angle


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3); exact and smooth at 0."""
    _check_last(aa, (3,), "axis_angle_to_matrix")
    return _geometry.axis_angle_to_matrix(aa)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Axis-angle vectors (..., 3), angle in [0, π], of rotation matrices (..., 3, 3).

    Robust: quaternion by Shepperd's rule, normalised; no NaN at 0 or π, values exact to rounding
    near both; gradients finite everywhere and correct away from the angle-π cut (where the
    axis-angle itself jumps between ±axis). Works for float32 and float64 and any leading dims.
    """
    _check_last(R, (3, 3), "matrix_to_axis_angle")
    return _geometry.matrix_to_axis_angle(R)


def axis_angle_to_rot6d(aa: Tensor) -> Tensor:
    """SPIN-layout 6D (..., 6) of axis-angle vectors (..., 3)."""
    return matrix_to_rot6d(axis_angle_to_matrix(aa))


def rot6d_to_axis_angle(x: Tensor) -> Tensor:
    """Axis-angle (..., 3) of SPIN-layout 6D vectors (..., 6)."""
    return matrix_to_axis_angle(rot6d_to_matrix(x))


def geodesic_angle(R1: Tensor, R2: Tensor) -> Tensor:
    """Angle (...) in [0, π] of the relative rotation ``R1ᵀ R2`` (radians), accurate at 0 and π."""
    return matrix_to_axis_angle(R1.transpose(-1, -2) @ R2).norm(dim=-1)


# ------------------------------------------------------------------------------------- projections


def project_to_so3(M: Tensor) -> Tensor:
    """Nearest rotation (Frobenius norm) to each matrix (..., 3, 3): ``U diag(1, 1, det(U Vᵀ)) Vᵀ``."""
    _check_last(M, (3, 3), "project_to_so3")
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.ones(*M.shape[:-2], 3, dtype=M.dtype, device=M.device)
    D[..., 2] = torch.sign(d) + (d == 0).to(M.dtype)
    return U @ (D[..., None] * Vh)


def chordal_mean(R: Tensor, dim: int = 0) -> Tensor:
    """Chordal L2 mean of rotations along ``dim``: the arithmetic mean of the matrices projected to
    SO(3) by SVD (:func:`project_to_so3`)."""
    if dim < 0:
        dim += R.dim()
    if dim >= R.dim() - 2:
        raise ValueError("chordal_mean: dim must index a batch dimension, not the 3x3 matrix")
    return project_to_so3(R.mean(dim=dim))


# ------------------------------------------------------------------------------------------- Euler


def _axes(order: str) -> Tuple[int, int, int]:
    if not isinstance(order, str) or order.upper() not in EULER_ORDERS:
        raise ValueError(f"Euler order must be one of {EULER_ORDERS} (intrinsic Tait-Bryan); got {order!r}")
    return tuple("XYZ".index(c) for c in order.upper())


def _elementary(axis: int, angle: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) about coordinate ``axis`` (0, 1, 2) by ``angle`` (...)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == 1:
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def euler_to_matrix(angles: Tensor, order: str = "XYZ") -> Tensor:
    """Rotation matrices (..., 3, 3) of intrinsic Tait–Bryan angles (..., 3) in radians:
    ``R = R_{order[0]}(angles[..., 0]) @ R_{order[1]}(angles[..., 1]) @ R_{order[2]}(angles[..., 2])``."""
    _check_last(angles, (3,), "euler_to_matrix")
    i, j, k = _axes(order)
    return _elementary(i, angles[..., 0]) @ _elementary(j, angles[..., 1]) @ _elementary(k, angles[..., 2])


def matrix_to_euler(R: Tensor, order: str = "XYZ") -> Tensor:
    """Intrinsic Tait–Bryan angles (..., 3) of rotation matrices (..., 3, 3); inverse of
    :func:`euler_to_matrix` with the middle angle in [−π/2, π/2], the others in (−π, π].

    The first angle comes from the last column; the middle and last angles are then read from
    ``R_first(a)ᵀ R``, so ``euler_to_matrix(matrix_to_euler(R)) == R`` to rounding everywhere,
    gimbal lock (middle angle ±π/2) included (there the split between first and last angle is
    arbitrary; this returns whatever the rounding of the last column gives).
    """
    _check_last(R, (3, 3), "matrix_to_euler")
    i, j, k = _axes(order)
    eps = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for the cyclic orders XYZ, YZX, ZXY
    Rik, Rji, Rjj = R[..., i, k], R[..., j, i], R[..., j, j]
    Rjk, Rki, Rkj, Rkk = R[..., j, k], R[..., k, i], R[..., k, j], R[..., k, k]
    a = torch.atan2(-eps * Rjk, Rkk)
    ca, sa = torch.cos(a), torch.sin(a)
    b = torch.atan2(eps * Rik, ca * Rkk - eps * sa * Rjk)
    c = torch.atan2(eps * ca * Rji + sa * Rki, ca * Rjj + eps * sa * Rkj)
    return torch.stack([a, b, c], dim=-1)


# ------------------------------------------------------------------------- per-joint Euler orders

__all__ += ["euler_to_matrix_per_joint", "matrix_to_euler_per_joint"]


def _order_groups(orders, n_joints: int):
    orders = [str(o).upper() for o in orders]
    if len(orders) != n_joints:
        raise ValueError(f"expected {n_joints} Euler orders (one per joint); got {len(orders)}")
    for o in orders:
        _axes(o)
    groups = {}
    for j, o in enumerate(orders):
        groups.setdefault(o, []).append(j)
    return groups


def euler_to_matrix_per_joint(angles: Tensor, orders) -> Tensor:
    """Rotation matrices (..., J, 3, 3) of Euler angles (..., J, 3), joint j in intrinsic order
    ``orders[j]`` (a sequence of J strings from :data:`EULER_ORDERS`). Differentiable; one batched
    :func:`euler_to_matrix` per distinct order."""
    _check_last(angles, (3,), "euler_to_matrix_per_joint")
    if angles.dim() < 2:
        raise ValueError(f"euler_to_matrix_per_joint: expected (..., J, 3); got {tuple(angles.shape)}")
    groups = _order_groups(orders, angles.shape[-2])
    if len(groups) == 1:
        return euler_to_matrix(angles, next(iter(groups)))
    out = angles.new_zeros(*angles.shape[:-1], 3, 3)
    for o, idx in groups.items():
        idx_t = torch.as_tensor(idx, device=angles.device)
        out = out.index_copy(-3, idx_t, euler_to_matrix(angles.index_select(-2, idx_t), o))
    return out


def matrix_to_euler_per_joint(R: Tensor, orders) -> Tensor:
    """Euler angles (..., J, 3) of rotation matrices (..., J, 3, 3), joint j in intrinsic order
    ``orders[j]``; inverse of :func:`euler_to_matrix_per_joint` (ranges as :func:`matrix_to_euler`)."""
    _check_last(R, (3, 3), "matrix_to_euler_per_joint")
    if R.dim() < 3:
        raise ValueError(f"matrix_to_euler_per_joint: expected (..., J, 3, 3); got {tuple(R.shape)}")
    groups = _order_groups(orders, R.shape[-3])
    if len(groups) == 1:
        return matrix_to_euler(R, next(iter(groups)))
    out = R.new_zeros(*R.shape[:-2], 3)
    for o, idx in groups.items():
        idx_t = torch.as_tensor(idx, device=R.device)
        out = out.index_copy(-2, idx_t, matrix_to_euler(R.index_select(-3, idx_t), o))
    return out
