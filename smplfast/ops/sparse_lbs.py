"""Sparse linear blend skinning (each vertex's few non-zero weights), as a custom op with analytic backward."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._backend import _C, check_float, check_same, check_shape, dtype_code, target
from ._grad_checks import check_grad
from ._value_checks import check_once

OP = "smplfast.sparse_lbs"


def dense_to_sparse_weights(weights: Tensor, max_influences: int | None = None) -> Tuple[Tensor, Tensor]:
    """Pack dense skinning weights (V, J) into per-vertex lists: joint ids (V, K) int32 and weights (V, K),
    K = the largest number of non-zero weights of any vertex (padding: joint 0 with weight 0).

    Nothing is dropped: if ``max_influences`` is given and a vertex has more non-zeros, it raises."""
    if weights.dim() != 2:
        raise ValueError(f"{OP}: weights must be (V, J); got {tuple(weights.shape)}")
    nonzero = weights != 0
    counts = nonzero.sum(dim=1)
    K = max(int(counts.max()) if weights.shape[0] else 1, 1)
    if max_influences is not None and K > max_influences:
        v = int(torch.argmax(counts))
        raise ValueError(f"{OP}: vertex {v} has {K} non-zero skinning weights, more than max_influences={max_influences}")
    # Stable sort puts the non-zero entries first, in joint order.
    order = torch.sort((~nonzero).to(torch.int8), dim=1, stable=True).indices[:, :K]
    w = torch.gather(weights, 1, order)
    idx = torch.where(w != 0, order, torch.zeros_like(order))
    return idx.to(torch.int32).contiguous(), w.contiguous()


def sparse_lbs_reference(transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor, transl: Tensor) -> Tensor:
    """Pure-PyTorch specification: verts[b, v] = sum_k weights[v, k] transforms[b, idx[v, k]] [v_posed[b, v]; 1]
    + transl[b]. With K = 0 influences the empty sum is the zero transform: every vertex lands on transl[b]."""
    A = transforms[:, idx.long()]                          # (B, V, K, 3, 4)
    M = (weights[None, :, :, None, None] * A).sum(dim=2)   # (B, V, 3, 4)
    v = (M[..., :3] @ v_posed.unsqueeze(-1))[..., 0] + M[..., 3]
    return v + transl[:, None, :]


def _check(transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor, transl: Optional[Tensor]) -> None:
    check_float(OP, "transforms", transforms, [None, None, 3, 4])
    B, J = transforms.shape[:2]
    check_float(OP, "v_posed", v_posed, [B, None, 3])
    V = v_posed.shape[1]
    check_float(OP, "weights", weights, [V, None])
    check_shape(OP, "idx", idx, [V, weights.shape[1]])
    if idx.dtype != torch.int32:
        raise TypeError(f"{OP}: idx must be int32; got {idx.dtype}")
    others = [("v_posed", v_posed), ("idx", idx), ("weights", weights)]
    if transl is not None:  # the backward op does not take transl
        check_float(OP, "transl", transl, [B, 3])
        others.append(("transl", transl))
    check_same(OP, "transforms", transforms, others)


def _check_idx_range(idx: Tensor, J: int) -> None:
    """Joint ids in [0, J): the kernels index the transforms with them. ``idx`` is a model constant, so
    it is checked once per tensor (one device sync on CUDA, the first time; :mod:`._value_checks`)."""
    if not idx.numel():
        return

    def in_range():
        lo, hi = (int(x) for x in torch.stack(list(torch.aminmax(idx))).tolist())
        if lo < 0 or hi >= J:
            raise ValueError(f"{OP}: idx must lie in [0, {J}); got values in [{lo}, {hi}]")

    check_once(f"{OP}:idx<{J}", (idx,), in_range)


def _check_backward(grad_verts: Tensor, transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor) -> None:
    _check(transforms, v_posed, idx, weights, None)
    check_grad(OP + "_backward", "grad_verts", grad_verts, (transforms.shape[0], v_posed.shape[1], 3), transforms)


def _rows_view(v_posed: Tensor) -> Tuple[Tensor, int]:
    """A (B, V, 3) tensor whose rows are contiguous, and its batch stride (0 when broadcast)."""
    if v_posed.stride(2) != 1 or v_posed.stride(1) != 3 or (v_posed.stride(0) not in (0, v_posed.shape[1] * 3)):
        v_posed = v_posed.contiguous()
    stride = v_posed.stride(0) if v_posed.shape[0] > 1 else 0
    return v_posed, stride


@torch.library.custom_op("smplfast::sparse_lbs", mutates_args=())
def _sparse_lbs(transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor, transl: Tensor) -> Tensor:
    _check(transforms, v_posed, idx, weights, transl)
    _check_idx_range(idx, transforms.shape[1])
    B, J = transforms.shape[:2]
    V, K = weights.shape
    # Keep every contiguous copy alive in a local until the kernel has returned.
    A, ix, w, tr = transforms.contiguous(), idx.contiguous(), weights.contiguous(), transl.contiguous()
    vp, stride = _rows_view(v_posed)
    out = A.new_empty((B, V, 3))
    _C.lbs_forward(target(A), dtype_code(A), B, V, K, J, A.data_ptr(), vp.data_ptr(), stride, ix.data_ptr(),
                   w.data_ptr(), tr.data_ptr(), out.data_ptr())
    return out


@_sparse_lbs.register_fake
def _(transforms, v_posed, idx, weights, transl):
    _check(transforms, v_posed, idx, weights, transl)
    return transforms.new_empty((transforms.shape[0], v_posed.shape[1], 3))


@torch.library.custom_op("smplfast::sparse_lbs_backward", mutates_args=())
def _sparse_lbs_backward(grad_verts: Tensor, transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor,
                         need_v_grad: bool, need_w_grad: bool,
                         deterministic: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``deterministic``: on CUDA, sum d/dtransforms and d/dtransl over the vertices in a fixed order
    (per-tile partial sums in a workspace, then a fixed-order sum) instead of with atomics, so they are
    bit-identical from run to run. The CPU kernel is deterministic either way."""
    _check_backward(grad_verts, transforms, v_posed, idx, weights)
    _check_idx_range(idx, transforms.shape[1])
    B, J = transforms.shape[:2]
    V, K = weights.shape
    A, ix, w = transforms.contiguous(), idx.contiguous(), weights.contiguous()
    g = grad_verts  # read through its strides (a gradient of sum() is a broadcast: no copy)
    vp, stride = _rows_view(v_posed)
    gA = A.new_empty((B, J, 3, 4))
    gv = A.new_empty((B, V, 3)) if need_v_grad else A.new_empty((0,))
    gtr = A.new_empty((B, 3))
    gw = A.new_empty((V, K)) if need_w_grad else A.new_empty((0,))
    # The CPU kernel ignores `deterministic` (it is deterministic by construction); the CUDA one sums
    # per-tile partials in a workspace. Passed only when set (the default call also fits older builds).
    ws = A.new_empty((_C.lbs_backward_workspace(B, V, J, True) if deterministic and A.device.type == "cuda" else 0,))
    extra = (True, ws.data_ptr() if ws.numel() else 0) if deterministic else ()
    _C.lbs_backward(target(A), dtype_code(A), B, V, K, J, A.data_ptr(), vp.data_ptr(), stride, ix.data_ptr(),
                    w.data_ptr(), g.data_ptr(), *g.stride(), gA.data_ptr(), gv.data_ptr() if need_v_grad else 0,
                    gtr.data_ptr(), gw.data_ptr() if need_w_grad and gw.numel() else 0, *extra)
    return gA, gv, gtr, gw


