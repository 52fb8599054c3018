"""Imperfect 2D keypoint detections made from ground truth, the way an OpenPose-like detector errs.

:func:`simulate_detections` turns exact projections into detections with

* per-joint confidences, lower where the joint is hidden behind the body (its depth is compared with
  the rendered depth at its pixel) and near the image border;
* pixel noise proportional to the person's size, larger for less confident joints;
* missed joints (confidence 0 and coordinates 0, OpenPose's "not detected"), more often when occluded,
  and always when the joint falls outside the image or behind the camera;
* occasional left/right swaps of an arm, a leg or one joint pair.

Everything is vectorised over people and joints; draws come from one numpy Generator in a fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["DetectionNoise", "occlusion", "simulate_detections"]


@dataclass(frozen=True)
class DetectionNoise:
    """Parameters of :func:`simulate_detections` (lengths are fractions of the person's size in pixels,
    depths metres)."""

    confidence: tuple = (0.6, 0.95)     # base confidence, uniform
    occluded_drop: float = 0.7          # confidence x (1 - occluded_drop x occlusion)
    occlusion_margin: float = 0.1       # depth behind the visible surface still counted as visible
    occlusion_range: float = 0.2        # ... and the further depth at which occlusion reaches 1
    border: float = 0.04                # confidence falls within this fraction of the image side
    border_drop: float = 0.5
    noise: float = 0.008                # pixel noise sigma = size x (noise + noise_low_conf x (1 - conf))
    noise_low_conf: float = 0.03
    miss: float = 0.02                  # missing probability = miss + miss_occluded x occlusion
    miss_occluded: float = 0.35
    swap: float = 0.04                  # probability that a person gets one left/right swap


def occlusion(points: np.ndarray, depth: np.ndarray, depth_map: np.ndarray, margin: float, width: float) -> np.ndarray:
    """Occlusion amount in [0, 1] of keypoints at pixels ``points`` (n, K, 2) with camera depths ``depth``
    (n, K), from rendered depth maps (n, H, W) (0 = background).

    A joint lies inside the body, up to about ``margin`` behind the surface that shows it; it is
    hidden when the surface at its pixel is much nearer: occlusion = clip((depth - surface - margin)
    / width, 0, 1). Points outside the image or over background count as unoccluded (0)."""
    n, H, W = depth_map.shape
    x, y = points[..., 0], points[..., 1]
    inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    col = np.where(inside, np.floor(np.nan_to_num(x)), 0).astype(np.int64).clip(0, W - 1)
    row = np.where(inside, np.floor(np.nan_to_num(y)), 0).astype(np.int64).clip(0, H - 1)
    surface = depth_map[np.arange(n)[:, None], row, col]
    occ = np.clip((depth - surface - margin) / width, 0.0, 1.0)
    return np.where(inside & (surface > 0), occ, 0.0)


def simulate_detections(rng: np.random.Generator, points: np.ndarray, depth: np.ndarray, depth_map: np.ndarray,
                        person_size: np.ndarray, flip_perm: Sequence[int], *,
                        swap_groups: Optional[Sequence[Sequence[int]]] = None,
                        params: DetectionNoise = DetectionNoise()) -> np.ndarray:
    """Detections (n, K, 3) (x, y, confidence) from exact keypoint pixels ``points`` (n, K, 2).

    ``depth`` (n, K): the keypoints' camera depths (<= 0 or NaN: behind the camera); ``depth_map``
    (n, H, W): the rendered depth (0 = background); ``person_size`` (n,): the person's size in pixels
    (e.g. the larger bounding-box side); ``flip_perm``: the convention's left/right permutation;
    ``swap_groups``: lists of keypoint indices that swap together with their mirror images (e.g. a
    whole arm); a swap picks one group or, with equal chance, one single left/right pair.
    """
    points = np.asarray(points, dtype=np.float64)
    n, K, _ = points.shape
    H, W = depth_map.shape[1:]
    if depth.shape != (n, K) or depth_map.shape[0] != n or person_size.shape != (n,):
        raise ValueError(f"simulate_detections: points (n, K, 2), depth (n, K), depth_map (n, H, W) and person_size (n,) "
                         f"must agree; got {points.shape}, {depth.shape}, {depth_map.shape}, {person_size.shape}")
    p = params
    x, y = points[..., 0], points[..., 1]
    valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(depth) & (depth > 0)
    inside = valid & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    occ = occlusion(points, np.where(valid, depth, 0.0), depth_map, p.occlusion_margin, p.occlusion_range)

    # Draws, always all of them and in this order, so the stream does not depend on the data.
    conf = rng.uniform(*p.confidence, (n, K))
    noise = rng.standard_normal((n, K, 2))
    miss_u = rng.uniform(size=(n, K))
    swap_u = rng.uniform(size=n)
    swap_pick = rng.integers(0, 2 * max(len(swap_groups or ()), 1), size=n)
    pair_pick = rng.integers(0, K, size=n)

    conf = conf * (1.0 - p.occluded_drop * occ)
    edge = np.minimum(np.minimum(x, W - x), np.minimum(y, H - y))
    near_edge = np.clip(np.nan_to_num(edge) / (p.border * max(H, W)), 0.0, 1.0)
    conf = conf * (1.0 - p.border_drop * (1.0 - near_edge))
    sigma = person_size[:, None] * (p.noise + p.noise_low_conf * (1.0 - conf))
    xy = np.nan_to_num(points) + noise * sigma[..., None]
    missed = ~inside | (miss_u < p.miss + p.miss_occluded * occ)
    out = np.concatenate([xy, conf[..., None]], -1)
    out[missed] = 0.0

    perm = np.asarray(flip_perm)
    groups = [np.asarray(g) for g in (swap_groups or ())]
    for i in np.flatnonzero(swap_u < p.swap):
        k = int(swap_pick[i])
        if k < len(groups):
            idx = groups[k]
        else:  # one left/right pair; a central keypoint (its own mirror) swaps with nothing
            idx = np.asarray([pair_pick[i]])
        idx = np.unique(np.concatenate([idx, perm[idx]]))
        out[i, idx] = out[i, perm[idx]]
    return out
