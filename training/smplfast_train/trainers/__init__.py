"""The training loops: one Trainer subclass per family of presets."""
from .holopose import HoloPoseTrainer
from .mvspin import MvSpinTrainer
from .pavlakos import PavlakosPriorsTrainer
from .pavlakos_e2e import PavlakosE2ETrainer
from .pavlakos_human2d import Human2DTrainer
from .spin import SpinTrainer

#: config.trainer -> the class that runs it.
TRAINERS = {"spin": SpinTrainer, "mvspin": MvSpinTrainer, "holopose": HoloPoseTrainer,
            "pavlakos_priors": PavlakosPriorsTrainer, "pavlakos_human2d": Human2DTrainer,
            "pavlakos_e2e": PavlakosE2ETrainer}

__all__ = ["SpinTrainer", "MvSpinTrainer", "HoloPoseTrainer", "PavlakosPriorsTrainer", "Human2DTrainer", "PavlakosE2ETrainer",
           "TRAINERS"]
