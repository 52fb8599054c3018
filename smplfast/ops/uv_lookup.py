"""Bilinear (part, u, v) lookup on per-part cartesian UV grids (HoloPose's surface charting).

Each of P body parts is flattened to the plane and resampled on a uniform R x R grid whose cells
hold C values (3-D surface points, shape basis entries, ...). A surface point given by its part and
chart coordinates (u, v) in [0, 1] is read back by bilinear interpolation, the "spatial transformer"
lookup of HoloPose:

* grid ``(G, P, R, R, C)``: row index <-> v, column index <-> u; ``G = 1`` (one grid shared by all
  points) or one grid per sample, picked by ``batch_index``.
* position in grid units: ``x = u (R - 1)`` (column), ``y = v (R - 1)`` (row), i.e.
  ``grid_sample(align_corners=True)``; positions are clamped to the grid (border). At a grid line the
  cell to the right of / below the point is used, so derivatives there are one-sided from the
  right, and at ``u = 1`` (or ``v = 1``) the derivative is 0 (the value is constant beyond the border).
* ``valid (P, R, R)``: the cells that carry surface. Invalid corners of a bilinear cell get weight 0
  and the remaining weights are renormalised to sum 1, which equals
  ``bilinear(grid * valid) / bilinear(valid)``. When the valid corners all have zero weight (all four
  invalid, or the point lies exactly on an edge whose carrying corners are invalid) the value is the
  one of the nearest valid cell of that part: smallest squared distance from ``(y, x)`` to the cell
  centres ``(i, j)``, ties to the smallest ``i * R + j``; its derivative w.r.t. uv is 0. Invalid
  cells are never read (they may hold NaN), and receive no gradient.

:func:`uv_lookup` runs the compiled CPU (OpenMP) or CUDA kernel and is differentiable w.r.t. grid
and uv; :func:`uv_lookup_reference` is the same op in pure PyTorch on ``grid_sample`` (the
specification used by the tests).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._backend import _C, dtype_code, target
from ._value_checks import check_once, value_checks_enabled
from ._grad_checks import check_grad

OP = "smplfast.uv_lookup"

#: How far outside [0, 1] a chart coordinate may lie (rounding) before it is an error; within this
#: slack it is clamped to the border.
UV_SLACK = 1e-6

_FLOATS = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------- validation
def _shape(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{OP}: {name} must be a torch.Tensor; got {type(t).__name__}")


def _check_meta(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor],
                valid: Optional[Tensor]) -> None:
    """Ranks, shapes, dtypes and devices (everything that does not need the data)."""
    _check_tensor("grid", grid)
    _check_tensor("part", part)
    _check_tensor("uv", uv)
    if grid.dim() != 5 or grid.shape[2] != grid.shape[3]:
        raise ValueError(f"{OP}: grid must be (G, P, R, R, C); got {_shape(grid)}")
    if grid.dtype not in _FLOATS:
        raise ValueError(f"{OP}: grid must be float32 or float64; got {grid.dtype}")
    G, P, R, _, C = grid.shape
    if G < 1 or P < 1 or R < 1:
        raise ValueError(f"{OP}: grid must have G, P, R >= 1; got {_shape(grid)}")
    if part.dim() != 1:
        raise ValueError(f"{OP}: part must be (N,); got {_shape(part)}")
    N = part.shape[0]
    if part.dtype != torch.int64:
        raise ValueError(f"{OP}: part must be int64; got {part.dtype}")
    if uv.dim() != 2 or uv.shape[0] != N or uv.shape[1] != 2:
        raise ValueError(f"{OP}: uv must be ({N}, 2) (N from part); got {_shape(uv)}")
    if uv.dtype != grid.dtype:
        raise ValueError(f"{OP}: uv must have grid's dtype {grid.dtype}; got {uv.dtype}")
    others = [("part", part), ("uv", uv)]
    if batch_index is not None:
        _check_tensor("batch_index", batch_index)
        if batch_index.dim() != 1 or batch_index.shape[0] != N:
            raise ValueError(f"{OP}: batch_index must be ({N},) (N from part) or None; got {_shape(batch_index)}")
        if batch_index.dtype != torch.int64:
            raise ValueError(f"{OP}: batch_index must be int64; got {batch_index.dtype}")
        others.append(("batch_index", batch_index))
    if valid is not None:
        _check_tensor("valid", valid)
        if _shape(valid) != (P, R, R):
            raise ValueError(f"{OP}: valid must be ({P}, {R}, {R}) (P, R, R from grid) or None; got {_shape(valid)}")
        if valid.dtype != torch.bool:
            raise ValueError(f"{OP}: valid must be bool; got {valid.dtype}")
        others.append(("valid", valid))
    for name, t in others:
        if t.device != grid.device:
            raise ValueError(f"{OP}: {name} must be on grid's device {grid.device}; got {t.device}")


def _check_values(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor]) -> None:
    """Index ranges and chart coordinates of the points (reads the data: one device sync on CUDA)."""
    G, P = grid.shape[0], grid.shape[1]
    if not part.numel():
        return
    stats: List[Tensor] = list(torch.aminmax(part))
    stats += list(torch.aminmax(uv))  # NaN propagates into min/max and fails the range test
    if batch_index is not None:
        stats += list(torch.aminmax(batch_index))
    vals = torch.stack([s.to(torch.float64) for s in stats]).tolist()
    lo, hi = int(vals[0]), int(vals[1])
    if lo < 0 or hi >= P:
        raise ValueError(f"{OP}: part must lie in [0, {P}) (0-based; DensePose's I is 1-based); "
                         f"got values in [{lo}, {hi}]")
    ulo, uhi = vals[2], vals[3]
    if not (ulo >= -UV_SLACK and uhi <= 1 + UV_SLACK):
        bad = ~torch.isfinite(uv)
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(f"{OP}: uv must be finite; got NaN or Inf at index {first}")
        raise ValueError(f"{OP}: uv must lie in [0, 1] (slack {UV_SLACK}); got values in [{ulo}, {uhi}]")
    if batch_index is not None:
        blo, bhi = int(vals[4]), int(vals[5])
        if blo < 0 or bhi >= G:
            raise ValueError(f"{OP}: batch_index must lie in [0, {G}) (G from grid); got values in [{blo}, {bhi}]")


def _check_valid(valid: Optional[Tensor]) -> None:
    """Every part has a valid cell (the nearest-valid fallback needs one); ``valid`` is a constant of the
    grid, so this runs once per tensor (:func:`~smplfast.ops._value_checks.check_once`)."""
    if valid is None:
        return

    def every_part_has_a_cell():
        if not bool(valid.flatten(1).any(1).all()):
            empty = (~valid.flatten(1).any(1)).nonzero()[:, 0].tolist()
            raise ValueError(f"{OP}: every part needs at least one valid cell; parts {empty} have none")

    check_once(OP + ":valid", (valid,), every_part_has_a_cell)


def _guard(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor], valid: Optional[Tensor]):
    """What the kernels may read. With value checks on (always on the CPU) the points are checked and a
    bad one raises; otherwise (CUDA, no device sync) a point whose part, batch index or uv cannot be used
    is replaced by a harmless one and reported in the returned mask ``bad`` (N,), which the op turns into
    NaN values and zero gradients. Returns ``(bad or None, part, uv, batch_index)``."""
    _check_valid(valid)
    if value_checks_enabled(grid.device):
        _check_values(grid, part, uv, batch_index)
        return None, part, uv, batch_index
    G, P = grid.shape[0], grid.shape[1]
    ok_uv = ((uv >= -UV_SLACK) & (uv <= 1 + UV_SLACK)).all(1)  # False for NaN
    bad = (part < 0) | (part >= P) | ~ok_uv
    if batch_index is not None:
        bad = bad | (batch_index < 0) | (batch_index >= G)
        batch_index = torch.where(bad, torch.zeros_like(batch_index), batch_index)
    return bad, torch.where(bad, torch.zeros_like(part), part), torch.where(bad[:, None], torch.full_like(uv, 0.5), uv), \
        batch_index


# ----------------------------------------------------------------------------------- reference
def _nearest_valid_cells(valid_parts: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Flat index i * R + j of the valid cell nearest to each (y, x) (M points, masks (M, R, R));
    squared distances are formed exactly as the kernels do (no fused multiply-add), so ties, broken
    by the smallest flat index (argmin returns the first minimum), are resolved the same way."""
    M, R = valid_parts.shape[0], valid_parts.shape[1]
    centres = torch.arange(R, dtype=y.dtype, device=y.device)
    dy = centres[None, :] - y[:, None]
    dx = centres[None, :] - x[:, None]
    d = (dy * dy)[:, :, None] + (dx * dx)[:, None, :]
    d = torch.where(valid_parts, d, torch.full_like(d, float("inf")))
    return d.reshape(M, R * R).argmin(dim=1)


