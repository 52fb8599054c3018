"""Axis-angle -> rotation matrix (smplx's convention), as a custom op with analytic backward."""
from __future__ import annotations

import torch
from torch import Tensor

from .._backend import _C, check_float, dtype_code, target
from ._grad_checks import check_grad

OP = "smplfast.rodrigues"


def rodrigues_reference(aa: Tensor) -> Tensor:
    """Pure-PyTorch specification: R = I + sin(t) K + (1 - cos(t)) K^2 with K = [aa / t]_x and
    t = |aa + 1e-8| (the small offset is smplx's; it keeps the map smooth at aa = 0)."""
    shape = aa.shape[:-1]
    v = aa.reshape(-1, 3)
    theta = torch.norm(v + 1e-8, dim=1, keepdim=True)
    n = v / theta
    s, c = torch.sin(theta)[:, :, None], torch.cos(theta)[:, :, None]
    zero = torch.zeros_like(n[:, 0])
    K = torch.stack([zero, -n[:, 2], n[:, 1], n[:, 2], zero, -n[:, 0], -n[:, 1], n[:, 0], zero], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    R = eye + s * K + (1 - c) * torch.bmm(K, K)
    return R.reshape(*shape, 3, 3)


def _check(aa: Tensor) -> None:
    check_float(OP, "aa", aa, [None] * (aa.dim() - 1) + [3] if aa.dim() >= 1 else [3])


@torch.library.custom_op("smplfast::rodrigues", mutates_args=())
def _rodrigues(aa: Tensor) -> Tensor:
    _check(aa)
    aa_c = aa.contiguous()
    out = aa.new_empty(aa.shape[:-1] + (3, 3))
    _C.rodrigues_forward(target(aa), dtype_code(aa), aa_c.numel() // 3, aa_c.data_ptr(), out.data_ptr())
    return out


@_rodrigues.register_fake
def _(aa: Tensor) -> Tensor:
    _check(aa)
    return aa.new_empty(aa.shape[:-1] + (3, 3))


def _check_backward(grad_R: Tensor, aa: Tensor) -> None:
    _check(aa)
    check_grad(OP + "_backward", "grad_R", grad_R, tuple(aa.shape[:-1]) + (3, 3), aa)


@torch.library.custom_op("smplfast::rodrigues_backward", mutates_args=())
def _rodrigues_backward(grad_R: Tensor, aa: Tensor) -> Tensor:
    _check_backward(grad_R, aa)
    aa_c, g_c = aa.contiguous(), grad_R.contiguous()
    out = torch.empty_like(aa_c)
    _C.rodrigues_backward(target(aa), dtype_code(aa), aa_c.numel() // 3, aa_c.data_ptr(), g_c.data_ptr(), out.data_ptr())
    return out


@_rodrigues_backward.register_fake
def _(grad_R: Tensor, aa: Tensor) -> Tensor:
    _check_backward(grad_R, aa)
    return torch.empty_like(aa, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad_R):
    (aa,) = ctx.saved_tensors
    return _rodrigues_backward(grad_R, aa)


_rodrigues.register_autograd(_backward, setup_context=_setup)


def rodrigues(aa: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` from axis-angle vectors ``(..., 3)`` (float32/float64, CPU or
    CUDA), differentiable. Matches ``smplx.lbs.batch_rodrigues`` including its 1e-8 offset."""
    return _rodrigues(aa)
