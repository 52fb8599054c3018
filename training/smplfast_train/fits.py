"""SPIN's fits dictionary: the current best SMPL fit of every training sample.

One float32 array ``(N, 82)`` per dataset = pose (72, axis-angle) + betas (10), stored in the
**canonical frame** (the sample's original camera frame: unflipped, unrotated), plus per row a
float64 ``loss`` (the fit's mean per-keypoint reprojection loss when it was written; ``+inf`` for a
row never fitted) and a bool ``updated`` flag (the row was written since the dictionary was built).

Frames and units (TRAINING_SPEC §1.2, §1.6):

* ``rot`` is the crop's in-plane rotation in **radians** (``SPINDataset``'s ``rot_angle``; positive
  turns the content counterclockwise), ``flip`` the mirror flag (``is_flipped``). :meth:`FitsDict.read`
  applies the rotation, then the flip (:func:`smplfast.data.augment.augment_smpl_pose`);
  :meth:`FitsDict.write` undoes both (:func:`~smplfast.data.augment.undo_smpl_pose_augmentation`).
  Pass ``degrees=True`` for angles in degrees.
* Losses are SMPLify's reprojection loss in the **virtual 224-px crop** (f = 5000 px, principal
  point (112, 112), GMoF σ = 100 px): per keypoint ``conf² · Σ_xy GMoF(proj − kp)``, SPIN's ignored
  joints [1, 9, 12, 27, 28] at 0, averaged over all 49 keypoints (``SMPLify.get_fitting_loss(...).mean(-1)``).
  SPIN's acceptance threshold is 100 on this value.

Also here: the "fair" comparison of an old fit against a new one (:func:`refit_translation`,
:func:`accept`), atomic persistence with checksums (:meth:`FitsDict.save` / :meth:`FitsDict.load`),
the static-fits file format (:func:`write_static_fits` / :func:`read_static_fits`) and how such files
are made (:func:`static_fits_mean`, :func:`static_fits_gt`, :func:`static_fits_from_init`), the
DDP merge (:meth:`FitsDict.sync`) and the diagnostics against a hidden ground truth
(:meth:`FitsDict.diagnostics`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "POSE_DIM",
    "BETAS_DIM",
    "FITS_DIM",
    "FIT_RES",
    "FIT_FOCAL",
    "FIT_CENTER",
    "SMPLIFY_SIGMA",
    "SMPLIFY_THRESHOLD",
    "H36M_TO_J14",
    "FitsFileError",
    "FitsUpdate",
    "FitsDict",
    "accept",
    "reprojection_loss",
    "refit_translation",
    "StaticFits",
    "static_fits_path",
    "write_static_fits",
    "read_static_fits",
    "fit_keypoints_px",
    "StaticFitResult",
    "static_fits_from_init",
    "static_fits_mean",
    "static_fits_gt",
]

POSE_DIM = 72
BETAS_DIM = 10
FITS_DIM = POSE_DIM + BETAS_DIM
#: SMPLify's virtual crop: side, focal length and principal point (pixels), TRAINING_SPEC §1.2.
FIT_RES = 224
FIT_FOCAL = 5000.0
FIT_CENTER = FIT_RES / 2.0
#: SPIN's GMoF scale (pixels) and its fit-acceptance threshold on the mean reprojection loss.
SMPLIFY_SIGMA = 100.0
SMPLIFY_THRESHOLD = 100.0
#: SPIN's J14 rows of the ``h36m_17`` keypoints (``constants.H36M_TO_J14``).
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)

FITS_FORMAT = "smplfast_train.fits/1"
STATIC_FORMAT = "smplfast_train.static_fits/1"
META_NAME = "fits_meta.json"

PathLike = Union[str, os.PathLike]


class FitsFileError(ValueError):
    """A fits or static-fits file is missing, corrupt, or does not match what the run expects."""


# ---------------------------------------------------------------------------------------- helpers
def _as_index(x, name: str, B: Optional[int] = None) -> Tensor:
    """A (B,) int64 CPU tensor from an integer tensor / array / sequence (bools refused)."""
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integers; got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.int64)
    if t.dim() == 0:
        t = t.reshape(1) if B is None else t.expand(B)
    if t.dim() != 1 or (B is not None and t.shape[0] != B):
        raise ValueError(f"{name} must have shape ({'B' if B is None else B},); got {tuple(t.shape)}")
    return t


def _per_sample(t: Tensor, name: str, B: int) -> Tensor:
    """A scalar broadcast to (B,), or a (B,) tensor; anything else is an error naming ``name``."""
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"{name} must be a scalar or have shape ({B},); got {tuple(t.shape)}")
    return t


def _as_flag(x, name: str, B: int) -> Tensor:
    """A (B,) bool CPU tensor from a bool or 0/1 integer scalar / tensor / array (converted, never
    used as an index: a byte mask indexes rows 0/1, TRAINING_SPEC §8 S10)."""
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    t = t.detach().to("cpu")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be boolean (or 0/1 integers); got dtype {t.dtype}")
    if t.dtype != torch.bool:
        if t.numel() and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} must be boolean (or 0/1 integers); got values outside {{0, 1}}")
        t = t.to(torch.bool)
    return _per_sample(t, name, B)


def _as_angle(x, name: str, B: int, degrees: bool) -> Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    t = t.detach().to("cpu")
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be real angles ({'degrees' if degrees else 'radians'}); got dtype {t.dtype}")
    t = _per_sample(t.to(torch.float64), name, B)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return torch.deg2rad(t) if degrees else t


def _as_float(x, name: str, shape: Tuple[int, ...]) -> Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor; got dtype {t.dtype}")
    t = t.detach().to("cpu")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}; got {tuple(t.shape)}")
    return t


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """``write(file_object)`` into ``path`` atomically, the folder synced too."""
    from smplfast._io import atomic_write

    atomic_write(path, write, fsync_dir=True)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ValueError(f"dataset name must be a non-empty string usable in a file name; got {name!r}")
    return name


def _stable_merge(rows: Tensor, loss: Tensor, rank: Tensor) -> Tensor:
    """Indices of the winning entry for each distinct row: the lowest loss, ties -> the lowest rank,
    then the first occurrence. Returns indices into the inputs, in increasing row order."""
    n = rows.shape[0]
    order = torch.arange(n)
    # Stable sorts from the least to the most significant key.
    for key in (rank, loss, rows):
        o = torch.sort(key[order], stable=True).indices
        order = order[o]
    r = rows[order]
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = r[1:] != r[:-1]
    return order[first]


# ---------------------------------------------------------------------------------------- updates
@dataclass
class FitsUpdate:
    """Rows to store, already in the canonical frame: dataset id (into :attr:`FitsDict.names`),
    sample index, pose (K, 72) float32, betas (K, 10) float32, loss (K,) float64, and ``aux`` (K, A)
    float32 for a dictionary with auxiliary columns (None otherwise). ``skipped`` counts the rows that
    were masked for update but not finite (never stored)."""

    ds_id: Tensor
    idx: Tensor
    pose: Tensor
    betas: Tensor
    loss: Tensor
    skipped: int = 0
    aux: Optional[Tensor] = None

    def select(self, index: Tensor) -> "FitsUpdate":
        return FitsUpdate(self.ds_id[index], self.idx[index], self.pose[index], self.betas[index], self.loss[index],
                          self.skipped, None if self.aux is None else self.aux[index])

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    @staticmethod
    def empty(aux_dim: int = 0) -> "FitsUpdate":
        return FitsUpdate(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                          torch.zeros(0, POSE_DIM), torch.zeros(0, BETAS_DIM), torch.zeros(0, dtype=torch.float64),
                          aux=torch.zeros(0, aux_dim) if aux_dim else None)

    @staticmethod
    def cat(updates: Sequence["FitsUpdate"]) -> "FitsUpdate":
        updates = list(updates)
        if not updates:
            return FitsUpdate.empty()
        aux = None if any(u.aux is None for u in updates) else torch.cat([u.aux for u in updates])
        return FitsUpdate(torch.cat([u.ds_id for u in updates]), torch.cat([u.idx for u in updates]),
                          torch.cat([u.pose for u in updates]), torch.cat([u.betas for u in updates]),
                          torch.cat([u.loss for u in updates]), sum(u.skipped for u in updates), aux)


# ------------------------------------------------------------------------------------ the dictionary
class FitsDict:
    """The fits dictionary of one run (module docstring).

    Construction: ``FitsDict({"wild_train": 6000, ...})`` (every row at ``default_pose`` / zeros,
    loss +inf), :meth:`from_static_fits`, :meth:`from_arrays`, :meth:`from_gt` (oracle), :meth:`load`.

    Storage is one contiguous CPU block for all datasets (a batch mixing datasets is one gather);
    :meth:`array`, :meth:`pose`, :meth:`betas`, :meth:`loss`, :meth:`updated` give per-dataset numpy
    views. Datasets are addressed by name, by a per-sample list of names, or by a per-sample integer
    id tensor into ``names=`` (default :attr:`names`).

    ``aux_dim`` > 0 adds that many auxiliary float32 columns per row after the betas (e.g. the world
    translation of a calibrated multi-view fit). They are stored, synchronised and saved with the row,
    but never transformed: the caller gives them in its own canonical frame (:meth:`read_aux`).
    """

    def __init__(self, sizes: Union[Mapping[str, int], Sequence[Tuple[str, int]]], *, default_pose=None,
                 default_betas=None, provenance: Union[None, str, Mapping[str, str]] = None, aux_dim: int = 0) -> None:
        items = list(sizes.items()) if isinstance(sizes, Mapping) else [tuple(s) for s in sizes]
        if not items:
            raise ValueError("FitsDict needs at least one dataset")
        names = [_check_name(n) for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"FitsDict: duplicate dataset names in {names}")
        counts = []
        for n, s in items:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) < 1:
                raise ValueError(f"FitsDict: size of {n!r} must be an int >= 1; got {s!r}")
            counts.append(int(s))
        self.names: List[str] = names
        self.sizes: Dict[str, int] = dict(zip(names, counts))
        self._ids = {n: i for i, n in enumerate(names)}
        self._size_t = torch.tensor(counts, dtype=torch.int64)
        self._offset_t = torch.cumsum(torch.tensor([0] + counts[:-1], dtype=torch.int64), 0)
        total = sum(counts)
        if isinstance(aux_dim, bool) or not isinstance(aux_dim, (int, np.integer)) or aux_dim < 0:
            raise ValueError(f"FitsDict: aux_dim must be an int >= 0; got {aux_dim!r}")
        self.aux_dim = int(aux_dim)
        self.width = FITS_DIM + self.aux_dim
        self._params = torch.zeros(total, self.width, dtype=torch.float32)
        if default_pose is not None:
            self._params[:, :POSE_DIM] = _as_float(torch.as_tensor(np.asarray(default_pose, dtype=np.float32)),
                                                   "default_pose", (POSE_DIM,)).float()
        if default_betas is not None:
            self._params[:, POSE_DIM:FITS_DIM] = _as_float(torch.as_tensor(np.asarray(default_betas, dtype=np.float32)),
                                                   "default_betas", (BETAS_DIM,)).float()
        if not bool(torch.isfinite(self._params).all()):
            raise ValueError("FitsDict: default_pose / default_betas contain NaN or Inf")
        self._loss = torch.full((total,), math.inf, dtype=torch.float64)
        self._updated = torch.zeros(total, dtype=torch.bool)
        if provenance is None or isinstance(provenance, str):
            self.provenance: Dict[str, str] = {n: provenance or "initialised" for n in names}
        else:
            self.provenance = {n: str(provenance.get(n, "initialised")) for n in names}
        #: Rows masked for update in :meth:`write` on this process whose pose, betas or loss were not
        #: finite (never stored), in total.
        self.skipped_nonfinite = 0
        self._layout_checked = False

    # ---------------------------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Union[Tuple, Mapping]], provenance: Union[str, Mapping[str, str]] = "arrays",
                    mark_updated: bool = False) -> "FitsDict":
        """From ``{name: (pose (N, 72), betas (N, 10)[, loss (N,)])}`` (or mappings with those keys),
        canonical frame. A missing loss is +inf."""
        parsed = {}
        for name, a in arrays.items():
            if isinstance(a, Mapping):
                pose, betas, loss = a["pose"], a["betas"], a.get("loss")
            else:
                if len(a) not in (2, 3):
                    raise ValueError(f"FitsDict.from_arrays: {name!r} must be (pose, betas[, loss])")
                pose, betas, loss = (tuple(a) + (None,))[:3]
            pose, betas = np.asarray(pose), np.asarray(betas)
            if pose.ndim != 2 or pose.shape[1] != POSE_DIM:
                raise ValueError(f"FitsDict: {name!r} pose must be (N, {POSE_DIM}); got {pose.shape}")
            N = pose.shape[0]
            if betas.shape != (N, BETAS_DIM):
                raise ValueError(f"FitsDict: {name!r} betas must be ({N}, {BETAS_DIM}); got {betas.shape}")
            if not (np.isfinite(pose).all() and np.isfinite(betas).all()):
                raise ValueError(f"FitsDict: {name!r} pose / betas contain NaN or Inf")
            if loss is None:
                loss = np.full(N, np.inf)
            loss = np.asarray(loss, dtype=np.float64)
            if loss.shape == ():
                loss = np.full(N, float(loss))
            if loss.shape != (N,) or np.isnan(loss).any():
                raise ValueError(f"FitsDict: {name!r} loss must be ({N},) without NaN; got shape {loss.shape}")
            parsed[name] = (pose, betas, loss)
        fd = cls({n: p[0].shape[0] for n, p in parsed.items()}, provenance=provenance)
        for name, (pose, betas, loss) in parsed.items():
            arr = fd.array(name)
            arr[:, :POSE_DIM] = pose
            arr[:, POSE_DIM:FITS_DIM] = betas
            fd.loss(name)[:] = loss
            fd.updated(name)[:] = bool(mark_updated)
        return fd

    @classmethod
    def from_gt(cls, gt: Mapping[str, Tuple], loss=0.0, provenance: str = "oracle: ground-truth SMPL parameters") -> "FitsDict":
        """Oracle fits: ``{name: (gt_pose (N, 72), gt_betas (N, 10))}`` in the canonical frame (the
        files' own ``pose`` / ``shape``, whatever ``has_smpl`` says). ``loss`` is a scalar or
        ``{name: (N,)}`` (default 0: the GT is taken as a perfect fit)."""
        arrays = {}
        for name, (pose, betas) in gt.items():
            l = loss[name] if isinstance(loss, Mapping) else loss
            arrays[name] = (pose, betas, np.broadcast_to(np.asarray(l, dtype=np.float64), (np.asarray(pose).shape[0],)))
        return cls.from_arrays(arrays, provenance=provenance)

    @classmethod
    def from_static_fits(cls, sources: Union[PathLike, Sequence[PathLike], Mapping[str, PathLike]],
                         names: Optional[Sequence[str]] = None, sizes: Optional[Mapping[str, int]] = None) -> "FitsDict":
        """From static-fits files: a directory (every ``{ds}_static_fits.npz`` in it, or only ``names``),
        a list of files, or ``{name: path}``. ``sizes`` ({name: N}) are checked when given."""
        if isinstance(sources, Mapping):
            paths = {str(k): Path(v) for k, v in sources.items()}
        elif isinstance(sources, (str, os.PathLike)) and Path(sources).is_dir():
            d = Path(sources)
            if names is None:
                found = sorted(d.glob("*_static_fits.npz"))
                if not found:
                    raise FitsFileError(f"no *_static_fits.npz file in {str(d)!r}")
                paths = {p.name[: -len("_static_fits.npz")]: p for p in found}
            else:
                paths = {n: static_fits_path(d, n) for n in names}
        else:
            files = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(p) for p in sources]
            paths = {}
            for p in files:
                if not p.name.endswith("_static_fits.npz"):
                    raise FitsFileError(f"{str(p)!r} is not named {{dataset}}_static_fits.npz")
                paths[p.name[: -len("_static_fits.npz")]] = p
        if names is not None:
            missing = [n for n in names if n not in paths]
            if missing:
                raise FitsFileError(f"no static fits for {missing}")
            paths = {n: paths[n] for n in names}
        arrays, prov = {}, {}
        for name, p in paths.items():
            sf = read_static_fits(p, expected_size=None if sizes is None else sizes.get(name))
            arrays[name] = (sf.pose, sf.betas, sf.loss)
            prov[name] = f"static fits {p.name}: {sf.provenance}"
        if sizes is not None:
            missing = [n for n in sizes if n not in arrays]
            if missing:
                raise FitsFileError(f"no static fits for {missing}")
        return cls.from_arrays(arrays, provenance=prov)

    # ------------------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return int(self._params.shape[0])

    def __repr__(self) -> str:
        return f"FitsDict({', '.join(f'{n}: {self.sizes[n]}' for n in self.names)})"

    def _slice(self, name: str) -> slice:
        if name not in self._ids:
            raise KeyError(f"unknown dataset {name!r}; the fits dictionary has {self.names}")
        i = self._ids[name]
        o = int(self._offset_t[i])
        return slice(o, o + self.sizes[name])

    def array(self, name: str) -> np.ndarray:
        """(N, 82 + aux_dim) float32 view (pose 72 + betas 10 [+ aux], canonical frame) of dataset ``name``."""
        return self._params[self._slice(name)].numpy()

    def pose(self, name: str) -> np.ndarray:
        return self.array(name)[:, :POSE_DIM]

    def betas(self, name: str) -> np.ndarray:
        return self.array(name)[:, POSE_DIM:FITS_DIM]

    def aux(self, name: str) -> np.ndarray:
        """(N, aux_dim) float32 view of the auxiliary columns."""
        return self.array(name)[:, FITS_DIM:]

    def loss(self, name: str) -> np.ndarray:
        """(N,) float64 view: the stored fit loss (+inf: never fitted)."""
        return self._loss[self._slice(name)].numpy()

    def updated(self, name: str) -> np.ndarray:
        """(N,) bool view: the row was written since the dictionary was built or loaded."""
        return self._updated[self._slice(name)].numpy()

    def ds_id(self, name: str) -> int:
        if name not in self._ids:
            raise KeyError(f"unknown dataset {name!r}; the fits dictionary has {self.names}")
        return self._ids[name]

    def state_dict(self) -> dict:
        """Everything, as numpy copies (for a checkpoint)."""
        return {"names": list(self.names), "sizes": dict(self.sizes), "params": self._params.numpy().copy(),
                "loss": self._loss.numpy().copy(), "updated": self._updated.numpy().copy(),
                "provenance": dict(self.provenance)}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["names"]) != self.names or dict(state["sizes"]) != self.sizes:
            raise FitsFileError(f"fits state has datasets {dict(state['sizes'])}; this dictionary has {self.sizes}")
        params = torch.as_tensor(np.asarray(state["params"], dtype=np.float32))
        if params.shape != self._params.shape or not bool(torch.isfinite(params).all()):
            raise FitsFileError("fits state: params have the wrong shape or are not finite")
        self._params.copy_(params)
        self._loss.copy_(torch.as_tensor(np.asarray(state["loss"], dtype=np.float64)))
        self._updated.copy_(torch.as_tensor(np.asarray(state["updated"], dtype=bool)))
        self.provenance.update({k: str(v) for k, v in dict(state.get("provenance", {})).items()})

    # ------------------------------------------------------------------------------- indexing
    def _ds_ids(self, ds, B: int, names: Optional[Sequence[str]]) -> Tensor:
        """(B,) ids into self.names from a name, a per-sample list of names, or an id tensor / int."""
        if isinstance(ds, str):
            return torch.full((B,), self.ds_id(ds), dtype=torch.int64)
        if isinstance(ds, (list, tuple)) or (isinstance(ds, np.ndarray) and ds.dtype.kind in "US"):
            arr = np.asarray(ds)
            if arr.shape != (B,):
                raise ValueError(f"dataset names must be one per sample ({B},); got shape {arr.shape}")
            uniq, inv = np.unique(arr.astype(str), return_inverse=True)
            table = torch.tensor([self.ds_id(str(u)) for u in uniq], dtype=torch.int64)
            return table[torch.as_tensor(inv.reshape(-1), dtype=torch.int64)]
        ids = _as_index(ds, "dataset id", B)
        if names is None:
            table = torch.arange(len(self.names), dtype=torch.int64)
        else:
            table = torch.tensor([self.ds_id(str(n)) for n in names], dtype=torch.int64)
        bad = (ids < 0) | (ids >= table.shape[0])
        if bool(bad.any()):
            raise IndexError(f"dataset id {int(ids[bad][0])} is out of range for the name table of {table.shape[0]} entries")
        return table[ids]

    def rows(self, ds, idx, names: Optional[Sequence[str]] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(global rows, dataset ids, sample indices), each (B,) int64, with every index checked."""
        idx = _as_index(idx, "idx")
        ids = self._ds_ids(ds, idx.shape[0], names)
        size = self._size_t[ids]
        bad = (idx < 0) | (idx >= size)
        if bool(bad.any()):
            j = int(torch.nonzero(bad)[0, 0])
            raise IndexError(f"sample index {int(idx[j])} is out of range for dataset {self.names[int(ids[j])]!r} "
                             f"of {int(size[j])} samples")
        return self._offset_t[ids] + idx, ids, idx

    # ---------------------------------------------------------------------------- read / write
    def read(self, ds, idx, rot=0.0, flip=False, *, names: Optional[Sequence[str]] = None, degrees: bool = False,
             dtype: torch.dtype = torch.float32, device=None) -> Tuple[Tensor, Tensor]:
        """The stored fits of a batch in its augmentation frame: rotation ``rot`` (radians, per sample
        or scalar), then ``flip``. Returns pose (B, 72), betas (B, 10)."""
        g, _, _ = self.rows(ds, idx, names)
        B = g.shape[0]
        rot = _as_angle(rot, "rot", B, degrees)
        flip = _as_flag(flip, "flip", B)
        from smplfast.data.augment import augment_smpl_pose

        p = self._params[g]
        pose = augment_smpl_pose(p[:, :POSE_DIM].double(), rot, flip)
        return pose.to(device=device, dtype=dtype), p[:, POSE_DIM:FITS_DIM].to(device=device, dtype=dtype)

    def read_aux(self, ds, idx, *, names: Optional[Sequence[str]] = None) -> Tensor:
        """(B, aux_dim) float32 stored auxiliary columns, as stored (canonical, untransformed)."""
        g, _, _ = self.rows(ds, idx, names)
        return self._params[g, FITS_DIM:].clone()

    def read_loss(self, ds, idx, *, names: Optional[Sequence[str]] = None) -> Tensor:
        """(B,) float64 stored losses (+inf: never fitted)."""
        g, _, _ = self.rows(ds, idx, names)
        return self._loss[g].clone()

    def canonical_update(self, ds, idx, rot, flip, update_mask, pose, betas, loss=None, *,
                         names: Optional[Sequence[str]] = None, degrees: bool = False, aux=None) -> FitsUpdate:
        """The rows ``update_mask`` selects, mapped back to the canonical frame (nothing is stored).
        Rows whose pose, betas, aux or loss is not finite are dropped and counted in ``skipped``; +inf is
        allowed for the loss (unknown), NaN is not. ``loss=None`` means +inf. ``aux`` (B, aux_dim) is
        required exactly when the dictionary has auxiliary columns, already canonical."""
        g, ids, idx = self.rows(ds, idx, names)
        B = g.shape[0]
        rot = _as_angle(rot, "rot", B, degrees)
        flip = _as_flag(flip, "flip", B)
        mask = _as_flag(update_mask, "update_mask", B)
        pose = _as_float(pose, "pose", (B, POSE_DIM))
        betas = _as_float(betas, "betas", (B, BETAS_DIM))
        if loss is None:
            loss = torch.full((B,), math.inf, dtype=torch.float64)
        else:
            loss = _as_float(loss, "loss", (B,)).to(torch.float64)
        ok = torch.isfinite(pose).all(1) & torch.isfinite(betas).all(1) & ~torch.isnan(loss)
        if self.aux_dim:
            if aux is None:
                raise ValueError(f"this fits dictionary has {self.aux_dim} auxiliary columns: pass aux ({B}, {self.aux_dim})")
            aux = _as_float(aux, "aux", (B, self.aux_dim)).float()
            ok = ok & torch.isfinite(aux).all(1)
        elif aux is not None:
            raise ValueError("this fits dictionary has no auxiliary columns; aux must be None")
        skipped = int((mask & ~ok).sum())
        sel = torch.nonzero(mask & ok).flatten()
        from smplfast.data.augment import undo_smpl_pose_augmentation

        canon = undo_smpl_pose_augmentation(pose[sel].double(), rot[sel], flip[sel]).float()
        return FitsUpdate(ids[sel].clone(), idx[sel].clone(), canon, betas[sel].float(), loss[sel].clone(), skipped,
                          aux[sel].clone() if self.aux_dim else None)

    def apply(self, update: FitsUpdate, rank: Optional[Tensor] = None) -> int:
        """Store canonical rows (for a repeated row: the lowest loss, ties -> lowest ``rank``, then the
        first). Returns the number of rows stored. Applying the same update twice changes nothing."""
        if len(update) == 0:
            return 0
        ids, idx = update.ds_id.to(torch.int64), update.idx.to(torch.int64)
        if bool(((ids < 0) | (ids >= len(self.names))).any()):
            raise IndexError("FitsUpdate has a dataset id outside this dictionary")
        if bool(((idx < 0) | (idx >= self._size_t[ids])).any()):
            raise IndexError("FitsUpdate has a sample index out of range")
        pose, betas, loss = update.pose.float(), update.betas.float(), update.loss.double()
        if (update.aux is None) != (self.aux_dim == 0) or (update.aux is not None and update.aux.shape[1] != self.aux_dim):
            raise ValueError(f"FitsUpdate auxiliary columns do not match this dictionary's aux_dim={self.aux_dim}")
        if not (bool(torch.isfinite(pose).all()) and bool(torch.isfinite(betas).all()) and not bool(torch.isnan(loss).any())
                and (update.aux is None or bool(torch.isfinite(update.aux).all()))):
            raise ValueError("FitsUpdate holds non-finite rows; build it with canonical_update / write")
        g = self._offset_t[ids] + idx
        rank = torch.zeros_like(g) if rank is None else rank.to(torch.int64)
        win = _stable_merge(g, loss, rank)
        gw = g[win]
        self._params[gw, :POSE_DIM] = pose[win]
        self._params[gw, POSE_DIM:FITS_DIM] = betas[win]
        if self.aux_dim:
            self._params[gw, FITS_DIM:] = update.aux.float()[win]
        self._loss[gw] = loss[win]
        self._updated[gw] = True
        return int(gw.shape[0])

    def write(self, ds, idx, rot, flip, update_mask, pose, betas, loss=None, *, names: Optional[Sequence[str]] = None,
              degrees: bool = False, aux=None) -> FitsUpdate:
        """Undo the augmentation of the rows ``update_mask`` selects and store them (canonical frame).
        Returns the stored rows as a :class:`FitsUpdate` (pass it to :meth:`sync` under DDP)."""
        upd = self.canonical_update(ds, idx, rot, flip, update_mask, pose, betas, loss, names=names, degrees=degrees,
                                    aux=aux)
        self.skipped_nonfinite += upd.skipped
        self.apply(upd)
        return upd

    # ------------------------------------------------------------------------------------- DDP
    def sync(self, updates: Union[FitsUpdate, Sequence[FitsUpdate]], group=None) -> FitsUpdate:
        """Make every rank's dictionary identical after a step.

        Each rank passes the rows it updated this step (the :class:`FitsUpdate` of :meth:`write`);
        they are all-gathered (padded to the largest count) and applied on every rank: for an index
        updated by several ranks the lowest loss wins, ties -> the lowest rank. Without an initialised
        process group this only applies the local updates. Returns the merged rows (their
        ``skipped`` is the step's total over all ranks). Re-applying rows :meth:`write` already stored
        changes nothing, so ``write`` then ``sync`` is the intended use."""
        upd = updates if isinstance(updates, FitsUpdate) else FitsUpdate.cat(updates)
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            self.apply(upd)
            return upd
        world = dist.get_world_size(group)
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        if not self._layout_checked:
            layouts = [None] * world
            dist.all_gather_object(layouts, (self.names, [self.sizes[n] for n in self.names]), group=group)
            if any(l != layouts[0] for l in layouts):
                raise RuntimeError(f"FitsDict.sync: ranks hold different datasets: {layouts}")
            self._layout_checked = True
        K = len(upd)
        width = 3 + self.width
        cols = [upd.ds_id.double()[:, None], upd.idx.double()[:, None], upd.loss.double()[:, None], upd.pose.double(),
                upd.betas.double()] + ([upd.aux.double()] if self.aux_dim else [])
        packed = torch.cat(cols, dim=1) if K else torch.zeros(0, width, dtype=torch.float64)
        counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([K], dtype=torch.int64, device=device), group=group)
        counts = [int(c.item()) for c in counts]
        kmax = max(counts)
        skipped = torch.tensor([upd.skipped], dtype=torch.int64, device=device)
        dist.all_reduce(skipped, group=group)
        if kmax == 0:
            merged = FitsUpdate.empty(self.aux_dim)
            merged.skipped = int(skipped.item())
            return merged
        buf = torch.zeros(kmax, width, dtype=torch.float64, device=device)
        buf[:K] = packed.to(device)
        gathered = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(gathered, buf, group=group)
        allrows = torch.cat([g[:c].cpu() for g, c in zip(gathered, counts)])
        ranks = torch.cat([torch.full((c,), r, dtype=torch.int64) for r, c in enumerate(counts)])
        merged = FitsUpdate(allrows[:, 0].round().to(torch.int64), allrows[:, 1].round().to(torch.int64),
                            allrows[:, 3:3 + POSE_DIM].float(), allrows[:, 3 + POSE_DIM:3 + FITS_DIM].float(),
                            allrows[:, 2].clone(), int(skipped.item()),
                            allrows[:, 3 + FITS_DIM:].float() if self.aux_dim else None)
        g = self._offset_t[merged.ds_id] + merged.idx
        win = _stable_merge(g, merged.loss, ranks)
        merged = merged.select(win)
        self.apply(merged)
        return merged

    # ----------------------------------------------------------------------------- persistence
    def save(self, directory: PathLike, extra: Optional[Mapping] = None) -> Path:
        """Write ``{ds}_fits.npy`` (N, 82) float32, ``{ds}_fits_loss.npy`` (N,) float64 and
        ``{ds}_fits_updated.npy`` (N,) bool per dataset, each atomically (temporary file, fsync,
        rename), then ``fits_meta.json`` (sizes, sha256 of every file, provenance, ``extra``).
        Call it on rank 0 only. Returns the meta file's path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": FITS_FORMAT, "fits_dim": self.width, "aux_dim": self.aux_dim, "frame": "canonical (unflipped, unrotated camera frame)",
                "loss": "mean per-keypoint SMPLify reprojection loss, virtual 224-px crop, f=5000, sigma=100",
                "datasets": {}, "saved_unix": time.time()}
        if extra:
            meta["extra"] = json.loads(json.dumps(dict(extra), default=str))
        for name in self.names:
            entry = {"num": self.sizes[name], "provenance": self.provenance.get(name, ""), "files": {}}
            for kind, arr in (("fits", self.array(name)), ("loss", self.loss(name)), ("updated", self.updated(name))):
                fname = f"{name}_fits.npy" if kind == "fits" else f"{name}_fits_{kind}.npy"
                p = d / fname
                a = np.ascontiguousarray(arr)
                _atomic_write(p, lambda f, a=a: np.save(f, a, allow_pickle=False))
                entry["files"][kind] = {"name": fname, "sha256": _sha256(p), "shape": list(a.shape), "dtype": str(a.dtype)}
            meta["datasets"][name] = entry
        text = json.dumps(meta, indent=2, sort_keys=True).encode()
        _atomic_write(d / META_NAME, lambda f: f.write(text))
        return d / META_NAME

    @classmethod
    def load(cls, directory: PathLike, sizes: Optional[Mapping[str, int]] = None) -> "FitsDict":
        """Read a directory written by :meth:`save`, verifying every file's sha256, shape and dtype
        against ``fits_meta.json`` and, when given, the expected ``sizes`` ({name: N}). Any mismatch
        raises :class:`FitsFileError`; the pose / betas must be finite."""
        d = Path(directory)
        mp = d / META_NAME
        if not mp.is_file():
            raise FitsFileError(f"{str(mp)!r} does not exist (no saved fits in {str(d)!r})")
        try:
            meta = json.loads(mp.read_text())
        except (OSError, ValueError) as exc:
            raise FitsFileError(f"{str(mp)!r} is not valid JSON: {exc}") from None
        if meta.get("format") != FITS_FORMAT:
            raise FitsFileError(f"{str(mp)!r}: format {meta.get('format')!r}, expected {FITS_FORMAT!r}")
        dsets = meta.get("datasets") or {}
        if sizes is not None:
            want = {str(k): int(v) for k, v in sizes.items()}
            have = {k: int(v["num"]) for k, v in dsets.items()}
            if want != {k: have[k] for k in want if k in have} or any(k not in have for k in want):
                raise FitsFileError(f"saved fits in {str(d)!r} have sizes {have}; the run expects {want}")
            names = list(want)
        else:
            names = list(dsets)
        aux_dim = int(meta.get("aux_dim", 0))
        if aux_dim < 0 or int(meta.get("fits_dim", FITS_DIM)) != FITS_DIM + aux_dim:
            raise FitsFileError(f"{str(mp)!r}: fits_dim {meta.get('fits_dim')} does not match {FITS_DIM} + aux_dim {aux_dim}")
        expect = {"fits": ("float32", lambda n: [n, FITS_DIM + aux_dim]), "loss": ("float64", lambda n: [n]),
                  "updated": ("bool", lambda n: [n])}
        arrays = {}
        for name in names:
            entry = dsets[name]
            n = int(entry["num"])
            got = {}
            for kind, (dtype, shape) in expect.items():
                info = entry["files"][kind]
                p = d / info["name"]
                if not p.is_file():
                    raise FitsFileError(f"fits file {str(p)!r} is missing")
                digest = _sha256(p)
                if digest != info["sha256"]:
                    raise FitsFileError(f"fits file {str(p)!r} is corrupt or was replaced: sha256 {digest} does not match "
                                        f"{info['sha256']} in {META_NAME}")
                try:
                    a = np.load(p, allow_pickle=False)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is a file error
                    raise FitsFileError(f"fits file {str(p)!r} cannot be read: {exc}") from None
                if list(a.shape) != shape(n) or str(a.dtype) != dtype:
                    raise FitsFileError(f"fits file {str(p)!r} has shape {a.shape} {a.dtype}; expected {tuple(shape(n))} {dtype}")
                got[kind] = a
            if not np.isfinite(got["fits"]).all():
                raise FitsFileError(f"fits of {name!r} in {str(d)!r} contain NaN or Inf")
            arrays[name] = got
        fd = cls({n: int(dsets[n]["num"]) for n in names}, provenance={n: dsets[n].get("provenance", "") for n in names},
                 aux_dim=aux_dim)
        for name, got in arrays.items():
            fd.array(name)[:] = got["fits"]
            fd.loss(name)[:] = got["loss"]
            fd.updated(name)[:] = got["updated"]
        return fd

    # ----------------------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def diagnostics(self, ds: str, gt_pose, gt_betas, smpl_model, rows=None, batch: int = 256,
                    threshold: float = SMPLIFY_THRESHOLD, gt_model=None, gt_gender=None,
                    per_sample: bool = False) -> dict:
        """Quality of the stored fits of ``ds`` against a (hidden) ground truth.

        ``gt_pose`` (N, 72), ``gt_betas`` (N, 10) for the whole dataset (canonical frame);
        ``smpl_model`` an ``smplfast.SMPL`` for the fits: with ``keypoints="h36m_17"`` the joints are
        SPIN's J14 (:data:`H36M_TO_J14`) and the pelvis is regressor joint 0, with ``keypoints=None``
        the 24 skeleton joints (pelvis joint 0). ``gt_model`` (default ``smpl_model``) builds the GT
        mesh; it may be ``{gender: model}`` with ``gt_gender`` (N,) per sample (the GT-gender protocol).
        ``rows`` restricts to some sample indices.

        Returns ``pa_mpjpe`` (mm), ``pve`` (mm, both meshes centred on their pelvis), ``acceptance``
        (fraction of stored losses < ``threshold``), ``updated`` (fraction of rows written), ``num``,
        ``joints`` and, with ``per_sample``, the per-sample arrays."""
        from smplfast import metrics

        N = self.sizes[self.names[self.ds_id(ds)]]
        gt_pose = np.asarray(gt_pose)
        gt_betas = np.asarray(gt_betas)
        if gt_pose.shape != (N, POSE_DIM) or gt_betas.shape != (N, BETAS_DIM):
            raise ValueError(f"diagnostics: gt_pose / gt_betas must be ({N}, {POSE_DIM}) / ({N}, {BETAS_DIM}) for "
                             f"{ds!r}; got {gt_pose.shape} / {gt_betas.shape}")
        rows_t = torch.arange(N) if rows is None else _as_index(rows, "rows")
        if bool(((rows_t < 0) | (rows_t >= N)).any()):
            raise IndexError(f"diagnostics: rows out of range for {ds!r} of {N} samples")
        if isinstance(batch, bool) or int(batch) < 1:
            raise ValueError(f"diagnostics: batch must be >= 1; got {batch}")
        conv = getattr(smpl_model, "keypoints", None)
        if conv == "h36m_17":
            sel, label = list(H36M_TO_J14), "j14"
        elif conv is None:
            sel, label = list(range(24)), "smpl_24"
        else:
            raise ValueError(f"diagnostics: smpl_model must have keypoints='h36m_17' or None; got {conv!r}")
        models = gt_model if isinstance(gt_model, Mapping) else None
        if models is not None:
            if gt_gender is None:
                raise ValueError("diagnostics: a {gender: model} gt_model needs gt_gender (N,)")
            gt_gender = np.asarray(gt_gender).astype(str)
            if gt_gender.shape != (N,):
                raise ValueError(f"diagnostics: gt_gender must be ({N},); got {gt_gender.shape}")
            unknown = sorted(set(gt_gender[rows_t.numpy()]) - set(models))
            if unknown:
                raise ValueError(f"diagnostics: no GT model for genders {unknown}")
        for m in ([smpl_model] + (list(models.values()) if models else [gt_model] if gt_model is not None else [])):
            mconv = getattr(m, "keypoints", None)
            if mconv != conv:
                raise ValueError(f"diagnostics: GT model keypoints {mconv!r} differ from the fit model's {conv!r}")
        dtype = smpl_model.v_template.dtype
        dev = smpl_model.v_template.device
        fits = self._params[self._slice(ds)]

        def run(model, pose, betas):
            out = model(global_orient=pose[:, :3].to(dev, dtype), body_pose=pose[:, 3:].to(dev, dtype),
                        betas=betas.to(dev, dtype))
            return out.vertices, out.joints

        pa, pv = [], []
        for s in range(0, rows_t.shape[0], int(batch)):
            r = rows_t[s:s + int(batch)]
            v_fit, j_fit = run(smpl_model, fits[r, :POSE_DIM], fits[r, POSE_DIM:FITS_DIM])
            gp = torch.as_tensor(gt_pose[r.numpy()], dtype=dtype)
            gb = torch.as_tensor(gt_betas[r.numpy()], dtype=dtype)
            if models is None:
                v_gt, j_gt = run(gt_model if gt_model is not None else smpl_model, gp, gb)
            else:
                v_gt = torch.empty_like(v_fit)
                j_gt = torch.empty_like(j_fit)
                g = gt_gender[r.numpy()]
                for key in np.unique(g):
                    m = torch.as_tensor(np.flatnonzero(g == key))
                    v, j = run(models[str(key)], gp[m], gb[m])
                    v_gt[m.to(dev)], j_gt[m.to(dev)] = v, j
            pa.append(metrics.pa_mpjpe(j_fit[:, sel], j_gt[:, sel]).cpu().double() * 1000.0)
            pv.append(metrics.pve(v_fit - j_fit[:, :1], v_gt - j_gt[:, :1]).cpu().double() * 1000.0)
        pa_t = torch.cat(pa) if pa else torch.zeros(0, dtype=torch.float64)
        pv_t = torch.cat(pv) if pv else torch.zeros(0, dtype=torch.float64)
        loss = self._loss[self._slice(ds)][rows_t]
        upd = self._updated[self._slice(ds)][rows_t]
        out = {
            "dataset": ds,
            "num": int(rows_t.shape[0]),
            "joints": label,
            "pa_mpjpe": float(torch.nanmean(pa_t)) if len(pa_t) else float("nan"),
            "pve": float(torch.nanmean(pv_t)) if len(pv_t) else float("nan"),
            "acceptance": float((loss < threshold).double().mean()) if len(loss) else float("nan"),
            "updated": float(upd.double().mean()) if len(upd) else float("nan"),
            "threshold": float(threshold),
        }
        if per_sample:
            out["pa_mpjpe_per_sample"] = pa_t.numpy()
            out["pve_per_sample"] = pv_t.numpy()
        return out


# -------------------------------------------------------------------------- fair fit comparison
def accept(new_loss: Tensor, old_loss: Tensor) -> Tensor:
    """SPIN's update rule with the finiteness fix: ``isfinite(new) & (new < old)`` (a NaN old loss
    never accepts; an +inf old loss accepts any finite new one)."""
    new_loss = torch.as_tensor(new_loss)
    old_loss = torch.as_tensor(old_loss, device=new_loss.device)
    if new_loss.shape != old_loss.shape:
        raise ValueError(f"accept: new_loss {tuple(new_loss.shape)} and old_loss {tuple(old_loss.shape)} differ")
    return torch.isfinite(new_loss) & (new_loss < old_loss)


def _clean_keypoints(kp: Tensor) -> Tensor:
    """Non-finite keypoints become (0, 0, conf 0), so nothing propagates."""
    bad = ~torch.isfinite(kp).all(-1, keepdim=True)
    return torch.where(bad, torch.zeros((), dtype=kp.dtype, device=kp.device), kp)


def reprojection_loss(joints: Tensor, cam_t: Tensor, keypoints_px: Tensor, focal=FIT_FOCAL, center=None,
                      sigma=SMPLIFY_SIGMA, ignored_joints: Sequence[int] = ()) -> Tensor:
    """Per-keypoint reprojection loss (B, Nk), SPIN's definition and ``SMPLify.get_fitting_loss``'s
    arithmetic: ``conf² · Σ_xy GMoF(proj − kp, σ)`` with the ``ignored_joints`` at confidence 0,
    ``proj = f (X + t)_xy / (X + t)_z + center``. ``joints`` (B, Nk, 3) without translation."""
    from smplfast.fitting.smplify import body_fitting_loss

    B = joints.shape[0]
    kp = _clean_keypoints(keypoints_px.to(joints.dtype))
    conf = kp[..., 2].clone()
    if len(ignored_joints):
        conf[:, list(ignored_joints)] = 0.0
    c = _center(center, B, joints)
    # body_pose / betas / the prior take no part in the reprojection output (only the batch size).
    return body_fitting_loss(joints.new_zeros(B, POSE_DIM - 3), None, joints, cam_t.to(joints.dtype), c, kp[..., :2],
                             conf, None, focal_length=focal, sigma=sigma, output="reprojection")


def _center(center, B: int, like: Tensor) -> Tensor:
    if center is None:
        return like.new_full((B, 2), FIT_CENTER)
    c = torch.as_tensor(center, dtype=like.dtype, device=like.device)
    if c.dim() == 0:
        return c.expand(B, 2)
    if c.shape == (2,):
        return c.expand(B, 2)
    if c.shape != (B, 2):
        raise ValueError(f"center must be a scalar, (2,) or ({B}, 2); got {tuple(c.shape)}")
    return c


def _fit_settings(smplify_or_model):
    """(ignored joints, focal, sigma) of an SMPLify, or SPIN's for an smplfast SMPL with SPIN-49 keypoints."""
    from smplfast.fitting import SMPLify
    from smplfast.fitting.camera import SPIN49_IGNORED_JOINTS

    if isinstance(smplify_or_model, SMPLify):
        f = smplify_or_model
        return list(f.ign_joints), f.focal_length, f.weights.sigma
    ign = list(SPIN49_IGNORED_JOINTS) if getattr(smplify_or_model, "keypoints", None) == "spin_49" else []
    return ign, FIT_FOCAL, SMPLIFY_SIGMA


