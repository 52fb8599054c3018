"""``smplfast demo``: time the SMPL layer against a pure-PyTorch forward (and smplx when installed),
fit pose and shape to 3D joints through the joints-only path, print tables and write a picture."""
from __future__ import annotations

import math
import os
import time
import warnings
from typing import Callable

import numpy as np
import torch

from . import build_info
from ._backend import describe_build
from .body import SMPL, default_model_path
from .body.reference import smpl_reference_forward


def _time_ms(fn: Callable, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _random_params(B: int, gen: torch.Generator, pose_scale: float = 0.4):
    return dict(
        global_orient=torch.randn(B, 3, generator=gen) * 0.3,
        body_pose=torch.randn(B, 69, generator=gen) * pose_scale,
        betas=torch.randn(B, 10, generator=gen),
        transl=torch.randn(B, 3, generator=gen) * 0.1,
    )


def fit_to_joints(model: SMPL, target_joints: torch.Tensor, iterations: int = 30):
    """Fit pose, shape and translation to 3D joints with L-BFGS through the joints-only path.
    Returns the fitted parameters and the mean joint error (m) after each iteration."""
    B = target_joints.shape[0]
    params = {
        "global_orient": torch.zeros(B, 3, requires_grad=True),
        "body_pose": torch.zeros(B, 69, requires_grad=True),
        "betas": torch.zeros(B, model.num_betas, requires_grad=True),
        "transl": torch.zeros(B, 3, requires_grad=True),
    }
    opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=1, line_search_fn="strong_wolfe", history_size=20,
                            tolerance_grad=0.0, tolerance_change=0.0)
    history = []

    def closure():
        opt.zero_grad()
        joints = model(**params, joints_only=True).joints
        loss = ((joints - target_joints) ** 2).sum(-1).mean() + 1e-4 * (params["betas"] ** 2).mean()
        loss.backward()
        return loss

    for _ in range(iterations):
        opt.step(closure)
        with torch.no_grad():
            err = (model(**params, joints_only=True).joints - target_joints).norm(dim=-1).mean()
        history.append(float(err))
    return {k: v.detach() for k, v in params.items()}, history


def _draw_mesh(ax, verts: np.ndarray, faces: np.ndarray, color, view: str) -> None:
    """Flat-shaded mesh drawn back to front (painter's algorithm) in a front (x, y) or side (z, y) view."""
    from matplotlib.collections import PolyCollection

    if view == "side":  # look along -x: screen x = -z
        verts = np.stack([-verts[:, 2], verts[:, 1], verts[:, 0]], axis=1)
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.4, 1.0])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.abs(normals @ light)
    order = np.argsort(tri[:, :, 2].mean(axis=1))
    colors = np.clip(np.asarray(color)[None, :] * shade[order, None], 0, 1)
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors, edgecolors="none"))
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.axis("off")


def _mesh_views(meshes, faces: np.ndarray, colors, views, size=(280, 190), supersample: int = 2) -> list:
    """Each mesh (V, 3) shaded by :func:`smplfast.render.overlay` on a white image, seen from the front
    (along -z) or from its left side (along -x, screen x = -z), all framed alike from far away
    (nearly orthographic); rendered ``supersample`` times larger and box-filtered for smooth edges."""
    from PIL import Image

    from .render import PerspectiveCamera, overlay

    H, W = size
    Hs, Ws = H * supersample, W * supersample
    meshes = [torch.as_tensor(np.asarray(m), dtype=torch.float64) for m in meshes]
    allv = torch.cat(meshes)
    lo, hi = allv.min(0).values, allv.max(0).values
    centre = 0.5 * (lo + hi)
    ext = (hi - lo).clamp_min(1e-3)
    dist = 20.0 * float(ext.max())
    out = []
    for v, color, view in zip(meshes, colors, views):
        axis, width = ((0.0, 0.0, 1.0), ext[0]) if view == "front" else ((1.0, 0.0, 0.0), ext[2])
        focal = 0.92 * dist * min(Hs / float(ext[1]), Ws / float(width))
        cam = PerspectiveCamera.look_at(eye=centre + dist * torch.tensor(axis, dtype=torch.float64), target=centre,
                                        focal=focal)
        img = overlay(np.full((Hs, Ws, 3), 255, np.uint8), v, faces, cam, color=color, alpha=1.0)
        out.append(np.asarray(Image.fromarray(img).resize((W, H), Image.BOX)))
    return out


