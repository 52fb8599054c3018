"""Imperfect 2D keypoint detections made from ground truth, the way an OpenPose-like detector errs.

:func:`simulate_detections` turns exact projections into detections with

* per-joint confidences, lower where the joint is hidden behind the body (its depth is compared with
  the rendered depth at its pixel) and near the image border;
* pixel noise proportional to the person's size, larger for less confident joints;
* missed joints (confidence 0 and coordinates 0, OpenPose's "not detected"), more often when occluded,
  and always when the joint falls outside the image or behind the camera;
* occasional left/right swaps of an arm, a leg or one joint pair.

Everything is vectorised over people and joints; draws come from one numpy Generator in a fixed order.

:func:`annotation_noise` models human 2D annotations instead (the "GT" 2D of in-the-wild datasets):
Gaussian click noise, guesses for hidden joints and whole-body left/right confusions.
:func:`random_occluders` draws textured shapes in front of people.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["DetectionNoise", "occlusion", "simulate_detections", "annotation_noise", "random_occluders"]


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


def annotation_noise(rng: np.random.Generator, points: np.ndarray, occluded: np.ndarray, box_size: np.ndarray,
                     flip_perm: Sequence[int], *, sigma: float, swap_prob: float = 0.0, mislabel_prob: float = 0.0,
                     mislabel_sigma: float = 0.1) -> np.ndarray:
    """Annotated 2D keypoints (n, K, 3) from exact ones ``points`` (n, K, 3) (x, y, visibility in pixels).

    * every labelled joint (visibility > 0) moves by N(0, ``sigma`` x ``box_size``) per axis
      (``box_size`` (n,): the larger side of each person's box, pixels);
    * a hidden joint (``occluded`` (n, K) bool) is, with probability ``mislabel_prob``, a guess: it
      moves by a further N(0, ``mislabel_sigma`` x ``box_size``);
    * with probability ``swap_prob`` a person's left and right labels are exchanged (``flip_perm``: the
      convention's left/right permutation), the classic front/back confusion of annotators.

    The visibility column is kept; unlabelled joints stay as they are. Draws are made in a fixed order,
    all of them whatever the data, so the stream does not depend on the values.
    """
    points = np.asarray(points, dtype=np.float64)
    n, K, _ = points.shape
    if occluded.shape != (n, K) or np.shape(box_size) != (n,):
        raise ValueError(f"annotation_noise: points (n, K, 3), occluded (n, K) and box_size (n,) must agree; "
                         f"got {points.shape}, {occluded.shape}, {np.shape(box_size)}")
    for name, v in (("sigma", sigma), ("mislabel_sigma", mislabel_sigma)):
        if not v >= 0:
            raise ValueError(f"annotation_noise: {name} must be >= 0; got {v}")
    for name, v in (("swap_prob", swap_prob), ("mislabel_prob", mislabel_prob)):
        if not 0 <= v <= 1:
            raise ValueError(f"annotation_noise: {name} must be in [0, 1]; got {v}")
    noise = rng.standard_normal((n, K, 2))
    guess_u = rng.uniform(size=(n, K))
    guess = rng.standard_normal((n, K, 2))
    swap_u = rng.uniform(size=n)

    size = np.asarray(box_size, np.float64)[:, None, None]
    labelled = points[..., 2:3] > 0
    step = noise * sigma * size + np.where((occluded & (guess_u < mislabel_prob))[..., None], guess * mislabel_sigma * size, 0.0)
    out = points.copy()
    out[..., :2] = np.where(labelled, points[..., :2] + step, points[..., :2])
    swap = swap_u < swap_prob
    out[swap] = out[swap][:, np.asarray(flip_perm)]
    return out


def random_occluders(rng: np.random.Generator, boxes: np.ndarray, size: Tuple[int, int], max_fraction: float
                     ) -> np.ndarray:
    """One random shape per image in front of the person: masks (n, H, W) bool.

    Each shape is a rectangle or an ellipse (equal chance) with aspect ratio log-uniform in [1/3, 3],
    an area uniform in [0, ``max_fraction``] of the person's box ``boxes`` (n, 4) ``[x, y, w, h]``, and
    its centre uniform inside the box (so it may also cover background or leave the image)."""
    n = len(boxes)
    H, W = size
    if not 0 <= max_fraction <= 1:
        raise ValueError(f"random_occluders: max_fraction must be in [0, 1]; got {max_fraction}")
    frac = rng.uniform(0.0, max_fraction, n)
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))
    ellipse = rng.uniform(size=n) < 0.5
    where = rng.uniform(size=(n, 2))
    boxes = np.asarray(boxes, np.float64)
    area = frac * boxes[:, 2] * boxes[:, 3]
    hw = np.sqrt(area * aspect) / 2  # half width
    hh = np.sqrt(area / aspect) / 2
    cx = boxes[:, 0] + where[:, 0] * boxes[:, 2]
    cy = boxes[:, 1] + where[:, 1] * boxes[:, 3]
    x = (np.arange(W) + 0.5)[None, None, :]
    y = (np.arange(H) + 0.5)[None, :, None]
    dx = (x - cx[:, None, None]) / np.maximum(hw, 1e-9)[:, None, None]
    dy = (y - cy[:, None, None]) / np.maximum(hh, 1e-9)[:, None, None]
    # An ellipse of the same area as the rectangle has semi-axes 2/sqrt(pi) times the half sides.
    k = 2 / np.sqrt(np.pi)
    inside_rect = (np.abs(dx) <= 1) & (np.abs(dy) <= 1)
    inside_ell = (dx / k) ** 2 + (dy / k) ** 2 <= 1
    return np.where(ellipse[:, None, None], inside_ell, inside_rect) & (area > 0)[:, None, None]
