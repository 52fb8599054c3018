"""The training loops: one Trainer subclass per family of presets."""
from .mvspin import MvSpinTrainer
from .spin import SpinTrainer

#: config.trainer -> the class that runs it.
TRAINERS = {"spin": SpinTrainer, "mvspin": MvSpinTrainer}

__all__ = ["SpinTrainer", "MvSpinTrainer", "TRAINERS"]
