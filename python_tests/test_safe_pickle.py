"""Hostile model / prior pickles: the restricted unpickler must refuse them without crashing or allocating.

Loading happens in subprocesses so that a memory-safety bug shows up as a signal (segfault)
instead of taking the test runner down.
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from smplfast.body.model_file import ModelFileError, load_model
from smplfast.body.random_model import random_model

_ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
# Workers run outside the source tree, so they import the installed package (with its compiled module),
# not the repository's smplfast/ folder.
_CWD = tempfile.gettempdir()


def _run(script, timeout=120):
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=timeout, env=_ENV, cwd=_CWD)
    assert res.returncode >= 0, f"worker killed by signal {-res.returncode}\n{res.stderr[-3000:]}"
    return res


def _binunicode(s):
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _dtype_record(spec, state):
    """numpy.dtype(spec, False, True) followed by BUILD(state) -- written opcode by opcode."""
    out = b"cnumpy\ndtype\n" + _binunicode(spec) + b"\x89\x88\x87R"  # GLOBAL, args, TUPLE3, REDUCE
    out += b"(" + b"".join(_item(v) for v in state) + b"tb"             # MARK ... TUPLE, BUILD
    return out


def _item(v):
    if v is None:
        return b"N"
    if isinstance(v, str):
        return _binunicode(v)
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    raise TypeError(v)


def _evil_array(dtype_bytes, raw, shape=(2,), rebuild_dtype=None, rebuild_raw=None):
    """_reconstruct(ndarray, (0,), b'b') + BUILD((1, shape, <dtype>, False, raw)) -- by hand."""
    out = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
    out += b"K\x00\x85" + b"C\x01b" + b"\x87R"                          # (0,), b'b', TUPLE3, REDUCE
    out += b"(K\x01" + b"(" + b"".join(b"J" + struct.pack("<i", s) for s in shape) + b"t"
    out += dtype_bytes + b"q\x01"                                        # memo the dtype as 1
    out += b"\x89" + b"C" + bytes([len(raw)]) + raw + b"tb"              # False, raw, TUPLE, BUILD
    if rebuild_dtype is not None:                                        # BUILD the (shared) dtype again
        out = out + b"h\x01" + b"(" + b"".join(_item(v) for v in rebuild_dtype) + b"tb0"
    if rebuild_raw is not None:                                          # BUILD the dtype with hand-written state
        out = out + b"h\x01" + rebuild_raw + b"b0"
    return out


def _evil_pickles():
    ptrs = struct.pack("<QQ", 0x4141414141414140, 0x4242424242424240)
    obj_state = (3, "|", None, None, None, -1, -1, 63)
    return {
        # dtype 'O8' (object) -> raw file bytes would become PyObject pointers
        "object_typechar": _evil_array(_dtype_record("O8", obj_state), ptrs),
        # a float64 dtype whose BUILD state claims object flags
        "object_flags": _evil_array(_dtype_record("f8", obj_state), ptrs),
        # a harmless float64 array whose dtype is re-BUILT into an object dtype afterwards
        "rebuild_dtype_after": _evil_array(_dtype_record("f8", (3, "<", None, None, None, -1, -1, 0)), ptrs,
                                           rebuild_dtype=obj_state),
        # a void dtype re-BUILT into a structured dtype whose fields are object pointers into the file's bytes
        "structured_object_fields": _evil_array(
            _dtype_record("V16", (3, "|", None, None, None, 16, 1, 0)), ptrs, shape=(1,),
            rebuild_raw=b"(K\x03" + _binunicode("|") + b"N" + b"(" + _binunicode("a") + _binunicode("b") + b"t"
            + b"}" + _binunicode("a") + _dtype_record("O8", obj_state) + b"K\x00\x86s"
            + _binunicode("b") + _dtype_record("O8", obj_state) + b"K\x08\x86s"
            + b"J\x10\x00\x00\x00K\x01K?t"),
        # structured / void dtypes
        "void": _evil_array(_dtype_record("V16", (3, "|", None, None, None, 16, 1, 0)), ptrs, shape=(1,)),
        "datetime": _evil_array(_dtype_record("M8", (4, "<", None, None, None, -1, -1, 0, None)), ptrs),
    }


def _wrap(array_ops, key="v_template"):
    return b"\x80\x02}" + _binunicode(key) + array_ops + b"s."


@pytest.mark.parametrize("name", sorted(_evil_pickles()))
def test_malicious_dtype_pickle_is_refused_and_interpreter_survives(tmp_path, name):
    raw = _wrap(_evil_pickles()[name])
    assert len(raw) < 400
    model_path = tmp_path / "evil.pkl"
    model_path.write_bytes(raw)
    prior_path = tmp_path / "gmm_08.pkl"
    prior_path.write_bytes(_wrap(_evil_pickles()[name], key="means"))
    res = _run(f"""
        import gc
        from smplfast.body.model_file import ModelFileError, load_model
        from smplfast.fitting.priors import PriorFileError, load_gmm
        try:
            load_model({str(model_path)!r})
        except ModelFileError as exc:
            print("MODEL REFUSED:", exc)
        try:
            load_gmm({str(prior_path)!r})
        except PriorFileError as exc:
            print("PRIOR REFUSED:", exc)
        gc.collect()
        print("SURVIVED")
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MODEL REFUSED" in res.stdout and "PRIOR REFUSED" in res.stdout and "SURVIVED" in res.stdout, res.stdout
    # and in this process too
    with pytest.raises(ModelFileError):
        load_model(model_path)


