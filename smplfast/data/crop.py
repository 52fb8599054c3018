"""SPIN's person crop as one affine map: box (centre, scale) -> rotate -> resize -> optional mirror.

Coordinates are continuous pixel coordinates: pixel (row i, col j) covers [j, j+1) x [i, i+1), its
centre is (j + 0.5, i + 0.5), in the original image and in the crop alike. A box of side
``200 * scale`` pixels centred at ``center`` maps onto the ``res x res`` crop:

    q = res/2 + (res / (200 scale)) * R(-rot) (p - center)        then, if flipped, q_x -> res - q_x

with R(a) = [[cos a, -sin a], [sin a, cos a]] in image axes (x right, y down). A positive ``rot``
(radians) turns the content counterclockwise on screen, as SPIN's positive rotation does; the crop
is taken around the box centre. The image is resampled with exactly this matrix
(:func:`warp_image`), so a keypoint transformed with :func:`transform_points` lands on the same
image content. Normalised keypoints are ``2 q / res - 1`` (-1 = left/top edge, +1 = right/bottom).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

__all__ = [
    "BBOX_SCALE_UNIT",
    "crop_matrix",
    "transform_points",
    "normalize_points",
    "denormalize_points",
    "bbox_to_center_scale",
    "warp_image",
    "rotation_z",
]

#: SPIN's box scale unit: scale = box side / 200.
BBOX_SCALE_UNIT = 200.0


def crop_matrix(center: Sequence[float], scale: float, res: int, rot: float = 0.0, flip: bool = False) -> np.ndarray:
    """The (3, 3) float64 affine matrix taking original-image pixel coordinates to crop coordinates
    (module docstring). ``scale`` = box side / 200, ``rot`` in radians, ``flip`` mirrors the crop."""
    cx, cy = (float(c) for c in center)
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"crop_matrix: scale must be finite and > 0; got {scale}")
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"crop_matrix: center must be finite; got ({cx}, {cy})")
    k = res / (BBOX_SCALE_UNIT * scale)
    c, s = math.cos(-rot), math.sin(-rot)
    A = np.array([[k * c, -k * s], [k * s, k * c]])
    M = np.eye(3)
    M[:2, :2] = A
    M[:2, 2] = res / 2.0 - A @ np.array([cx, cy])
    if flip:
        M = np.array([[-1.0, 0.0, float(res)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ M
    return M


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply the affine ``M`` (3, 3) to the x, y columns of ``points`` (..., D >= 2); other columns
    (confidence, ...) are kept. Returns a new float array."""
    points = np.asarray(points)
    if points.ndim < 1 or points.shape[-1] < 2:
        raise ValueError(f"transform_points: points must be (..., D) with D >= 2; got {points.shape}")
    out = np.array(points, dtype=np.result_type(points.dtype, np.float32), copy=True)
    xy = points[..., :2].astype(np.float64)
    out[..., :2] = xy @ M[:2, :2].T + M[:2, 2]
    return out


def normalize_points(points: np.ndarray, res: int) -> np.ndarray:
    """Crop pixels -> SPIN's normalised coordinates 2 q / res - 1 (x, y columns only)."""
    out = np.array(points, dtype=np.result_type(np.asarray(points).dtype, np.float32), copy=True)
    out[..., :2] = 2.0 * out[..., :2] / res - 1.0
    return out


def denormalize_points(points: np.ndarray, res: int) -> np.ndarray:
    """Inverse of :func:`normalize_points`."""
    out = np.array(points, dtype=np.result_type(np.asarray(points).dtype, np.float32), copy=True)
    out[..., :2] = (out[..., :2] + 1.0) * (res / 2.0)
    return out


def bbox_to_center_scale(bbox: Sequence[float], rescale: float = 1.2) -> Tuple[np.ndarray, float]:
    """A box ``[x, y, w, h]`` -> (centre (2,), scale) in SPIN's convention: a square of side
    ``max(w, h) * rescale`` (SPIN's 1.2 margin by default)."""
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0):
        raise ValueError(f"bbox_to_center_scale: bbox must be [x, y, w, h] with w, h > 0; got {list(bbox)}")
    return np.array([x + w / 2.0, y + h / 2.0]), max(w, h) * rescale / BBOX_SCALE_UNIT


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation about the camera z axis by ``angle`` (radians) in camera axes (x right, y down):
    its top-left block is R(angle) of the image plane, so ``rotation_z(-rot)`` turns 3D camera-frame
    points the way :func:`crop_matrix` turns the image."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def warp_image(image: Image.Image, M: np.ndarray, res: Union[int, Tuple[int, int]], *, resample: str = "bilinear",
               fill=0, antialias: bool = True) -> Image.Image:
    """Resample ``image`` into a ``res x res`` (or ``(width, height)``) crop with the affine ``M``
    (original pixels -> crop pixels), continuous pixel coordinates on both sides.

    Pixels outside the image read ``fill``. When the crop shrinks the image more than 2x and
    ``antialias`` is set, the covered region is first reduced with Pillow's antialiased resize to about
    the crop's pixel density; the composite mapping is still exactly ``M``.
    """
    if resample not in _RESAMPLE:
        raise ValueError(f"warp_image: resample must be one of {sorted(_RESAMPLE)}; got {resample!r}")
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (3, 3):
        raise ValueError(f"warp_image: M must be (3, 3); got {M.shape}")
    out_w, out_h = (res, res) if isinstance(res, (int, np.integer)) else (int(res[0]), int(res[1]))
    Minv = np.linalg.inv(M)
    src = image
    pre = np.eye(3)  # original pixels -> pixels of ``src``
    zoom = math.sqrt(abs(np.linalg.det(M[:2, :2])))
    if antialias and zoom < 0.5 and resample != "nearest":
        corners = np.array([[0, 0], [out_w, 0], [0, out_h], [out_w, out_h]], dtype=np.float64)
        cov = corners @ Minv[:2, :2].T + Minv[:2, 2]
        x0, y0 = np.floor(cov.min(axis=0)) - 2
        x1, y1 = np.ceil(cov.max(axis=0)) + 2
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, float(image.width)), min(y1, float(image.height))
        if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
            return Image.new(image.mode, (out_w, out_h), fill)
        w = max(1, int(round((x1 - x0) * zoom)))
        h = max(1, int(round((y1 - y0) * zoom)))
        src = image.resize((w, h), _RESAMPLE[resample], box=(x0, y0, x1, y1))
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        pre = np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0], [0.0, 0.0, 1.0]])
    # Pillow's AFFINE data maps output coordinates to input coordinates (pixel centres at +0.5).
    back = pre @ Minv
    data = tuple(float(v) for v in back[:2].ravel())
    return src.transform((out_w, out_h), Image.AFFINE, data=data, resample=_RESAMPLE[resample], fillcolor=fill)
