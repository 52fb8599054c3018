"""Data: the datasets' file formats and loaders, SPIN's crop and augmentation, and a synthetic data engine.

- :mod:`~smplfast.data.formats`: SPIN npz, MV-SPIN multi-view npz and COCO-DensePose json specs and checks.
- :mod:`~smplfast.data.datasets`: torch Datasets over those files (``SPINDataset``, ``MultiViewDataset``,
  ``DensePoseDataset``, ``MixedDataset``) with SPIN's crop, normalisation and augmentation.
- :mod:`~smplfast.data.synth`: ``generate`` / ``smplfast synth``, synthetic people rendered in the same
  formats, so the same loaders read real and synthetic data; :mod:`~smplfast.data.splits`: the standard
  lab / in-the-wild / occluded / rig splits of the learning experiments and their measured statistics.
- :mod:`~smplfast.data.crop_cache`: pre-cropped images for fast small-network runs.
"""
from .formats import (DataFormatError, load_spin_npz, load_densepose_json, validate_spin_arrays, validate_densepose,
                      views_as_samples)
from .augment import AugmentationConfig, SPIN_AUGMENTATION, NO_AUGMENTATION
from .datasets import SPINDataset, MultiViewDataset, DensePoseDataset, MixedDataset
from .synth import generate, resolve_settings, SynthSettings, SynthSummary
from .splits import SPLITS, split_statistics
from .crop_cache import build_crop_cache, CropCacheError

__all__ = [
    "DataFormatError",
    "load_spin_npz",
    "load_densepose_json",
    "validate_spin_arrays",
    "validate_densepose",
    "views_as_samples",
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
    "resolve_settings",
    "SPLITS",
    "split_statistics",
    "build_crop_cache",
    "CropCacheError",
]