def uv_lookup_reference(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor] = None,
                        valid: Optional[Tensor] = None, deterministic: bool = False) -> Tensor:
    """Pure-PyTorch specification of :func:`uv_lookup` (same arguments, same checks).

    Built on ``torch.nn.functional.grid_sample`` (bilinear, ``align_corners=True``), one call per
    (sample, part) pair present. The grid is padded with replicated rows and columns so that the
    cell right of / below a point on the last grid line exists and carries the border value (the
    derivative there is 0, as for any clamped position). Every sample position lies inside the
    padded grid, so ``padding_mode="zeros"`` never pads; it is used because grid_sample's
    ``"border"`` mode zeroes the derivative on the first grid line, while the op's derivatives are
    taken from the right everywhere. With ``valid`` it returns
    ``bilinear(where(valid, grid, 0)) / bilinear(valid)`` and, where the denominator is 0, the value
    of the nearest valid cell. ``deterministic`` is accepted for signature compatibility (autograd
    of this function is deterministic on the CPU).
    """
    _check_meta(grid, part, uv, batch_index, valid)
    _check_valid(valid)
    _check_values(grid, part, uv, batch_index)
    G, P, R, _, C = grid.shape
    N = part.shape[0]
    if N == 0:
        # Keep the (empty) output attached to the inputs so that backward gives zero gradients.
        return grid.new_zeros((0, C)) + 0 * (grid.sum() + uv.sum())
    bidx = batch_index if batch_index is not None else torch.zeros_like(part)
    pos = uv.clamp(0, 1) * (R - 1)                    # (N, 2): x (column), y (row) in grid units
    # Pad to S = 2^k + 1 >= R + 1 rows and columns (replicating the last ones): the point on the last
    # grid line then has a neighbour cell holding the border value, and with S - 1 a power of two
    # grid_sample's normalise/unnormalise round trip gives back integer positions exactly, so
    # points on grid lines fall in the same cell as in the kernels.
    span = 1
    while span < R:
        span *= 2
    pad = span + 1 - R
    coords = pos * (2.0 / span) - 1                    # align_corners=True normalisation for size S
    src = grid if valid is None else torch.where(valid[None, :, :, :, None], grid, torch.zeros_like(grid))
    src = F.pad(src.permute(0, 1, 4, 2, 3).reshape(G * P, C, R, R), (0, pad, 0, pad), mode="replicate")
    mask = None
    if valid is not None:
        mask = F.pad(valid.to(grid.dtype)[:, None], (0, pad, 0, pad), mode="replicate")  # (P, 1, S, S)

    key = bidx * P + part
    order = torch.sort(key, stable=True).indices
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    nums, dens = [], []
    start = 0
    for k, n in zip(keys.tolist(), counts.tolist()):
        rows = order[start:start + n]
        start += n
        c = coords[rows].view(1, 1, n, 2)
        sample = F.grid_sample(src[k:k + 1], c, mode="bilinear", padding_mode="zeros", align_corners=True)
        nums.append(sample[0, :, 0].T)                 # (n, C)
        if mask is not None:
            p = k % P
            dens.append(F.grid_sample(mask[p:p + 1], c, mode="bilinear", padding_mode="zeros",
                                      align_corners=True)[0, 0, 0])
    inverse = torch.argsort(order)
    num = torch.cat(nums)[inverse]
    if mask is None:
        return num
    den = torch.cat(dens)[inverse]
    has = den > 0
    value = num / torch.where(has, den, torch.ones_like(den))[:, None]
    if bool(has.all()):
        return value
    # Nearest valid cell for the points whose valid corners all have zero weight.
    far = (~has).nonzero()[:, 0]
    p_far = part[far]
    cell = _nearest_valid_cells(valid[p_far], pos[far, 1].detach(), pos[far, 0].detach())
    fallback = grid[bidx[far], p_far, cell // R, cell % R]  # (M, C)
    full = torch.zeros_like(value).index_put((far,), fallback)
    return torch.where(has[:, None], value, full)


# ------------------------------------------------------------------------------ custom ops
def _sizes(grid: Tensor, part: Tensor) -> Tuple[int, int, int, int, int]:
    G, P, R, _, C = grid.shape
    return part.shape[0], G, P, R, C


def _ptr(t: Optional[Tensor]) -> int:
    return t.data_ptr() if t is not None else 0


def _contiguous(*ts: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    return tuple(t.contiguous() if t is not None else None for t in ts)


def _grid_grad_sorted(grad_out: Tensor, grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor],
                      valid: Optional[Tensor], need_uv: bool = True) -> Tuple[Tensor, Tensor]:
    """The deterministic backward (the one CUDA uses when asked to be deterministic; it runs on
    the CPU too): each point's four (cell, weight) contributions are sorted by destination cell with
    a stable sort and every run of equal cells is summed in that fixed order, without atomics.
    Inputs must be contiguous and validated. Returns (grad_grid, grad_uv or an empty tensor)."""
    N, G, P, R, C = _sizes(grid, part)
    t, code = target(grid), dtype_code(grid)
    guv = uv.new_empty((N, 2)) if need_uv else uv.new_empty((0,))
    cells = torch.empty((N, 4), dtype=torch.int64, device=grid.device)
    weights = grid.new_empty((N, 4))
    _C.uv_lookup_contributions(t, code, N, G, P, R, C, grid.data_ptr(), part.data_ptr(), uv.data_ptr(),
                               _ptr(batch_index), _ptr(valid), grad_out.data_ptr(), _ptr(guv) if need_uv else 0,
                               cells.data_ptr(), weights.data_ptr())
    sorted_cells, order = torch.sort(cells.view(-1), stable=True)
    gg = torch.zeros_like(grid)
    _C.uv_lookup_segment_sum(t, code, N, G, P, R, C, sorted_cells.data_ptr(), order.data_ptr(), weights.data_ptr(),
                             grad_out.data_ptr(), gg.data_ptr())
    return gg, guv


@torch.library.custom_op("smplfast::uv_lookup", mutates_args=())
def _uv_lookup(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor], valid: Optional[Tensor],
               deterministic: bool) -> Tensor:
    _check_meta(grid, part, uv, batch_index, valid)
    bad, part, uv, batch_index = _guard(grid, part, uv, batch_index, valid)
    N, G, P, R, C = _sizes(grid, part)
    out = grid.new_empty((N, C))
    if N == 0 or C == 0:
        return out
    # Keep every contiguous copy alive in a local until the kernel has returned.
    gr, pa, co, bi, va = _contiguous(grid, part, uv, batch_index, valid)
    _C.uv_lookup_forward(target(gr), dtype_code(gr), N, G, P, R, C, gr.data_ptr(), pa.data_ptr(), co.data_ptr(),
                         _ptr(bi), _ptr(va), out.data_ptr())
    return out if bad is None else out.masked_fill(bad[:, None], float("nan"))


