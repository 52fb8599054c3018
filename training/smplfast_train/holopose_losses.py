"""HoloPose's training losses (TRAINING_SPEC §4.4), one function each.

Every function returns a scalar; a loss over an empty selection is exactly 0, connected to the graph
of its inputs (so ``backward`` works and DDP sees every parameter), never NaN. Masks select with
``torch.where`` / boolean indexing, so a NaN in an unselected label cannot leak into a loss.

Units: 2D in normalised crop units (``2·px/res − 1``), 3D in metres, heatmaps peak 1.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import _zero

__all__ = [
    "heatmap_loss", "integral_3d_loss", "integral_2d_loss", "part_index_loss", "uv_loss", "iuv_at_heatmap",
    "model_keypoint_2d_loss", "model_keypoint_3d_loss", "shape_l2_loss",
]


def heatmap_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """MSE of heatmaps (B, K, H, W) against peak-1 targets, averaged over the pixels of the keypoints
    with ``weight`` (B, K) > 0 (Simple-Baselines' target weight: unlabelled or out-of-crop keypoints are
    not trained towards an empty map)."""
    if pred.shape != target.shape or weight.shape != pred.shape[:2]:
        raise ValueError(f"heatmap_loss: pred and target (B, K, H, W), weight (B, K); got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}, {tuple(weight.shape)}")
    sel = weight > 0
    if not sel.any():
        return _zero(pred)
    return ((pred[sel] - target[sel]) ** 2).mean()


def integral_3d_loss(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """L1 of the soft-argmax joints (B, J, 3) against ground-truth joints (B, J, 3), both made
    root-relative (joint 0), on the samples ``mask`` (B,) selects; mean over joints and axes."""
    if not mask.any():
        return _zero(pred)
    p, g = pred[mask], gt[mask].to(pred.dtype)
    return (p - (g - g[:, :1])).abs().mean()


def integral_2d_loss(pred: Tensor, gt2d: Tensor, mask: Tensor, min_joints: int = 4) -> Tensor:
    """x, y of the soft-argmax joints (B, J, 3) (metres) against 2D joints (B, J, 3) (normalised crop
    units, confidence last) of samples without 3D labels (``mask`` (B,)).

    The metric scale of a 2D label is unknown, so both sides are centred on the mean of the visible
    joints and the label is scaled by the least-squares factor ``c = Σ p·g / Σ g·g`` (detached, computed
    per sample from the visible joints); the loss is the mean L1 of ``p − c·g`` over visible joints.
    This supervises the 2D shape of the skeleton in the volume (its x-y marginal) without a depth or
    scale; samples with fewer than ``min_joints`` visible joints or ``c ≤ 0`` are left out."""
    vis = (gt2d[..., 2] > 0) & (gt2d[..., :2].abs() <= 1).all(-1) & mask[:, None]
    keep = vis.sum(1) >= min_joints
    if not keep.any():
        return _zero(pred)
    p, g, v = pred[keep][..., :2], gt2d[keep][..., :2].to(pred.dtype), vis[keep].to(pred.dtype)[..., None]
    n = v.sum(1, keepdim=True)
    p = p - (p * v).sum(1, keepdim=True) / n
    g = torch.where(v > 0, g - (g * v).sum(1, keepdim=True) / n, torch.zeros_like(g))
    with torch.no_grad():
        c = (p * g * v).sum((1, 2)) / (g * g * v).sum((1, 2)).clamp_min(1e-12)
    ok = c > 0
    if not ok.any():
        return _zero(pred)
    err = ((p - c[:, None, None] * g).abs() * v)[ok]
    return err.sum() / (2 * v[ok].sum())


def iuv_at_heatmap(iuv: Tensor, size: int) -> Tensor:
    """An IUV crop (B, 3, R, R) sampled (nearest) at the pixel centres of a ``size``² heatmap: heatmap
    pixel j covers crop pixels [j·R/size, (j+1)·R/size) and takes the crop pixel under its centre."""
    R = iuv.shape[-1]
    if R % size:
        raise ValueError(f"iuv_at_heatmap: crop size {R} is not a multiple of the heatmap size {size}")
    step = R // size
    return iuv[:, :, step // 2::step, step // 2::step]


def part_index_loss(logits: Tensor, part: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of the 25-way part logits (B, 25, H, W) against the part image (B, H, W) (0 =
    background, 1..24) at every pixel of the samples ``mask`` (B,) selects (dense synthetic labels)."""
    if not mask.any():
        return _zero(logits)
    return F.cross_entropy(logits[mask], part[mask].long())


def uv_loss(uv: Tensor, iuv: Tensor, mask: Tensor) -> Tensor:
    """Smooth-L1 of the predicted (U, V) (B, 24, 2, H, W) of the ground-truth part's channels against the
    labels of ``iuv`` (B, 3, H, W) at the foreground pixels of the samples ``mask`` selects."""
    part = iuv[:, 0].round().long()
    fg = (part > 0) & mask[:, None, None]
    if not fg.any():
        return _zero(uv)
    b, i, j = torch.nonzero(fg, as_tuple=True)
    pred = uv[b, part[b, i, j] - 1, :, i, j]  # (N, 2)
    return F.smooth_l1_loss(pred, iuv[b, 1:, i, j].to(pred.dtype))


def model_keypoint_2d_loss(joints: Tensor, cam: Tensor, gt2d: Tensor) -> Tensor:
    """L1 between the weak-perspective projections ``s·(J_xy + t)`` of the model's joints (B, J, 3) and
    2D joints (B, J, 3) (confidence last; out-of-crop joints count as not visible), mean over the
    visible coordinates."""
    proj = cam[:, None, :1] * (joints[..., :2] + cam[:, None, 1:])
    vis = (gt2d[..., 2] > 0) & (gt2d[..., :2].abs() <= 1).all(-1)
    if not vis.any():
        return _zero(joints, cam)
    return (proj[vis] - gt2d[..., :2][vis].to(proj.dtype)).abs().mean()


def model_keypoint_3d_loss(joints: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """L1 between the model's joints (B, J, 3) and ground-truth joints (B, J, 3), both centred on joint 0
    (the pelvis), on the samples ``mask`` selects."""
    if not mask.any():
        return _zero(joints)
    p, g = joints[mask], gt[mask].to(joints.dtype)
    return ((p - p[:, :1]) - (g - g[:, :1])).abs().mean()


def shape_l2_loss(betas: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """``mean_b ‖β_b‖²`` (the regulariser of §4.4, weight 0.001 in the presets)."""
    if mask is not None:
        if not mask.any():
            return _zero(betas)
        betas = betas[mask]
    return (betas ** 2).sum(-1).mean()
