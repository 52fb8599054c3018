"""smplfast's custom ops (torch.library), each with a pure-PyTorch reference of the same maths.

Every op here is registered under the ``smplfast::`` namespace with a fake (meta) implementation
for ``torch.compile``. The skinning ops have an analytic backward that is itself a custom op; the
fitting ops (project_keypoints, the batched solves) return derivatives or solutions and are not
differentiable (their backward raises).

Values (index ranges, finiteness) are checked without device synchronisation where possible: model
constants once per tensor, per-call data always on the CPU and on CUDA inside :func:`value_checks`
(see :mod:`smplfast.ops._value_checks`), so a fit or a training step can be captured in a CUDA graph.
"""
from .rodrigues import rodrigues, rodrigues_reference
from .kinematic_chain import kinematic_chain, kinematic_chain_reference
from .sparse_lbs import sparse_lbs, sparse_lbs_reference, dense_to_sparse_weights
from .keypoint_projection import project_keypoints, project_keypoints_reference
from .batched_solve import (
    damped_cholesky_solve,
    damped_cholesky_solve_reference,
    conjugate_gradient_solve,
    conjugate_gradient_solve_reference,
)
from .lm_fit import lm_fit
from .point_normal_equations import point_normal_equations, point_normal_equations_reference
from .uv_lookup import uv_lookup, uv_lookup_reference
from .rasterize import rasterize, rasterize_reference, interpolate
from .soft_silhouette import soft_silhouette, soft_silhouette_reference
from ._value_checks import set_value_checks, value_checks, value_checks_enabled

__all__ = [
    "value_checks",
    "set_value_checks",
    "value_checks_enabled",
    "rodrigues",
    "rodrigues_reference",
    "kinematic_chain",
    "kinematic_chain_reference",
    "sparse_lbs",
    "sparse_lbs_reference",
    "dense_to_sparse_weights",
    "project_keypoints",
    "project_keypoints_reference",
    "damped_cholesky_solve",
    "damped_cholesky_solve_reference",
    "conjugate_gradient_solve",
    "conjugate_gradient_solve_reference",
    "lm_fit",
    "point_normal_equations",
    "point_normal_equations_reference",
    "uv_lookup",
    "uv_lookup_reference",
    "rasterize",
    "rasterize_reference",
    "interpolate",
    "soft_silhouette",
    "soft_silhouette_reference",
]
