"""Named keypoint conventions, conversion between them, and keypoint regressors for SMPL-family models.

A *convention* is an ordered tuple of canonical keypoint names (:data:`CONVENTIONS`). A name stands
for one point definition, the same in every convention that holds it, so :func:`convert` and
:func:`get_mapping` match keypoints by name. Names follow how SPIN files each data set's joints into
its 24 "ground-truth" slots and which SMPL output it compares each slot with:

* SMPL's 24 skeleton joints keep ``SMPL_JOINT_NAMES`` (``pelvis``, ``left_hip``, ..., ``right_hand``).
  Dataset ankles, knees, shoulders, elbows and wrists are the same points (SPIN compares them with
  the skeleton joints), so they share these names.
* smplx's vertex keypoints keep smplx's names: ``nose``, ``right_eye``, ``left_eye``, ``right_ear``,
  ``left_ear``, ``left_big_toe``, ``left_small_toe``, ``left_heel``, ``right_big_toe``,
  ``right_small_toe``, ``right_heel``, ``left_thumb`` ... ``right_pinky`` (finger tips). Dataset
  nose, eyes and ears share them.
* The nine dataset points SPIN regresses from the vertices (``J_regressor_extra.npy``) carry the data
  set SPIN names them after: ``right_hip_lsp``, ``left_hip_lsp`` (the annotated hip of LSP, MPII,
  COCO and Human3.6M, unlike SMPL's hip joint), ``neck_lsp`` (also MPII's upper neck and H36M's
  thorax), ``head_top_lsp``, ``pelvis_mpii`` (also H36M's pelvis), ``thorax_mpii``, ``spine_h36m``,
  ``jaw_h36m`` and ``head_h36m``.
* OpenPose BODY_25 detections are a data source of their own: every one has the suffix ``_openpose``
  (``nose_openpose``, ``neck_openpose``, ``mid_hip_openpose``, ``left_big_toe_openpose``, ...). The
  SMPL point SPIN fits each one with is the name without the suffix (``mid_hip_openpose``: ``pelvis``).

So ``convert(kps, "spin_49", "lsp_14")`` takes SPIN's ground-truth joints and
``convert(kps, "spin_49", "openpose_25")`` its first 25. ``approximate=True`` additionally fills a
missing keypoint from another definition of the same landmark (:data:`APPROXIMATE_GROUPS`), e.g.
COCO keypoints from OpenPose detections.

Keypoint regressors (:func:`build_keypoint_regressor`) say how a model's output gives each keypoint of
a convention: a skeleton joint, a weighted set of vertices (the model's own
``keypoint_definitions``, else smplx's vertex ids for the 6890-vertex SMPL mesh), or a row of a
user-supplied regressor (SPIN's ``J_regressor_extra.npy`` / ``J_regressor_h36m.npy``, see
:func:`load_spin_regressors`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .random_model import SMPL_JOINT_NAMES
from .vertex_ids import SMPL_NUM_VERTICES, SMPLH_VERTEX_IDS

__all__ = [
    "CONVENTIONS",
    "APPROXIMATE_GROUPS",
    "SAME_LANDMARK",
    "SPIN_EXTRA_JOINT_NAMES",
    "SMPLX_EXTRA_KEYS",
    "keypoint_names",
    "flip_permutation",
    "get_mapping",
    "convert",
    "KeypointSource",
    "KeypointRegressor",
    "smpl_keypoint_sources",
    "build_keypoint_regressor",
    "load_spin_regressors",
    "definitions_to_arrays",
    "definitions_from_arrays",
]

# smplx's vertex keypoints (after the 24 skeleton joints, in smplx's output order) and their keys in
# smplx's vertex-id tables.
SMPLX_EXTRA_KEYS = {
    "nose": "nose", "right_eye": "reye", "left_eye": "leye", "right_ear": "rear", "left_ear": "lear",
    "left_big_toe": "LBigToe", "left_small_toe": "LSmallToe", "left_heel": "LHeel",
    "right_big_toe": "RBigToe", "right_small_toe": "RSmallToe", "right_heel": "RHeel",
    **{f"{side}_{tip}": f"{side[0]}{tip}" for side in ("left", "right")
       for tip in ("thumb", "index", "middle", "ring", "pinky")},
}

_OPENPOSE_POINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
_OPENPOSE_25 = tuple(n + "_openpose" for n in _OPENPOSE_POINTS)

#: Rows of SPIN's ``J_regressor_extra.npy`` (9, 6890), in order.
SPIN_EXTRA_JOINT_NAMES: Tuple[str, ...] = (
    "right_hip_lsp", "left_hip_lsp", "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii",
    "spine_h36m", "jaw_h36m", "head_h36m",
)

# SPIN's 24 ground-truth slots (the ``part`` / ``S`` arrays of its data files).
_SPIN_24 = (
    "right_ankle", "right_knee", "right_hip_lsp", "left_hip_lsp", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m",
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)

#: Every known convention: name -> ordered tuple of canonical keypoint names.
CONVENTIONS: Dict[str, Tuple[str, ...]] = {
    # SMPL's skeleton.
    "smpl_24": tuple(SMPL_JOINT_NAMES),
    # What smplx.SMPL outputs for a 6890-vertex model: skeleton, face, feet, finger tips.
    "smplx_45": tuple(SMPL_JOINT_NAMES) + tuple(SMPLX_EXTRA_KEYS),
    # OpenPose BODY_25.
    "openpose_25": _OPENPOSE_25,
    # COCO person keypoints.
    "coco_17": (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip_lsp", "right_hip_lsp",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    # Rows of SPIN's J_regressor_h36m.npy (its index 1-3 is the left leg, 4-6 the right leg).
    "h36m_17": (
        "pelvis_mpii", "left_hip_lsp", "left_knee", "left_ankle", "right_hip_lsp", "right_knee",
        "right_ankle", "spine_h36m", "neck_lsp", "jaw_h36m", "head_h36m", "left_shoulder",
        "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
    ),
    # LSP's 14 joints.
    "lsp_14": _SPIN_24[:14],
    # MPII's 16 joints (upper neck = neck_lsp).
    "mpii_16": (
        "right_ankle", "right_knee", "right_hip_lsp", "left_hip_lsp", "left_knee", "left_ankle",
        "pelvis_mpii", "thorax_mpii", "neck_lsp", "head_top_lsp", "right_wrist", "right_elbow",
        "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    ),
    # SPIN's ground-truth joints and its 49 joints (OpenPose first).
    "spin_24": _SPIN_24,
    "spin_49": _OPENPOSE_25 + _SPIN_24,
}

#: Definitions of one landmark; ``approximate=True`` fills a missing keypoint from the first of its
#: group that the source has.
APPROXIMATE_GROUPS: Tuple[Tuple[str, ...], ...] = tuple(
    (n, n + "_openpose") for n in _OPENPOSE_POINTS if n not in ("neck", "mid_hip", "left_hip", "right_hip")
) + (
    ("right_hip_lsp", "right_hip_openpose", "right_hip"),
    ("left_hip_lsp", "left_hip_openpose", "left_hip"),
    ("pelvis_mpii", "mid_hip_openpose", "pelvis"),
    ("neck_lsp", "neck_openpose", "neck"),
    ("head_top_lsp", "head_h36m"),
)

# The SMPL output SPIN uses for each OpenPose keypoint (the name without the suffix otherwise).
_MODEL_POINT = {n + "_openpose": n for n in _OPENPOSE_POINTS}
_MODEL_POINT["mid_hip_openpose"] = "pelvis"

# Conventions whose keypoints are the rows of one dedicated regressor, when it is supplied.
_CONVENTION_REGRESSOR = {"h36m_17": "h36m"}
# Supported regressor keys -> number of rows.
_REGRESSOR_ROWS = {"extra": len(SPIN_EXTRA_JOINT_NAMES), "h36m": len(CONVENTIONS["h36m_17"])}

Convention = Union[str, Sequence[str]]


# ----------------------------------------------------------------------------------------- names
def keypoint_names(convention: Convention) -> Tuple[str, ...]:
    """The keypoint names of ``convention`` (a key of :data:`CONVENTIONS`, or a sequence of
    canonical names used as a convention of its own)."""
    if isinstance(convention, str):
        try:
            return CONVENTIONS[convention]
        except KeyError:
            raise ValueError(f"unknown keypoint convention {convention!r}; known: {sorted(CONVENTIONS)}") from None
    names = tuple(convention)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"a convention is a name from {sorted(CONVENTIONS)} or a sequence of keypoint names")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"keypoint names must be unique; repeated: {dup}")
    return names


def _mirror(name: str) -> str:
    swap = {"left": "right", "right": "left"}
    return "_".join(swap.get(t, t) for t in name.split("_"))


def flip_permutation(convention: Convention) -> Tuple[int, ...]:
    """Index permutation that swaps left and right keypoints: ``kps[..., perm, :]`` are the keypoints
    of the mirrored image (negate x separately). An involution; for ``spin_49`` it is SPIN's
    ``J49_FLIP_PERM``, for ``smpl_24`` SPIN's ``SMPL_JOINTS_FLIP_PERM``."""
    names = keypoint_names(convention)
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in names if _mirror(n) not in index]
    if missing:
        raise ValueError(f"convention has no mirror image for {missing}")
    return tuple(index[_mirror(n)] for n in names)