@torch.no_grad()
def _model_joints(smplify_or_model, pose: Tensor, betas: Tensor) -> Tensor:
    """The keypoints (B, Nk, 3), without translation, of an SMPLify's model (its own evaluation, as
    ``get_fitting_loss`` does) or of an smplfast SMPL whose output joints are the keypoints."""
    from smplfast.fitting import SMPLify

    if isinstance(smplify_or_model, SMPLify):
        f = smplify_or_model
        return f.keypoints(pose.to(f.device, f.dtype), betas.to(f.device, f.dtype))
    model = smplify_or_model
    dtype = model.v_template.dtype
    return model(global_orient=pose[:, :3].to(dtype), body_pose=pose[:, 3:].to(dtype), betas=betas.to(dtype),
                 joints_only=True).joints


def refit_translation(smplify_or_model, pose: Tensor, betas: Tensor, keypoints_px: Tensor, init_t: Optional[Tensor] = None,
                      focal: Optional[float] = None, center=None, sigma: Optional[float] = None, iters: int = 5, *,
                      joints: Optional[Tensor] = None, ignored_joints: Optional[Sequence[int]] = None
                      ) -> Tuple[Tensor, Tensor]:
    """The "fair" re-evaluation of a stored fit (TRAINING_SPEC §1.6, §8 S2): the camera translation
    that minimises the same robust reprojection term SMPLify's result is judged by, body fixed.

    ``smplify_or_model``: an ``smplfast.SMPLify`` (its keypoints, ignored joints, focal length and σ
    are used) or an ``smplfast.SMPL`` with ``keypoints="spin_49"`` (SPIN's ignored joints, f = 5000,
    σ = 100); ``focal`` / ``sigma`` / ``ignored_joints`` override. ``pose`` (B, 72), ``betas``
    (B, 10), ``keypoints_px`` (B, Nk, 3) in the virtual crop's pixels with confidences; ``center``
    (default (112, 112)); ``joints`` (B, Nk, 3) skips the model evaluation when already computed.

    Starts from ``init_t`` (default: ``smplfast.fitting.estimate_translation``, SPIN's linear least
    squares on joints 25:) and runs ≤ ``iters`` damped Gauss–Newton steps on the 3 translation
    parameters with the GMoF, confidence²-weighted residuals (a step is kept only if it lowers the
    loss). Returns ``(translation (B, 3), loss (B,))`` where ``loss`` is the mean over keypoints of
    the per-keypoint loss, computed exactly as ``SMPLify.get_fitting_loss(...).mean(-1)``; it is
    never above the loss at the start (the start is kept otherwise)."""
    from smplfast.fitting.camera import estimate_translation
    from smplfast.fitting.priors import robust_residual

    if not torch.is_tensor(keypoints_px) or keypoints_px.dim() != 3 or keypoints_px.shape[-1] != 3:
        raise ValueError(f"refit_translation: keypoints_px must be (B, Nk, 3); got "
                         f"{tuple(keypoints_px.shape) if torch.is_tensor(keypoints_px) else type(keypoints_px).__name__}")
    B, Nk = keypoints_px.shape[:2]
    if not torch.is_tensor(pose) or pose.shape != (B, POSE_DIM):
        raise ValueError(f"refit_translation: pose must be ({B}, {POSE_DIM})")
    if not torch.is_tensor(betas) or betas.dim() != 2 or betas.shape[0] != B:
        raise ValueError(f"refit_translation: betas must be ({B}, nb)")
    if not (bool(torch.isfinite(pose).all()) and bool(torch.isfinite(betas).all())):
        raise ValueError("refit_translation: pose / betas contain NaN or Inf")
    if int(iters) < 0:
        raise ValueError(f"refit_translation: iters must be >= 0; got {iters}")
    ign, f0, s0 = _fit_settings(smplify_or_model)
    if joints is None:
        joints = _model_joints(smplify_or_model, pose, betas)
    else:
        if joints.shape != (B, Nk, 3):
            raise ValueError(f"refit_translation: joints must be ({B}, {Nk}, 3); got {tuple(joints.shape)}")
    if joints.shape[1] != Nk:
        raise ValueError(f"refit_translation: the model gives {joints.shape[1]} keypoints; keypoints_px has {Nk}")
    ign = list(ign if ignored_joints is None else ignored_joints)
    focal = float(f0 if focal is None else focal)
    sigma = float(s0 if sigma is None else sigma)
    joints = joints.detach()
    kp = _clean_keypoints(keypoints_px.detach().to(joints.device))
    c = _center(center, B, joints)
    if init_t is None:
        init_t = estimate_translation(joints, kp.to(joints.dtype), focal_length=focal, center=c)
    elif not torch.is_tensor(init_t) or init_t.shape != (B, 3):
        raise ValueError(f"refit_translation: init_t must be ({B}, 3)")
    init_t = init_t.detach().to(joints.device, joints.dtype)
    if not bool(torch.isfinite(init_t).all()):
        raise ValueError("refit_translation: init_t contains NaN or Inf")

    # Damped Gauss-Newton in float64 on r = conf * sqrt(GMoF(e)), e = proj - kp (2 Nk residuals, 3 unknowns).
    X = joints.double()
    uv = kp[..., :2].double()
    w = kp[..., 2].double().clone()
    if ign:
        w[:, ign] = 0.0
    cd = c.double()

    def evaluate(t):
        P = X + t[:, None]
        z = P[..., 2]
        proj = focal * P[..., :2] / z[..., None] + cd[:, None]
        e = proj - uv
        r, dr = robust_residual(e, sigma)
        f = (w[..., None] ** 2 * r * r).sum((1, 2)) / Nk
        # Points at or behind the camera make the step invalid (where they carry weight).
        bad = ((z <= 1e-6) & (w != 0)).any(1) | ~torch.isfinite(f)
        f = torch.where(bad, torch.full_like(f, math.inf), f)
        return f, e, dr, P, z

    t = init_t.double().clone()
    f_cur, e, dr, P, z = evaluate(t)
    lam = torch.full((B,), 1e-3, dtype=torch.float64, device=t.device)
    for _ in range(int(iters)):
        # de/dt: x row [f/z, 0, -f Px/z²], y row [0, f/z, -f Py/z²].
        inv_z = 1.0 / z.clamp_min(1e-6)
        jx = torch.stack([focal * inv_z, torch.zeros_like(z), -focal * P[..., 0] * inv_z ** 2], -1)
        jy = torch.stack([torch.zeros_like(z), focal * inv_z, -focal * P[..., 1] * inv_z ** 2], -1)
        wr = (w[..., None] * dr)                                          # (B, Nk, 2)
        J = torch.cat([wr[..., 0:1] * jx, wr[..., 1:2] * jy], dim=1)     # (B, 2Nk, 3)
        r, _ = robust_residual(e, sigma)
        r = torch.cat([w * r[..., 0], w * r[..., 1]], dim=1)             # (B, 2Nk)
        H = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r[..., None]).squeeze(-1)
        d = torch.diagonal(H, dim1=1, dim2=2)
        Hd = H + torch.diag_embed(lam[:, None] * d.clamp_min(1e-12))
        step, info = torch.linalg.solve_ex(Hd, -g)
        ok = (info == 0) & torch.isfinite(step).all(1) & torch.isfinite(f_cur)
        t_new = torch.where(ok[:, None], t + step, t)
        f_new, e_new, dr_new, P_new, z_new = evaluate(t_new)
        better = ok & (f_new < f_cur)
        t = torch.where(better[:, None], t_new, t)
        f_cur = torch.where(better, f_new, f_cur)
        e = torch.where(better[:, None, None], e_new, e)
        dr = torch.where(better[:, None, None], dr_new, dr)
        P = torch.where(better[:, None, None], P_new, P)
        z = torch.where(better[:, None], z_new, z)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp(1e-9, 1e9)

    # The reported loss in SMPLify's own arithmetic and dtype; never worse than the start.
    t_out = t.to(joints.dtype)
    loss0 = reprojection_loss(joints, init_t, kp, focal, c, sigma, ign).mean(-1)
    loss1 = reprojection_loss(joints, t_out, kp, focal, c, sigma, ign).mean(-1)
    keep_new = torch.isfinite(loss1) & ((loss1 <= loss0) | ~torch.isfinite(loss0))
    t_out = torch.where(keep_new[:, None], t_out, init_t)
    loss = torch.where(keep_new, loss1, loss0)
    return t_out, loss


