"""The renderer's camera: :class:`smplfast.geometry.PerspectiveCamera` (this module re-exports it).

A world point ``X`` goes to the camera frame as ``X_cam = R X + t`` and projects to pixels as
``u = f_x X_cam/Z_cam + c_x``, ``v = f_y Y_cam/Z_cam + c_y`` (v grows downwards, along image rows;
pixel (row i, col j) covers [j, j+1) x [i, i+1)).  This is SPIN's ``perspective_projection`` and
:func:`smplfast.ops.project_keypoints`.
"""
from __future__ import annotations

from ..geometry import PerspectiveCamera

__all__ = ["PerspectiveCamera"]
