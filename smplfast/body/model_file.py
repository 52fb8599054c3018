"""Reading, checking and writing SMPL-family body model files.

Two on-disk formats are understood:

* ``.pkl`` -- the format of the official SMPL releases: a (usually Python 2)
  pickle of a dict.  Official files hold ``chumpy`` objects (e.g. ``shapedirs``
  is a ``chumpy.ch.Ch``) and ``scipy.sparse`` CSC matrices (``J_regressor``,
  ``J_regressor_prior``).  They are read with a restricted unpickler that only
  rebuilds numpy arrays, plain containers and inert placeholder objects for the
  chumpy / scipy.sparse classes, so neither chumpy nor scipy is needed and a
  model file cannot run code.
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
# Refuse to densify sparse matrices larger than this many entries.
_MAX_DENSE_ENTRIES = 2_000_000_000


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
    if isinstance(value, (_SparseStub, _ChumpyStub)):
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
# Restricted unpickling
# ---------------------------------------------------------------------------


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _BadPayload(pickle.UnpicklingError):
    pass


class _Sealed(type):
    """Metaclass whose classes cannot be modified (a pickle could try BUILD on them)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"{cls.__name__} is read-only")

    def __delattr__(cls, name: str) -> None:
        raise TypeError(f"{cls.__name__} is read-only")


class _Stub(metaclass=_Sealed):
    """Inert placeholder for an object of a foreign class found in a model pickle.

    It only records the state the pickle hands it; converting that state to
    numpy happens after loading, in :func:`_materialize`.
    """

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        obj = object.__new__(cls)
        object.__setattr__(obj, "_state", None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "_state_attrs", {**self.__dict__.get("_state_attrs", {}), name: value})

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            d, slots = state
            merged: Dict[Any, Any] = {}
            if isinstance(d, dict):
                merged.update(d)
            if isinstance(slots, dict):
                merged.update(slots)
            state = merged
        object.__setattr__(self, "_state", state)


class _ChumpyStub(_Stub):
    pass


class _SparseStub(_Stub):
    _format = "?"


def _make_stub_class(base: type, module: str, name: str, **attrs: Any) -> type:
    ns = {"_qualname": f"{module}.{name}", "__module__": __name__}
    ns.update(attrs)
    return _Sealed(f"{base.__name__}_{name}", (base,), ns)


class _SafeCallable(metaclass=_Sealed):
    """Base for the few callables a model pickle may use; instances have no state."""

    __slots__ = ()