def test_dtype_whitelist_keeps_numeric_both_byte_orders(tmp_path):
    m = random_model(30, num_betas=2, seed=3)
    data = {k: v for k, v in m.arrays().items()}
    data["v_template"] = data["v_template"].astype(">f4")
    data["f"] = data["f"].astype(">u2")
    data["kintree_table"] = data["kintree_table"].astype("<i8")
    data["mask"] = np.ones(4, dtype=bool)
    data["half"] = np.arange(3, dtype=np.float16)
    data["names"] = np.array(["a", "bc"])
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.v_template, m.v_template.astype(">f4").astype(np.float64))
    np.testing.assert_array_equal(loaded.f, m.f)
    assert loaded.extras["mask"].dtype == bool and loaded.extras["half"].dtype == np.float16
    assert loaded.extras["names"].tolist() == ["a", "bc"]


def test_huge_zeros_refused_without_allocating(tmp_path):
    # {'f': numpy.zeros((10**8, 3), '|i1')}: 300 MB as int8, 2.4 GB once converted to int64
    raw = b"\x80\x02}" + _binunicode("f") + b"cnumpy\nzeros\n" + b"J" + struct.pack("<i", 10 ** 8) + b"K\x03\x86" \
        + _binunicode("|i1") + b"\x86R" + b"s."
    assert len(raw) < 100
    path = tmp_path / "zeros.pkl"
    path.write_bytes(raw)
    res = _run(f"""
        import resource, time
        from smplfast.body.model_file import ModelFileError, load_model
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
        t = time.perf_counter()
        try:
            load_model({str(path)!r})
            print("LOADED")
        except ModelFileError as exc:
            print("REFUSED", round(time.perf_counter() - t, 3), exc)
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("REFUSED"), res.stdout + res.stderr[-2000:]
    assert float(res.stdout.split()[1]) < 2.0
    assert "refusing" in res.stdout


def test_declared_shape_must_match_bytes(tmp_path):
    # a _reconstruct that declares (10**6, 3) float64 but carries 16 bytes
    arr = _evil_array(_dtype_record("f8", (3, "<", None, None, None, -1, -1, 0)), b"\0" * 16, shape=(10 ** 6, 3))
    path = tmp_path / "m.pkl"
    path.write_bytes(_wrap(arr, key="v_template"))
    with pytest.raises(ModelFileError):
        load_model(path)
    # an array for a key with a known layout is checked before it is built
    arr = _evil_array(_dtype_record("f8", (3, "<", None, None, None, -1, -1, 0)), b"\0" * 16, shape=(1, 2))
    path.write_bytes(_wrap(arr, key="f"))
    with pytest.raises(ModelFileError, match=r"expected f of shape \(F, 3\), got \(1, 2\)"):
        load_model(path)


def test_budget_counts_shared_and_cyclic_references(tmp_path):
    # a list that contains itself, and the same zeros record referenced from many keys
    raw = (b"\x80\x02}q\x00" + _binunicode("loop") + b"]q\x01h\x01a" + b"s"
           + _binunicode("z") + b"cnumpy\nzeros\nK\x05\x85R" + b"q\x02s"
           + _binunicode("z2") + b"h\x02s.")
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    with pytest.raises(ModelFileError, match="missing required key"):
        load_model(path)


_FUZZ_WORKER = r"""
import json, pickle, pickletools, random, resource, sys, traceback
from smplfast.body.model_file import ModelFileError, load_model
from smplfast.body.random_model import random_model

vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 30), resource.RLIM_INFINITY))
seed, count, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
m = random_model(24, num_betas=2, seed=seed)
data = dict(m.arrays())
data["extra"] = {"names": ["a", b"b"], "t": (1, 2.5, None), "s": {1, 2}}
data["names"] = m.f[:2].astype(">u4")
bases = [pickle.dumps(data, protocol=p) for p in (0, 2, 4, 5)]

