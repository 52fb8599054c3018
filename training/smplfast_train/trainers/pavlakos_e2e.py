"""Pavlakos et al. (CVPR 2018) end-to-end fine-tuning of the Priors with the reprojection loss
(TRAINING_SPEC §5.4, §6.3 E-P step 3; preset ``pavlakos_e2e``), the "priors-only" variant: the inputs are
Human2D-like detections simulated from an image split's annotated keypoints and its ground-truth masks
(:class:`~smplfast_train.pavlakos.DetectionItems`), the supervision the annotations themselves.

One iteration (the round robin of §5.4, Priors first):

1. **Reprojection update** (second) (the base loop's optimiser, RMSprop): θ̂ = PosePrior(detections),
   β̂ = ShapePrior(mask); P̂, Ĵ = SMPL(θ̂, β̂) (the ``lsp_14`` joints) inside the autograd graph; a
   weak-perspective camera ``(s, t)`` from the closed-form weighted least squares of the *detached* Ĵ_xy
   against the annotated keypoints (:func:`~smplfast_train.pavlakos.weak_perspective_fit`); the loss
   (Eq. 3) ``μ Σ_j w_j ‖Ŵ_j − W_j‖² + Σ_p (Ŝ_p − S_p)²`` in pixels of the 64² map, Ŝ the soft silhouette
   (:func:`smplfast.ops.soft_silhouette`), averaged over the samples whose camera fit is valid (at least
   two labelled joints, s > 0).
2. **Priors update** (first; ``e2e_alternate``; its own RMSprop, same learning rate): the ``pavlakos_priors``
   losses (rot-matrix parameter + per-vertex for the PosePrior, β + per-vertex for the ShapePrior) on
   ``e2e_prior_batch`` synthetic instances of the bank ``prior_bank``, "to maintain their original
   purpose" (§8 P7). The instances of iteration ``k`` are drawn from ``(seed, k)``, so a resumed run
   draws the same ones.

The Priors start from ``e2e_pose_init`` / ``e2e_shape_init`` (``pavlakos_priors`` checkpoints). The
evaluation is :func:`~smplfast_train.trainers.pavlakos.evaluate_priors`', so the rows of Table 1 are
measured alike.

**The whole network** (``e2e_human2d_init``: a ``pavlakos_human2d`` checkpoint, with matching ``hg_*``):
the model is a :class:`~smplfast_train.pavlakos.PavlakosPipeline`; the crops (``hg_in_res``) go through
Human2D, whose last stack gives the keypoints (``e2e_kp_extract``: argmax, so the reprojection gradient
reaches Human2D through the confidences and the silhouette only, as in the paper; or softargmax, through
the coordinates too) and the body probability the ShapePrior reads. The round robin gains a Human2D update
on its own loss ``L_hg`` (the batch's annotated keypoints and masks; its own RMSprop) between the Priors
update and the reprojection update. The evaluation then runs the whole network on the split's crops.
"""
from __future__ import annotations

import time
from typing import Dict

import numpy as np
import torch

import smplfast

from ..loop import TrainingError, load_checkpoint
from ..pavlakos import (InstanceBank, PavlakosPipeline, PriorInstances, betas_loss, load_bank, param_loss,
                        prior_bank_folder, prior_vertex_losses, reprojection_losses, weak_perspective_fit)
from .pavlakos import PavlakosPriorsTrainer
from .pavlakos_human2d import human2d_batch_loss, human2d_net
from .spin import mask_nonfinite_inputs

__all__ = ["PavlakosE2ETrainer"]


