"""The HoloPose network (TRAINING_SPEC §4.1–§4.4; Güler & Kokkinos, CVPR 2019): a ResNet's C5 map,
multi-task deconvolution heads, part features pooled at the detected 2D joints, and the part-based
mixture-of-experts rotation regressor (heads/moe.py).

Blocks (``H, W`` = input / 4; every dense head is three [ConvTranspose 4×4 stride 2, BN, ReLU] then a
1×1 convolution, on C5 at stride 32):

=========================  ======================================================================
``heatmaps``               (B, 29, H, W): 2D keypoint heatmaps of :data:`HOLOPOSE_KEYPOINTS`
                           (``smpl_24`` + 5 face points), meant for peak-1 Gaussian targets
                           (:func:`gaussian_heatmaps`); decoded by :func:`decode_heatmaps`:
                           argmax, a quarter-pixel shift toward the higher neighbour, visible when
                           the maximum is ≥ 0.4
``joints3d``               (B, 24, 3): soft-argmax (:func:`soft_argmax_3d`) of a volume
                           (B, 24, D, H, W), root-relative camera axes, metres: x ↔ W, y ↔ H,
                           z ↔ D, each grid axis spanning [−r, r] (r = ``volume_range_m``, 1 m)
``dp_logits`` / ``dp_uv``  (B, 25, H, W) part logits (0 = background) and (B, 24, 2, H, W) U, V
                           (sigmoid) of parts 1..24
part features              (B, D_f, H, W), bilinearly sampled at the 2D joints: ``part_features``
                           (B, 29, D_f)
=========================  ======================================================================

Coordinates: a keypoint ``k`` in normalised crop units (``2·px/res − 1``, TRAINING_SPEC §1.2) is at
``(k + 1)/2 · W`` in heatmap pixels, where pixel column j covers [j, j + 1) and has its centre at
j + 0.5 (as ``smplfast.surface.IUVPoints``); ``grid_sample(align_corners=False)`` uses the same
convention, so pooling at a decoded joint samples exactly the decoded point.

Pooling location (``pool_at``): ``pred`` (decoded joints and their visibility), ``gt`` (ground-truth
2D keypoints (B, 29, 3) = x, y, confidence; visible where confidence > 0 and inside the crop), ``mix``
(per sample, GT with probability ``mix_prob``). Only training uses ``pool_at``; in eval mode the
network pools at its predictions unless ``forward(..., pool_at=...)`` says otherwise.

3D reconstruction (``regressor``):

* ``moe`` / ``direct6d`` / ``direct_euler``: :class:`~smplfast_train.heads.moe.PartMoERotation` on the
  pooled features; betas and the weak-perspective camera ``[s, tx, ty]`` from an MLP on
  ``[GAP(C5), masked mean_j f_j]`` (fc 1024, ReLU, dropout 0.5, twice; Xavier gain-0.01 output
  layers added to the mean parameters: betas 0, camera (0.9, 0, 0)).
* ``global``: SPIN's HMR regressor (heads/hmr.py) on GAP(C5), with the same dense heads and no
  part-feature head.

Sizes (:data:`TIERS`, :func:`build_holopose`): ``cpu`` = ``tiny`` backbone, 128² → 32² maps, 64
channels, D = 32, D_f = 64; ``paper`` = ``resnet50``, 256² → 64², 256 channels, D = 64, D_f = 256.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import build_backbone
from ..mean_params import load_mean_params
from ..moe_clusters import MoEClusters
from .hmr import HMRRegressor
from .moe import HOLOPOSE_KEYPOINTS, MOE_MODES, Neighbourhoods, PartMoERotation

__all__ = [
    "REGRESSORS",
    "POOL_AT",
    "TIERS",
    "VIS_THRESHOLD",
    "DeconvHead",
    "ShapeCamHead",
    "gaussian_heatmaps",
    "decode_heatmaps",
    "pool_features",
    "soft_argmax_3d",
    "densepose_iuv",
    "HoloPoseOutput",
    "HoloPoseNet",
    "build_holopose",
]

#: 3D-reconstruction variants: the part-based ones (heads/moe.py) and HMR's global regressor.
REGRESSORS = MOE_MODES + ("global",)
#: Where part features are pooled during training.
POOL_AT = ("pred", "gt", "mix")
#: HoloPose's visibility threshold on the heatmap maximum [P].
VIS_THRESHOLD = 0.4

#: Constructor arguments of the two tiers (TRAINING_SPEC §4.1); ``img_res`` is the input size.
TIERS: Dict[str, dict] = {
    "cpu": dict(backbone="tiny", head_channels=64, part_channels=64, depth_bins=32, img_res=128),
    "paper": dict(backbone="resnet50", head_channels=256, part_channels=256, depth_bins=64, img_res=256),
}


# ------------------------------------------------------------------------------------ dense heads


class DeconvHead(nn.Module):
    """``num_deconv`` × [ConvTranspose2d 4×4 stride 2 (padding 1, no bias), BN, ReLU] then a 1×1
    convolution to ``out_channels`` (Simple-Baselines head; each deconv doubles the resolution).
    Initialisation: deconvolution and output weights normal(0, 0.001), output bias 0, BN 1 / 0."""

    def __init__(self, in_channels: int, width: int, out_channels: int, num_deconv: int = 3):
        super().__init__()
        layers = []
        c = int(in_channels)
        for _ in range(int(num_deconv)):
            layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c = width
        self.deconv = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, int(out_channels), 1)
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.deconv(x))


class ShapeCamHead(nn.Module):
    """Betas and weak-perspective camera from a feature vector: fc1 → ReLU → dropout → fc2 → ReLU →
    dropout → ``decshape`` / ``deccam`` (Xavier gain 0.01), added to ``init_shape`` / ``init_cam``."""

    def __init__(self, in_dim: int, init_shape: Tensor, init_cam: Tensor, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(int(in_dim), hidden)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(dropout)
        self.decshape = nn.Linear(hidden, init_shape.numel())
        self.deccam = nn.Linear(hidden, 3)
        for head in (self.decshape, self.deccam):
            nn.init.xavier_uniform_(head.weight, gain=0.01)
            nn.init.zeros_(head.bias)
        self.register_buffer("init_shape", init_shape.reshape(1, -1).clone())
        self.register_buffer("init_cam", init_cam.reshape(1, 3).clone())

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.drop1(F.relu(self.fc1(x)))
        h = self.drop2(F.relu(self.fc2(h)))
        return self.init_shape + self.decshape(h), self.init_cam + self.deccam(h)


# --------------------------------------------------------------------------- keypoint utilities


def _to_pixels(xy: Tensor, H: int, W: int) -> Tensor:
    return torch.stack([(xy[..., 0] + 1) * (W / 2), (xy[..., 1] + 1) * (H / 2)], dim=-1)


def _to_normalised(px: Tensor, H: int, W: int) -> Tensor:
    return torch.stack([px[..., 0] * (2 / W) - 1, px[..., 1] * (2 / H) - 1], dim=-1)


def gaussian_heatmaps(keypoints: Tensor, size: Union[int, Tuple[int, int]], sigma: float,
                      visible: Optional[Tensor] = None) -> Tensor:
    """Peak-1 Gaussian target heatmaps (B, K, H, W) of keypoints (B, K, 2) in normalised crop units:
    ``exp(−|p − c|² / 2σ²)`` at pixel centres p, σ in heatmap pixels (2 at 64², 1 at 32²). A keypoint
    that is not ``visible`` (B, K) or lies outside the crop gets an all-zero map."""
    H, W = (size, size) if isinstance(size, int) else size
    c = _to_pixels(keypoints, H, W)  # (B, K, 2)
    xs = torch.arange(W, dtype=keypoints.dtype, device=keypoints.device) + 0.5
    ys = torch.arange(H, dtype=keypoints.dtype, device=keypoints.device) + 0.5
    gx = torch.exp(-((xs - c[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (B, K, W)
    gy = torch.exp(-((ys - c[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (B, K, H)
    hm = gy[..., :, None] * gx[..., None, :]
    inside = (keypoints.abs() <= 1).all(-1)
    keep = inside if visible is None else inside & visible.bool()
    return hm * keep[..., None, None].to(hm.dtype)


def decode_heatmaps(heatmaps: Tensor, threshold: float = VIS_THRESHOLD) -> Tuple[Tensor, Tensor, Tensor]:
    """2D joints of heatmaps (B, K, H, W): ``(xy, conf, vis)`` with ``xy`` (B, K, 2) in normalised crop
    units, ``conf`` (B, K) the maximum, ``vis`` (B, K) bool ``conf ≥ threshold``. The argmax pixel's
    centre is moved a quarter pixel toward the higher neighbour along x and along y (where both
    neighbours exist). Not differentiable (detached)."""
    hm = heatmaps.detach()
    B, K, H, W = hm.shape
    flat = hm.reshape(B, K, H * W)
    conf, idx = flat.max(dim=-1)
    y, x = idx // W, idx % W
    pad = F.pad(hm, (1, 1, 1, 1), value=float("-inf")).reshape(B, K, (H + 2) * (W + 2))

    def at(dy: int, dx: int) -> Tensor:
        return pad.gather(-1, ((y + 1 + dy) * (W + 2) + (x + 1 + dx)).unsqueeze(-1)).squeeze(-1)

    left, right, up, down = at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
    inner_x = (x > 0) & (x < W - 1)
    inner_y = (y > 0) & (y < H - 1)
    dx = torch.where(inner_x, 0.25 * torch.sign(torch.where(inner_x, right - left, torch.zeros_like(conf))),
                     torch.zeros_like(conf))
    dy = torch.where(inner_y, 0.25 * torch.sign(torch.where(inner_y, down - up, torch.zeros_like(conf))),
                     torch.zeros_like(conf))
    px = torch.stack([x.to(hm.dtype) + 0.5 + dx, y.to(hm.dtype) + 0.5 + dy], dim=-1)
    return _to_normalised(px, H, W), conf, conf >= threshold


def pool_features(fmap: Tensor, xy: Tensor) -> Tensor:
    """Bilinear samples (B, K, C) of feature maps (B, C, H, W) at points (B, K, 2) in normalised crop
    units (``grid_sample``, ``align_corners=False``, border padding)."""
    out = F.grid_sample(fmap, xy.to(fmap.dtype)[:, :, None, :], mode="bilinear", padding_mode="border",
                        align_corners=False)  # (B, C, K, 1)
    return out[..., 0].transpose(1, 2)


def soft_argmax_3d(volume: Tensor, range_m: float = 1.0) -> Tensor:
    """Integral regression: (B, J, 3) = the expected (x, y, z) under ``softmax`` over each joint's
    volume logits (B, J, D, H, W); voxel (d, h, w) has its centre at
    ``((w + 0.5)/W · 2 − 1, (h + 0.5)/H · 2 − 1, (d + 0.5)/D · 2 − 1) · range_m``."""
    B, J, D, H, W = volume.shape
    p = torch.softmax(volume.reshape(B, J, D * H * W), dim=-1).reshape(B, J, D, H, W)

    def centres(n: int) -> Tensor:
        return ((torch.arange(n, dtype=p.dtype, device=p.device) + 0.5) * (2.0 / n) - 1.0) * range_m

    x = (p.sum(dim=(2, 3)) * centres(W)).sum(-1)
    y = (p.sum(dim=(2, 4)) * centres(H)).sum(-1)
    z = (p.sum(dim=(3, 4)) * centres(D)).sum(-1)
    return torch.stack([x, y, z], dim=-1)


def densepose_iuv(dp_logits: Tensor, dp_uv: Tensor, fg_threshold: float = 0.5) -> Tensor:
    """An IUV image (B, 3, H, W) (I float in 0..24, U, V in [0, 1]) of the DensePose head's outputs:
    I = the most likely part where P(foreground) = 1 − P(background) > ``fg_threshold``, else 0; U, V
    of that part's channels. The input of ``smplfast.surface.IUVPoints.from_iuv_image``."""
    prob = torch.softmax(dp_logits.detach(), dim=1)
    part = prob[:, 1:].argmax(dim=1)  # (B, H, W), 0..23
    fg = (1 - prob[:, 0]) > fg_threshold
    uv = dp_uv.detach().gather(1, part[:, None, None].expand(-1, 1, 2, -1, -1))[:, 0]  # (B, 2, H, W)
    I = torch.where(fg, part + 1, torch.zeros_like(part)).to(uv.dtype)
    return torch.cat([I[:, None], uv * fg[:, None].to(uv.dtype)], dim=1)


