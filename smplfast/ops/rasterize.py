"""Batched z-buffer rasterization of triangle meshes seen by pinhole cameras.

:func:`rasterize` returns, per pixel, the index of the visible face, the perspective-correct
barycentric weights of its three vertices and the camera depth of the surface point; everything else
a renderer needs (silhouettes, part maps, IUV, normals, shading) follows from :func:`interpolate`.

Coverage rule (shared by the compiled kernels and :func:`rasterize_reference`, the specification):

* Camera coordinates as everywhere in smplfast (x right, y down, z forward); a vertex X projects to
  ``u = f_x * (X / Z) + c_x``, ``v = f_y * (Y / Z) + c_y`` (computed in float64 in exactly this order).
  Pixel (row i, col j) is sampled at its centre ``(j + 0.5, i + 0.5)``.
* A face is skipped when any of its vertices has ``Z < near`` (near-plane culling), when a projected
  coordinate is not finite, or when its projected signed area
  ``(u0 - u2)(v1 - v2) - (v0 - v2)(u1 - u2)`` is exactly zero (degenerate).
* Edge functions are taken relative to the pixel centre p,
  ``E(a, b, p) = (a_u - p_u)(b_v - p_v) - (a_v - p_v)(b_u - p_u)``, with ``w0 = E(v1, v2, p)``,
  ``w1 = E(v2, v0, p)``, ``w2 = E(v0, v1, p)``. Swapping a and b swaps the two products, so two faces
  sharing an edge get exactly opposite values in floating point, and E is exactly 0 when p is a vertex.
* Ties (``E == 0``) are resolved as if p were moved by an infinitesimal ``(eps, eps^2)``: the sign of
  ``a_v - b_v``, or of ``b_u - a_u`` when that is zero. A face covers p when the three (tie-resolved)
  signs agree (both windings are drawn), ``w0 + w1 + w2 != 0``, and p lies in the closed bounding box of
  the projected face. So two faces sharing an edge never both cover, nor both miss, a pixel centre on
  that edge, and a fan of faces around a vertex lying on a pixel centre covers it exactly once.
* Depth at p: ``z = (w0 + w1 + w2) / (w0/Z0 + w1/Z1 + w2/Z2)`` (perspective-correct). The z-buffer keeps
  the smallest ``float32(z)``, ties going to the smaller face index (the same rule on CPU and CUDA).
* Outputs for the winning face: ``bary_k = (w_k / Z_k) / sum_j (w_j / Z_j)`` (so ``sum_k bary_k X_k`` is
  the 3D surface point) and ``depth = z`` in float64, then cast to the vertices' dtype.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._backend import _C, dtype_code, target as _target
from ._value_checks import check_once, value_checks_enabled

OP = "smplfast.rasterize"
FLOAT_DTYPES = (torch.float32, torch.float64)
#: Largest face count (face indices share a 64-bit z-buffer word with a float32 depth).
MAX_FACES = 2**31 - 2

CameraParam = Union[Tensor, float, Sequence[float]]


# ----------------------------------------------------------------------------------- validation
def _check_inputs(op: str, vertices: Tensor, faces: Tensor) -> None:
    """Shapes, dtypes and devices of the mesh (no values: this also runs on fake tensors)."""
    if not isinstance(vertices, Tensor):
        raise ValueError(f"{op}: vertices must be a (B, V, 3) float32/float64 tensor; got {type(vertices).__name__}")
    if vertices.dim() != 3 or vertices.shape[2] != 3:
        raise ValueError(f"{op}: vertices must have shape (B, V, 3); got {tuple(vertices.shape)}")
    if vertices.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: vertices must be float32 or float64; got {vertices.dtype}")
    if not isinstance(faces, Tensor):
        raise ValueError(f"{op}: faces must be an (F, 3) int64 tensor; got {type(faces).__name__}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{op}: faces must have shape (F, 3); got {tuple(faces.shape)}")
    if faces.dtype != torch.int64:
        raise ValueError(f"{op}: faces must be int64; got {faces.dtype}")
    if faces.device != vertices.device:
        raise ValueError(f"{op}: faces is on {faces.device} but vertices is on {vertices.device}")
    if faces.shape[0] > MAX_FACES:
        raise ValueError(f"{op}: at most {MAX_FACES} faces are supported; got {faces.shape[0]}")


def _check_camera_tensors(op: str, vertices: Tensor, focal: Tensor, center: Tensor) -> None:
    B = vertices.shape[0]
    for name, t in (("focal", focal), ("center", center)):
        if t.dim() != 2 or t.shape[0] != B or t.shape[1] != 2:
            raise ValueError(f"{op}: {name} must have shape ({B}, 2); got {tuple(t.shape)}")
        if t.dtype != torch.float64:
            raise ValueError(f"{op}: {name} must be float64 here; got {t.dtype}")
        if t.device != vertices.device:
            raise ValueError(f"{op}: {name} is on {t.device} but vertices is on {vertices.device}")


def _check_size(op: str, height, width) -> None:
    for name, s in (("height", height), ("width", width)):
        if isinstance(s, torch.SymInt):  # symbolic under torch.compile: checked when it is known
            continue
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ValueError(f"{op}: image_size must be a pair of ints (H, W); got {name} = {s!r}")
        if s <= 0:
            raise ValueError(f"{op}: image_size must be positive (H, W); got {name} = {s}")


def _check_near(op: str, near) -> None:
    if isinstance(near, bool) or not isinstance(near, numbers.Real):
        raise ValueError(f"{op}: near must be a float > 0; got {type(near).__name__}")
    if not (math.isfinite(near) and near > 0):
        raise ValueError(f"{op}: near must be a finite number > 0; got {near}")


def _check_values(op: str, vertices: Tensor, faces: Tensor, focal: Tensor, center: Tensor) -> None:
    """Values the kernels trust. The face indices (a model constant) are checked once per faces tensor
    (:func:`~smplfast.ops._value_checks.check_once`); the finiteness of the per-call values on the CPU,
    and on CUDA only with value checks on (the kernels cull faces with non-finite projections)."""
    V = vertices.shape[1]
    if faces.numel():
        def faces_in_range():
            lo, hi = (int(x) for x in torch.stack(list(torch.aminmax(faces))).tolist())
            if lo < 0 or hi >= V:
                raise ValueError(f"{op}: faces must index vertices in [0, {V}); got values in [{lo}, {hi}]")

        check_once(f"{op}:faces<{V}", (faces,), faces_in_range)
    if not value_checks_enabled(vertices.device):
        return
    dev = vertices.device
    stats = [torch.isfinite(t).all().long() for t in (vertices, focal, center)]
    stats.append((focal > 0).all().long())
    finite_v, finite_f, finite_c, positive = torch.stack([x.to(dev) for x in stats]).tolist()
    for ok, name, t in ((finite_v, "vertices", vertices), (finite_f, "focal", focal), (finite_c, "center", center)):
        if not ok:
            first = tuple(int(i) for i in torch.nonzero(~torch.isfinite(t))[0])
            raise ValueError(f"{op}: {name} must be finite; got {t[first].item()} at index {first}")
    if not positive:
        raise ValueError(f"{op}: focal must be > 0; got min {focal.min().item()}")


def _image_size(op: str, image_size) -> Tuple[int, int]:
    if isinstance(image_size, Tensor) or not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"{op}: image_size must be a pair of ints (H, W); got {image_size!r}")
    H, W = image_size
    _check_size(op, H, W)
    return H, W


def _camera(op: str, name: str, value: CameraParam, B: int, device: torch.device, allow_scalar: bool) -> Tensor:
    """focal / center as a (B, 2) float64 tensor on the vertices' device."""
    if isinstance(value, Tensor):
        if value.device != device:
            raise ValueError(f"{op}: {name} is on {value.device} but vertices is on {device}")
        if not value.dtype.is_floating_point:
            raise ValueError(f"{op}: {name} must be a floating-point tensor; got {value.dtype}")
        t = value.to(torch.float64)
        if t.dim() == 2 and t.shape[0] == B and t.shape[1] == 2:
            return t
        if not allow_scalar and t.dim() == 1 and t.shape[0] == 2:
            return t.expand(B, 2)
        if allow_scalar and t.dim() == 1 and t.shape[0] == B:
            return t[:, None].expand(B, 2)
        if allow_scalar and t.dim() == 0:
            return t.expand(B, 2)
        want = f"({B}, 2) or ({B},) or a float" if allow_scalar else f"({B}, 2) or a pair"
        raise ValueError(f"{op}: {name} must be {want}; got a tensor of shape {tuple(value.shape)}")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not allow_scalar:
            raise ValueError(f"{op}: {name} must be ({B}, 2) or a pair (c_x, c_y); got the number {value}")
        return torch.full((B, 2), float(value), dtype=torch.float64, device=device)
    if isinstance(value, Sequence) and len(value) == 2 and all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in value):
        return torch.tensor([float(value[0]), float(value[1])], dtype=torch.float64, device=device).expand(B, 2)
    want = f"({B}, 2) or ({B},) tensor or a float" if allow_scalar else f"({B}, 2) tensor or a pair of floats"
    raise ValueError(f"{op}: {name} must be a {want}; got {value!r}")


