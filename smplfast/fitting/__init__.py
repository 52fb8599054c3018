"""Model fitting: SMPLify (single- and multi-view) solved by batched Levenberg–Marquardt or by SPIN's
Adam procedure, its priors, camera initialisation, and the keypoint model the Jacobian kernel reads."""
from .keypoint_model import KeypointModel
from .lm import LMOptions, LMResult, levenberg_marquardt
from .priors import MaxMixturePrior, PriorWeights
from .smplify import SMPLify, SMPLifyResult, body_fitting_loss, camera_fitting_loss, perspective_projection
from .multiview import MultiViewSMPLify
from .camera import estimate_translation, similar_triangles_translation, weak_perspective_to_translation

__all__ = [
    "KeypointModel", "LMOptions", "LMResult", "levenberg_marquardt", "MaxMixturePrior", "PriorWeights", "SMPLify",
    "SMPLifyResult", "body_fitting_loss", "camera_fitting_loss", "perspective_projection", "MultiViewSMPLify",
    "estimate_translation", "similar_triangles_translation", "weak_perspective_to_translation",
]
