"""Camera translation initialisation for SMPLify (SPIN's conventions), batched torch.

The camera is SPIN's: a pinhole with focal length ``f`` (pixels, 5000 by default), principal point
``center`` (pixels; the crop centre by default), identity rotation, and the body translated by
``t``; a 3D point X projects to ``f * (X + t)[:2] / (X + t)[2] + center``.

Every function works on the inputs' device without a per-sample loop and never returns NaN: a
sample that cannot be solved gets a fallback translation, and ``return_valid=True`` also returns a
(B,) bool flag that is False for those samples.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..body.keypoints import keypoint_names

__all__ = [
    "SPIN49_OPENPOSE_TORSO",
    "SPIN49_GT_TORSO",
    "SPIN49_IGNORED_JOINTS",
    "SPIN49_OPENPOSE_TORSO_PAIRS",
    "SPIN49_GT_TORSO_PAIRS",
    "SPIN49_TORSO_CANDIDATES",
    "MEAN_CAMERA_SCALE",
    "estimate_translation",
    "weak_perspective_to_translation",
    "similar_triangles_translation",
    "default_translation",
]

_SPIN49 = keypoint_names("spin_49")


def _indices(names: Sequence[str]) -> Tuple[int, ...]:
    return tuple(_SPIN49.index(n) for n in names)


def _expect(value: Tuple[int, ...], expected: Tuple[int, ...], what: str) -> Tuple[int, ...]:
    # The keypoint table is the single source of names; SPIN's numbers must come out of it.
    if value != expected:
        raise RuntimeError(f"{what}: spin_49 gives {value}, SPIN uses {expected}")
    return value


#: SPIN's camera-stage joints from OpenPose: RHip, LHip, RShoulder, LShoulder.
SPIN49_OPENPOSE_TORSO = _expect(
    _indices(("right_hip_openpose", "left_hip_openpose", "right_shoulder_openpose", "left_shoulder_openpose")),
    (9, 12, 2, 5), "SPIN49_OPENPOSE_TORSO")
#: The same four joints among SPIN's ground-truth keypoints (hips as annotated in LSP/MPII/COCO).
SPIN49_GT_TORSO = _expect(
    _indices(("right_hip_lsp", "left_hip_lsp", "right_shoulder", "left_shoulder")),
    (27, 28, 33, 34), "SPIN49_GT_TORSO")
#: Joints SPIN's SMPLify gives confidence 0 in the body stage: OpenPose neck and hips, GT hips
#: (their definitions disagree with SMPL's joints).
SPIN49_IGNORED_JOINTS = _expect(
    _indices(("neck_openpose", "right_hip_openpose", "left_hip_openpose", "right_hip_lsp", "left_hip_lsp")),
    (1, 9, 12, 27, 28), "SPIN49_IGNORED_JOINTS")
#: (shoulder, hip) pairs on each side, as SMPLify measures the torso.
SPIN49_OPENPOSE_TORSO_PAIRS = ((SPIN49_OPENPOSE_TORSO[2], SPIN49_OPENPOSE_TORSO[0]),
                               (SPIN49_OPENPOSE_TORSO[3], SPIN49_OPENPOSE_TORSO[1]))
SPIN49_GT_TORSO_PAIRS = ((SPIN49_GT_TORSO[2], SPIN49_GT_TORSO[0]), (SPIN49_GT_TORSO[3], SPIN49_GT_TORSO[1]))
#: Default candidates of :func:`similar_triangles_translation`, in order of preference (OpenPose
#: first, as in SPIN's camera stage).
SPIN49_TORSO_CANDIDATES = (SPIN49_OPENPOSE_TORSO_PAIRS, SPIN49_GT_TORSO_PAIRS)

#: Scale of SPIN's mean weak-perspective camera; the default fallback depth is ``2 f / (img_size * 0.9)``.
MEAN_CAMERA_SCALE = 0.9


# ----------------------------------------------------------------------------------------- helpers
def _check_points(op: str, joints_3d: Tensor, keypoints_2d: Tensor) -> None:
    for name, t, d in (("joints_3d", joints_3d, 3), ("keypoints_2d", keypoints_2d, 3)):
        if not torch.is_tensor(t) or not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating point tensor")
        if t.dim() != 3 or t.shape[-1] != d:
            raise ValueError(f"{op}: {name} must have shape (B, N, {d}); got {tuple(t.shape)}")
    if joints_3d.shape[:2] != keypoints_2d.shape[:2]:
        raise ValueError(f"{op}: joints_3d {tuple(joints_3d.shape)} and keypoints_2d {tuple(keypoints_2d.shape)} "
                         f"must agree in B and N")
    if joints_3d.device != keypoints_2d.device:
        raise ValueError(f"{op}: joints_3d is on {joints_3d.device} but keypoints_2d on {keypoints_2d.device}")


def _per_sample(op: str, name: str, value, B: int, width: int, ref: Tensor) -> Tensor:
    """A scalar, (width,) or (B, width) value as a (B, width) float64 tensor on ref's device."""
    t = torch.as_tensor(value, dtype=torch.float64, device=ref.device)
    if t.dim() == 0:
        return t.expand(B, width)
    if t.shape == (width,):
        return t.expand(B, width)
    if t.shape == (B, width) or (width == 1 and t.shape == (B,)):
        return t.reshape(B, width)
    raise ValueError(f"{op}: {name} must be a scalar, ({width},) or (B, {width}) with B = {B}; got {tuple(t.shape)}")


