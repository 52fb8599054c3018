"""The training loops: one Trainer subclass per family of presets."""
from .spin import SpinTrainer

#: config.trainer -> the class that runs it.
TRAINERS = {"spin": SpinTrainer}

__all__ = ["SpinTrainer", "TRAINERS"]
