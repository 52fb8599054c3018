"""When the ops read tensor *values* to validate them (index ranges, finiteness).

Shapes, dtypes and devices are always checked: they cost nothing. Reading values costs a copy to the host,
which on CUDA is a device synchronisation: it stalls the stream and rules out CUDA-graph capture. So:

* **Model constants** (faces, the kinematic tree, skinning indices, joint-regressor structure) are
  validated **once per tensor** by :func:`check_once`: the first call pays the (one) sync, later calls
  with the same, unmodified tensor pay nothing. A tensor modified in place (its version counter
  changes) or a new tensor is validated again.
* **Per-call data** (vertices, keypoints, UV coordinates and part labels) is validated on the CPU
  always, and on CUDA only when value checks are on: :func:`set_value_checks`, the context manager
  :func:`value_checks`, or the environment variable ``SMPLFAST_VALUE_CHECKS=1``. With them off the
  kernels still never read out of bounds: what they cannot use is culled (non-finite faces) or
  produces NaN (an out-of-range UV lookup), as each op documents.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Callable, Dict, Iterator, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["value_checks_enabled", "set_value_checks", "value_checks", "check_once"]

_cuda_checks = os.environ.get("SMPLFAST_VALUE_CHECKS", "") == "1"
_lock = threading.Lock()
# id(tensor) -> (weak reference, version) for every tensor of a validated group, keyed by the group's ids
_validated: Dict[Tuple[str, Tuple[int, ...]], Tuple[Tuple[weakref.ref, ...], Tuple[int, ...]]] = {}
_MAX_ENTRIES = 256


def value_checks_enabled(device: torch.device) -> bool:
    """Whether per-call value checks run for tensors on ``device`` (always on the CPU)."""
    return device.type != "cuda" or _cuda_checks


def set_value_checks(enabled: bool) -> bool:
    """Turn per-call value checks on CUDA on or off (process-wide); returns the previous setting."""
    global _cuda_checks
    previous, _cuda_checks = _cuda_checks, bool(enabled)
    return previous


@contextlib.contextmanager
def value_checks(enabled: bool = True) -> Iterator[None]:
    """``with smplfast.ops.value_checks(): ...`` runs the CUDA per-call value checks inside the block."""
    previous = set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)


def check_once(name: str, tensors: Sequence[Tensor], check: Callable[[], None]) -> None:
    """Run ``check()`` unless it already passed for exactly these tensor objects, unmodified since.

    ``name`` separates the checks of different ops on the same tensors. Tensors under
    ``torch.compile``'s fake-tensor tracing are never cached (their values do not exist)."""
    if any(not isinstance(t, Tensor) for t in tensors):
        check()
        return
    key = (name, tuple(id(t) for t in tensors))
    versions = tuple(t._version for t in tensors)
    with _lock:
        hit = _validated.get(key)
    if hit is not None:
        refs, seen = hit
        if all(r() is t for r, t in zip(refs, tensors)) and seen == versions:
            return
    check()
    try:
        refs = tuple(weakref.ref(t) for t in tensors)
    except TypeError:  # a tensor subclass without weak references: no caching
        return
    with _lock:
        if len(_validated) >= _MAX_ENTRIES:  # drop entries whose tensors are gone, then the oldest
            dead = [k for k, (rs, _) in _validated.items() if any(r() is None for r in rs)]
            for k in dead or list(_validated)[: _MAX_ENTRIES // 2]:
                _validated.pop(k, None)
        _validated[key] = (refs, versions)
