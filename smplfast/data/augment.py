"""SPIN's training augmentation: random draws, and their effect on images, keypoints, 3D joints and SMPL.

One draw (:class:`AugmentationParams`) holds a mirror flag, a per-channel pixel gain, an in-plane
rotation ``rot`` (radians; positive turns the crop content counterclockwise on screen, see
:mod:`smplfast.data.crop`) and a box scale factor. Its effect on the labels:

* 2D keypoints: the crop matrix of :func:`smplfast.data.crop.crop_matrix` (it includes the rotation,
  scale and mirror), then left/right labels swapped with :func:`smplfast.body.keypoints.flip_permutation`.
* 3D joints (camera frame): rotated by ``Rz(-rot)`` about the camera z axis, then x negated and the
  labels swapped.
* SMPL pose: the global orientation is left-multiplied by ``Rz(-rot)``; a flip swaps the left/right
  joints' rotations (SMPL's flip permutation) and negates the y and z components of every axis-angle
  vector (conjugation by diag(-1, 1, 1)).

:func:`undo_smpl_pose_augmentation` maps a pose predicted on an augmented crop back to the original
frame (what SPIN's fits dictionary stores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..body.keypoints import flip_permutation
from ..geometry import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = [
    "IMG_NORM_MEAN",
    "IMG_NORM_STD",
    "AugmentationConfig",
    "AugmentationParams",
    "SPIN_AUGMENTATION",
    "NO_AUGMENTATION",
    "IDENTITY_AUGMENTATION",
    "make_rng",
    "sample_augmentation",
    "smpl_pose_flip_permutation",
    "flip_smpl_pose",
    "rotate_global_orient",
    "augment_smpl_pose",
    "undo_smpl_pose_augmentation",
    "augment_joints_3d",
    "image_to_tensor",
    "tensor_to_image",
]

#: ImageNet statistics SPIN normalises its crops with.
IMG_NORM_MEAN = (0.485, 0.456, 0.406)
IMG_NORM_STD = (0.229, 0.224, 0.225)

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class AugmentationConfig:
    """Distribution of the random augmentation (defaults: SPIN's).

    flip with probability ``flip_prob``; pixel gain per channel U[1 - noise_factor, 1 + noise_factor];
    rotation clip(N(0, rot_std), -rot_max, rot_max) radians, then set to 0 with probability
    ``rot_zero_prob``; box scale clip(N(1, scale_std), scale_min, scale_max).
    """

    flip_prob: float = 0.5
    noise_factor: float = 0.4
    rot_std: float = math.radians(30.0)
    rot_max: float = math.radians(60.0)
    rot_zero_prob: float = 0.6
    scale_std: float = 0.25
    scale_min: float = 0.75
    scale_max: float = 1.25

    def __post_init__(self):
        for name in ("flip_prob", "rot_zero_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentationConfig.{name} must be a probability in [0, 1]; got {v}")
        for name in ("noise_factor", "rot_std", "rot_max", "scale_std"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"AugmentationConfig.{name} must be finite and >= 0; got {v}")
        if self.noise_factor >= 1:
            raise ValueError(f"AugmentationConfig.noise_factor must be < 1 (the gain must stay positive); got {self.noise_factor}")
        if not 0 < self.scale_min <= 1 <= self.scale_max:
            raise ValueError(f"AugmentationConfig needs 0 < scale_min <= 1 <= scale_max; got "
                             f"[{self.scale_min}, {self.scale_max}]")


#: SPIN's augmentation (flip 0.5, gain U[0.6, 1.4], rotation clip(N(0, 30°), ±60°) zeroed with p 0.6,
#: scale clip(N(1, 0.25), 0.75, 1.25)).
SPIN_AUGMENTATION = AugmentationConfig()
#: A configuration that never changes anything (the draws are all identities).
NO_AUGMENTATION = AugmentationConfig(flip_prob=0.0, noise_factor=0.0, rot_std=0.0, rot_max=0.0, rot_zero_prob=1.0,
                                     scale_std=0.0, scale_min=1.0, scale_max=1.0)


@dataclass(frozen=True)
class AugmentationParams:
    """One draw: mirror flag, per-channel pixel gain (3,), rotation (radians), box scale factor."""

    flip: bool = False
    pixel_noise: np.ndarray = field(default_factory=lambda: np.ones(3))
    rot: float = 0.0
    scale: float = 1.0


#: The draw that leaves a sample unchanged.
IDENTITY_AUGMENTATION = AugmentationParams()


def make_rng(seed: Optional[int], *keys: int) -> np.random.Generator:
    """A generator determined by ``(seed, *keys)`` (e.g. seed, epoch, index); fresh OS entropy when
    ``seed`` is None (so DataLoader workers never share a stream)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *(int(k) for k in keys)])))


