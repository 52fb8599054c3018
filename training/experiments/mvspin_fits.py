"""MV-SPIN M1: fit quality of single-view, multi-view and calibrated multi-view SMPLify on the rig split.

    python training/experiments/mvspin_fits.py --data data/synth/rig_train \
        --ckpt runs/spin_ablation/spin_pretrain_lab/ckpt/last.pt --pose-prior data/synth/gmm_lab.npz \
        --num 300 --out-json docs/results/mvspin_fits.json --out-md docs/results/mvspin_fits.md \
        --figure docs/images/mvspin_fits.jpg

For the first ``--num`` people of the rig (every view, unaugmented), three fitters (SPIN's SMPLify, LM,
GMM prior ``--pose-prior``) start from two initialisation sources:

* ``net``: the lab-pretrained SPIN regressor ``--ckpt`` run on each view's crop;
* ``perturbed``: the ground truth plus noise, independent per view (axis-angle N(0, 0.15 rad) added to
  every component of the global orientation and the body pose, betas + N(0, 0.5)), the translation
  by :func:`estimate_translation` of the noisy body on the keypoints.

Methods: ``SV`` fits each view alone; ``MV`` (MV-SPIN, ``calibrated=False``) shares body pose and betas
across a person's views, each view keeping its own orientation and translation; both work in SPIN's
virtual 224-px crop (f = 5000, principal point at the centre). ``CAL`` (``calibrated=True``) knows the
rig: the true crop intrinsics scaled to 224 px, the world -> camera extrinsics, one world orientation
and translation. ``init`` is the initialisation itself. Every view's result is scored against that
view's camera-frame ground truth (CAL's world orientation is taken to each camera, R_c R_w); the
claims MV < SV and CAL < MV are paired differences over view-samples, with the bootstrap CI also
computed over people (the views of one person are not independent: MV and CAL give them one body
pose); a difference counts as resolved when both CIs lie below 0.

``--figure PATH`` also writes a PNG (drawn after the scoring, it changes no number): two people of
the ``net`` initialisation, those at the median and at the 80th percentile of SV's PA-MPJPE (mean
over the person's views; rank round(q (n - 1)) of the stable sort), side by side; per person one
column per view and the rows crop, ground-truth mesh, SV, MV and CAL fit over the crop, each fit
tile labelled with that view's PA-MPJPE. The crops are the rig's unaugmented crops at
:data:`TILE` px. The GT (its gender's model) and CAL (neutral model) meshes are posed in the world
(world orientation, body pose, betas, world translation) and drawn through the rig: each view's
world -> camera ``cam_rot`` / ``cam_transl`` and its true crop intrinsics ``cam_K``, so their overlay
is exact. SV and MV are drawn as they were fitted: each view's own camera-frame pose and fitted
translation in SPIN's virtual crop camera (f = 5000 at 224 px, principal point at the crop centre),
the focal scaled to the tile size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("init", "SV", "MV", "CAL")
METRICS = ("pa_mpjpe", "pve", "rot_err")
CLAIMS = (("MV", "SV"), ("CAL", "MV"))  # each "A < B", tested on A - B
FOCAL, RES = 5000.0, 224                 # SPIN's virtual crop for SV / MV
TILE = 160                               # --figure: crop size of one tile (px)
FIGURE_QUANTILES = (0.5, 0.8)            # --figure: the people, as quantiles of SV's PA-MPJPE (net init)


def load_net(ckpt_path):
    """The SPIN regressor of a training checkpoint, in eval mode."""
    from smplfast_train.config import config_from_dict
    from smplfast_train.heads.hmr import build_hmr
    from smplfast_train.loop import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_dict(ckpt["config"])
    model = build_hmr(cfg.backbone, mean_params=cfg.mean_params or None, relu=cfg.hmr_relu, n_iter=cfg.hmr_iters)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg


def batch_items(ds, idx):
    """Stack the items ``idx`` of a MultiViewDataset: dict of (B, V, ...) tensors."""
    import torch

    items = [ds[i] for i in idx]
    keys = ("img", "keypoints", "cam_K", "cam_rot", "cam_transl", "pose", "betas", "gender")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def run(data, ckpt, pose_prior, num=300, batch=32, seed=0, noise_pose=0.15, noise_betas=0.5, n_boot=2000,
        figure=None):
    import numpy as np
    import torch
    from smplfast_train.eval.metrics import (
        load_eval_models,
        mesh_metrics,
        paired_difference,
    )
    from smplfast_train.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    import smplfast
    from smplfast.data import MultiViewDataset
    from smplfast.fitting import estimate_translation, weak_perspective_to_translation

    data = Path(data)
    npz = data if data.suffix == ".npz" else data / "synth_mvspin.npz"
    net, net_cfg = load_net(ckpt)
    img_res = net_cfg.img_res  # the network's crop (128 px); fits work in 224-px crop pixels
    ds = MultiViewDataset(str(npz), str(npz.parent), is_train=False, img_res=img_res)
    n, V = min(num, len(ds)), ds.num_views
    smpl = smplfast.SMPL(keypoints="spin_49")  # neutral: the fitters' body, for the translation estimates
    fitters = {
        "SV": smplfast.SMPLify(focal_length=FOCAL, optimizer="lm", pose_prior=pose_prior),
        "MV": smplfast.MultiViewSMPLify(focal_length=FOCAL, optimizer="lm", pose_prior=pose_prior, calibrated=False),
        "CAL": smplfast.MultiViewSMPLify(focal_length=FOCAL, optimizer="lm", pose_prior=pose_prior, calibrated=True),
    }
    models = load_eval_models(keypoints_2d=False)

    # The perturbed initialisation's noise, drawn once for all people (independent of the batching).
    g = torch.Generator().manual_seed(seed)
    noise = {"pose": noise_pose * torch.randn(n, V, 72, generator=g),
             "betas": noise_betas * torch.randn(n, V, 10, generator=g)}

    inits = ("net", "perturbed")
    per = {i: {m: {k: [] for k in METRICS + ("reproj",)} for m in METHODS} for i in inits}
    secs = {i: {m: 0.0 for m in METHODS} for i in inits}
    stage = {i: {m: {} for m in METHODS} for i in inits}
    net_secs = 0.0
    kept = {m: {"pose": [], "betas": [], "transl": []} for m in METHODS[1:]}  # the net init's fits, for --figure

    def keep(method, pose, betas, transl, B):
        """(B, V, 72) pose, (B, V, 10) betas, (B, V, 3) translation of one method's result (net init)."""
        if figure is not None:
            for k, v in (("pose", pose), ("betas", betas), ("transl", transl)):
                kept[method][k].append(v.detach().reshape(B, V, -1).double().clone())

    def translation(pose, betas, kp, focal, centre):
        """estimate_translation of the body (pose, betas) on kp, flat (B*V, ...) tensors."""
        with torch.no_grad():
            j = smpl(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, joints_only=True).joints
        return estimate_translation(j, kp, focal, center=centre, img_size=float(RES))

    def score(init, method, rotmat, betas, b, reproj=None):
        """Per view-sample metrics (flat B*V) against each view's camera-frame GT."""
        m = mesh_metrics(rotmat.reshape(-1, 24, 3, 3), betas.reshape(-1, 10), b["pose"].reshape(-1, 72).double(),
                         b["betas"].reshape(-1, 10).double(), b["gender"].reshape(-1).tolist(), models)
        for k in METRICS:
            per[init][method][k].append(m[k].float().numpy())
        r = np.full(m["pve"].shape[0], np.nan) if reproj is None else reproj.reshape(-1).double().numpy()
        per[init][method]["reproj"].append(r)

    for s in range(0, n, batch):
        idx = list(range(s, min(s + batch, n)))
        b = batch_items(ds, idx)
        B = len(idx)
        kp = b["keypoints"].float()
        kp_px = torch.cat([0.5 * RES * (kp[..., :2] + 1.0), kp[..., 2:]], -1)       # (B, V, 49, 3) in the 224 crop
        centre_v = torch.full((B, V, 2), RES / 2.0)                                  # virtual crop
        K = b["cam_K"].float()
        f_cal = K[..., [0, 1], [0, 1]] * (RES / img_res)                             # true intrinsics at 224 px
        c_cal = K[..., :2, 2] * (RES / img_res)
        R_c = b["cam_rot"].float()

        # Initialisations: per-view pose (B, V, 72), betas (B, V, 10), translation in the virtual crop.
        t0 = time.perf_counter()
        with torch.no_grad():
            out = net(_flat(b["img"]).float())
        net_secs += time.perf_counter() - t0
        net_pose = matrix_to_axis_angle(out.rotmat).reshape(B, V, 72)
        net_t = weak_perspective_to_translation(out.cam, FOCAL, RES).view(B, V, 3)
        gt_pose, gt_betas = b["pose"].float(), b["betas"].float()
        pert_pose = gt_pose + noise["pose"][idx]
        pert_betas = gt_betas + noise["betas"][idx]
        pert_t = translation(_flat(pert_pose), _flat(pert_betas), _flat(kp_px), FOCAL, _flat(centre_v)).view(B, V, 3)
        init_sets = {"net": (net_pose, out.betas.view(B, V, 10), net_t), "perturbed": (pert_pose, pert_betas, pert_t)}

        for name, (pose0, betas0, t_v) in init_sets.items():
            score(name, "init", axis_angle_to_matrix(pose0.reshape(-1, 24, 3)), betas0, b)
            # SV: every view alone.
            t0 = time.perf_counter()
            r = fitters["SV"].fit(_flat(pose0), _flat(betas0), _flat(t_v), _flat(centre_v), _flat(kp_px))
            secs[name]["SV"] += time.perf_counter() - t0
            score(name, "SV", axis_angle_to_matrix(r.pose.reshape(-1, 24, 3)), r.betas, b, r.reprojection_loss.sum(-1))
            _add(stage[name]["SV"], r.timings)
            if name == "net":
                keep("SV", r.pose, r.betas, r.camera_translation, B)
            # MV: shared body pose and betas, per-view orientation and translation.
            t0 = time.perf_counter()
            r = fitters["MV"].fit(pose0, betas0, t_v, centre_v, kp_px)
            secs[name]["MV"] += time.perf_counter() - t0
            score(name, "MV", axis_angle_to_matrix(r.pose.reshape(-1, 24, 3)), r.betas[:, None].expand(B, V, 10), b,
                  r.reprojection_loss.sum(-1))
            _add(stage[name]["MV"], r.timings)
            if name == "net":
                keep("MV", r.pose, r.betas[:, None].expand(B, V, 10), r.camera_translation, B)
            # CAL: the per-view translation estimate in the real (scaled) camera, then one world body.
            t_cal = translation(_flat(pose0), _flat(betas0), _flat(kp_px), _flat(f_cal[..., 0]), _flat(c_cal)).view(B, V, 3)
            t0 = time.perf_counter()
            r = fitters["CAL"].fit(pose0, betas0, t_cal, c_cal, kp_px, cam_rot=R_c, cam_transl=b["cam_transl"].float(),
                                   focal_length=f_cal, frame="camera")
            secs[name]["CAL"] += time.perf_counter() - t0
            rotmat = axis_angle_to_matrix(r.pose.reshape(-1, 24, 3)).view(B, V, 24, 3, 3)  # each view's camera frame
            score(name, "CAL", rotmat, r.betas[:, None].expand(B, V, 10), b, r.reprojection_loss.sum(-1))
            _add(stage[name]["CAL"], r.timings)
            if name == "net":  # world orientation and world translation, repeated per view
                world_pose = torch.cat([r.world_orient[:, None].expand(B, V, 3), r.pose[..., 3:]], -1)
                keep("CAL", world_pose, r.betas[:, None].expand(B, V, 10), r.world_transl[:, None].expand(B, V, 3), B)
        print(f"{s + B}/{n} people  " + "  ".join(f"{i}:{m} {1000 * secs[i][m] / (s + B):.0f} ms/person"
                                                    for i in inits for m in METHODS[1:]), flush=True)

    # Summaries: per view-sample arrays (n * V, person-major), means / medians, paired differences.
    arr = {i: {m: {k: np.concatenate(v) for k, v in per[i][m].items()} for m in METHODS} for i in inits}
    rows, paired, verdict = {}, {}, {}
    for i in inits:
        rows[i] = {}
        for m in METHODS:
            row = {k: {"mean": float(np.nanmean(arr[i][m][k])), "median": float(np.nanmedian(arr[i][m][k]))}
                   for k in METRICS}
            if m != "init":
                row["reproj_per_view"] = float(np.nanmean(arr[i][m]["reproj"]))
                row["ms_per_person"] = 1000.0 * secs[i][m] / n
                row["stage_ms_per_person"] = {k: 1000.0 * v / n for k, v in stage[i][m].items()}
            rows[i][m] = row
        paired[i], verdict[i] = {}, {}
        for a, c in CLAIMS:
            key = f"{a}-{c}"
            paired[i][key] = {}
            for k in METRICS:
                d = arr[i][a][k].astype(np.float64) - arr[i][c][k].astype(np.float64)
                view = paired_difference(d, n_boot=n_boot, seed=seed)
                person = paired_difference(d.reshape(n, V).mean(1), n_boot=n_boot, seed=seed)
                paired[i][key][k] = {"view": dict(view), "person": dict(person),
                                     "resolved": bool(view["ci_high"] < 0 and person["ci_high"] < 0)}
        ok = all(paired[i][f"{a}-{c}"][k]["resolved"] for a, c in CLAIMS for k in METRICS)
        verdict[i] = "reproduced" if ok else "not resolved"
    if figure is not None:
        fits = {m: {k: torch.cat(v) for k, v in d.items()} for m, d in kept.items()}
        pa = {m: arr["net"][m]["pa_mpjpe"].reshape(n, V) for m in METHODS[1:]}
        people = draw_figure(figure, npz, fits, pa, models)
        print(f"figure {figure}: people {people} (SV PA-MPJPE quantiles {FIGURE_QUANTILES}, net init)", flush=True)
    return {
        "experiment": "MV-SPIN M1: SV vs MV vs CAL SMPLify fits",
        "data": str(npz), "ckpt": str(ckpt), "pose_prior": str(pose_prior), "num_people": n, "num_views": V,
        "batch_people": batch, "seed": seed, "n_boot": n_boot,
        "noise": {"pose_rad_per_component": noise_pose, "betas": noise_betas},
        "net": {"backbone": net_cfg.backbone, "img_res": net_cfg.img_res, "ms_per_person": 1000.0 * net_secs / n},
        "units": {"pa_mpjpe": "mm", "pve": "mm", "rot_err": "deg", "reproj_per_view": "px^2 (SPIN's GMoF sum)"},
        "rows": rows, "paired": paired, "verdict": verdict,
    }


