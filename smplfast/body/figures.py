"""Pictures of the bundled default body model for the docs.

``python -m smplfast.body.figures --out docs/images`` draws the model in
several shapes and poses (front and side), its keypoints, and its DensePose
charts.  Needs matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .smpl import SMPL


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the figures need matplotlib: pip install 'smplfast[viz]'") from exc
    return plt


def shapes_and_poses(path: Path, model_path=None, gender: str = "neutral") -> Path:
    """Front and side views of the model: mean, +-2 sigma of betas 1-2, and sampled poses."""
    from .plot import draw_mesh
    from .samplers import sample_poses

    plt = _pyplot()
    model = SMPL(model_path=model_path, gender=gender)
    faces = np.asarray(model.faces, dtype=np.int64)
    cases = [("mean shape", 0, 0.0)]
    cases += [(f"beta{k + 1} = {s:+.0f}", k, s) for k in (0, 1) for s in (-2.0, 2.0)]
    poses = sample_poses(4, family=["walking", "sitting", "reaching", "arms_raised"], seed=3, max_tilt_deg=0.0,
                         yaw_range=(0.0, 0.0))
    fig, axes = plt.subplots(2, len(cases) + len(poses), figsize=(2.1 * (len(cases) + len(poses)), 7.2))
    with torch.no_grad():
        for c, (title, k, s) in enumerate(cases):
            betas = torch.zeros(1, model.num_betas)
            betas[0, k] = s
            v = model(betas=betas).vertices[0].numpy()
            draw_mesh(axes[0, c], v, faces, (0.55, 0.65, 0.85), "front")
            draw_mesh(axes[1, c], v, faces, (0.55, 0.65, 0.85), "side")
            axes[0, c].set_title(f"{title}\n{v[:, 1].max() - v[:, 1].min():.2f} m", fontsize=9)
        for i in range(len(poses)):
            c = len(cases) + i
            v = model(global_orient=poses[i:i + 1, :3], body_pose=poses[i:i + 1, 3:]).vertices[0].numpy()
            draw_mesh(axes[0, c], v, faces, (0.9, 0.6, 0.45), "front")
            draw_mesh(axes[1, c], v, faces, (0.9, 0.6, 0.45), "side")
            axes[0, c].set_title(f"sampled pose {i + 1}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def keypoints(path: Path, model_path=None) -> Path:
    """The model's OpenPose BODY_25 and SPIN ground-truth keypoints over the mean shape."""
    from .plot import draw_mesh
    from .keypoints import keypoint_names

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 7), gridspec_kw=dict(width_ratios=[1, 0.55, 1]))
    with torch.no_grad():
        model = SMPL(model_path=model_path, keypoints="spin_49")
        out = model()
    v, k = out.vertices[0].numpy(), out.joints[0].numpy()
    faces = np.asarray(model.faces, dtype=np.int64)
    names = keypoint_names("spin_49")
    for ax, view in ((axes[0], "front"), (axes[1], "side")):
        draw_mesh(ax, v, faces, (0.8, 0.8, 0.8), view)
        x = k[:, 0] if view == "front" else -k[:, 2]
        ax.scatter(x[:25], k[:25, 1], s=14, c="tab:red", zorder=3, label="OpenPose BODY_25")
        ax.scatter(x[25:], k[25:, 1], s=14, c="tab:blue", marker="x", zorder=3, label="SPIN ground-truth 24")
    axes[0].legend(loc="lower center", fontsize=8)
    # Head close-up with labels.
    ax = axes[2]
    draw_mesh(ax, v, faces, (0.8, 0.8, 0.8), "front")
    head = k[:, 1] > k[names.index("neck_lsp"), 1] - 0.02
    for i in np.flatnonzero(head):
        ax.scatter(k[i, 0], k[i, 1], s=16, c="tab:red" if i < 25 else "tab:blue", zorder=3)
        ax.annotate(names[i], (k[i, 0], k[i, 1]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    top = v[:, 1].max()
    ax.set_xlim(-0.15, 0.15)
    ax.set_ylim(top - 0.32, top + 0.02)
    ax.set_title("head keypoints")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def charts(path: Path, model_path=None) -> Path:
    """The 24 DensePose charts stored with the model."""
    from .charts import SurfaceCharts, plot_charts
    from .default_model import default_model_path
    from .model_file import load_model

    data = load_model(model_path or default_model_path())
    return plot_charts(SurfaceCharts.from_npz_dict(data.extras), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the default body model's pictures")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--model", default=None, help="model file (default: the bundled one)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for p in (shapes_and_poses(args.out / "default_model.png", args.model),
              keypoints(args.out / "default_model_keypoints.png", args.model),
              charts(args.out / "default_model_charts.png", args.model)):
        print("wrote", p)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
