"""Soft silhouette: a differentiable coverage map of triangle meshes already projected to pixels
(SoftRas's silhouette; Liu et al. 2019), whose gradient reaches the 2D vertex positions from the
pixels near the outline.

Rule (shared by the compiled kernels and :func:`soft_silhouette_reference`, the specification):

* ``verts_2d[b, v] = (u, v)`` in pixels, the convention of :func:`smplfast.ops.rasterize`: pixel
  (row i, col j) has its centre at ``p = (j + 0.5, i + 0.5)`` (so ``u = f_x X / Z + c_x``,
  ``v = f_y Y / Z + c_y`` give the same image as ``rasterize``).
* For face f and pixel p: ``d`` = the distance from p to the closed projected triangle's boundary
  (the smallest distance to its three edge segments), ``s_f(p) = +d^2 / sigma`` when p is inside the
  triangle and ``-d^2 / sigma`` outside (both windings count: inside means the three edge cross
  products share a sign), ``D_f(p) = sigmoid(s_f(p))`` (0.5 on the outline).
* ``A(p) = 1 - prod_f (1 - D_f(p))``. The reference (and the CUDA kernel, with atomic adds) sums
  ``L(p) = sum_f softplus(s_f(p))`` (``softplus(s) = -log(1 - sigmoid(s))``, without overflow) and
  returns ``A = -expm1(-L)``; the CPU kernel multiplies the factors ``1 - D_f = sigmoid(-s_f)`` into
  each pixel's ``prod_f (1 - D_f)``. They agree up to rounding. No clamping of ``D_f`` is needed: the
  backward uses ``dA/ds_f = (1 - A) * sigmoid(s_f)`` with the stored ``1 - A = prod_f (1 - D_f)``,
  exact also where ``D_f`` rounds to 1 (deep inside the product underflows to 0 and so does the
  gradient, its true limit).
* Cutoff: face f takes part at p only when p is inside it or ``D_f(p) >= cutoff``, i.e.
  ``d^2 <= sigma * log((1 - cutoff) / cutoff)`` (with the default 1e-4: ``d^2 <= 9.21 sigma``).
  Each face so touches only its bounding box grown by that distance; ``cutoff = 0`` keeps every
  face at every pixel (the dense definition). Dropping the faces below the cutoff changes ``A`` by
  less than ``cutoff`` per dropped face, and makes ``A`` jump by that much where a face enters.
* Faces whose projected signed area ``(u0 - u2)(v1 - v2) - (v0 - v2)(u1 - u2)`` is exactly zero
  (degenerate) take part nowhere and receive zero gradient.
* The gradient w.r.t. the vertices is that of ``d^2`` to the nearest edge: with the nearest point
  ``n = a + t (b - a)`` and ``q = p - n``, ``d(d^2)/da = -2 (1 - t) q``, ``d(d^2)/db = -2 t q``
  (ties between edges go to the first of edges (v1, v2), (v2, v0), (v0, v1)). ``sigma`` is in
  pixels^2: SoftRas's ``1e-4`` in normalised [-1, 1] units is ``1e-4 * (S / 2)^2`` px^2 at S x S
  (0.1 at 64^2, 0.4 at 128^2).

Use it as a silhouette loss for fitting or training (``((A - mask) ** 2).sum()``); the hard
silhouette is ``rasterize(...)[0] >= 0`` and ``A > 0.5`` approaches it as ``sigma -> 0``.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from .._backend import _C, dtype_code, target as _target
from ._value_checks import check_once, value_checks_enabled
from ._grad_checks import check_grad, check_saved

OP = "smplfast.soft_silhouette"
FLOAT_DTYPES = (torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
#: Default cutoff: a face is dropped at pixels where its sigmoid is below this.
DEFAULT_CUTOFF = 1e-4

ImageSize = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------------- validation
def _check_inputs(op: str, verts_2d: Tensor, faces: Tensor) -> None:
    """Shapes, dtypes and devices (no values: this also runs on fake tensors)."""
    if not isinstance(verts_2d, Tensor):
        raise ValueError(f"{op}: verts_2d must be a (B, V, 2) float32/float64 tensor; got {type(verts_2d).__name__}")
    if verts_2d.dim() != 3 or verts_2d.shape[2] != 2:
        raise ValueError(f"{op}: verts_2d must have shape (B, V, 2); got {tuple(verts_2d.shape)}")
    if verts_2d.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: verts_2d must be float32 or float64; got {verts_2d.dtype}")
    if not isinstance(faces, Tensor):
        raise ValueError(f"{op}: faces must be an (F, 3) int64/int32 tensor; got {type(faces).__name__}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{op}: faces must have shape (F, 3); got {tuple(faces.shape)}")
    if faces.dtype not in INDEX_DTYPES:
        raise ValueError(f"{op}: faces must be int64 or int32; got {faces.dtype}")
    if faces.device != verts_2d.device:
        raise ValueError(f"{op}: faces is on {faces.device} but verts_2d is on {verts_2d.device}")


def _check_size(op: str, height, width) -> None:
    for name, s in (("height", height), ("width", width)):
        if isinstance(s, torch.SymInt):  # symbolic under torch.compile: checked when it is known
            continue
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ValueError(f"{op}: image_size must be an int or a pair of ints (H, W); got {name} = {s!r}")
        if s <= 0:
            raise ValueError(f"{op}: image_size must be positive; got {name} = {s}")


def _image_size(op: str, image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        H = W = int(image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str) and len(image_size) == 2:
        H, W = image_size
    else:
        raise ValueError(f"{op}: image_size must be an int or a pair of ints (H, W); got {image_size!r}")
    _check_size(op, H, W)
    return H, W


def _check_sigma_cutoff(op: str, sigma, cutoff) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(f"{op}: sigma must be a float > 0 (pixels^2); got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{op}: sigma must be a finite number > 0 (pixels^2); got {sigma}")
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real):
        raise ValueError(f"{op}: cutoff must be a float in [0, 0.5); got {type(cutoff).__name__}")
    if not (0 <= cutoff < 0.5):
        raise ValueError(f"{op}: cutoff must lie in [0, 0.5) (0: no cutoff); got {cutoff}")


def cutoff_distance2(sigma: float, cutoff: float) -> float:
    """The squared distance (pixels^2) beyond which a face is dropped outside itself: ``D_f < cutoff``
    there. ``inf`` for ``cutoff == 0``."""
    if cutoff == 0:
        return math.inf
    return float(sigma) * math.log((1.0 - cutoff) / cutoff)


def _check_values(op: str, verts_2d: Tensor, faces: Tensor) -> None:
    """Values the kernels trust. The face indices (a model constant) are checked once per faces tensor
    (:func:`~smplfast.ops._value_checks.check_once`); the vertices' finiteness on the CPU, and on CUDA only
    with value checks on (the kernels give faces of non-finite area no part)."""
    V = verts_2d.shape[1]
    if faces.numel():
        def faces_in_range():
            lo, hi = (int(x) for x in torch.stack([x.to(torch.int64) for x in torch.aminmax(faces)]).tolist())
            if lo < 0 or hi >= V:
                raise ValueError(f"{op}: faces must index vertices in [0, {V}); got values in [{lo}, {hi}]")

        check_once(f"{op}:faces<{V}", (faces,), faces_in_range)
    if value_checks_enabled(verts_2d.device) and not bool(torch.isfinite(verts_2d).all()):
        first = tuple(int(i) for i in torch.nonzero(~torch.isfinite(verts_2d))[0])
        raise ValueError(f"{op}: verts_2d must be finite; got {verts_2d[first].item()} at index {first}")


def _prepare(op: str, verts_2d, faces, image_size, sigma, cutoff):
    _check_inputs(op, verts_2d, faces)
    H, W = _image_size(op, image_size)
    _check_sigma_cutoff(op, sigma, cutoff)
    return H, W, float(sigma), float(cutoff)


# ----------------------------------------------------------------------------------- reference
def _locate(tri: Tensor, pix: Tensor):
    """Per (face, pixel) pair: squared distance to the triangle's boundary and the inside flag.

    tri: (..., 3, 2) corners, pix: (..., 2) pixel centres (broadcast against each other). The same
    operations, in the same order, as softras::locate in csrc/softras/softras_math.h.
    """
    pu, pv = pix[..., 0], pix[..., 1]
    d2s, crosses = [], []
    for k in range(3):
        a, b = (k + 1) % 3, (k + 2) % 3
        au, av = tri[..., a, 0], tri[..., a, 1]
        ex, ey = tri[..., b, 0] - au, tri[..., b, 1] - av
        len2 = ex * ex + ey * ey
        # 1 / len2, or 0 for a zero-length edge (only in degenerate faces); the guard keeps NaN out of
        # the gradient of the branch torch.where drops.
        inv = torch.where(len2 > 0, 1.0 / torch.where(len2 > 0, len2, torch.ones_like(len2)), torch.zeros_like(len2))
        dx, dy = pu - au, pv - av
        crosses.append(ex * dy - ey * dx)
        t = ((dx * ex + dy * ey) * inv).clamp(0.0, 1.0)
        qx, qy = dx - t * ex, dy - t * ey
        d2s.append(qx * qx + qy * qy)
    d2all = torch.stack(d2s, -1)
    k = torch.argmin(d2all.detach(), dim=-1, keepdim=True)  # first minimum on ties
    d2 = torch.gather(d2all, -1, k).squeeze(-1)
    c0, c1, c2 = crosses
    inside = ((c0 >= 0) & (c1 >= 0) & (c2 >= 0)) | ((c0 <= 0) & (c1 <= 0) & (c2 <= 0))
    return d2, inside


def _face_ok(tri: Tensor) -> Tensor:
    u, v = tri[..., 0], tri[..., 1]
    area = (u[..., 0] - u[..., 2]) * (v[..., 1] - v[..., 2]) - (v[..., 0] - v[..., 2]) * (u[..., 1] - u[..., 2])
    return (area != 0) & torch.isfinite(area)


def soft_silhouette_reference(verts_2d: Tensor, faces: Tensor, image_size: ImageSize, sigma: float,
                              cutoff: float = DEFAULT_CUTOFF) -> Tensor:
    """Pure-PyTorch specification of :func:`soft_silhouette` (same arguments, output and rules; see
    the module docstring), differentiable by autograd.

    Dense over faces x pixels: for each image and chunk of faces it evaluates every (face, pixel)
    pair without gradient to find the pairs that take part, then recomputes those pairs with
    autograd and sums ``softplus(s)`` per pixel. Meant for tests and small meshes/images.
    """
    H, W, sigma, cutoff = _prepare(OP + "_reference", verts_2d, faces, image_size, sigma, cutoff)
    _check_values(OP + "_reference", verts_2d, faces)
    faces = faces.to(torch.int64)
    B, F, dev, dtype = verts_2d.shape[0], faces.shape[0], verts_2d.device, verts_2d.dtype
    P = H * W
    thr = cutoff_distance2(sigma, cutoff)
    inv_sigma = 1.0 / sigma
    pu = (torch.arange(W, dtype=dtype, device=dev) + 0.5).repeat(H)  # (P,)
    pv = (torch.arange(H, dtype=dtype, device=dev) + 0.5).repeat_interleave(W)
    pix = torch.stack([pu, pv], -1)  # (P, 2)
    chunk = max(1, (1 << 18) // P)
    rows = []
    for b in range(B):
        L = verts_2d.new_zeros(P) + 0 * verts_2d[b].sum()  # attached, so backward gives zeros if nothing lands
        for f0 in range(0, F, chunk):
            tri = verts_2d[b][faces[f0:f0 + chunk]]  # (C, 3, 2)
            with torch.no_grad():
                d2, inside = _locate(tri[:, None], pix[None])  # (C, P)
                take = _face_ok(tri)[:, None] & (inside | (d2 <= thr))
                fi, pi = torch.nonzero(take, as_tuple=True)
            if fi.numel() == 0:
                continue
            d2, inside = _locate(tri[fi], pix[pi])
            x = d2 * inv_sigma
            s = torch.where(inside, x, -x)
            L = L.index_add(0, pi, -torch.nn.functional.logsigmoid(-s))  # softplus(s), exact in both tails
        rows.append(-torch.expm1(-L))
    if not rows:
        return verts_2d.new_zeros((0, H, W)) + 0 * verts_2d.sum()
    return torch.stack(rows).view(B, H, W)


# ------------------------------------------------------------------------------------ custom ops
def _check_op(verts_2d: Tensor, faces: Tensor, height: int, width: int, sigma: float, cutoff: float) -> None:
    _check_inputs(OP, verts_2d, faces)
    if faces.dtype != torch.int64:
        raise ValueError(f"{OP}: the op takes int64 faces (soft_silhouette converts); got {faces.dtype}")
    _check_size(OP, height, width)
    _check_sigma_cutoff(OP, sigma, cutoff)


def _big_queue(verts_2d: Tensor, faces: Tensor) -> Tensor:
    """The CUDA kernels' queue of faces with large pixel windows (a counter, then B*F slots)."""
    return torch.empty((1 + verts_2d.shape[0] * faces.shape[0],), dtype=torch.int64, device=verts_2d.device)


