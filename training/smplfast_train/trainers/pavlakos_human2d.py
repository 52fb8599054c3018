"""Pavlakos et al. (CVPR 2018) Human2D (TRAINING_SPEC §5.2) for the preset ``pavlakos_human2d``: a stacked
hourglass (heads/hourglass.py) trained on images with 2D keypoints and silhouettes.

Data: the ``train_splits`` (SPIN format) read by :class:`smplfast.data.SPINDataset` at ``hg_in_res`` with
``load_masks``. SPIN's augmentation (the hourglass code's own: flip 0.5, rotation clip(N(0, 30°), ±60°) kept
with p 0.4, scale clip(N(1, 0.25), 0.75, 1.25), pixel gain) transforms the image, the keypoints and the mask
with the same crop matrix, and a flip relabels left and right keypoints, so every augmentation applies to
the mask too (``augment: false`` turns it off).

Targets per sample:

* keypoints: the annotated ``part`` rows (SPIN's 49 rows 25..48 = ``spin_24``) converted to ``lsp_14`` in
  the crop's [-1, 1] frame; a joint is labelled where its visibility is > 0 and it is finite. Labelled
  joints supervise their heatmap (a peak-1 Gaussian of σ = ``hg_sigma`` heatmap pixels; a labelled joint
  outside the crop has an all-zero target, as in the hourglass code); unlabelled ones are ignored;
* silhouette: the crop's mask reduced to the heatmap resolution by area (a heatmap pixel is body where
  at least half of its input pixels are).

Loss :func:`~smplfast_train.heads.hourglass.human2d_loss` over every stack (intermediate supervision),
λ = ``hg_lambda``. A sample whose image or keypoints are not finite is masked (zeroed, no loss), as in the
SPIN loop (:func:`~smplfast_train.trainers.spin.mask_nonfinite_inputs`); a non-finite loss is skipped
by the base loop. The optimiser is RMSprop (``optimizer: rmsprop``, PyTorch's defaults alpha 0.99, eps
1e-8), built by the base loop.

Evaluation on each of ``eval_splits`` (:func:`evaluate_human2d`, last stack): ``pck_0.05`` / ``pck_0.1``,
the fraction of the labelled ``lsp_14`` joints inside the crop whose argmax keypoint lies within 5 % / 10 %
of the crop side (NaN for a sample without such a joint); the body probability upsampled (bilinear) to
the input crop and thresholded at 0.5 against the crop's mask: ``sil_iou``, ``fb_acc`` (foreground /
background pixel accuracy) and ``fb_f1`` (F1 of the body pixels); per sample, in ``eval/step_N.json``.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from smplfast.data import SPINDataset

from ..heads.hourglass import (StackedHourglass, extract_keypoints, gaussian_heatmaps, human2d_loss,
                               normalised_to_heatmap_pixels, silhouette_from_logits)
from ..loop import Trainer, TrainingError, load_trained
from ..pavlakos import annotated_keypoints
from .spin import mask_nonfinite_inputs

__all__ = ["Human2DTrainer", "human2d_net", "human2d_batch_loss", "load_human2d_checkpoint", "mask_at_resolution",
           "evaluate_human2d", "PCK_THRESHOLDS"]

#: PCK thresholds, fractions of the crop side.
PCK_THRESHOLDS = (0.05, 0.1)


def human2d_net(cfg) -> StackedHourglass:
    """The :class:`StackedHourglass` a config describes (``hg_stacks``, ``hg_width``)."""
    return StackedHourglass(num_stacks=cfg.hg_stacks, width=cfg.hg_width)


def load_human2d_checkpoint(path, device="cpu"):
    """``(StackedHourglass in eval mode, config)`` of a ``pavlakos_human2d`` run's checkpoint."""
    return load_trained(path, "pavlakos_human2d", human2d_net, device)


