"""On-disk formats of the training data: SPIN npz, MV-SPIN multi-view npz, DensePose COCO-style json.

These are the formats SPIN, MV-SPIN and DensePose publish their preprocessed annotations in, so the
same readers serve the real Human3.6M / MPI-INF-3DHP / 3DPW / LSP / LSP-extended / MPII / COCO files
and the files of the synthetic data engine.

SPIN npz (one file per dataset split, N samples)
    =====================  ============  ========  ==============================================================
    key                    shape         required  meaning
    =====================  ============  ========  ==============================================================
    ``imgname``            (N,)  str     yes       image path relative to the image root directory
    ``center``             (N, 2)        yes       person box centre, original-image pixels
    ``scale``              (N,)          yes       box side / 200 (SPIN's convention, 1.2 margin already
                                                   included)
    ``part``               (N, 24, 3)    no        annotated 2D joints, convention ``spin_24`` of
                                                   :mod:`smplfast.body.keypoints`, (x, y, visibility), pixels
                                                   (synthetic data: noisy when annotation noise is on)
    ``part_gt``            (N, 24, 3)    no        exact 2D joints (``spin_24``), (x, y, visibility), pixels; for
                                                   evaluation
    ``S``                  (N, 24, 4)    no        3D GT joints, camera frame, metres, 4th column = confidence
    ``pose``               (N, 72)       no        SMPL axis-angle pose, global orientation in the camera frame
    ``shape``              (N, 10)       no        SMPL betas (present exactly when ``pose`` is)
    ``has_smpl``           (N,)          no        1 where pose/shape are valid (all 1 when pose is given alone)
    ``has_pose_3d``        (N,)          no        1 where ``S`` may be used for training, 0 where it is kept for
                                                   evaluation only (needs ``S``; absent: 1 when ``S`` is present)
    ``openpose``           (N, 25, 3)    no        OpenPose BODY_25 detections (x, y, confidence); 0,0,0 = missed
    ``openpose_gt``        (N, 25, 3)    no        exact BODY_25 projections (x, y, visibility), pixels; for
                                                   evaluation
    ``smpl_joints_2d``     (N, 24, 3)    no        the 24 SMPL skeleton joints (convention ``smpl_24``)
                                                   projected, (x, y, visibility), pixels; annotated (the same
                                                   noise as ``part``)
    ``smpl_joints_2d_gt``  (N, 24, 3)    no        the same, exact projections; for evaluation
    ``smpl_joints_3d``     (N, 24, 3)    no        the 24 SMPL skeleton joints (``smpl_24``), camera frame,
                                                   metres
    ``pose_family``        (N,)  int     no        index into :data:`smplfast.body.samplers.POSE_FAMILIES` (-1 =
                                                   unknown); per person
    ``world_transl``       (N, 3)        no        SMPL translation, world frame, metres; per person
    ``world_orient``       (N, 3)        no        SMPL global orientation (axis-angle), world frame; per person
    ``gender``             (N,)  str     no        'm', 'f' or 'n'
    ``maskname``           (N,)  str     no        silhouette PNG, relative to the image root
    ``partname``           (N,)  str     no        part-segmentation PNG, relative to the image root
    ``iuvname``            (N,)  str     no        DensePose IUV PNG (the size of the image), relative to the
                                                   image root: channel 0 = part I (0 background, 1..24), channels
                                                   1, 2 = U*255, V*255
    ``cam_rot``            (N, 3, 3)     no        world -> camera rotation R (X_cam = R X + t)
    ``cam_transl``         (N, 3)        no        world -> camera translation t, metres
    ``cam_focal``          (N, 2)        no        focal lengths (f_x, f_y), original-image pixels
    ``cam_center``         (N, 2)        no        principal point (c_x, c_y), original-image pixels
    =====================  ============  ========  ==============================================================

    Absent optional keys read as zeros with ``has_smpl`` / ``has_pose_3d`` = 0 (SPIN's behaviour). A
    key that is present must have exactly its shape: anything else is a :class:`DataFormatError`
    naming the key, the file, the expected and the given shape. The calibration keys come as a group
    (all four or none); ``has_smpl`` needs ``pose``, ``has_pose_3d`` needs ``S``; ``pose_family`` holds
    integers in -1 .. len(POSE_FAMILIES) - 1. Keys not listed here are ignored.

    "Annotated" keys (``part``, ``openpose``, ``smpl_joints_2d``) are what a model may train on;
    the ``*_gt`` keys are exact and meant for evaluation (on real data they are absent).

MV-SPIN multi-view npz (N people, V views each)
    The same keys with a view axis right after N: ``imgname (N, V)``, ``center (N, V, 2)``,
    ``scale (N, V)``, ``part (N, V, 24, 3)``, ``S (N, V, 24, 4)`` (each view's camera frame),
    ``pose (N, V, 72)`` (the global orientation differs per view, the body pose is the same),
    ``shape (N, V, 10)``, ``has_smpl (N, V)``, ``openpose (N, V, 25, 3)``, ``gender (N, V)``, ...
    and the calibration keys ``cam_rot (N, V, 3, 3)``, ``cam_transl (N, V, 3)``,
    ``cam_focal (N, V, 2)``, ``cam_center (N, V, 2)`` (world -> camera, original-image pixels).
    Per-person keys (:attr:`KeySpec.per_person`: ``pose_family``, ``world_transl``,
    ``world_orient``) have no view axis: ``pose_family (N,)``, ``world_transl (N, 3)``.

DensePose (COCO-style json)
    ``{"images": [{"id", "file_name", "width", "height"}, ...],
    "annotations": [{"id", "image_id", "bbox": [x, y, w, h], "dp_x", "dp_y", "dp_I", "dp_U", "dp_V",
    "keypoints" (optional, COCO's 17 x (x, y, v) flattened)}, ...]}``.
    ``dp_x, dp_y`` are box-relative in [0, 256]: image pixel x = bbox_x + dp_x / 256 * w (same for
    y with h). ``dp_I`` is the part index 1..24, ``dp_U, dp_V`` are in [0, 1]; the five lists have one
    entry per point. An annotation without the ``dp_*`` keys (COCO-DensePose has such people) has no
    points. IUV images (PNG, the size of the image): channel 0 = I (0 = background, 1..24),
    channels 1, 2 = U*255, V*255. The IUV image of an image entry is ``iuv_file_name`` when the entry
    has that key, else ``file_name`` with its extension replaced by ``.png``, relative to the IUV root.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = [
    "DataFormatError",
    "KeySpec",
    "SPIN_KEYS",
    "CALIBRATION_KEYS",
    "SPIN_REQUIRED_KEYS",
    "PER_PERSON_KEYS",
    "GENDER_CODES",
    "DENSEPOSE_IMAGE_KEYS",
    "DENSEPOSE_ANNOTATION_KEYS",
    "DENSEPOSE_POINT_KEYS",
    "NUM_DENSEPOSE_PARTS",
    "DENSEPOSE_COORD_RANGE",
    "key_shape",
    "load_spin_npz",
    "validate_spin_arrays",
    "load_densepose_json",
    "validate_densepose",
    "densepose_iuv_name",
    "views_as_samples",
]

PathLike = Union[str, os.PathLike]


class DataFormatError(ValueError):
    """A data file does not follow its format (missing key, wrong shape or length, bad values)."""


@dataclass(frozen=True)
class KeySpec:
    """One key of a SPIN-style npz: its per-sample shape (after the N / N, V axes), its kind
    (``"str"`` for paths and labels, ``"float"`` / ``"int"`` for numbers), whether it is required,
    and its meaning. A ``per_person`` key describes the person, not one view: it has the leading
    axis (N,) in multi-view files too."""

    name: str
    shape: Tuple[int, ...]
    kind: str
    required: bool
    doc: str
    per_person: bool = False


#: SPIN's npz keys (per-sample shapes; the file adds (N,) or (N, V) in front).
SPIN_KEYS: Dict[str, KeySpec] = {
    s.name: s
    for s in (
        KeySpec("imgname", (), "str", True, "image path relative to the image root"),
        KeySpec("center", (2,), "float", True, "box centre (x, y), original-image pixels"),
        KeySpec("scale", (), "float", True, "box side / 200, 1.2 margin included"),
        KeySpec("part", (24, 3), "float", False, "annotated 2D joints (spin_24), (x, y, visibility), pixels"),
        KeySpec("part_gt", (24, 3), "float", False, "exact 2D joints (spin_24), (x, y, visibility), pixels"),
        KeySpec("S", (24, 4), "float", False, "3D GT joints, camera frame, metres, + confidence"),
        KeySpec("pose", (72,), "float", False, "SMPL axis-angle pose, global orientation in the camera frame"),
        KeySpec("shape", (10,), "float", False, "SMPL betas"),
        KeySpec("has_smpl", (), "float", False, "1 where pose/shape are valid"),
        KeySpec("has_pose_3d", (), "float", False, "1 where S may be used for training"),
        KeySpec("openpose", (25, 3), "float", False, "OpenPose BODY_25 (x, y, confidence)"),
        KeySpec("openpose_gt", (25, 3), "float", False, "exact BODY_25 projections (x, y, visibility)"),
        KeySpec("smpl_joints_2d", (24, 3), "float", False,
                "annotated 2D SMPL joints (smpl_24), (x, y, visibility), pixels"),
        KeySpec("smpl_joints_2d_gt", (24, 3), "float", False,
                "exact 2D SMPL joints (smpl_24), (x, y, visibility), pixels"),
        KeySpec("smpl_joints_3d", (24, 3), "float", False, "SMPL joints (smpl_24), camera frame, metres"),
        KeySpec("pose_family", (), "int", False, "index into POSE_FAMILIES (-1 unknown)", per_person=True),
        KeySpec("world_transl", (3,), "float", False, "SMPL translation, world frame, metres", per_person=True),
        KeySpec("world_orient", (3,), "float", False, "SMPL global orientation, world frame", per_person=True),
        KeySpec("gender", (), "str", False, "'m', 'f' or 'n'"),
        KeySpec("maskname", (), "str", False, "silhouette PNG relative to the image root"),
        KeySpec("partname", (), "str", False, "part-segmentation PNG relative to the image root"),
        KeySpec("iuvname", (), "str", False, "DensePose IUV PNG relative to the image root"),
        KeySpec("cam_rot", (3, 3), "float", False, "world -> camera rotation"),
        KeySpec("cam_transl", (3,), "float", False, "world -> camera translation, metres"),
        KeySpec("cam_focal", (2,), "float", False, "focal lengths (f_x, f_y), pixels"),
        KeySpec("cam_center", (2,), "float", False, "principal point (c_x, c_y), pixels"),
    )
}
SPIN_REQUIRED_KEYS: Tuple[str, ...] = tuple(k for k, s in SPIN_KEYS.items() if s.required)
#: Keys without a view axis in multi-view files (they describe the person).
PER_PERSON_KEYS: Tuple[str, ...] = tuple(k for k, s in SPIN_KEYS.items() if s.per_person)
#: Keys that come as a group: all or none.
CALIBRATION_KEYS: Tuple[str, ...] = ("cam_rot", "cam_transl", "cam_focal", "cam_center")
#: Labels with a presence flag: where the flag is > 0 (or the flag is absent) the label must be finite;
#: where it is 0 the loaders replace non-finite values by 0 (the sample is flagged, its label unused).
LABEL_FLAGS: Dict[str, str] = {"pose": "has_smpl", "shape": "has_smpl", "S": "has_pose_3d"}
#: Keys holding paths relative to the image root.
PATH_KEYS: Tuple[str, ...] = ("imgname", "maskname", "partname", "iuvname")
#: SPIN's gender codes for the ``gender`` item (anything else, e.g. 'n', is -1).
GENDER_CODES: Dict[str, int] = {"m": 0, "male": 0, "f": 1, "female": 1}

DENSEPOSE_IMAGE_KEYS: Tuple[str, ...] = ("id", "file_name", "width", "height")
DENSEPOSE_ANNOTATION_KEYS: Tuple[str, ...] = ("id", "image_id", "bbox")
DENSEPOSE_POINT_KEYS: Tuple[str, ...] = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
NUM_DENSEPOSE_PARTS = 24
#: dp_x, dp_y are box-relative in [0, DENSEPOSE_COORD_RANGE]; pixel = bbox_x + dp_x / 256 * w.
DENSEPOSE_COORD_RANGE = 256.0


def key_shape(key: str, n: int, views: Optional[int] = None) -> Tuple[int, ...]:
    """Full array shape of ``key`` for ``n`` samples (and ``views`` views in a multi-view file;
    per-person keys have no view axis)."""
    spec = SPIN_KEYS[key]
    lead = (n,) if views is None or spec.per_person else (n, views)
    return lead + spec.shape


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _expected_label(key: str, multiview: bool) -> str:
    spec = SPIN_KEYS[key]
    lead = ("N", "V") if multiview and not spec.per_person else ("N",)
    return _fmt_shape(lead + spec.shape) + (" (one entry per person, no view axis)"
                                            if multiview and spec.per_person else "")


def validate_spin_arrays(arrays: Mapping[str, np.ndarray], *, multiview: bool = False,
                         source: str = "<arrays>") -> Tuple[int, Optional[int]]:
    """Check a mapping of SPIN (``multiview=False``) or MV-SPIN arrays against the format.

    Returns ``(N, V)`` (``V`` is None for a single-view file). Raises :class:`DataFormatError` naming
    the key, ``source``, the expected and the given shape for a missing required key, a wrong shape or
    length, a number array that is not numeric, a path array that is not strings, a partial set of
    calibration keys, ``pose`` without ``shape`` (or the reverse), non-finite centres or scales and
    scales that are not positive. A single-view file may carry the calibration keys without the view
    axis; a multi-view file must carry them with it.
    """
    missing = [k for k in SPIN_REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataFormatError(f"{source}: missing required key(s) {missing}; a "
                              f"{'multi-view ' if multiview else ''}SPIN npz needs {list(SPIN_REQUIRED_KEYS)}, "
                              f"found {sorted(arrays)}")
    img = np.asarray(arrays["imgname"])
    if multiview:
        if img.ndim != 2:
            raise DataFormatError(f"{source}: key 'imgname' must have shape (N, V) in a multi-view npz; "
                                  f"got {_fmt_shape(img.shape)}")
        n, v = img.shape
    else:
        if img.ndim != 1:
            raise DataFormatError(f"{source}: key 'imgname' must have shape (N,); got {_fmt_shape(img.shape)}"
                                  + (" (a multi-view file? use MultiViewDataset)" if img.ndim == 2 else ""))
        n, v = img.shape[0], None
    if n == 0:
        raise DataFormatError(f"{source}: the file holds no samples (imgname has length 0)")
    cal = [k for k in CALIBRATION_KEYS if k in arrays]
    if cal and len(cal) != len(CALIBRATION_KEYS):
        raise DataFormatError(f"{source}: calibration keys come together; found {cal}, missing "
                              f"{[k for k in CALIBRATION_KEYS if k not in arrays]}")
    if ("pose" in arrays) != ("shape" in arrays):
        have, lack = ("pose", "shape") if "pose" in arrays else ("shape", "pose")
        raise DataFormatError(f"{source}: key {have!r} is present but {lack!r} is missing; SMPL parameters "
                              f"need both pose (72) and shape (10)")
    if "has_smpl" in arrays and "pose" not in arrays:
        raise DataFormatError(f"{source}: key 'has_smpl' is present without 'pose' and 'shape'")
    if "has_pose_3d" in arrays and "S" not in arrays:
        raise DataFormatError(f"{source}: key 'has_pose_3d' is present without 'S'")
    for key, spec in SPIN_KEYS.items():
        if key not in arrays:
            continue
        a = np.asarray(arrays[key])
        want = key_shape(key, n, v)
        if a.shape != want:
            raise DataFormatError(f"{source}: key {key!r} must have shape {_expected_label(key, multiview)} = "
                                  f"{_fmt_shape(want)}; got {_fmt_shape(a.shape)}")
        if spec.kind == "str":
            if a.dtype.kind not in "USO":
                raise DataFormatError(f"{source}: key {key!r} must hold strings; got dtype {a.dtype}")
        elif a.dtype.kind not in "biuf":
            raise DataFormatError(f"{source}: key {key!r} must be numeric; got dtype {a.dtype}")
        elif spec.kind == "int" and a.size and not (np.isfinite(a).all() and np.all(a == np.round(a))):
            raise DataFormatError(f"{source}: key {key!r} must hold integers")
    if "pose_family" in arrays:
        from ..body.samplers import POSE_FAMILIES

        fam = np.asarray(arrays["pose_family"])
        bad = (fam < -1) | (fam >= len(POSE_FAMILIES))
        if bad.any():
            idx = np.flatnonzero(bad)
            raise DataFormatError(f"{source}: key 'pose_family' must lie in -1 .. {len(POSE_FAMILIES) - 1} "
                                  f"(indices into POSE_FAMILIES, -1 = unknown); bad at sample index(es) "
                                  f"{idx[:10].tolist()}{' ...' if idx.size > 10 else ''}")
    for key, spec in SPIN_KEYS.items():  # loaders cast numbers to float32: a finite value must stay finite
        if key in arrays and spec.kind == "float" and key not in CALIBRATION_KEYS:
            a = np.asarray(arrays[key])
            if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
                with np.errstate(over="ignore"):
                    over = np.isfinite(a) & ~np.isfinite(a.astype(np.float32))
                if over.any():
                    row = int(np.argwhere(over)[0][0])
                    raise DataFormatError(f"{source}: key {key!r} holds values beyond the float32 range "
                                          f"(first at sample index {row})")
    for key, flag in LABEL_FLAGS.items():  # a label marked present must be finite
        if key not in arrays:
            continue
        a = np.asarray(arrays[key], dtype=np.float64)
        lead = a.shape[:1] if SPIN_KEYS[key].per_person or v is None else a.shape[:2]
        bad = ~np.isfinite(a).reshape(*lead, -1).all(axis=-1)
        if flag in arrays:
            bad &= np.asarray(arrays[flag], dtype=np.float64).reshape(lead) > 0
        if bad.any():
            row = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataFormatError(f"{source}: key {key!r} holds NaN or Inf in a sample marked present "
                                  f"({flag} = 1, or {flag} absent) at sample index {row[0] if len(row) == 1 else row}; "
                                  f"fix the values or set {flag} = 0 for that sample")
    for key in PATH_KEYS:
        if key in arrays:
            check_relative_paths(arrays[key], key, source)
    for key in ("center", "scale"):
        a = np.asarray(arrays[key], dtype=np.float64)
        with np.errstate(over="ignore"):
            a = a.astype(np.float32).astype(np.float64)  # the loaders' float32 (1e300 is Inf there)
        bad = ~np.isfinite(a).reshape(n, -1).all(axis=1)
        if key == "scale":
            bad |= ~(a.reshape(n, -1) > 0).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise DataFormatError(f"{source}: key {key!r} must be finite{' and > 0' if key == 'scale' else ''}; "
                                  f"bad at sample index(es) {idx[:10].tolist()}{' ...' if idx.size > 10 else ''}")
    return n, v


def check_relative_path(name, what: str) -> None:
    """``name`` must be a path relative to its root that stays inside it (no absolute path, no ``..``
    that climbs out); raises :class:`DataFormatError` with ``what`` (the file and sample) otherwise."""
    name = str(name)
    if not name:
        return
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(name) or os.path.isabs(norm) or norm == ".." or norm.startswith("../") or (
            len(name) > 1 and name[1] == ":"):
        raise DataFormatError(f"{what}: path {name!r} points outside the image folder; image paths must be "
                              "relative to it (no absolute paths, no '..' leaving it)")


def check_relative_paths(names, key: str, source: str) -> None:
    """:func:`check_relative_path` on every entry of a path array, naming the key and sample index."""
    a = _as_str_array(np.asarray(names))
    flat = a.reshape(-1)
    for name in set(flat.tolist()):
        try:
            check_relative_path(name, "")
        except DataFormatError:
            idx = np.unravel_index(int(np.flatnonzero(flat == name)[0]), a.shape)
            where = idx[0] if len(idx) == 1 else tuple(int(i) for i in idx)
            check_relative_path(name, f"{source}: key {key!r} at sample index {where}")


def _as_str_array(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8")
    if a.dtype.kind == "O":
        return np.vectorize(lambda s: s.decode("utf-8") if isinstance(s, bytes) else str(s), otypes=[str])(a) \
            if a.size else a.astype(str)
    return a


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    """All arrays of an npz; a file that is not a readable npz is a DataFormatError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataFormatError(f"{path}: not an npz archive (a single .npy array); a SPIN file is an npz")
            return {k: f[k] for k in f.files}
    except DataFormatError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # object arrays need pickle; a SPIN file never does
            raise DataFormatError(f"{path}: cannot read without pickle ({e}); store strings as unicode arrays") from None
        raise DataFormatError(f"{path}: not a readable npz ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as e:
        raise DataFormatError(f"{path}: not a readable npz (corrupt or truncated?): {type(e).__name__}: {e}") from None


def load_spin_npz(path: PathLike, *, multiview: bool = False) -> Dict[str, np.ndarray]:
    """Read and validate a SPIN (or, with ``multiview``, MV-SPIN) npz file.

    Returns a dict with every key of :data:`SPIN_KEYS` except the calibration group (included only
    when the file has it): numbers as float32 arrays (``pose_family``: int64), strings as numpy
    unicode arrays. Absent optional keys are filled as SPIN does: ``part``, ``openpose``, ``S``,
    ``pose``, ``shape`` (and the other number keys) with zeros, ``has_smpl`` with 1 when ``pose`` is
    given (0 otherwise), ``has_pose_3d`` with 1 when ``S`` is given (0 otherwise), ``pose_family``
    with -1, ``gender`` with 'n', ``maskname`` / ``partname`` / ``iuvname`` with ''. Also returns
    ``present`` (the sorted list of keys the file had, as a numpy array).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SPIN npz not found: {path!r}")
    raw = _read_npz(path)
    n, v = validate_spin_arrays(raw, multiview=multiview, source=path)
    out: Dict[str, np.ndarray] = {}
    for key, spec in SPIN_KEYS.items():
        if key in CALIBRATION_KEYS:
            continue
        lead = (n,) if v is None or spec.per_person else (n, v)
        dtype = np.int64 if spec.kind == "int" else np.float32
        if key in raw:
            a = raw[key]
            out[key] = _as_str_array(a) if spec.kind == "str" else np.asarray(a, dtype=dtype)
        elif spec.kind == "str":
            out[key] = np.full(lead, "n" if key == "gender" else "", dtype="<U1")
        elif key in ("has_smpl", "has_pose_3d"):
            out[key] = np.full(lead, 1.0 if ("pose" if key == "has_smpl" else "S") in raw else 0.0, dtype=np.float32)
        elif key == "pose_family":
            out[key] = np.full(lead, -1, dtype=np.int64)
        else:
            out[key] = np.zeros(lead + spec.shape, dtype=dtype)
    for key, flag in LABEL_FLAGS.items():  # labels of samples flagged absent: non-finite values become 0
        a = out[key]
        if not np.isfinite(a).all():
            out[key] = np.where(np.isfinite(a), a, 0).astype(a.dtype)
    if "cam_rot" in raw:
        for key in CALIBRATION_KEYS:
            out[key] = np.asarray(raw[key], dtype=np.float64)
    out["present"] = np.array(sorted(raw))
    return out


# ------------------------------------------------------------------------------------------ DensePose
def densepose_iuv_name(image_entry: Mapping) -> str:
    """Relative path of the IUV image of a DensePose image entry (see the module docstring)."""
    if "iuv_file_name" in image_entry:
        return str(image_entry["iuv_file_name"])
    return os.path.splitext(str(image_entry["file_name"]))[0] + ".png"


def validate_densepose(data: Mapping, *, source: str = "<json>") -> None:
    """Check a DensePose COCO-style dict; raises :class:`DataFormatError` naming the entry and key.

    Checks the required keys of images and annotations, unique image ids, that every annotation's
    image exists, bbox = 4 numbers with w, h > 0, the five ``dp_*`` lists present together with one
    length, ``dp_I`` integers in 1..24, ``dp_U, dp_V`` in [0, 1], ``dp_x, dp_y`` in [0, 256], and
    ``keypoints`` (when present) of length 51.
    """
    if not isinstance(data, Mapping) or "images" not in data or "annotations" not in data:
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise DataFormatError(f"{source}: a DensePose json is an object with 'images' and 'annotations'; got {got}")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise DataFormatError(f"{source}: {key!r} must be a list; got {type(data[key]).__name__}")
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, Mapping):
                raise DataFormatError(f"{source}: {key}[{i}] must be an object; got {type(entry).__name__}")
    try:
        _validate_densepose_entries(data, source)
    except DataFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a value of the wrong type
        raise DataFormatError(f"{source}: malformed DensePose entry ({type(e).__name__}: {e})") from None


def _validate_densepose_entries(data: Mapping, source: str) -> None:
    ids = set()
    for i, im in enumerate(data["images"]):
        miss = [k for k in DENSEPOSE_IMAGE_KEYS if k not in im]
        if miss:
            raise DataFormatError(f"{source}: images[{i}] lacks {miss} (needs {list(DENSEPOSE_IMAGE_KEYS)})")
        if im["id"] in ids:
            raise DataFormatError(f"{source}: images[{i}] repeats image id {im['id']!r}")
        ids.add(im["id"])
        for key in ("file_name", "iuv_file_name"):
            if key in im:
                if not isinstance(im[key], str):
                    raise DataFormatError(f"{source}: images[{i}] {key} must be a string; got {im[key]!r}")
                check_relative_path(im[key], f"{source}: images[{i}] (id {im['id']!r}) {key}")
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}] (id {ann.get('id', '?')!r})"
        miss = [k for k in DENSEPOSE_ANNOTATION_KEYS if k not in ann]
        if miss:
            raise DataFormatError(f"{where} lacks {miss} (needs {list(DENSEPOSE_ANNOTATION_KEYS)})")
        if ann["image_id"] not in ids:
            raise DataFormatError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        bbox = np.asarray(ann["bbox"], dtype=np.float64)
        if bbox.shape != (4,) or not np.isfinite(bbox).all() or bbox[2] <= 0 or bbox[3] <= 0:
            raise DataFormatError(f"{where}: bbox must be [x, y, w, h] with w, h > 0; got {ann['bbox']!r}")
        have = [k for k in DENSEPOSE_POINT_KEYS if k in ann]
        if have and len(have) != len(DENSEPOSE_POINT_KEYS):
            raise DataFormatError(f"{where}: the dp_* keys come together; has {have}, lacks "
                                  f"{[k for k in DENSEPOSE_POINT_KEYS if k not in ann]}")
        if have:
            lens = {k: len(ann[k]) for k in DENSEPOSE_POINT_KEYS}
            if len(set(lens.values())) != 1:
                raise DataFormatError(f"{where}: dp_* lists must have one length; got {lens}")
            parts = np.asarray(ann["dp_I"], dtype=np.float64)
            if parts.size and (np.any(parts != np.round(parts)) or parts.min() < 1 or parts.max() > NUM_DENSEPOSE_PARTS):
                raise DataFormatError(f"{where}: dp_I must be integers in 1..{NUM_DENSEPOSE_PARTS}; got range "
                                      f"[{parts.min():g}, {parts.max():g}]")
            for k, hi in (("dp_U", 1.0), ("dp_V", 1.0), ("dp_x", DENSEPOSE_COORD_RANGE), ("dp_y", DENSEPOSE_COORD_RANGE)):
                a = np.asarray(ann[k], dtype=np.float64)
                if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > hi):
                    raise DataFormatError(f"{where}: {k} must lie in [0, {hi:g}]; got range [{a.min():g}, {a.max():g}]")
        if "keypoints" in ann and len(ann["keypoints"]) != 51:
            raise DataFormatError(f"{where}: keypoints must be COCO's 17 x (x, y, v) = 51 numbers; "
                                  f"got {len(ann['keypoints'])}")


def load_densepose_json(path: PathLike) -> Dict:
    """Read and validate a DensePose COCO-style json (see the module docstring); returns the dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DensePose json not found: {path!r}")
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{path}: not valid json ({e})") from None
    validate_densepose(data, source=path)
    return data


def views_as_samples(mv_npz: PathLike, out_npz: PathLike) -> str:
    """Write the views of an MV-SPIN npz as a single-view SPIN npz: one sample per (person, view), in
    person-major order (sample ``i * V + v``), for single-view training or evaluation on rig images.

    Per-view keys lose their view axis; per-person keys (``pose_family``, ``world_*``) are repeated for
    every view; the calibration keys become per-sample (``cam_rot`` (N·V, 3, 3), ...). Image paths are
    unchanged, so ``out_npz`` belongs in the same folder as the images' root. Written atomically; returns
    the output path."""
    from .._io import atomic_write

    mv_npz = os.fspath(mv_npz)
    if not os.path.isfile(mv_npz):
        raise FileNotFoundError(f"MV-SPIN npz not found: {mv_npz!r}")
    raw = _read_npz(mv_npz)
    n, v = validate_spin_arrays(raw, multiview=True, source=mv_npz)
    out = {}
    for key, a in raw.items():
        spec = SPIN_KEYS.get(key)
        if spec is not None and spec.per_person:
            out[key] = np.repeat(a, v, axis=0)
        elif a.ndim >= 2 and a.shape[:2] == (n, v):
            out[key] = a.reshape(n * v, *a.shape[2:])
        else:
            raise DataFormatError(f"{mv_npz}: key {key!r} of shape {a.shape} has neither a (N, V) = ({n}, {v}) "
                                  "view axis nor a per-person axis")
    validate_spin_arrays(out, multiview=False, source=os.fspath(out_npz))
    try:
        atomic_write(out_npz, lambda fh: np.savez(fh, **out))
    except OSError as e:
        raise OSError(e.errno, f"cannot write {os.fspath(out_npz)!r}: {e.strerror or e}") from e
    return os.fspath(out_npz)