# --------------------------------------------------------------------------------- static fits
@dataclass
class StaticFits:
    """Contents of a ``{ds}_static_fits.npz``: canonical pose (N, 72) float32, betas (N, 10) float32,
    loss (N,) float64 (mean per-keypoint reprojection loss of the fit; +inf unknown), provenance
    string and a ``meta`` dict (mode, timings, diagnostics)."""

    pose: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    provenance: str
    meta: dict = field(default_factory=dict)


def static_fits_path(directory: PathLike, name: str) -> Path:
    return Path(directory) / f"{_check_name(name)}_static_fits.npz"


def write_static_fits(path: PathLike, pose, betas, loss, provenance: str, meta: Optional[Mapping] = None) -> Path:
    """Write a static-fits file atomically (keys ``pose``, ``betas``, ``loss``, ``provenance``,
    ``meta`` (JSON text), ``format``). ``path`` is the file, or a directory together with
    ``meta['dataset']``. Pose / betas must be finite; the loss may be +inf, never NaN."""
    p = Path(path)
    if p.is_dir() or p.suffix != ".npz":
        if not meta or "dataset" not in meta:
            raise ValueError("write_static_fits: give a file path ending in _static_fits.npz, or a directory and "
                             "meta={'dataset': name}")
        p = static_fits_path(p, meta["dataset"])
    if not p.name.endswith("_static_fits.npz"):
        raise ValueError(f"write_static_fits: the file must be named {{dataset}}_static_fits.npz; got {p.name!r}")
    pose = np.ascontiguousarray(np.asarray(pose, dtype=np.float32))
    betas = np.ascontiguousarray(np.asarray(betas, dtype=np.float32))
    loss = np.ascontiguousarray(np.asarray(loss, dtype=np.float64))
    N = pose.shape[0] if pose.ndim == 2 else -1
    if pose.shape != (N, POSE_DIM) or N < 1:
        raise ValueError(f"write_static_fits: pose must be (N, {POSE_DIM}) with N >= 1; got {pose.shape}")
    if betas.shape != (N, BETAS_DIM) or loss.shape != (N,):
        raise ValueError(f"write_static_fits: betas must be ({N}, {BETAS_DIM}) and loss ({N},); got {betas.shape}, {loss.shape}")
    if not (np.isfinite(pose).all() and np.isfinite(betas).all()) or np.isnan(loss).any():
        raise ValueError("write_static_fits: pose / betas must be finite and loss not NaN")
    meta_text = json.dumps(dict(meta or {}), default=str, sort_keys=True)
    arrays = dict(pose=pose, betas=betas, loss=loss, provenance=np.asarray(str(provenance)),
                  meta=np.asarray(meta_text), format=np.asarray(STATIC_FORMAT))
    _atomic_write(p, lambda f: np.savez(f, **arrays))
    return p