# ------------------------------------------------------------------------------------ conversion
#: An OpenPose detection and a data set's annotation of the same landmark (OpenPose's BODY_25 model was
#: trained on COCO's annotations: its hips are the annotated hips; its neck and mid-hip are midpoints,
#: not annotated points, so they are only in :data:`APPROXIMATE_GROUPS`). A conversion between a
#: detection convention and an annotation convention matches them; a convention that holds both
#: (``spin_49``) keeps them apart.
SAME_LANDMARK: Tuple[Tuple[str, str], ...] = tuple(
    (n + "_openpose", n) for n in _OPENPOSE_POINTS if n not in ("neck", "mid_hip", "left_hip", "right_hip")
) + (("right_hip_openpose", "right_hip_lsp"), ("left_hip_openpose", "left_hip_lsp"))


@functools.lru_cache(maxsize=256)
def _mapping(src: Tuple[str, ...], dst: Tuple[str, ...], approximate: bool) -> Tuple[np.ndarray, np.ndarray]:
    where = {n: i for i, n in enumerate(src)}
    dst_set = set(dst)
    same = {}
    for a, b in SAME_LANDMARK:
        same.setdefault(a, b)
        same.setdefault(b, a)
    groups = {n: g for g in APPROXIMATE_GROUPS for n in g} if approximate else {}
    dst_idx, src_idx = [], []
    for j, name in enumerate(dst):
        candidates = (name,)
        other = same.get(name)
        if other is not None and other not in dst_set:  # dst does not keep detection and annotation apart
            candidates += (other,)
        candidates += tuple(n for n in groups.get(name, ()) if n not in candidates)
        hit = next((where[n] for n in candidates if n in where), None)
        if hit is not None:
            dst_idx.append(j)
            src_idx.append(hit)
    out = np.array(dst_idx, dtype=np.int64), np.array(src_idx, dtype=np.int64)
    for a in out:
        a.flags.writeable = False
    return out


