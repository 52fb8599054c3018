"""Checks every backward custom op runs on its incoming gradients before a kernel reads them.

A backward op is public (``torch.ops.smplfast.*_backward``) and its kernel reads the gradient with the
forward's sizes, so a gradient of another shape, dtype or device would be read out of bounds or
misinterpreted. These checks run in the op and in its fake (meta) implementation."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor


def check_grad(op: str, name: str, grad: Tensor, shape: Sequence[int], like: Tensor,
               any_float: bool = False) -> None:
    """Raise unless ``grad`` is a tensor of exactly ``shape`` on ``like``'s device with ``like``'s dtype
    (any float dtype when ``any_float``: the op converts it)."""
    if not isinstance(grad, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(grad).__name__}")
    shape = tuple(int(s) for s in shape)
    if tuple(grad.shape) != shape:
        raise ValueError(f"{op}: {name} must have the forward output's shape {shape}; got {tuple(grad.shape)}")
    if any_float:
        if not grad.dtype.is_floating_point:
            raise TypeError(f"{op}: {name} must have a floating-point dtype; got {grad.dtype}")
    elif grad.dtype != like.dtype:
        raise TypeError(f"{op}: {name} must have dtype {like.dtype} (the forward's); got {grad.dtype}")
    if grad.device != like.device:
        raise ValueError(f"{op}: {name} is on {grad.device} but the forward's inputs are on {like.device}")


def check_saved(op: str, name: str, t: Tensor, shape: Sequence[Optional[int]], like: Tensor) -> None:
    """A saved forward input/output handed to a backward op: same dtype and device as ``like`` and
    ``shape`` (None = any size)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.dim() == len(shape) and all(s is None or int(s) == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(int(s)) for s in shape) + ")"
        raise ValueError(f"{op}: {name} must have shape {want}; got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{op}: {name} is on {t.device} but the other inputs are on {like.device}")
    if t.dtype.is_floating_point and like.dtype.is_floating_point and t.dtype != like.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but the other inputs have {like.dtype}")
