"""Reading, checking and writing SMPL-family body model files.

Two on-disk formats are understood:

* ``.pkl`` -- the format of the official SMPL releases: a (usually Python 2)
  pickle of a dict.  Official files hold ``chumpy`` objects (e.g. ``shapedirs``
  is a ``chumpy.ch.Ch``) and ``scipy.sparse`` CSC matrices (``J_regressor``,
  ``J_regressor_prior``).  They are read with the restricted unpickler of
  :mod:`smplfast.body.safe_pickle`: its globals are inert placeholders that only
  record their arguments and BUILD state, so no numpy object is built while the
  pickle is read.  Arrays are built afterwards from the raw bytes, with
  whitelisted numeric dtypes, checked shapes and a byte budget checked before
  anything is allocated; chumpy / scipy.sparse objects are read from their
  recorded state, so neither chumpy nor scipy is needed and a model file cannot
  run code.
* ``.npz`` -- a numpy archive with one array per key (read without pickle).

Everything is converted to float64 / int64 numpy arrays that use SMPL's key
names and layout, and checked by :func:`validate_model`.
"""

from __future__ import annotations

import os
import pickle
import warnings
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

import numpy as np

from . import safe_pickle

__all__ = [
    "ModelData",
    "ModelFileError",
    "ModelFileNotFoundError",
    "REQUIRED_KEYS",
    "GENDERS",
    "SUFFIXES",
    "load_model",
    "resolve_model_path",
    "save_model",
    "validate_model",
]

#: Keys every model file must provide (SMPL's names).
REQUIRED_KEYS: Tuple[str, ...] = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
    "f",
)
_FLOAT_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights")
_INT_KEYS = ("kintree_table", "f")

#: Genders understood when a directory is given to :func:`load_model`.
GENDERS: Tuple[str, ...] = ("neutral", "male", "female")
#: File suffixes understood by :func:`load_model` and :func:`save_model`.
SUFFIXES: Tuple[str, ...] = (".pkl", ".npz")

#: Value stored in ``kintree_table[0, 0]`` by the official files.
ROOT_SENTINEL = 4294967295

_WEIGHT_SUM_TOL = 1e-4
_WEIGHT_NEG_TOL = -1e-6


class ModelFileError(ValueError):
    """A body model file could not be read, or its contents are not a valid model."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """The body model file does not exist."""


# ---------------------------------------------------------------------------
# The in-memory model
# ---------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class ModelData:
    """An SMPL-family body model as plain numpy arrays (SMPL's key names and conventions).

    Shapes (``V`` vertices, ``J`` joints, ``S`` shape coefficients,
    ``P = 9 * (J - 1)`` pose features, ``F`` faces)::

        v_template     (V, 3)      float64
        shapedirs      (V, 3, S)   float64
        posedirs       (V, 3, P)   float64
        J_regressor    (J, V)      float64, dense
        weights        (V, J)      float64
        kintree_table  (2, J)      int64; row 0 = parent ids (the root's entry is a
                                   sentinel such as 4294967295 or -1), row 1 = joint ids
        f              (F, 3)      int64

    Arrays are converted to float64 / int64 on construction (scipy sparse
    matrices are densified).  The attribute names match what ``smplx`` reads,
    so an instance can be passed to ``smplx.SMPL(data_struct=...)``.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    kintree_table: np.ndarray
    f: np.ndarray
    source: str = "<memory>"
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source = str(self.source)
        if self.extras is None:
            self.extras = {}
        _normalize_arrays(self)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.kintree_table.shape[-1])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1]) if self.shapedirs.ndim == 3 else 0

    @property
    def num_pose_features(self) -> int:
        return int(self.posedirs.shape[-1]) if self.posedirs.ndim == 3 else 0

    @property
    def num_faces(self) -> int:
        return int(self.f.shape[0])

    @property
    def parents(self) -> np.ndarray:
        """Parent id of every joint (int64), ``-1`` for the root."""
        row = np.array(self.kintree_table[0], dtype=np.int64, copy=True)
        n = row.shape[0]
        bad = (row < 0) | (row >= n)
        if n:
            bad[0] = True
        row[bad] = -1
        return row

    def arrays(self) -> Dict[str, np.ndarray]:
        """The seven required arrays as a dict keyed by SMPL's names."""
        return {k: getattr(self, k) for k in REQUIRED_KEYS}

    def __repr__(self) -> str:
        def shape(a: Any) -> Any:
            return tuple(getattr(a, "shape", ()))

        return (
            f"ModelData(source={self.source!r}, v_template={shape(self.v_template)}, "
            f"shapedirs={shape(self.shapedirs)}, posedirs={shape(self.posedirs)}, "
            f"J_regressor={shape(self.J_regressor)}, weights={shape(self.weights)}, "
            f"kintree_table={shape(self.kintree_table)}, f={shape(self.f)}, "
            f"extras={sorted(self.extras)})"
        )


