"""Restricted reading of pickles that hold numpy arrays (SMPL-family model and prior files).

The official SMPL model files and SMPLify's pose prior are (usually Python 2) pickles of
a dict whose values are numpy arrays, ``scipy.sparse`` matrices and ``chumpy`` objects.
Loading them with :mod:`pickle` would import chumpy and scipy and could run any code
the file names.  This module reads them without either:

* :func:`load_records` unpickles with a pure-Python unpickler whose globals are inert
  placeholders: calls and BUILD steps are only recorded, and any global outside a short
  allowlist (numpy array / dtype / scalar reconstruction, ``numpy.zeros``, copyreg
  reconstruction, ``scipy.sparse`` CSC/CSR/COO matrices, chumpy classes, a few builtins
  that only make ``bytes``) is refused without being imported.  The result is a dict of
  inert records, checked against a byte budget before anything is allocated.
* :func:`declared_shape` reads the shape a record declares, allocating nothing, so a
  caller can check the layout it expects first.
* :func:`materialize` (or a :class:`Materializer` shared by the keys of one file) turns
  records into numpy arrays from their raw bytes, with whitelisted numeric dtypes,
  checked shapes and byte counts; chumpy and scipy.sparse objects become dense arrays.

Every problem is a :class:`SafePickleError`.  The module needs only numpy.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any, Dict, Tuple

import numpy as np

__all__ = [
    "MAX_TOTAL_BYTES",
    "Materializer",
    "SafePickleError",
    "declared_shape",
    "is_record",
    "load_records",
    "materialize",
]


class SafePickleError(ValueError):
    """A pickle was refused or could not be turned into arrays.

    Raised by :func:`load_records`, :func:`materialize` and :class:`Materializer`
    with a message that names the file (``model '<path>': ...``), and by
    :func:`declared_shape` with a bare message the caller places.
    """


def _where(source: str) -> str:
    return f"model {source!r}"


# ---------------------------------------------------------------------------
# Design
# ---------------------------------------------------------------------------
#
# Reading a pickle never builds a numpy object.  ``find_class`` only
# hands out *placeholder classes* (:class:`_Node` subclasses, one per allowed
# global); calling one (REDUCE / NEWOBJ / INST / OBJ) just records the
# arguments, and BUILD just records the state.  The unpickler is the
# pure-Python one, so memo indices, frame and string lengths from the file
# never size a C-level allocation.  After loading, :func:`_check_budget` walks
# the inert tree and adds up the bytes every array would take as float64
# (dense sparse matrices included) and refuses the file BEFORE anything is
# allocated; then :func:`materialize` turns the descriptions of the needed
# keys into numpy arrays from the raw bytes, using only whitelisted numeric
# dtypes (bool, int8..int64, uint8..uint64, float16/32/64, either byte order),
# validated shapes and byte counts.  chumpy and scipy.sparse objects are read
# from their recorded state without importing either library.


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


class _Node(metaclass=_Sealed):
    """Inert record of a call found in a model pickle: ``qualname(*args, **kwargs)`` + BUILD state.

    Nothing is evaluated while the pickle is read; :func:`materialize` interprets
    the records afterwards.
    """

    __slots__ = ("_args", "_kwargs", "_state", "_has_state", "_attrs")
    _qualname = "?"
    _kind = "?"
    _format = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Node":
        obj = object.__new__(cls)
        object.__setattr__(obj, "_args", args)
        object.__setattr__(obj, "_kwargs", dict(kwargs))
        object.__setattr__(obj, "_state", None)
        object.__setattr__(obj, "_has_state", False)
        object.__setattr__(obj, "_attrs", {})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        self._attrs[str(name)] = value

    def __delattr__(self, name: str) -> None:
        raise TypeError("placeholder objects are read-only")

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_has_state", True)

    def __repr__(self) -> str:
        return f"<placeholder {self._qualname}>"


def _make_node_class(kind: str, qualname: str, **attrs: Any) -> type:
    ns = {"__slots__": (), "_qualname": qualname, "_kind": kind, "__module__": __name__}
    ns.update(attrs)
    return _Sealed(f"_Node_{qualname.replace('.', '_')}", (_Node,), ns)


def _is_node_class(obj: Any, *kinds: str) -> bool:
    return isinstance(obj, type) and issubclass(obj, _Node) and (not kinds or obj._kind in kinds)


class _SafeCallable(metaclass=_Sealed):
    """Base for the few callables evaluated while reading (they only build ``bytes``)."""

    __slots__ = ()


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


#: (module, name) -> placeholder kind.
_NODE_GLOBALS: Dict[Tuple[str, str], str] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NODE_GLOBALS[(_mod, "_reconstruct")] = "reconstruct"
    _NODE_GLOBALS[(_mod, "scalar")] = "scalar"
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NODE_GLOBALS[(_mod, "_frombuffer")] = "frombuffer"
_NODE_GLOBALS[("numpy", "ndarray")] = "ndarray"
_NODE_GLOBALS[("numpy", "dtype")] = "dtype"
_NODE_GLOBALS[("numpy", "zeros")] = "zeros"
for _mod in ("copy_reg", "copyreg"):
    _NODE_GLOBALS[(_mod, "_reconstructor")] = "reconstructor"
    _NODE_GLOBALS[(_mod, "__newobj__")] = "newobj"
for _mod in ("__builtin__", "builtins"):
    _NODE_GLOBALS[(_mod, "object")] = "object"

#: (module, name) -> harmless value returned as is.
_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {}
for _mod in ("__builtin__", "builtins"):
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


class _ModelUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler that only produces containers, strings, numbers and inert placeholders."""

    def __init__(self, file: Any):
        super().__init__(file, encoding="latin1")
        self._node_classes: Dict[Tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        safe = _SAFE_GLOBALS.get(key)
        if safe is not None:
            return safe
        kind = _NODE_GLOBALS.get(key)
        attrs: Dict[str, Any] = {}
        if kind is None:
            if module == "chumpy" or module.startswith("chumpy."):
                kind = "chumpy"
            elif module in _SPARSE_MODULES and name in _SPARSE_NAMES:
                kind, attrs = "sparse", {"_format": _SPARSE_NAMES[name]}
            else:
                raise _RefusedGlobal(f"{module}.{name}")
        cls = self._node_classes.get(key)
        if cls is None:
            cls = _make_node_class(kind, f"{module}.{name}", **attrs)
            self._node_classes[key] = cls
        return cls

    def persistent_load(self, pid: Any) -> Any:
        raise _BadPayload("persistent ids are not allowed in model files")


#: Budget for all arrays of one file, in bytes counted as float64 (what the callers convert to).
MAX_TOTAL_BYTES = 1 << 30
_MAX_NDIM = 32
_MAX_DEPTH = 64
_MAX_NODES = 5_000_000

# Whitelisted numeric dtypes: type code -> canonical numpy code.
_DTYPE_CODES: Dict[str, str] = {
    "b1": "b1", "?": "b1",
    "i1": "i1", "b": "i1", "i2": "i2", "h": "i2", "i4": "i4", "i8": "i8", "q": "i8",
    "u1": "u1", "B": "u1", "u2": "u2", "H": "u2", "u4": "u4", "u8": "u8", "Q": "u8",
    "f2": "f2", "e": "f2", "f4": "f4", "f": "f4", "f8": "f8", "d": "f8",
}
_BYTE_ORDERS = ("<", ">", "=", "|")


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin1")
    return value


_TEXT_DTYPE = re.compile(r"([US])([1-9][0-9]{0,5})")


def _check_dtype(desc: Any, text: bool = False) -> np.dtype:
    """A whitelisted numpy dtype from a dtype record or a type string.

    Numeric only (bool, int8..int64, uint8..uint64, float16/32/64, either byte order);
    with ``text`` also fixed-width byte / unicode strings (``S<n>`` / ``U<n>``), which
    hold no pointers.  The dtype is rebuilt from a canonical string, never from the
    file's flags.
    """
    order = "="
    if isinstance(desc, _Node) and desc._kind == "dtype":
        if not desc._args or desc._kwargs:
            raise _BadPayload("numpy.dtype: bad arguments")
        spec = _text(desc._args[0])
        for extra in desc._args[1:3]:
            if not isinstance(extra, (bool, int)):
                raise _BadPayload("numpy.dtype: bad arguments")
        if len(desc._args) > 3 or desc._attrs:
            raise _BadPayload("numpy.dtype: bad arguments")
        if desc._has_state:
            st = desc._state
            if not (isinstance(st, tuple) and len(st) in (8, 9) and st[0] in (2, 3, 4)):
                raise _BadPayload("numpy.dtype: unsupported dtype state")
            endian = _text(st[1])
            if endian not in _BYTE_ORDERS:
                raise _BadPayload(f"numpy.dtype: bad byte order {endian!r}")
            if st[2] is not None or st[3] is not None or st[4] is not None:
                raise _BadPayload("numpy.dtype: structured and sub-array dtypes are not allowed")
            if not all(type(v) is int for v in st[5:8]) or st[7] not in (0, 8):
                raise _BadPayload("numpy.dtype: unsupported dtype flags (object dtypes are not allowed)")
            if len(st) == 9 and st[8] is not None:
                raise _BadPayload("numpy.dtype: dtype metadata is not allowed")
            order = endian
    elif isinstance(desc, (str, bytes, bytearray)):
        spec = _text(desc)
    else:
        raise _BadPayload(f"unsupported dtype description {type(desc).__name__}")
    if not isinstance(spec, str) or not 1 <= len(spec) <= 8:
        raise _BadPayload("unsupported dtype specification")
    if spec[0] in _BYTE_ORDERS and len(spec) > 1:
        if order == "=":
            order = spec[0]
        spec = spec[1:]
    code = _DTYPE_CODES.get(spec)
    if code is None and text and _TEXT_DTYPE.fullmatch(spec):
        if order not in ("<", ">"):
            order = "="
        return np.dtype(order + spec if spec[0] == "U" else spec)
    if code is None:
        raise _BadPayload(
            f"dtype {spec!r} is not allowed (only bool, int8..int64, uint8..uint64 and float16/32/64)"
        )
    if order not in ("<", ">"):
        order = "="
    dt = np.dtype(order + code)
    if dt.kind not in "biuf" or dt.hasobject:  # pragma: no cover - defensive
        raise _BadPayload("non-numeric dtype")
    return dt


def _check_shape(shape: Any) -> Tuple[int, ...]:
    if type(shape) is int:
        shape = (shape,)
    if isinstance(shape, list):
        shape = tuple(shape)
    if not isinstance(shape, tuple) or len(shape) > _MAX_NDIM or not all(
        type(s) is int and s >= 0 for s in shape
    ):
        raise _BadPayload(f"bad array shape {shape!r} (expected a tuple of non-negative ints)")
    return shape


def _count(shape: Tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _raw_bytes(raw: Any) -> bytes:
    if isinstance(raw, str):  # Python 2 str read with encoding="latin1"
        try:
            return raw.encode("latin1")
        except UnicodeEncodeError:
            raise _BadPayload("array data is not a byte string") from None
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, pickle.PickleBuffer):
        return bytes(raw.raw())
    if isinstance(raw, list):
        raise _BadPayload("object arrays are not allowed in model files")
    raise _BadPayload(f"array data must be bytes, got {type(raw).__name__}")


def _reconstruct_parts(node: _Node) -> Tuple[Tuple[int, ...], Any, bool, Any]:
    """(shape, dtype record, fortran, raw data) of a ``_reconstruct`` record, checked for form."""
    args = node._args
    if not args or not _is_node_class(args[0], "ndarray") or node._kwargs or node._attrs:
        raise _BadPayload("numpy _reconstruct may only build numpy.ndarray")
    if not node._has_state:
        raise _BadPayload("numpy array without data")
    st = node._state
    if isinstance(st, tuple) and len(st) == 5:
        st = st[1:]
    if not (isinstance(st, tuple) and len(st) == 4):
        raise _BadPayload("numpy array: unsupported state")
    shape, dtype, fortran, raw = st
    if type(fortran) not in (bool, int) or fortran not in (0, 1):
        raise _BadPayload("numpy array: bad fortran flag")
    return _check_shape(shape), dtype, bool(fortran), raw


def _declared_count(node: _Node) -> int:
    """Elements the record would materialize (0 for records that are not arrays)."""
    kind = node._kind
    if kind == "reconstruct":
        return _count(_reconstruct_parts(node)[0])
    if kind == "zeros":
        if not node._args:
            raise _BadPayload("numpy.zeros: missing shape")
        return _count(_check_shape(node._args[0]))
    if kind == "frombuffer":
        if len(node._args) != 4:
            raise _BadPayload("numpy _frombuffer: bad arguments")
        return _count(_check_shape(node._args[2]))
    inst = _instance(node)
    if inst is not None and inst[0]._kind == "sparse":
        rows, cols = _sparse_shape(inst[1])
        return rows * cols
    return 0


def _check_budget(obj: Any, limit: int = None) -> int:
    """Total float64 bytes the arrays described in ``obj`` would take; refuse above the limit.

    Walks the inert tree iteratively (shared and cyclic references counted once)
    and allocates nothing.
    """
    limit = MAX_TOTAL_BYTES if limit is None else limit
    seen = set()
    stack = [obj]
    total = 0
    visited = 0
    while stack:
        cur = stack.pop()
        if isinstance(cur, (str, bytes, bytearray, int, float, complex, type(None))):
            continue
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        visited += 1
        if visited > _MAX_NODES:
            raise _BadPayload("too many objects in the pickle")
        if isinstance(cur, dict):
            stack.extend(cur.keys())
            stack.extend(cur.values())
        elif isinstance(cur, (list, tuple, set, frozenset)):
            stack.extend(cur)
        elif isinstance(cur, _Node):
            total += 8 * _declared_count(cur)
            if total > limit:
                raise _BudgetExceeded(total, limit)
            stack.extend(cur._args)
            stack.extend(cur._kwargs.values())
            stack.append(cur._state)
            stack.extend(cur._attrs.values())
    return total


class _BudgetExceeded(_BadPayload):
    def __init__(self, total: int, limit: int):
        super().__init__(
            f"the arrays it declares need more than {limit} bytes as float64 "
            f"(at least {total}); refusing to allocate them"
        )


def _instance(node: _Node) -> Any:
    """(placeholder class, state dict) when ``node`` stands for a chumpy / scipy.sparse object."""
    cls = type(node)
    if cls._kind in ("chumpy", "sparse"):
        target = cls
    elif cls._kind == "reconstructor":
        a = node._args
        if not (len(a) == 3 and _is_node_class(a[0], "chumpy", "sparse") and _is_node_class(a[1], "object")
                and a[2] is None):
            return None
        target = a[0]
    elif cls._kind == "newobj":
        if not (node._args and _is_node_class(node._args[0], "chumpy", "sparse")):
            return None
        target = node._args[0]
    else:
        return None
    state = node._state
    merged: Dict[Any, Any] = {}
    if isinstance(state, tuple) and len(state) == 2:
        for part in state:
            if isinstance(part, dict):
                merged.update(part)
    elif isinstance(state, dict):
        merged.update(state)
    merged.update(node._attrs)
    return target, {_text(k) if isinstance(k, bytes) else k: v for k, v in merged.items()}


def _sparse_shape(st: dict) -> Tuple[int, int]:
    shape = st.get("_shape", st.get("shape"))
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(type(s) is int and s >= 0 for s in shape)):
        raise _BadPayload("sparse matrix without a valid 2-D shape")
    return int(shape[0]), int(shape[1])