def _camera(op: str, B: int, ref: Tensor, focal_length, center, img_size) -> Tuple[Tensor, Tensor]:
    f = _per_sample(op, "focal_length", focal_length, B, 1, ref)
    if center is None:
        c = _per_sample(op, "img_size", img_size, B, 1, ref).expand(B, 2) / 2.0
    else:
        c = _per_sample(op, "center", center, B, 2, ref)
    return f, c


def _rotate(op: str, points: Tensor, rotation: Optional[Tensor]) -> Tensor:
    if rotation is None:
        return points
    R = torch.as_tensor(rotation, device=points.device).to(points.dtype)
    if R.shape != (points.shape[0], 3, 3):
        raise ValueError(f"{op}: rotation must have shape (B, 3, 3) = ({points.shape[0]}, 3, 3); got {tuple(R.shape)}")
    return torch.einsum("bij,bnj->bni", R, points)


def _clean(X: Tensor, kp: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(X, uv, w) with w = max(conf, 0), zeroed (and values zeroed) where anything is non-finite."""
    finite = torch.isfinite(X).all(-1) & torch.isfinite(kp).all(-1)
    w = torch.where(finite, kp[..., 2].clamp_min(0.0), torch.zeros_like(kp[..., 2]))
    X = torch.where(finite.unsqueeze(-1), X, torch.zeros_like(X))
    uv = torch.where(finite.unsqueeze(-1), kp[..., :2], torch.zeros_like(kp[..., :2]))
    return X, uv, w


def _fallback(op: str, fallback, B: int, f: Tensor, img_size, ref: Tensor) -> Tensor:
    if fallback is not None:
        return _per_sample(op, "fallback", fallback, B, 3, ref)
    return default_translation(B, f.squeeze(1), img_size, device=ref.device, dtype=torch.float64)


def default_translation(batch_size: int, focal_length=5000.0, img_size=224.0, device=None,
                        dtype=torch.float32) -> Tensor:
    """(B, 3) translation of SPIN's mean camera: ``[0, 0, 2 f / (img_size * 0.9)]`` (49.6 m for
    f = 5000 and a 224-pixel crop): the body centred, filling 90% of the crop."""
    f = torch.as_tensor(focal_length, dtype=torch.float64, device=device).reshape(-1)
    s = torch.as_tensor(img_size, dtype=torch.float64, device=device).reshape(-1)
    depth = (2.0 * f / (s * MEAN_CAMERA_SCALE)).expand(batch_size)
    zero = torch.zeros(batch_size, dtype=torch.float64, device=depth.device)
    return torch.stack([zero, zero, depth], dim=-1).to(dtype)


# ---------------------------------------------------------------------------------------- SPIN's LS
def estimate_translation(
    joints_3d: Tensor,
    keypoints_2d: Tensor,
    focal_length=5000.0,
    center: Optional[Tensor] = None,
    img_size=224.0,
    use_all_joints: bool = False,
    rotation: Optional[Tensor] = None,
    fallback: Optional[Tensor] = None,
    return_valid: bool = False,
    min_joints: int = 2,
):
    """Camera translation (B, 3) that best aligns the projected ``joints_3d`` with ``keypoints_2d``.

    The same weighted linear least squares as SPIN's ``estimate_translation``: per joint
    ``f (X + t_x) = (u - c_x)(Z + t_z)`` and likewise for y, rows weighted by ``sqrt(conf)``, solved
    through the 3x3 normal equations. ``joints_3d`` (B, N, 3) model joints, ``keypoints_2d``
    (B, N, 3) ``[x, y, conf]`` in pixels. SPIN uses joints 25: (its ground-truth joints; N = 49);
    ``use_all_joints=True`` uses every joint. ``center`` (B, 2) or (2,) is the principal point, by
    default ``img_size / 2``; ``focal_length`` a scalar or (B,). ``rotation`` (B, 3, 3) rotates the
    joints first (``R @ X``).

    Negative confidences count as 0; joints with non-finite values are ignored. A sample with fewer
    than ``min_joints`` confident joints, a singular system, a non-finite solution or one that puts a
    confident joint at depth <= 0 (behind the camera) gets
    ``fallback`` (B, 3), by default :func:`similar_triangles_translation` on all 49 joints when N = 49
    and it succeeds, else :func:`default_translation`. ``return_valid=True`` returns
    ``(translation, valid)``. Computed in float64, returned in ``joints_3d``'s dtype.
    """
    op = "estimate_translation"
    _check_points(op, joints_3d, keypoints_2d)
    B, N = joints_3d.shape[:2]
    if not use_all_joints and N <= 25:
        raise ValueError(f"{op}: SPIN's joints 25: need N = 49 keypoints; got N = {N} (pass use_all_joints=True)")
    f, c = _camera(op, B, joints_3d, focal_length, center, img_size)
    X_all = _rotate(op, joints_3d.to(torch.float64), rotation)
    kp_all = keypoints_2d.to(torch.float64)
    X, kp = (X_all, kp_all) if use_all_joints else (X_all[:, 25:], kp_all[:, 25:])
    X, uv, w = _clean(X, kp)

    # Row for coordinate k of joint n: q = [f e_k, c_k - u_k], rhs = (u_k - c_k) Z - f X_k.
    a = c.unsqueeze(1) - uv                                   # (B, n, 2)
    rhs = -a * X[..., 2:3] - f.unsqueeze(1) * X[..., :2]      # (B, n, 2)
    sw = w.sum(-1)
    fb = f.squeeze(1)
    A = X.new_zeros(B, 3, 3)
    A[:, 0, 0] = A[:, 1, 1] = fb * fb * sw
    A[:, 0, 2] = A[:, 2, 0] = fb * (w * a[..., 0]).sum(-1)
    A[:, 1, 2] = A[:, 2, 1] = fb * (w * a[..., 1]).sum(-1)
    A[:, 2, 2] = (w.unsqueeze(-1) * a * a).sum((-1, -2))
    b = torch.stack([fb * (w * rhs[..., 0]).sum(-1), fb * (w * rhs[..., 1]).sum(-1),
                     (w.unsqueeze(-1) * a * rhs).sum((-1, -2))], dim=-1)

    # Singularity test on the Jacobi-scaled matrix, so pixel and focal-length scales do not matter.
    finite = torch.isfinite(A).all(-1).all(-1) & torch.isfinite(b).all(-1)
    d = torch.sqrt(torch.diagonal(A, dim1=-2, dim2=-1)).clamp_min(1e-150)
    As = A / (d.unsqueeze(-1) * d.unsqueeze(-2))
    As = torch.where(finite[:, None, None] & torch.isfinite(As), As, torch.zeros_like(As))
    min_eig = torch.linalg.eigvalsh(As)[:, 0]
    valid = ((w > 0).sum(-1) >= max(int(min_joints), 1)) & (min_eig > 1e-12) & (sw > 0) & finite
    eye = torch.eye(3, dtype=A.dtype, device=A.device).expand(B, 3, 3)
    t, _ = torch.linalg.solve_ex(torch.where(valid[:, None, None], A, eye),
                                 torch.where(valid[:, None], b, torch.zeros_like(b)))
    valid = valid & torch.isfinite(t).all(-1)
    # a least-squares solution can put the body behind the camera (both signs of depth fit the rays):
    # every weighted joint must end in front of it
    valid = valid & ((X[..., 2] + t[:, None, 2] > 0) | (w <= 0)).all(-1)

    # Always computed (it is cheap) so that no device synchronisation is needed.
    if fallback is None and N == 49:
        fb_t = similar_triangles_translation(X_all, kp_all, focal_length=f.squeeze(1), center=c, img_size=img_size)
    else:
        fb_t = _fallback(op, fallback, B, f, img_size, joints_3d)
    t = torch.where(valid.unsqueeze(-1), t, fb_t.to(t.dtype)).to(joints_3d.dtype)
    return (t, valid) if return_valid else t


def weak_perspective_to_translation(cam: Tensor, focal_length=5000.0, img_res=224) -> Tensor:
    """SPIN's conversion of a weak-perspective camera ``[s, tx, ty]`` (B, 3) to a translation
    ``[tx, ty, 2 f / (img_res * s + 1e-9)]`` (B, 3)."""
    if not torch.is_tensor(cam) or cam.dim() != 2 or cam.shape[1] != 3:
        raise ValueError(f"weak_perspective_to_translation: cam must be a (B, 3) tensor; got "
                         f"{tuple(cam.shape) if torch.is_tensor(cam) else type(cam).__name__}")
    f = torch.as_tensor(focal_length, dtype=cam.dtype, device=cam.device)
    return torch.stack([cam[:, 1], cam[:, 2], 2 * f / (img_res * cam[:, 0] + 1e-9)], dim=-1)


# ---------------------------------------------------------------------------------- similar triangles
def _candidates(torso_pairs, N: int) -> Tuple[Tuple[Tuple[int, int], ...], ...]:
    if torso_pairs is None:
        if N != 49:
            raise ValueError(f"similar_triangles_translation: the default torso pairs are SPIN's 49 keypoints; "
                             f"got N = {N}: pass torso_pairs")
        return SPIN49_TORSO_CANDIDATES
    pairs = tuple(torso_pairs)
    if pairs and isinstance(pairs[0][0], int):  # a single candidate: [(a, b), ...]
        pairs = (pairs,)
    out = []
    for cand in pairs:
        cand = tuple((int(p[0]), int(p[1])) for p in cand)
        if not cand or any(not (0 <= i < N) for p in cand for i in p):
            raise ValueError(f"similar_triangles_translation: torso pairs must be non-empty pairs of indices in [0, {N}); "
                             f"got {cand}")
        out.append(cand)
    return tuple(out)


def similar_triangles_translation(
    joints_3d: Tensor,
    keypoints_2d: Tensor,
    torso_pairs=None,
    focal_length=5000.0,
    center: Optional[Tensor] = None,
    img_size=224.0,
    rotation: Optional[Tensor] = None,
    fallback: Optional[Tensor] = None,
    return_valid: bool = False,
):
    """SMPLify's camera initialisation by similar triangles, batched: (B, 3).

    The torso's depth is ``f * mean 3D length / mean 2D length`` of its (shoulder, hip) pairs, and
    ``t_x, t_y`` put the 3D torso centre (mean of the pairs' end points) on the 2D one; so a torso
    parallel to the image plane is recovered exactly. ``torso_pairs`` is a list of (a, b) index
    pairs, or a list of such lists tried in order; per sample, the first candidate whose pairs all
    have confidence > 0 at both ends is used, else the first with at least one such pair (only those
    pairs). The default is SPIN's 49 keypoints: the OpenPose shoulders and hips [2, 5, 9, 12] when
    all four are confident, else the ground-truth ones [33, 34, 27, 28].

    Samples without a usable pair, with a degenerate 2D torso (< 1e-3 px) or 3D torso, get
    ``fallback`` (B, 3) (default :func:`default_translation`); ``return_valid=True`` returns
    ``(translation, valid)``. Other arguments as in :func:`estimate_translation`.
    """
    op = "similar_triangles_translation"
    _check_points(op, joints_3d, keypoints_2d)
    B, N = joints_3d.shape[:2]
    cands = _candidates(torso_pairs, N)
    f, c = _camera(op, B, joints_3d, focal_length, center, img_size)
    X = _rotate(op, joints_3d.to(torch.float64), rotation)
    X, uv, w = _clean(X, keypoints_2d.to(torch.float64))
    ok = w > 0

    results = []
    for cand in cands:
        ia = torch.tensor([p[0] for p in cand], device=X.device)
        ib = torch.tensor([p[1] for p in cand], device=X.device)
        use = (ok[:, ia] & ok[:, ib]).to(X.dtype)                      # (B, P)
        n = use.sum(-1)
        nz = n.clamp_min(1.0)
        len3 = ((X[:, ia] - X[:, ib]).norm(dim=-1) * use).sum(-1) / nz
        len2 = ((uv[:, ia] - uv[:, ib]).norm(dim=-1) * use).sum(-1) / nz
        ctr3 = ((X[:, ia] + X[:, ib]) * use.unsqueeze(-1)).sum(1) / (2 * nz.unsqueeze(-1))
        ctr2 = ((uv[:, ia] + uv[:, ib]) * use.unsqueeze(-1)).sum(1) / (2 * nz.unsqueeze(-1))
        good = (n > 0) & (len2 > 1e-3) & (len3 > 0)
        depth = f.squeeze(1) * len3 / torch.where(good, len2, torch.ones_like(len2))
        txy = (ctr2 - c) * depth.unsqueeze(-1) / f - ctr3[:, :2]
        t = torch.cat([txy, (depth - ctr3[:, 2]).unsqueeze(-1)], dim=-1)
        good = good & torch.isfinite(t).all(-1)
        complete = good & (n == len(cand))
        results.append((t, good, complete))

    t = torch.zeros(B, 3, dtype=torch.float64, device=X.device)
    valid = torch.zeros(B, dtype=torch.bool, device=X.device)
    # Later passes win: first any candidate with a usable pair, then (overriding) complete ones;
    # within a pass the earlier candidate wins.
    for key in (1, 2):
        for cand_t, good, complete in reversed(results):
            sel = good if key == 1 else complete
            t = torch.where(sel.unsqueeze(-1), cand_t, t)
            valid = valid | sel
    fb = _fallback(op, fallback, B, f, img_size, joints_3d)
    t = torch.where(valid.unsqueeze(-1), t, fb).to(joints_3d.dtype)
    return (t, valid) if return_valid else t
