"""The MV-SPIN step (TRAINING_SPEC §3) for the presets mvspin, mvspin_calibrated, mvspin_sv and
mvspin_l2d_l3d.

Batches come from :class:`smplfast.data.MultiViewDataset`: B subjects × V views, one flip per subject,
rotation and scale per view. They are flattened **subject-major** (row ``b * V + v``) and go through
SPIN's step (:class:`~smplfast_train.trainers.spin.SpinTrainer`): the network sees one image at a time,
the losses are SPIN's. What changes is the fits stage:

* ``mv_fit: multiview`` (MV-SPIN): :class:`smplfast.MultiViewSMPLify` (uncalibrated) fits the V views of
  a subject together: shared body pose and betas, one global orientation and translation per view,
  initialised from the network (rotation mean of the body poses over views, mean betas, each view's
  orientation and weak-perspective camera).
* ``mv_fit: calibrated`` (our extension): the rig's extrinsics and the crop intrinsics are known; one
  world orientation and translation per subject.
* ``mv_fit: single_view``: SPIN's single-view SMPLify on every view, a SPIN dictionary per view.

The dictionary has one row per (subject, view), key ``index * V + v``, in each view's canonical camera
frame (SPIN's single-view layout, so reading and writing go through each view's own augmentation). A
multi-view fit writes the V rows of a subject together: the same body pose and betas, each view's
orientation (calibrated: camera rotation · world orientation) and the subject's loss, the **mean over
views** of each view's mean-over-keypoints reprojection loss (MV-SPIN's code sums over views, §8 M6);
the calibrated dictionary also keeps the world translation (auxiliary columns), so a stored fit is
re-scored exactly in any later augmentation. All V rows of a subject carry the same loss, so the DDP
merge (lowest loss, then lowest rank) keeps a subject's rows from one fit.

Skipped, never written: subjects with a view without visible keypoints (uncalibrated: that view's
orientation would be unconstrained), masked inputs, non-finite predictions; a fit whose loss is
non-finite or not lower than the stored one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

import smplfast
from smplfast.fitting import weak_perspective_to_translation
from smplfast.fitting.multiview import rotation_mean

from .. import fits as fitsmod
from ..loop import TrainingError
from ..rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .spin import FitContext, SpinTrainer, first_visit_fits

__all__ = ["MvSpinTrainer", "MIRROR"]

#: The world mirror of a flipped item (MultiViewDataset: X' = diag(-1, 1, 1) X).
MIRROR = (-1.0, 1.0, 1.0)
#: Keys of a multi-view item with a view axis that the single-view step reads.
_VIEW_KEYS = ("img", "keypoints", "pose", "betas", "pose_3d", "has_smpl", "has_pose_3d", "rot_angle")


@dataclass
class _Rig:
    """The (B, V) layout of the current batch and its cameras (for the multi-view fits stage)."""

    B: int
    V: int
    cam_K: torch.Tensor
    cam_rot: torch.Tensor
    cam_transl: torch.Tensor


class MvSpinTrainer(SpinTrainer):
    """MV-SPIN and its ablation arms (see the module docstring)."""

    def setup(self) -> None:
        cfg = self.cfg
        members = self.train_set.members
        self.num_views = members[0].num_views
        if cfg.fits == "static":
            raise TrainingError("mvspin presets start their dictionary with fits: first_visit (a fit at each subject's "
                                "first visit) or gt (oracle); static multi-view fits are not a file format")
        if cfg.mv_fit == "calibrated" and (cfg.fits != "none"):
            missing = [n for n, m in zip(self.train_set.names, members) if not m.has_calibration]
            if missing:
                raise TrainingError(f"mv_fit: calibrated needs camera extrinsics (cam_rot, cam_transl, cam_focal) in every "
                                    f"training split; {missing} have none. Use mv_fit: multiview for uncalibrated rigs")
        super().setup()
        if cfg.run_fit and cfg.mv_fit != "single_view":
            self.smplify = smplfast.MultiViewSMPLify(focal_length=cfg.focal_length, device=self.device,
                                                     optimizer=cfg.fit_optimizer, num_iters=cfg.fit_iters,
                                                     pose_prior=cfg.pose_prior or None, fused=cfg.fit_fused,
                                                     calibrated=cfg.mv_fit == "calibrated")

    # ------------------------------------------------------------------------------ the dictionary
    def _views(self, name: str) -> list:
        return self.train_set.members[self.names.index(name)].views

    def _file_gt(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        if name not in self._gt_cache:
            data = self.train_set.members[self.names.index(name)].data
            v = self._views(name)
            self._gt_cache[name] = (np.asarray(data["pose"][:, v], np.float32).reshape(-1, 72),
                                    np.asarray(data["shape"][:, v], np.float32).reshape(-1, 10))
        return self._gt_cache[name]

    def _file_hidden(self, name: str) -> np.ndarray:
        data = self.train_set.members[self.names.index(name)].data
        return (np.asarray(data["has_smpl"])[:, self._views(name)] <= 0).reshape(-1)

    def _initial_fits(self) -> "fitsmod.FitsDict":
        cfg = self.cfg
        sizes = {n: len(m) * self.num_views for n, m in zip(self.names, self.train_set.members)}
        if cfg.fits == "gt":
            return fitsmod.FitsDict.from_gt({n: self._file_gt(n) for n in self.names})
        return first_visit_fits(sizes, aux_dim=3 if cfg.mv_fit == "calibrated" else 0)

    def _threshold_loss(self, opt_loss: torch.Tensor) -> torch.Tensor:
        # MV-SPIN's code compares the sum over views with SPIN's threshold (4x stricter per view)
        return opt_loss * self.num_views if self.cfg.fit_threshold_views == "sum" else opt_loss

    # -------------------------------------------------------------------------------------- the step
    def train_step(self, batch: dict):
        img = batch["img"]
        if img.dim() != 5:
            raise TrainingError(f"mvspin expects multi-view batches (B, V, 3, H, W); got {tuple(img.shape)}")
        B, V = img.shape[:2]
        flat = {k: batch[k].reshape(B * V, *batch[k].shape[2:]) for k in _VIEW_KEYS}
        flat["is_flipped"] = batch["is_flipped"].repeat_interleave(V)
        flat["mixed_source"] = batch["mixed_source"].repeat_interleave(V)
        flat["sample_index"] = (batch["sample_index"][:, None] * V + torch.arange(V)).reshape(-1)
        dev = self.device
        self._rig = _Rig(B, V, batch["cam_K"].to(dev).float(), batch["cam_rot"].to(dev).float(),
                         batch["cam_transl"].to(dev).float())
        return super().train_step(flat)

    def _fits_stage(self, c: FitContext, stats: Dict[str, float], times: Dict[str, float]):
        cfg, dev = self.cfg, self.device
        if cfg.mv_fit == "single_view" or cfg.fits == "gt":
            return super()._fits_stage(c, stats, times)
        rig = self._rig
        B, V = rig.B, rig.V
        calibrated = cfg.mv_fit == "calibrated"
        R = cfg.fit_res
        kp = c.kp.view(B, V, -1, 3)
        kp_px = torch.cat([0.5 * R * (kp[..., :2] + 1.0), kp[..., 2:]], -1)
        if calibrated:  # the crop intrinsics, rescaled to SMPLify's crop (losses comparable with SPIN's threshold)
            s = R / float(cfg.img_res)
            focal = torch.stack([rig.cam_K[..., 0, 0], rig.cam_K[..., 1, 1]], -1) * s
            centre = rig.cam_K[..., :2, 2] * s
        else:
            focal = None
            centre = torch.full((B, V, 2), R / 2.0, device=dev)
        visible = (kp[..., 2] > 0).any(-1)                            # (B, V)
        need = ~c.has_smpl.view(B, V).all(1) & c.ok.view(B, V).all(1)  # subjects a fit can supervise
        flip = c.flip.view(B, V)[:, 0]
        ds0, idx0 = c.ds_id.view(B, V)[:, 0], c.idx.view(B, V)[:, 0]
        stored = self.fits.read_loss(ds0.cpu(), idx0.cpu(), names=self.names).to(dev)
        opt_pose, opt_betas = c.opt_pose, c.opt_betas
        mirror = torch.tensor(MIRROR, device=dev)
        world_t = None
        if calibrated:
            world_t = self.fits.read_aux(ds0.cpu(), idx0.cpu(), names=self.names).to(dev)
            world_t = torch.where(flip[:, None], world_t * mirror, world_t)   # into this batch's (mirrored) world

        # The stored fits' loss in this frame (subjects never fitted keep +inf).
        opt_loss = torch.full((B,), math.inf, device=dev, dtype=torch.float64)
        score = need & torch.isfinite(stored)
        if score.any():
            r = torch.nonzero(score).flatten()
            opt_loss[r] = self._stored_loss(r, opt_pose.view(B, V, 72), opt_betas.view(B, V, -1), world_t, kp_px, centre,
                                            focal, visible)

        # The multi-view fit from the network's prediction.
        finite = (torch.isfinite(c.rotmat).flatten(1).all(1) & torch.isfinite(c.betas).all(1)
                  & torch.isfinite(c.cam).all(1) & (c.cam[:, 0] > 0)).view(B, V).all(1)   # scale <= 0: depth <= 0
        rows = need & finite & (visible.any(1) if calibrated else visible.all(1))
        stats["mv_skipped_empty_view"] = float((need & finite & ~visible.all(1)).sum()) if not calibrated else 0.0
        upd = torch.zeros(B, dtype=torch.bool, device=dev)
        new_world_t = torch.zeros(B, 3, device=dev)
        if self.smplify is not None and rows.any():
            r = torch.nonzero(rows).flatten()
            aa = matrix_to_axis_angle(c.rotmat).reshape(B, V, 72)[r]
            betas_v = c.betas.view(B, V, -1)[r]
            cam = c.cam.view(B, V, 3)[r]
            if calibrated:
                # each view's body translation in its real camera, from the weak-perspective scale
                depth = 2 * focal[r][..., 0] / (R * cam[..., 0] + 1e-9)
                cam_t = torch.stack([cam[..., 1], cam[..., 2], depth], -1)
                res = self.smplify.fit(aa, betas_v, cam_t, centre[r], kp_px[r], cam_rot=rig.cam_rot[r],
                                       cam_transl=rig.cam_transl[r], focal_length=focal[r], frame="camera")
                pose_v = res.pose                                               # each view's orientation
            else:
                cam_t = weak_perspective_to_translation(cam.reshape(-1, 3), cfg.focal_length, R).view(-1, V, 3)
                res = self.smplify.fit(aa, betas_v, cam_t, centre[r], kp_px[r])
                pose_v = res.pose
            new_loss = _mean_over_views(res.reprojection_loss.mean(-1).double(), visible[r])
            acc = fitsmod.accept(new_loss, opt_loss[r])
            ra = r[acc]
            upd[ra] = True
            opt_pose = opt_pose.view(B, V, 72).clone()
            opt_betas = opt_betas.view(B, V, -1).clone()
            opt_pose[ra] = pose_v[acc].to(opt_pose.dtype)
            opt_betas[ra] = res.betas[acc][:, None].expand(-1, V, -1).to(opt_betas.dtype)
            opt_pose, opt_betas = opt_pose.view(B * V, 72), opt_betas.view(B * V, -1)
            opt_loss = opt_loss.clone()
            opt_loss[ra] = new_loss[acc]
            if calibrated:
                new_world_t[ra] = res.world_transl[acc].to(new_world_t.dtype)
            self._fit_stats(stats, times, acc, len(r), new_loss, res)
            stats["fit_above_threshold"] = float((self._threshold_loss(new_loss) >= cfg.fit_threshold).float().mean())
        aux = None
        if calibrated:  # back to the canonical (unmirrored) world; rows not updated keep theirs
            t = torch.where(upd[:, None], new_world_t, world_t)
            aux = torch.where(flip[:, None], t * mirror, t).repeat_interleave(V, 0).cpu()
        upd_rows = upd.repeat_interleave(V)
        loss_rows = opt_loss.repeat_interleave(V)
        self._store_fits(c, upd_rows, opt_pose, opt_betas, loss_rows, aux=aux)
        stats["fit_updated"] = float(upd.sum())
        return opt_pose, opt_betas, loss_rows

    def _stored_loss(self, r, pose, betas, world_t, kp_px, centre, focal, visible) -> torch.Tensor:
        """The stored fits of subjects ``r`` scored in this batch's frame: per view the mean reprojection
        loss, then the mean over views with keypoints. Uncalibrated: SPIN's per-view scoring (``fit_compare``:
        a robust translation refit, or least squares); calibrated: the stored world translation and the
        rig (no refit: nothing about the camera is unknown)."""
        V = pose.shape[1]
        if world_t is None:
            flat = lambda t: t[r].reshape(len(r) * V, *t.shape[2:])  # noqa: E731
            per_view = self._current_fit_loss(flat(pose), flat(betas), flat(kp_px), flat(centre)).view(-1, V)
        else:
            rig = self._rig
            # the world orientation: each view's stored orientation seen from its camera (one rotation for a
            # calibrated fit; averaged over views)
            Rv = axis_angle_to_matrix(pose[r][..., :3]).to(rig.cam_rot.dtype)
            Rw = rotation_mean(rig.cam_rot[r].transpose(-1, -2) @ Rv)
            go = matrix_to_axis_angle(Rw)[:, None].expand(-1, V, -1)
            pose_w = torch.cat([go.to(pose.dtype), pose[r][..., 3:]], -1)
            loss = self.smplify.reprojection_loss(pose_w, betas[r][:, 0], world_t[r][:, None].expand(-1, V, -1),
                                                  centre[r], kp_px[r], cam_rot=rig.cam_rot[r],
                                                  cam_transl=rig.cam_transl[r], focal_length=focal[r], frame="world")
            per_view = loss.mean(-1)
        return _mean_over_views(per_view.double(), visible[r])


def _mean_over_views(per_view: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """(n, V) per-view losses -> (n,): the mean over the views with keypoints (+inf when none has any)."""
    w = visible.to(per_view.dtype)
    n = w.sum(1)
    out = (per_view * w).sum(1) / n.clamp_min(1)
    return torch.where(n > 0, out, torch.full_like(out, math.inf))

