"""Procedural backgrounds, clothing textures and lighting for synthetic images (numpy, vectorised).

* :func:`random_backgrounds`: per image one of linear/radial gradients, smooth value noise, stripes,
  checkerboards or a scatter of shapes over a gradient, each with random colours, plus a little
  smooth noise; float32 (n, H, W, 3) in [0, 1].
* :func:`random_part_textures`: per person an outfit (top with short or long sleeves, trousers or
  shorts, shoes, skin tone, hair) in DensePose's 24 parts; each garment gets a colour pair and a
  pattern (plain, stripes, checks, noise, dots) drawn in its parts' (u, v) charts; float32
  (n, 24, T, T, 3) for :class:`smplfast.render.BodyRenderer`'s ``texture``.
* :func:`random_lights`: a light direction (towards the light, world frame, from above, optionally on
  the camera's side) and an ambient level.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["BACKGROUND_KINDS", "random_backgrounds", "random_part_textures", "random_lights", "PART_GARMENT"]

#: Background kinds, in the order of :func:`random_backgrounds`' ``kinds`` output.
BACKGROUND_KINDS = ("linear", "radial", "noise", "stripes", "checker", "shapes")


def _colours(rng: np.random.Generator, shape, lo=0.05, hi=0.95) -> np.ndarray:
    """Random RGB colours: a hue wheel sample mixed with grey, so both vivid and dull colours occur."""
    h = rng.uniform(0, 1, shape)
    sat = rng.uniform(0, 1, shape) ** 0.7
    val = rng.uniform(lo, hi, shape)
    k = (h[..., None] * 6 + np.array([5.0, 3.0, 1.0])) % 6
    base = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)  # HSV -> RGB with v = 1, s = 1
    return (val[..., None] * (1 - sat[..., None] * base)).astype(np.float32)


def _value_noise(rng: np.random.Generator, n: int, H: int, W: int, cells: np.ndarray) -> np.ndarray:
    """Smooth noise (n, H, W) in [0, 1]: random values on a ``cells`` x ``cells`` lattice (per image),
    bilinearly interpolated with a smoothstep."""
    grid = rng.uniform(0, 1, (n, 17, 17)).astype(np.float32)

    def weights(L):  # (n, L, 17) interpolation matrix per image: separable, so two batched matmuls
        g = (np.arange(L, dtype=np.float32)[None] + 0.5) / L * cells.astype(np.float32)[:, None]
        i0 = np.floor(g).astype(np.int64)
        t = g - i0
        t = t * t * (3 - 2 * t)
        w = np.zeros((n, L, 17), np.float32)
        b, r = np.arange(n)[:, None], np.arange(L)[None]
        w[b, r, i0] = 1 - t
        w[b, r, i0 + 1] = t
        return w

    return weights(H) @ grid @ weights(W).transpose(0, 2, 1)


def random_backgrounds(rng: np.random.Generator, n: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` random backgrounds (n, H, W, 3) float32 in [0, 1] and their kinds (n,) (indices into
    :data:`BACKGROUND_KINDS`). All random draws happen up front in a fixed order."""
    H, W = height, width
    kind = rng.integers(0, len(BACKGROUND_KINDS), n)
    c0, c1, c2 = _colours(rng, n), _colours(rng, n), _colours(rng, n)
    angle = rng.uniform(0, np.pi, n)
    freq = rng.uniform(3, 14, n)
    cells = rng.integers(2, 16, n)
    centre = rng.uniform(0.1, 0.9, (n, 2))
    texture_amount = rng.uniform(0.0, 0.25, n)
    noise = _value_noise(rng, n, H, W, cells)
    fine = _value_noise(rng, n, H, W, np.minimum(cells * 2 + 4, 16))
    num_shapes = 8
    shape_kind = rng.integers(0, 2, (n, num_shapes))
    shape_xy = rng.uniform(-0.1, 1.1, (n, num_shapes, 2))
    shape_r = rng.uniform(0.04, 0.3, (n, num_shapes, 2))
    shape_col = _colours(rng, (n, num_shapes))

    ys = ((np.arange(H, dtype=np.float32) + 0.5) / H)[:, None]
    xs = ((np.arange(W, dtype=np.float32) + 0.5) / W)[None, :]
    out = np.empty((n, H, W, 3), dtype=np.float32)
    for i in range(n):
        # Python floats keep the float32 arithmetic in float32 (numpy float64 scalars would promote).
        ca, sa, f, amount = float(np.cos(angle[i])), float(np.sin(angle[i])), float(freq[i]), float(texture_amount[i])
        proj = (xs - 0.5) * ca + (ys - 0.5) * sa + 0.5  # (H, W) roughly in [0, 1]
        k = BACKGROUND_KINDS[kind[i]]
        if k == "linear":
            t = np.clip(proj, 0, 1)
        elif k == "radial":
            t = np.clip(np.hypot(xs - float(centre[i, 0]), ys - float(centre[i, 1])) * 1.4, 0, 1)
        elif k == "noise":
            t = noise[i]
        elif k == "stripes":
            t = 0.5 + 0.5 * np.sin((2 * np.pi * f) * proj)
            t = np.clip((t - 0.5) * 3 + 0.5, 0, 1)  # sharpened
        elif k == "checker":
            u = np.floor(((xs - 0.5) * ca + (ys - 0.5) * sa) * f)
            v = np.floor((-(xs - 0.5) * sa + (ys - 0.5) * ca) * f)
            t = ((u + v) % 2).astype(np.float32)
        else:  # shapes over a gradient
            t = np.clip(proj, 0, 1)
        img = c0[i] + t[..., None] * (c1[i] - c0[i])
        if k == "shapes":
            for s in range(num_shapes):
                dx = np.abs(xs - float(shape_xy[i, s, 0])) * float(1 / shape_r[i, s, 0])
                dy = np.abs(ys - float(shape_xy[i, s, 1])) * float(1 / shape_r[i, s, 1])
                inside = (dx * dx + dy * dy <= 1) if shape_kind[i, s] == 0 else ((dx <= 1) & (dy <= 1))
                img[inside] = shape_col[i, s]
        # A little texture everywhere (walls and floors are rarely flat).
        img += (amount * (fine[i] - 0.5))[..., None] * (c2[i] + 0.2)
        out[i] = img
    return np.clip(out, 0, 1, out=out), kind


