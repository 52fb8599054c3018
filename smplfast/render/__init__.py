"""Rendering of posed bodies: silhouettes, DensePose part maps and IUV, the 6-part LSP segmentation,
depth, normals, shaded colour images, and mesh overlays on pictures.

::

    from smplfast.render import PerspectiveCamera, BodyRenderer, iuv_to_uint8, overlay

    cam = PerspectiveCamera(rotation=R, translation=t, focal=f, center=c)
    renderer = BodyRenderer.from_model()          # bundled default model and its charts
    maps = renderer.render(vertices, cam, image_size=(H, W))
    overlay(image, vertices[0], renderer.faces, cam, path="fit.png")

See docs/RENDERING.md.
"""
from .camera import PerspectiveCamera
from .maps import (
    DENSEPOSE_TO_LSP6,
    LSP6_PART_NAMES,
    MAP_NAMES,
    BodyRenderer,
    default_part_colors,
    face_tables_from_charts,
    iuv_to_uint8,
    vertex_normals,
)
from .overlay import load_image, overlay

__all__ = [
    "PerspectiveCamera",
    "BodyRenderer",
    "MAP_NAMES",
    "LSP6_PART_NAMES",
    "DENSEPOSE_TO_LSP6",
    "default_part_colors",
    "face_tables_from_charts",
    "iuv_to_uint8",
    "vertex_normals",
    "overlay",
    "load_image",
]