def sample_augmentation(rng: np.random.Generator, config: AugmentationConfig = SPIN_AUGMENTATION) -> AugmentationParams:
    """Draw one :class:`AugmentationParams` (SPIN's order: flip, gain, rotation, scale)."""
    c = config
    flip = bool(rng.uniform() < c.flip_prob)
    pn = rng.uniform(1.0 - c.noise_factor, 1.0 + c.noise_factor, size=3)
    rot = float(np.clip(rng.normal() * c.rot_std, -c.rot_max, c.rot_max))
    if rng.uniform() < c.rot_zero_prob:
        rot = 0.0
    scale = float(np.clip(1.0 + rng.normal() * c.scale_std, c.scale_min, c.scale_max))
    return AugmentationParams(flip=flip, pixel_noise=pn, rot=rot, scale=scale)


# ------------------------------------------------------------------------------------------- SMPL pose
def smpl_pose_flip_permutation() -> np.ndarray:
    """(72,) index permutation of a flattened SMPL pose that swaps left and right joints."""
    perm = np.asarray(flip_permutation("smpl_24"))
    return (3 * perm[:, None] + np.arange(3)[None, :]).reshape(-1)


def _to_torch(x: ArrayLike):
    if torch.is_tensor(x):
        return x, None
    a = np.asarray(x)
    return torch.from_numpy(np.array(a, dtype=np.float64)), a.dtype


def _back(t: torch.Tensor, np_dtype):
    return t if np_dtype is None else t.numpy().astype(np_dtype if np.issubdtype(np_dtype, np.floating) else np.float64)


def _check_pose(pose, name: str):
    if pose.ndim < 1 or pose.shape[-1] != 72:
        raise ValueError(f"{name}: pose must be (..., 72) axis-angle; got {tuple(pose.shape)}")


def _batch_values(v, lead, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, device=like.device)
    if t.dim() and tuple(t.shape) != tuple(lead):
        raise ValueError(f"per-sample values must be a scalar or have shape {tuple(lead)}; got {tuple(t.shape)}")
    return t.expand(lead)


def flip_smpl_pose(pose: ArrayLike, flip=True):
    """Mirror SMPL poses (..., 72): swap left/right joints and negate the y, z axis-angle components.
    ``flip`` is a bool or a per-sample boolean array (..., ); unflipped samples are returned as is.
    Numpy in -> numpy out, torch in -> torch out (differentiable)."""
    t, dt = _to_torch(pose)
    _check_pose(t, "flip_smpl_pose")
    perm = torch.as_tensor(smpl_pose_flip_permutation(), device=t.device)
    sign = torch.tensor([1.0, -1.0, -1.0], dtype=t.dtype, device=t.device).repeat(24)
    flipped = t[..., perm] * sign
    f = _batch_values(flip, t.shape[:-1], t).to(torch.bool)
    return _back(torch.where(f[..., None], flipped, t), dt)