@_uv_lookup.register_fake
def _(grid, part, uv, batch_index, valid, deterministic):
    _check_meta(grid, part, uv, batch_index, valid)
    return grid.new_empty((part.shape[0], grid.shape[4]))


def _check_backward(grad_out, grid, part, uv, batch_index, valid) -> None:
    _check_meta(grid, part, uv, batch_index, valid)
    check_grad(OP + "_backward", "grad_out", grad_out, (part.shape[0], grid.shape[4]), grid)


@torch.library.custom_op("smplfast::uv_lookup_backward", mutates_args=())
def _uv_lookup_backward(grad_out: Tensor, grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor],
                        valid: Optional[Tensor], need_grid: bool, need_uv: bool,
                        deterministic: bool) -> Tuple[Tensor, Tensor]:
    _check_backward(grad_out, grid, part, uv, batch_index, valid)
    N, G, P, R, C = _sizes(grid, part)
    empty = grid.new_empty((0,))
    if not (need_grid or need_uv):
        return empty, uv.new_empty((0,))
    bad, part, uv, batch_index = _guard(grid, part, uv, batch_index, valid)
    if bad is not None:  # a point the forward could not use contributes nothing
        grad_out = grad_out.masked_fill(bad[:, None], 0.0)
    go, gr, pa, co, bi, va = _contiguous(grad_out, grid, part, uv, batch_index, valid)
    if need_grid and deterministic and gr.device.type == "cuda":
        gg, guv = _grid_grad_sorted(go, gr, pa, co, bi, va, need_uv)
        return gg, (guv if bad is None or not need_uv else guv.masked_fill(bad[:, None], 0.0))
    # The CPU kernel is deterministic by construction (one thread per (sample, part) slice).
    gg = torch.empty_like(gr) if need_grid else empty
    guv = co.new_empty((N, 2)) if need_uv else co.new_empty((0,))
    _C.uv_lookup_backward(target(gr), dtype_code(gr), N, G, P, R, C, gr.data_ptr(), pa.data_ptr(), co.data_ptr(),
                          _ptr(bi), _ptr(va), go.data_ptr(), gg.data_ptr() if need_grid else 0,
                          guv.data_ptr() if need_uv else 0)
    return gg, (guv if bad is None or not need_uv else guv.masked_fill(bad[:, None], 0.0))