@torch.library.custom_op("smplfast::soft_silhouette", mutates_args=())
def _soft_silhouette(verts_2d: Tensor, faces: Tensor, height: int, width: int, sigma: float,
                     cutoff: float) -> Tuple[Tensor, Tensor]:
    _check_op(verts_2d, faces, height, width, sigma, cutoff)
    _check_values(OP, verts_2d, faces)
    B, V = verts_2d.shape[:2]
    F = faces.shape[0]
    alpha = verts_2d.new_empty((B, height, width))
    trans = verts_2d.new_empty((B, height, width))
    if B == 0:
        return alpha, trans
    # Keep every contiguous copy alive in a local until the kernel has returned.
    vc, fc = verts_2d.contiguous(), faces.contiguous()
    big = _big_queue(vc, fc) if vc.device.type == "cuda" else None
    _C.soft_silhouette_forward(_target(vc), dtype_code(vc), B, V, F, height, width, float(sigma),
                               cutoff_distance2(sigma, cutoff), vc.data_ptr(), fc.data_ptr(),
                               big.data_ptr() if big is not None else 0, alpha.data_ptr(), trans.data_ptr())
    return alpha, trans


@_soft_silhouette.register_fake
def _(verts_2d, faces, height, width, sigma, cutoff):
    _check_op(verts_2d, faces, height, width, sigma, cutoff)
    B = verts_2d.shape[0]
    return verts_2d.new_empty((B, height, width)), verts_2d.new_empty((B, height, width))


