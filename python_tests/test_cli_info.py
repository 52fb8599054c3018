"""``python -m smplfast`` runs the command, and ``info`` tells compiled CUDA kernels from usable GPUs."""
import json
import subprocess
import sys

import smplfast
from smplfast._backend import describe_build


def test_python_dash_m_runs_the_command(tmp_path):
    # outside the source tree: the installed package, as a user runs it
    out = subprocess.run([sys.executable, "-m", "smplfast", "info"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    first, rest = out.stdout.split("\n", 1)
    info = json.loads(rest)
    assert first == describe_build(info)
    assert info["version"] == smplfast.__version__


def test_compiled_kernels_are_not_usable_gpus():
    assert describe_build({"cuda": True, "cuda_devices_visible": 0}) == "CUDA kernels: compiled | usable GPUs: 0"
    assert describe_build({"cuda": False, "cuda_devices_visible": 0}).startswith("CUDA kernels: not compiled")
    assert describe_build({"cuda": True, "cuda_devices_visible": 2}).endswith("usable GPUs: 2")
    assert f"usable GPUs: {int(smplfast.cuda_available()) and smplfast.build_info()['cuda_devices_visible']}" in describe_build()


def test_a_source_tree_without_the_compiled_module_names_the_cause(tmp_path):
    """Importing the package from a repository root (its source folder has no compiled module) says so
    and gives the fix, instead of only 'install the package'."""
    import shutil
    from pathlib import Path

    import smplfast._backend as backend

    repo = tmp_path / "repo"
    pkg = repo / "pkgcopy"
    pkg.mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shutil.copy(Path(backend.__file__), pkg / "_backend.py")
    (pkg / "__init__.py").write_text("")
    out = subprocess.run([sys.executable, "-c", "import pkgcopy._backend"], cwd=repo, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "compiled module smplfast._C is missing from the source folder" in out.stderr
    assert "pip install -e ." in out.stderr and "run from another folder" in out.stderr
