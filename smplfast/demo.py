"""``smplfast demo``: time the SMPL layer against a pure-PyTorch forward (and smplx when installed),
fit pose and shape to the 3D joints of plausible bodies with per-body Levenberg–Marquardt through the
joints-only path, print tables and write a picture."""
from __future__ import annotations

import math
import os
import time
import warnings
from typing import Callable

import numpy as np
import torch

from ._backend import build_info, describe_build
from .body import SMPL, default_model_path
from .body.reference import smpl_reference_forward


def _time_ms(fn: Callable, repeats: int) -> float:
    """Median wall time (ms) of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _busy_warning() -> str:
    """A warning when other processes load the machine (timings then inflate), else ''."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return ""
    cores = os.cpu_count() or 1
    if load > 0.75 * cores:
        return (f"warning: the machine is busy (load average {load:.1f} on {cores} cores); timings are inflated, "
                "rerun on a quiet machine for representative numbers")
    return ""


def _random_params(B: int, gen: torch.Generator, pose_scale: float = 0.4):
    return dict(
        global_orient=torch.randn(B, 3, generator=gen) * 0.3,
        body_pose=torch.randn(B, 69, generator=gen) * pose_scale,
        betas=torch.randn(B, 10, generator=gen),
        transl=torch.randn(B, 3, generator=gen) * 0.1,
    )


