"""Draw a shaded mesh over a picture (fits over their images, synthetic samples, demos)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from .camera import PerspectiveCamera
from .maps import BodyRenderer

__all__ = ["overlay", "load_image"]

ImageLike = Union[np.ndarray, Any, str, os.PathLike]  # an array, a PIL image or a path


def load_image(image: ImageLike) -> np.ndarray:
    """An (H,W,3) uint8 array from an (H,W,3) uint8 array, a PIL image (converted to RGB) or an image path."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise ImportError("smplfast.render needs pillow to read and write images: pip install pillow") from exc
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        raise TypeError("image must be an (H, W, 3) uint8 numpy array, a PIL image or a path; got a torch tensor "
                        "(use image.cpu().numpy())")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be an (H, W, 3) uint8 numpy array, a PIL image or a path; "
                        f"got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array; got {image.shape} {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must not be empty; got {image.shape}")
    return image


def overlay(image: ImageLike, vertices, faces, camera: PerspectiveCamera, path=None,
            color: Sequence[float] = (0.65, 0.74, 0.86), alpha: float = 0.7,
            light_dir=None, ambient: float = 0.35) -> np.ndarray:
    """Draw one shaded mesh over an image.

    Args:
        image: (H,W,3) uint8 array, PIL image or image path.
        vertices: (V,3) world coordinates (tensor or array; (1,V,3) is accepted too).
        faces: (F,3) vertex indices.
        camera: a :class:`PerspectiveCamera` holding one camera (with no ``center``, the image centre).
        path: when given, the result is written there as a PNG.
        color: mesh colour, three floats in [0,1].
        alpha: opacity of the mesh in [0,1]; pixels outside the silhouette are left unchanged.
        light_dir, ambient: as in :meth:`BodyRenderer.render` (Lambert shading of interpolated normals).

    Returns the (H,W,3) uint8 result (a new array; the input is not modified).
    """
    img = load_image(image)
    H, W = img.shape[:2]
    v = torch.as_tensor(vertices.detach() if isinstance(vertices, torch.Tensor) else np.asarray(vertices))
    if v.ndim == 3 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 2 or v.shape[1] != 3 or not v.is_floating_point():
        raise ValueError(f"vertices must be (V, 3) floats for one mesh; got {tuple(v.shape)} {v.dtype}")
    if not isinstance(camera, PerspectiveCamera):
        raise TypeError(f"camera must be a PerspectiveCamera; got {type(camera).__name__}")
    if camera.batch_size != 1:
        raise ValueError(f"overlay draws one mesh, so camera must hold one camera; got {camera.batch_size}")
    col = np.asarray(color, dtype=np.float64)
    if col.shape != (3,) or not np.all(np.isfinite(col)) or col.min() < 0 or col.max() > 1:
        raise ValueError(f"color must be three floats in [0, 1]; got {color!r}")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    renderer = BodyRenderer(faces, num_vertices=v.shape[0])
    pc = np.repeat(col[None], 25, axis=0)
    maps = renderer.render(v[None].to(torch.float64), camera, (H, W), maps=("silhouette", "rgb"),
                           part_colors=pc, light_dir=light_dir, ambient=ambient)
    mask = maps["silhouette"][0].cpu().numpy()
    shaded = maps["rgb"][0].cpu().numpy() * 255.0
    out = img.copy()
    blend = (1.0 - alpha) * img[mask].astype(np.float64) + alpha * shaded[mask]
    out[mask] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    if path is not None:
        from PIL import Image

        Image.fromarray(out).save(os.fspath(path), format="PNG")
    return out