# chumpy / scipy.sparse style objects, pickled through stand-in modules (neither library is needed)
import types
class Ch:
    def __init__(self, x):
        self.x = x
    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": {"x"}, "_itr": None}
class Reshape:
    def __init__(self, a, newshape):
        self.a, self.newshape = a, newshape
    def __getstate__(self):
        return {"a": self.a, "newshape": self.newshape}
class csc_matrix:
    def __init__(self, dense):
        cols = [dense[:, j].nonzero()[0] for j in range(dense.shape[1])]
        self.s = {"_shape": dense.shape, "data": dense.T[dense.T != 0].astype("f8"),
                  "indices": np.concatenate(cols).astype("i4"),
                  "indptr": np.cumsum([0] + [len(c) for c in cols]).astype("i4")}
    def __getstate__(self):
        return self.s
import numpy as np
sys.modules["chumpy"] = types.ModuleType("chumpy")
for modname, cls in (("chumpy.ch", Ch), ("chumpy.reordering", Reshape), ("scipy.sparse.csc", csc_matrix)):
    mod = sys.modules[modname] = types.ModuleType(modname)
    cls.__module__ = modname
    setattr(mod, cls.__name__, cls)
cdata = dict(data)
cdata["v_template"] = Ch(m.v_template)
cdata["shapedirs"] = Reshape(Ch(m.shapedirs.ravel()), m.shapedirs.shape)
cdata["J_regressor"] = csc_matrix(m.J_regressor)
bases += [pickle.dumps(cdata, protocol=p) for p in (0, 2)]
for modname in ("chumpy", "chumpy.ch", "chumpy.reordering", "scipy.sparse.csc"):
    del sys.modules[modname]
for b in bases:
    with open(tmp + "/base.pkl", "wb") as fh:
        fh.write(b)
    load_model(tmp + "/base.pkl")
structure = [[pos for _, _, pos in pickletools.genops(b)] for b in bases]
opcodes = [op.code.encode("latin1") for op in pickletools.opcodes]

