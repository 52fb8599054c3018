"""Body models: SMPL-family model files (.pkl without chumpy, .npz), the bundled default model,
keypoint conventions, pose and shape samplers, random test models and the SMPL layer."""
from . import keypoints
from .default_model import default_model_dir, default_model_path, default_model_report, load_default_model, smplx_vertex_ids
from .model_file import ModelData, ModelFileError, load_model, save_model, validate_model
from .random_model import random_model
from .smpl import SMPL, SMPLLayer, SMPLOutput, ModelOutput

__all__ = [
    "ModelData",
    "ModelFileError",
    "load_model",
    "save_model",
    "validate_model",
    "random_model",
    "default_model_dir",
    "default_model_path",
    "default_model_report",
    "load_default_model",
    "smplx_vertex_ids",
    "keypoints",
    "SMPL",
    "SMPLLayer",
    "SMPLOutput",
    "ModelOutput",
]