def _check_backward(grad_alpha, verts_2d, faces, transmittance, sigma, cutoff) -> None:
    name = OP + "_backward"
    if not isinstance(transmittance, Tensor) or transmittance.dim() != 3:
        raise ValueError(f"{name}: transmittance must be (B, H, W); got "
                         f"{tuple(transmittance.shape) if isinstance(transmittance, Tensor) else type(transmittance)}")
    H, W = int(transmittance.shape[1]), int(transmittance.shape[2])
    _check_op(verts_2d, faces, H, W, sigma, cutoff)
    B = verts_2d.shape[0]
    check_saved(name, "transmittance", transmittance, [B, H, W], verts_2d)
    # The kernel converts the gradient to verts_2d's dtype, so any float dtype is accepted.
    check_grad(name, "grad_alpha", grad_alpha, (B, H, W), verts_2d, any_float=True)


@torch.library.custom_op("smplfast::soft_silhouette_backward", mutates_args=())
def _soft_silhouette_backward(grad_alpha: Tensor, verts_2d: Tensor, faces: Tensor, transmittance: Tensor,
                              sigma: float, cutoff: float) -> Tensor:
    _check_backward(grad_alpha, verts_2d, faces, transmittance, sigma, cutoff)
    B, V = verts_2d.shape[:2]
    F = faces.shape[0]
    H, W = transmittance.shape[1], transmittance.shape[2]
    grad_verts = verts_2d.new_empty((B, V, 2))
    if B == 0:
        return grad_verts
    go, vc, fc, tc = (t.contiguous() for t in (grad_alpha.to(verts_2d.dtype), verts_2d, faces, transmittance))
    if vc.device.type == "cuda":
        big, work = _big_queue(vc, fc), None
    else:
        big, work = None, vc.new_empty((B, F, 3, 2))
    _C.soft_silhouette_backward(_target(vc), dtype_code(vc), B, V, F, H, W, float(sigma),
                                cutoff_distance2(sigma, cutoff), vc.data_ptr(), fc.data_ptr(), tc.data_ptr(),
                                go.data_ptr(), big.data_ptr() if big is not None else 0,
                                work.data_ptr() if work is not None else 0, grad_verts.data_ptr())
    return grad_verts


