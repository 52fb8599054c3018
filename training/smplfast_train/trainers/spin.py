"""The SPIN step (TRAINING_SPEC §2.2) for the presets spin_pretrain_lab, hmr2d, hmr2d_prior, spin_static,
spin, spin_unpaired and spin_oracle_fits.

Per batch: read the current fits (in the batch's augmentation frame); run the network; with
``run_fit`` run SMPLify (LM by default) from the network's detached prediction on the 2D keypoints in a
virtual 224-px crop, compare with the stored fit (``fit_compare: fair`` re-fits the stored fit's
translation first) and keep the better one in the dictionary (canonical frame, all-gathered across
ranks); build the targets (ground-truth SMPL overrides fits; fits above the threshold supervise
nothing; fits with |beta| > 3 supervise betas towards 0); SPIN's losses.

Labels the files mark as hidden (``has_smpl = 0`` / ``has_pose_3d = 0``) never enter a loss: they are
selected away with ``torch.where`` / boolean indexing (not multiplied by 0, which would let NaN through),
and samples whose inputs (image, keypoints) are not finite are dropped from the batch and counted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

import smplfast
from smplfast.fitting import estimate_translation, weak_perspective_to_translation
from smplfast.fitting.camera import SPIN49_IGNORED_JOINTS
from smplfast.fitting.smplify import perspective_projection

from .. import fits as fitsmod
from ..losses import (LossWeights, betas_loss, camera_loss, keypoint_2d_loss, keypoint_3d_loss, pose_loss, prior_loss,
                      total_loss, vertex_loss)
from ..loop import Trainer, TrainingError
from ..rotations import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = ["SpinTrainer", "FitContext", "first_visit_fits", "mask_nonfinite_inputs", "finite_labels"]


def mask_nonfinite_inputs(img: torch.Tensor, *inputs: torch.Tensor):
    """Inputs the network or a fitter reads must be finite. A bad sample is masked, not learned: its image
    and other inputs are zeroed (keypoints get confidence 0) and ``ok`` (B,) is False, so its labels are
    ignored; the batch keeps its shape, so every DDP rank runs the same collectives. Returns
    ``(img, *inputs, ok, number masked)``."""
    ok = torch.isfinite(img).flatten(1).all(1)
    for x in inputs:
        ok = ok & torch.isfinite(x).flatten(1).all(1)
    masked = int((~ok).sum())
    if masked:
        img = torch.where(ok.view(-1, *[1] * (img.dim() - 1)), img, torch.zeros_like(img))
        inputs = tuple(torch.where(ok.view(-1, *[1] * (x.dim() - 1)), x, torch.zeros_like(x)) for x in inputs)
    return (img, *inputs, ok, masked)


def finite_labels(has: torch.Tensor, *labels: torch.Tensor):
    """A labelled row (``has`` (B,) bool) whose labels are not all finite is treated as unlabelled (and
    counted); unlabelled rows of every label are zeroed, so no NaN can reach a loss through them. Returns
    ``(has, bad, *labels)`` with ``bad`` (B,) the rows dropped for non-finite values."""
    finite = torch.ones_like(has)
    for x in labels:
        finite = finite & torch.isfinite(x).flatten(1).all(1)
    bad = has & ~finite
    has = has & ~bad
    return (has, bad, *(torch.where(has.view(-1, *[1] * (x.dim() - 1)), x, torch.zeros_like(x)) for x in labels))


@dataclass
class FitContext:
    """What the fits stage of a step sees (every tensor on the training device, rows of the batch):
    keypoints (B, 49, 3) in normalised crop units, label and input masks, the detached prediction, the
    stored fits read in the batch's frame, and the rows' dictionary keys and augmentation."""

    kp: torch.Tensor
    has_smpl: torch.Tensor
    ok: torch.Tensor
    rotmat: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor
    opt_pose: torch.Tensor
    opt_betas: torch.Tensor
    ds_id: torch.Tensor
    idx: torch.Tensor
    rot: torch.Tensor
    flip: torch.Tensor


def first_visit_fits(sizes: Dict[str, int], aux_dim: int = 0) -> "fitsmod.FitsDict":
    """A dictionary with no fit yet (``fits: first_visit``): every row at the upright rest pose with loss
    +inf, so it supervises nothing until the loop's first fit of that sample replaces it (MV-SPIN's static
    fits are random; this is the spec's fix, §8 M11)."""
    upright = np.zeros(72, np.float32)
    upright[0] = np.pi  # upright in SPIN's y-down camera frame
    return fitsmod.FitsDict(sizes, default_pose=upright, provenance="no fit yet (first_visit)", aux_dim=aux_dim)