def mutate(i):
    b = rng.randrange(len(bases))
    raw = bytearray(bases[b])
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        pos = rng.choice(structure[b]) if rng.random() < 0.7 else rng.randrange(len(raw))
        pos = min(pos + rng.randint(0, 4), len(raw) - 1)
        if what < 0.4:
            raw[pos] ^= 1 << rng.randrange(8)
        elif what < 0.7:
            ins = rng.choice(opcodes) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
            raw[pos:pos] = ins
        elif what < 0.8:
            raw[pos] = rng.randrange(256)
        elif what < 0.9:
            del raw[pos:pos + rng.randint(1, 16)]
        else:
            raw = raw[:rng.randrange(len(raw))]
            if not raw:
                raw = bytearray(b".")
    return bytes(raw)

unexpected, outcomes = [], {"ok": 0, "refused": 0}
path = tmp + "/fuzz.pkl"
for i in range(count):
    raw = mutate(i)
    with open(path, "wb") as fh:
        fh.write(raw)
    try:
        load_model(path)
        outcomes["ok"] += 1
    except ModelFileError:
        outcomes["refused"] += 1
    except BaseException as exc:
        unexpected.append({"i": i, "type": type(exc).__name__, "msg": str(exc)[:300],
                           "tb": traceback.format_exc()[-1500:], "raw": raw.hex() if len(raw) < 4096 else None})
        if len(unexpected) > 20:
            break