def run_demo(out_dir: str = "demo_out", model_path: str | None = None, batch: int = 64, seed: int = 0) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if model_path is None:
        model_path = str(default_model_path())
        model_name = f"bundled default model ({model_path})"
    else:
        model_name = model_path
    model = SMPL(model_path=model_path)
    info = build_info()
    print(f"smplfast {info['version']} | {describe_build(info)} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()}")
    print(f"model: {model_name}\n")

    try:
        import smplx  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_smplx = smplx.SMPL(model_path=model_path)
    except ImportError:
        ref_smplx = None

    # 1. Speed and agreement of the forward pass.
    rows = []
    for B in sorted({1, batch}):
        p = _random_params(B, gen)
        with torch.no_grad():
            ours = model(**p)
            ref_v, ref_j = smpl_reference_forward(model, p["betas"], p["body_pose"], p["global_orient"], p["transl"])
            err = max((ours.vertices - ref_v).abs().max().item(), (ours.joints - ref_j).abs().max().item())
            repeats = 20 if B <= 64 else 5
            row = {
                "batch": B,
                "smplfast_ms": _time_ms(lambda: model(**p), repeats),
                "joints_only_ms": _time_ms(lambda: model(**p, joints_only=True), repeats),
                "pytorch_reference_ms": _time_ms(
                    lambda: smpl_reference_forward(model, p["betas"], p["body_pose"], p["global_orient"], p["transl"]),
                    repeats),
                "max_abs_diff_m": err,
            }
            if ref_smplx is not None:
                row["smplx_ms"] = _time_ms(lambda: ref_smplx(**p), repeats)
                row["max_abs_diff_smplx_m"] = (ref_smplx(**p).vertices - ours.vertices).abs().max().item()
        rows.append(row)
    header = f"{'batch':>6} {'smplfast':>10} {'joints-only':>12} {'torch ref':>10}" + (f" {'smplx':>10}" if ref_smplx else "") + f" {'max |diff| (m)':>15}"
    print("Forward pass, milliseconds (best of repeats)")
    print(header)
    for r in rows:
        line = f"{r['batch']:>6} {r['smplfast_ms']:>10.3f} {r['joints_only_ms']:>12.3f} {r['pytorch_reference_ms']:>10.3f}"
        if ref_smplx is not None:
            line += f" {r['smplx_ms']:>10.3f}"
        line += f" {max(r['max_abs_diff_m'], r.get('max_abs_diff_smplx_m', 0.0)):>15.2e}"
        print(line)

    # 2. Fit pose and shape to the joints of known bodies.
    truth = _random_params(batch, gen)
    with torch.no_grad():
        target = model(**truth)
    t0 = time.perf_counter()
    fitted, history = fit_to_joints(model, target.joints, iterations=100)
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        fit_out = model(**fitted)
    v2v = (fit_out.vertices - target.vertices).norm(dim=-1).mean().item()
    print(f"\nFitting {batch} bodies to their {target.joints.shape[1]} joints (L-BFGS, joints-only path): {fit_s:.2f} s")
    print(f"{'iteration':>10} {'mean joint error (mm)':>22}")
    for it in sorted({0, 9, 29, len(history) - 1}):
        print(f"{it + 1:>10} {history[it] * 1e3:>22.3f}")
    print(f"mean vertex error after the fit: {v2v * 1e3:.2f} mm")

    picture = _write_picture(out_dir, model, target.vertices[0].numpy(), fit_out.vertices[0].numpy(), history)
    smplify = run_smplify_demo(out_dir, model_path, batch, seed) if model_path == str(default_model_path()) else None
    results = {"model": model_name, "forward": rows, "fit_joint_error_mm": [h * 1e3 for h in history],
               "fit_vertex_error_mm": v2v * 1e3, "fit_seconds": fit_s, "picture": picture, "smplify": smplify}
    import json

    with open(os.path.join(out_dir, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    pictures = " and ".join(p for p in (picture, (smplify or {}).get("picture")) if p)
    print(f"\nwrote {pictures} and {os.path.join(out_dir, 'demo_results.json')}")
    return results


def smplify_problem(model: SMPL, batch: int, seed: int, noise_px: float = 1.0):
    """Known bodies (pose and shape samplers) seen by SPIN-style cameras (focal 5000, 224 px crop): SPIN-49
    keypoints with ``noise_px`` pixel noise, and a perturbed initialisation as a regressor would give.
    Returns (init_pose, init_betas, init_cam_t, camera_center, keypoints_2d), the true 3D keypoints
    and the true camera translation."""
    from .body import samplers

    g = torch.Generator().manual_seed(seed)
    pose = samplers.sample_poses(batch, seed=seed)
    flip = samplers.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))  # upright in SPIN's y-down camera
    pose[:, :3] = samplers.matrix_to_axis_angle(flip @ samplers.axis_angle_to_matrix(pose[:, :3]))
    betas = samplers.sample_betas(batch, num_betas=model.num_betas, seed=seed) * 0.7
    scale = 0.8 + 0.2 * torch.rand(batch, generator=g)
    cam_t = torch.stack([0.2 * torch.randn(batch, generator=g), 0.2 * torch.randn(batch, generator=g),
                         2 * 5000.0 / (224 * scale)], 1)
    with torch.no_grad():
        joints = model(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints
    X = joints + cam_t[:, None]
    kp2d = 5000.0 * X[..., :2] / X[..., 2:] + 112.0 + noise_px * torch.randn(X[..., :2].shape, generator=g)
    kp = torch.cat([kp2d, torch.ones_like(kp2d[..., :1])], -1)
    init = (pose + 0.15 * torch.randn(pose.shape, generator=g), betas + 0.5 * torch.randn(betas.shape, generator=g),
            cam_t * torch.tensor([1.0, 1.0, 1.05]), torch.full((batch, 2), 112.0), kp)
    return init, joints, cam_t


def run_smplify_demo(out_dir: str, model_path: str, batch: int, seed: int) -> dict:
    """SMPLify on 2D keypoints: Levenberg–Marquardt against SPIN's Adam procedure on the same problems."""
    from . import metrics
    from .fitting import SMPLify

    model = SMPL(model_path=model_path, keypoints="spin_49")
    args, joints, _ = smplify_problem(model, batch, seed)
    print(f"\nSMPLify: {batch} bodies from 49 keypoints with 1 px noise (SPIN's camera, objective and weights)")
    print(f"{'solver':>8} {'seconds':>9} {'iterations':>11} {'objective':>11} {'PA-MPJPE (mm)':>14}")
    rows = {}
    for name in ("lm", "adam"):
        fitter = SMPLify(model=model, optimizer=name)
        t0 = time.perf_counter()
        res = fitter.fit(*args)
        secs = time.perf_counter() - t0
        err = metrics.pa_mpjpe(res.joints[:, 25:], joints[:, 25:]).mean().item() * 1e3
        rows[name] = {"seconds": secs, "iterations": res.iterations.float().mean().item(),
                      "objective": res.loss.mean().item(), "pa_mpjpe_mm": err}
        print(f"{name:>8} {secs:>9.2f} {rows[name]['iterations']:>11.1f} {rows[name]['objective']:>11.1f} {err:>14.2f}")
        if name == "lm":
            fits = res
    rows["picture"] = _write_smplify_picture(out_dir, model, fits, args[4])
    return rows


def _write_smplify_picture(out_dir: str, model: SMPL, res, keypoints_2d, count: int = 4) -> str:
    """The fitted meshes projected into their 224 px images, with the input keypoints (dots) and the
    fitted keypoints (crosses)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    from .render import PerspectiveCamera, overlay

    count = min(count, res.pose.shape[0])
    fig, axes = plt.subplots(1, count, figsize=(3 * count, 3.2))
    axes = np.atleast_1d(axes)
    white = np.full((224, 224, 3), 255, np.uint8)
    for i, ax in enumerate(axes):
        cam = PerspectiveCamera(translation=res.camera_translation[i].double(), focal=5000.0, center=(112.0, 112.0))
        img = overlay(white, res.vertices[i], model.faces, cam, color=(0.55, 0.7, 0.95), alpha=1.0)
        ax.imshow(img, extent=(0, 224, 224, 0))  # pixel (i, j) covers [j, j+1) x [i, i+1)
        J = res.joints[i] + res.camera_translation[i]
        fitted = (5000.0 * J[:, :2] / J[:, 2:] + 112.0).numpy()
        kp = keypoints_2d[i].numpy()
        ax.scatter(kp[25:, 0], kp[25:, 1], s=10, c="k", label="input keypoints")
        ax.scatter(fitted[25:, 0], fitted[25:, 1], s=14, c="r", marker="x", linewidths=0.8, label="fit")
        ax.set_xlim(0, 224)
        ax.set_ylim(224, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("SMPLify (Levenberg–Marquardt) fits over their 224 px crops")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "smplify.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_picture(out_dir: str, model: SMPL, target_verts: np.ndarray, fit_verts: np.ndarray, history) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the demo's picture needs matplotlib: pip install 'smplfast[viz]'") from exc
    faces = np.asarray(model.faces, dtype=np.int64)
    fig, axes = plt.subplots(1, 5, figsize=(17, 4.6), gridspec_kw=dict(width_ratios=[1, 1, 1, 1, 1.6]))
    blue, orange = (0.55, 0.65, 0.85), (0.9, 0.6, 0.45)
    images = _mesh_views([target_verts, fit_verts, target_verts, fit_verts], faces, [blue, orange, blue, orange],
                         ["front", "front", "side", "side"])
    for ax, img, title in zip(axes, images, ["target (front)", "fit (front)", "target (side)", "fit (side)"]):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    ax = axes[4]
    ax.semilogy(np.arange(1, len(history) + 1), np.asarray(history) * 1e3, marker="o", ms=3)
    ax.set_xlabel("L-BFGS iteration")
    ax.set_ylabel("mean joint error (mm)")
    ax.set_title("convergence")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "demo.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
