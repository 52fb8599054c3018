"""Tests for smplfast.body.model_file: loading, validating and saving SMPL model files."""

import builtins
import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from smplfast.body.model_file import (
    REQUIRED_KEYS,
    ModelData,
    ModelFileError,
    ModelFileNotFoundError,
    load_model,
    save_model,
    validate_model,
)
from smplfast.body.random_model import random_model

BODY_DIR = Path(__file__).resolve().parents[1] / "smplfast" / "body"


@pytest.fixture(scope="module")
def model():
    return random_model(300, num_betas=10, seed=7)


@pytest.fixture(scope="module")
def smpl_sized():
    # smplx picks extra joints by SMPL vertex ids, so it needs SMPL's 6890 vertices.
    return random_model(6890, num_betas=10, seed=11)


def _copy(model, **changes):
    arrays = {k: np.array(v, copy=True) for k, v in model.arrays().items()}
    arrays.update(changes)
    return ModelData(source="test-model.pkl", **arrays)


def _assert_same_arrays(a, b):
    for key in REQUIRED_KEYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.shape == y.shape, key
        assert np.array_equal(x, y), key


def _error(fn, *args, **kwargs):
    with pytest.raises(ModelFileError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
def test_round_trip(tmp_path, model, suffix):
    path = tmp_path / "sub" / "dir" / f"model{suffix}"
    written = save_model(model, path)
    assert Path(written) == path and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    assert path.stat().st_mode & 0o644 == 0o644
    loaded = load_model(path)
    _assert_same_arrays(model, loaded)
    assert loaded.source == str(path)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert getattr(loaded, key).dtype == np.float64
    assert loaded.kintree_table.dtype == np.int64 and loaded.f.dtype == np.int64
    assert loaded.num_vertices == 300 and loaded.num_joints == 24 and loaded.num_betas == 10
    assert loaded.parents[0] == -1 and list(loaded.parents[1:4]) == [0, 0, 0]


def test_saved_pkl_is_plain_dict_of_arrays(tmp_path, model):
    path = save_model(model, tmp_path / "m.pkl")
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2
    with open(path, "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    assert sorted(data) == sorted(REQUIRED_KEYS)
    assert all(type(v) is np.ndarray for v in data.values())
    assert data["J_regressor"].shape == (24, 300)


def test_accepts_float32_and_sparse_in_memory(model):
    sp = pytest.importorskip("scipy.sparse")
    m = ModelData(
        v_template=model.v_template.astype(np.float32),
        shapedirs=model.shapedirs,
        posedirs=model.posedirs,
        J_regressor=sp.csc_matrix(model.J_regressor),
        weights=model.weights,
        kintree_table=model.kintree_table.astype(np.uint32),
        f=model.f.astype(np.uint32),
    )
    validate_model(m)
    assert m.J_regressor.dtype == np.float64 and isinstance(m.J_regressor, np.ndarray)
    assert np.array_equal(m.J_regressor, model.J_regressor)
    assert m.f.dtype == np.int64 and m.kintree_table.dtype == np.int64
    assert m.kintree_table[0, 0] == 4294967295


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_numpy_pickles_all_protocols(tmp_path, model, protocol):
    path = tmp_path / "m.pkl"
    data = {k: v for k, v in model.arrays().items()}
    data["J_regressor"] = np.asfortranarray(data["J_regressor"])
    data["bs_style"] = "lbs"
    data["scalar"] = np.float32(1.5)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_model(path)
    _assert_same_arrays(model, loaded)
    assert loaded.extras["bs_style"] == "lbs" and loaded.extras["scalar"] == 1.5


# ---------------------------------------------------------------------------
# smplx compatibility
# ---------------------------------------------------------------------------


def test_smplx_loads_saved_pkl(tmp_path, smpl_sized):
    model = smpl_sized
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    path = save_model(model, tmp_path / "SMPL_NEUTRAL.pkl")
    body = smplx.SMPL(model_path=str(path), num_betas=10)
    with torch.no_grad():
        rest = body()
        np.testing.assert_allclose(rest.vertices[0].numpy(), model.v_template, atol=1e-5)
        gen = torch.Generator().manual_seed(0)
        out = body(
            betas=torch.randn(2, 10, generator=gen),
            body_pose=0.3 * torch.randn(2, 69, generator=gen),
            global_orient=0.3 * torch.randn(2, 3, generator=gen),
        )
    assert out.vertices.shape == (2, 6890, 3)
    assert torch.isfinite(out.vertices).all()
    # A directory resolves to SMPL_NEUTRAL.pkl for both smplx and us.
    body_dir = smplx.SMPL(model_path=str(tmp_path), gender="neutral", num_betas=10)
    assert body_dir.v_template.shape == (6890, 3)
    _assert_same_arrays(model, load_model(tmp_path))


def test_model_data_as_smplx_data_struct(smpl_sized):
    model = smpl_sized
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    body = smplx.SMPL(model_path="unused", data_struct=model, num_betas=10)
    with torch.no_grad():
        out = body()
    np.testing.assert_allclose(out.vertices[0].numpy(), model.v_template, atol=1e-5)


# ---------------------------------------------------------------------------
# Paths, genders, suffixes
# ---------------------------------------------------------------------------


def test_directory_and_gender_resolution(tmp_path, model):
    other = random_model(120, num_betas=10, seed=99)
    save_model(model, tmp_path / "SMPL_NEUTRAL.pkl")
    save_model(other, tmp_path / "SMPL_MALE.npz")
    _assert_same_arrays(model, load_model(tmp_path))
    _assert_same_arrays(model, load_model(tmp_path, gender="NEUTRAL"))
    _assert_same_arrays(other, load_model(tmp_path, gender="Male", ext="npz"))
    _assert_same_arrays(other, load_model(str(tmp_path), gender="male", ext=".npz"))

    with pytest.raises(ModelFileNotFoundError) as info:
        load_model(tmp_path, gender="female")
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "SMPL_FEMALE.pkl") in str(info.value)

    with pytest.raises(ModelFileNotFoundError) as info:
        load_model(tmp_path, gender="male")  # only the npz exists
    assert str(tmp_path / "SMPL_MALE.pkl") in str(info.value)

    msg = _error(load_model, tmp_path, gender="alien")
    assert "alien" in msg and "neutral" in msg and "male" in msg and "female" in msg
    msg = _error(load_model, tmp_path, ext="obj")
    assert ".obj" in msg and ".pkl" in msg and ".npz" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pkl"
    with pytest.raises(ModelFileNotFoundError) as info:
        load_model(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_unknown_suffix(tmp_path, model):
    path = tmp_path / "model.obj"
    path.write_text("v 0 0 0\n")
    msg = _error(load_model, path)
    assert ".obj" in msg and ".pkl" in msg and ".npz" in msg
    msg = _error(save_model, model, tmp_path / "model.json")
    assert ".json" in msg and ".pkl" in msg
    assert not (tmp_path / "model.json").exists()


def test_save_validates_first(tmp_path, model):
    bad = _copy(model, weights=model.weights * 2)
    msg = _error(save_model, bad, tmp_path / "bad.npz")
    assert "weights" in msg
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# Official-style pickles (chumpy + scipy.sparse, Python 2)
# ---------------------------------------------------------------------------


class _GlobalRef:
    """Written as a GLOBAL opcode naming ``module.name`` (whether or not it exists here)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # never called; the pickler only requires a callable
        raise AssertionError("not callable")


class _Py2StylePickler(pickle._Pickler):
    """Writes pickles the way Python 2 did: str as byte strings, numpy's old module names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if self.proto == 0:
            text = repr(raw)[1:]  # a quoted string with escapes
            self.write(pickle.STRING + text.encode("ascii") + b"\n")
        elif len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def _save_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str
    dispatch[_GlobalRef] = _save_ref

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            arr = np.ascontiguousarray(obj)
            return (
                _GlobalRef("numpy.core.multiarray", "_reconstruct"),
                (_GlobalRef("numpy", "ndarray"), (0,), b"b"),
                (1, arr.shape, arr.dtype, False, arr.tobytes()),
            )
        return NotImplemented


def _fake_module(name, **attrs):
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        value.__module__ = name
        value.__name__ = value.__qualname__ = key
        setattr(mod, key, value)
    return mod


@contextlib.contextmanager
def _fake_modules(modules):
    """Install stand-in modules ({name: {attr: class}}) while pickling, then restore sys.modules."""
    saved = {name: sys.modules.get(name) for name in modules}
    for name, attrs in modules.items():
        sys.modules[name] = _fake_module(name, **attrs)
    try:
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _chumpy_classes():
    class Ch:
        """Pickles like chumpy.ch.Ch: a dict state holding the array under 'x' plus bookkeeping."""

        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)

        def __getstate__(self):
            return {
                "x": self.x,
                "_dirty_vars": {"x"},
                "_itr": None,
                "_depends_on_deps": {},
                "_make_dense": False,
                "_make_sparse": False,
            }

    class Reshape:
        def __init__(self, a, newshape):
            self.a, self.newshape = a, newshape

        def __getstate__(self):
            return {"a": self.a, "newshape": self.newshape, "_dirty_vars": {"a", "newshape"}, "_itr": None}

    class csc_matrix:
        """An old-scipy-style CSC matrix state (stored under scipy.sparse.csc)."""

        def __init__(self, dense):
            dense = np.asarray(dense)
            data, indices, indptr = [], [], [0]
            for col in range(dense.shape[1]):
                rows = np.nonzero(dense[:, col])[0]
                data.extend(dense[rows, col])
                indices.extend(rows)
                indptr.append(len(data))
            self.state = {
                "_shape": dense.shape,
                "maxprint": 50,
                "format": "csc",
                "data": np.array(data, dtype=np.float64),
                "indices": np.array(indices, dtype=np.int32),
                "indptr": np.array(indptr, dtype=np.int32),
                "_has_sorted_indices": True,
            }

        def __getstate__(self):
            return self.state

    return Ch, Reshape, csc_matrix


def _official_style_pickle(model, protocol, real_sparse=True):
    """Bytes imitating an official SMPL .pkl (Python 2, chumpy arrays, scipy CSC matrices)."""
    Ch, Reshape, OldCsc = _chumpy_classes()
    fakes = {"chumpy": {}, "chumpy.ch": {"Ch": Ch}, "chumpy.reordering": {"Reshape": Reshape},
             "scipy.sparse.csc": {"csc_matrix": OldCsc}}
    with _fake_modules(fakes):
        data = {
            "v_template": Ch(model.v_template),
            "shapedirs": Reshape(Ch(model.shapedirs.ravel()), model.shapedirs.shape),
            "posedirs": model.posedirs,
            "J_regressor": OldCsc(model.J_regressor),
            "weights": Ch(model.weights),
            "kintree_table": model.kintree_table.astype(np.uint32),
            "f": model.f.astype(np.uint32),
            "J": Ch(model.J_regressor @ model.v_template),
            "weights_prior": model.weights.copy(),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
            "pose_training_info": {"num_poses": 1786, "lambda": 0.5},
            "vert_sym_idxs": np.arange(model.num_vertices)[::-1].copy(),
        }
        if real_sparse:
            sparse = pytest.importorskip("scipy.sparse")
            data["J_regressor_prior"] = sparse.csc_matrix(model.J_regressor)
            data["coo_extra"] = sparse.coo_matrix(model.J_regressor)
        buf = io.BytesIO()
        _Py2StylePickler(buf, protocol=protocol).dump(data)
        return buf.getvalue()


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_official_style_pickle(tmp_path, model, protocol):
    raw = _official_style_pickle(model, protocol)
    assert b"chumpy.ch" in raw and b"scipy.sparse.csc" in raw and b"numpy.core.multiarray" in raw
    if protocol < 2:
        assert b"copy_reg" in raw
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering"):
        assert name not in sys.modules
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    path.write_bytes(raw)

    loaded = load_model(path)

    _assert_same_arrays(model, loaded)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    ex = loaded.extras
    assert ex["bs_style"] == "lbs" and ex["bs_type"] == "lrotmin"
    assert ex["pose_training_info"] == {"num_poses": 1786, "lambda": 0.5}
    np.testing.assert_array_equal(ex["J"], model.J_regressor @ model.v_template)
    np.testing.assert_array_equal(ex["J_regressor_prior"], model.J_regressor)
    np.testing.assert_array_equal(ex["coo_extra"], model.J_regressor)
    np.testing.assert_array_equal(ex["vert_sym_idxs"], np.arange(model.num_vertices)[::-1])


def test_official_style_pickle_loads_without_scipy_or_chumpy(tmp_path, model):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(_official_style_pickle(model, 2, real_sparse=False))
    expected = tmp_path / "expected.npz"
    np.savez(expected, **model.arrays())
    script = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("scipy", "chumpy", "torch", "smplx"):
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
# model_file.py and the safe_pickle.py it imports, as a package of their own: smplfast's and
# smplfast.body's __init__ (which import torch) never run.
import types
pkg = types.ModuleType("standalone_body")
pkg.__path__ = [{str(BODY_DIR)!r}]
sys.modules["standalone_body"] = pkg
mod = importlib.import_module("standalone_body.model_file")
assert "smplfast" not in sys.modules
import numpy as np
m = mod.load_model({str(path)!r})
exp = np.load({str(expected)!r})
for k in exp.files:
    assert np.array_equal(getattr(m, k), exp[k]), k
assert not any(n.split(".")[0] in ("scipy", "chumpy") for n in sys.modules)
print("OK")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


def test_chumpy_object_via_copyreg_newobj(tmp_path, model):
    import copyreg

    class Ch:
        def __init__(self, x):
            self.x = x

        def __reduce__(self):
            return (copyreg.__newobj__, (type(self),), {"x": self.x, "_itr": None})

    with _fake_modules({"chumpy": {}, "chumpy.ch": {"Ch": Ch}}):
        data = dict(model.arrays())
        data["shapedirs"] = Ch(model.shapedirs)
        raw = pickle.dumps(data, protocol=1)
    assert b"copy_reg\n__newobj__" in raw
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    _assert_same_arrays(model, load_model(path))


def test_unsupported_chumpy_object_is_reported(tmp_path, model):
    class Add:
        def __getstate__(self):
            return {"a": 1.0, "b": 2.0}

    with _fake_modules({"chumpy": {}, "chumpy.ch_ops": {"add": Add}}):
        data = dict(model.arrays())
        data["shapedirs"] = Add()
        raw = pickle.dumps(data, protocol=2)
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    msg = _error(load_model, path)
    assert "shapedirs" in msg and "chumpy.ch_ops.add" in msg


# ---------------------------------------------------------------------------
# Malicious pickles
# ---------------------------------------------------------------------------


class _OsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class _Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _NumpyLoad:
    def __reduce__(self):
        return (np.load, ("/nonexistent.npy",))


@pytest.mark.parametrize(
    "payload, refused",
    [
        (_OsSystem, "system"),
        (_Eval, "eval"),
        (_Popen, "Popen"),
        (lambda marker: _NumpyLoad(), "numpy.load"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("top_level", [True, False])
def test_malicious_pickles_refused(tmp_path, model, payload, refused, protocol, top_level):
    marker = tmp_path / "pwned"
    obj = payload(marker)
    if not top_level:
        data = dict(model.arrays())
        data["v_template"] = obj
        obj = data
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    msg = _error(load_model, path)
    assert str(path) in msg
    assert refused in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw, refused",
    [
        (b"c__builtin__\ngetattr\n(c__builtin__\nobject\nS'__subclasses__'\ntR.", "__builtin__.getattr"),
        (b"cposix\nsystem\n(S'true'\ntR.", "posix.system"),
        (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04exec\x93.", "builtins.exec"),
        (b"cnumpy\nload\n.", "numpy.load"),
        (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n.", None),  # harmless but not a dict
    ],
)
def test_hand_written_pickles(tmp_path, raw, refused):
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    msg = _error(load_model, path)
    if refused:
        assert refused in msg and str(path) in msg


@pytest.mark.parametrize(
    "raw",
    [
        # copyreg._reconstructor may not build anything but chumpy / sparse placeholders.
        b"(dp0\nS'v'\nccopy_reg\n_reconstructor\n(c__builtin__\nset\nc__builtin__\nobject\nNtRs.",
        # numpy's _reconstruct may only build ndarrays.
        b"(dp0\nS'v'\ncnumpy.core.multiarray\n_reconstruct\n(c__builtin__\nset\n(I0\ntS'b'\ntRs.",
        # BUILD on a placeholder class (not an instance) must not modify it.
        b"(dp0\nS'v'\ncchumpy.ch\nCh\n(}(S'x'\nI1\ndtbs.",
        # ... and neither may copyreg.__newobj__.
        b"(dp0\nS'v'\nccopy_reg\n__newobj__\n(c__builtin__\nset\ntRs.",
        # numpy.ndarray itself is not callable from a pickle.
        b"(dp0\nS'v'\ncnumpy\nndarray\n(I3\ntRs.",
        # _codecs.encode only for latin-1 byte strings.
        b"(dp0\nS'v'\nc_codecs\nencode\n(S'abc'\nS'rot13'\ntRs.",
        # numpy.zeros: bounded numeric arrays only (no object dtype, no huge allocations).
        b"(dp0\nS'v'\ncnumpy\nzeros\n((I3\ntS'O'\ntRs.",
        b"(dp0\nS'v'\ncnumpy\nzeros\n((I100000\nI100000\nI100000\ntS'<f8'\ntRs.",
        b"(dp0\nS'v'\ncnumpy\nzeros\n((I-1\ntS'<f8'\ntRs.",
    ],
)
def test_restricted_callables_refuse_misuse(tmp_path, raw):
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    _error(load_model, path)


# ---------------------------------------------------------------------------
# Corrupt files and bad contents
# ---------------------------------------------------------------------------


def test_truncated_and_garbage_pkl(tmp_path, model):
    good = save_model(model, tmp_path / "good.pkl").read_bytes()
    for name, raw in [
        ("trunc.pkl", good[: len(good) // 2]),
        ("tiny.pkl", good[:5]),
        ("empty.pkl", b""),
        ("garbage.pkl", os.urandom(4096)),
        ("text.pkl", b"hello world\n"),
    ]:
        path = tmp_path / name
        path.write_bytes(raw)
        msg = _error(load_model, path)
        assert str(path) in msg


def test_corrupt_npz(tmp_path, model):
    good = save_model(model, tmp_path / "good.npz").read_bytes()
    cases = {
        "trunc.npz": good[: len(good) // 2],
        "garbage.npz": os.urandom(2048),
        "empty.npz": b"",
    }
    # A zip whose member is corrupted.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("v_template.npy", b"\x93NUMPY garbage")
    cases["badmember.npz"] = buf.getvalue()
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        msg = _error(load_model, path)
        assert str(path) in msg, name


def test_npz_needing_pickle_is_refused(tmp_path, model):
    # A model key stored as an object array is refused ...
    path = tmp_path / "obj.npz"
    arrays = dict(model.arrays())
    arrays["weights"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)
    msg = _error(load_model, path)
    assert "weights" in msg and "pickle" in msg
    # ... an unused extra stored so (SMPL-X files have some) is skipped, with a warning naming it.
    path = tmp_path / "extra_obj.npz"
    arrays = dict(model.arrays())
    arrays["meta"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match=r"skipped the object arrays \['meta'\]"):
        loaded = load_model(path)
    assert "meta" not in loaded.extras
    np.testing.assert_array_equal(loaded.v_template, model.v_template)


def test_npy_with_npz_suffix(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    _error(load_model, path)


def test_top_level_not_a_dict(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([np.zeros(3)], protocol=2))
    msg = _error(load_model, path)
    assert "dict" in msg and "list" in msg


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_missing_key(tmp_path, model, suffix):
    arrays = dict(model.arrays())
    del arrays["weights"]
    path = tmp_path / f"m{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(arrays, protocol=2))
    else:
        np.savez(path, **arrays)
    msg = _error(load_model, path)
    assert "'weights'" in msg and str(path) in msg
    assert "v_template" in msg and "kintree_table" in msg  # keys found are listed


# ---------------------------------------------------------------------------
# Validation messages
# ---------------------------------------------------------------------------


def test_validate_accepts_good_model(model):
    assert validate_model(_copy(model)) is not None


@pytest.mark.parametrize(
    "key, make, expected, actual",
    [
        ("v_template", lambda m: m.v_template[:, :2], "(V, 3)", "(300, 2)"),
        ("shapedirs", lambda m: m.shapedirs[:-1], "(300, 3, S)", "(299, 3, 10)"),
        ("shapedirs", lambda m: m.shapedirs[:, :, :0], "(300, 3, S)", "(300, 3, 0)"),
        ("shapedirs", lambda m: m.shapedirs[:, :, 0], "(300, 3, S)", "(300, 3)"),
        ("posedirs", lambda m: m.posedirs[:, :, :200], "(300, 3, 207)", "(300, 3, 200)"),
        ("posedirs", lambda m: m.posedirs[:-2], "(300, 3, 207)", "(298, 3, 207)"),
        ("posedirs", lambda m: m.posedirs.reshape(-1, 207).T, "(300, 3, 207)", "(207, 900)"),
        ("J_regressor", lambda m: m.J_regressor[:23], "(24, 300)", "(23, 300)"),
        ("J_regressor", lambda m: m.J_regressor[:, :299], "(24, 300)", "(24, 299)"),
        ("weights", lambda m: m.weights[:299], "(300, 24)", "(299, 24)"),
        ("weights", lambda m: m.weights[:, :23], "(300, 24)", "(300, 23)"),
        ("kintree_table", lambda m: m.kintree_table[:1], "(2, J)", "(1, 24)"),
        ("f", lambda m: m.f[:, :2], "(F, 3)", "(", ),
        ("f", lambda m: m.f[:0], "(F, 3)", "(0, 3)"),
    ],
)
def test_shape_errors(model, key, make, expected, actual):
    bad = _copy(model, **{key: make(model)})
    msg = _error(validate_model, bad)
    assert key in msg and expected in msg and actual in msg
    assert "test-model.pkl" in msg


def test_vertex_count_message(model):
    msg = _error(validate_model, _copy(model, shapedirs=model.shapedirs[:-1]))
    assert (
        "shapedirs has 299 vertices but v_template has 300 "
        "(expected shapedirs of shape (300, 3, S), got (299, 3, 10))"
    ) in msg


def test_kintree_mismatch_with_other_arrays(model):
    kt = model.kintree_table[:, :23]
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    # posedirs is checked against the 23 joints first
    assert "posedirs" in msg and "(300, 3, 198)" in msg and "(300, 3, 207)" in msg


def test_kintree_not_a_tree(model):
    kt = model.kintree_table.copy()
    kt[0, 5] = 7
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "kintree_table is not a tree: joint 5 has parent 7 (parents must come before children)" in msg

    kt = model.kintree_table.copy()
    kt[0, 4] = 4  # a cycle of length one
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "kintree_table is not a tree" in msg and "joint 4 has parent 4" in msg

    kt = model.kintree_table.copy()
    kt[0, 3], kt[0, 6] = 6, 3  # 3 -> 6 -> 3
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "kintree_table is not a tree" in msg

    kt = model.kintree_table.copy()
    kt[0, 9] = 99
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "joint 9 has parent 99" in msg

    kt = model.kintree_table.copy()
    kt[0, 0] = 0
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "root" in msg

    kt = model.kintree_table.copy()
    kt[1, [2, 3]] = kt[1, [3, 2]]
    msg = _error(validate_model, _copy(model, kintree_table=kt))
    assert "kintree_table row 1" in msg and "arange" in msg


def test_root_sentinel_minus_one_accepted(model):
    kt = model.kintree_table.copy()
    kt[0, 0] = -1
    m = validate_model(_copy(model, kintree_table=kt))
    assert m.parents[0] == -1


def test_weights_must_sum_to_one(model):
    w = model.weights.copy()
    w[17] *= 1.1
    w[40] *= 1.01
    msg = _error(validate_model, _copy(model, weights=w))
    assert "weights" in msg and "row 17" in msg and "1.1" in msg

    w = model.weights.copy()
    w[3] = 0.0
    w[3, 0] = 1.5
    w[3, 1] = -0.5
    msg = _error(validate_model, _copy(model, weights=w))
    assert "weights" in msg and "non-negative" in msg and "[3, 1]" in msg

    w = model.weights.copy()
    w[10] += 5e-5 / w.shape[1]  # within tolerance
    validate_model(_copy(model, weights=w))


@pytest.mark.parametrize("key", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(model, key, bad):
    arr = getattr(model, key).copy()
    idx = (5,) + (1,) * (arr.ndim - 1)
    arr[idx] = bad
    msg = _error(validate_model, _copy(model, **{key: arr}))
    assert key in msg and str(idx) in msg


def test_face_index_out_of_range(model):
    f = model.f.copy()
    f[12, 1] = 300
    msg = _error(validate_model, _copy(model, f=f))
    assert "f[12]" in msg and "300" in msg and "[0, 300)" in msg
    f = model.f.copy()
    f[0, 0] = -1
    msg = _error(validate_model, _copy(model, f=f))
    assert "f[0]" in msg


def test_non_integer_faces(model):
    f = model.f.astype(np.float64)
    validate_model(_copy(model, f=f))  # integral floats are fine
    f[2, 2] += 0.5
    msg = _error(ModelData, **{**model.arrays(), "f": f})
    assert "f" in msg and "integers" in msg


def test_non_numeric_array(model):
    msg = _error(ModelData, **{**model.arrays(), "v_template": np.array([["a", "b", "c"]])})
    assert "v_template" in msg


def test_validate_rejects_other_types():
    _error(validate_model, {"v_template": np.zeros((3, 3))})
