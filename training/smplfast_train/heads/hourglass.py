"""Pavlakos et al. (CVPR 2018) Human2D: a stacked hourglass (Newell et al., ECCV 2016) with two outputs
per stack, 2D keypoint heatmaps and a 2-class silhouette (TRAINING_SPEC §5.2).

Network (:class:`StackedHourglass`), input ``(B, 3, R, R)`` with R a multiple of 64, ``F = width``:

* stem: ``conv7×7 stride 2 (F/4) → BN → ReLU → Residual(F/2) → maxpool 2 → Residual(F/2) → Residual(F)``,
  giving ``(B, F, R/4, R/4)`` (256² → 64², 128² → 32²);
* per stack: an hourglass of depth 4 (``R/4`` down to ``R/64`` and back, nearest upsampling, one
  residual module per resolution and skip branch), ``Residual(F) → conv1×1 → BN → ReLU``, then two
  1×1 heads: ``heatmaps`` (B, K, R/4, R/4) (K = 14, the ``lsp_14`` order of
  :mod:`smplfast.body.keypoints`) and ``silhouette`` logits (B, 2, R/4, R/4) (channel 0 background,
  1 body). Between stacks the features, and 1×1 convolutions of both predictions, are added back to the
  stack's input (the hourglass "remap").

Residual modules are Newell's pre-activation bottlenecks ``BN-ReLU-conv1×1(F/2) → BN-ReLU-conv3×3(F/2) →
BN-ReLU-conv1×1(F)`` with a 1×1 projection when the width changes. :meth:`StackedHourglass.forward`
returns a list with every stack's :class:`StackOutput` (intermediate supervision); the last is the
prediction.

Coordinates: an output map of W pixels spans the crop; pixel column j covers [j, j + 1) in heatmap
pixels and has its centre at j + 0.5, which is ``(j + 0.5)·2/W − 1`` in the crop's normalised
[-1, 1] frame (SPIN's ``2·px/res − 1`` with the same half-pixel convention, the frame of the
PosePrior's input and of :func:`~smplfast_train.heads.holopose.gaussian_heatmaps`).
:func:`extract_keypoints` returns keypoints in that frame; :func:`gaussian_heatmaps` takes keypoints in
heatmap pixels of that convention (``(k + 1)/2 · W``).
"""
from __future__ import annotations

import time
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .holopose import gaussian_heatmaps as _gaussian_normalised

__all__ = ["NUM_KEYPOINTS", "StackOutput", "Residual", "Hourglass", "StackedHourglass", "extract_keypoints",
           "silhouette_from_logits", "gaussian_heatmaps", "normalised_to_heatmap_pixels", "human2d_loss",
           "forward_time"]

NUM_KEYPOINTS = 14  # lsp_14
HOURGLASS_DEPTH = 4


class StackOutput(NamedTuple):
    """One stack's predictions: ``heatmaps`` (B, K, H, W), ``silhouette`` logits (B, 2, H, W)."""

    heatmaps: Tensor
    silhouette: Tensor


def _bn_relu_conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2))


