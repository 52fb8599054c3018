"""DensePose-style surface charts (re-exported from :mod:`smplfast.body.charts`).

The charts are part of a body model (model files carry them as ``uv_*`` extras, and building the
default model makes them), so they live with the body model; this module keeps the surface
package's import path.
"""
from ..body import charts as _charts
from ..body.charts import *  # noqa: F401,F403 - the same public names

__all__ = list(_charts.__all__)