# --------------------------------------------------------------------------------------- network


@dataclass
class HoloPoseOutput:
    """Output of :class:`HoloPoseNet` (B = batch, H × W = heatmap size, 29 keypoints).

    3D model: ``rotmat`` (B, 24, 3, 3), ``betas`` (B, 10), ``cam`` (B, 3) weak perspective
    ``[s, tx, ty]``. Dense heads: ``heatmaps`` (B, 29, H, W); ``kp2d`` (B, 29, 2) decoded joints
    (normalised crop units), ``kp_conf`` (B, 29) heatmap maxima, ``vis`` (B, 29) bool
    (``kp_conf ≥ 0.4``); ``volume`` (B, 24, D, H, W) logits and ``joints3d`` (B, 24, 3) their
    soft-argmax (metres, root-relative camera axes); ``dp_logits`` (B, 25, H, W), ``dp_uv``
    (B, 24, 2, H, W). Part pooling: ``pool_xy`` (B, 29, 2) and ``pool_vis`` (B, 29) where features
    were pooled (None for ``global``), ``part_features`` (B, 29, D_f). Regressor diagnostics:
    ``euler`` (B, 23, 3), ``any_visible`` (B, 23), ``expert_euler``, ``expert_weights``,
    ``root_weights`` (see :class:`~smplfast_train.heads.moe.MoEOutput`); ``pose6d`` (B, 144) for
    ``global``."""

    rotmat: Tensor
    betas: Tensor
    cam: Tensor
    heatmaps: Tensor
    kp2d: Tensor
    kp_conf: Tensor
    vis: Tensor
    volume: Tensor
    joints3d: Tensor
    dp_logits: Tensor
    dp_uv: Tensor
    pool_xy: Optional[Tensor] = None
    pool_vis: Optional[Tensor] = None
    part_features: Optional[Tensor] = None
    euler: Optional[Tensor] = None
    any_visible: Optional[Tensor] = None
    expert_euler: Optional[Tensor] = None
    expert_weights: Optional[Tensor] = None
    root_weights: Optional[Tensor] = None
    pose6d: Optional[Tensor] = None