def get_mapping(src: Convention, dst: Convention, *, approximate: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(dst_idx, src_idx)`` (int64, read-only) such that ``out[..., dst_idx, :] =
    kps[..., src_idx, :]`` converts ``src`` keypoints to ``dst``. Keypoints are matched by name (and
    :data:`SAME_LANDMARK`, see :func:`convert`); with
    ``approximate`` a dst keypoint missing from src may take another definition of the same landmark
    (:data:`APPROXIMATE_GROUPS`, first one present)."""
    return _mapping(keypoint_names(src), keypoint_names(dst), bool(approximate))


def convert(kps, src: Convention, dst: Convention, *, approximate: bool = False, return_mask: bool = False):
    """Convert keypoints from convention ``src`` to ``dst``.

    ``kps`` is a numpy array or torch tensor of shape ``(..., J_src, D)`` (any leading batch
    dimensions, any D: 2 or 3 for coordinates, 3 or 4 with a trailing confidence channel). The result
    has shape ``(..., J_dst, D)``, the same type, dtype and device. Keypoints of ``dst`` that ``src``
    lacks are all zeros, so a confidence channel reads 0 for them. Torch inputs stay differentiable.

    With ``return_mask`` also returns a boolean ``(J_dst,)`` array / tensor that is True for the
    keypoints taken from ``src``. See :func:`get_mapping` for ``approximate``.

    Keypoints are matched by name, and an OpenPose detection matches a data set's annotation of the
    same landmark (:data:`SAME_LANDMARK`) unless a convention holds both (``spin_49`` keeps them apart),
    so OpenPose, COCO, H36M, LSP and MPII conversions fill every joint they share. A conversion that
    fills fewer than half of ``dst`` while using fewer than half of ``src`` warns.
    """
    src_names, dst_names = keypoint_names(src), keypoint_names(dst)
    is_torch = torch.is_tensor(kps)
    if not is_torch:
        kps = np.asarray(kps)
    if kps.ndim < 2 or kps.shape[-2] != len(src_names):
        src_label = src if isinstance(src, str) else "src"
        raise ValueError(f"convert: keypoints must have shape (..., {len(src_names)}, D) for convention "
                         f"{src_label!r} ({len(src_names)} keypoints); got {tuple(kps.shape)}")
    dst_idx, src_idx = _mapping(src_names, dst_names, bool(approximate))
    if 2 * len(dst_idx) < len(dst_names) and 2 * len(dst_idx) < len(src_names):
        import warnings

        label = (src if isinstance(src, str) else "src", dst if isinstance(dst, str) else "dst")
        warnings.warn(f"convert {label[0]!r} -> {label[1]!r}: only {len(dst_idx)} of {len(dst_names)} keypoints "
                      f"exist in both conventions; the others are zeros"
                      + ("" if approximate else " (approximate=True also takes other definitions of a landmark)"),
                      stacklevel=2)
    shape = (*kps.shape[:-2], len(dst_names), kps.shape[-1])
    if is_torch:
        d, s = (torch.tensor(a, device=kps.device) for a in (dst_idx, src_idx))
        out = kps.new_zeros(shape)
        out[..., d, :] = kps[..., s, :]
        mask = torch.zeros(len(dst_names), dtype=torch.bool, device=kps.device)
        mask[d] = True
    else:
        out = np.zeros(shape, dtype=kps.dtype)
        out[..., dst_idx, :] = kps[..., src_idx, :]
        mask = np.zeros(len(dst_names), dtype=bool)
        mask[dst_idx] = True
    return (out, mask) if return_mask else out


# ------------------------------------------------------------------------------------- regressors
@dataclass(frozen=True)
class KeypointSource:
    """How one keypoint comes out of a body model.

    ``kind`` is ``"joint"`` (skeleton joint ``index``), ``"vertices"`` (the weighted sum of the posed
    vertices ``vertex_ids`` with ``weights``) or ``"regressor"`` (row ``index`` of the supplied
    regressor ``regressor``, ``"extra"`` or ``"h36m"``, applied to the posed vertices).
    """

    kind: str
    index: int = -1
    vertex_ids: Tuple[int, ...] = ()
    weights: Tuple[float, ...] = ()
    regressor: str = ""


def _check_definitions(definitions: Optional[Mapping], num_vertices: int) -> Dict[str, Tuple[tuple, tuple]]:
    """Validate a model's keypoint definitions: name -> vertex id, or (vertex ids, weights summing to 1)."""
    out = {}
    for name, value in (definitions or {}).items():
        if name in SMPL_JOINT_NAMES:
            raise ValueError(f"keypoint definitions may not redefine the skeleton joint {name!r}")
        if isinstance(value, (int, np.integer)):
            ids, weights = (int(value),), (1.0,)
        else:
            try:
                ids_in, w_in = value
            except (TypeError, ValueError):
                raise ValueError(f"keypoint definition {name!r} must be a vertex id or (vertex_ids, weights); "
                                 f"got {value!r}") from None
            ids = tuple(int(i) for i in np.atleast_1d(np.asarray(ids_in)))
            weights = tuple(float(w) for w in np.atleast_1d(np.asarray(w_in, dtype=np.float64)))
        what = f"keypoint definition {name!r}"
        if not ids or len(ids) != len(weights):
            raise ValueError(f"{what}: {len(ids)} vertex ids but {len(weights)} weights")
        if min(ids) < 0 or max(ids) >= num_vertices:
            raise ValueError(f"{what}: vertex ids must lie in [0, {num_vertices}); got {list(ids)}")
        if not np.isfinite(weights).all() or abs(sum(weights) - 1.0) > 1e-4:
            raise ValueError(f"{what}: weights must be finite and sum to 1; sum is {sum(weights)}")
        out[name] = (ids, weights)
    return out


def smpl_keypoint_sources(
    convention: Convention,
    num_vertices: int = SMPL_NUM_VERTICES,
    *,
    definitions: Optional[Mapping] = None,
    regressors: Sequence[str] = ("extra", "h36m"),
    num_joints: int = 24,
) -> List[Optional[KeypointSource]]:
    """For each keypoint of ``convention``, its :class:`KeypointSource` in a model with ``num_vertices``
    vertices and ``num_joints`` skeleton joints, or None where nothing provides it.

    ``definitions`` are the model's own keypoints (name -> vertex id, or (vertex ids, weights) with
    weights summing to 1); ``regressors`` are the keys of the regressors that will be supplied. A
    keypoint resolves to the first that applies:

    1. the convention's dedicated regressor (``h36m_17``: the rows of ``"h36m"``) when supplied;
    2. a SMPL skeleton joint (OpenPose keypoints: the joint SPIN uses, e.g. ``neck_openpose``: ``neck``);
    3. a row of ``"extra"`` (SPIN's J_regressor_extra) for :data:`SPIN_EXTRA_JOINT_NAMES` when supplied;
    4. the model's ``definitions`` (by the keypoint's name, then by the SMPL point it stands for);
    5. smplx's vertex id when the model has SMPL's 6890 vertices.
    """
    names = keypoint_names(convention)
    defs = _check_definitions(definitions, num_vertices)
    unknown = sorted(set(regressors) - set(_REGRESSOR_ROWS))
    if unknown:
        raise ValueError(f"unknown regressor keys {unknown}; known: {sorted(_REGRESSOR_ROWS)}")
    dedicated = _CONVENTION_REGRESSOR.get(convention) if isinstance(convention, str) else None
    out: List[Optional[KeypointSource]] = []
    for i, name in enumerate(names):
        base = _MODEL_POINT.get(name, name)
        if dedicated in regressors:
            src = KeypointSource("regressor", i, regressor=dedicated)
        elif base in SMPL_JOINT_NAMES and SMPL_JOINT_NAMES.index(base) < num_joints:
            src = KeypointSource("joint", SMPL_JOINT_NAMES.index(base))
        elif base in SPIN_EXTRA_JOINT_NAMES and "extra" in regressors:
            src = KeypointSource("regressor", SPIN_EXTRA_JOINT_NAMES.index(base), regressor="extra")
        elif name in defs or base in defs:
            ids, weights = defs[name if name in defs else base]
            src = KeypointSource("vertices", vertex_ids=ids, weights=weights)
        elif num_vertices == SMPL_NUM_VERTICES and base in SMPLX_EXTRA_KEYS:
            src = KeypointSource("vertices", vertex_ids=(SMPLH_VERTEX_IDS[SMPLX_EXTRA_KEYS[base]],), weights=(1.0,))
        else:
            src = None
        out.append(src)
    return out


@dataclass(frozen=True, eq=False)
class KeypointRegressor:
    """Keypoints of one convention from a body model's skeleton joints and posed vertices.

    ``keypoints = cat([joints[..., :num_joints, :], regressor @ vertices], -2)[..., index, :]``: an
    ``index`` below ``num_joints`` picks a skeleton joint, ``num_joints + e`` row ``e`` of
    ``regressor`` (E, V), which holds one row per distinct vertex-based keypoint. This is SPIN's
    construction, and it fits the SMPL layer: ``SMPL(..., extra_joint_regressor=regressor)`` appends
    the regressed rows after its own joints (shift the indices >= ``num_joints`` by the layer's
    vertex-id joints, 21 for a 6890-vertex model).
    """

    convention: str
    names: Tuple[str, ...]
    index: np.ndarray
    regressor: np.ndarray
    num_joints: int

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def __call__(self, joints, vertices):
        """Keypoints (..., K, 3) from skeleton joints (..., >= num_joints, 3) and posed vertices
        (..., V, 3); numpy arrays or torch tensors (differentiable)."""
        J = self.num_joints
        if joints.shape[-2] < J or vertices.shape[-2] != self.regressor.shape[1]:
            raise ValueError(f"KeypointRegressor: needs joints (..., >={J}, 3) and vertices (..., "
                             f"{self.regressor.shape[1]}, 3); got {tuple(joints.shape)} and {tuple(vertices.shape)}")
        if torch.is_tensor(joints):
            R = torch.as_tensor(self.regressor, dtype=vertices.dtype, device=vertices.device)
            both = torch.cat([joints[..., :J, :], torch.matmul(R, vertices)], dim=-2)
            return both[..., torch.tensor(self.index, device=both.device), :]
        both = np.concatenate([np.asarray(joints)[..., :J, :], np.matmul(self.regressor, vertices)], axis=-2)
        return both[..., self.index, :]


def definitions_to_arrays(definitions: Mapping) -> Dict[str, np.ndarray]:
    """Keypoint definitions as plain arrays for a model file: ``keypoint_names`` (K,),
    ``keypoint_vertex_ids`` (K, M) padded with -1 and ``keypoint_weights`` (K, M) padded with 0."""
    defs = _check_definitions(definitions, np.iinfo(np.int64).max)
    names = sorted(defs)
    m = max((len(defs[n][0]) for n in names), default=1)
    ids = np.full((len(names), m), -1, dtype=np.int64)
    weights = np.zeros((len(names), m), dtype=np.float64)
    for k, n in enumerate(names):
        ids[k, : len(defs[n][0])] = defs[n][0]
        weights[k, : len(defs[n][1])] = defs[n][1]
    return {"keypoint_names": np.array(names, dtype="U"), "keypoint_vertex_ids": ids, "keypoint_weights": weights}


def definitions_from_arrays(extras: Mapping) -> Optional[Dict[str, Tuple[tuple, tuple]]]:
    """Inverse of :func:`definitions_to_arrays`; None when ``extras`` holds no keypoint definitions."""
    if "keypoint_names" not in extras:
        return None
    names = np.asarray(extras["keypoint_names"]).astype(str)
    ids = np.asarray(extras["keypoint_vertex_ids"], dtype=np.int64)
    weights = np.asarray(extras["keypoint_weights"], dtype=np.float64)
    if ids.shape != weights.shape or ids.shape[:1] != names.shape:
        raise ValueError(f"keypoint definitions: keypoint_names {names.shape}, keypoint_vertex_ids {ids.shape} and "
                         f"keypoint_weights {weights.shape} do not match")
    return {str(n): (tuple(int(i) for i in r[r >= 0]), tuple(float(w) for w in q[r >= 0]))
            for n, r, q in zip(names, ids, weights)}


def _model_info(model) -> Tuple[int, int, Optional[Mapping]]:
    """(num_vertices, num_skeleton_joints, keypoint definitions) of an int V, a ModelData or a layer."""
    if isinstance(model, (int, np.integer)):
        return int(model), 24, None
    if not hasattr(model, "v_template"):
        raise TypeError(f"model must be a vertex count, a ModelData or an SMPL layer; got {type(model).__name__}")
    V = int(model.v_template.shape[0])
    J = int(model.J_regressor.shape[0]) if hasattr(model, "J_regressor") else 24
    defs = getattr(model, "keypoint_definitions", None)
    if defs is None and isinstance(getattr(model, "extras", None), dict):
        defs = model.extras.get("keypoint_definitions") or definitions_from_arrays(model.extras)
    return V, J, defs


def _as_matrix(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu()
        x = x.to_dense() if x.is_sparse else x
        return x.double().numpy()
    if hasattr(x, "toarray"):  # scipy.sparse
        x = x.toarray()
    return np.asarray(x, dtype=np.float64)


def build_keypoint_regressor(
    convention: Convention,
    model,
    regressors: Optional[Mapping[str, object]] = None,
    *,
    definitions: Optional[Mapping] = None,
) -> KeypointRegressor:
    """The :class:`KeypointRegressor` giving ``convention``'s keypoints for ``model``.

    ``model`` is a vertex count, a :class:`~smplfast.body.ModelData` or an SMPL layer; its own keypoint
    definitions are read from a ``keypoint_definitions`` attribute (or ``extras["keypoint_definitions"]``
    of a ModelData) unless ``definitions`` is given. ``regressors`` maps ``"extra"`` (9, V) and/or
    ``"h36m"`` (17, V) to arrays, e.g. from :func:`load_spin_regressors`. Sources are resolved as
    :func:`smpl_keypoint_sources` describes; a keypoint that nothing provides raises a ValueError
    naming every such keypoint.
    """
    V, J, model_defs = _model_info(model)
    if definitions is None:
        definitions = model_defs
    mats = {}
    for key, value in (regressors or {}).items():
        if key not in _REGRESSOR_ROWS:
            raise ValueError(f"unknown regressor key {key!r}; known: {sorted(_REGRESSOR_ROWS)}")
        m = _as_matrix(value)
        if m.shape != (_REGRESSOR_ROWS[key], V):
            raise ValueError(f"regressor {key!r} must have shape ({_REGRESSOR_ROWS[key]}, {V}) for this "
                             f"{V}-vertex model; got {m.shape}")
        mats[key] = m
    names = keypoint_names(convention)
    sources = smpl_keypoint_sources(convention, V, definitions=definitions, regressors=tuple(mats), num_joints=J)
    missing = [n for n, s in zip(names, sources) if s is None]
    if missing:
        hint = []
        if any(_MODEL_POINT.get(n, n) in SPIN_EXTRA_JOINT_NAMES for n in missing):
            hint.append("SPIN's J_regressor_extra as regressors['extra']")
        if V == SMPL_NUM_VERTICES:
            hint.append("keypoint definitions in the model")
        else:
            hint.append(f"keypoint definitions in the model (smplx's vertex ids only fit {SMPL_NUM_VERTICES}-vertex "
                        f"models, this one has {V})")
        raise ValueError(f"no source for keypoints {missing} of convention {convention!r}; supply {' or '.join(hint)}")
    rows, row_of, index = [], {}, []
    for s in sources:
        if s.kind == "joint":
            index.append(s.index)
            continue
        if s.kind == "regressor":
            row = mats[s.regressor][s.index]
        else:
            row = np.zeros(V)
            np.add.at(row, list(s.vertex_ids), s.weights)
        key = row.tobytes()
        if key not in row_of:
            row_of[key] = len(rows)
            rows.append(row)
        index.append(J + row_of[key])
    regressor = np.stack(rows) if rows else np.zeros((0, V))
    label = convention if isinstance(convention, str) else "<custom>"
    return KeypointRegressor(label, names, np.array(index, dtype=np.int64), regressor, J)


_SPIN_FILES = {
    "extra": ("J_regressor_extra.npy", "SPIN's regressor of its 9 extra joints " + ", ".join(SPIN_EXTRA_JOINT_NAMES)),
    "h36m": ("J_regressor_h36m.npy", "SPIN's regressor of the 17 Human3.6M joints"),
}


def load_spin_regressors(
    extra_path: Optional[str] = None,
    h36m_path: Optional[str] = None,
    *,
    num_vertices: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Load SPIN's vertex regressors: ``{"extra": (9, V), "h36m": (17, V)}`` (float64), with the keys
    of the paths given. Raises FileNotFoundError for a missing file and ValueError for a wrong shape,
    non-finite values, files with different V, or V other than ``num_vertices`` when given."""
    out = {}
    for key, path in (("extra", extra_path), ("h36m", h36m_path)):
        if path is None:
            continue
        path = os.fspath(path)
        fname, what = _SPIN_FILES[key]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file (expected {fname}, {what})")
        m = np.load(path, allow_pickle=False).astype(np.float64)
        rows = _REGRESSOR_ROWS[key]
        V = num_vertices if num_vertices is not None else "V"
        if m.ndim != 2 or m.shape[0] != rows or (num_vertices is not None and m.shape[1] != num_vertices):
            raise ValueError(f"{path}: {fname} must have shape ({rows}, {V}); got {m.shape}")
        if not np.isfinite(m).all():
            raise ValueError(f"{path}: {fname} holds NaN or Inf")
        out[key] = m
    if len({m.shape[1] for m in out.values()}) > 1:
        raise ValueError(f"the regressors have different vertex counts: { {k: m.shape for k, m in out.items()} }")
    return out