def _where(source: str) -> str:
    return f"model {source!r}"


def _to_dense(value: Any, key: str, source: str) -> Any:
    """Turn sparse matrices (ours or scipy's) and chumpy placeholders into numpy."""
    if safe_pickle.is_record(value):
        return _materialize(value, key, source)
    if hasattr(value, "toarray") and callable(getattr(value, "toarray")) and hasattr(value, "nnz"):
        # A real scipy.sparse matrix / array built in memory.
        try:
            return value.toarray()
        except Exception as exc:  # pragma: no cover - defensive
            raise ModelFileError(f"{_where(source)}: {key}: cannot densify sparse matrix: {exc}") from exc
    return value


def _numeric_array(value: Any, key: str, source: str, what: str) -> np.ndarray:
    """`value` (dense or sparse) as a numeric numpy array, or a ModelFileError naming `key`."""
    value = _to_dense(value, key, source)
    try:
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"dtype {arr.dtype} is not numeric")
    except Exception as exc:
        raise ModelFileError(
            f"{_where(source)}: {key} must be {what}, got {type(value).__name__} ({exc})"
        ) from exc
    return arr


def _as_float_array(value: Any, key: str, source: str) -> np.ndarray:
    return np.ascontiguousarray(_numeric_array(value, key, source, "a numeric array"), dtype=np.float64)


