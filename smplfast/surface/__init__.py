"""Body surfaces: DensePose-style per-part (u, v) charts (HoloPose's Cartesian surface charting)."""
from .charts import (
    DENSEPOSE_PART_NAMES,
    NUM_PARTS,
    SurfaceCharts,
    chart_quality,
    densepose_parts_from_weights,
    flatten_charts,
    load_densepose_uv,
    plot_charts,
)

__all__ = [
    "DENSEPOSE_PART_NAMES",
    "NUM_PARTS",
    "SurfaceCharts",
    "chart_quality",
    "densepose_parts_from_weights",
    "flatten_charts",
    "load_densepose_uv",
    "plot_charts",
]
