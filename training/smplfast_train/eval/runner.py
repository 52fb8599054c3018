"""Run a network over a split folder and compute the evaluation protocol's metrics (eval/metrics.py).

:func:`evaluate_model` reads ``DIR/synth_spin.npz`` with :class:`smplfast.data.SPINDataset`
(``is_train=False``: the plain crop), runs the network in eval mode without gradients, and scores its
output with the ground truth of the file, whether or not the file marks it as usable for training
(``has_smpl`` / ``has_pose_3d`` may be 0 on wild splits; evaluation reads the values regardless).

The network's weak-perspective camera ``[s, tx, ty]`` becomes a translation with SPIN's convention,
:func:`smplfast.fitting.weak_perspective_to_translation` (f = ``focal_length`` = 5000 px at the crop
resolution ``img_res``, principal point at the crop centre); that camera renders the predicted mesh
for the segmentation scores and projects its ``spin_24`` joints for the 2D PCK, which is compared with
the exact projections ``part_gt`` (``keypoints_gt[:, 25:]``, visible joints only).
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from .metrics import (
    MESH_METRICS,
    METRIC_UNITS,
    keypoint_2d_pck,
    load_eval_models,
    mesh_metrics,
    segmentation_metrics,
    segmentation_scores,
)

__all__ = ["SPLIT_FILE", "resolve_split", "load_crop_parts24", "evaluate_model", "format_table", "TABLE_COLUMNS"]

#: The file a split folder must hold.
SPLIT_FILE = "synth_spin.npz"
#: A rig folder's file, and the single-view copy of its views that evaluation writes next to it.
RIG_FILE = "synth_mvspin.npz"
RIG_VIEWS_FILE = "synth_spin_views.npz"

#: Columns of :func:`format_table`, in order (those missing from every result are left out).
TABLE_COLUMNS = ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "rot_err", "pck150", "auc", "pa_pck150", "pa_auc",
                 "pck2d", "fb_acc", "fb_f1", "parts_acc", "parts_f1")


def finite_means(per_sample: Dict[str, list]) -> Tuple[Dict[str, float], Dict[str, int]]:
    """Per metric, the mean over the finite per-sample values (NaN when there is none) and the number of
    non-finite ones (broken predictions are counted, not averaged in)."""
    mean: Dict[str, float] = {}
    num_nan: Dict[str, int] = {}
    for k, v in per_sample.items():
        a = np.asarray(v, dtype=np.float64)
        finite = np.isfinite(a)
        num_nan[k] = int((~finite).sum())
        mean[k] = float(a[finite].mean()) if finite.any() else float("nan")
    return mean, num_nan


def evaluate_per_sample(model: torch.nn.Module, ds, name: str, n: int, batch_size: int, units: Mapping[str, str],
                        score) -> Dict[str, object]:
    """The first ``n`` items of ``ds`` in batches of ``batch_size`` through ``score(items) -> {metric: per-sample
    list}``, without gradients and with ``model`` in eval mode (its mode restored afterwards), as an
    evaluation record ``{"split", "num", "sample_index", "per_sample", "mean", "units", "num_nan", "time_s"}``
    (metrics in the order of ``units``)."""
    per = {k: [] for k in units}
    was = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            for s in range(0, n, batch_size):
                for k, v in score([ds[i] for i in range(s, min(n, s + batch_size))]).items():
                    per[k] += v
    finally:
        model.train(was)
    mean, num_nan = finite_means(per)
    return {"split": name, "num": n, "sample_index": list(range(n)), "per_sample": per, "mean": mean,
            "units": dict(units), "num_nan": num_nan, "time_s": {"total": time.perf_counter() - t0}}


def resolve_split(split_dir) -> tuple:
    """``(npz_path, image_root, name)`` of a split folder (or of an npz file inside one).
    A rig folder (:data:`RIG_FILE` only) is evaluated view by view: its views are written once as the
    single-view :data:`RIG_VIEWS_FILE` next to it. A folder with neither raises FileNotFoundError."""
    p = os.path.abspath(os.fspath(split_dir))
    if os.path.isfile(p) and p.endswith(".npz"):
        root = os.path.dirname(p)
        return p, root, os.path.basename(root)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"split folder not found: {p!r} (expected a folder made by `smplfast synth` "
                                f"holding {SPLIT_FILE})")
    npz = os.path.join(p, SPLIT_FILE)
    rig = os.path.join(p, RIG_FILE)
    if not os.path.isfile(npz) and os.path.isfile(rig):
        # A rig: every view is evaluated as a single image (the networks are single-view).
        npz = os.path.join(p, RIG_VIEWS_FILE)
        if not os.path.isfile(npz) or os.path.getmtime(npz) < os.path.getmtime(rig):
            from smplfast.data import views_as_samples

            views_as_samples(rig, npz)
    if not os.path.isfile(npz):
        raise FileNotFoundError(f"split folder {p!r} has no {SPLIT_FILE} (expected a folder made by `smplfast synth`, "
                                f"single-view, or a rig holding {RIG_FILE})")
    return npz, p, os.path.basename(p.rstrip(os.sep))


def load_crop_parts24(dataset, index: int) -> np.ndarray:
    """The DensePose part image (``partname``, indices 0..24) of sample ``index`` warped into the
    evaluation crop of ``dataset`` (a :class:`smplfast.data.SPINDataset` with ``is_train=False``) with
    nearest sampling: (img_res, img_res) int64 (0 outside the image)."""
    from smplfast.data.crop import crop_matrix, warp_image

    if dataset.is_train:
        raise ValueError("load_crop_parts24 needs an is_train=False dataset (the plain crop)")
    name = str(dataset.data["partname"][index])
    if not name:
        raise ValueError(f"{dataset.dataset_name}: sample {index} has no partname (needed for the part scores)")
    path = os.path.join(dataset.img_dir, name)
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{dataset.dataset_name}: cannot read the part image {path!r} of sample {index}: "
                                f"{e}") from e
    if img.mode not in ("L", "P", "I", "I;16"):
        img = img.getchannel(0)
    elif img.mode != "L":
        img = Image.fromarray(np.asarray(img).astype(np.uint8), mode="L")
    res = dataset.img_res
    M = crop_matrix(dataset.data["center"][index], float(dataset.data["scale"][index]), res, 0.0, False)
    return np.asarray(warp_image(img, M, res, resample="nearest", fill=0)).astype(np.int64)


def _spin24_joints(rotmat: torch.Tensor, betas: torch.Tensor, models) -> torch.Tensor:
    """The ``spin_24`` joints (B, 24, 3) of the neutral model (the joints of ``part_gt``)."""
    if "neutral_spin24" not in models:
        raise ValueError("evaluate_model needs models['neutral_spin24'] (load_eval_models(keypoints_2d=True))")
    m = models["neutral_spin24"]
    dtype, device = m.v_template.dtype, m.v_template.device
    R = rotmat.to(device=device, dtype=dtype)
    return m(betas=betas.to(device=device, dtype=dtype), global_orient=R[:, :1], body_pose=R[:, 1:],
             pose2rot=False, joints_only=True).joints


def _project_crop(joints: torch.Tensor, transl: torch.Tensor, focal_length: float, img_res: int) -> torch.Tensor:
    """SPIN's projection of camera-frame points (joints + transl) with f at the crop centre, in
    normalised crop units (2 q / res - 1)."""
    X = joints + transl[:, None, :]
    return focal_length * X[..., :2] / X[..., 2:3] / (img_res / 2.0)


def evaluate_model(model: torch.nn.Module, split_dir, *, img_res: int, batch_size: int = 64,
                   max_samples: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                   segmentation: bool = True, focal_length: float = 5000.0, models=None, renderer=None,
                   progress: bool = False) -> Dict[str, object]:
    """Evaluate ``model`` on the split folder ``split_dir``.

    Args:
        model: a module whose ``forward(img (B, 3, R, R))`` returns an object with ``.rotmat``
            (B, 24, 3, 3), ``.betas`` (B, 10), ``.cam`` (B, 3) weak perspective ``[s, tx, ty]``
            (:class:`smplfast_train.heads.hmr.HMROutput`). It runs in eval mode without gradients;
            its train/eval mode is restored afterwards.
        split_dir: a folder holding ``synth_spin.npz`` (``smplfast synth --split ...``).
        img_res: crop side the network expects.
        batch_size, max_samples: batching; the first ``max_samples`` samples (all by default).
        device: where the network and the metric models run.
        segmentation: render and score silhouettes and parts (needs ``masks/`` and ``parts/``).
        focal_length: the crop camera's focal length in pixels at ``img_res`` (SPIN: 5000).
        models, renderer: reuse :func:`~smplfast_train.eval.metrics.load_eval_models` /
            ``BodyRenderer.from_model()`` across calls (built when None).
        progress: print one line per batch.

    Returns:
        ``{"split": name, "num": n, "sample_index": [...], "per_sample": {metric: [float, ...]},
        "mean": {metric: float}, "units": {metric: unit}, "time_s": {...}}``, plus with segmentation
        ``"confusion": {"fb": [[2x2], ...], "parts": [[7x7], ...]}`` per sample and the
        dataset-accumulated ``fb_acc``, ``fb_f1``, ``parts_acc``, ``parts_f1`` in ``mean`` (SPIN's
        scores; the per-sample ``fb_acc`` / ``parts_acc`` are for paired comparisons). Per-sample
        means ignore NaN (broken predictions) and ``num_nan`` counts them per metric.
    """
    from smplfast.data import SPINDataset
    from smplfast.fitting import weak_perspective_to_translation
    from smplfast.render import BodyRenderer, PerspectiveCamera

    npz, root, name = resolve_split(split_dir)
    img_res = int(img_res)
    if img_res <= 0:
        raise ValueError(f"img_res must be > 0; got {img_res}")
    ds = SPINDataset(npz, root, is_train=False, img_res=img_res, load_masks=bool(segmentation))
    if "pose" not in ds.present:
        raise ValueError(f"{npz}: no SMPL ground truth ('pose' / 'shape'); the 3D metrics need it")
    if segmentation and "partname" not in ds.present:
        raise ValueError(f"{npz}: segmentation needs 'partname' (the parts/ images); pass segmentation=False")
    n = len(ds) if max_samples is None else min(len(ds), int(max_samples))
    if n <= 0:
        raise ValueError(f"{npz}: no sample to evaluate (max_samples={max_samples}, {len(ds)} samples)")
    loader = DataLoader(Subset(ds, range(n)), batch_size=int(batch_size), shuffle=False, num_workers=0)
    device = torch.device(device)
    if models is None:
        models = load_eval_models(device=device)
    if segmentation and renderer is None:
        renderer = BodyRenderer.from_model()

    per_sample: Dict[str, list] = {k: [] for k in MESH_METRICS + ("pck2d",)}
    if segmentation:
        per_sample.update(fb_acc=[], parts_acc=[])
    conf_fb, conf_parts, indices = [], [], []
    t_net = t_metrics = t_seg = t_data = 0.0
    was_training = model.training
    model.eval()
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            for bi, batch in enumerate(loader):
                t_data += time.perf_counter() - t0
                t0 = time.perf_counter()
                out = model(batch["img"].to(device))
                rotmat, betas, cam = out.rotmat.detach(), out.betas.detach(), out.cam.detach()
                t_net += time.perf_counter() - t0

                t0 = time.perf_counter()
                mm = mesh_metrics(rotmat, betas, batch["pose"], batch["betas"], batch["gender"], models,
                                  return_bodies=True)
                for k in MESH_METRICS:
                    per_sample[k].extend(mm[k].cpu().tolist())
                dtype = models["neutral"].v_template.dtype
                pv = mm["pred_vertices"]
                j24 = _spin24_joints(rotmat, betas, models)
                transl = weak_perspective_to_translation(cam.to(dtype), focal_length, img_res)
                p2d = _project_crop(j24, transl, float(focal_length), img_res)
                gt2d = batch["keypoints_gt"][:, 25:].to(device=device, dtype=dtype)   # part_gt (spin_24)
                vis = (gt2d[..., 2] > 0) & batch["has_keypoints_gt"].to(device)[:, None]
                per_sample["pck2d"].extend(keypoint_2d_pck(p2d, gt2d, mask=vis).cpu().tolist())
                t_metrics += time.perf_counter() - t0

                if segmentation:
                    t0 = time.perf_counter()
                    idx = batch["sample_index"].tolist()
                    parts24 = torch.from_numpy(np.stack([load_crop_parts24(ds, i) for i in idx]))
                    camera = PerspectiveCamera.crop_camera(transl, float(focal_length), img_res)
                    verts = torch.where(torch.isfinite(transl).all(dim=1)[:, None, None], pv,
                                        torch.full_like(pv, float("nan")))
                    seg = segmentation_metrics(verts, camera, batch["mask"].to(device), parts24.to(device), renderer)
                    per_sample["fb_acc"].extend(seg["fb_acc"].cpu().tolist())
                    per_sample["parts_acc"].extend(seg["parts_acc"].cpu().tolist())
                    conf_fb.append(seg["fb_confusion"].cpu())
                    conf_parts.append(seg["parts_confusion"].cpu())
                    t_seg += time.perf_counter() - t0
                indices.extend(batch["sample_index"].tolist())
                if progress:
                    print(f"[{name}] batch {bi + 1}/{len(loader)}", flush=True)
                t0 = time.perf_counter()
    finally:
        model.train(was_training)
    total = time.perf_counter() - t_start

    mean, num_nan = finite_means(per_sample)
    result: Dict[str, object] = {"split": name, "npz": npz, "num": n, "img_res": img_res,
                                 "focal_length": float(focal_length), "sample_index": indices}
    if segmentation:
        fb = torch.cat(conf_fb)
        parts = torch.cat(conf_parts)
        s_fb, s_parts = segmentation_scores(fb), segmentation_scores(parts)
        # SPIN's scores come from the accumulated counts (equal to the mean of the per-sample
        # accuracies here, since every crop has img_res² pixels).
        mean.update(fb_acc=s_fb["acc"], fb_f1=s_fb["f1"], parts_acc=s_parts["acc"], parts_f1=s_parts["f1"])
        result["f1_per_class"] = {"fb": s_fb["f1_per_class"], "parts": s_parts["f1_per_class"]}
        result["confusion"] = {"fb": fb.tolist(), "parts": parts.tolist()}
    result.update(
        per_sample=per_sample,
        mean=mean,
        num_nan=num_nan,
        units={k: METRIC_UNITS[k] for k in mean},
        time_s={"total": total, "data": t_data, "network": t_net, "metrics": t_metrics, "segmentation": t_seg,
                "per_sample": total / n},
    )
    return result


def _fmt(v, column: str) -> str:
    if v is None or not math.isfinite(float(v)):
        return "nan"
    return f"{v:.3f}" if METRIC_UNITS.get(column) == "0-1" else f"{v:.2f}"


def format_table(results_by_split: Union[Mapping[str, Mapping], Sequence[Mapping]],
                 columns: Optional[Sequence[str]] = None) -> str:
    """A markdown table of the ``mean`` values: one row per split, one column per metric (with its
    unit). ``results_by_split``: {name: result of :func:`evaluate_model`} or a list of results."""
    if isinstance(results_by_split, Mapping):
        rows = list(results_by_split.items())
    else:
        rows = [(str(r.get("split", i)), r) for i, r in enumerate(results_by_split)]
    if columns is None:
        present = set()
        for _, r in rows:
            present.update(r.get("mean", {}))
        columns = [c for c in TABLE_COLUMNS if c in present]
    head = ["split", "n"] + [f"{c} ({METRIC_UNITS.get(c, '')})" for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, r in rows:
        m = r.get("mean", {})
        cells = [str(name), str(r.get("num", ""))] + [_fmt(m.get(c), c) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