def figure_people(pa_sv, quantiles=FIGURE_QUANTILES):
    """The people at the given quantiles of SV's per-person PA-MPJPE (``pa_sv`` (n, V)): the person at
    rank round(q (n - 1)) of the stable ascending sort of the mean over views."""
    import numpy as np

    per_person = np.asarray(pa_sv, dtype=np.float64).mean(1)
    order = np.argsort(per_person, kind="stable")
    return [int(order[int(q * (len(order) - 1) + 0.5)]) for q in quantiles]


def draw_figure(path, npz, fits, pa, models, quantiles=FIGURE_QUANTILES, tile=TILE):
    """Write the ``--figure`` PNG (see the module docstring); returns the people drawn.

    ``fits[m]`` for m in SV / MV / CAL: ``pose`` (n, V, 72), ``betas`` (n, V, 10), ``transl`` (n, V, 3)
    (SV / MV: camera-frame pose and virtual-crop translation; CAL: world orientation and translation);
    ``pa[m]`` (n, V) PA-MPJPE in mm; ``models``: :func:`load_eval_models`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from smplfast_train.eval.metrics import gt_body

    from smplfast.data import MultiViewDataset
    from smplfast.data.augment import tensor_to_image
    from smplfast.render import PerspectiveCamera, overlay

    npz = Path(npz)
    ds = MultiViewDataset(str(npz), str(npz.parent), is_train=False, img_res=tile)
    world = np.load(npz)
    world = {k: torch.as_tensor(world[k]).double() for k in ("world_orient", "world_transl")}
    people = figure_people(pa["SV"], quantiles)
    neutral = models["neutral"]
    faces = neutral.faces
    colors = {"GT": (0.55, 0.80, 0.55), "SV": (0.90, 0.50, 0.45), "MV": (0.92, 0.75, 0.40), "CAL": (0.50, 0.65, 0.92)}
    rows = ("crop", "GT", "SV", "MV", "CAL")
    row_titles = {"crop": "crop", "GT": "ground\ntruth", "SV": "SV fit", "MV": "MV fit", "CAL": "CAL fit"}

    def rig_camera(item, v):
        K = item["cam_K"][v].double()
        return PerspectiveCamera(rotation=item["cam_rot"][v].double(), translation=item["cam_transl"][v].double(),
                                 focal=K[[0, 1], [0, 1]], center=K[:2, 2])

    grids = []  # per person: rows x V tiles (uint8 arrays)
    with torch.no_grad():
        for i in people:
            item = ds[i]
            V = item["img"].shape[0]
            gt_pose = torch.cat([world["world_orient"][i], item["pose"][0, 3:].double()])[None]
            gt_v = gt_body(gt_pose, item["betas"][:1].double(), item["gender"][:1], models)[0][0] + world["world_transl"][i]
            grid = {r: [] for r in rows}
            for v in range(V):
                crop = tensor_to_image(item["img"][v])
                grid["crop"].append(crop)
                grid["GT"].append(overlay(crop, gt_v, faces, rig_camera(item, v), color=colors["GT"]))
                for m in ("SV", "MV", "CAL"):
                    f = fits[m]
                    pose, betas, t = f["pose"][i, v][None], f["betas"][i, v][None], f["transl"][i, v][None]
                    if m == "CAL":  # the world body, through the rig
                        verts = neutral(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:], transl=t).vertices[0]
                        cam = rig_camera(item, v)
                    else:           # the view's camera-frame body in SPIN's virtual crop, scaled to the tile
                        verts = neutral(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices[0]
                        cam = PerspectiveCamera.crop_camera(t, FOCAL * tile / RES, tile)
                    grid[m].append(overlay(crop, verts, faces, cam, color=colors[m]))
            grids.append(grid)

    # Layout in pixels: row titles | person 1 (V tiles) | gap | person 2 ...; a header above, a caption below.
    V = len(grids[0]["crop"])
    left, gap, head, foot, dpi = 78, 14, 44, 34, 100
    W = left + len(people) * V * tile + (len(people) - 1) * gap
    H = head + len(rows) * tile + foot
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    fig.patch.set_facecolor("white")
    for r, row in enumerate(rows):
        y = head + r * tile
        fig.text(6 / W, 1 - (y + tile / 2) / H, row_titles[row], ha="left", va="center", fontsize=9, weight="bold",
                 color="black" if row in ("crop", "GT") else tuple(0.75 * c for c in colors[row]))
    for p, (i, grid) in enumerate(zip(people, grids)):
        x0 = left + p * (V * tile + gap)
        means = "   ".join(f"{m} {pa[m][i].mean():.0f}" for m in ("SV", "MV", "CAL"))
        fig.text((x0 + V * tile / 2) / W, 1 - 4 / H,
                 f"person {i} (SV at the {100 * quantiles[p]:.0f}th percentile), PA-MPJPE mm: {means}",
                 ha="center", va="top", fontsize=9)
        for v in range(V):
            fig.text((x0 + (v + 0.5) * tile) / W, 1 - (head - 4) / H, f"view {v}", ha="center", va="bottom", fontsize=8)
        for r, row in enumerate(rows):
            for v in range(V):
                x, y = x0 + v * tile, head + r * tile
                ax = fig.add_axes([x / W, 1 - (y + tile) / H, tile / W, tile / H])
                ax.imshow(grid[row][v], interpolation="nearest")
                ax.set_axis_off()
                if row in pa:
                    ax.text(4, 4, f"{pa[row][i, v]:.0f} mm", ha="left", va="top", fontsize=7, color="white",
                            bbox={"boxstyle": "square,pad=0.15", "fc": "black", "ec": "none", "alpha": 0.55})
    fig.text(6 / W, 4 / H,
             "net init, SMPLify LM + GMM prior; tile label: that view's PA-MPJPE. GT and CAL meshes posed in the world and "
             "drawn through the rig (cam_rot / cam_transl, true intrinsics cam_K); SV and MV drawn with each view's\n"
             "fitted orientation and translation in SPIN's virtual crop camera (f = 5000 at 224 px, principal point at "
             "the crop centre). MV and CAL share one body pose (and betas) across the views; SV fits each view alone.",
             ha="left", va="bottom", fontsize=7.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return people


def _flat(t):
    """(B, V, ...) -> (B * V, ...): person-major view-samples."""
    return t.flatten(0, 1)


def _add(acc, timings):
    for k, v in timings.items():
        if isinstance(v, (int, float)):
            acc[k] = acc.get(k, 0.0) + float(v)


def markdown(r) -> str:
    """A short report: the table, the paired differences, one verdict line per init source."""
    n, V = r["num_people"], r["num_views"]
    L = ["# MV-SPIN M1: SV vs MV vs CAL SMPLify fits (training/experiments/mvspin_fits.py)", "",
         (f"First {n} rig_train people x {V} views ({n * V} view-samples), SMPLify LM with the lab GMM prior; "
          "every view scored against its camera-frame GT. PA-MPJPE / PVE in mm, rot_err in degrees, as mean (median). "
          f"ms per person: fitter wall time, one thread (SV: {V} single-view fits; the network's forward pass, "
          f"not counted, {r['net']['ms_per_person']:.0f} ms). "
          "Inits: net = lab-pretrained SPIN regressor; perturbed = GT + noise "
          f"({r['noise']['pose_rad_per_component']} rad per axis-angle component, betas {r['noise']['betas']}), "
          "independent per view."), "",
         "| init | method | PA-MPJPE | PVE | rot_err | ms/person |", "|---|---|---|---|---|---|"]
    for i, rows in r["rows"].items():
        for m, row in rows.items():
            cells = [f"{row[k]['mean']:.1f} ({row[k]['median']:.1f})" for k in METRICS]
            ms = f"{row['ms_per_person']:.0f}" if "ms_per_person" in row else "-"
            L.append(f"| {i} | {m} | " + " | ".join(cells) + f" | {ms} |")
    L += ["", "Paired differences (mean, 95 % bootstrap CI over view-samples / over people; resolved when both CIs lie below 0):", "",
          "| init | difference | metric | mean | CI (views) | CI (people) | A < B |", "|---|---|---|---|---|---|---|"]
    for i, p in r["paired"].items():
        for key, by_metric in p.items():
            for k, d in by_metric.items():
                v, q = d["view"], d["person"]
                L.append(f"| {i} | {key} | {k} | {v['mean']:+.2f} | [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}] | "
                         f"[{q['ci_low']:+.2f}, {q['ci_high']:+.2f}] | {'yes' if d['resolved'] else 'not resolved'} |")
    L.append("")
    for i, v in r["verdict"].items():
        L.append(f"- **{i}** init: ordering CAL < MV < SV on PA-MPJPE, PVE and rot_err: **{v}**.")
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synth/rig_train", help="rig folder (or its synth_mvspin.npz)")
    ap.add_argument("--ckpt", default="runs/spin_ablation/spin_pretrain_lab/ckpt/last.pt")
    ap.add_argument("--pose-prior", default="data/synth/gmm_lab.npz")
    ap.add_argument("--num", type=int, default=300, help="people (all views of each)")
    ap.add_argument("--batch", type=int, default=32, help="people per fitter call")
    ap.add_argument("--seed", type=int, default=0, help="noise of the perturbed init and the bootstrap")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--figure", default=None, help="also write a PNG of two people's views and fits (see above)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = run(args.data, args.ckpt, args.pose_prior, args.num, args.batch, args.seed, figure=args.figure)
    r["elapsed_s"] = time.perf_counter() - t0
    md = markdown(r)
    print(md)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(r, indent=1))
    if args.out_md:
        Path(args.out_md).write_text(md)
    return r


if __name__ == "__main__":
    main()