@_soft_silhouette_backward.register_fake
def _(grad_alpha, verts_2d, faces, transmittance, sigma, cutoff):
    _check_backward(grad_alpha, verts_2d, faces, transmittance, sigma, cutoff)
    return verts_2d.new_empty(verts_2d.shape)


def _setup(ctx, inputs, output):
    verts_2d, faces, height, width, sigma, cutoff = inputs
    alpha, trans = output
    ctx.mark_non_differentiable(trans)
    ctx.save_for_backward(verts_2d, faces, trans)
    ctx.sigma, ctx.cutoff = sigma, cutoff


def _backward(ctx, grad_alpha, grad_trans):
    verts_2d, faces, trans = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    grad = _soft_silhouette_backward(grad_alpha, verts_2d, faces, trans, ctx.sigma, ctx.cutoff)
    return grad, None, None, None, None, None


_soft_silhouette.register_autograd(_backward, setup_context=_setup)


def soft_silhouette(verts_2d: Tensor, faces: Tensor, image_size: ImageSize, sigma: float,
                    cutoff: float = DEFAULT_CUTOFF) -> Tensor:
    """Soft silhouette of a batch of projected meshes (CPU with OpenMP, or CUDA), differentiable
    w.r.t. the 2D vertex positions.

    Args:
        verts_2d: ``(B, V, 2)`` float32/float64 pixel coordinates ``(u, v)``; pixel (i, j) has its
            centre at ``(j + 0.5, i + 0.5)`` (as in :func:`smplfast.ops.rasterize`). Must be finite.
        faces: ``(F, 3)`` int64 or int32 vertex indices in ``[0, V)``, shared by the batch (either
            winding; int32 is converted).
        image_size: ``(H, W)`` or an int for a square image.
        sigma: sharpness in pixels^2 (> 0): ``D_f = sigmoid(+-d^2 / sigma)``; smaller is closer to the
            hard silhouette, larger spreads the gradient farther from the outline.
        cutoff: in ``[0, 0.5)``; faces are dropped at outside pixels where their ``D_f < cutoff``
            (``d^2 > sigma * log((1 - cutoff) / cutoff)``), so each face touches only a window around
            it. 0 keeps every face everywhere.

    Returns:
        ``(B, H, W)`` in ``verts_2d``'s dtype, values in ``[0, 1]``:
        ``A = 1 - prod_f (1 - sigmoid(s_f))`` (rules in the module docstring; the reference is
        :func:`soft_silhouette_reference`). The backward is analytic (a custom op); it is not twice
        differentiable. On CUDA, sums use float atomics (results can differ in the last bits from run
        to run); the CPU kernel is deterministic. Raises ValueError for bad shapes, dtypes, devices,
        ``sigma <= 0``, out-of-range faces (checked once per faces tensor) and non-finite vertices
        (checked on the CPU, and on CUDA with :func:`smplfast.ops.value_checks` on). Degenerate (zero-area) faces contribute nothing and get zero gradient.
    """
    H, W, sigma, cutoff = _prepare(OP, verts_2d, faces, image_size, sigma, cutoff)
    if faces.dtype != torch.int64:
        faces = faces.to(torch.int64)
    alpha, _ = _soft_silhouette(verts_2d, faces, H, W, sigma, cutoff)
    return alpha