@_uv_lookup_backward.register_fake
def _(grad_out, grid, part, uv, batch_index, valid, need_grid, need_uv, deterministic):
    _check_backward(grad_out, grid, part, uv, batch_index, valid)
    gg = grid.new_empty(grid.shape) if need_grid else grid.new_empty((0,))
    guv = uv.new_empty((part.shape[0], 2)) if need_uv else uv.new_empty((0,))
    return gg, guv


def _setup(ctx, inputs, output):
    grid, part, uv, batch_index, valid, deterministic = inputs
    ctx.save_for_backward(grid, part, uv, batch_index, valid)
    ctx.deterministic = deterministic


def _backward(ctx, grad_out):
    grid, part, uv, batch_index, valid = ctx.saved_tensors
    need_grid, need_uv = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[2])
    deterministic = bool(ctx.deterministic) or torch.are_deterministic_algorithms_enabled()
    gg, guv = _uv_lookup_backward(grad_out, grid, part, uv, batch_index, valid, need_grid, need_uv, deterministic)
    # part, batch_index and valid are integer/bool: no gradient.
    return (gg if need_grid else None), None, (guv if need_uv else None), None, None, None


_uv_lookup.register_autograd(_backward, setup_context=_setup)


# ------------------------------------------------------------------------------- public API
def uv_lookup(grid: Tensor, part: Tensor, uv: Tensor, batch_index: Optional[Tensor] = None,
              valid: Optional[Tensor] = None, deterministic: bool = False) -> Tensor:
    """Bilinear lookup of surface points ``(part, u, v)`` on per-part UV grids (see the module doc).

    Args:
        grid: ``(G, P, R, R, C)`` float32/float64; rows follow v, columns follow u. ``G = 1``: one grid
            shared by every point; otherwise one grid per sample, chosen by ``batch_index``.
        part: ``(N,)`` int64 part index in ``[0, P)`` (0-based: DensePose's ``I`` minus 1).
        uv: ``(N, 2)`` chart coordinates ``(u, v)`` in ``[0, 1]`` (grid's dtype and device);
            ``x = u (R - 1)``, ``y = v (R - 1)`` as ``grid_sample(align_corners=True)``. Values within
            1e-6 outside ``[0, 1]`` are clamped (zero derivative), farther ones are an error.
        batch_index: ``(N,)`` int64 in ``[0, G)``, or None for all zeros.
        valid: optional ``(P, R, R)`` bool, the cells that carry surface. Invalid corners get weight 0
            and the others are renormalised; a point whose valid corners all have zero weight takes
            the nearest valid cell of its part (zero derivative w.r.t. uv). Every part needs at least
            one valid cell. Invalid cells are never read (they may hold NaN) and get no gradient.
        deterministic: make the grid gradient bit-identical from run to run on CUDA (a stable sort
            of the contributions by cell and fixed-order sums instead of float atomics); also on
            when ``torch.are_deterministic_algorithms_enabled()``. The CPU kernel is always
            deterministic (each (sample, part) slice is summed by one thread in point order).

    Returns:
        ``(N, C)`` values, differentiable w.r.t. ``grid`` and ``uv`` (non-contiguous inputs are
        copied, never modified). Raises ValueError for bad shapes, dtypes, devices, out-of-range
        parts or batch indices, uv outside ``[0, 1]`` or non-finite, and parts without valid cells
        (``valid`` is checked once per tensor). On CUDA the per-point checks need a device sync and run
        only with :func:`smplfast.ops.value_checks` on; without them such a point gives NaN values
        and no gradient instead of an error (the kernels never read out of bounds).
    """
    _check_meta(grid, part, uv, batch_index, valid)
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    return _uv_lookup(grid, part, uv, batch_index, valid, deterministic)