def read_static_fits(path: PathLike, expected_size: Optional[int] = None) -> StaticFits:
    """Read and check a static-fits file: keys, shapes, finiteness and, when given, the number of
    samples. Raises :class:`FitsFileError` naming the problem."""
    p = Path(path)
    if not p.is_file():
        raise FitsFileError(f"static fits {str(p)!r} do not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is a file error
        raise FitsFileError(f"static fits {str(p)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    missing = [k for k in ("pose", "betas", "loss", "provenance") if k not in data]
    if missing:
        raise FitsFileError(f"static fits {str(p)!r} lack {missing}")
    if "format" in data and str(data["format"]) != STATIC_FORMAT:
        raise FitsFileError(f"static fits {str(p)!r}: format {str(data['format'])!r}, expected {STATIC_FORMAT!r}")
    pose, betas, loss = data["pose"], data["betas"], data["loss"]
    N = pose.shape[0] if pose.ndim == 2 else -1
    if pose.shape != (N, POSE_DIM) or betas.shape != (N, BETAS_DIM) or loss.shape != (N,):
        raise FitsFileError(f"static fits {str(p)!r}: shapes pose {pose.shape}, betas {betas.shape}, loss {loss.shape}; "
                            f"expected (N, {POSE_DIM}), (N, {BETAS_DIM}), (N,)")
    if expected_size is not None and N != int(expected_size):
        raise FitsFileError(f"static fits {str(p)!r} hold {N} samples; the dataset has {int(expected_size)}")
    if not (np.isfinite(pose).all() and np.isfinite(betas).all()) or np.isnan(loss).any():
        raise FitsFileError(f"static fits {str(p)!r} contain NaN / Inf pose or betas, or NaN losses")
    meta = {}
    if "meta" in data:
        try:
            meta = json.loads(str(data["meta"]))
        except ValueError:
            raise FitsFileError(f"static fits {str(p)!r}: meta is not valid JSON") from None
    return StaticFits(pose.astype(np.float32), betas.astype(np.float32), loss.astype(np.float64), str(data["provenance"]), meta)


def fit_keypoints_px(openpose, part, center, scale, res: int = FIT_RES) -> np.ndarray:
    """SPIN's 49 SMPLify keypoints of each sample in its virtual ``res``-px crop: ``openpose``
    (N, 25, 3) detections with confidences then ``part`` (N, 24, 3) annotations with visibility,
    mapped by SPIN's box crop (:func:`smplfast.data.crop.crop_matrix` of ``center`` (N, 2) and
    ``scale`` (N,), no augmentation); confidences kept. Equals ``res/2 · (kp_norm + 1)`` of the
    dataset's normalised keypoints. Returns (N, 49, 3) float64."""
    from smplfast.data.crop import crop_matrix

    op, pt = np.asarray(openpose, dtype=np.float64), np.asarray(part, dtype=np.float64)
    N = op.shape[0]
    if op.shape != (N, 25, 3) or pt.shape != (N, 24, 3):
        raise ValueError(f"fit_keypoints_px: openpose must be (N, 25, 3) and part (N, 24, 3); got {op.shape}, {pt.shape}")
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if center.shape != (N, 2) or scale.shape != (N,):
        raise ValueError(f"fit_keypoints_px: center must be ({N}, 2) and scale ({N},); got {center.shape}, {scale.shape}")
    M = np.stack([crop_matrix(center[i], scale[i], res) for i in range(N)]) if N else np.zeros((0, 3, 3))
    kp = np.concatenate([op, pt], axis=1)
    out = kp.copy()
    out[..., :2] = np.einsum("nij,nkj->nki", M[:, :2, :2], kp[..., :2]) + M[:, None, :2, 2]
    return out


@dataclass
class StaticFitResult:
    """Fits in the canonical frame: pose (N, 72), betas (N, 10), cam_t (N, 3) in the virtual crop's
    camera, loss (N,) float64 (mean per-keypoint reprojection loss), seconds (wall time)."""

    pose: Tensor
    betas: Tensor
    cam_t: Tensor
    loss: Tensor
    seconds: float


def _fitter(smplify, mode: str, pose_prior):
    from smplfast.fitting import SMPLify

    if smplify is not None:
        if smplify.mode != mode:
            raise ValueError(f"this fit needs SMPLify(mode={mode!r}); got mode {smplify.mode!r}")
        return smplify
    return SMPLify(mode=mode, pose_prior=pose_prior)


def _check_kp(keypoints_px, fitter) -> Tensor:
    kp = torch.as_tensor(np.asarray(keypoints_px) if not torch.is_tensor(keypoints_px) else keypoints_px)
    if kp.dim() != 3 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints_px must be (N, Nk, 3); got {tuple(kp.shape)}")
    return kp.to(fitter.device, fitter.dtype)


def static_fits_from_init(init_pose, init_betas, init_cam_t, keypoints_px, smplify=None, center=FIT_CENTER,
                          batch: int = 256, pose_prior=None, mode: str = "spin") -> StaticFitResult:
    """SMPLify (``mode="spin"``: camera stage, then body stage) from any initialisation, e.g. a
    network's predictions: ``init_pose`` (N, 72) canonical frame, ``init_betas`` (N, 10),
    ``init_cam_t`` (N, 3) in the virtual crop's camera (``weak_perspective_to_translation(cam,
    5000, 224)``), ``keypoints_px`` (N, 49, 3) from :func:`fit_keypoints_px`. Processed in chunks
    of ``batch``; the loss is SMPLify's ``reprojection_loss.mean(-1)`` at its optimised camera."""
    f = _fitter(smplify, mode, pose_prior)
    kp = _check_kp(keypoints_px, f)
    N = kp.shape[0]
    arrs = []
    for name, a, w in (("init_pose", init_pose, POSE_DIM), ("init_betas", init_betas, BETAS_DIM), ("init_cam_t", init_cam_t, 3)):
        t = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a)
        if t.shape != (N, w):
            raise ValueError(f"static_fits_from_init: {name} must be ({N}, {w}); got {tuple(t.shape)}")
        t = t.to(f.device, f.dtype)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"static_fits_from_init: {name} contains NaN or Inf")
        arrs.append(t)
    return _run_chunks(f, kp, center, batch, lambda sl: (arrs[0][sl], arrs[1][sl], arrs[2][sl]))


