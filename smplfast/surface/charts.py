"""DensePose-style surface charts (re-exported from :mod:`smplfast.body.charts`).

The charts are part of a body model (model files carry them as ``uv_*`` extras, and building the
default model makes them), so they live with the body model; this module keeps the surface
package's import path.
"""
from ..body.charts import (
    DENSEPOSE_PART_NAMES,
    NUM_PARTS,
    SurfaceCharts,
    chart_quality,
    densepose_parts_from_weights,
    face_components,
    flatten_charts,
    load_densepose_uv,
    plot_charts,
)

__all__ = [
    "DENSEPOSE_PART_NAMES",
    "NUM_PARTS",
    "SurfaceCharts",
    "load_densepose_uv",
    "densepose_parts_from_weights",
    "face_components",
    "flatten_charts",
    "chart_quality",
    "plot_charts",
]