class PavlakosE2ETrainer(PavlakosPriorsTrainer):
    """Reprojection fine-tuning alternated with Priors updates (module docstring)."""

    @property
    def find_unused_parameters(self) -> bool:  # DDP: the Human2D and Priors updates each leave the others out
        return bool(self.cfg.e2e_human2d_init)

    def build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        if not cfg.e2e_human2d_init:
            return super().build_model()
        return PavlakosPipeline(human2d_net(cfg), width=cfg.prior_width, kp_extract=cfg.e2e_kp_extract)

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        self.full = bool(cfg.e2e_human2d_init)
        self.human2d_optimizer = None
        if self.full:
            self._load_human2d(cfg.e2e_human2d_init)
            self.eval_images_res = cfg.hg_in_res
            self.human2d_optimizer = torch.optim.RMSprop(self.model.human2d.parameters(), lr=cfg.lr,
                                                         weight_decay=cfg.weight_decay)
        self.smpl_kp = smplfast.SMPL(keypoints="lsp_14", create_betas=False, create_global_orient=False,
                                                    create_body_pose=False, create_transl=False).to(self.device)
        self.faces = torch.as_tensor(np.asarray(self.smpl_kp.faces, dtype=np.int64), device=self.device)
        for key, module in (("e2e_pose_init", self.model.pose_prior), ("e2e_shape_init", self.model.shape_prior)):
            path = getattr(cfg, key)
            if path:
                self._load_prior(path, module, "pose_prior." if key == "e2e_pose_init" else "shape_prior.", key)
        self.prior_optimizer = None
        if cfg.e2e_alternate:
            arrays = load_bank(prior_bank_folder(cfg), cfg.prior_bank, cfg.prior_bank_seed, cfg.prior_bank_size,
                               cfg.prior_sil_bank_size)
            self.instances = PriorInstances(InstanceBank(arrays), seed=cfg.seed, noise=cfg.prior_kp_noise,
                                            drop_prob=cfg.prior_drop_prob, swap_prob=cfg.prior_swap_prob)
            prior_params = list(self.model.pose_prior.parameters()) + list(self.model.shape_prior.parameters())
            self.prior_optimizer = torch.optim.RMSprop(prior_params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _load_human2d(self, path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        src = ckpt.get("config", {})
        if src.get("trainer") != "pavlakos_human2d":
            raise TrainingError(f"e2e_human2d_init {path} is not a pavlakos_human2d checkpoint")
        for key in ("hg_stacks", "hg_width", "hg_in_res"):
            if src.get(key) != getattr(self.cfg, key):
                raise TrainingError(f"e2e_human2d_init {path} has {key} = {src.get(key)}; this run has "
                                    f"{getattr(self.cfg, key)} (set it to match)")
        self.model.human2d.load_state_dict(ckpt["model"])

    def _load_prior(self, path, module: torch.nn.Module, prefix: str, key: str) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("config", {}).get("trainer") not in ("pavlakos_priors", "pavlakos_e2e"):
            raise TrainingError(f"{key} {path} is not a pavlakos_priors checkpoint")
        state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise TrainingError(f"{key} {path}: {e}") from None

    def vertex_active(self, step: int) -> bool:  # the alternating Priors updates use the per-vertex loss throughout
        return True

    def vertex_weight(self, step: int) -> float:
        return self.cfg.prior_w_vertex

    def extra_state(self) -> dict:
        return {k: o.state_dict() for k, o in (("prior_optimizer", self.prior_optimizer),
                                               ("human2d_optimizer", self.human2d_optimizer)) if o is not None}

    def load_extra_state(self, state: dict) -> None:
        for k, o in (("prior_optimizer", self.prior_optimizer), ("human2d_optimizer", self.human2d_optimizer)):
            if o is not None and k in state:
                o.load_state_dict(state[k])

    # ------------------------------------------------------------------------------------ one iteration
    def _prior_update(self, stats: Dict[str, float]) -> None:
        """One update of both Priors on synthetic instances (their own losses)."""
        cfg, dev = self.cfg, self.device
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        idx = torch.randint(0, len(self.instances), (cfg.e2e_prior_batch,), generator=gen).tolist()
        self.instances.set_epoch(self.step)
        items = [self.instances[i] for i in idx]
        b = {k: torch.stack([it[k] for it in items]).to(dev).float() for k in items[0] if k != "index"}
        pose, betas = self.net(b["keypoints"], b["silhouette"])
        terms = {"param": param_loss(pose, b["pose"], "rotmat", cfg.prior_param_reduction),
                 "betas": betas_loss(betas, b["sil_betas"], cfg.prior_param_reduction)}
        if cfg.prior_w_vertex > 0:
            v = prior_vertex_losses(self.smpl, pose, b["pose"], b["betas"], pred_betas=betas, sil_pose=b["sil_pose"],
                                    sil_betas=b["sil_betas"], subsample=cfg.prior_vertex_subsample, generator=gen)
            terms["pose_vertex"] = cfg.prior_w_vertex * v["pose"]
            terms["shape_vertex"] = cfg.prior_w_vertex * v["shape"]
        ok = self.apply_loss(sum(terms.values()), self.prior_optimizer)
        stats.update({f"loss_prior_{k}": float(t.detach()) for k, t in terms.items()})
        stats["prior_update_skipped"] = float(not ok)

    def _human2d_update(self, batch: dict, stats: Dict[str, float]) -> None:
        """One update of Human2D on its own loss L_hg with this batch's annotated keypoints and masks."""
        hb = {"img": batch["img"], "keypoints": batch["keypoints49"], "mask": batch["mask_full"]}
        loss, st = human2d_batch_loss(lambda img: self.net(images=img)[2]["outputs"], hb, self.cfg, self.device)
        ok = self.apply_loss(loss, self.human2d_optimizer)
        stats.update({f"hg_{k}": v for k, v in st.items()})
        stats["hg_update_skipped"] = float(not ok)

    def train_step(self, batch: dict):
        cfg, dev = self.cfg, self.device
        times: Dict[str, float] = {}
        stats: Dict[str, float] = {}
        # the round robin of §5.4: a Priors update, a Human2D update (whole network), the reprojection update
        if self.prior_optimizer is not None:
            t2 = time.perf_counter()
            self._prior_update(stats)
            times["prior_update"] = time.perf_counter() - t2
        if self.human2d_optimizer is not None and cfg.e2e_alternate:
            t2 = time.perf_counter()
            self._human2d_update(batch, stats)
            times["human2d_update"] = time.perf_counter() - t2
        t0 = time.perf_counter()
        kp = batch["keypoints"].to(dev).float()
        mask = batch["mask"].to(dev).float()
        if self.full:
            img, _, ok_img, _ = mask_nonfinite_inputs(batch["img"], batch["keypoints49"])
            pose, betas, aux = self.net(images=img.to(dev))
            kp = torch.where(ok_img.to(dev)[:, None, None], kp, torch.zeros_like(kp))  # a NaN image: no supervision
            stats["kp_detected"] = float((aux["keypoints"][..., 2] > 0).float().mean())
        else:
            det = batch["detections"].to(dev).float()
            pose, betas = self.net(det, mask[:, None])
        dt = self.smpl_kp.v_template.dtype
        out = self.smpl_kp(global_orient=pose[:, :3].to(dt), body_pose=pose[:, 3:].to(dt), betas=betas.to(dt))
        joints, verts = out.joints.float(), out.vertices.float()
        with torch.no_grad():
            s, t, ok = weak_perspective_fit(joints[..., :2].detach(), kp[..., :2], kp[..., 2])
        times["forward"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        terms = reprojection_losses(joints, verts, self.faces, s, t, kp[..., :2], kp[..., 2], mask, res=mask.shape[-1],
                                    sigma=cfg.e2e_sigma)
        per = cfg.e2e_mu * terms["kp"] + terms["sil"]
        n_ok = int(ok.sum())
        # samples without a valid camera contribute nothing (but stay in the graph, for DDP)
        loss = (per * ok).sum() / max(n_ok, 1)
        times["render"] = time.perf_counter() - t1
        stats.update(loss_e2e_kp=float((terms["kp"].detach() * ok).sum()) / max(n_ok, 1),
                     loss_e2e_sil=float((terms["sil"].detach() * ok).sum()) / max(n_ok, 1), camera_ok=float(ok.float().mean()),
                     loss=float(loss.detach()))
        return loss, stats, times
