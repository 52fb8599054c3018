"""Losses of the SPIN family, one function each, with SPIN's reductions (TRAINING_SPEC §2.2).

Every function returns a scalar tensor; a loss over an empty selection is exactly 0 (connected to the
graph of its inputs so ``backward`` works), never NaN. Shapes: B samples, 49 keypoints = 25 OpenPose +
24 ground-truth joints (SPIN's order), 2D in normalised crop units (2k/res - 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = [
    "keypoint_2d_loss", "keypoint_3d_loss", "pose_loss", "betas_loss", "vertex_loss", "camera_loss",
    "prior_loss", "LossWeights", "total_loss",
]


def _zero(*like: Tensor) -> Tensor:
    """0 attached to the inputs' graphs (so an all-masked batch still backpropagates cleanly)."""
    z = like[0].sum() * 0.0
    for t in like[1:]:
        z = z + t.sum() * 0.0
    return z


def keypoint_2d_loss(pred: Tensor, gt: Tensor, openpose_weight: float = 0.0, gt_weight: float = 1.0) -> Tensor:
    """SPIN's 2D loss: mean over B x 49 x 2 of ``conf * w * (pred - gt)^2``; ``w`` is ``openpose_weight``
    for the first 25 keypoints and ``gt_weight`` for the last 24. The zero-weight rows count in the mean
    (SPIN's scale). ``pred`` (B, 49, 2), ``gt`` (B, 49, 3) with confidence last."""
    if pred.shape[:-1] != gt.shape[:-1] or pred.shape[-1] != 2 or gt.shape[-1] != 3:
        raise ValueError(f"keypoint_2d_loss: pred (B, K, 2) and gt (B, K, 3); got {tuple(pred.shape)}, {tuple(gt.shape)}")
    w = torch.ones(gt.shape[-2], dtype=gt.dtype, device=gt.device) * gt_weight
    w[:25] = openpose_weight
    conf = gt[..., 2:] * w[:, None]
    return (conf * (pred - gt[..., :2]) ** 2).mean()


def _pelvis_centred(j: Tensor) -> Tensor:
    # SPIN: the pelvis is the midpoint of the 24-joint set's hips (joints 2 and 3: right/left hip).
    return j - (j[:, 2:3] + j[:, 3:4]) / 2


def keypoint_3d_loss(pred: Tensor, gt: Tensor, has_pose_3d: Tensor) -> Tensor:
    """SPIN's 3D loss on the 24 ground-truth joints: pelvis-centred, ``conf * (pred - gt)^2`` averaged over
    the rows with 3D labels (x 24 x 3). ``pred`` (B, 24, 3), ``gt`` (B, 24, 4), ``has_pose_3d`` (B,) bool."""
    if pred.shape[-2:] != (24, 3) or gt.shape[-2:] != (24, 4) or pred.shape[0] != gt.shape[0]:
        raise ValueError(f"keypoint_3d_loss: pred (B, 24, 3) and gt (B, 24, 4); got {tuple(pred.shape)}, {tuple(gt.shape)}")
    m = has_pose_3d.bool()
    if not m.any():
        return _zero(pred)
    p, g = pred[m], gt[m]
    conf = g[..., 3:]
    return (conf * (_pelvis_centred(p) - _pelvis_centred(g[..., :3])) ** 2).mean()


def pose_loss(pred_rotmat: Tensor, target_rotmat: Tensor, valid: Tensor) -> Tensor:
    """MSE between rotation matrices (B, 24, 3, 3) over the valid rows (x 24 x 9)."""
    m = valid.bool()
    if not m.any():
        return _zero(pred_rotmat)
    return ((pred_rotmat[m] - target_rotmat[m]) ** 2).mean()


def betas_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """MSE between shape coefficients (B, 10) over the valid rows."""
    m = valid.bool()
    if not m.any():
        return _zero(pred)
    return ((pred[m] - target[m]) ** 2).mean()


def vertex_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """L1 between vertices (B, V, 3) over the valid rows (SPIN's shape loss)."""
    m = valid.bool()
    if not m.any():
        return _zero(pred)
    return (pred[m] - target[m]).abs().mean()


def camera_loss(cam: Tensor) -> Tensor:
    """SPIN's camera regulariser ``mean(exp(-10 s)^2)`` keeping the weak-perspective scale positive."""
    return (torch.exp(-10.0 * cam[:, 0]) ** 2).mean()


def prior_loss(pose_aa: Tensor, pose_prior, mask: Tensor, gmm_weight: float = 4.78 ** 2,
               angle_weight: float = 15.2 ** 2) -> Tensor:
    """SMPLify's pose priors on predicted axis-angle poses (B, 72): ``gmm_weight * GMM(body) +
    angle_weight * sum exp(bend)^2`` (SPIN's weights, in SMPLify's energy units), averaged over the
    masked rows. ``pose_prior``: a :class:`smplfast.fitting.MaxMixturePrior`."""
    from smplfast.fitting.priors import angle_prior

    m = mask.bool()
    if not m.any():
        return _zero(pose_aa)
    body = pose_aa[m][:, 3:]
    gmm = pose_prior(body, torch.zeros(body.shape[0], 10, dtype=body.dtype, device=body.device))
    ang = angle_prior(body).sum(-1)
    return (gmm_weight * gmm + angle_weight * ang).mean()


@dataclass(frozen=True)
class LossWeights:
    """SPIN's weights (the loss is ``scale * sum w_k L_k``)."""

    scale: float = 60.0
    kp_2d: float = 5.0
    kp_3d: float = 5.0
    pose: float = 1.0
    betas: float = 0.001
    vert: float = 0.0
    cam: float = 1.0
    prior: float = 0.0


def total_loss(terms: Dict[str, Tensor], w: LossWeights) -> Tensor:
    """``scale * (kp_2d w + kp_3d w + pose w + betas w + vert w + cam w + prior w)`` over the terms given."""
    weights = {"kp_2d": w.kp_2d, "kp_3d": w.kp_3d, "pose": w.pose, "betas": w.betas, "vert": w.vert,
               "cam": w.cam, "prior": w.prior}
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"total_loss: unknown terms {sorted(unknown)}")
    out: Optional[Tensor] = None
    for k, v in terms.items():
        if weights[k] == 0:
            continue
        out = weights[k] * v if out is None else out + weights[k] * v
    if out is None:
        out = _zero(*terms.values())
    return w.scale * out