def _as_int_array(value: Any, key: str, source: str) -> np.ndarray:
    arr = _numeric_array(value, key, source, "an integer array")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            idx = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise ModelFileError(
                f"{_where(source)}: {key} contains {arr[idx]} at index {idx}; it must hold integers"
            )
        if arr.size and not np.array_equal(arr, np.round(arr)):
            idx = tuple(int(i) for i in np.argwhere(arr != np.round(arr))[0])
            raise ModelFileError(
                f"{_where(source)}: {key} must hold integers, found {arr[idx]} at index {idx}"
            )
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ModelFileError(f"{_where(source)}: {key} holds values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _normalize_arrays(model: ModelData) -> None:
    for key in _FLOAT_KEYS:
        setattr(model, key, _as_float_array(getattr(model, key), key, model.source))
    for key in _INT_KEYS:
        setattr(model, key, _as_int_array(getattr(model, key), key, model.source))


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _fmt_shape(shape: Iterable[Any]) -> str:
    parts = [str(s) for s in shape]
    if len(parts) == 1:
        return f"({parts[0]},)"
    return "(" + ", ".join(parts) + ")"


def validate_model(model: ModelData) -> ModelData:
    """Check that ``model`` is a consistent SMPL-format model.

    Arrays are converted to float64 / int64 in place first.  Returns ``model``;
    raises :class:`ModelFileError` naming the file (``model.source``), the key,
    and the expected and actual shapes when something is wrong.
    """
    if not isinstance(model, ModelData):
        raise ModelFileError(f"expected a ModelData, got {type(model).__name__}")
    _normalize_arrays(model)
    src = _where(model.source)

    vt = model.v_template
    if vt.ndim != 2 or vt.shape[1] != 3:
        raise ModelFileError(
            f"{src}: expected v_template of shape (V, 3), got {_fmt_shape(vt.shape)}"
        )
    V = vt.shape[0]
    if V < 1:
        raise ModelFileError(f"{src}: v_template has no vertices (expected shape (V, 3) with V >= 1, got {_fmt_shape(vt.shape)})")

    kt = model.kintree_table
    if kt.ndim != 2 or kt.shape[0] != 2:
        raise ModelFileError(
            f"{src}: expected kintree_table of shape (2, J), got {_fmt_shape(kt.shape)}"
        )
    J = kt.shape[1]
    if J < 1:
        raise ModelFileError(f"{src}: kintree_table has no joints (expected shape (2, J) with J >= 1, got {_fmt_shape(kt.shape)})")

    def check_vertices(key: str, arr: np.ndarray, expected: str, ndim: int) -> None:
        if arr.ndim != ndim:
            raise ModelFileError(
                f"{src}: expected {key} of shape {expected}, got {_fmt_shape(arr.shape)}"
            )
        if arr.shape[0] != V:
            raise ModelFileError(
                f"{src}: {key} has {arr.shape[0]} vertices but v_template has {V} "
                f"(expected {key} of shape {expected}, got {_fmt_shape(arr.shape)})"
            )

    sd = model.shapedirs
    check_vertices("shapedirs", sd, f"({V}, 3, S)", 3)
    if sd.shape[1] != 3 or sd.shape[2] < 1:
        raise ModelFileError(
            f"{src}: expected shapedirs of shape ({V}, 3, S) with S >= 1, got {_fmt_shape(sd.shape)}"
        )

    P = 9 * (J - 1)
    pd = model.posedirs
    pd_expected = f"({V}, 3, {P})"
    if pd.ndim == 2 and pd.shape == (P, V * 3):
        raise ModelFileError(
            f"{src}: expected posedirs of shape {pd_expected}, got {_fmt_shape(pd.shape)} "
            f"(this looks like the flattened (P, V*3) layout; store posedirs as (V, 3, P))"
        )
    check_vertices("posedirs", pd, pd_expected, 3)
    if pd.shape[1] != 3:
        raise ModelFileError(
            f"{src}: expected posedirs of shape {pd_expected}, got {_fmt_shape(pd.shape)}"
        )
    if pd.shape[2] != P:
        raise ModelFileError(
            f"{src}: posedirs has {pd.shape[2]} pose features but kintree_table has {J} joints, "
            f"which needs 9 * ({J} - 1) = {P} (expected posedirs of shape {pd_expected}, "
            f"got {_fmt_shape(pd.shape)})"
        )

    jr = model.J_regressor
    jr_expected = f"({J}, {V})"
    if jr.ndim != 2:
        raise ModelFileError(f"{src}: expected J_regressor of shape {jr_expected}, got {_fmt_shape(jr.shape)}")
    if jr.shape[0] != J:
        raise ModelFileError(
            f"{src}: J_regressor has {jr.shape[0]} joints but kintree_table has {J} "
            f"(expected J_regressor of shape {jr_expected}, got {_fmt_shape(jr.shape)})"
        )
    if jr.shape[1] != V:
        raise ModelFileError(
            f"{src}: J_regressor has {jr.shape[1]} vertices but v_template has {V} "
            f"(expected J_regressor of shape {jr_expected}, got {_fmt_shape(jr.shape)})"
        )

    w = model.weights
    w_expected = f"({V}, {J})"
    check_vertices("weights", w, w_expected, 2)
    if w.shape[1] != J:
        raise ModelFileError(
            f"{src}: weights has {w.shape[1]} joints but kintree_table has {J} "
            f"(expected weights of shape {w_expected}, got {_fmt_shape(w.shape)})"
        )

    f = model.f
    if f.ndim != 2 or f.shape[1] != 3:
        raise ModelFileError(f"{src}: expected f of shape (F, 3), got {_fmt_shape(f.shape)}")
    if f.shape[0] < 1:
        raise ModelFileError(f"{src}: f has no faces (expected shape (F, 3) with F >= 1, got {_fmt_shape(f.shape)})")

    # Non-finite values.
    for key in _FLOAT_KEYS:
        arr = getattr(model, key)
        finite = np.isfinite(arr)
        if not finite.all():
            idx = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise ModelFileError(
                f"{src}: {key} contains {arr[idx]} (NaN or Inf) at index {idx}; "
                f"{key} has shape {_fmt_shape(arr.shape)}"
            )

    # Faces.
    bad = (f < 0) | (f >= V)
    if bad.any():
        fi, ci = (int(i) for i in np.argwhere(bad)[0])
        raise ModelFileError(
            f"{src}: f[{fi}] = {f[fi].tolist()} has vertex index {int(f[fi, ci])} outside [0, {V}) "
            f"(v_template has {V} vertices; f has shape {_fmt_shape(f.shape)})"
        )

    # Kinematic tree.
    ids = kt[1]
    if not np.array_equal(ids, np.arange(J)):
        first = int(np.argmax(ids != np.arange(J)))
        raise ModelFileError(
            f"{src}: kintree_table row 1 must be the joint ids 0..{J - 1} in order "
            f"(np.arange({J})), but column {first} holds {int(ids[first])}"
        )
    par = kt[0]
    for j in range(1, J):
        p = int(par[j])
        if p < 0 or p >= J:
            raise ModelFileError(
                f"{src}: kintree_table is not a tree: joint {j} has parent {p}, which is not a joint id "
                f"in [0, {J}) (only joint 0 may be the root)"
            )
        if p >= j:
            raise ModelFileError(
                f"{src}: kintree_table is not a tree: joint {j} has parent {p} "
                f"(parents must come before children)"
            )
    root = int(par[0])
    if 0 <= root < J:
        raise ModelFileError(
            f"{src}: kintree_table is not a tree: the root joint 0 has parent {root}; "
            f"its entry must be a sentinel outside [0, {J}) such as {ROOT_SENTINEL} or -1"
        )

    # Skinning weights.
    if w.size:
        neg = w < _WEIGHT_NEG_TOL
        if neg.any():
            vi, ji = np.unravel_index(int(np.argmin(w)), w.shape)
            raise ModelFileError(
                f"{src}: weights must be non-negative, but weights[{int(vi)}, {int(ji)}] = {w[vi, ji]:.6g}"
            )
        sums = w.sum(axis=1)
        err = np.abs(sums - 1.0)
        worst = int(np.argmax(err))
        if err[worst] > _WEIGHT_SUM_TOL:
            raise ModelFileError(
                f"{src}: weights rows must sum to 1 (within {_WEIGHT_SUM_TOL:g}), "
                f"but row {worst} sums to {sums[worst]:.6g}"
            )
    return model


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def _load_pickle(path: Path) -> dict:
    """A model pickle as a dict of inert records (see :mod:`.safe_pickle`); ModelFileError if refused."""
    try:
        return safe_pickle.load_records(path)
    except safe_pickle.SafePickleError as exc:
        raise ModelFileError(str(exc)) from None


def _materialize(value: Any, key: str, source: str, materializer: Any = None) -> Any:
    """Records of a loaded pickle as numpy arrays (one Materializer per file); ModelFileError if refused."""
    try:
        if materializer is None:
            materializer = safe_pickle.Materializer(source)
        return materializer(value, key)
    except safe_pickle.SafePickleError as exc:
        raise ModelFileError(str(exc)) from None


def _load_npz(path: Path) -> dict:
    src = _where(str(path))
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ModelFileError(f"{src}: not a valid .npz archive ({exc})") from None
    except Exception as exc:
        raise ModelFileError(
            f"{src}: not a valid .npz archive (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelFileError(f"{src}: expected a .npz archive of arrays, found a single .npy array")
    out: Dict[str, Any] = {}
    skipped: list = []
    try:
        with npz:
            for name in npz.files:
                try:
                    out[name] = npz[name]
                except ValueError as exc:
                    if ("allow_pickle" in str(exc) or "Object arrays" in str(exc)) and name not in REQUIRED_KEYS:
                        # Extras the body model does not use (SMPL-X files carry some as object arrays):
                        # skipped without unpickling, and said so.
                        skipped.append(name)
                        continue
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise ModelFileError(
                            f"{src}: {name} is an object array that needs pickle to load; "
                            f"refusing (store plain numeric arrays)"
                        ) from None
                    raise
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"{src}: not a valid .npz archive (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from None
    if skipped:
        warnings.warn(f"{src}: skipped the object arrays {skipped} (they need pickle to load and are not model keys)")
    return out


#: Declared shapes checked before any array is built: key -> (ndim, {axis: size}, layout).
_EXPECTED_LAYOUT = {
    "v_template": (2, {1: 3}, "(V, 3)"),
    "f": (2, {1: 3}, "(F, 3)"),
    "kintree_table": (2, {0: 2}, "(2, J)"),
    "weights": (2, {}, "(V, J)"),
    "J_regressor": (2, {}, "(J, V)"),
}


def _precheck_shapes(data: dict, source: str) -> None:
    """Compare the shapes a pickle declares for known keys with SMPL's layout (nothing is allocated)."""
    for key, (ndim, fixed, layout) in _EXPECTED_LAYOUT.items():
        try:
            shape = safe_pickle.declared_shape(data.get(key))
        except safe_pickle.SafePickleError as exc:
            raise ModelFileError(f"{_where(source)}: {key}: {exc}") from None
        if shape is None:
            continue
        if len(shape) != ndim or any(shape[ax] != size for ax, size in fixed.items()):
            raise ModelFileError(
                f"{_where(source)}: expected {key} of shape {layout}, got {_fmt_shape(shape)}"
            )


def _model_from_dict(raw: dict, source: str) -> ModelData:
    data: Dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(k, bytes):
            k = k.decode("latin1")
        data[str(k)] = v
    _precheck_shapes(data, source)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ModelFileError(
            f"{_where(source)}: missing required key {missing[0]!r}"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; keys found: {sorted(data)}"
        )
    materializer = safe_pickle.Materializer(source)  # shared memo and byte budget for the whole file
    required = {k: _materialize(data[k], k, source, materializer) for k in REQUIRED_KEYS}
    extras: Dict[str, Any] = {}
    for k, v in data.items():
        if k in required:
            continue
        try:
            extras[k] = _materialize(v, k, source, materializer)
        except ModelFileError:
            # Unused extra that cannot be turned into numpy: recorded as unreadable.
            extras[k] = None
    return ModelData(source=source, extras=extras, **required)


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _check_gender(gender: Any) -> str:
    if not isinstance(gender, str) or gender.lower() not in GENDERS:
        raise ModelFileError(
            f"unknown gender {gender!r}; expected one of {', '.join(GENDERS)} (case-insensitive)"
        )
    return gender.lower()


def _check_suffix(suffix: str, what: str) -> str:
    s = suffix.lower()
    if s not in SUFFIXES:
        shown = suffix if suffix else "(none)"
        raise ModelFileError(
            f"{what}: unsupported file suffix {shown!r}; accepted suffixes: {', '.join(SUFFIXES)}"
        )
    return s


def resolve_model_path(path: Any, gender: str = "neutral", ext: str = "pkl") -> Path:
    """Return the model file ``load_model`` would read for these arguments.

    A directory resolves like smplx: ``<dir>/SMPL_<GENDER>.<ext>``.
    """
    gender = _check_gender(gender)
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        e = str(ext).lower().lstrip(".")
        _check_suffix("." + e, f"ext={ext!r}")
        p = p / f"SMPL_{gender.upper()}.{e}"
    return p


def load_model(path: Any, gender: str = "neutral", ext: str = "pkl") -> ModelData:
    """Load and validate an SMPL-format body model.

    ``path`` is a ``.pkl`` or ``.npz`` file, or a directory holding
    ``SMPL_{GENDER}.{ext}`` (``gender`` is neutral / male / female, any case).
    Raises :class:`ModelFileError` (or :class:`ModelFileNotFoundError`) on any
    problem.  Loading never imports chumpy or scipy and never runs code from
    the file.
    """
    given = Path(os.fspath(path)).expanduser()
    file = resolve_model_path(given, gender, ext)
    if not file.is_file():
        if given.is_dir():
            found = sorted(q.name for q in given.iterdir() if q.name.upper().startswith("SMPL"))
            hint = f"; files there: {found}" if found else ""
            raise ModelFileNotFoundError(
                f"no {gender.lower()} model in directory {str(given)!r}: {str(file)!r} does not exist{hint}"
            )
        if file.exists():
            raise ModelFileError(f"model path {str(file)!r} is not a regular file")
        raise ModelFileNotFoundError(f"model file {str(file)!r} does not exist")
    suffix = _check_suffix(file.suffix, f"model file {str(file)!r}")
    raw = _load_pickle(file) if suffix == ".pkl" else _load_npz(file)
    model = _model_from_dict(raw, str(file))
    return validate_model(model)


def save_model(model: ModelData, path: Any) -> Path:
    """Validate ``model`` and write it to ``path`` (``.npz`` or ``.pkl``) atomically.

    ``.pkl`` files hold a plain dict of numpy arrays (pickle protocol 2, dense
    ``J_regressor``) that ``smplx.SMPL(model_path=...)`` and :func:`load_model`
    both read.  Parent directories are created.  Returns the path written.
    """
    p = Path(os.fspath(path)).expanduser()
    suffix = _check_suffix(p.suffix, f"cannot save model to {str(p)!r}")
    validate_model(model)
    arrays = {k: np.ascontiguousarray(v) for k, v in model.arrays().items()}

    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        try:
            os.chmod(tmp, (p.stat().st_mode & 0o7777) if p.exists() else 0o644)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as fh:
            if suffix == ".npz":
                np.savez(fh, **arrays)
            else:
                pickle.dump(arrays, fh, protocol=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p