class _Resolver:
    """Turns the inert records of one pickle into numpy arrays and plain Python values."""

    def __init__(self, source: str):
        self.source = source
        self.memo: Dict[int, Any] = {}
        self.active: set = set()
        # Bytes (as float64) of the arrays built so far: chumpy reorderings can copy a shared
        # array many times, which the declared-size pre-check cannot see.
        self.used = 0
        self.counted: Dict[int, np.ndarray] = {}

    def __call__(self, obj: Any, key: str, depth: int = 0) -> Any:
        if isinstance(obj, (str, bytes, bytearray, bool, int, float, complex, type(None), np.ndarray, np.generic)):
            return obj
        if depth > _MAX_DEPTH:
            raise SafePickleError(f"{_where(self.source)}: {key}: objects nested too deeply")
        oid = id(obj)
        if oid in self.memo:
            return self.memo[oid]
        if oid in self.active:
            raise SafePickleError(f"{_where(self.source)}: {key}: cyclic reference")
        self.active.add(oid)
        try:
            out = self._resolve(obj, key, depth)
        finally:
            self.active.discard(oid)
        self.memo[oid] = out
        return out

    def _resolve(self, obj: Any, key: str, depth: int) -> Any:
        if isinstance(obj, dict):
            return {self._hashable(k, key): self(v, f"{key}[{k!r}]", depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self(v, key, depth + 1) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self(v, key, depth + 1) for v in obj)
        if isinstance(obj, (set, frozenset)):
            return type(obj)(self._hashable(v, key) for v in obj)
        if isinstance(obj, _Node):
            return self._node(obj, key, depth)
        if _is_node_class(obj):
            raise SafePickleError(f"{_where(self.source)}: {key}: {obj._qualname} used as a value")
        if hasattr(obj, "toarray") and hasattr(obj, "nnz"):  # a real scipy.sparse matrix built in memory
            return obj
        raise SafePickleError(f"{_where(self.source)}: {key}: unsupported object {type(obj).__name__}")

    def _hashable(self, k: Any, key: str) -> Any:
        if isinstance(k, (str, bytes, bool, int, float, complex, type(None))):
            return k
        if isinstance(k, tuple) and all(isinstance(v, (str, bytes, bool, int, float, type(None))) for v in k):
            return k
        raise SafePickleError(f"{_where(self.source)}: {key}: unsupported dict key or set member")

    def _node(self, node: _Node, key: str, depth: int) -> Any:
        out = self._build(node, key, depth)
        if isinstance(out, np.ndarray):
            root = out
            while isinstance(root.base, np.ndarray):
                root = root.base
            if id(root) not in self.counted:  # views of an array already counted are free
                self.counted[id(root)] = root
                self.used += 8 * root.size
            if self.used > MAX_TOTAL_BYTES:
                raise SafePickleError(
                    f"{_where(self.source)}: {key} ({node._qualname}): refusing to load: the arrays built "
                    f"from the file exceed {MAX_TOTAL_BYTES} bytes as float64"
                )
        return out

    def _build(self, node: _Node, key: str, depth: int) -> Any:
        where = f"{_where(self.source)}: {key} ({node._qualname})"
        try:
            kind = node._kind
            if kind == "reconstruct":
                return self._array(node)
            if kind == "zeros":
                return self._zeros(node)
            if kind == "frombuffer":
                buf, dtype, shape, order = node._args
                if order not in ("C", "F") or node._kwargs:
                    raise _BadPayload("numpy _frombuffer: bad order")
                return _from_bytes(_raw_bytes(buf), _check_dtype(dtype, text=True), _check_shape(shape), order == "F")
            if kind == "scalar":
                if len(node._args) != 2 or node._kwargs:
                    raise _BadPayload("numpy scalar: bad arguments")
                dt = _check_dtype(node._args[0], text=True)
                data = _raw_bytes(node._args[1])
                if len(data) != dt.itemsize:
                    raise _BadPayload("numpy scalar: bad payload")
                return np.frombuffer(data, dtype=dt, count=1)[0].copy()
            inst = _instance(node)
            if inst is not None:
                cls, st = inst
                if cls._kind == "sparse":
                    return self._sparse(cls, st, key, depth)
                return self._chumpy(cls, st, key, depth)
            if kind == "reconstructor":
                raise _BadPayload("copyreg._reconstructor may only build placeholder objects")
            if kind == "newobj":
                raise _BadPayload("copyreg.__newobj__ may only build placeholder objects")
            if kind == "ndarray":
                raise _BadPayload("numpy.ndarray may not be called from a model file")
            raise _BadPayload(f"{node._qualname} is not a value")
        except SafePickleError:
            raise
        except _BadPayload as exc:
            raise SafePickleError(f"{where}: {exc}") from None
        except MemoryError:
            raise SafePickleError(f"{where}: out of memory") from None
        except Exception as exc:
            raise SafePickleError(f"{where}: malformed object: {type(exc).__name__}: {exc}") from None

    def _array(self, node: _Node) -> np.ndarray:
        shape, dtype, fortran, raw = _reconstruct_parts(node)
        return _from_bytes(_raw_bytes(raw), _check_dtype(dtype, text=True), shape, fortran)

    def _zeros(self, node: _Node) -> np.ndarray:
        args, kw = node._args, dict(node._kwargs)
        if not 1 <= len(args) <= 3 or set(kw) - {"dtype", "order"}:
            raise _BadPayload("numpy.zeros: bad arguments")
        shape = _check_shape(args[0])
        dtype = args[1] if len(args) > 1 else kw.get("dtype", "<f8")
        order = args[2] if len(args) > 2 else kw.get("order", "C")
        if order not in ("C", "F"):
            raise _BadPayload("numpy.zeros: bad order")
        dt = _check_dtype(dtype)
        if 8 * _count(shape) > MAX_TOTAL_BYTES:
            raise _BudgetExceeded(8 * _count(shape), MAX_TOTAL_BYTES)
        return np.zeros(shape, dtype=dt, order=order)

    def _sparse(self, cls: type, st: dict, key: str, depth: int) -> np.ndarray:
        fmt = cls._format
        where = f"{_where(self.source)}: {key} ({cls._qualname})"
        try:
            rows, cols = _sparse_shape(st)
        except _BadPayload as exc:
            raise SafePickleError(f"{where}: {exc}") from None
        if 8 * rows * cols > MAX_TOTAL_BYTES:
            raise SafePickleError(f"{where}: unsupported sparse matrix shape ({rows}, {cols}) (too large)")

        def get(name: str, dtype: Any) -> np.ndarray:
            return np.asarray(self(st[name], key, depth + 1), dtype=dtype).ravel()

        try:
            if fmt in ("csc", "csr"):
                data = get("data", np.float64)
                indices = get("indices", np.int64)
                indptr = get("indptr", np.int64)
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
                data = get("data", np.float64)
                if "coords" in st:
                    coords = self(st["coords"], key, depth + 1)
                    if not (isinstance(coords, (tuple, list)) and len(coords) == 2):
                        raise ValueError("bad coords")
                    r, c = (np.asarray(a, dtype=np.int64).ravel() for a in coords)
                else:
                    r = get("row", np.int64)
                    c = get("col", np.int64)
                if not (r.shape == c.shape == data.shape):
                    raise ValueError("row/col/data lengths differ")
                if data.size and (r.min() < 0 or r.max() >= rows or c.min() < 0 or c.max() >= cols):
                    raise ValueError("index out of range")
            else:  # pragma: no cover - defensive
                raise ValueError(f"unknown sparse format {fmt}")
            out = np.zeros((rows, cols), dtype=np.float64)
            np.add.at(out, (r, c), data)
        except SafePickleError:
            raise
        except KeyError as exc:
            raise SafePickleError(f"{where}: sparse matrix state lacks {exc}") from None
        except Exception as exc:
            raise SafePickleError(f"{where}: malformed sparse matrix: {exc}") from None
        return out

    def _chumpy(self, cls: type, st: dict, key: str, depth: int) -> np.ndarray:
        """Evaluate a chumpy object from its recorded state (plain arrays and reorderings)."""
        qual = cls._qualname
        cls_name = qual.rsplit(".", 1)[-1]
        where = f"{_where(self.source)}: {key} ({qual})"

        def sub(name: str) -> np.ndarray:
            arr = np.asarray(self(st[name], key, depth + 1))
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"{name} is not a numeric array")
            return arr

        def val(name: str, default: Any = None) -> Any:
            return self(st[name], key, depth + 1) if name in st else default

        try:
            if cls_name == "Reshape" and "a" in st:
                return sub("a").reshape(val("newshape"))
            if cls_name == "transpose" and "a" in st:
                return np.transpose(sub("a"), axes=val("axes"))
            if cls_name == "swapaxes" and "a" in st:
                return np.swapaxes(sub("a"), int(val("axis1")), int(val("axis2")))
            if cls_name == "rollaxis" and "a" in st:
                return np.rollaxis(sub("a"), int(val("axis")), int(val("start", 0)))
            if cls_name == "Select" and "a" in st:
                out = sub("a").ravel()[np.asarray(val("idxs"), dtype=np.int64)]
                if "preferred_shape" in st:
                    out = out.reshape(val("preferred_shape"))
                return out
            if cls_name == "AtleastNd" and "x" in st:
                x = sub("x")
                nd = int(val("ndims", 1))
                return {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[nd](x)
            if "x" in st:
                return sub("x")
        except SafePickleError:
            raise
        except KeyError as exc:
            raise SafePickleError(f"{where}: chumpy object state lacks {exc}") from None
        except Exception as exc:
            raise SafePickleError(f"{where}: cannot evaluate chumpy object: {exc}") from None
        raise SafePickleError(
            f"{where}: unsupported chumpy object (state keys: {sorted(map(str, st))}); "
            f"only plain arrays (state key 'x') and simple reorderings can be read"
        )


def _from_bytes(raw: bytes, dtype: np.dtype, shape: Tuple[int, ...], fortran: bool) -> np.ndarray:
    """A fresh writable array from raw bytes, after checking the byte count against the shape."""
    count = _count(shape)
    if count * dtype.itemsize != len(raw):
        raise _BadPayload(
            f"array data has {len(raw)} bytes but shape {shape} of {dtype} needs {count * dtype.itemsize}"
        )
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def _materialize(obj: Any, key: str, source: str, depth: int = 0, resolver: Any = None) -> Any:
    """Convert the inert records of a loaded pickle into numpy arrays (recursing into containers).

    Values that are already numpy / plain Python pass through.  Raises SafePickleError.
    """
    if resolver is None:
        resolver = _Resolver(source)
    try:
        return resolver(obj, key, depth)
    except SafePickleError:
        raise
    except RecursionError:
        raise SafePickleError(f"{_where(source)}: {key}: objects nested too deeply") from None
    except MemoryError:
        raise SafePickleError(f"{_where(source)}: {key}: out of memory") from None


def _declared_shape(node: Any) -> Any:
    """The shape an inert array record declares (None when ``node`` is not a plain array record).

    Allocates nothing; raises ``_BadPayload`` for a malformed shape.
    """
    if not isinstance(node, _Node):
        return None
    if node._kind == "reconstruct":
        return _reconstruct_parts(node)[0]
    if node._kind == "zeros" and node._args:
        return _check_shape(node._args[0])
    if node._kind == "frombuffer" and len(node._args) == 4:
        return _check_shape(node._args[2])
    inst = _instance(node)
    if inst is not None and inst[0]._kind == "sparse":
        return _sparse_shape(inst[1])
    return None


# ---------------------------------------------------------------------------
# Public interface
# ---------------------------------------------------------------------------


def load_records(path: Any) -> dict:
    """Read a pickle of a dict into a dict of inert records; nothing is built or run.

    ``path`` is a file path (str or path-like).  The values are plain Python containers,
    strings and numbers, and records that describe numpy arrays, numpy scalars,
    chumpy objects and scipy.sparse matrices; turn them into numpy with
    :func:`materialize` or a :class:`Materializer`, or read a record's shape first
    with :func:`declared_shape`.

    Raises :class:`SafePickleError` for a file that cannot be read, a pickle that
    references any other global (the global is never imported), a malformed pickle,
    one that does not hold a dict, and one whose arrays would together take more than
    ``MAX_TOTAL_BYTES`` as float64 -- all before any array is allocated.
    """
    src = _where(str(path))
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        obj = _ModelUnpickler(io.BytesIO(data)).load()
        del data
        if isinstance(obj, dict):
            _check_budget(obj)
    except _RefusedGlobal as exc:
        raise SafePickleError(
            f"{src}: refusing to load: the pickle references {exc.qualname!r}, "
            f"which is not allowed in a model file (only numpy arrays, scipy.sparse matrices "
            f"and chumpy arrays are)"
        ) from None
    except _BudgetExceeded as exc:
        raise SafePickleError(f"{src}: refusing to load: {exc}") from None
    except _BadPayload as exc:
        raise SafePickleError(f"{src}: not a valid model pickle: {exc}") from None
    except SafePickleError:
        raise
    except MemoryError:
        raise SafePickleError(f"{src}: not a valid model pickle (out of memory while reading)") from None
    except RecursionError:
        raise SafePickleError(f"{src}: not a valid model pickle (nested too deeply)") from None
    except Exception as exc:
        raise SafePickleError(
            f"{src}: not a valid model pickle (corrupt or truncated?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise SafePickleError(
            f"{src}: expected the pickle to hold a dict of arrays, "
            f"got {type(obj).__name__}"
        )
    return obj


def is_record(obj: Any) -> bool:
    """True when ``obj`` is an inert record from :func:`load_records` (not yet materialized)."""
    return isinstance(obj, _Node)


def declared_shape(record: Any) -> Any:
    """The shape (tuple of ints) an array record declares, without allocating anything.

    Covers numpy arrays (also ``numpy.zeros`` and ``_frombuffer`` records) and
    scipy.sparse matrices; returns None for anything else (plain values, chumpy
    objects, containers).  Raises :class:`SafePickleError` (bare message, e.g.
    ``bad array shape ...``) for a malformed shape; :func:`load_records` has already
    refused files that hold one.
    """
    try:
        return _declared_shape(record)
    except _BadPayload as exc:
        raise SafePickleError(str(exc)) from None


class Materializer:
    """Turns the records of one file into numpy arrays and plain Python values.

    Calls share a memo (a record referenced by several keys is built once) and the
    byte budget: the arrays built by all calls together, counted as float64, may not
    exceed ``MAX_TOTAL_BYTES``.  ``source`` names the file in error messages.
    """

    def __init__(self, source: str):
        self.source = source
        self._resolver = _Resolver(source)

    def __call__(self, record: Any, key: str) -> Any:
        """``record`` (found under ``key``) as numpy arrays, recursing into containers.

        Values that are already numpy or plain Python pass through.  Raises
        :class:`SafePickleError` with a message naming the file and ``key``.
        """
        return _materialize(record, key, self.source, resolver=self._resolver)


def materialize(record: Any, key: str, source: str) -> Any:
    """``record`` (found under ``key`` in the file ``source``) as numpy arrays.

    A one-off :class:`Materializer`: see there.  Raises :class:`SafePickleError`.
    """
    return Materializer(source)(record, key)