def _plausible_params(B: int, seed: int, num_betas: int = 10):
    """Bodies a person could take: the pose and shape samplers (every pose family, all yaws)."""
    from .body import samplers

    pose = samplers.sample_poses(B, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return dict(global_orient=pose[:, :3], body_pose=pose[:, 3:],
                betas=samplers.sample_betas(B, num_betas=num_betas, seed=seed),
                transl=torch.randn(B, 3, generator=g) * 0.1)


def fit_to_joints(model: SMPL, target_joints: torch.Tensor, iterations: int = 30, betas_weight: float = 1e-3,
                  restarts: int = 4, tol: float = 2e-3):
    """Fit pose, shape and translation to 3D joints (B, J, 3) with smplfast's batched Levenberg–Marquardt:
    every body is its own least-squares problem (residuals: joint differences, plus ``betas_weight · β``)
    with its own damping and stopping test, so one hard body does not hold the others back. The Jacobian
    comes from one batched backward pass through the joints-only path per evaluation. The start is the
    rest pose rigidly aligned to the target's torso; bodies still above ``tol`` (RMS joint error, m)
    are fitted again from up to ``restarts`` plausible poses of the pose sampler (a bent limb can stall in
    a twisted local minimum from the rest pose), keeping each body's best fit.

    Returns the fitted parameters and, per iteration of the first pass, the root-mean-square joint error
    (m) over the batch."""
    from .fitting.lm import LMOptions, levenberg_marquardt

    B, J = target_joints.shape[:2]
    nb = model.num_betas
    target = target_joints.detach().to(model.v_template.dtype)

    def residuals(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        joints = model(global_orient=x[:, :3], body_pose=x[:, 3:72], betas=x[:, 72:72 + nb], transl=x[:, 72 + nb:],
                       joints_only=True).joints
        return torch.cat([(joints - target[rows]).reshape(len(rows), -1), betas_weight * x[:, 72:72 + nb]], dim=1)

    def evaluate(x, rows):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            r = residuals(x, rows)
            R = r.shape[1]
            basis = torch.eye(R, dtype=r.dtype).unsqueeze(1).expand(R, r.shape[0], R)
            (jac,) = torch.autograd.grad(r, x, basis, is_grads_batched=True)  # (R, b, n)
        jac = jac.permute(1, 0, 2)
        r = r.detach()
        return (r * r).sum(1), jac.transpose(1, 2) @ jac, (jac.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)

    # Start: the rest pose rotated onto the target's torso (the rotation of the least-squares similarity
    # transform), so a body facing away from the camera does not start 180 degrees off.
    from .body.samplers import sample_poses
    from .geometry import matrix_to_axis_angle
    from .metrics import similarity_transform

    x0 = torch.zeros(B, 72 + nb + 3, dtype=target.dtype)
    with torch.no_grad():
        rest = model(betas=x0[:1, 72:72 + nb], joints_only=True).joints[0]
    torso = [0, 1, 2, 3, 6, 9, 12, 16, 17]  # pelvis, hips, spine, neck, shoulders
    a, b = rest[torso], target[:, torso]
    ca, cb = a.mean(0), b.mean(1)
    _, R, _ = similarity_transform(a.expand_as(b), b)

    x0[:, :3] = matrix_to_axis_angle(R)
    j0 = rest[0]
    x0[:, 72 + nb:] = cb - (R @ ca) + (R @ j0) - j0  # SMPL rotates about the root joint J0
    res = levenberg_marquardt(evaluate, x0, LMOptions(max_iters=iterations, record_history=True))
    x, best = res.x.clone(), res.objective.clone()
    history = [float((f.clamp_min(0) / J).mean().sqrt()) for _, f in res.history]

    for k in range(restarts):
        rows = torch.nonzero((best / J).sqrt() > tol).flatten()
        if rows.numel() == 0:
            break
        start = x0[rows].clone()
        start[:, 3:72] = sample_poses(len(rows), seed=1000 + k)[:, 3:].to(start.dtype)
        again = levenberg_marquardt(lambda xr, r: evaluate(xr, rows[r]), start, LMOptions(max_iters=iterations))
        better = again.objective < best[rows]
        x[rows[better]] = again.x[better]
        best[rows[better]] = again.objective[better]
    params = {"global_orient": x[:, :3], "body_pose": x[:, 3:72], "betas": x[:, 72:72 + nb], "transl": x[:, 72 + nb:]}
    history.append(float((best.clamp_min(0) / J).mean().sqrt()))  # after the restarts
    return params, history


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
    busy = _busy_warning()
    if busy:
        print(busy + "\n")

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
    print(f"Forward pass, milliseconds (median of repeats, {torch.get_num_threads()} threads)")
    print(header)
    for r in rows:
        line = f"{r['batch']:>6} {r['smplfast_ms']:>10.3f} {r['joints_only_ms']:>12.3f} {r['pytorch_reference_ms']:>10.3f}"
        if ref_smplx is not None:
            line += f" {r['smplx_ms']:>10.3f}"
        line += f" {max(r['max_abs_diff_m'], r.get('max_abs_diff_smplx_m', 0.0)):>15.2e}"
        print(line)

    # 2. Fit pose and shape to the joints of known, plausible bodies.
    truth = _plausible_params(batch, seed, model.num_betas)
    with torch.no_grad():
        target = model(**truth)
    t0 = time.perf_counter()
    fitted, history = fit_to_joints(model, target.joints, iterations=50)
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        fit_out = model(**fitted)
    per_body = (fit_out.joints - target.joints).norm(dim=-1).mean(dim=1)
    v2v = (fit_out.vertices - target.vertices).norm(dim=-1).mean().item()
    print(f"\nFitting {batch} bodies to their {target.joints.shape[1]} joints (Levenberg–Marquardt per body, "
          f"joints-only path): {fit_s:.2f} s")
    print(f"{'LM iteration':>12} {'RMS joint error (mm)':>21}")
    for it in sorted({0, 4, 9, len(history) - 2}):
        print(f"{it:>12} {history[it] * 1e3:>21.3f}")
    print(f"{'restarts':>12} {history[-1] * 1e3:>21.3f}")
    print(f"mean joint error per body after the fit: median {per_body.median().item() * 1e3:.2f} mm, "
          f"worst {per_body.max().item() * 1e3:.2f} mm; mean vertex error {v2v * 1e3:.2f} mm")

    show = int(truth["body_pose"].norm(dim=1).argmax())  # the most articulated body of the batch
    picture = _write_picture(out_dir, model, target.vertices[show].numpy(), fit_out.vertices[show].numpy(), history)
    smplify = run_smplify_demo(out_dir, model_path, batch, seed) if model_path == str(default_model_path()) else None
    results = {"model": model_name, "threads": torch.get_num_threads(), "busy_warning": busy, "forward": rows,
               "fit_rms_joint_error_mm": [h * 1e3 for h in history],
               "fit_worst_body_joint_error_mm": per_body.max().item() * 1e3,
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
    ax.semilogy(np.arange(len(history) - 1), np.asarray(history[:-1]) * 1e3, marker="o", ms=3, label="first pass")
    ax.axhline(history[-1] * 1e3, color="C1", ls="--", label="after restarts")
    ax.legend()
    ax.set_xlabel("Levenberg–Marquardt iteration")
    ax.set_ylabel("RMS joint error over the batch (mm)")
    ax.set_title("convergence")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "demo.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
