"""Matplotlib drawing of a body mesh, for the package's figures (no renderer needed)."""
from __future__ import annotations

import numpy as np

__all__ = ["draw_mesh"]


def draw_mesh(ax, verts: np.ndarray, faces: np.ndarray, color, view: str) -> None:
    """Flat-shaded mesh drawn back to front (painter's algorithm) in a front (x, y) or side (z, y) view."""
    from matplotlib.collections import PolyCollection

    if view == "side":  # look along -x: screen x = -z
        verts = np.stack([-verts[:, 2], verts[:, 1], verts[:, 0]], axis=1)
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.4, 1.0])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.abs(normals @ light)
    order = np.argsort(tri[:, :, 2].mean(axis=1))
    colors = np.clip(np.asarray(color)[None, :] * shade[order, None], 0, 1)
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors, edgecolors="none"))
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.axis("off")