def _run_chunks(f, kp, center, batch, init) -> StaticFitResult:
    if isinstance(batch, bool) or int(batch) < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    N = kp.shape[0]
    t0 = time.perf_counter()
    out = {k: [] for k in ("pose", "betas", "cam_t", "loss")}
    for s in range(0, N, int(batch)):
        sl = slice(s, min(N, s + int(batch)))
        c = _center(center, sl.stop - sl.start, kp)
        p, b, t = init(sl)
        r = f.fit(p, b, t, c, kp[sl])
        out["pose"].append(r.pose)
        out["betas"].append(r.betas)
        out["cam_t"].append(r.camera_translation)
        out["loss"].append(r.reprojection_loss.mean(-1).double())
    return StaticFitResult(*(torch.cat(out[k]) for k in ("pose", "betas", "cam_t", "loss")), time.perf_counter() - t0)


#: Global orientations tried by :func:`static_fits_mean`: upright facing the (y-down) camera, and
#: upright facing away from it.
MEAN_ORIENTATIONS = ((math.pi, 0.0, 0.0), (0.0, 0.0, math.pi))


def static_fits_mean(keypoints_px, smplify=None, center=FIT_CENTER, batch: int = 256, pose_prior=None,
                     orientations: Sequence[Sequence[float]] = MEAN_ORIENTATIONS) -> StaticFitResult:
    """SPIN Sup.Mat.'s first approach: ``SMPLify(mode="smplify4")`` (the original 4-stage schedule)
    from the pose prior's mean body pose, zero shape and a similar-triangles camera, once per global
    orientation in ``orientations`` (as the original SMPLify tries the body facing the camera and
    facing away); per sample the fit with the lower mean reprojection loss is kept."""
    f = _fitter(smplify, "smplify4", pose_prior)
    kp = _check_kp(keypoints_px, f)
    if not len(orientations):
        raise ValueError("static_fits_mean: orientations must not be empty")
    mean_body = (f.pose_prior.weights.flatten() @ f.pose_prior.means).to(f.device, f.dtype)
    best = None
    t0 = time.perf_counter()
    for go in orientations:
        go_t = torch.as_tensor(go, dtype=f.dtype, device=f.device)
        if go_t.shape != (3,):
            raise ValueError(f"static_fits_mean: orientations must be axis-angle triples; got {go}")

        def init(sl, go_t=go_t):
            n = sl.stop - sl.start
            p = torch.cat([go_t.expand(n, 3), mean_body.expand(n, POSE_DIM - 3)], 1)
            return p, torch.zeros(n, f.num_betas, dtype=f.dtype, device=f.device), None

        r = _run_chunks(f, kp, center, batch, init)
        if best is None:
            best = r
        else:
            take = r.loss < best.loss
            best = StaticFitResult(torch.where(take[:, None], r.pose, best.pose), torch.where(take[:, None], r.betas, best.betas),
                                   torch.where(take[:, None], r.cam_t, best.cam_t), torch.where(take, r.loss, best.loss), 0.0)
    best.seconds = time.perf_counter() - t0
    return best


