"""HoloPose's DensePose loss: image points with a surface coordinate against the projected UV-grid body.

Eq. 4 of HoloPose: ``L_DP = sum_i || x_i - Pi(M_phi(u_i)) ||_2`` over the image points ``x_i`` that a
DensePose network labelled with a surface coordinate ``u_i = (part, u, v)``.  Here every point's
surface coordinate is looked up once in the :class:`~smplfast.surface.uvgrid.UVGrid` (rest position,
shape blend shapes, skinning weights), the point is posed with the body's parameters by linear blend
skinning and projected by a camera; the loss is the per-point Euclidean distance, averaged over each
sample's points.

Input types (small dataclasses, all batched over B samples):

* :class:`BodyParams`: ``betas (B, S)``, ``body_pose (B, 69)``, ``global_orient (B, 3)``,
  ``transl (B, 3)`` (axis-angle, metres; smplx's names).
* :class:`PerspectiveCamera`: ``focal_length (B, 2)``, ``center (B, 2)`` in pixels, optional
  ``rotation (B, 3, 3)`` and ``translation (B, 3)`` (world to camera: ``X = R x + t``); a point
  projects to ``f X / Z + c`` (the project's convention, v grows downwards).
* :class:`WeakPerspectiveCamera`: ``params (B, 3) = [s, tx, ty]`` as SPIN's ``pred_camera``:
  ``s * (x[:2] + [tx, ty])``; targets are then in the same normalised units (SPIN: [-1, 1]).
* :class:`IUVPoints`: per-sample point sets padded to ``N``: ``part (B, N)`` 1..24, ``uv (B, N, 2)``,
  ``xy (B, N, 2)`` image positions, ``mask (B, N)`` bool (False = padding, may hold anything);
  :meth:`IUVPoints.from_flat` builds it from flat points with a ``batch_index``, and
  :meth:`IUVPoints.from_iuv_image` from DensePose's IUV output images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Union

import torch
from torch import Tensor

from .. import ops
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

MIN_DEPTH = 1e-4  # depth clamp of the perspective projection (as project_keypoints)


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


@dataclass
class BodyParams:
    """SMPL parameters of B bodies: betas (B, S), body_pose (B, 69), global_orient (B, 3), transl (B, 3)."""

    betas: Tensor
    body_pose: Tensor
    global_orient: Tensor
    transl: Optional[Tensor] = None

    def check(self, op: str, num_betas: Optional[int] = None) -> "BodyParams":
        """Validate shapes and dtypes (a missing transl becomes zeros); returns self (or a completed copy)."""
        b = _tensor(op, "params.betas", self.betas, [None, num_betas], "float")
        B = b.shape[0]
        _tensor(op, "params.body_pose", self.body_pose, [B, 69], "float")
        _tensor(op, "params.global_orient", self.global_orient, [B, 3], "float")
        out = self
        if self.transl is None:
            out = replace(self, transl=b.new_zeros(B, 3))
        else:
            _tensor(op, "params.transl", self.transl, [B, 3], "float")
        for name in ("body_pose", "global_orient", "transl"):
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
        """(B, 72): global orientation then body pose."""
        return torch.cat([self.global_orient, self.body_pose], dim=1)

    def detach(self) -> "BodyParams":
        return BodyParams(*(None if t is None else t.detach() for t in
                            (self.betas, self.body_pose, self.global_orient, self.transl)))

    def clone(self) -> "BodyParams":
        return BodyParams(*(None if t is None else t.clone() for t in
                            (self.betas, self.body_pose, self.global_orient, self.transl)))


def _per_sample(op: str, name: str, value, B: int, width: int, like: Tensor) -> Tensor:
    """A scalar, (B,), (width,) or (B, width) camera quantity as (B, width)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(B, width)
    if t.dim() == 1 and t.shape[0] == width and B != width:
        return t[None].expand(B, width)
    if t.dim() == 1 and t.shape[0] == B:
        return t[:, None].expand(B, width)
    if t.dim() == 2 and t.shape == (B, width):
        return t
    raise ValueError(f"{op}: camera {name} must be a scalar, ({B},), ({width},) or ({B}, {width}); got {tuple(t.shape)}")


@dataclass
class PerspectiveCamera:
    """Pinhole camera: ``u = f_x X / Z + c_x``, ``v = f_y Y / Z + c_y`` with ``X = rotation x + translation``.

    focal_length: scalar, (B,) or (B, 2) pixels; center: (2,) or (B, 2) pixels; rotation (B, 3, 3)
    (default identity); translation (B, 3) (default zero; the body's ``transl`` usually plays the
    camera translation's role, as in SPIN).  The camera is held fixed by :func:`~smplfast.surface.refine.refine`.
    """

    focal_length: Union[float, Tensor]
    center: Union[Tensor, tuple]
    rotation: Optional[Tensor] = None
    translation: Optional[Tensor] = None

    def resolved(self, B: int, like: Tensor, op: str = "PerspectiveCamera"):
        """(focal (B, 2), center (B, 2), rotation (B, 3, 3), translation (B, 3)) in like's dtype/device."""
        f = _per_sample(op, "focal_length", self.focal_length, B, 2, like)
        c = _per_sample(op, "center", self.center, B, 2, like)
        if self.rotation is None:
            R = torch.eye(3, dtype=like.dtype, device=like.device).expand(B, 3, 3)
        else:
            R = _tensor(op, "camera rotation", self.rotation, [B, 3, 3], "float").to(like)
        t = like.new_zeros(B, 3) if self.translation is None else \
            _tensor(op, "camera translation", self.translation, [B, 3], "float").to(like)
        return f, c, R, t


@dataclass
class WeakPerspectiveCamera:
    """SPIN's weak-perspective camera ``params (B, 3) = [s, tx, ty]``: ``s * (x[..., :2] + [tx, ty])``.

    Optimised together with the body by :func:`~smplfast.surface.refine.refine` (the body's
    ``transl`` has no effect under this camera and is left unchanged)."""

    params: Tensor

    def check(self, B: int, like: Tensor, op: str = "WeakPerspectiveCamera") -> Tensor:
        return _tensor(op, "camera params", self.params, [B, 3], "float").to(like)


Camera = Union[PerspectiveCamera, WeakPerspectiveCamera]


def project_points(points: Tensor, camera: Camera, params_like: Optional[Tensor] = None) -> Tensor:
    """Project (B, N, 3) points (including the body's translation) with ``camera`` -> (B, N, 2)."""
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
    """Pose per-sample looked-up points ``data`` (B, N, ...) -> (B, N, 3), with ``params.transl``."""
    B = params.batch_size
    J = grid.num_joints
    rot = ops.rodrigues(params.pose.reshape(B, J, 3))
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
    points gives 0.  Float dtypes and devices must match the grid's.
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
    params = params.check(op, grid.num_betas)
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
