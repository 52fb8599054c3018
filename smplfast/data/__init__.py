"""Data: the datasets' file formats and loaders, SPIN's crop and augmentation, and a synthetic data engine.

- :mod:`~smplfast.data.formats`: SPIN npz, MV-SPIN multi-view npz and COCO-DensePose json specs and checks.
- :mod:`~smplfast.data.datasets`: torch Datasets over those files (``SPINDataset``, ``MultiViewDataset``,
  ``DensePoseDataset``, ``MixedDataset``) with SPIN's crop, normalisation and augmentation.
- :mod:`~smplfast.data.synth`: ``generate`` / ``smplfast synth``, synthetic people rendered in the same
  formats, so the same loaders read real and synthetic data.
"""
from .formats import DataFormatError, load_spin_npz, load_densepose_json, validate_spin_arrays, validate_densepose
from .augment import AugmentationConfig, SPIN_AUGMENTATION, NO_AUGMENTATION
from .datasets import SPINDataset, MultiViewDataset, DensePoseDataset, MixedDataset
from .synth import generate, SynthSettings, SynthSummary

__all__ = [
    "DataFormatError",
    "load_spin_npz",
    "load_densepose_json",
    "validate_spin_arrays",
    "validate_densepose",
    "AugmentationConfig",
    "SPIN_AUGMENTATION",
    "NO_AUGMENTATION",
    "SPINDataset",
    "MultiViewDataset",
    "DensePoseDataset",
    "MixedDataset",
    "generate",
    "SynthSettings",
    "SynthSummary",
]
