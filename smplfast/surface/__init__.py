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
from .uvgrid import (ChartTriangles, GridPoints, UVGrid, check_part_uv, grid_accuracy, sample_chart_points,
                     skin_points)
from .densepose import (BodyParams, Camera, IUVPoints, PerspectiveCamera, WeakPerspectiveCamera, densepose_loss,
                        posed_points, project_points)
from .refine import RefineOptions, RefineProblem, RefineResult, refine

__all__ = [
    "DENSEPOSE_PART_NAMES",
    "NUM_PARTS",
    "SurfaceCharts",
    "chart_quality",
    "densepose_parts_from_weights",
    "flatten_charts",
    "load_densepose_uv",
    "plot_charts",
    "ChartTriangles",
    "GridPoints",
    "UVGrid",
    "check_part_uv",
    "grid_accuracy",
    "sample_chart_points",
    "skin_points",
    "BodyParams",
    "Camera",
    "IUVPoints",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "densepose_loss",
    "posed_points",
    "project_points",
    "RefineOptions",
    "RefineProblem",
    "RefineResult",
    "refine",
]
