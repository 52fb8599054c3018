"""Model fitting: SMPLify (single- and multi-view) with Adam or Levenberg–Marquardt, priors, camera init."""
from .keypoint_model import KeypointModel

__all__ = ["KeypointModel"]
