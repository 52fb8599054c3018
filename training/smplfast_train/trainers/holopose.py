"""The HoloPose step (TRAINING_SPEC §4.4, §4.6; Güler & Kokkinos, CVPR 2019) for the presets
holopose_stage1, holopose, holopose_global and holopose_direct6d.

The network (heads/holopose.py) has a 2D heatmap head (29 keypoints: SMPL's 24 skeleton joints and 5
face points), a volumetric integral 3D head (the 24 skeleton joints, root-relative metres), a
DensePose head (25 part logits, U, V) and the 3D model (part-based mixture of experts, 6D votes,
direct Euler, or HMR's global regressor). Its camera is weak perspective, ``s·(X_xy + t)`` in
normalised crop units, in every term (§8 H7).

Per batch (``holopose_stage: 1`` keeps only the first three terms):

==========  ==================================================================================  =========
term        definition                                                                          labels
==========  ==================================================================================  =========
hm          heatmap MSE against peak-1 Gaussians (σ 2 px per 64 px), labelled in-crop points   2D
int3d       L1 of the soft-argmax joints, root-relative                                         3D
int2d       x-y of the soft-argmax joints against the 2D joints up to a least-squares scale     2D only
dp_index    part cross-entropy at every heatmap pixel                                           IUV
dp_uv       smooth-L1 of U, V of the labelled part at foreground pixels                         IUV
kp2d        L1 of the model's projected skeleton joints                                         2D
kp3d        L1 of the model's pelvis-centred skeleton joints                                    3D
dp          Eq. 4: mean distance of ``dp_points`` DensePose points to their projected surface   IUV
            points (``smplfast.surface.densepose_loss``, rotation matrices, ``squared=False``)
betas       ``‖β‖²``                                                                            none
cam         SPIN's ``exp(−10 s)²`` (keeps the scale positive)                                   none
pose        rotation-matrix MSE to ground-truth SMPL (``w_pose``, 0 in the presets: ablation)    SMPL
==========  ==================================================================================  =========

Labels follow the paper's dataset mix (§4.6): samples of ``iuv_splits`` carry DensePose labels (the
IUV crop), the files say which carry 3D (``has_pose_3d``); 2D labels are the annotated skeleton-joint
projections (``smpl_joints_2d``) and the annotated face points of the keypoint file (``part``'s nose,
eyes, ears). Flips are off (the charts have no mirror map, §8 H9).

Stage 2 starts from a stage-1 checkpoint: ``init_modules`` names the modules taken from it (the
backbone and the two keypoint heads); the other heads start from the seeded initialisation, the same
for every arm of an experiment.
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np
import torch

import smplfast
from smplfast.body.keypoints import keypoint_names
from smplfast.fitting import weak_perspective_to_translation
from smplfast.surface import BodyParams, IUVPoints, UVGrid, WeakPerspectiveCamera, densepose_loss

from ..heads.holopose import build_holopose, gaussian_heatmaps
from ..heads.moe import HOLOPOSE_KEYPOINTS
from ..holopose_losses import (heatmap_loss, integral_2d_loss, integral_3d_loss, iuv_at_heatmap,
                               model_keypoint_2d_loss, model_keypoint_3d_loss, part_index_loss, shape_l2_loss, uv_loss)
from ..loop import TrainingError, load_checkpoint, load_trained
from ..losses import camera_loss, pose_loss
from ..rotations import axis_angle_to_matrix
from .spin import SpinTrainer, finite_labels, mask_nonfinite_inputs

__all__ = ["HoloPoseTrainer", "face_point_rows", "holopose_net", "load_holopose_checkpoint"]


def holopose_net(cfg) -> torch.nn.Module:
    """The :class:`~smplfast_train.heads.holopose.HoloPoseNet` a config describes (sizes of its tier)."""
    kw = dict(backbone=cfg.backbone, clusters=cfg.moe_k, pool_at=cfg.pool_at, mix_prob=cfg.pool_mix_prob,
              mean_params=cfg.mean_params or None, hmr_iters=cfg.hmr_iters, hmr_relu=cfg.hmr_relu)
    return build_holopose(cfg.tier, regressor=cfg.regressor, **kw)


def load_holopose_checkpoint(path, device="cpu"):
    """``(network in eval mode, config)`` of a HoloPose run's checkpoint."""
    return load_trained(path, "holopose", holopose_net, device)