class _SafeReconstruct(_SafeCallable):
    """Replacement for numpy's ``_reconstruct`` (only plain ndarrays)."""

    __slots__ = ()

    def __call__(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY_TOKEN:
            raise _BadPayload("numpy _reconstruct may only build numpy.ndarray")
        if isinstance(dtype, bytes):
            dtype = dtype.decode("latin1")
        if not isinstance(dtype, (str, np.dtype)):
            raise _BadPayload("numpy _reconstruct: bad dtype")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _BadPayload("numpy _reconstruct: bad shape")
        return np.ndarray.__new__(np.ndarray, shape, np.dtype(dtype))


class _SafeDtype(_SafeCallable):
    """Replacement for ``numpy.dtype`` (only type codes given as strings)."""

    __slots__ = ()

    def __call__(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 16:
            raise _BadPayload("numpy.dtype: unsupported dtype specification")
        return np.dtype(spec, align=bool(align), copy=bool(copy))


class _SafeZeros(_SafeCallable):
    """Replacement for ``numpy.zeros`` (numeric dtypes, bounded size): compact all-zero arrays."""

    __slots__ = ()
    _MAX_ELEMENTS = 1 << 31

    def __call__(self, shape: Any, dtype: Any = "<f8") -> np.ndarray:
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _BadPayload("numpy.zeros: the shape must be a tuple of non-negative ints")
        if isinstance(dtype, bytes):
            dtype = dtype.decode("latin1")
        if not isinstance(dtype, (str, np.dtype)) or len(str(dtype)) > 16:
            raise _BadPayload("numpy.zeros: unsupported dtype specification")
        dtype = np.dtype(dtype)
        if dtype.kind not in "biuf" or int(np.prod(shape, dtype=np.int64)) > self._MAX_ELEMENTS:
            raise _BadPayload("numpy.zeros: only numeric arrays of bounded size are allowed")
        return np.zeros(shape, dtype=dtype)


class _SafeScalar(_SafeCallable):
    """Replacement for numpy's ``multiarray.scalar`` (numeric scalars only)."""

    __slots__ = ()

    def __call__(self, dtype: Any, data: Any = None) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _BadPayload("numpy scalar: only non-object dtypes are allowed")
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
            raise _BadPayload("numpy scalar: bad payload")
        return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


class _SafeFromBuffer(_SafeCallable):
    """Replacement for numpy's ``numeric._frombuffer`` (pickle protocol 5 arrays)."""

    __slots__ = ()

    def __call__(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if isinstance(buf, pickle.PickleBuffer):
            buf = buf.raw()
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise _BadPayload("numpy _frombuffer: bad buffer")
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _BadPayload("numpy _frombuffer: bad dtype")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _BadPayload("numpy _frombuffer: bad shape")
        if order not in ("C", "F"):
            raise _BadPayload("numpy _frombuffer: bad order")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy(order="K")


class _SafeEncode(_SafeCallable):
    """Replacement for ``_codecs.encode`` as used by pickles of ``bytes`` (latin-1 only)."""

    __slots__ = ()

    def __call__(self, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(obj, str) or not isinstance(encoding, str):
            raise _BadPayload("_codecs.encode: bad arguments")
        if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "l1"):
            raise _BadPayload(f"_codecs.encode: encoding {encoding!r} not allowed")
        return obj.encode("latin1")


class _SafeBytes(_SafeCallable):
    """Replacement for ``bytes`` / ``bytearray`` constructors in pickles."""

    __slots__ = ()
    _mutable = False

    def __call__(self, *args: Any) -> Any:
        if not args:
            data = b""
        elif len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            data = bytes(args[0])
        elif len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str):
            data = _SafeEncode()(args[0], args[1])
        else:
            raise _BadPayload("bytes: bad arguments")
        return bytearray(data) if self._mutable else data


class _SafeBytearray(_SafeBytes):
    __slots__ = ()
    _mutable = True


class _SafeReconstructor(_SafeCallable):
    """Replacement for ``copyreg._reconstructor``: only builds placeholder objects."""

    __slots__ = ()

    def __call__(self, cls: Any, base: Any, state: Any = None) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, _Stub)):
            raise _BadPayload("copyreg._reconstructor may only build placeholder objects")
        if base is not object or state is not None:
            raise _BadPayload("copyreg._reconstructor: unsupported base class")
        return cls.__new__(cls)


class _SafeNewobj(_SafeCallable):
    """Replacement for ``copyreg.__newobj__``: only builds placeholder objects."""

    __slots__ = ()

    def __call__(self, cls: Any, *args: Any) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, _Stub)):
            raise _BadPayload("copyreg.__newobj__ may only build placeholder objects")
        return cls.__new__(cls)


class _NdarrayToken(_SafeCallable):
    """Stands in for ``numpy.ndarray`` when it is named as ``_reconstruct``'s argument."""

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        raise _BadPayload("numpy.ndarray may not be called from a model file")


_NDARRAY_TOKEN = _NdarrayToken()

_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE_GLOBALS[(_mod, "_reconstruct")] = _SafeReconstruct()
    _SAFE_GLOBALS[(_mod, "scalar")] = _SafeScalar()
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _SAFE_GLOBALS[(_mod, "_frombuffer")] = _SafeFromBuffer()
_SAFE_GLOBALS[("numpy", "ndarray")] = _NDARRAY_TOKEN
_SAFE_GLOBALS[("numpy", "dtype")] = _SafeDtype()
_SAFE_GLOBALS[("numpy", "zeros")] = _SafeZeros()
for _mod in ("copy_reg", "copyreg"):
    _SAFE_GLOBALS[(_mod, "_reconstructor")] = _SafeReconstructor()
    _SAFE_GLOBALS[(_mod, "__newobj__")] = _SafeNewobj()
for _mod in ("__builtin__", "builtins"):
    _SAFE_GLOBALS[(_mod, "object")] = object
    _SAFE_GLOBALS[(_mod, "set")] = set
    _SAFE_GLOBALS[(_mod, "frozenset")] = frozenset
    _SAFE_GLOBALS[(_mod, "bytes")] = _SafeBytes()
    _SAFE_GLOBALS[(_mod, "bytearray")] = _SafeBytearray()