def static_fits_gt(gt_pose, gt_betas, keypoints_px, smplify_or_model=None, center=FIT_CENTER, batch: int = 1024
                   ) -> StaticFitResult:
    """Oracle static fits: the ground-truth pose and betas themselves (canonical frame), with the
    loss and camera of :func:`refit_translation` (the same robust reprojection term an in-loop fit
    is compared with)."""
    if smplify_or_model is None:
        from smplfast.fitting import SMPLify

        smplify_or_model = SMPLify()
    pose = torch.as_tensor(np.asarray(gt_pose, dtype=np.float32) if not torch.is_tensor(gt_pose) else gt_pose).float()
    betas = torch.as_tensor(np.asarray(gt_betas, dtype=np.float32) if not torch.is_tensor(gt_betas) else gt_betas).float()
    kp = torch.as_tensor(np.asarray(keypoints_px) if not torch.is_tensor(keypoints_px) else keypoints_px).float()
    N = kp.shape[0]
    if pose.shape != (N, POSE_DIM) or betas.shape != (N, BETAS_DIM):
        raise ValueError(f"static_fits_gt: gt_pose / gt_betas must be ({N}, {POSE_DIM}) / ({N}, {BETAS_DIM})")
    t0 = time.perf_counter()
    ts, ls = [], []
    for s in range(0, N, int(batch)):
        sl = slice(s, min(N, s + int(batch)))
        t, l = refit_translation(smplify_or_model, pose[sl], betas[sl], kp[sl], center=_center(center, sl.stop - sl.start, kp))
        ts.append(t)
        ls.append(l.double())
    return StaticFitResult(pose, betas, torch.cat(ts) if ts else torch.zeros(0, 3), torch.cat(ls) if ls else torch.zeros(0, dtype=torch.float64),
                           time.perf_counter() - t0)