print(json.dumps({"unexpected": unexpected, "outcomes": outcomes}))
"""


def _fuzz(tmp_path, seeds, per_worker):
    for seed in seeds:
        res = subprocess.run([sys.executable, "-c", _FUZZ_WORKER, str(seed), str(per_worker), str(tmp_path)],
                             capture_output=True, text=True, timeout=300, env=_ENV, cwd=_CWD)
        assert res.returncode >= 0, f"seed {seed}: worker killed by signal {-res.returncode}: {res.stderr[-3000:]}"
        assert res.returncode == 0, f"seed {seed}: worker failed: {res.stderr[-3000:]}"
        report = json.loads(res.stdout.strip().splitlines()[-1])
        assert not report["unexpected"], f"seed {seed}: {json.dumps(report['unexpected'][:3], indent=1)}"
        assert report["outcomes"]["refused"] > 0


def test_fuzz_mutated_model_pickles(tmp_path):
    """A few thousand mutations (bit flips, opcode insertion, deletion, truncation): ModelFileError or success only."""
    scale = int(os.environ.get("SMPLFAST_FUZZ_SCALE", "1"))  # e.g. 20 for a long run
    t = time.perf_counter()
    _fuzz(tmp_path, seeds=range(2 * scale), per_worker=1500)
    assert time.perf_counter() - t < 120 * scale


def test_prior_pickle_declared_shape_checked_before_building(tmp_path):
    from smplfast.fitting.priors import PriorFileError, load_gmm

    arr = _evil_array(_dtype_record("f8", (3, "<", None, None, None, -1, -1, 0)), b"\0" * 16, shape=(2,))
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(_wrap(arr, key="means"))
    with pytest.raises(PriorFileError, match=r"means must have shape \(M, D\); got \(2,\)"):
        load_gmm(path)
    # a huge declared zeros array is refused by the byte budget, before allocation
    raw = b"\x80\x02}" + _binunicode("covars") + b"cnumpy\nzeros\n" + b"(J" + struct.pack("<i", 10 ** 6) \
        + b"K\x45K\x45t" + b"\x85R" + b"s."
    path.write_bytes(raw)
    with pytest.raises(PriorFileError, match="refusing"):
        load_gmm(path)


def test_shared_array_copied_by_many_chumpy_nodes_hits_budget(tmp_path, monkeypatch):
    from smplfast.body import safe_pickle

    # one 800-byte array; 50 chumpy transposes of it would each copy it (Reshape of a transpose)
    base = _evil_array(_dtype_record("f8", (3, "<", None, None, None, -1, -1, 0)), b"\0" * 200, shape=(5, 5))
    # memo the array as 2 (the dtype used 1), then build 50 Reshape(transpose(a)) records in a list
    ch = b"cchumpy.reordering\ntranspose\n)\x81q\x03" + b"}" + _binunicode("a") + b"h\x02s" + b"b"
    items = b"".join(b"cchumpy.reordering\nReshape\n)\x81" + b"}" + _binunicode("a") + b"h\x03s"
                     + _binunicode("newshape") + b"J\x19\x00\x00\x00\x85s" + b"b" for _ in range(50))
    raw = b"\x80\x02}" + _binunicode("base") + base + b"q\x02s" + _binunicode("t") + ch + b"s" \
        + _binunicode("many") + b"(" + items + b"ls."
    path = tmp_path / "m.pkl"
    path.write_bytes(raw)
    raw_dict = safe_pickle.load_records(path)
    monkeypatch.setattr(safe_pickle, "MAX_TOTAL_BYTES", 8 * 25 * 10)  # room for 10 copies, not 50
    with pytest.raises(safe_pickle.SafePickleError, match="exceed"):
        safe_pickle.materialize(raw_dict["many"], "many", str(path))
    monkeypatch.setattr(safe_pickle, "MAX_TOTAL_BYTES", 8 * 25 * 100)
    out = safe_pickle.materialize(raw_dict["many"], "many", str(path))
    assert len(out) == 50 and out[0].shape == (25,)


# ------------------------------------------------------------------------------- the module's interface
def test_safe_pickle_interface_round_trip(tmp_path):
    """load_records gives inert records; declared_shape reads them; a Materializer builds each once."""
    from smplfast.body import safe_pickle
    from smplfast.body.model_file import save_model

    model = random_model(30, num_betas=3, seed=3)
    path = save_model(model, tmp_path / "m.pkl")
    records = safe_pickle.load_records(path)
    assert sorted(records) == sorted(model.arrays())
    build = safe_pickle.Materializer(str(path))
    for key, expected in model.arrays().items():
        rec = records[key]
        assert safe_pickle.is_record(rec)
        assert safe_pickle.declared_shape(rec) == expected.shape
        arr = build(rec, key)
        np.testing.assert_array_equal(arr, expected)
        assert build(rec, key) is arr  # memoised: shared records are built once per file
        assert not safe_pickle.is_record(arr) and safe_pickle.declared_shape(arr) is None
    np.testing.assert_array_equal(safe_pickle.materialize(records["f"], "f", str(path)), model.f)


def test_safe_pickle_errors_match_the_loaders(tmp_path):
    """SafePickleError carries the text load_model and load_gmm report after their own prefixes."""
    from smplfast.body import safe_pickle
    from smplfast.fitting.priors import PriorFileError, load_gmm

    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(b"\x80\x02}" + _binunicode("means") + b"cos\nsystem\n" + b"s.")
    with pytest.raises(safe_pickle.SafePickleError, match="refusing to load") as sp_exc:
        safe_pickle.load_records(path)
    assert isinstance(sp_exc.value, ValueError) and "os.system" in str(sp_exc.value)
    with pytest.raises(ModelFileError) as mf_exc:
        load_model(path)
    assert str(mf_exc.value) == str(sp_exc.value)
    with pytest.raises(PriorFileError) as pr_exc:
        load_gmm(path)
    assert str(pr_exc.value) == f"pose prior {str(path)!r}: {sp_exc.value}"


def test_safe_pickle_needs_only_numpy():
    """The unpickler is a leaf: model_file and the prior loader import it, never the other way round."""
    import ast
    from pathlib import Path

    from smplfast.body import safe_pickle

    tree = ast.parse(Path(safe_pickle.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {("." if node.level else "") + (node.module or "").split(".")[0]
                 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "io", "pickle", "re", "typing", "numpy"}, imported
    assert set(safe_pickle.__all__) == {"MAX_TOTAL_BYTES", "Materializer", "SafePickleError", "declared_shape",
                                         "is_record", "load_records", "materialize"}
