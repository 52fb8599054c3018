"""The training loops: one Trainer subclass per family of presets."""
from .holopose import HoloPoseTrainer
from .mvspin import MvSpinTrainer
from .pavlakos import PavlakosPriorsTrainer
from .spin import SpinTrainer

#: config.trainer -> the class that runs it.
TRAINERS = {"spin": SpinTrainer, "mvspin": MvSpinTrainer, "holopose": HoloPoseTrainer,
            "pavlakos_priors": PavlakosPriorsTrainer}

__all__ = ["SpinTrainer", "MvSpinTrainer", "HoloPoseTrainer", "PavlakosPriorsTrainer", "TRAINERS"]
