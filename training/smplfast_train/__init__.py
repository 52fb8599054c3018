"""Training package of smplfast: backbones, regressors, rotations, losses and trainers for SPIN,
MV-SPIN, HoloPose and Pavlakos 2018 (see training/README.md)."""

__version__ = "0.1.0"
