"""Pavlakos et al. (CVPR 2018) PosePrior and ShapePrior trained on synthetic instances (TRAINING_SPEC
§5.3) for the preset ``pavlakos_priors`` (Table 1's rows by ``prior_param_loss`` and
``prior_vertex_steps``).

One step trains both priors (independent networks; their losses are summed, so each gets exactly its
own gradient):

==============  ===========================================================================  ==========
term            definition                                                                   steps
==============  ===========================================================================  ==========
pose_param      ``‖θ̂ − θ‖²`` on axis-angle (``aa``) or Rodrigues matrices (``rotmat``)       all
betas           ``‖β̂ − β‖²`` (ShapePrior)                                                    all
pose_vertex     ``(6890/N) Σ‖SMPL(θ̂, β) − SMPL(θ, β)‖²`` through the SMPL layer              last ``prior_vertex_steps``
shape_vertex    ``(6890/N) Σ‖SMPL(θ, β̂) − SMPL(θ, β)‖²`` (the silhouette instance's θ)       last ``prior_vertex_steps``
==============  ===========================================================================  ==========

The vertex terms are weighted ``prior_w_vertex`` (1: "weighted equally"; reached over
``prior_vertex_ramp`` steps), on ``prior_vertex_subsample``
vertices per step when > 0 (a uniform subset drawn from ``(seed, step)``). The optimiser is RMSprop
(``optimizer: rmsprop``, PyTorch's defaults alpha 0.99, eps 1e-8), built by the base loop.

Evaluation on each of ``eval_splits`` (single-view split folders): the annotated keypoints ``part``
converted to ``lsp_14`` in SPIN's crop (``(px − center) / (100·scale)``, confidence = the label's
visibility) and the ground-truth mask cropped to 64² are the inputs; ``pve_model`` (mm; meshes in the
model frame, no translation or rotation alignment, §5.6), ``pve_model_gt_shape`` (the PosePrior with the
ground-truth β) and :func:`~smplfast_train.eval.metrics.mesh_metrics`' measures (``pve``, ``pa_mpjpe``,
...), per sample, in ``eval/step_N.json``.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np
import torch

import smplfast

from ..loop import Trainer, load_trained
from ..pavlakos import PavlakosPriors, annotated_keypoints, betas_loss, param_loss, prior_vertex_losses
from ..rotations import axis_angle_to_matrix

__all__ = ["PavlakosPriorsTrainer", "load_priors_checkpoint", "evaluate_priors", "prior_eval_inputs"]


def load_priors_checkpoint(path, device="cpu"):
    """``(PavlakosPriors in eval mode, config)`` of a ``pavlakos_priors`` run's checkpoint."""
    return load_trained(path, "pavlakos_priors", lambda cfg: PavlakosPriors(width=cfg.prior_width), device)


def prior_eval_inputs(items) -> Dict[str, torch.Tensor]:
    """Priors' inputs from :class:`smplfast.data.SPINDataset` items (``img_res`` 64, ``load_masks``): the
    annotated keypoints (SPIN's 49 rows 25..48 = ``spin_24``) as ``lsp_14`` (x, y normalised in the crop,
    visibility as confidence; unlabelled or non-finite rows (0, 0, 0)) and the mask (1, 64, 64)."""
    kp = annotated_keypoints(torch.stack([torch.as_tensor(it["keypoints"]) for it in items]).float())
    sil = torch.stack([torch.as_tensor(np.asarray(it["mask"])) for it in items]).float()[:, None]
    return {"keypoints": kp, "silhouette": sil}