_SAFE_GLOBALS[("_codecs", "encode")] = _SafeEncode()
del _mod

_SPARSE_MODULES = {
    "scipy.sparse",
    "scipy.sparse.csc",
    "scipy.sparse._csc",
    "scipy.sparse.csr",
    "scipy.sparse._csr",
    "scipy.sparse.coo",
    "scipy.sparse._coo",
}
_SPARSE_NAMES = {
    "csc_matrix": "csc",
    "csc_array": "csc",
    "csr_matrix": "csr",
    "csr_array": "csr",
    "coo_matrix": "coo",
    "coo_array": "coo",
}


class _ModelUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, containers and inert placeholders."""

    def __init__(self, file: Any):
        super().__init__(file, encoding="latin1")
        self._stub_classes: Dict[Tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        safe = _SAFE_GLOBALS.get(key)
        if safe is not None:
            return safe
        if module == "chumpy" or module.startswith("chumpy."):
            return self._stub(_ChumpyStub, module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return self._stub(_SparseStub, module, name, _format=_SPARSE_NAMES[name])
        raise _RefusedGlobal(f"{module}.{name}")

    def _stub(self, base: type, module: str, name: str, **attrs: Any) -> type:
        key = (module, name)
        cls = self._stub_classes.get(key)
        if cls is None:
            cls = _make_stub_class(base, module, name, **attrs)
            self._stub_classes[key] = cls
        return cls

    def persistent_load(self, pid: Any) -> Any:
        raise _BadPayload("persistent ids are not allowed in model files")


def _stub_state(stub: _Stub) -> dict:
    state = stub.__dict__.get("_state")
    extra = stub.__dict__.get("_state_attrs", {})
    merged: Dict[Any, Any] = {}
    if isinstance(state, dict):
        merged.update(state)
    merged.update(extra)
    return merged


_MAX_DEPTH = 64


def _materialize(obj: Any, key: str, source: str, depth: int = 0) -> Any:
    """Convert placeholders into numpy arrays (recursing into containers)."""
    if depth > _MAX_DEPTH:
        raise ModelFileError(f"{_where(source)}: {key}: objects nested too deeply")
    if isinstance(obj, _SparseStub):
        return _sparse_to_dense(obj, key, source)
    if isinstance(obj, _ChumpyStub):
        return _chumpy_value(obj, key, source, depth)
    if isinstance(obj, dict):
        return {k: _materialize(v, f"{key}[{k!r}]", source, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, key, source, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, key, source, depth + 1) for v in obj)
    return obj


def _sparse_to_dense(stub: _SparseStub, key: str, source: str) -> np.ndarray:
    st = _stub_state(stub)
    fmt = type(stub)._format
    where = f"{_where(source)}: {key} ({type(stub)._qualname})"
    shape = st.get("_shape", st.get("shape"))
    try:
        rows, cols = (int(s) for s in shape)
    except Exception:
        raise ModelFileError(f"{where}: sparse matrix without a valid 2-D shape") from None
    if rows < 0 or cols < 0 or rows * cols > _MAX_DENSE_ENTRIES:
        raise ModelFileError(f"{where}: unsupported sparse matrix shape ({rows}, {cols})")
    out = np.zeros((rows, cols), dtype=np.float64)
    try:
        if fmt in ("csc", "csr"):
            data = np.asarray(st["data"], dtype=np.float64).ravel()
            indices = np.asarray(st["indices"], dtype=np.int64).ravel()
            indptr = np.asarray(st["indptr"], dtype=np.int64).ravel()
            major, minor = (cols, rows) if fmt == "csc" else (rows, cols)
            if indptr.shape[0] != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise ValueError("inconsistent indptr")
            nnz = int(indptr[-1])
            if nnz > data.shape[0] or nnz > indices.shape[0]:
                raise ValueError("indptr points past the data")
            data, indices = data[:nnz], indices[:nnz]
            if nnz and (indices.min() < 0 or indices.max() >= minor):
                raise ValueError("index out of range")
            majors = np.repeat(np.arange(major, dtype=np.int64), np.diff(indptr))
            r, c = (indices, majors) if fmt == "csc" else (majors, indices)
        elif fmt == "coo":
            data = np.asarray(st["data"], dtype=np.float64).ravel()
            if "coords" in st:
                r, c = (np.asarray(a, dtype=np.int64).ravel() for a in st["coords"])
            else:
                r = np.asarray(st["row"], dtype=np.int64).ravel()
                c = np.asarray(st["col"], dtype=np.int64).ravel()
            if not (r.shape == c.shape == data.shape):
                raise ValueError("row/col/data lengths differ")
            if data.size and (r.min() < 0 or r.max() >= rows or c.min() < 0 or c.max() >= cols):
                raise ValueError("index out of range")
        else:  # pragma: no cover - defensive
            raise ValueError(f"unknown sparse format {fmt}")
        np.add.at(out, (r, c), data)
    except ModelFileError:
        raise
    except KeyError as exc:
        raise ModelFileError(f"{where}: sparse matrix state lacks {exc}") from None
    except Exception as exc:
        raise ModelFileError(f"{where}: malformed sparse matrix: {exc}") from None
    return out


def _chumpy_value(stub: _ChumpyStub, key: str, source: str, depth: int) -> np.ndarray:
    """Evaluate a chumpy object from its pickled state (plain arrays and reorderings)."""
    st = _stub_state(stub)
    qual = type(stub)._qualname
    cls_name = qual.rsplit(".", 1)[-1]
    where = f"{_where(source)}: {key} ({qual})"

    def sub(name: str) -> np.ndarray:
        val = _materialize(st[name], key, source, depth + 1)
        return np.asarray(val)

    try:
        if cls_name == "Reshape" and "a" in st:
            return sub("a").reshape(st["newshape"])
        if cls_name == "transpose" and "a" in st:
            return np.transpose(sub("a"), axes=st.get("axes"))
        if cls_name == "swapaxes" and "a" in st:
            return np.swapaxes(sub("a"), int(st["axis1"]), int(st["axis2"]))
        if cls_name == "rollaxis" and "a" in st:
            return np.rollaxis(sub("a"), int(st["axis"]), int(st.get("start", 0)))
        if cls_name == "Select" and "a" in st:
            out = sub("a").ravel()[np.asarray(st["idxs"], dtype=np.int64)]
            if "preferred_shape" in st:
                out = out.reshape(st["preferred_shape"])
            return out
        if cls_name == "AtleastNd" and "x" in st:
            x = sub("x")
            nd = int(st.get("ndims", 1))
            return {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[nd](x)
        if "x" in st:
            return sub("x")
    except ModelFileError:
        raise
    except KeyError as exc:
        raise ModelFileError(f"{where}: chumpy object state lacks {exc}") from None
    except Exception as exc:
        raise ModelFileError(f"{where}: cannot evaluate chumpy object: {exc}") from None
    raise ModelFileError(
        f"{where}: unsupported chumpy object (state keys: {sorted(map(str, st))}); "
        f"only plain arrays (state key 'x') and simple reorderings can be read"
    )


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _ModelUnpickler(fh).load()
    except _RefusedGlobal as exc:
        raise ModelFileError(
            f"{_where(str(path))}: refusing to load: the pickle references {exc.qualname!r}, "
            f"which is not allowed in a model file (only numpy arrays, scipy.sparse matrices "
            f"and chumpy arrays are)"
        ) from None
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(f"{_where(str(path))}: not a valid model pickle (out of memory while reading)") from None
    except Exception as exc:
        raise ModelFileError(
            f"{_where(str(path))}: not a valid model pickle (corrupt or truncated?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise ModelFileError(
            f"{_where(str(path))}: expected the pickle to hold a dict of arrays, "
            f"got {type(obj).__name__}"
        )
    return obj


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


def _model_from_dict(raw: dict, source: str) -> ModelData:
    data: Dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(k, bytes):
            k = k.decode("latin1")
        data[str(k)] = v
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ModelFileError(
            f"{_where(source)}: missing required key {missing[0]!r}"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; keys found: {sorted(data)}"
        )
    required = {k: _materialize(data[k], k, source) for k in REQUIRED_KEYS}
    extras: Dict[str, Any] = {}
    for k, v in data.items():
        if k in required:
            continue
        try:
            extras[k] = _materialize(v, k, source)
        except ModelFileError:
            # Unused extra that cannot be turned into numpy: keep its raw state.
            extras[k] = _stub_state(v) if isinstance(v, _Stub) else None
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