def face_point_rows() -> np.ndarray:
    """Rows of SPIN's 49 keypoints (25 OpenPose + 24 annotated) holding the annotated face points, in
    the order of :data:`HOLOPOSE_KEYPOINTS` [24:] (nose, right eye, left eye, right ear, left ear)."""
    names = keypoint_names("spin_49")
    return np.array([names.index(n, 25) for n in HOLOPOSE_KEYPOINTS[24:]])


class HoloPoseTrainer(SpinTrainer):
    """HoloPose's stage 1 and stage 2 (see the module docstring). Evaluation and pictures are SPIN's
    (the model's mesh metrics, with the weak camera read as SPIN's crop camera)."""

    def build_model(self) -> torch.nn.Module:
        return holopose_net(self.cfg)

    def _load_init(self, path) -> None:
        """``init_modules`` (empty: the whole network, strictly) of ``init_checkpoint``; every named module
        must be present with equal shapes."""
        cfg = self.cfg
        if not cfg.init_modules:
            return super()._load_init(path)
        state = load_checkpoint(path, map_location=self.device)["model"]
        mine = self.model.state_dict()
        take = {}
        for mod in cfg.init_modules:
            keys = [k for k in mine if k.startswith(mod + ".")]
            if not keys:
                raise TrainingError(f"init_modules: this network has no module {mod!r}")
            missing = [k for k in keys if k not in state]
            wrong = [k for k in keys if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
            if missing or wrong:
                raise TrainingError(f"init_checkpoint {path}: module {mod!r} does not match this network "
                                    f"(missing {missing[:3]}, different shapes {wrong[:3]})")
            take.update({k: state[k] for k in keys})
        self.model.load_state_dict(take, strict=False)
        self.init_loaded = sorted(take)

    def setup(self) -> None:
        cfg, dev = self.cfg, self.device
        self.names = self.train_set.names
        self.fits = None
        self.smplify = None
        self.pose_prior = None
        self._gt_cache = {}
        unknown = sorted(set(cfg.iuv_splits) - set(cfg.train_splits))
        if unknown:
            raise TrainingError(f"iuv_splits {unknown} are not training splits ({sorted(cfg.train_splits)})")
        self.iuv_member = torch.tensor([n in cfg.iuv_splits for n in self.names], device=dev)
        self.face_rows = torch.as_tensor(face_point_rows(), device=dev)
        self.smpl = smplfast.SMPL().to(dev)  # neutral: the model's skeleton joints (first 24) and mesh
        self.grid = UVGrid.from_model(self.smpl, resolution=32).to(dev) if cfg.holopose_stage == 2 else None

    # -------------------------------------------------------------------------------------- the step
    def train_step(self, batch: dict):
        cfg, dev = self.cfg, self.device
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        img, kp49, sj2d, ok, masked = mask_nonfinite_inputs(batch["img"], batch["keypoints"], batch["smpl_joints_2d"])
        stats: Dict[str, float] = {"masked_nonfinite": float(masked)}
        img, ok = img.to(dev), ok.to(dev)
        # The 29 annotated 2D points (skeleton joints, face points) with confidence; unlabelled rows are 0.
        sj2d = sj2d.to(dev).float() * batch["has_smpl_joints_2d"].to(dev).float()[:, None, None]
        kp29 = torch.cat([sj2d, kp49.to(dev).float()[:, self.face_rows]], 1)
        kp29 = torch.where(ok[:, None, None], kp29, torch.zeros_like(kp29))
        has_3d, bad_3d, j3d = finite_labels(batch["has_smpl_joints_3d"].to(dev).bool() & ok,
                                            batch["smpl_joints_3d"].to(dev).float())
        has_smpl, bad_smpl, gt_pose = finite_labels(batch["has_smpl"].to(dev).bool() & ok, batch["pose"].to(dev).float())
        has_iuv, bad_iuv, iuv = finite_labels(self.iuv_member[batch["mixed_source"].long().to(dev)] & ok,
                                              batch["iuv"].to(dev).float())
        stats["bad_labels"] = float(bad_3d.sum() + bad_smpl.sum() + bad_iuv.sum())
        times["prepare"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        out = self.net(img, keypoints_gt=kp29 if cfg.pool_at != "pred" else None)
        H, W = out.heatmaps.shape[-2:]
        sigma = cfg.heatmap_sigma or 2.0 * H / 64.0
        vis2d = (kp29[..., 2] > 0) & (kp29[..., :2].abs() <= 1).all(-1)
        with torch.no_grad():
            target = gaussian_heatmaps(kp29[..., :2], (H, W), sigma, visible=vis2d)
        terms = {
            "hm": heatmap_loss(out.heatmaps, target, vis2d.float()),
            "int3d": integral_3d_loss(out.joints3d, j3d, has_3d),
            "int2d": integral_2d_loss(out.joints3d, sj2d, ok & ~has_3d),
        }
        weights = {"hm": cfg.w_hm, "int3d": cfg.w_int3d, "int2d": cfg.w_int2d}
        stats["heatmap_visible"] = float(out.vis[:, :24].float().mean())
        if cfg.holopose_stage == 2:
            self._stage2_terms(out, terms, weights, stats, kp29, j3d, has_3d, iuv, has_iuv, gt_pose, has_smpl, H)
        times["forward"] = time.perf_counter() - t1
        loss = cfg.loss_scale * sum(weights[k] * v for k, v in terms.items() if weights[k] != 0)
        # Heads a stage (or a zero weight) leaves out still join the graph with weight 0, so under DDP every
        # parameter receives a gradient each step (its reducer expects one).
        loss = loss + 0.0 * sum(x.sum() for x in vars(out).values() if torch.is_tensor(x) and x.requires_grad)
        if cfg.pic_every and self.dist.is_main and (self.step + 1) % cfg.pic_every == 0 and cfg.holopose_stage == 2:
            cam_t = weak_perspective_to_translation(out.cam.detach(), cfg.focal_length, cfg.img_res)
            self.pictures(self.step + 1, img, out.rotmat.detach(), out.betas.detach(), cam_t, None, None, kp49, has_iuv)
        stats.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        stats["loss"] = float(loss.detach())
        stats["has_iuv"] = float(has_iuv.float().mean())
        stats["has_3d"] = float(has_3d.float().mean())
        return loss, stats, times

    def _stage2_terms(self, out, terms, weights, stats, kp29, j3d, has_3d, iuv, has_iuv, gt_pose, has_smpl, H):
        cfg = self.cfg
        B = kp29.shape[0]
        iuv_h = iuv_at_heatmap(iuv, H)
        terms["dp_index"] = part_index_loss(out.dp_logits, iuv_h[:, 0].round(), has_iuv)
        terms["dp_uv"] = uv_loss(out.dp_uv, iuv_h, has_iuv)
        joints = self.smpl(global_orient=out.rotmat[:, :1], body_pose=out.rotmat[:, 1:], betas=out.betas,
                           pose2rot=False, joints_only=True).joints[:, :24]
        terms["kp2d"] = model_keypoint_2d_loss(joints, out.cam, kp29[:, :24])
        terms["kp3d"] = model_keypoint_3d_loss(joints, j3d, has_3d)
        terms["betas"] = shape_l2_loss(out.betas)
        terms["cam"] = camera_loss(out.cam)
        weights.update(dp_index=cfg.w_dp_index, dp_uv=cfg.w_dp_uv, kp2d=cfg.w_2d, kp3d=cfg.w_3d, betas=cfg.w_betas,
                       cam=cfg.w_cam, dp=cfg.w_dp, pose=cfg.w_pose)
        terms["dp"] = self._densepose_term(out, iuv, has_iuv)
        if cfg.w_pose > 0:
            target = axis_angle_to_matrix(gt_pose.reshape(B, 24, 3))
            terms["pose"] = pose_loss(out.rotmat, target, has_smpl)
        if out.any_visible is not None:
            stats["any_visible"] = float(out.any_visible.float().mean())

    def _densepose_term(self, out, iuv, has_iuv) -> torch.Tensor:
        """Eq. 4 on ``dp_points`` points drawn (seeded by the step) from each labelled IUV crop; the mean
        over the samples that have points."""
        cfg = self.cfg
        rows = torch.nonzero(has_iuv).flatten()
        zero = (out.betas.sum() + out.rotmat.sum() + out.cam.sum()) * 0.0
        if cfg.dp_points == 0 or len(rows) == 0:
            return zero
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        pts = IUVPoints.from_iuv_image(iuv[rows], max_points=cfg.dp_points, generator=gen)
        have = pts.mask.any(1)
        if not have.any():
            return zero
        res = float(iuv.shape[-1])
        pts = IUVPoints(pts.part, pts.uv, pts.xy * (2.0 / res) - 1.0, pts.mask)  # crop pixels -> normalised
        params = BodyParams(out.betas[rows], rotmat=out.rotmat[rows])
        per = densepose_loss(params, pts, WeakPerspectiveCamera(out.cam[rows]), self.grid, squared=False)
        return per[have].mean()
