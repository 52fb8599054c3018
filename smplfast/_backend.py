"""Loading of the compiled core and the checks every op wrapper runs before handing it pointers."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

def _missing_core_message(exc: Exception) -> str:
    """Why smplfast._C cannot be imported, and the fix. The usual cause after ``pip install .`` is the
    source folder shadowing the installed package (Python imports ``./smplfast`` from the repository root)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    in_source_tree = os.path.isfile(os.path.join(root, "pyproject.toml"))
    installed = None
    if in_source_tree:  # is there another smplfast on sys.path, e.g. in site-packages?
        for entry in sys.path:
            entry = os.path.abspath(entry or os.getcwd())
            if entry == root:
                continue
            candidate = os.path.join(entry, "smplfast", "__init__.py")
            if os.path.isfile(candidate):
                installed = os.path.dirname(candidate)
                break
    if in_source_tree:
        msg = (f"smplfast's compiled module smplfast._C is missing from the source folder {here}, which Python "
               "imported because it is run from the repository root")
        msg += (f" (it shadows the installed package at {installed})" if installed else "")
        msg += ("; run from another folder, or build in place for development with `pip install -e .` "
                "(editable install: the source folder then has the compiled module)")
    else:
        msg = "smplfast's compiled module smplfast._C is missing: install the package with `pip install .`"
    return f"{msg} (original error: {exc})"


try:
    from . import _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(_missing_core_message(exc)) from exc

FLOAT_DTYPES = (torch.float32, torch.float64)


def build_info() -> dict:
    """What the compiled core contains: version, CUDA (``cuda``: the CUDA kernels were compiled in, and for
    which architectures), OpenMP, compiler; plus ``cuda_devices_visible``, the GPUs the kernels can use
    now (0 on a machine without one, even when ``cuda`` is True)."""
    info = dict(_C.build_info())
    info["cuda_devices_visible"] = _C.cuda_device_count() if info["cuda"] else 0
    return info


def describe_build(info: Optional[dict] = None) -> str:
    """One line for people: ``CUDA kernels: compiled | usable GPUs: 0`` (compiled is not usable)."""
    info = build_info() if info is None else info
    kernels = "compiled" if info.get("cuda") else "not compiled (CPU only)"
    return f"CUDA kernels: {kernels} | usable GPUs: {info.get('cuda_devices_visible', 0)}"


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled in and a CUDA device is visible."""
    return bool(_C.build_info()["cuda"]) and _C.cuda_device_count() > 0


# Oldest Linux driver of each CUDA major version (minor-version compatibility: any 13.x runtime runs on
# a driver for 13.0 or newer).
_MIN_LINUX_DRIVER = {12: "525.60.13", 13: "580.65.06"}
_driver_checked = False


def _version_str(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def cuda_driver_problem(versions: Optional[tuple] = None) -> Optional[str]:
    """Why the installed NVIDIA driver cannot run smplfast's CUDA kernels, or None when it can (or when
    the kernels were not compiled in). The kernels link the CUDA runtime statically (version
    ``build_info()["cuda_runtime_version"]``, e.g. 13.0), so they need a driver of that CUDA major
    version or newer, even when torch's own wheel (built for CUDA 12.x) runs on an older one."""
    if versions is None:
        if not hasattr(_C, "cuda_driver_version"):  # a compiled core older than this check
            return None
        versions = _C.cuda_driver_version()
    driver, runtime = versions
    if runtime == 0:
        return None
    if driver > 0 and driver // 1000 >= runtime // 1000:
        return None
    need = f"an NVIDIA driver supporting CUDA {runtime // 1000}.x"
    if runtime // 1000 in _MIN_LINUX_DRIVER:
        need += f" (Linux driver >= {_MIN_LINUX_DRIVER[runtime // 1000]})"
    have = (f"this machine's driver supports CUDA {_version_str(driver)}" if driver > 0
            else "no NVIDIA driver was found")
    return (f"smplfast's CUDA kernels were built with the CUDA {_version_str(runtime)} runtime (statically linked), "
            f"which needs {need}; {have}. Update the driver, or rebuild smplfast with a CUDA toolkit the driver "
            "supports (CUDACXX=/path/to/nvcc pip install --no-cache-dir .), or use CPU tensors.")


def check_cuda_driver() -> None:
    """Raise a clear RuntimeError at the first CUDA call if the driver is too old for the kernels."""
    global _driver_checked
    if _driver_checked:
        return
    problem = cuda_driver_problem()
    if problem is not None:
        raise RuntimeError(problem)
    _driver_checked = True


#: Whether the compiled module holds CUDA kernels (read once: build_info() builds a dict per call).
_BUILT_WITH_CUDA = bool(_C.build_info()["cuda"])


def target(t: torch.Tensor) -> "_C.Target":
    """Where a kernel runs for tensor `t`: the CPU, or its CUDA device on torch's current stream."""
    if t.device.type == "cpu":
        return _C.Target(0, 0, 0)
    if t.device.type == "cuda":
        if not _BUILT_WITH_CUDA:
            raise RuntimeError(
                "smplfast was built without CUDA kernels, but got a tensor on "
                f"{t.device}; move the inputs to the CPU or rebuild with SMPLFAST_CUDA=ON "
                "(see smplfast.build_info())"
            )
        check_cuda_driver()
        stream = torch.cuda.current_stream(t.device).cuda_stream
        return _C.Target(1, t.device.index if t.device.index is not None else 0, stream)
    raise RuntimeError(f"smplfast kernels run on cpu or cuda tensors, got a tensor on {t.device}")


def dtype_code(t: torch.Tensor) -> int:
    return 0 if t.dtype == torch.float32 else 1


def check_float(op: str, name: str, t: torch.Tensor, shape: Sequence[Optional[int]]) -> None:
    """Raise a clear error unless `t` is a float32/float64 tensor of `shape` (None = any size)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
    check_shape(op, name, t, shape)


def check_shape(op: str, name: str, t: torch.Tensor, shape: Sequence[Optional[int]]) -> None:
    ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{op}: {name} must have shape {want}; got {tuple(t.shape)}")


def check_same(op: str, ref_name: str, ref: torch.Tensor, others: Iterable[tuple]) -> None:
    """Every (name, tensor) in `others` must share `ref`'s device and dtype."""
    for name, t in others:
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
        if t.dtype.is_floating_point and t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")


def check_finite(op: str, name: str, t: torch.Tensor) -> None:
    """Raise if `t` holds NaN or Inf, naming the first bad index (costs a device sync on CUDA)."""
    if t.numel() == 0:
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"{op}: {name} contains NaN or Inf (first at index {first}, value {t[first].item()})")