def evaluate_priors(model: torch.nn.Module, split_dir, *, max_samples: Optional[int] = None, batch_size: int = 64,
                    device="cpu", models=None, images_res: int = 0) -> Dict[str, object]:
    """The priors on a split folder (module docstring): ``{"split", "num", "sample_index", "per_sample",
    "mean", "units", "time_s"}``. ``images_res`` > 0: ``model`` is a
    :class:`~smplfast_train.pavlakos.PavlakosPipeline` fed the crops at that resolution (the whole network,
    Human2D's keypoints and silhouette instead of the annotations)."""
    from smplfast.data import SPINDataset

    from ..eval.metrics import MESH_METRICS, METRIC_UNITS, load_eval_models, mesh_metrics, pred_body
    from ..eval.runner import evaluate_per_sample, resolve_split

    npz, root, name = resolve_split(split_dir)
    ds = SPINDataset(npz, root, is_train=False, img_res=images_res or 64, load_masks=not images_res)
    n = len(ds) if not max_samples else min(len(ds), int(max_samples))
    if models is None:
        models = load_eval_models(device=device, keypoints_2d=False)
    units = {"pve_model": "mm", "pve_model_gt_shape": "mm", **{k: METRIC_UNITS.get(k, "") for k in MESH_METRICS}}

    def score(items):
        gt_pose = torch.stack([torch.as_tensor(it["pose"]) for it in items]).double()
        gt_betas = torch.stack([torch.as_tensor(it["betas"]) for it in items]).double()
        gender = [int(it["gender"]) for it in items]
        if images_res:
            pose, betas, _ = model(images=torch.stack([torch.as_tensor(it["img"]) for it in items]).to(device))
        else:
            inp = prior_eval_inputs(items)
            pose, betas = model(inp["keypoints"].to(device), inp["silhouette"].to(device))
        B = pose.shape[0]
        rotmat = axis_angle_to_matrix(pose.double().reshape(B, 24, 3))
        m = mesh_metrics(rotmat, betas.double(), gt_pose, gt_betas, gender, models, return_bodies=True)
        pv, gv = m["pred_vertices"], m["gt_vertices"]
        pv_gt_shape, _ = pred_body(rotmat, gt_betas, models)
        return {"pve_model": ((pv - gv).norm(dim=-1).mean(1) * 1000.0).tolist(),
                "pve_model_gt_shape": ((pv_gt_shape - gv).norm(dim=-1).mean(1) * 1000.0).tolist(),
                **{k: m[k].tolist() for k in MESH_METRICS}}

    return evaluate_per_sample(model, ds, name, n, batch_size, units, score)