def rotate_global_orient(pose: ArrayLike, rot):
    """Apply the crop's in-plane rotation ``rot`` (radians, scalar or per sample) to SMPL poses
    (..., 72) whose global orientation is in the camera frame: R_global <- Rz(-rot) R_global."""
    t, dt = _to_torch(pose)
    _check_pose(t, "rotate_global_orient")
    a = -_batch_values(rot, t.shape[:-1], t).to(t.dtype)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    Rz = torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(*a.shape, 3, 3)
    go = matrix_to_axis_angle(Rz @ axis_angle_to_matrix(t[..., :3]))
    # A zero rotation must leave the pose bit-identical (no round trip through matrices).
    go = torch.where((a == 0)[..., None], t[..., :3], go)
    return _back(torch.cat([go, t[..., 3:]], dim=-1), dt)


def augment_smpl_pose(pose: ArrayLike, rot=0.0, flip=False):
    """SMPL poses in the original camera frame -> poses matching an augmented crop (rotate, then flip)."""
    return flip_smpl_pose(rotate_global_orient(pose, rot), flip)


def undo_smpl_pose_augmentation(pose: ArrayLike, rot=0.0, flip=False):
    """Inverse of :func:`augment_smpl_pose`: a pose on an augmented crop -> the original camera frame."""
    if torch.is_tensor(rot):
        neg = -rot
    else:
        neg = -np.asarray(rot, dtype=np.float64)
    return rotate_global_orient(flip_smpl_pose(pose, flip), neg)


# ------------------------------------------------------------------------------------------ 3D joints
def augment_joints_3d(joints: np.ndarray, rot: float = 0.0, flip: bool = False, convention="spin_24") -> np.ndarray:
    """Camera-frame joints (J, 3 or 4; a 4th column is a confidence and is kept) -> the augmented
    frame: rotate by Rz(-rot) about the camera z axis, then (flip) negate x and swap left/right
    labels of ``convention``."""
    j = np.asarray(joints)
    if j.ndim != 2 or j.shape[1] not in (3, 4):
        raise ValueError(f"augment_joints_3d: joints must be (J, 3) or (J, 4); got {j.shape}")
    out = np.array(j, dtype=np.result_type(j.dtype, np.float32), copy=True)
    c, s = math.cos(-rot), math.sin(-rot)
    x, y = j[:, 0].astype(np.float64), j[:, 1].astype(np.float64)
    out[:, 0], out[:, 1] = c * x - s * y, s * x + c * y
    if flip:
        out[:, 0] *= -1
        out = out[list(flip_permutation(convention))]
    return out


# ---------------------------------------------------------------------------------------------- images
def image_to_tensor(img: np.ndarray, pixel_noise: Optional[Sequence[float]] = None,
                    mean: Sequence[float] = IMG_NORM_MEAN, std: Sequence[float] = IMG_NORM_STD) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> normalised float32 (3, H, W): per-channel gain (clipped at 255, as SPIN),
    / 255, minus ``mean``, divided by ``std``."""
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image_to_tensor: img must be (H, W, 3) RGB; got {a.shape}")
    x = torch.from_numpy(np.array(a, dtype=np.float32).transpose(2, 0, 1).copy())
    if pixel_noise is not None:
        x = (x * torch.as_tensor(np.asarray(pixel_noise, dtype=np.float32)).view(3, 1, 1)).clamp_(0.0, 255.0)
    x /= 255.0
    return (x - torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)) / torch.tensor(std, dtype=torch.float32).view(3, 1, 1)


def tensor_to_image(x: torch.Tensor, mean: Sequence[float] = IMG_NORM_MEAN, std: Sequence[float] = IMG_NORM_STD) -> np.ndarray:
    """Inverse of :func:`image_to_tensor` without the gain: (3, H, W) -> uint8 (H, W, 3), for display."""
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"tensor_to_image: x must be (3, H, W); got {tuple(x.shape)}")
    y = x.detach().cpu().float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (y.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