def mask_at_resolution(mask: torch.Tensor, res: int) -> torch.Tensor:
    """A crop mask (B, R, R) (bool or 0/1) reduced by area to (B, res, res) float 0/1 (body where at least
    half of a pixel's R/res × R/res input pixels are); R must be a multiple of ``res``."""
    R = mask.shape[-1]
    if R % res:
        raise ValueError(f"mask_at_resolution: mask size {R} is not a multiple of {res}")
    frac = F.avg_pool2d(mask.float()[:, None], R // res)[:, 0]
    return (frac >= 0.5).float()


def _silhouette_scores(prob: torch.Tensor, gt: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-sample IoU, pixel accuracy and body F1 of predicted (B, H, W) bool against ground truth."""
    inter = (prob & gt).flatten(1).sum(1).double()
    union = (prob | gt).flatten(1).sum(1).double()
    acc = (prob == gt).flatten(1).double().mean(1)
    denom = prob.flatten(1).sum(1).double() + gt.flatten(1).sum(1).double()
    nan = torch.full_like(inter, float("nan"))
    return {"sil_iou": torch.where(union > 0, inter / union.clamp(min=1), nan), "fb_acc": acc,
            "fb_f1": torch.where(denom > 0, 2 * inter / denom.clamp(min=1), nan)}


def evaluate_human2d(model: torch.nn.Module, split_dir, *, in_res: int, max_samples: Optional[int] = None,
                     batch_size: int = 16, device="cpu") -> Dict[str, object]:
    """Human2D on a split folder (module docstring): ``{"split", "num", "sample_index", "per_sample",
    "mean", "units", "num_nan", "time_s"}``."""
    from ..eval.runner import evaluate_per_sample, resolve_split

    npz, root, name = resolve_split(split_dir)
    ds = SPINDataset(npz, root, is_train=False, img_res=in_res, load_masks=True)
    n = len(ds) if not max_samples else min(len(ds), int(max_samples))
    keys = tuple(f"pck_{a}" for a in PCK_THRESHOLDS) + ("sil_iou", "fb_acc", "fb_f1")

    def score(items):
        img = torch.stack([it["img"] for it in items]).to(device)
        gt = annotated_keypoints(torch.stack([it["keypoints"] for it in items])).to(device)
        mask = torch.stack([it["mask"] for it in items]).to(device)
        last = model(img)[-1]
        kp = extract_keypoints(last.heatmaps.float(), "argmax")
        counted = (gt[..., 2] > 0) & (gt[..., :2].abs() <= 1).all(-1)
        # crop side = 2 normalised units
        dist = (kp[..., :2] - gt[..., :2]).norm(dim=-1) / 2.0
        num = counted.sum(1).double()
        out = {}
        for a in PCK_THRESHOLDS:
            hit = ((dist <= a) & counted).sum(1).double()
            out[f"pck_{a}"] = torch.where(num > 0, hit / num.clamp(min=1), torch.full_like(num, float("nan"))).tolist()
        prob = F.interpolate(silhouette_from_logits(last.silhouette.float()), size=mask.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        out.update({k: v.tolist() for k, v in _silhouette_scores(prob >= 0.5, mask.bool()).items()})
        return out

    return evaluate_per_sample(model, ds, name, n, batch_size, {k: "fraction" for k in keys}, score)


def human2d_batch_loss(net, batch: dict, cfg, device) -> Tuple[torch.Tensor, Dict[str, float]]:
    """:func:`~smplfast_train.heads.hourglass.human2d_loss` of ``net`` on a batch with ``img``, SPIN's 49
    ``keypoints`` and the crop ``mask`` (module docstring: targets, masking of non-finite samples);
    returns ``(loss, statistics)``. Shared by ``pavlakos_human2d`` and the Human2D updates of
    ``pavlakos_e2e``."""
    img, kp49, ok, masked = mask_nonfinite_inputs(batch["img"], batch["keypoints"])
    img, ok = img.to(device), ok.to(device)
    kp = annotated_keypoints(kp49.to(device))
    labelled = (kp[..., 2] > 0) & ok[:, None]
    outs = net(img)
    res = outs[-1].heatmaps.shape[-1]
    with torch.no_grad():
        target = gaussian_heatmaps(normalised_to_heatmap_pixels(kp, res), labelled, res, cfg.hg_sigma)
        mask = mask_at_resolution(batch["mask"].to(device), res)
    loss, terms = human2d_loss(outs, target, mask, labelled.float(), cfg.hg_lambda, mask_weight=ok.float())
    stats = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
    stats.update(loss=float(loss.detach()), masked_nonfinite=float(masked), kp_labelled=float(labelled.float().mean()),
                 mask_fg=float(mask.mean()))
    return loss, stats


class Human2DTrainer(Trainer):
    """Human2D: 2-stack hourglass, keypoint heatmaps + silhouette, on images (module docstring)."""

    def build_model(self) -> torch.nn.Module:
        return human2d_net(self.cfg)

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.img_res != cfg.hg_in_res:
            raise TrainingError(f"pavlakos_human2d: img_res ({cfg.img_res}) must equal hg_in_res ({cfg.hg_in_res})")
        if cfg.hg_sigma <= 0 or cfg.hg_lambda < 0:
            raise TrainingError(f"pavlakos_human2d: hg_sigma must be > 0 and hg_lambda >= 0; got {cfg.hg_sigma}, "
                                f"{cfg.hg_lambda}")

    def train_step(self, batch: dict):
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        loss, stats = human2d_batch_loss(self.net, batch, self.cfg, self.device)
        times["forward"] = time.perf_counter() - t0
        return loss, stats, times

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, step: int):
        cfg = self.cfg
        if not self.dist.is_main or not cfg.eval_splits:
            return None

        def one(split_dir):
            return evaluate_human2d(self.model, split_dir, in_res=cfg.hg_in_res,
                                    max_samples=cfg.eval_max_samples or None, device=self.device)

        results = self.evaluate_splits(step, one, {"preset": cfg.preset, "hg_stacks": cfg.hg_stacks,
                                                   "hg_width": cfg.hg_width, "hg_in_res": cfg.hg_in_res})
        if results and self.progress:
            for split, r in results.items():
                m = r["mean"]
                print(f"{split} (n={r['num']}): pck@0.05 {m['pck_0.05']:.3f}, pck@0.1 {m['pck_0.1']:.3f}, "
                      f"sil_iou {m['sil_iou']:.3f}, fb_acc {m['fb_acc']:.3f}")
        return results