class Residual(nn.Module):
    """Newell's pre-activation bottleneck residual module ``cin → cout`` (1×1 skip when they differ)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(cout // 2, 1)
        self.body = nn.Sequential(_bn_relu_conv(cin, mid, 1), _bn_relu_conv(mid, mid, 3), _bn_relu_conv(mid, cout, 1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """A recursive hourglass of ``depth`` levels at width ``f``: ``up(x) + upsample(low(maxpool(x)))``."""

    def __init__(self, depth: int, f: int):
        super().__init__()
        self.up = Residual(f, f)
        self.low1 = Residual(f, f)
        self.low2 = Hourglass(depth - 1, f) if depth > 1 else Residual(f, f)
        self.low3 = Residual(f, f)

    def forward(self, x: Tensor) -> Tensor:
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class StackedHourglass(nn.Module):
    """Human2D (module docstring): ``num_stacks`` hourglasses of width ``width`` with a keypoint-heatmap and
    a silhouette head per stack; ``forward(images (B, 3, R, R))`` -> list of :class:`StackOutput`, one per
    stack, maps at R/4."""

    def __init__(self, num_stacks: int = 2, width: int = 256, num_keypoints: int = NUM_KEYPOINTS,
                 depth: int = HOURGLASS_DEPTH):
        super().__init__()
        if num_stacks < 1 or width < 8 or width % 4 or depth < 1:
            raise ValueError(f"StackedHourglass needs num_stacks >= 1, width a multiple of 4 (>= 8), depth >= 1; "
                             f"got {num_stacks}, {width}, {depth}")
        self.num_stacks, self.width, self.num_keypoints, self.depth = num_stacks, width, num_keypoints, depth
        f = width
        self.stem = nn.Sequential(
            nn.Conv2d(3, f // 4, 7, stride=2, padding=3), nn.BatchNorm2d(f // 4), nn.ReLU(inplace=True),
            Residual(f // 4, f // 2), nn.MaxPool2d(2), Residual(f // 2, f // 2), Residual(f // 2, f))
        self.hourglasses = nn.ModuleList([Hourglass(depth, f) for _ in range(num_stacks)])
        self.features = nn.ModuleList([
            nn.Sequential(Residual(f, f), nn.Conv2d(f, f, 1), nn.BatchNorm2d(f), nn.ReLU(inplace=True))
            for _ in range(num_stacks)])
        self.heatmap_heads = nn.ModuleList([nn.Conv2d(f, num_keypoints, 1) for _ in range(num_stacks)])
        self.silhouette_heads = nn.ModuleList([nn.Conv2d(f, 2, 1) for _ in range(num_stacks)])
        # remap of stack s's features and predictions into stack s + 1's input
        self.remap_features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(num_stacks - 1)])
        self.remap_heatmaps = nn.ModuleList([nn.Conv2d(num_keypoints, f, 1) for _ in range(num_stacks - 1)])
        self.remap_silhouette = nn.ModuleList([nn.Conv2d(2, f, 1) for _ in range(num_stacks - 1)])

    @property
    def stride(self) -> int:
        return 4

    def forward(self, images: Tensor) -> List[StackOutput]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"StackedHourglass expects images (B, 3, R, R); got {tuple(images.shape)}")
        multiple = 4 * 2 ** self.depth
        if images.shape[-1] % multiple or images.shape[-2] % multiple:
            raise ValueError(f"StackedHourglass: the input size {tuple(images.shape[-2:])} must be a multiple of "
                             f"{multiple} (stride 4, then {self.depth} halvings)")
        x = self.stem(images)
        outs: List[StackOutput] = []
        for s in range(self.num_stacks):
            feat = self.features[s](self.hourglasses[s](x))
            hm, sil = self.heatmap_heads[s](feat), self.silhouette_heads[s](feat)
            outs.append(StackOutput(hm, sil))
            if s + 1 < self.num_stacks:
                x = x + self.remap_features[s](feat) + self.remap_heatmaps[s](hm) + self.remap_silhouette[s](sil)
        return outs


# ------------------------------------------------------------------------------------ read-outs
def _pixel_centres_normalised(n: int, like: Tensor) -> Tensor:
    return (torch.arange(n, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / n) - 1.0


def extract_keypoints(heatmaps: Tensor, mode: str = "argmax", temperature: float = 10.0,
                      window: Optional[int] = 7) -> Tensor:
    """Keypoints (B, K, 3) = (x, y, confidence) of heatmaps (B, K, H, W).

    (x, y) are in the crop's normalised [-1, 1] frame, pixel j at its centre ``(j + 0.5)·2/W − 1`` (module
    docstring). Confidence = the heatmap maximum clamped to [0, 1] (differentiable through the maximum).

    * ``argmax``: the centre of the maximum pixel (coordinates carry no gradient).
    * ``softargmax``: the expectation of the pixel centres under ``softmax(temperature · h)``, restricted to
      the ``window`` × ``window`` pixels around the maximum (None: the whole map; on a whole 64² map the
      many near-zero background pixels pull the estimate toward the centre). Computed in torch: the
      coordinates are differentiable w.r.t. the heatmaps. Exact for a peak symmetric within its window;
      near the map's border the window is cut and the estimate moves inward (< 1/2 pixel for σ = 1).

    A heatmap whose maximum is not above zero is a missing joint: (0, 0, 0), with a finite (zero)
    gradient for its coordinates.
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"extract_keypoints expects heatmaps (B, K, H, W); got {tuple(heatmaps.shape)}")
    if mode not in ("argmax", "softargmax"):
        raise ValueError(f"extract_keypoints: mode must be 'argmax' or 'softargmax'; got {mode!r}")
    B, K, H, W = heatmaps.shape
    flat = heatmaps.reshape(B, K, H * W)
    peak, idx = flat.max(dim=-1)
    found = peak > 0
    xs, ys = _pixel_centres_normalised(W, heatmaps), _pixel_centres_normalised(H, heatmaps)
    if mode == "argmax":
        xy = torch.stack([xs[idx % W], ys[idx // W]], dim=-1)
    else:
        logits = temperature * heatmaps
        if window is not None:
            r = window // 2
            col, row = (idx % W)[..., None, None], (idx // W)[..., None, None]
            cols = torch.arange(W, device=heatmaps.device)
            rows = torch.arange(H, device=heatmaps.device)[:, None]
            inside = ((cols - col).abs() <= r) & ((rows - row).abs() <= r)  # (B, K, H, W); holds the maximum
            logits = logits.masked_fill(~inside, float("-inf"))
        p = torch.softmax(logits.reshape(B, K, H * W), dim=-1).reshape(B, K, H, W)
        xy = torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)
    conf = peak.clamp(0.0, 1.0)
    xy = torch.where(found[..., None], xy, torch.zeros_like(xy))
    return torch.cat([xy, torch.where(found, conf, torch.zeros_like(conf))[..., None]], dim=-1)


def silhouette_from_logits(logits: Tensor) -> Tensor:
    """The body probability (B, 1, H, W) of 2-channel silhouette logits (softmax channel 1)."""
    return torch.softmax(logits, dim=1)[:, 1:2]


def normalised_to_heatmap_pixels(keypoints: Tensor, size: int) -> Tensor:
    """(…, 2) crop-normalised [-1, 1] coordinates -> heatmap pixels of a ``size`` map (``(k + 1)/2 · size``;
    pixel j's centre at j + 0.5)."""
    return (keypoints[..., :2] + 1.0) * (size / 2.0)


def gaussian_heatmaps(kp_pixels: Tensor, vis: Tensor, res: int, sigma: float = 1.0) -> Tensor:
    """Peak-1 Gaussian targets (B, K, res, res) of keypoints (B, K, 2) in heatmap pixels (pixel j covers
    [j, j + 1), centre j + 0.5): ``exp(−|p − c|² / 2σ²)`` over pixel centres p, σ in heatmap pixels.
    Joints not ``vis`` (B, K) or outside the map get an all-zero map."""
    normalised = kp_pixels * (2.0 / res) - 1.0
    return _gaussian_normalised(normalised, res, sigma, visible=vis)


# ----------------------------------------------------------------------------------------- loss
def human2d_loss(outputs: List[StackOutput], target_heatmaps: Tensor, target_mask: Tensor, kp_weight: Tensor,
                 lam: float = 100.0, *, mask_weight: Optional[Tensor] = None) -> Tuple[Tensor, dict]:
    """Human2D's loss summed over the stacks: ``Σ_s λ·L_hm(s) + L_sil(s)`` (λ = 100, the paper's).

    * ``L_hm``: the mean squared error between predicted and target heatmaps (B, K, H, W) over the pixels of
      the joints with ``kp_weight`` (B, K) = 1 (the others are ignored);
    * ``L_sil``: the pixelwise 2-class cross-entropy of the silhouette logits (B, 2, H, W) against
      ``target_mask`` (B, H, W) (1 = body), averaged over the pixels of the samples with ``mask_weight``
      (B,) = 1 (default: all).

    Returns ``(loss, {"hm": Σ_s L_hm(s), "sil": Σ_s L_sil(s)})``; empty selections give 0.
    """
    B = target_heatmaps.shape[0]
    w = kp_weight.to(target_heatmaps.dtype)
    mw = torch.ones(B, dtype=w.dtype, device=w.device) if mask_weight is None else mask_weight.to(w.dtype)
    labels = target_mask.long()
    hm_total = target_heatmaps.new_zeros(())
    sil_total = target_heatmaps.new_zeros(())
    for out in outputs:
        se = ((out.heatmaps - target_heatmaps) ** 2).mean(dim=(2, 3))  # (B, K) per joint map
        hm_total = hm_total + (se * w).sum() / w.sum().clamp(min=1.0)
        ce = F.cross_entropy(out.silhouette, labels, reduction="none").mean(dim=(1, 2))  # (B,)
        sil_total = sil_total + (ce * mw).sum() / mw.sum().clamp(min=1.0)
    return lam * hm_total + sil_total, {"hm": hm_total, "sil": sil_total}


# ------------------------------------------------------------------------------------ benchmark
def forward_time(net: nn.Module, inputs, *, runs: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``net(*inputs)`` under ``torch.no_grad`` over ``runs`` calls after ``warmup``."""
    import statistics

    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            net(*inputs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)