# Garment of each DensePose part (index = part id - 1): 0 top, 1 sleeve-upper, 2 sleeve-lower,
# 3 bottom-upper, 4 bottom-lower, 5 shoes, 6 hands, 7 head.
PART_GARMENT = np.array([0, 0, 6, 6, 5, 5, 3, 3, 3, 3, 4, 4, 4, 4, 1, 1, 1, 1, 2, 2, 2, 2, 7, 7])
_PATTERNS = ("plain", "stripes", "checks", "noise", "dots")


def random_part_textures(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """Per-person clothing textures (n, 24, T, T, 3) float32 in [0, 1] over DensePose's 24 part charts
    (texel (row, col) = (v, u) on a T x T grid, the renderer's layout). Garments: a top (long or short sleeves), trousers or
    shorts, shoes, skin on hands, head (with hair on the upper part of the charts) and bare limbs."""
    T = size
    skin = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52], [0.68, 0.47, 0.33], [0.45, 0.30, 0.20], [0.30, 0.20, 0.13]],
                    dtype=np.float32)
    skin_col = skin[rng.integers(0, len(skin), n)] * rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32)
    hair_col = _colours(rng, n, 0.02, 0.4) * 0.6
    garment_a = _colours(rng, (n, 4))  # top, bottom, shoes, spare
    garment_b = _colours(rng, (n, 4))
    pattern = rng.integers(0, len(_PATTERNS), (n, 2))  # top, bottom
    freq = rng.uniform(2, 7, (n, 2))
    long_sleeves = rng.uniform(size=n) < 0.5
    long_legs = rng.uniform(size=n) < 0.6
    noise = _value_noise(rng, 2 * n, T, T, np.full(2 * n, 4)).reshape(n, 2, T, T)
    part_shade = rng.uniform(0.92, 1.08, (n, 24, 1)).astype(np.float32)

    g = (np.arange(T, dtype=np.float32) + 0.5) / T
    v, u = np.meshgrid(g, g, indexing="ij")
    tex = np.empty((n, 24, T, T, 3), dtype=np.float32)
    for i in range(n):
        maps = []
        for j in range(2):  # pattern mix factor of top and bottom, (T, T)
            name = _PATTERNS[pattern[i, j]]
            f = freq[i, j]
            if name == "plain":
                m = np.zeros((T, T), np.float32)
            elif name == "stripes":
                m = (np.sin(2 * np.pi * f * v) > 0).astype(np.float32)
            elif name == "checks":
                m = ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32)
            elif name == "noise":
                m = noise[i, j]
            else:
                m = ((((u * f) % 1 - 0.5) ** 2 + ((v * f) % 1 - 0.5) ** 2) < 0.08).astype(np.float32)
            maps.append(m[..., None])
        top = garment_a[i, 0] * (1 - maps[0]) + garment_b[i, 0] * maps[0]
        bottom = garment_a[i, 1] * (1 - maps[1]) + garment_b[i, 1] * maps[1]
        skin_t = np.broadcast_to(skin_col[i], (T, T, 3))
        head = np.where((v < 0.45)[..., None], hair_col[i], skin_col[i])
        looks = [
            top,                                       # 0 top
            top,                                       # 1 upper sleeves
            top if long_sleeves[i] else skin_t,        # 2 lower sleeves
            bottom,                                    # 3 thighs
            bottom if long_legs[i] else skin_t,        # 4 shins
            np.broadcast_to(garment_a[i, 2], (T, T, 3)),  # 5 shoes
            skin_t,                                    # 6 hands
            head,                                      # 7 head
        ]
        for p in range(24):
            tex[i, p] = looks[PART_GARMENT[p]]
    tex *= part_shade[:, :, None, None, :]  # slight shade differences between parts of one garment
    return np.clip(tex, 0, 1, out=tex)


def random_lights(rng: np.random.Generator, n: int, towards: Optional[np.ndarray] = None, ambient=(0.3, 0.65),
                  elevation_deg=(15.0, 60.0), spread_deg: float = 75.0) -> Tuple[np.ndarray, np.ndarray]:
    """World light directions (n, 3) (unit, pointing towards the light, y up) and ambient levels (n,).

    The light stands ``elevation_deg`` above the horizon at a random azimuth, or, with ``towards``
    (n, 3) (e.g. from the person to its camera), within +-``spread_deg`` of that direction's azimuth so
    the visible side is lit. Rotate a direction into a camera with ``R @ d`` for the renderer."""
    el = np.deg2rad(rng.uniform(*elevation_deg, n))
    az = rng.uniform(-np.pi, np.pi, n)
    if towards is not None:
        az = np.arctan2(towards[:, 0], towards[:, 2]) + np.deg2rad(spread_deg) * az / np.pi
    d = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)
    return d, rng.uniform(*ambient, n)
