"""Body models: SMPL-family model files (.pkl without chumpy, .npz), random test models and the SMPL layer."""
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
    "SMPL",
    "SMPLLayer",
    "SMPLOutput",
    "ModelOutput",
]