@_sparse_lbs_backward.register_fake
def _(grad_verts, transforms, v_posed, idx, weights, need_v_grad, need_w_grad, deterministic=False):
    _check_backward(grad_verts, transforms, v_posed, idx, weights)
    B, J = transforms.shape[:2]
    V, K = weights.shape
    gv = transforms.new_empty((B, V, 3)) if need_v_grad else transforms.new_empty((0,))
    gw = transforms.new_empty((V, K)) if need_w_grad else transforms.new_empty((0,))
    return transforms.new_empty((B, J, 3, 4)), gv, transforms.new_empty((B, 3)), gw


def _setup(ctx, inputs, output):
    transforms, v_posed, idx, weights, transl = inputs
    ctx.save_for_backward(transforms, v_posed, idx, weights)


def _backward(ctx, grad_verts):
    transforms, v_posed, idx, weights = ctx.saved_tensors
    need_v, need_w = bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[3])
    # torch.use_deterministic_algorithms(True) selects the fixed-order CUDA reduction (as uv_lookup does).
    deterministic = torch.are_deterministic_algorithms_enabled()
    gA, gv, gtr, gw = _sparse_lbs_backward(grad_verts, transforms, v_posed, idx, weights, need_v, need_w,
                                           deterministic)
    # d verts[b, v] / d weights[v, k] = transforms[b, idx[v, k]] [v_posed[b, v]; 1], summed over the
    # batch against grad_verts (padding entries get theirs too); the integer idx has none.
    return gA, (gv if need_v else None), None, (gw if need_w else None), gtr


_sparse_lbs.register_autograd(_backward, setup_context=_setup)


def sparse_lbs(transforms: Tensor, v_posed: Tensor, idx: Tensor, weights: Tensor, transl: Tensor) -> Tensor:
    """Skinned vertices ``(B, V, 3)`` from per-joint transforms ``(B, J, 3, 4)`` (see
    :func:`kinematic_chain`), rest-pose vertices ``v_posed`` ``(B, V, 3)`` (may be a batch-broadcast
    ``expand`` of one mesh), per-vertex joint ids ``idx`` ``(V, K)`` int32 with weights ``(V, K)`` (see
    :func:`dense_to_sparse_weights`) and a translation ``(B, 3)``. Differentiable in transforms,
    v_posed, weights and transl (float64 gradcheck-tested on the real kernels). On CUDA the gradients of
    transforms and transl are summed with atomics (run-to-run rounding differences) unless
    ``torch.use_deterministic_algorithms(True)`` is on, which selects a fixed-order reduction.

    K may be 0 (``idx`` of shape ``(V, 0)``): LBS with no influences blends the zero transform, so
    every vertex is placed at ``transl[b]`` and gets no gradient from the transforms."""
    return _sparse_lbs(transforms, v_posed, idx, weights, transl)