class PavlakosPriorsTrainer(Trainer):
    """PosePrior + ShapePrior on synthetic instances (module docstring). ``prior_train: pose`` (or
    ``shape``) trains one prior only; the other keeps its initialisation (the ShapePrior's convolutions
    cost ~90 % of a step on one CPU thread, and Table 1's rows differ in the PosePrior's loss)."""

    @property
    def find_unused_parameters(self) -> bool:  # DDP: one prior gets no gradient when only the other trains
        return self.cfg.prior_train != "both"

    #: > 0: evaluate the whole network on crops of this size (``pavlakos_e2e`` with Human2D)
    eval_images_res = 0

    def build_model(self) -> torch.nn.Module:
        return PavlakosPriors(width=self.cfg.prior_width)

    def setup(self) -> None:
        cfg = self.cfg
        self.smpl = smplfast.SMPL(create_betas=False, create_global_orient=False, create_body_pose=False,
                                  create_transl=False).to(self.device)
        self.vertex_from = cfg.num_steps - cfg.prior_vertex_steps if cfg.prior_vertex_steps > 0 else None

    def vertex_active(self, step: int) -> bool:
        """Whether step ``step`` (0-based) adds the per-vertex loss."""
        return self.vertex_from is not None and step >= self.vertex_from

    def vertex_weight(self, step: int) -> float:
        """The per-vertex loss weight at step ``step``: ``prior_w_vertex`` from the first step of the vertex
        phase (the paper's schedule), or reached linearly over ``prior_vertex_ramp`` steps. The vertex term
        is ~60x the parameter term and RMSprop's squared-gradient average (decay 0.99) still holds the
        parameter loss's scale when it switches on, so the first updates are up to ~10x larger; the ramp
        avoids that jump, but a paired cpu check found the step switch better (docs/TRAINING.md), so the
        preset keeps the paper's."""
        if not self.vertex_active(step):
            return 0.0
        ramp = self.cfg.prior_vertex_ramp
        return self.cfg.prior_w_vertex * (min(1.0, (step - self.vertex_from + 1) / ramp) if ramp > 0 else 1.0)

    def train_step(self, batch: dict):
        cfg, dev = self.cfg, self.device
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        kp = batch["keypoints"].to(dev).float()
        sil = batch["silhouette"].to(dev).float()
        gt_pose, gt_betas = batch["pose"].to(dev).float(), batch["betas"].to(dev).float()
        sil_pose, sil_betas = batch["sil_pose"].to(dev).float(), batch["sil_betas"].to(dev).float()
        do_pose, do_shape = cfg.prior_train in ("both", "pose"), cfg.prior_train in ("both", "shape")
        if do_pose and do_shape:
            pose, betas = self.net(kp, sil)
        else:  # one prior (no DDP wrapper call for the other, which would need its input)
            pose = self.model.pose_prior(kp) if do_pose else None
            betas = self.model.shape_prior(sil) if do_shape else None
        terms, weights = {}, {}
        if do_pose:
            terms["pose_param"] = param_loss(pose, gt_pose, cfg.prior_param_loss, cfg.prior_param_reduction)
            weights["pose_param"] = 1.0
        if do_shape:
            terms["betas"] = betas_loss(betas, sil_betas, cfg.prior_param_reduction)
            weights["betas"] = 1.0
        times["forward"] = time.perf_counter() - t0
        w_vertex = self.vertex_weight(self.step)
        if w_vertex > 0:
            t1 = time.perf_counter()
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
            if do_pose:
                v = prior_vertex_losses(self.smpl, pose, gt_pose, gt_betas, subsample=cfg.prior_vertex_subsample,
                                        generator=gen)
                terms["pose_vertex"], weights["pose_vertex"] = v["pose"], w_vertex
            if do_shape:
                v = prior_vertex_losses(self.smpl, sil_pose, sil_pose, sil_betas, pred_betas=betas, sil_pose=sil_pose,
                                        sil_betas=sil_betas, subsample=cfg.prior_vertex_subsample, generator=gen,
                                        pose_term=False)
                terms["shape_vertex"], weights["shape_vertex"] = v["shape"], w_vertex
            times["smpl"] = time.perf_counter() - t1
        loss = sum(weights[k] * t for k, t in terms.items())
        stats = {f"loss_{k}": float(t.detach()) for k, t in terms.items()}
        stats["loss"] = float(loss.detach())
        stats["vertex_phase"] = float(self.vertex_active(self.step))
        stats["kp_missing"] = float((kp[..., 2] == 0).float().mean())
        return loss, stats, times

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, step: int):
        cfg = self.cfg
        if not self.dist.is_main or not cfg.eval_splits:
            return None
        from ..eval.metrics import load_eval_models

        if not hasattr(self, "_eval_models"):
            self._eval_models = load_eval_models(device=self.device, keypoints_2d=False)

        def one(split_dir):
            return evaluate_priors(self.model, split_dir, max_samples=cfg.eval_max_samples or None, device=self.device,
                                   models=self._eval_models, images_res=self.eval_images_res)

        results = self.evaluate_splits(step, one, {"preset": cfg.preset, "prior_param_loss": cfg.prior_param_loss,
                                                   "prior_vertex_steps": cfg.prior_vertex_steps,
                                                   "prior_bank": cfg.prior_bank})
        if results and self.progress:
            for split, r in results.items():
                m = r["mean"]
                print(f"{split} (n={r['num']}): pve_model {m['pve_model']:.1f} mm, pve {m['pve']:.1f} mm, "
                      f"pa_mpjpe {m['pa_mpjpe']:.1f} mm, pve_model_gt_shape {m['pve_model_gt_shape']:.1f} mm")
        return results