class HoloPoseNet(nn.Module):
    """HoloPose: backbone C5 → heatmap, volumetric 3D, DensePose and part-feature deconvolution heads;
    part features pooled at the 2D joints → part-based rotation regressor; [GAP(C5), masked mean of
    part features] → betas and camera. ``regressor="global"`` replaces the part-based 3D
    reconstruction by SPIN's HMR regressor on GAP(C5).

    Arguments: ``backbone`` (``tiny``, ``resnet18``, ``resnet50``, or a module with ``c5`` and
    ``feature_dim``); ``regressor`` (:data:`REGRESSORS`); ``clusters`` (K, path or
    :class:`MoEClusters`; the MoE centres and the Euler orders); ``head_channels`` (deconvolution
    width: 64 cpu, 256 paper); ``part_channels`` (D_f); ``num_deconv`` (3: C5 at stride 32 → stride
    4); ``depth_bins`` (D of the 3D volume); ``volume_range_m``; ``num_keypoints`` (29);
    ``num_joints3d`` (24); ``vis_threshold`` (0.4); ``pool_at`` / ``mix_prob``; ``mean_params``
    (initial betas, camera and root orientation; default the bundled model's); ``hidden`` /
    ``dropout`` of the shape-camera MLP; ``hmr_iters`` / ``hmr_relu`` for ``global``;
    ``neighbourhoods`` (default: generated from SMPL's parents)."""

    def __init__(
        self,
        backbone: Union[str, nn.Module] = "tiny",
        regressor: str = "moe",
        clusters: Union[None, int, str, MoEClusters] = 32,
        head_channels: int = 64,
        part_channels: int = 64,
        num_deconv: int = 3,
        depth_bins: int = 32,
        volume_range_m: float = 1.0,
        num_keypoints: int = 29,
        num_joints3d: int = 24,
        vis_threshold: float = VIS_THRESHOLD,
        pool_at: str = "pred",
        mix_prob: float = 0.5,
        mean_params=None,
        hidden: int = 1024,
        dropout: float = 0.5,
        hmr_iters: int = 3,
        hmr_relu: bool = False,
        neighbourhoods: Optional[Neighbourhoods] = None,
    ):
        super().__init__()
        if regressor not in REGRESSORS:
            raise ValueError(f"regressor must be one of {REGRESSORS}; got {regressor!r}")
        if pool_at not in POOL_AT:
            raise ValueError(f"pool_at must be one of {POOL_AT}; got {pool_at!r}")
        if num_keypoints != len(HOLOPOSE_KEYPOINTS) and neighbourhoods is None:
            raise ValueError(f"num_keypoints other than {len(HOLOPOSE_KEYPOINTS)} needs explicit neighbourhoods")
        if isinstance(backbone, str):
            backbone, _ = build_backbone(backbone)
        if not hasattr(backbone, "c5") or not hasattr(backbone, "feature_dim"):
            raise ValueError("backbone must provide c5(images) and feature_dim")
        self.backbone = backbone
        Fc5 = int(backbone.feature_dim)
        self.regressor = regressor
        self.num_keypoints = int(num_keypoints)
        self.num_joints3d = int(num_joints3d)
        self.depth_bins = int(depth_bins)
        self.volume_range_m = float(volume_range_m)
        self.vis_threshold = float(vis_threshold)
        self.pool_at = pool_at
        self.mix_prob = float(mix_prob)
        self.part_channels = int(part_channels)
        self.stride = 32 // (2 ** int(num_deconv))

        self.heatmap_head = DeconvHead(Fc5, head_channels, self.num_keypoints, num_deconv)
        self.volume_head = DeconvHead(Fc5, head_channels, self.num_joints3d * self.depth_bins, num_deconv)
        self.densepose_head = DeconvHead(Fc5, head_channels, 25 + 48, num_deconv)

        mp = load_mean_params(mean_params)
        if regressor == "global":
            self.part_head = None
            self.rotation_head = None
            self.shape_cam_head = None
            self.hmr = HMRRegressor(Fc5, mean_params=mp, n_iter=hmr_iters, relu=hmr_relu, hidden=hidden,
                                    dropout=dropout)
        else:
            self.part_head = DeconvHead(Fc5, head_channels, self.part_channels, num_deconv)
            self.rotation_head = PartMoERotation(self.part_channels, clusters=clusters, mode=regressor,
                                                 neighbourhoods=neighbourhoods, num_keypoints=self.num_keypoints,
                                                 root_6d=mp["pose"][:6].tolist())
            self.shape_cam_head = ShapeCamHead(Fc5 + self.part_channels, mp["shape"], mp["cam"], hidden, dropout)
            self.hmr = None

    def _pool_locations(self, kp2d: Tensor, vis: Tensor, keypoints_gt: Optional[Tensor], pool_at: str):
        if pool_at == "pred":
            return kp2d, vis
        if keypoints_gt is None:
            raise ValueError(f"pool_at={pool_at!r} needs keypoints_gt (B, {self.num_keypoints}, 3)")
        if keypoints_gt.shape != (kp2d.shape[0], self.num_keypoints, 3):
            raise ValueError(f"keypoints_gt must be (B, {self.num_keypoints}, 3); got {tuple(keypoints_gt.shape)}")
        gt = keypoints_gt.detach().to(kp2d.dtype)
        gt_xy = torch.nan_to_num(gt[..., :2])
        gt_vis = (gt[..., 2] > 0) & (gt_xy.abs() <= 1).all(-1)
        if pool_at == "gt":
            return gt_xy, gt_vis
        use_gt = torch.rand(kp2d.shape[0], device=kp2d.device) < self.mix_prob  # pool_at == "mix"
        return torch.where(use_gt[:, None, None], gt_xy, kp2d), torch.where(use_gt[:, None], gt_vis, vis)

    def forward(self, images: Tensor, keypoints_gt: Optional[Tensor] = None, pool_at: Optional[str] = None
                ) -> HoloPoseOutput:
        """``images`` (B, 3, S, S); ``keypoints_gt`` (B, 29, 3) normalised x, y and confidence, needed
        for ``pool_at`` ``gt`` / ``mix``; ``pool_at`` overrides the constructor's (default: that one
        in training mode, ``pred`` in eval mode)."""
        if pool_at is None:
            pool_at = self.pool_at if self.training else "pred"
        if pool_at not in POOL_AT:
            raise ValueError(f"pool_at must be one of {POOL_AT}; got {pool_at!r}")
        c5 = self.backbone.c5(images)
        gap = c5.mean(dim=(2, 3))
        B = images.shape[0]

        heatmaps = self.heatmap_head(c5)
        H, W = heatmaps.shape[-2:]
        kp2d, kp_conf, vis = decode_heatmaps(heatmaps, self.vis_threshold)
        volume = self.volume_head(c5).reshape(B, self.num_joints3d, self.depth_bins, H, W)
        joints3d = soft_argmax_3d(volume, self.volume_range_m)
        dp = self.densepose_head(c5)
        dp_logits = dp[:, :25]
        dp_uv = torch.sigmoid(dp[:, 25:]).reshape(B, 24, 2, H, W)
        common = dict(heatmaps=heatmaps, kp2d=kp2d, kp_conf=kp_conf, vis=vis, volume=volume, joints3d=joints3d,
                      dp_logits=dp_logits, dp_uv=dp_uv)

        if self.regressor == "global":
            out = self.hmr(gap)
            return HoloPoseOutput(rotmat=out.rotmat, betas=out.betas, cam=out.cam, pose6d=out.pose6d, **common)

        pool_xy, pool_vis = self._pool_locations(kp2d, vis, keypoints_gt, pool_at)
        pf = self.part_head(c5)
        feats = pool_features(pf, pool_xy)  # (B, 29, D_f)
        r = self.rotation_head(feats, pool_vis)
        m = pool_vis.to(feats.dtype)[..., None]
        mean_f = (feats * m).sum(1) / m.sum(1).clamp_min(1.0)  # zeros when nothing is visible
        betas, cam = self.shape_cam_head(torch.cat([gap, mean_f], dim=1))
        return HoloPoseOutput(
            rotmat=r.rotmat, betas=betas, cam=cam, pool_xy=pool_xy, pool_vis=pool_vis, part_features=feats,
            euler=r.euler, any_visible=r.any_visible, expert_euler=r.expert_euler,
            expert_weights=r.expert_weights, root_weights=r.root_weights, **common,
        )


def build_holopose(tier: str = "cpu", regressor: str = "moe", **overrides) -> HoloPoseNet:
    """:class:`HoloPoseNet` with the sizes of ``tier`` (:data:`TIERS`: ``cpu`` or ``paper``), updated
    by ``overrides`` (any constructor argument). ``img_res`` in :data:`TIERS` is informative only."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}; got {tier!r}")
    kw = {k: v for k, v in TIERS[tier].items() if k != "img_res"}
    kw.update(overrides)
    return HoloPoseNet(regressor=regressor, **kw)
