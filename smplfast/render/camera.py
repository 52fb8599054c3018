"""Pinhole cameras for the renderer, in smplfast's camera convention.

A world point ``X`` goes to the camera frame as ``X_cam = R X + t`` and projects to pixels as
``u = f_x X_cam/Z_cam + c_x``, ``v = f_y Y_cam/Z_cam + c_y`` (v grows downwards, along image rows;
pixel (row i, col j) covers [j, j+1) x [i, i+1)).  This is SPIN's ``perspective_projection`` and
:func:`smplfast.ops.project_keypoints`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["PerspectiveCamera"]

TensorLike = Union[torch.Tensor, np.ndarray, Sequence[float], float]


def _tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach() if x.requires_grad else x
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"PerspectiveCamera: {name} must be a tensor, array or number; got {type(x).__name__}") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"PerspectiveCamera: {name} must be numeric; got dtype {t.dtype}")
    t = t if t.is_floating_point() else t.double()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"PerspectiveCamera: {name} must be finite")
    return t


class PerspectiveCamera:
    """A batch of pinhole cameras: ``rotation`` (B,3,3), ``translation`` (B,3), ``focal`` (B,2), ``center`` (B,2).

    Args:
        rotation: (B,3,3) or (3,3) world-to-camera rotation; ``None`` = identity.
        translation: (B,3) or (3,) world-to-camera translation (metres); ``None`` = zero.
        focal: (B,2) ``(f_x, f_y)``, (B,) or a number (pixels), or (2,) for one camera.
        center: (B,2) or (2,) principal point ``(c_x, c_y)`` in pixels; ``None`` = the centre of
            the image being rendered, ``(W/2, H/2)``.

    Inputs without the batch dimension describe one camera (``batch_size == 1``), which is
    broadcast over any batch of bodies.  Values are stored as float tensors (float64 unless
    ``rotation`` or ``translation`` is given as float32) on the device of the first tensor argument.
    """

    def __init__(self, rotation: Optional[TensorLike] = None, translation: Optional[TensorLike] = None,
                 focal: Optional[TensorLike] = None, center: Optional[TensorLike] = None) -> None:
        if focal is None:
            raise ValueError("PerspectiveCamera: focal is required (pixels; a number, (B,), (2,) or (B, 2))")
        given = {k: _tensor(v, k) for k, v in (("rotation", rotation), ("translation", translation),
                                                ("focal", focal), ("center", center)) if v is not None}
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
        f = given["focal"]
        if f.ndim == 0:
            f = f.reshape(1, 1).expand(1, 2)
        elif f.ndim == 1:
            # (2,) with no batched sibling is one camera's (f_x, f_y); otherwise (B,) is one f per camera.
            if f.shape[0] == 2 and all(b == 1 for b in batches.values()):
                f = f.reshape(1, 2)
            else:
                f = f[:, None].expand(-1, 2)
        elif not (f.ndim == 2 and f.shape[1] == 2):
            raise ValueError(f"PerspectiveCamera: focal must be a number, (B,), (2,) or (B, 2); got {tuple(f.shape)}")
        batches["focal"] = f.shape[0]
        c = given.get("center")
        if c is not None:
            if c.shape[-1:] != (2,) or c.ndim not in (1, 2):
                raise ValueError(f"PerspectiveCamera: center must be (B, 2) or (2,); got {tuple(c.shape)}")
            c = c.reshape(-1, 2)
            batches["center"] = c.shape[0]
        if bool((f <= 0).any()):
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
        t = _tensor(translation, "translation")
        c = torch.full(t.shape[:-1] + (2,), img_res / 2.0, dtype=t.dtype, device=t.device)
        return cls(rotation=rotation, translation=t, focal=float(focal_length), center=c)

    @classmethod
    def look_at(cls, eye: TensorLike, target: TensorLike, focal: TensorLike, center: Optional[TensorLike] = None,
                up: Sequence[float] = (0.0, 1.0, 0.0)) -> "PerspectiveCamera":
        """A camera at ``eye`` (B,3) or (3,) looking at ``target``, with world ``up`` pointing up in the
        image (image y grows downwards, so the camera's y axis is ``-up`` projected)."""
        e = _tensor(eye, "eye").reshape(-1, 3)
        g = _tensor(target, "target").reshape(-1, 3).to(e)
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

    def to(self, device=None, dtype=None) -> "PerspectiveCamera":
        """A copy on ``device`` / in ``dtype``."""
        out = PerspectiveCamera.__new__(PerspectiveCamera)
        for k in ("rotation", "translation", "focal", "center"):
            v = getattr(self, k)
            setattr(out, k, None if v is None else v.to(device=device, dtype=dtype))
        return out

    def expand(self, batch_size: int) -> "PerspectiveCamera":
        """This camera batch broadcast to ``batch_size`` bodies (a single camera repeats)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"camera batch ({self.batch_size} cameras) does not match the {batch_size} bodies; "
                             f"give one camera or {batch_size}")
        out = PerspectiveCamera.__new__(PerspectiveCamera)
        for k in ("rotation", "translation", "focal", "center"):
            v = getattr(self, k)
            setattr(out, k, None if v is None else v.expand(batch_size, *v.shape[1:]))
        return out

    def centers(self, image_size: Tuple[int, int]) -> torch.Tensor:
        """Principal points (B,2); the image centre ``(W/2, H/2)`` when none was given."""
        if self.center is not None:
            return self.center
        H, W = image_size
        return torch.tensor([W / 2.0, H / 2.0], dtype=self.dtype, device=self.device).expand(self.batch_size, 2)

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(B,N,3) world points -> (B,N,3) camera-frame points ``R X + t`` (a single camera broadcasts)."""
        R = self.rotation.to(points.dtype)
        t = self.translation.to(points.dtype)
        return points @ R.transpose(-1, -2) + t[:, None, :]

    def project(self, points: torch.Tensor, image_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """(B,N,3) world points -> (B,N,2) pixel coordinates (``image_size`` is needed when no center was given)."""
        X = self.world_to_camera(points)
        if self.center is None and image_size is None:
            raise ValueError("PerspectiveCamera.project: this camera has no center; pass image_size=(H, W)")
        c = (self.center if self.center is not None else self.centers(image_size)).to(points.dtype)
        return self.focal.to(points.dtype)[:, None] * X[..., :2] / X[..., 2:] + c[:, None]

    def __repr__(self) -> str:
        return (f"PerspectiveCamera(batch_size={self.batch_size}, focal={self.focal[0].tolist()}, "
                f"center={'image centre' if self.center is None else self.center[0].tolist()}, dtype={self.dtype})")
