"""HoloPose's DensePose loss: image points with a surface coordinate against the projected UV-grid body.

Eq. 4 of HoloPose: ``L_DP = sum_i || x_i - Pi(M_phi(u_i)) ||_2`` over the image points ``x_i`` that a
DensePose network labelled with a surface coordinate ``u_i = (part, u, v)``.  Here every point's
surface coordinate is looked up once in the :class:`~smplfast.surface.uvgrid.UVGrid` (rest position,
shape blend shapes, skinning weights), the point is posed with the body's parameters by linear blend
skinning and projected by a camera; the loss is the per-point Euclidean distance, averaged over each
sample's points.

Input types (small dataclasses, all batched over B samples):

* :class:`BodyParams`: ``betas (B, S)``, ``body_pose (B, 69)``, ``global_orient (B, 3)``,
  ``transl (B, 3)`` (axis-angle, metres; smplx's names), or ``rotmat (B, 24, 3, 3)`` rotation
  matrices in place of ``body_pose``/``global_orient`` (a network's output).
* :class:`~smplfast.geometry.PerspectiveCamera` (the one camera class of smplfast, re-exported
  here): ``focal (B, 2)`` (``focal_length`` is accepted too), ``center (B, 2)`` in pixels, optional
  ``rotation (B, 3, 3)`` and ``translation (B, 3)`` (world to camera: ``X = R x + t``); a point
  projects to ``f X / Z + c`` (the project's convention, v grows downwards).
* :class:`~smplfast.geometry.WeakPerspectiveCamera`: ``params (B, 3) = [s, tx, ty]`` as SPIN's
  ``pred_camera``: ``s * (x[:2] + [tx, ty])``; targets are then in the same normalised units (SPIN: [-1, 1]).
* :class:`IUVPoints`: per-sample point sets padded to ``N``: ``part (B, N)`` 1..24, ``uv (B, N, 2)``,
  ``xy (B, N, 2)`` image positions, ``mask (B, N)`` bool (False = padding, may hold anything);
  :meth:`IUVPoints.from_flat` builds it from flat points with a ``batch_index``, and
  :meth:`IUVPoints.from_iuv_image` from DensePose's IUV output images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from .. import ops
from ..geometry import MIN_DEPTH  # noqa: F401  (re-exported: this module's name for the depth clamp)
from ..geometry import Camera, PerspectiveCamera, WeakPerspectiveCamera, matrix_to_axis_angle, project_points
from .charts import NUM_PARTS
from .uvgrid import GridPoints, UVGrid

__all__ = [
    "BodyParams",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "Camera",
    "IUVPoints",
    "densepose_loss",
    "posed_points",
    "project_points",
]


def _tensor(op: str, name: str, t, shape, dtype=None) -> Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
    ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{op}: {name} must be {want}; got {tuple(t.shape)}")
    if dtype == "float" and not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor; got {t.dtype}")
    return t


ROTATION_TOL = 1e-3  # max |R^T R - I| accepted by BodyParams.to_axis_angle


@dataclass
class BodyParams:
    """SMPL parameters of B bodies: betas (B, S), the pose, transl (B, 3) or None (zeros).

    The pose is given one of two ways (exactly one):

    * axis-angle: ``body_pose`` (B, 69) and ``global_orient`` (B, 3) (smplx's names;
      :meth:`from_pose` splits a (B, 72) ``pose``);
    * rotation matrices: ``rotmat`` (B, 24, 3, 3), the relative rotation of every joint, global
      orientation first, as a network regresses them (``SMPL(..., pose2rot=False)``'s layout).  They
      are used as given (no conversion to axis-angle, whose gradient is unstable near an angle of π),
      so :func:`densepose_loss` differentiates straight to them.

    Consumers that optimise axis-angle parameters (:func:`~smplfast.surface.refine.refine`) reject
    rotation matrices with a ``ValueError``; convert once with :meth:`to_axis_angle`.
    """

    betas: Tensor
    body_pose: Optional[Tensor] = None
    global_orient: Optional[Tensor] = None
    transl: Optional[Tensor] = None
    rotmat: Optional[Tensor] = None

    @classmethod
    def from_pose(cls, betas: Tensor, pose: Tensor, transl: Optional[Tensor] = None) -> "BodyParams":
        """Axis-angle parameters from a (B, 72) ``pose`` (global orientation then body pose)."""
        _tensor("BodyParams.from_pose", "pose", pose, [None, 72], "float")
        return cls(betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], transl=transl)

    @property
    def is_rotmat(self) -> bool:
        """True when the pose is held as rotation matrices (``rotmat``)."""
        return self.rotmat is not None

    def _check_kind(self, op: str) -> None:
        if self.rotmat is not None:
            if self.body_pose is not None or self.global_orient is not None:
                raise TypeError(f"{op}: params must give either body_pose and global_orient (axis-angle) or rotmat "
                                "(rotation matrices), not both")
        elif self.body_pose is None or self.global_orient is None:
            missing = [n for n in ("body_pose", "global_orient") if getattr(self, n) is None]
            raise TypeError(f"{op}: params.{' and params.'.join(missing)} missing: give body_pose (B, 69) and "
                            "global_orient (B, 3) (axis-angle) or rotmat (B, 24, 3, 3) (rotation matrices)")

    def check(self, op: str, num_betas: Optional[int] = None, *, allow_rotmat: bool = False) -> "BodyParams":
        """Validate shapes and dtypes (a missing transl becomes zeros); returns self (or a completed copy).

        Exactly one pose representation must be given (``TypeError`` otherwise).  Rotation matrices
        are accepted only with ``allow_rotmat=True`` (consumers that pose the body with them, as
        :func:`densepose_loss`); otherwise they raise a ``ValueError`` naming :meth:`to_axis_angle`."""
        self._check_kind(op)
        b = _tensor(op, "params.betas", self.betas, [None, num_betas], "float")
        B = b.shape[0]
        if self.rotmat is not None:
            _tensor(op, "params.rotmat", self.rotmat, [B, 24, 3, 3], "float")
            if not allow_rotmat:
                raise ValueError(f"{op}: params hold rotation matrices (rotmat) but {op} works on axis-angle "
                                 "parameters (body_pose, global_orient): convert once with params.to_axis_angle()")
            names = ("rotmat", "transl")
        else:
            _tensor(op, "params.body_pose", self.body_pose, [B, 69], "float")
            _tensor(op, "params.global_orient", self.global_orient, [B, 3], "float")
            names = ("body_pose", "global_orient", "transl")
        out = self
        if self.transl is None:
            out = replace(self, transl=b.new_zeros(B, 3))
        else:
            _tensor(op, "params.transl", self.transl, [B, 3], "float")
        for name in names:
            t = getattr(out, name)
            if t.dtype != b.dtype or t.device != b.device:
                raise TypeError(f"{op}: params.{name} is {t.dtype} on {t.device} but params.betas is {b.dtype} on "
                                f"{b.device}")
        return out

    @property
    def batch_size(self) -> int:
        return int(self.betas.shape[0])

    @property
    def pose(self) -> Tensor:
        """(B, 72): global orientation then body pose (axis-angle parameters only)."""
        if self.rotmat is not None:
            raise ValueError("BodyParams.pose: these params hold rotation matrices (rotmat), not axis-angle; use "
                             "rotations(), or to_axis_angle() for an axis-angle copy")
        return torch.cat([self.global_orient, self.body_pose], dim=1)

    def rotations(self) -> Tensor:
        """(B, 24, 3, 3) relative joint rotations: ``rotmat`` itself, or Rodrigues of the axis-angle pose."""
        self._check_kind("BodyParams.rotations")
        if self.rotmat is not None:
            return self.rotmat
        return ops.rodrigues(self.pose.reshape(self.batch_size, -1, 3))

    def to_axis_angle(self) -> "BodyParams":
        """Axis-angle copy (angles in [0, π]) of rotation-matrix params (axis-angle params: returned as they are).

        Converts through the quaternion (Shepperd's rule: accurate near 0 and π).  Meant for a
        one-off conversion, e.g. of a network's detached prediction before :func:`refine`: its
        gradient is that of the matrix logarithm, unstable near π.  The matrices must be finite
        rotations (orthonormal within 1e-3, determinant +1); ``ValueError`` otherwise."""
        op = "BodyParams.to_axis_angle"
        self._check_kind(op)
        if self.rotmat is None:
            return self
        R = _tensor(op, "params.rotmat", self.rotmat, [self.batch_size, 24, 3, 3], "float")
        if not bool(torch.isfinite(R).all()):
            raise ValueError(f"{op}: params.rotmat contains NaN or Inf")
        with torch.no_grad():
            eye = torch.eye(3, dtype=R.dtype, device=R.device)
            ortho = float((R.transpose(-1, -2) @ R - eye).abs().max()) if R.numel() else 0.0
            det_ok = bool((torch.linalg.det(R) > 0).all()) if R.numel() else True
        if ortho > ROTATION_TOL or not det_ok:
            raise ValueError(f"{op}: params.rotmat must hold rotation matrices (orthonormal, determinant +1); got "
                             f"max |R^T R - I| = {ortho:.3g}" + ("" if det_ok else " and a negative determinant"))
        aa = matrix_to_axis_angle(R).reshape(self.batch_size, 72)
        return BodyParams(self.betas, body_pose=aa[:, 3:], global_orient=aa[:, :3], transl=self.transl)

    def _map(self, fn) -> "BodyParams":
        return BodyParams(*(None if t is None else fn(t) for t in
                            (self.betas, self.body_pose, self.global_orient, self.transl, self.rotmat)))

    def detach(self) -> "BodyParams":
        return self._map(Tensor.detach)

    def clone(self) -> "BodyParams":
        return self._map(Tensor.clone)


@dataclass
class IUVPoints:
    """DensePose correspondences of B images, padded to N points per image.

    part (B, N) int64 in 1..24 (DensePose's I), uv (B, N, 2) in [0, 1], xy (B, N, 2) image
    positions (pixels for a perspective camera; the weak-perspective camera's units otherwise),
    mask (B, N) bool: False marks padding, whose entries are ignored (they may hold anything).
    """

    part: Tensor
    uv: Tensor
    xy: Tensor
    mask: Optional[Tensor] = None

    def check(self, op: str = "IUVPoints") -> "IUVPoints":
        """Validate shapes, dtypes and the values of the unmasked points; returns a copy with a mask
        whose padding holds part 1, uv 0, xy 0."""
        part = _tensor(op, "iuv_points.part", self.part, [None, None])
        B, N = part.shape
        uv = _tensor(op, "iuv_points.uv", self.uv, [B, N, 2], "float")
        xy = _tensor(op, "iuv_points.xy", self.xy, [B, N, 2], "float")
        if part.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{op}: iuv_points.part must be int64 or int32; got {part.dtype}")
        mask = self.mask
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=part.device)
        else:
            _tensor(op, "iuv_points.mask", mask, [B, N])
            if mask.dtype != torch.bool:
                raise TypeError(f"{op}: iuv_points.mask must be bool; got {mask.dtype}")
        if mask.any():
            p, u, x = part[mask], uv[mask], xy[mask]
            if int(p.min()) < 1 or int(p.max()) > NUM_PARTS:
                raise ValueError(f"{op}: iuv_points.part must be in 1..{NUM_PARTS} where mask is True; "
                                 f"got {int(p.min())}..{int(p.max())}")
            if not bool(torch.isfinite(u).all()) or float(u.min()) < -1e-6 or float(u.max()) > 1 + 1e-6:
                raise ValueError(f"{op}: iuv_points.uv must be finite and in [0, 1] where mask is True")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{op}: iuv_points.xy must be finite where mask is True")
        # Padding is replaced by harmless values so that nothing downstream can pick up a NaN from it.
        part = torch.where(mask, part.long(), 1)
        uv = torch.where(mask[..., None], uv, 0)
        xy = torch.where(mask[..., None], xy, 0)
        return IUVPoints(part, uv, xy, mask)

    @property
    def batch_size(self) -> int:
        return int(self.part.shape[0])

    @classmethod
    def from_flat(cls, part: Tensor, uv: Tensor, xy: Tensor, batch_index: Tensor,
                  batch_size: Optional[int] = None) -> "IUVPoints":
        """Pad flat points (part (M,), uv (M, 2), xy (M, 2), batch_index (M,) in [0, B)) to (B, N)."""
        op = "IUVPoints.from_flat"
        M = _tensor(op, "part", part, [None]).shape[0]
        _tensor(op, "uv", uv, [M, 2], "float")
        _tensor(op, "xy", xy, [M, 2], "float")
        bi = _tensor(op, "batch_index", batch_index, [M]).long()
        B = int(batch_size) if batch_size is not None else (int(bi.max()) + 1 if M else 0)
        if M and (int(bi.min()) < 0 or int(bi.max()) >= B):
            raise ValueError(f"{op}: batch_index must be in [0, {B}); got {int(bi.min())}..{int(bi.max())}")
        counts = torch.bincount(bi, minlength=B) if M else torch.zeros(B, dtype=torch.long, device=part.device)
        N = int(counts.max()) if B and M else 0
        order = torch.sort(bi, stable=True).indices
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(M, device=part.device) - start[bi[order]]
        out_part = torch.ones(B, N, dtype=torch.long, device=part.device)
        out_uv = uv.new_zeros(B, N, 2)
        out_xy = xy.new_zeros(B, N, 2)
        mask = torch.zeros(B, N, dtype=torch.bool, device=part.device)
        b = bi[order]
        out_part[b, slot] = part[order].long()
        out_uv[b, slot] = uv[order]
        out_xy[b, slot] = xy[order]
        mask[b, slot] = True
        return cls(out_part, out_uv, out_xy, mask)

    @classmethod
    def from_iuv_image(cls, iuv: Tensor, max_points: Optional[int] = None, uv_scale: float = 1.0,
                       generator: Optional[torch.Generator] = None) -> "IUVPoints":
        """Points of DensePose IUV images ``iuv`` (B, 3, H, W) = (I, U, V), I = 0 background.

        Pixel (row i, column j) becomes the image point (j + 0.5, i + 0.5) (its centre); U and V are
        divided by ``uv_scale`` (255 for DensePose's uint8 IUV images).  ``max_points`` keeps a random
        subset of that many foreground pixels per image (all of them when None)."""
        op = "IUVPoints.from_iuv_image"
        _tensor(op, "iuv", iuv, [None, 3, None, None])
        B, _, H, W = iuv.shape
        I = iuv[:, 0].round().long()
        fg = I > 0
        dtype = iuv.dtype if iuv.is_floating_point() else torch.float32
        rows, cols = torch.meshgrid(torch.arange(H, device=iuv.device), torch.arange(W, device=iuv.device),
                                    indexing="ij")
        xy = torch.stack([cols, rows], -1).to(dtype) + 0.5
        keep = fg.clone()
        if max_points is not None:
            score = torch.rand(B, H, W, generator=generator).to(iuv.device)
            score = torch.where(fg, score, torch.full_like(score, 2.0))
            k = min(int(max_points), H * W)
            thresh = score.flatten(1).kthvalue(k, dim=1).values if k > 0 else score.new_full((B,), -1.0)
            keep = fg & (score <= thresh[:, None, None])
        b, i, j = torch.nonzero(keep, as_tuple=True)
        uv = torch.stack([iuv[b, 1, i, j], iuv[b, 2, i, j]], 1).to(dtype) / float(uv_scale)
        return cls.from_flat(I[b, i, j], uv.clamp(0, 1), xy[i, j], b, B)


def _grid_points(grid: UVGrid, pts: IUVPoints) -> GridPoints:
    """Rest-space data (B, N, ...) of every point (padding looked up at part 1, uv 0: ignored later)."""
    B, N = pts.part.shape
    part = torch.where(pts.mask, pts.part, 1).reshape(-1)
    uv = torch.where(pts.mask[..., None], pts.uv, 0).reshape(-1, 2).clamp(0, 1)
    gp = grid.lookup_points(part, uv)
    return GridPoints(gp.template.view(B, N, 3), gp.shapedirs.view(B, N, 3, -1), gp.weights.view(B, N, -1),
                      None if gp.posedirs is None else gp.posedirs.view(B, N, 3, -1))


def posed_points(grid: UVGrid, params: BodyParams, data: GridPoints) -> Tensor:
    """Pose per-sample looked-up points ``data`` (B, N, ...) -> (B, N, 3), with ``params.transl``
    (axis-angle or rotation-matrix ``params``, checked by the caller)."""
    B = params.batch_size
    rot = params.rotations()
    rest = grid.joint_template[None] + torch.einsum("jcs,bs->bjc", grid.joint_shapedirs, params.betas)
    _, A = ops.kinematic_chain(rot, rest, grid.parents)
    v = data.template + torch.einsum("bncs,bs->bnc", data.shapedirs, params.betas)
    if data.posedirs is not None:
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        v = v + torch.einsum("bncf,bf->bnc", data.posedirs, (rot[:, 1:] - eye).reshape(B, -1))
    M = torch.einsum("bnj,bjcd->bncd", data.weights, A)
    return (M[..., :3] @ v.unsqueeze(-1))[..., 0] + M[..., 3] + params.transl[:, None]


def densepose_loss(params: BodyParams, iuv_points: IUVPoints, camera: Camera, grid: UVGrid,
                   squared: bool = False, reduction: str = "mean") -> Tensor:
    """HoloPose's DensePose loss (Eq. 4) per sample, differentiable w.r.t. the parameters (and camera).

    Every unmasked point ``(part, u, v) -> xy`` is looked up in ``grid`` (bilinear, valid cells only),
    posed with ``params`` (linear blend skinning with the looked-up weights), projected by ``camera``
    and compared with ``xy``: the Euclidean distance (``squared=True``: its square) per point,
    averaged over each sample's points (``reduction="sum"``: summed).  Returns (B,); a sample without
    points gives 0.  Float dtypes and devices must match the grid's.  ``params`` may hold axis-angle
    or rotation matrices (``BodyParams(betas, rotmat=R)``); matrices pose the body as given, and the
    gradient reaches them without an axis-angle detour.
    """
    op = "densepose_loss"
    if not isinstance(grid, UVGrid):
        raise TypeError(f"{op}: grid must be a UVGrid; got {type(grid).__name__}")
    if not isinstance(params, BodyParams):
        raise TypeError(f"{op}: params must be a BodyParams; got {type(params).__name__}")
    if not isinstance(iuv_points, IUVPoints):
        raise TypeError(f"{op}: iuv_points must be an IUVPoints; got {type(iuv_points).__name__}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{op}: reduction must be 'mean' or 'sum'; got {reduction!r}")
    params = params.check(op, grid.num_betas, allow_rotmat=True)
    pts = iuv_points.check(op)
    B = params.batch_size
    if pts.batch_size != B:
        raise ValueError(f"{op}: iuv_points has {pts.batch_size} samples but params has {B}")
    if params.betas.dtype != grid.template.dtype or params.betas.device != grid.template.device:
        raise TypeError(f"{op}: params must be {grid.template.dtype} on {grid.template.device} (the grid's); got "
                        f"{params.betas.dtype} on {params.betas.device}")
    data = _grid_points(grid, pts)
    x = posed_points(grid, params, data)
    proj = project_points(x, camera)
    e = proj - pts.xy.to(proj.dtype)
    sq = (e * e).sum(-1)
    # sqrt with a zero (not NaN) derivative at an exact hit.
    d = sq if squared else torch.where(sq > 0, sq, 1.0).sqrt() * (sq > 0)
    m = pts.mask.to(d.dtype)
    total = (d * m).sum(1)
    if reduction == "sum":
        return total
    return total / m.sum(1).clamp_min(1)
