"""Cameras, projections and rotation conversions: the geometry every other part of smplfast shares.

This module is the bottom layer of the Python package: it imports only torch and numpy, so the body
model, the fitters, the surface losses, the renderer and the data engine can all use it.

Camera convention (the same everywhere in smplfast, SPIN's)
-----------------------------------------------------------
A world point ``x`` goes to the camera frame as ``X = R x + t`` (x right, y down, z forward into the
scene) and projects to pixels as ``u = f_x X/Z + c_x``, ``v = f_y Y/Z + c_y``: v grows downwards,
along image rows, and pixel (row i, col j) covers ``[j, j+1) x [i, i+1)``.  Rows of ``R`` are the
camera's axes in world coordinates, so the camera centre is ``-R^T t``.

* :class:`PerspectiveCamera`: a batch of pinhole cameras (the renderer's, the surface losses', the
  synthetic data's after :meth:`smplfast.data.cameras.Cameras.to_perspective`).
* :class:`WeakPerspectiveCamera`: SPIN's ``[s, tx, ty]`` network camera.
* :func:`project_points`: either camera, depth clamped (for losses); :func:`perspective_projection`:
  SPIN's functional form with explicit ``rotation, translation, focal_length, camera_center``.

Rotations
---------
Matrices act on column vectors (``x' = R x``), shapes ``(..., 3, 3)``; axis-angle vectors are
``(..., 3)``.  :func:`axis_angle_to_matrix` / :func:`matrix_to_axis_angle` go through the unit
quaternion (Shepperd's rule for the inverse), so both are accurate near angles 0 and π; Euler angles
are intrinsic Tait-Bryan (``order="XYZ"``: ``R = R_x R_y R_z``); swing-twist splits a joint rotation
about a twist axis (see :mod:`smplfast.body.samplers`).  ``smplfast.ops.rodrigues`` is the SMPL
layer's own axis-angle kernel (smplx's convention, with a backward kernel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "Camera",
    "MIN_DEPTH",
    "project_points",
    "perspective_projection",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_axis_angle",
    "axis_angle_to_euler",
    "swing_twist_to_axis_angle",
    "axis_angle_to_swing_twist",
]

TensorLike = Union[Tensor, np.ndarray, Sequence[float], float]

MIN_DEPTH = 1e-4  # depth clamp of project_points (as smplfast.ops.project_keypoints)


# ------------------------------------------------------------------------------------------ rotations


def _check_last(x, shape: Tuple[int, ...], name: str) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a torch.Tensor; got {type(x).__name__}")
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, shape))}); got {tuple(x.shape)}")


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of quaternions (w, x, y, z)."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(-1, keepdim=True)
    v = aw * bv + bw * av + torch.cross(av, bv, dim=-1)
    return torch.cat([w, v], dim=-1)


def _aa_to_quat(aa: Tensor) -> Tensor:
    angle = aa.norm(dim=-1, keepdim=True)
    # sin(angle / 2) / angle without a branch at 0: sinc(x) = sin(pi x) / (pi x).
    return torch.cat([torch.cos(angle / 2), aa * (0.5 * torch.sinc(angle / (2 * math.pi)))], dim=-1)


def _quat_to_aa(q: Tensor) -> Tensor:
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., :1], q[..., 1:]
    n = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, w)
    small = n < 1e-12
    scale = torch.where(small, 2 / w.clamp_min(1e-12), angle / torch.where(small, torch.ones_like(n), n))
    return v * scale


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3)."""
    _check_last(aa, (3,), "axis_angle_to_matrix")
    w, x, y, z = _aa_to_quat(aa).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*aa.shape[:-1], 3, 3)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Axis-angle vectors (..., 3) of rotation matrices (..., 3, 3), angle in [0, π].

    Goes through the quaternion, built from whichever of w, x, y, z is largest (Shepperd's rule), so
    it stays accurate near 0 and near π."""
    _check_last(R, (3, 3), "matrix_to_axis_angle")
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4 q_i² for q = (w, x, y, z); the largest gives the best-conditioned formula.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    cand = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
    ], dim=-2)
    best = sq.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return _quat_to_aa(q)


def _axes(order: str) -> Tuple[int, int, int]:
    order = order.upper()
    if len(order) != 3 or set(order) != set("XYZ"):
        raise ValueError(f"Euler order must be a permutation of 'XYZ' (intrinsic, Tait-Bryan); got {order!r}")
    return tuple("XYZ".index(c) for c in order)


def euler_to_axis_angle(angles: Tensor, order: str = "XYZ") -> Tensor:
    """Axis-angle (..., 3) of intrinsic Euler angles (..., 3) in radians.

    ``order="XYZ"`` means ``R = R_x(angles[..., 0]) @ R_y(angles[..., 1]) @ R_z(angles[..., 2])``.
    """
    _check_last(angles, (3,), "euler_to_axis_angle")
    q = None
    for k, axis in enumerate(_axes(order)):
        aa = torch.zeros(*angles.shape[:-1], 3, dtype=angles.dtype, device=angles.device)
        aa[..., axis] = angles[..., k]
        q = _aa_to_quat(aa) if q is None else _quat_mul(q, _aa_to_quat(aa))
    return _quat_to_aa(q)


def axis_angle_to_euler(aa: Tensor, order: str = "XYZ") -> Tensor:
    """Intrinsic Euler angles (..., 3) in radians of axis-angle vectors; inverse of
    :func:`euler_to_axis_angle` with the middle angle in [-pi/2, pi/2]."""
    i, j, k = _axes(order)
    R = axis_angle_to_matrix(aa)
    eps = 1.0 if (j - i) % 3 == 1 else -1.0  # cyclic orders (XYZ, YZX, ZXY) versus the others
    b = torch.asin((eps * R[..., i, k]).clamp(-1.0, 1.0))
    a = torch.atan2(-eps * R[..., j, k], R[..., k, k])
    c = torch.atan2(-eps * R[..., i, j], R[..., i, i])
    return torch.stack([a, b, c], dim=-1)


def _twist_index(twist_axis) -> Tensor:
    return torch.as_tensor(twist_axis, dtype=torch.long)


def swing_twist_to_axis_angle(params: Tensor, twist_axis) -> Tensor:
    """Axis-angle of swing-twist components (..., 3) in radians.

    ``twist_axis`` (an int 0/1/2 or a tensor broadcasting against ``params[..., 0]``) picks the
    component that is the twist angle; the other two are the swing rotation vector, and the rotation
    is ``R = R_swing @ R_twist`` (see :mod:`smplfast.body.samplers`).
    """
    _check_last(params, (3,), "swing_twist_to_axis_angle")
    axis = _twist_index(twist_axis).to(params.device)
    onehot = torch.nn.functional.one_hot(axis, 3).to(params.dtype).expand_as(params)
    twist = (params * onehot).sum(-1, keepdim=True)
    q = _quat_mul(_aa_to_quat(params * (1 - onehot)), _aa_to_quat(twist * onehot))
    return _quat_to_aa(q)


def axis_angle_to_swing_twist(aa: Tensor, twist_axis) -> Tensor:
    """Swing-twist components (..., 3) in radians of axis-angle vectors; inverse of
    :func:`swing_twist_to_axis_angle` (twist in [-pi, pi], swing angle in [0, pi])."""
    _check_last(aa, (3,), "axis_angle_to_swing_twist")
    axis = _twist_index(twist_axis).to(aa.device)
    onehot = torch.nn.functional.one_hot(axis, 3).to(aa.dtype).expand_as(aa)
    q = _aa_to_quat(aa)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, p = q[..., :1], (q[..., 1:] * onehot).sum(-1, keepdim=True)
    norm = torch.sqrt(w * w + p * p)
    degenerate = norm < 1e-12  # a half-turn swing: the twist is undefined, take 0
    qt = torch.cat([w, p * onehot], dim=-1) / torch.where(degenerate, torch.ones_like(norm), norm)
    qt = torch.where(degenerate, torch.cat([torch.ones_like(w), torch.zeros_like(onehot)], -1), qt)
    swing = _quat_to_aa(_quat_mul(q, qt * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=aa.dtype, device=aa.device)))
    twist = 2 * torch.atan2(qt[..., 1:].mul(onehot).sum(-1, keepdim=True), qt[..., :1])
    return swing * (1 - onehot) + twist * onehot


# ------------------------------------------------------------------------------------------ cameras


def _camera_tensor(x, name: str) -> Tensor:
    """A camera argument as a float tensor (gradients kept), checked finite."""
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"PerspectiveCamera: {name} must be a tensor, array or number; got {type(x).__name__}") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"PerspectiveCamera: {name} must be numeric; got dtype {t.dtype}")
    t = t if t.is_floating_point() else t.double()
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"PerspectiveCamera: {name} must be finite (no NaN or Inf)")
    return t


class PerspectiveCamera:
    """A batch of B pinhole cameras: ``focal`` (B,2), ``center`` (B,2) or None, ``rotation`` (B,3,3),
    ``translation`` (B,3); a world point ``x`` projects to ``f X/Z + c`` with ``X = R x + t``.

    Args:
        focal: ``(f_x, f_y)`` in pixels: a number, (B,) one per camera, (2,) for one camera, or
            (B, 2). Required. ``focal_length`` is accepted as another name for it (SPIN's).
        center: (B,2) or (2,) principal point ``(c_x, c_y)`` in pixels; ``None`` = the centre of
            the image being rendered, ``(W/2, H/2)`` (functions without an image size, such as
            :func:`project_points`, need it given).
        rotation: (B,3,3) or (3,3) world-to-camera rotation; ``None`` = identity.
        translation: (B,3) or (3,) world-to-camera translation (metres); ``None`` = zero. The
            body's own ``transl`` usually plays this role (SPIN's crop camera).

    Keyword arguments are the canonical way to build a camera
    (``PerspectiveCamera(focal=f, center=c, rotation=R, translation=t)``).  Positionally the order
    is ``focal, center, rotation, translation``; a (3, 3) or (B, 3, 3) rotation given first raises
    a ``ValueError`` (it is not a focal length) instead of being misread.

    Inputs without the batch dimension describe one camera (``batch_size == 1``), broadcast over
    any batch of bodies.  A (2,) ``focal`` is one camera's ``(f_x, f_y)`` unless ``rotation`` or
    ``translation`` holds exactly two cameras, in which case it gives one focal length per camera;
    pass (B, 2) to be explicit.  Values are stored as float tensors (float64 unless ``rotation`` or
    ``translation`` is given as float32) on the device of ``rotation``/``translation`` (else of
    ``focal``).  Tensors keep their autograd history, so losses such as
    :func:`~smplfast.surface.densepose_loss` differentiate w.r.t. the camera; the renderer detaches.
    Bad input raises ``ValueError`` (shapes, NaN/Inf, focal <= 0, disagreeing batch sizes) or
    ``TypeError`` (non-numeric arguments).
    """

    def __init__(self, focal: Optional[TensorLike] = None, center: Optional[TensorLike] = None,
                 rotation: Optional[TensorLike] = None, translation: Optional[TensorLike] = None, *,
                 focal_length: Optional[TensorLike] = None) -> None:
        if focal_length is not None:
            if focal is not None:
                raise ValueError("PerspectiveCamera: give focal or focal_length (the same thing), not both")
            focal = focal_length
        if focal is None:
            raise ValueError("PerspectiveCamera: focal is required (pixels; a number, (B,), (2,) or (B, 2))")
        given = {k: _camera_tensor(v, k) for k, v in (("rotation", rotation), ("translation", translation),
                                                      ("focal", focal), ("center", center)) if v is not None}
        f = given["focal"]
        if f.ndim > 2 or (f.ndim == 2 and f.shape[1] != 2):
            # Checked first: a rotation given in focal's place (another class's positional order) is named.
            hint = (" (a rotation matrix? the positional order is focal, center, rotation, translation: "
                    "pass keywords)") if f.shape[-2:] == (3, 3) else ""
            raise ValueError(f"PerspectiveCamera: focal must be a number, (B,), (2,) or (B, 2); got "
                             f"{tuple(f.shape)}{hint}")
        ref = next((v for k, v in given.items() if k in ("rotation", "translation")), given["focal"])
        device = ref.device
        dtype = torch.float32 if any(v.dtype == torch.float32 for k, v in given.items()
                                     if k in ("rotation", "translation")) else torch.float64

        batches = {}
        R = given.get("rotation")
        if R is not None:
            if R.shape[-2:] != (3, 3) or R.ndim not in (2, 3):
                raise ValueError(f"PerspectiveCamera: rotation must be (B, 3, 3) or (3, 3); got {tuple(R.shape)}")
            R = R.reshape(-1, 3, 3)
            batches["rotation"] = R.shape[0]
        t = given.get("translation")
        if t is not None:
            if t.shape[-1:] != (3,) or t.ndim not in (1, 2):
                raise ValueError(f"PerspectiveCamera: translation must be (B, 3) or (3,); got {tuple(t.shape)}")
            t = t.reshape(-1, 3)
            batches["translation"] = t.shape[0]
        if f.ndim == 0:
            f = f.reshape(1, 1).expand(1, 2)
        elif f.ndim == 1:
            # (2,) is one camera's (f_x, f_y) unless rotation or translation holds exactly 2 cameras; any
            # other (B,) is one f per camera.
            if f.shape[0] == 2 and 2 not in batches.values():
                f = f.reshape(1, 2)
            else:
                f = f[:, None].expand(-1, 2)
        batches["focal"] = f.shape[0]
        c = given.get("center")
        if c is not None:
            if c.shape[-1:] != (2,) or c.ndim not in (1, 2):
                raise ValueError(f"PerspectiveCamera: center must be (B, 2) or (2,); got {tuple(c.shape)}")
            c = c.reshape(-1, 2)
            batches["center"] = c.shape[0]
        if bool((f.detach() <= 0).any()):
            raise ValueError(f"PerspectiveCamera: focal lengths must be > 0; got min {float(f.min())}")

        sizes = {b for b in batches.values() if b != 1}
        if len(sizes) > 1:
            raise ValueError("PerspectiveCamera: batch sizes disagree: "
                             + ", ".join(f"{k} has {b}" for k, b in batches.items()))
        B = sizes.pop() if sizes else 1
        if R is None:
            R = torch.eye(3, dtype=dtype, device=device)[None]
        if t is None:
            t = torch.zeros(1, 3, dtype=dtype, device=device)
        conv = lambda x: x.to(device=device, dtype=dtype).expand(B, *x.shape[1:]).contiguous()  # noqa: E731
        self.rotation = conv(R)
        self.translation = conv(t)
        self.focal = conv(f)
        self.center = None if c is None else conv(c)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def crop_camera(cls, translation: TensorLike, focal_length: float = 5000.0, img_res: int = 224,
                    rotation: Optional[TensorLike] = None) -> "PerspectiveCamera":
        """SPIN's crop camera: focal ``focal_length``, principal point at the centre of an ``img_res``
        square crop, identity rotation unless given, and the given camera translation (B,3)."""
        t = _camera_tensor(translation, "translation")
        c = torch.full(t.shape[:-1] + (2,), img_res / 2.0, dtype=t.dtype, device=t.device)
        return cls(rotation=rotation, translation=t, focal=float(focal_length), center=c)

    @classmethod
    def look_at(cls, eye: TensorLike, target: TensorLike, focal: TensorLike, center: Optional[TensorLike] = None,
                up: Sequence[float] = (0.0, 1.0, 0.0)) -> "PerspectiveCamera":
        """A camera at ``eye`` (B,3) or (3,) looking at ``target``, with world ``up`` pointing up in the
        image (image y grows downwards, so the camera's y axis is ``-up`` projected)."""
        e = _camera_tensor(eye, "eye").reshape(-1, 3)
        g = _camera_tensor(target, "target").reshape(-1, 3).to(e)
        u = torch.as_tensor(up, dtype=e.dtype, device=e.device).reshape(1, 3)
        z = g - e
        if bool((z.norm(dim=-1) < 1e-12).any()):
            raise ValueError("PerspectiveCamera.look_at: eye and target coincide")
        z = z / z.norm(dim=-1, keepdim=True)
        x = torch.cross(-u.expand_as(z), z, dim=-1)  # camera x: right in the image
        if bool((x.norm(dim=-1) < 1e-9).any()):
            raise ValueError("PerspectiveCamera.look_at: the viewing direction is parallel to up")
        x = x / x.norm(dim=-1, keepdim=True)
        y = torch.cross(z, x, dim=-1)
        R = torch.stack([x, y, z], dim=1)  # rows: camera axes in world coordinates
        t = -(R @ e[..., None])[..., 0]
        return cls(rotation=R, translation=t, focal=focal, center=center)

    # ------------------------------------------------------------------ properties and helpers
    @property
    def batch_size(self) -> int:
        return int(self.rotation.shape[0])

    @property
    def device(self) -> torch.device:
        return self.rotation.device

    @property
    def dtype(self) -> torch.dtype:
        return self.rotation.dtype

    @property
    def focal_length(self) -> Tensor:
        """The same tensor as :attr:`focal` (B, 2), under SPIN's name."""
        return self.focal

    def _map(self, fn) -> "PerspectiveCamera":
        out = type(self).__new__(type(self))
        for k in ("rotation", "translation", "focal", "center"):
            v = getattr(self, k)
            setattr(out, k, None if v is None else fn(v))
        return out

    def to(self, device=None, dtype=None) -> "PerspectiveCamera":
        """A copy on ``device`` / in ``dtype``."""
        return self._map(lambda v: v.to(device=device, dtype=dtype))

    def detach(self) -> "PerspectiveCamera":
        """The same cameras without autograd history."""
        return self._map(Tensor.detach)

    def __getitem__(self, index) -> "PerspectiveCamera":
        """The cameras selected by ``index`` (an int, slice, index tensor or boolean mask) along the batch;
        an int gives a batch of one camera."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return self._map(lambda v: v[index.to(v.device) if torch.is_tensor(index) else index])

    def expand(self, batch_size: int) -> "PerspectiveCamera":
        """This camera batch broadcast to ``batch_size`` bodies (a single camera repeats)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"camera batch ({self.batch_size} cameras) does not match the {batch_size} bodies; "
                             f"give one camera or {batch_size}")
        return self._map(lambda v: v.expand(batch_size, *v.shape[1:]))

    def centers(self, image_size: Tuple[int, int]) -> Tensor:
        """Principal points (B,2); the image centre ``(W/2, H/2)`` when none was given."""
        if self.center is not None:
            return self.center
        H, W = image_size
        return torch.tensor([W / 2.0, H / 2.0], dtype=self.dtype, device=self.device).expand(self.batch_size, 2)

    def resolved(self, batch_size: int, like: Tensor, op: str = "PerspectiveCamera"):
        """``(focal (B,2), center (B,2), rotation (B,3,3), translation (B,3))`` for ``batch_size`` = B
        samples, in ``like``'s dtype and device (a single camera is broadcast); ``op`` names the
        caller in errors.  Needs a ``center``."""
        B = int(batch_size)
        if self.center is None:
            raise ValueError(f"{op}: the camera has no center; give center=(c_x, c_y) in pixels")
        if self.batch_size not in (1, B):
            raise ValueError(f"{op}: the camera holds {self.batch_size} cameras but there are {B} samples; "
                             f"give one camera or {B}")
        conv = lambda x: x.to(dtype=like.dtype, device=like.device).expand(B, *x.shape[1:])  # noqa: E731
        return conv(self.focal), conv(self.center), conv(self.rotation), conv(self.translation)

    def world_to_camera(self, points: Tensor) -> Tensor:
        """(B,N,3) world points -> (B,N,3) camera-frame points ``R X + t`` (a single camera broadcasts)."""
        R = self.rotation.to(points.dtype)
        t = self.translation.to(points.dtype)
        return points @ R.transpose(-1, -2) + t[:, None, :]

    def project(self, points: Tensor, image_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """(B,N,3) world points -> (B,N,2) pixel coordinates (``image_size`` is needed when no center
        was given).  Depths are not clamped; :func:`project_points` clamps them for losses."""
        X = self.world_to_camera(points)
        if self.center is None and image_size is None:
            raise ValueError("PerspectiveCamera.project: this camera has no center; pass image_size=(H, W)")
        c = (self.center if self.center is not None else self.centers(image_size)).to(points.dtype)
        return self.focal.to(points.dtype)[:, None] * X[..., :2] / X[..., 2:] + c[:, None]

    def __repr__(self) -> str:
        return (f"PerspectiveCamera(batch_size={self.batch_size}, focal={self.focal[0].tolist()}, "
                f"center={'image centre' if self.center is None else self.center[0].tolist()}, dtype={self.dtype})")


def _shape_check(op: str, name: str, t, shape) -> Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{op}: {name} must be {want}; got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor; got {t.dtype}")
    return t


@dataclass
class WeakPerspectiveCamera:
    """SPIN's weak-perspective camera ``params (B, 3) = [s, tx, ty]``: ``s * (x[..., :2] + [tx, ty])``.

    Optimised together with the body by :func:`~smplfast.surface.refine.refine` (the body's
    ``transl`` has no effect under this camera and is left unchanged)."""

    params: Tensor

    def check(self, B: int, like: Tensor, op: str = "WeakPerspectiveCamera") -> Tensor:
        """``params`` checked to be (B, 3) float, in ``like``'s dtype and device."""
        return _shape_check(op, "camera params", self.params, [B, 3]).to(like)


Camera = Union[PerspectiveCamera, WeakPerspectiveCamera]


# ------------------------------------------------------------------------------------------ projections


def project_points(points: Tensor, camera: Camera, params_like: Optional[Tensor] = None) -> Tensor:
    """Project (B, N, 3) points (including the body's translation) with ``camera`` -> (B, N, 2).

    A :class:`PerspectiveCamera` (one camera or B; it must have a ``center``) gives pixels with the
    depth clamped at :data:`MIN_DEPTH`, so a point behind the camera gives a large but finite
    value; a :class:`WeakPerspectiveCamera` gives its normalised units.  Differentiable w.r.t. the
    points and the camera.  (``params_like`` is unused; kept for existing callers.)"""
    B = points.shape[0]
    if isinstance(camera, WeakPerspectiveCamera):
        c = camera.check(B, points)
        return c[:, None, :1] * (points[..., :2] + c[:, None, 1:])
    if isinstance(camera, PerspectiveCamera):
        f, ctr, R, t = camera.resolved(B, points)
        X = torch.einsum("bij,bnj->bni", R, points) + t[:, None]
        Z = X[..., 2:].clamp_min(MIN_DEPTH)
        return f[:, None] * X[..., :2] / Z + ctr[:, None]
    raise TypeError(f"camera must be a PerspectiveCamera or a WeakPerspectiveCamera; got {type(camera).__name__}")


def perspective_projection(points: Tensor, rotation: Tensor, translation: Tensor, focal_length,
                           camera_center: Tensor) -> Tensor:
    """SPIN's ``perspective_projection``: ``f (R X + t)[:2] / (R X + t)[2] + c`` for (B, K, 3) points,
    ``rotation`` (B, 3, 3), ``translation`` (B, 3), ``focal_length`` a number, (B,) or (B, 2), and
    ``camera_center`` (B, 2) -> (B, K, 2) pixels (no depth clamp).  The arithmetic is SPIN's, in its
    order, so SMPLify's losses keep their exact values; :func:`project_points` is the same projection
    for a :class:`PerspectiveCamera`."""
    X = torch.einsum("bij,bkj->bki", rotation, points) + translation.unsqueeze(1)
    f = torch.as_tensor(focal_length, dtype=points.dtype, device=points.device)
    f = f.reshape(-1, 1, f.shape[-1] if f.dim() == 2 else 1) if f.dim() else f
    return X[..., :2] / X[..., 2:3] * f + camera_center.unsqueeze(1)
