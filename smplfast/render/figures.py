"""The rendering pictures of the docs: ``python -m smplfast.render.figures --out docs/images``.

``render_maps.png``: one posed body of the bundled default model, its silhouette, DensePose parts,
6-part LSP segmentation, IUV, depth, normals, shaded colours and an overlay, side by side.
Needs matplotlib.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .camera import PerspectiveCamera
from .maps import LSP6_PART_NAMES, BodyRenderer, default_part_colors, iuv_to_uint8
from .overlay import overlay


def _background(H: int, W: int) -> np.ndarray:
    """A soft vertical gradient with a light checkerboard: something to overlay on."""
    rows = np.linspace(0.0, 1.0, H)[:, None, None]
    top, bottom = np.array([235.0, 228.0, 210.0]), np.array([150.0, 160.0, 175.0])
    img = top * (1 - rows) + bottom * rows
    checker = ((np.arange(H)[:, None] // 16 + np.arange(W)[None, :] // 16) % 2)[..., None]
    return np.clip(img - 12.0 * checker, 0, 255).astype(np.uint8)


def render_maps_figure(path, image_size=(320, 240), seed: int = 5, dpi: int = 110) -> Path:
    """Render one sampled pose of the default model and draw all its maps in one row; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from ..body import SMPL, samplers

    model = SMPL()
    pose = samplers.sample_poses(1, family="walking", seed=seed, yaw_range=(0.5, 0.5), max_tilt_deg=0.0)
    betas = samplers.sample_betas(1, num_betas=model.num_betas, seed=seed)
    with torch.no_grad():
        out = model(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
    v = out.vertices.double()
    centre = 0.5 * (v[0].min(0).values + v[0].max(0).values)
    H, W = image_size
    height = float(v[0, :, 1].max() - v[0, :, 1].min())
    dist = 4.0
    focal = 0.85 * H * dist / height
    cam = PerspectiveCamera.look_at(eye=centre + torch.tensor([0.0, 0.3, dist], dtype=torch.float64),
                                    target=centre, focal=focal)
    renderer = BodyRenderer.from_model(model)
    t0 = time.perf_counter()
    maps = renderer.render(v, cam, (H, W))
    bg = _background(H, W)
    over = overlay(bg, v[0], renderer.faces, cam)
    seconds = time.perf_counter() - t0

    pc = default_part_colors()
    parts_cmap = ListedColormap(np.concatenate([[[1.0, 1.0, 1.0]], pc[1:]]))
    six = np.array([[1, 1, 1], [0.95, 0.75, 0.3], [0.55, 0.55, 0.85], [0.9, 0.35, 0.3],
                    [0.95, 0.6, 0.55], [0.25, 0.6, 0.35], [0.55, 0.85, 0.5]])
    sil = maps["silhouette"][0].numpy()
    depth = maps["depth"][0].numpy()
    depth_img = np.where(sil, depth, np.nan)
    # colour (x right, y up, z towards the viewer) of the camera-frame normals (x right, y down, z forward)
    normals = np.where(sil[..., None], 0.5 + 0.5 * maps["normals"][0].numpy() * np.array([1.0, -1.0, -1.0]), 1.0)
    iuv = iuv_to_uint8(maps["iuv"][0]).astype(np.float64) / 255.0
    iuv[..., 0] = maps["iuv"][0, ..., 0].numpy() / 24.0
    iuv[~sil] = 1.0
    rgb = np.where(sil[..., None], maps["rgb"][0].numpy(), 1.0)

    panels = [
        ("silhouette", dict(X=sil, cmap="gray_r")),
        ("DensePose parts (1-24)", dict(X=maps["parts"][0].numpy(), cmap=parts_cmap, vmin=0, vmax=24,
                                        interpolation="nearest")),
        ("6 LSP parts", dict(X=maps["parts6"][0].numpy(), cmap=ListedColormap(six), vmin=0, vmax=6,
                             interpolation="nearest")),
        ("IUV (I/24, U, V)", dict(X=iuv)),
        ("depth (m)", dict(X=depth_img, cmap="viridis_r")),
        ("normals (camera frame)", dict(X=normals)),
        ("rgb: part colours, Lambert", dict(X=rgb)),
        ("overlay", dict(X=over)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels) * W / H + 0.4, 3.3))
    for ax, (title, kw) in zip(axes, panels):
        im = ax.imshow(kw.pop("X"), **kw)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if title.startswith("depth"):
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=6)
    labels = ", ".join(f"{k + 1} {n}" for k, n in enumerate(LSP6_PART_NAMES))
    fig.suptitle(f"smplfast.render: one body of the default model, {W}x{H} pixels (6 LSP parts: {labels})",
                 fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path} (maps and overlay rendered in {seconds:.1f} s)")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the rendering pictures of the docs")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    render_maps_figure(args.out / "render_maps.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