class SpinTrainer(Trainer):
    """SPIN and its ablation arms (see the module docstring)."""

    def setup(self) -> None:
        cfg, dev = self.cfg, self.device
        # Neutral model with SPIN's 49 keypoints: predictions, fits and targets.
        self.smpl = smplfast.SMPL(keypoints="spin_49").to(dev)
        self.weights = LossWeights(scale=cfg.loss_scale, kp_2d=cfg.w_2d, kp_3d=cfg.w_3d, pose=cfg.w_pose,
                                   betas=cfg.w_betas, vert=cfg.w_vert, cam=cfg.w_cam, prior=cfg.w_prior)
        self.names = self.train_set.names
        self._gt_cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.fits = None
        if cfg.fits != "none":
            self.fits = self._initial_fits()
        self.smplify = None
        if cfg.run_fit:
            self.smplify = smplfast.SMPLify(focal_length=cfg.focal_length, device=dev, optimizer=cfg.fit_optimizer,
                                            num_iters=cfg.fit_iters, pose_prior=cfg.pose_prior or None,
                                            fused=cfg.fit_fused)
        self.pose_prior = None
        if cfg.preset == "hmr2d_prior" and cfg.w_prior <= 0:
            raise TrainingError("hmr2d_prior needs w_prior > 0: calibrate it at the starting checkpoint with "
                                "training/experiments/calibrate_prior.py and pass --set w_prior=VALUE")
        if cfg.w_prior > 0:
            from smplfast.fitting import MaxMixturePrior

            self.pose_prior = MaxMixturePrior(cfg.pose_prior or None).to(dev)

    # --------------------------------------------------------------------------------- the dictionary
    def _file_gt(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """The file's own (canonical-frame) pose and betas: the oracle's fits and the diagnostics' GT."""
        if name not in self._gt_cache:
            data = self.train_set.members[self.names.index(name)].data
            self._gt_cache[name] = (np.asarray(data["pose"], np.float32), np.asarray(data["shape"], np.float32))
        return self._gt_cache[name]

    def _file_hidden(self, name: str) -> np.ndarray:
        """Per dictionary row: the file hides its SMPL label (has_smpl = 0)."""
        return np.asarray(self.train_set.members[self.names.index(name)].data["has_smpl"]) <= 0

    def _initial_fits(self) -> "fitsmod.FitsDict":
        cfg = self.cfg
        sizes = {n: len(m) for n, m in zip(self.names, self.train_set.members)}
        if cfg.fits == "first_visit":
            return first_visit_fits(sizes)
        if cfg.fits == "gt":
            return fitsmod.FitsDict.from_gt({n: self._file_gt(n) for n in self.names})
        folder = Path(cfg.static_fits)
        if not folder.is_absolute():
            folder = Path(cfg.data) / folder
        arrays = {}
        for name, member in zip(self.names, self.train_set.members):
            has_smpl = np.asarray(member.data["has_smpl"]) > 0
            path = fitsmod.static_fits_path(folder, name)
            if path.is_file():
                sf = fitsmod.read_static_fits(path, expected_size=sizes[name])
                arrays[name] = (sf.pose, sf.betas, sf.loss)
            elif has_smpl.all() and not cfg.unpaired:
                # Every row has ground-truth SMPL, which overrides the fits: the dictionary is never read.
                pose, betas = self._file_gt(name)
                arrays[name] = (pose, betas, np.zeros(sizes[name]))
            else:
                raise TrainingError(f"fits: static needs {path} (split {name!r} has samples without SMPL labels); "
                                    f"make it with `python training/make_static_fits.py --data {Path(cfg.data) / name} "
                                    f"--out {folder}`")
        return fitsmod.FitsDict.from_arrays(arrays, provenance={n: f"initial fits of {n}" for n in arrays})

    def save_extra_files(self) -> None:
        if self.fits is not None:
            self.fits.save(self.run_dir / "fits")

    def extra_state(self) -> dict:
        # The dictionary travels inside the checkpoint, so model and fits always belong to the same step
        # (fits/ holds a readable copy).
        if self.fits is None:
            return {}
        return {"fits": self.fits.state_dict(), "fits_skipped_nonfinite": self.fits.skipped_nonfinite}

    def load_extra_state(self, state: dict) -> None:
        if self.fits is not None:
            if "fits" not in state:
                raise TrainingError("the checkpoint holds no fits dictionary, but this preset uses one")
            self.fits.load_state_dict(state["fits"])
            self.fits.skipped_nonfinite = int(state.get("fits_skipped_nonfinite", 0))

    def on_log(self, step: int) -> Dict[str, float]:
        cfg = self.cfg
        if self.fits is None or not cfg.diag_every or step % cfg.diag_every or not self.dist.is_main:
            return {}
        out = {}
        for name in self.names:
            hidden = self._file_hidden(name)
            if not hidden.any():
                continue
            pose, betas = self._file_gt(name)
            rows = np.flatnonzero(hidden & np.isfinite(pose).all(1) & np.isfinite(betas).all(1))[:1000]
            if not hasattr(self, "_diag_smpl"):  # SPIN's J14 of the H36M regressor, as the evaluation
                self._diag_smpl = smplfast.SMPL(keypoints="h36m_17").to(self.device)
            d = self.fits.diagnostics(name, pose, betas, self._diag_smpl, rows=rows, threshold=cfg.fit_threshold)
            out.update({f"fits_{name}_{k}": float(v) for k, v in d.items() if isinstance(v, (int, float))})
        return out

    # -------------------------------------------------------------------------------------- the step
    def train_step(self, batch: dict):
        cfg, dev = self.cfg, self.device
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        img, kp, ok, masked = mask_nonfinite_inputs(batch["img"], batch["keypoints"])
        B = img.shape[0]
        stats: Dict[str, float] = {"masked_nonfinite": float(masked)}
        img, kp = img.to(dev), kp.to(dev).float()
        ok = ok.to(dev)
        has_smpl = batch["has_smpl"].to(dev).bool() & ok
        has_3d = batch["has_pose_3d"].to(dev).bool() & ok
        gt_pose = batch["pose"].to(dev).float()
        gt_betas = batch["betas"].to(dev).float()
        gt_j3d = batch["pose_3d"].to(dev).float()
        has_smpl, bad_smpl, gt_pose, gt_betas = finite_labels(has_smpl, gt_pose, gt_betas)
        has_3d, bad_3d, gt_j3d = finite_labels(has_3d, gt_j3d)
        stats["bad_labels"] = float(bad_smpl.sum() + bad_3d.sum())
        ds_id = batch["mixed_source"].long()
        idx = batch["sample_index"].long()
        rot, flip = batch["rot_angle"].double(), batch["is_flipped"].bool()

        # 1. The current fits in this batch's frame.
        if self.fits is not None:
            opt_pose, opt_betas = self.fits.read(ds_id, idx, rot, flip, names=self.names, device=dev)
        times["prepare"] = time.perf_counter() - t0

        # 2. The network.
        t1 = time.perf_counter()
        out = self.net(img)
        rotmat, betas, cam = out.rotmat, out.betas, out.cam
        need_verts = cfg.w_vert > 0
        pred = self.smpl(global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], betas=betas, pose2rot=False,
                         joints_only=not need_verts)
        pred_j = pred.joints
        cam_t = weak_perspective_to_translation(cam, cfg.focal_length, cfg.img_res)
        zero_rot = torch.eye(3, device=dev, dtype=pred_j.dtype).expand(B, 3, 3)
        kp_pred = perspective_projection(pred_j, zero_rot, cam_t, cfg.focal_length,
                                         torch.zeros(B, 2, device=dev, dtype=pred_j.dtype)) / (cfg.img_res / 2.0)
        times["forward"] = time.perf_counter() - t1

        # 3. Fitting in the loop, and the loss of the current fits (their validity).
        valid = has_smpl.clone()
        t2 = time.perf_counter()
        if self.fits is not None:
            opt_pose, opt_betas, opt_loss = self._fits_stage(
                FitContext(kp, has_smpl, ok, rotmat.detach(), betas.detach(), cam.detach(), opt_pose, opt_betas, ds_id, idx,
                           rot, flip), stats, times)
            thr_loss = self._threshold_loss(opt_loss)
            valid = has_smpl | ((thr_loss < cfg.fit_threshold) & ok)
            stats["fit_valid"] = float(((thr_loss < cfg.fit_threshold) & ~has_smpl).float().sum()
                                       / max(int((~has_smpl).sum()), 1))
        times["fit"] = time.perf_counter() - t2

        # 4. Targets: GT SMPL overrides the fits; extreme betas of a fit supervise towards the mean shape.
        if self.fits is not None:
            reset = (opt_betas.abs() > cfg.beta_reset).any(-1, keepdim=True)
            sup_betas = torch.where(reset, torch.zeros_like(opt_betas), opt_betas)
            target_pose = torch.where(has_smpl[:, None], gt_pose, opt_pose.to(gt_pose.dtype))
            target_betas = torch.where(has_smpl[:, None], gt_betas, sup_betas.to(gt_betas.dtype))
            stats["beta_reset"] = float((reset.squeeze(-1) & ~has_smpl).float().sum())
        else:
            target_pose, target_betas = gt_pose, gt_betas
        target_rotmat = axis_angle_to_matrix(target_pose.reshape(B, 24, 3))
        if cfg.l3d_target == "fit":  # MV-SPIN paper Eq. 5: 3D joints against the supervising body's joints
            with torch.no_grad():
                tj = self.smpl(global_orient=target_pose[:, :3], body_pose=target_pose[:, 3:], betas=target_betas,
                               joints_only=True).joints[:, 25:]
            gt_j3d = torch.cat([tj, torch.ones_like(tj[..., :1])], -1)
            has_3d = valid

        # 5. Losses.
        terms = {
            "kp_2d": keypoint_2d_loss(kp_pred, kp, cfg.openpose_train_weight, cfg.gt_train_weight),
            "kp_3d": keypoint_3d_loss(pred_j[:, 25:], gt_j3d, has_3d),
            "pose": pose_loss(rotmat, target_rotmat, valid),
            "betas": betas_loss(betas, target_betas, valid),
            "cam": camera_loss(cam),
        }
        if need_verts:
            with torch.no_grad():
                tv = self.smpl(global_orient=target_pose[:, :3], body_pose=target_pose[:, 3:], betas=target_betas).vertices
            terms["vert"] = vertex_loss(pred.vertices, tv, valid)
        if self.pose_prior is not None:
            aa_pred = matrix_to_axis_angle(rotmat).reshape(B, 72)
            terms["prior"] = prior_loss(aa_pred, self.pose_prior, ~has_smpl)
        loss = total_loss(terms, self.weights)
        if cfg.pic_every and self.dist.is_main and (self.step + 1) % cfg.pic_every == 0:
            self.pictures(self.step + 1, img, rotmat.detach(), betas.detach(), cam_t.detach(),
                          opt_pose if self.fits is not None else None, opt_betas if self.fits is not None else None,
                          kp, ~has_smpl)
        stats.update({f"loss_{k}": float(v.detach()) for k, v in terms.items()})
        stats["loss"] = float(loss.detach())
        stats["valid"] = float(valid.float().mean())
        return loss, stats, times

    # -------------------------------------------------------------------------------- the fits stage
    def _threshold_loss(self, opt_loss: torch.Tensor) -> torch.Tensor:
        """The value compared with ``fit_threshold`` (SPIN: the stored mean reprojection loss)."""
        return opt_loss

    def _fits_stage(self, c: "FitContext", stats: Dict[str, float], times: Dict[str, float]):
        """SPIN's step 3: the current fits' loss in this frame, SMPLify from the prediction (``run_fit``),
        the better fit kept (in the batch, and in the dictionary in the canonical frame). Returns the
        fits that supervise this batch: pose (B, 72), betas (B, 10), loss (B,) float64."""
        cfg, dev = self.cfg, self.device
        kp, has_smpl, ok, opt_pose, opt_betas = c.kp, c.has_smpl, c.ok, c.opt_pose, c.opt_betas
        B = kp.shape[0]
        R = cfg.fit_res
        kp_px = torch.cat([0.5 * R * (kp[..., :2] + 1.0), kp[..., 2:]], -1)
        centre = torch.full((B, 2), R / 2.0, device=dev)
        if cfg.fits == "gt":
            opt_loss = torch.zeros(B, device=dev, dtype=torch.float64)
        else:
            # Only rows whose fit can supervise or be replaced need its loss: ground-truth SMPL
            # overrides the fit (and is not refitted unless fit_skip_has_smpl is off).
            need = ~has_smpl if (cfg.fit_skip_has_smpl or self.smplify is None) else torch.ones_like(has_smpl)
            if cfg.fits == "first_visit":  # a row never fitted has no fit to evaluate
                need = need & torch.isfinite(self.fits.read_loss(c.ds_id, c.idx, names=self.names)).to(dev)
            opt_loss = torch.full((B,), math.inf, device=dev, dtype=torch.float64)
            if need.any():
                opt_loss[need] = self._current_fit_loss(opt_pose[need], opt_betas[need], kp_px[need], centre[need])
        if self.smplify is not None:
            rows = ~has_smpl if cfg.fit_skip_has_smpl else torch.ones_like(has_smpl)
            # SMPLify starts from the prediction: a non-finite one, a camera behind the crop (scale <= 0:
            # depth <= 0, which SMPLify refuses) or a masked sample is not fitted
            rows = rows & ok & torch.isfinite(c.rotmat).flatten(1).all(1) \
                & torch.isfinite(c.betas).all(1) & torch.isfinite(c.cam).all(1) & (c.cam[:, 0] > 0)
            upd_mask = torch.zeros(B, dtype=torch.bool, device=dev)
            if rows.any():
                r = torch.nonzero(rows).flatten()
                aa = matrix_to_axis_angle(c.rotmat[r]).reshape(-1, 72)
                cam_t_fit = weak_perspective_to_translation(c.cam[r], cfg.focal_length, R)
                res = self.smplify.fit(aa, c.betas[r], cam_t_fit, centre[r], kp_px[r])
                new_loss = res.reprojection_loss.mean(-1).double()
                acc = fitsmod.accept(new_loss, opt_loss[r])
                upd_mask[r] = acc
                opt_pose = opt_pose.clone()
                opt_betas = opt_betas.clone()
                opt_pose[r[acc]] = res.pose[acc].to(opt_pose.dtype)
                opt_betas[r[acc]] = res.betas[acc].to(opt_betas.dtype)
                opt_loss = opt_loss.clone()
                opt_loss[r[acc]] = new_loss[acc]
                self._fit_stats(stats, times, acc, len(r), new_loss, res)
            self._store_fits(c, upd_mask, opt_pose, opt_betas, opt_loss)
            stats["fit_updated"] = float(upd_mask.sum())
        return opt_pose, opt_betas, opt_loss

    def _store_fits(self, c: "FitContext", mask, pose, betas, loss, aux=None) -> None:
        """Write the rows ``mask`` selects into the dictionary (canonical frame) and, under DDP, merge every
        rank's rows."""
        update = self.fits.write(c.ds_id.cpu(), c.idx.cpu(), c.rot.cpu(), c.flip.cpu(), mask.cpu(), pose.cpu(),
                                 betas.cpu(), loss.cpu(), names=self.names, aux=aux)
        if self.dist.world_size > 1:
            self.fits.sync(update)

    @staticmethod
    def _fit_stats(stats, times, acc, rows: int, new_loss, res) -> None:
        stats["fit_accept"] = float(acc.float().mean())
        stats["fit_rows"] = float(rows)
        fin = torch.isfinite(new_loss)
        stats["fit_new_loss"] = float(new_loss[fin].mean()) if fin.any() else float("nan")
        times.update({f"fit_{k}": v for k, v in getattr(res, "timings", {}).items()
                      if isinstance(v, (int, float)) and k in ("camera", "body")})

    def pictures(self, step, img, rotmat, betas, cam_t, fit_pose, fit_betas, kp, rows, count: int = 4) -> Path:
        """``pictures/step_N.png``: for up to ``count`` samples without SMPL labels (else any), the crop,
        the prediction over it, and the current fit over it (its camera: least squares on the keypoints,
        f = 5000 at the crop's size)."""
        from PIL import Image

        from smplfast.data.augment import tensor_to_image
        from smplfast.render import PerspectiveCamera, overlay

        cfg = self.cfg
        order = torch.cat([torch.nonzero(rows).flatten(), torch.nonzero(~rows).flatten()])[:count]
        faces = self.smpl.faces
        tiles = []
        with torch.no_grad():
            for i in order.tolist():
                crop = tensor_to_image(img[i].cpu())
                row = [crop]
                v = self.smpl(global_orient=rotmat[i:i + 1, :1], body_pose=rotmat[i:i + 1, 1:], betas=betas[i:i + 1],
                              pose2rot=False).vertices[0]
                cam = PerspectiveCamera.crop_camera(cam_t[i:i + 1].cpu(), cfg.focal_length, cfg.img_res)
                row.append(overlay(crop, v.cpu(), faces, cam))
                if fit_pose is not None:
                    out = self.smpl(global_orient=fit_pose[i:i + 1, :3], body_pose=fit_pose[i:i + 1, 3:],
                                    betas=fit_betas[i:i + 1])
                    kp_px = torch.cat([0.5 * cfg.img_res * (kp[i:i + 1, :, :2] + 1), kp[i:i + 1, :, 2:]], -1)
                    t = estimate_translation(out.joints, kp_px, cfg.focal_length, img_size=cfg.img_res)
                    cam = PerspectiveCamera.crop_camera(t.cpu(), cfg.focal_length, cfg.img_res)
                    row.append(overlay(crop, out.vertices[0].cpu(), faces, cam, color=(0.86, 0.62, 0.45)))
                tiles.append(np.concatenate(row, 1))
        path = self.run_dir / "pictures" / f"step_{step}.png"
        if tiles:
            Image.fromarray(np.concatenate(tiles, 0)).save(path)
        return path

    def _current_fit_loss(self, pose, betas, kp_px, centre) -> torch.Tensor:
        """The stored fits' loss in this batch's frame: SPIN's least-squares camera, or (fair) a robust
        translation-only refit of it."""
        cfg = self.cfg
        with torch.no_grad():
            joints = self.smpl(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints
            t = estimate_translation(joints, kp_px, cfg.focal_length, centre, img_size=cfg.fit_res)
            if cfg.fit_compare == "fair":
                _, loss = fitsmod.refit_translation(self.smpl, pose, betas, kp_px, init_t=t, focal=cfg.focal_length,
                                                    center=centre, joints=joints)
            else:
                loss = fitsmod.reprojection_loss(joints, t, kp_px, focal=cfg.focal_length, center=centre,
                                                 ignored_joints=SPIN49_IGNORED_JOINTS).mean(-1)
        return loss.double()

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, step: int):
        cfg = self.cfg
        if not self.dist.is_main or not cfg.eval_splits:
            return None
        from ..eval.metrics import load_eval_models
        from ..eval.runner import evaluate_model, format_table

        if not hasattr(self, "_eval_models"):  # built once per run
            from smplfast.render import BodyRenderer

            self._eval_models = load_eval_models(device=self.device)
            self._eval_renderer = BodyRenderer.from_model()

        def one(split_dir):
            return evaluate_model(self.model, split_dir, img_res=cfg.img_res, max_samples=cfg.eval_max_samples or None,
                                  device=self.device, focal_length=cfg.focal_length, models=self._eval_models,
                                  renderer=self._eval_renderer)

        results = self.evaluate_splits(step, one, {"preset": cfg.preset, "run_fit": cfg.run_fit, "fits": cfg.fits})
        if results:
            print(format_table(results))
        return results
