"""smplfast: fast SMPL-family body models and model fitting on C++/CUDA kernels behind a PyTorch API."""
from ._backend import build_info, cuda_available
from . import geometry
from . import ops
from . import body
from . import surface
from .body import SMPL, SMPLOutput
from . import fitting, metrics
from .fitting import MultiViewSMPLify, SMPLify

__version__ = build_info()["version"]

__all__ = ["SMPL", "SMPLOutput", "SMPLify", "MultiViewSMPLify", "geometry", "body", "surface", "fitting", "metrics", "ops", "build_info", "cuda_available", "__version__"]