def as_faces(op: str, faces, vertices) -> Tensor:
    """Faces as the kernels take them, from what a model gives: an (F, 3) array or tensor of any integer
    dtype (e.g. ``SMPL.faces``, a numpy array) becomes int64 on the vertices' device. Floats, booleans
    and other shapes are refused (their values would be reinterpreted)."""
    if isinstance(faces, Tensor):
        if faces.dtype in (torch.bool,) or faces.is_floating_point() or faces.is_complex():
            raise ValueError(f"{op}: faces must hold integer vertex indices; got {faces.dtype}")
        return faces.to(device=vertices.device, dtype=torch.int64) if isinstance(vertices, Tensor) else faces
    try:
        import numpy as np

        arr = np.asarray(faces)
    except Exception:  # noqa: BLE001 - anything numpy cannot read is not a face array
        raise ValueError(f"{op}: faces must be an (F, 3) integer array or tensor; got {type(faces).__name__}") from None
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{op}: faces must hold integer vertex indices; got an array of {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > 2 ** 62:
        raise ValueError(f"{op}: face index {int(arr.max())} does not fit int64")
    device = vertices.device if isinstance(vertices, Tensor) else None
    return torch.as_tensor(arr.astype(np.int64, copy=False), device=device)


def _prepare(op: str, vertices, faces, focal, center, image_size, near):
    _check_inputs(op, vertices, faces)
    H, W = _image_size(op, image_size)
    _check_near(op, near)
    B = vertices.shape[0]
    if isinstance(focal, numbers.Real) and not isinstance(focal, bool) and not float(focal) > 0:
        raise ValueError(f"{op}: focal must be > 0; got {focal}")
    f = _camera(op, "focal", focal, B, vertices.device, allow_scalar=True)
    c = _camera(op, "center", center, B, vertices.device, allow_scalar=False)
    return f, c, H, W, float(near)


# ----------------------------------------------------------------------------------- reference
def _tie_sign(ua: Tensor, va: Tensor, ub: Tensor, vb: Tensor) -> Tensor:
    """Sign of E(a, b, p + (eps, eps^2)) when E(a, b, p) = 0: E is linear in p with gradient
    (a_v - b_v, b_u - a_u)."""
    dv = torch.sign(va - vb)
    return torch.where(dv != 0, dv, torch.sign(ub - ua))


def _edge(ua: Tensor, va: Tensor, ub: Tensor, vb: Tensor, pu: Tensor, pv: Tensor) -> Tensor:
    return (ua - pu) * (vb - pv) - (va - pv) * (ub - pu)


def rasterize_reference(vertices: Tensor, faces: Tensor, focal: CameraParam, center: CameraParam,
                        image_size: Sequence[int], near: float = 1e-3) -> Tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch specification of :func:`rasterize` (same arguments, outputs and rules; see the
    module docstring). Vectorised over pixels, looping over images and chunks of faces; slow, meant
    for tests and small images."""
    faces = as_faces(OP + "_reference", faces, vertices)
    f, c, H, W, near = _prepare(OP + "_reference", vertices, faces, focal, center, image_size, near)
    _check_values(OP + "_reference", vertices, faces, f, c)
    B, dev, dtype = vertices.shape[0], vertices.device, vertices.dtype
    F = faces.shape[0]
    face_index = torch.full((B, H, W), -1, dtype=torch.int64, device=dev)
    bary = torch.zeros((B, H, W, 3), dtype=dtype, device=dev)
    depth = torch.zeros((B, H, W), dtype=dtype, device=dev)
    if B == 0 or F == 0:
        return face_index, bary, depth
    X, Y, Z = vertices.to(torch.float64).unbind(-1)  # (B, V) each
    U = f[:, :1] * (X / Z) + c[:, :1]
    Vp = f[:, 1:] * (Y / Z) + c[:, 1:]
    IZ = 1.0 / Z
    P = H * W
    pu = (torch.arange(W, dtype=torch.float64, device=dev) + 0.5).repeat(H)  # (P,)
    pv = (torch.arange(H, dtype=torch.float64, device=dev) + 0.5).repeat_interleave(W)
    chunk = max(1, (1 << 19) // P)
    cyc = ((1, 2), (2, 0), (0, 1))  # the edge opposite each vertex
    for b in range(B):
        best_z = torch.full((P,), math.inf, dtype=torch.float32, device=dev)
        best_f = torch.full((P,), -1, dtype=torch.int64, device=dev)
        for f0 in range(0, F, chunk):
            fc = faces[f0:f0 + chunk]
            C = fc.shape[0]
            u, v, z, iz = U[b][fc], Vp[b][fc], Z[b][fc], IZ[b][fc]  # (C, 3)
            area = (u[:, 0] - u[:, 2]) * (v[:, 1] - v[:, 2]) - (v[:, 0] - v[:, 2]) * (u[:, 1] - u[:, 2])
            ok = ((z >= near).all(1) & torch.isfinite(u).all(1) & torch.isfinite(v).all(1) & (area != 0))
            w, s = [], []
            for a, e in cyc:
                wk = _edge(u[None, :, a], v[None, :, a], u[None, :, e], v[None, :, e], pu[:, None], pv[:, None])
                tk = _tie_sign(u[:, a], v[:, a], u[:, e], v[:, e])[None]
                w.append(wk)
                s.append(torch.where(wk > 0, 1.0, torch.where(wk < 0, -1.0, tk)))
            total = w[0] + w[1] + w[2]
            inside = (s[0] == s[1]) & (s[1] == s[2]) & (total != 0) & ok[None]
            inside &= (pu[:, None] >= u.min(1).values) & (pu[:, None] <= u.max(1).values)
            inside &= (pv[:, None] >= v.min(1).values) & (pv[:, None] <= v.max(1).values)
            zz = total / (w[0] * iz[:, 0] + w[1] * iz[:, 1] + w[2] * iz[:, 2])
            zf = torch.where(inside, zz.to(torch.float32), math.inf)
            cmin = zf.min(1).values
            ar = torch.arange(C, device=dev).expand(P, C)
            first = torch.where(inside & (zf == cmin[:, None]), ar, C).min(1).values
            hit = first < C
            better = hit & ((best_f < 0) | (cmin < best_z))
            best_z = torch.where(better, cmin, best_z)
            best_f = torch.where(better, f0 + first, best_f)
        # Resolve the winners: perspective-correct barycentrics and depth.
        hit = best_f >= 0
        fw = faces[best_f.clamp(min=0)]  # (P, 3)
        u, v, iz = U[b][fw], Vp[b][fw], IZ[b][fw]
        w = [_edge(u[:, a], v[:, a], u[:, e], v[:, e], pu, pv) for a, e in cyc]
        total = w[0] + w[1] + w[2]
        a = [w[k] * iz[:, k] for k in range(3)]
        den = a[0] + a[1] + a[2]
        den = torch.where(hit, den, 1.0)
        bw = torch.stack([a[k] / den for k in range(3)], dim=-1)
        face_index[b] = best_f.view(H, W)
        bary[b] = torch.where(hit[:, None], bw, 0.0).view(H, W, 3).to(dtype)
        depth[b] = torch.where(hit, total / den, 0.0).view(H, W).to(dtype)
    return face_index, bary, depth


# ----------------------------------------------------------------------------------- interpolate
def interpolate(attributes: Tensor, faces: Tensor, face_index: Tensor, bary: Tensor, *,
                corners: Optional[bool] = None) -> Tensor:
    """Interpolate attributes over the rasterized surface: ``out[b, i, j] = sum_k bary[b, i, j, k] *
    attr(face_index[b, i, j], k)``, zeros where ``face_index == -1``.

    Args:
        attributes: per-vertex ``(B, V, D)`` or ``(V, D)`` (shared by the batch), or per face corner
            ``(F, 3, D)`` (e.g. UV coordinates with seams, flat colours). Floating point.
        faces: ``(F, 3)`` int64, the faces given to :func:`rasterize`.
        face_index: ``(B, H, W)`` int64, bary: ``(B, H, W, 3)``, as returned by :func:`rasterize`.
        corners: True/False forces the per-corner/per-vertex reading of a 3-D ``attributes``; None
            reads it per vertex when its first dimension is B, else per corner (so pass True for
            per-corner attributes when F == B).

    Returns:
        ``(B, H, W, D)`` in ``attributes``' dtype, differentiable w.r.t. ``attributes`` (and ``bary``).
    """
    op = "smplfast.interpolate"
    if not isinstance(attributes, Tensor) or not attributes.dtype.is_floating_point:
        got = attributes.dtype if isinstance(attributes, Tensor) else type(attributes).__name__
        raise ValueError(f"{op}: attributes must be a floating-point tensor; got {got}")
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype != torch.int64:
        got = (tuple(faces.shape), faces.dtype) if isinstance(faces, Tensor) else type(faces).__name__
        raise ValueError(f"{op}: faces must be an (F, 3) int64 tensor; got {got}")
    if not isinstance(face_index, Tensor) or face_index.dim() != 3 or face_index.dtype != torch.int64:
        got = (tuple(face_index.shape), face_index.dtype) if isinstance(face_index, Tensor) else type(face_index)
        raise ValueError(f"{op}: face_index must be a (B, H, W) int64 tensor; got {got}")
    B, H, W = face_index.shape
    if not isinstance(bary, Tensor) or tuple(bary.shape) != (B, H, W, 3) or not bary.dtype.is_floating_point:
        got = (tuple(bary.shape), bary.dtype) if isinstance(bary, Tensor) else type(bary).__name__
        raise ValueError(f"{op}: bary must be a ({B}, {H}, {W}, 3) floating-point tensor; got {got}")
    for name, t in (("faces", faces), ("face_index", face_index), ("bary", bary)):
        if t.device != attributes.device:
            raise ValueError(f"{op}: {name} is on {t.device} but attributes is on {attributes.device}")
    F = faces.shape[0]
    fits_corner = attributes.dim() == 3 and attributes.shape[0] == F and attributes.shape[1] == 3
    fits_vertex = attributes.dim() == 2 or (attributes.dim() == 3 and attributes.shape[0] == B)
    if corners is None:
        corners = fits_corner and not fits_vertex
    if corners and not fits_corner:
        raise ValueError(f"{op}: per-corner attributes must have shape ({F}, 3, D); got {tuple(attributes.shape)}")
    if not corners and not fits_vertex:
        raise ValueError(f"{op}: attributes must be (B, V, D) with B = {B}, (V, D) or ({F}, 3, D); "
                         f"got {tuple(attributes.shape)}")
    D = attributes.shape[-1]
    hit = face_index >= 0
    fi = face_index.clamp(min=0)
    if F == 0:
        if bool(hit.any()):
            raise ValueError(f"{op}: face_index refers to faces but faces is empty")
        return attributes.new_zeros((B, H, W, D))
    if corners:
        vals = attributes[fi]  # (B, H, W, 3, D)
    else:
        vidx = faces[fi]  # (B, H, W, 3)
        if attributes.dim() == 2:
            vals = attributes[vidx]
        else:
            bidx = torch.arange(B, device=attributes.device).view(B, 1, 1, 1)
            vals = attributes[bidx, vidx]
    out = (bary.to(attributes.dtype)[..., None] * vals).sum(-2)
    return torch.where(hit[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


# ------------------------------------------------------------------------------------ custom op
def _outputs_like(vertices: Tensor, H: int, W: int) -> Tuple[Tensor, Tensor, Tensor]:
    B = vertices.shape[0]
    return (torch.empty((B, H, W), dtype=torch.int64, device=vertices.device), vertices.new_empty((B, H, W, 3)),
            vertices.new_empty((B, H, W)))


def _check_op(vertices: Tensor, faces: Tensor, focal: Tensor, center: Tensor, height: int, width: int,
              near: float) -> None:
    _check_inputs(OP, vertices, faces)
    _check_camera_tensors(OP, vertices, focal, center)
    _check_size(OP, height, width)
    _check_near(OP, near)


@torch.library.custom_op("smplfast::rasterize", mutates_args=())
def _rasterize(vertices: Tensor, faces: Tensor, focal: Tensor, center: Tensor, height: int, width: int,
               near: float) -> Tuple[Tensor, Tensor, Tensor]:
    _check_op(vertices, faces, focal, center, height, width, near)
    _check_values(OP, vertices, faces, focal, center)
    face_index, bary, depth = _outputs_like(vertices, height, width)
    B, V = vertices.shape[:2]
    F = faces.shape[0]
    if B == 0:
        return face_index, bary, depth
    # Keep every contiguous copy alive in a local until the kernel has returned.
    vc, fc, focal_c, center_c = vertices.contiguous(), faces.contiguous(), focal.contiguous(), center.contiguous()
    proj_ptr = big_ptr = 0
    if vc.device.type == "cuda":  # the CPU kernel keeps its own scratch
        proj = torch.empty((B, V, 4), dtype=torch.float64, device=vc.device)
        big = torch.empty((1 + B * F,), dtype=torch.int64, device=vc.device)
        proj_ptr, big_ptr = proj.data_ptr(), big.data_ptr()
    _C.rasterize(_target(vc), dtype_code(vc), B, V, F, height, width, float(near), vc.data_ptr(), fc.data_ptr(),
                 focal_c.data_ptr(), center_c.data_ptr(), proj_ptr, big_ptr, face_index.data_ptr(), bary.data_ptr(),
                 depth.data_ptr())
    return face_index, bary, depth


@_rasterize.register_fake
def _(vertices, faces, focal, center, height, width, near):
    _check_op(vertices, faces, focal, center, height, width, near)
    return _outputs_like(vertices, height, width)


def _setup(ctx, inputs, output):
    pass  # nothing to save: the backward only raises


def _backward(ctx, *grads):
    raise RuntimeError(
        f"{OP} is not differentiable: face ids are discrete and its barycentrics are not tracked. Detach "
        "the vertices, or differentiate through smplfast.ops.interpolate (w.r.t. the attributes)")


_rasterize.register_autograd(_backward, setup_context=_setup)


def rasterize(vertices: Tensor, faces: Tensor, focal: CameraParam, center: CameraParam, image_size: Sequence[int],
              near: float = 1e-3) -> Tuple[Tensor, Tensor, Tensor]:
    """Rasterize a batch of posed meshes with a z-buffer (CPU with OpenMP, or CUDA).

    Args:
        vertices: ``(B, V, 3)`` float32/float64 in camera coordinates (x right, y down, z forward, metres).
        faces: ``(F, 3)`` vertex indices in ``[0, V)``, shared by the batch (either winding): an int64
            tensor, or any integer array or tensor (``SMPL.faces``), converted to int64 on the vertices'
            device.
        focal: ``(B, 2)`` or ``(B,)`` tensor, a float, or a pair ``(f_x, f_y)`` (pixels); must be > 0.
        center: ``(B, 2)`` or a pair ``(c_x, c_y)`` (pixels).
        image_size: ``(H, W)`` positive ints.
        near: faces with any vertex at ``Z < near`` are skipped.

    Returns:
        ``face_index (B, H, W)`` int64, -1 on background; ``bary (B, H, W, 3)`` in the vertices' dtype,
        the perspective-correct barycentric weights of the visible face's three vertices at the pixel
        centre (``sum_k bary_k X_k`` is the 3D surface point), zeros on background; ``depth (B, H, W)``,
        camera Z of that surface point, 0 on background.

    Coverage, tie and depth rules are in the module docstring; :func:`rasterize_reference` implements
    them in plain PyTorch. The CPU and CUDA kernels and the reference run the same float64 operations
    in the same order (no fused multiply-adds), so they agree on face ids, ties included. Not differentiable (backward raises); use :func:`interpolate` for differentiable maps.
    The face indices are validated once per faces tensor (one device sync on CUDA, the first time);
    the finite values on the CPU, and on CUDA with :func:`smplfast.ops.value_checks` on.
    """
    faces = as_faces(OP, faces, vertices)
    f, c, H, W, near = _prepare(OP, vertices, faces, focal, center, image_size, near)
    return _rasterize(vertices, faces, f, c, H, W, near)
