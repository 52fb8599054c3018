"""Pavlakos 2018 P2 (anchored SMPLify), P3 (direct prediction vs SMPLify) and X1 (SPIN's single stage)
on ``wild_test`` (TRAINING_SPEC §5.5, §5.7 Tables 3 and 5, §6.2, §6.3 E-P step 5).

    OMP_NUM_THREADS=1 python training/experiments/pavlakos_smplify.py --data data/synth \\
        --checkpoint runs/pavlakos/<run>/ckpt/last.pt [--shape-checkpoint runs/pavlakos/<shape run>/ckpt/last.pt] \\
        --num 500 --out docs/results --seed 0

For the first ``--num`` people of ``wild_test`` (unaugmented crops), three 2D inputs:

* ``annotated``: the split's annotated keypoints ``part`` as ``lsp_14`` (visibility as confidence), as
  :func:`~smplfast_train.trainers.pavlakos.prior_eval_inputs` builds them for the Priors;
* ``detected``: the split's simulated OpenPose detections (``openpose``, made by
  :mod:`smplfast.data.detections`: noise, missed joints, left/right swaps) as ``lsp_14``. OpenPose has no
  LSP neck or head top, so those two rows are missing (confidence 0) for the Priors and for SMPLify;
* ``simulated``: the Priors' own training noise (:func:`smplfast_train.pavlakos.simulate_detections`:
  σ = 2 % of the box, confidences U(0.5, 1), 1–3 joints dropped with p 0.3, rare limb swaps) applied to
  the annotated keypoints, drawn with ``--seed``: noisy detections that keep every landmark.

Camera: SMPLify works in SPIN's virtual crop, 224 px, f = 5000 px, principal point at the centre, with
keypoints ``112 (kp + 1)`` (the convention of ``smplfast_train.fits`` that SPIN's trainer and the static
fits use). The split's true crop focal length is smaller (median about 600 px for 224 px), so every fit
carries the same perspective mismatch; SMPLify's focal length is one number per fitter, so per-person
intrinsics would need one fitter per person (``--focal`` sets a common value instead).

Arms (``SMPLify`` with ``keypoints="lsp_14"``, the shipped GMM pose prior unless ``--pose-prior``):

=========================  ==============================================================================
``direct``                 PosePrior + ShapePrior (no fitting); its camera for the segmentation scores by
                           :func:`~smplfast.fitting.estimate_translation` on the keypoints
``smplify4_<opt>``         vanilla: ``mode="smplify4"`` from the mean pose (``init_pose=None``)
``anchored_w<w>_<opt>``    ``mode="single_stage"`` with ``PriorWeights(anchor_weight=w)`` (σ 0.2 rad), the
                           PosePrior's pose and the ShapePrior's β as initialisation, camera from
                           ``estimate_translation``; w ∈ ``--anchor-weights`` (0 isolates the
                           initialisation)
``single_mean_<opt>``      X1: ``mode="single_stage"`` from the mean pose (the GMM's weighted mean body
                           pose, global orientation (π, 0, 0): upright, facing the camera), zero β, no
                           anchor, camera from ``estimate_translation``
=========================  ==============================================================================

``<opt>`` is ``lm`` or ``adam`` (SPIN's Adam, ``num_iters`` 100 per stage; on the first ``--adam-num``
people only, when set). The ``detected`` input runs ``direct``, ``smplify4`` and the anchored arm with
w = 4.78 (P3); so does ``simulated``.

Per person: PA-MPJPE (J14) and PVE (pelvis-aligned) of :func:`~smplfast_train.eval.metrics.mesh_metrics`,
``pve_model`` (meshes in the model frame, no alignment, §5.6) and ``pve_model_gt_shape`` (the same pose
with the ground-truth β; SMPLify's fits keep their own fitted β otherwise), the global orientation's
geodesic error ``orient_err`` (degrees), iterations and ``converged``
of the fit, the FB and six-part pixel accuracy of the rendered fit against the split's mask and
DensePose parts in a 64² crop (:func:`~smplfast_train.eval.metrics.segmentation_metrics`; SPIN's
accumulated accuracy and F1 per arm). Wall time per arm on one thread, in batches of ``--batch``
people, reported as seconds per person.

The report gives per-arm means, paired differences with bootstrap 95 % intervals over people and the
verdicts of §6.1 with one seed: "reproduced (1 seed)" only when the interval excludes 0 in the paper's
direction ("reversed (1 seed)" in the other), else "not resolved"; P2's speed claim is a time ratio
vanilla / anchored ≥ 3. Written to ``<out>/pavlakos_smplify.json`` and ``<out>/pavlakos_smplify.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FOCAL, RES = 5000.0, 224     # SPIN's virtual crop (smplfast_train.fits.FIT_FOCAL / FIT_RES)
SEG_RES = 64                 # crop side of the Priors' silhouette input and of the segmentation scores
ANCHOR_WEIGHTS = (0.0, 1.0, 4.78, 15.0)
P3_ANCHOR = 4.78             # the anchored arm also run on the detections
OPTIMIZERS = ("lm", "adam")
INPUTS = ("annotated", "detected", "simulated")
METRICS = ("pa_mpjpe", "pve", "pve_model", "pve_model_gt_shape", "orient_err", "iterations", "converged", "fb_acc",
           "parts_acc")


# ------------------------------------------------------------------------------------------ data
def load_people(split_dir, num: int, seed: int = 0) -> dict[str, object]:
    """The first ``num`` people of a split folder: Priors' inputs and fitter keypoints for the three inputs
    (``simulated`` drawn with ``seed``), ground truth, and the 64² mask and DensePose parts of the crop."""
    import torch
    from smplfast_train.eval.runner import load_crop_parts24, resolve_split
    from smplfast_train.pavlakos import simulate_detections
    from smplfast_train.trainers.pavlakos import prior_eval_inputs

    from smplfast.body.keypoints import convert
    from smplfast.data import SPINDataset

    npz, root, _ = resolve_split(split_dir)
    ds = SPINDataset(npz, root, is_train=False, img_res=SEG_RES, load_masks=True)
    n = min(int(num), len(ds))
    items = [ds[i] for i in range(n)]
    inp = prior_eval_inputs(items)
    kp49 = torch.stack([torch.as_tensor(it["keypoints"]) for it in items]).float()
    det = convert(kp49[:, :25], "openpose_25", "lsp_14")
    bad = ~torch.isfinite(det).all(-1) | (det[..., 2] <= 0)
    det = torch.where(bad[..., None], torch.zeros_like(det), det)
    ann = inp["keypoints"]
    rng = np.random.default_rng(seed)
    sim = torch.stack([torch.from_numpy(simulate_detections(rng, ann[i, :, :2].numpy())) for i in range(n)]) if n \
        else torch.zeros(0, 14, 3)
    sim = sim * (ann[..., 2:] > 0)  # unlabelled joints stay missing
    return {
        "n": n,
        "kp": {"annotated": ann, "detected": det, "simulated": sim},    # normalised crop units, (n, 14, 3)
        "silhouette": inp["silhouette"],
        "mask": torch.stack([torch.as_tensor(np.asarray(it["mask"])) for it in items]).bool(),
        "parts24": torch.from_numpy(np.stack([load_crop_parts24(ds, i) for i in range(n)])),
        "pose": torch.stack([torch.as_tensor(it["pose"]) for it in items]).double(),
        "betas": torch.stack([torch.as_tensor(it["betas"]) for it in items]).double(),
        "gender": [int(it["gender"]) for it in items],
    }


def to_pixels(kp_norm, res: int = RES):
    """Normalised crop keypoints -> the fitter's pixels ``res/2 (kp + 1)``; missing rows stay (0, 0, 0)."""
    px = kp_norm.clone()
    px[..., :2] = res / 2.0 * (kp_norm[..., :2] + 1.0)
    return px * (kp_norm[..., 2:] > 0)


# --------------------------------------------------------------------------------------- fitting
def mean_init(fitter, B: int):
    """X1's mean start: the GMM's weighted mean body pose, upright facing the camera, zero β."""
    import torch

    prior = fitter.pose_prior
    pose = torch.zeros(B, 72)
    pose[:, 0] = np.pi
    pose[:, 3:] = (prior.weights.flatten() @ prior.means).float()
    return pose, torch.zeros(B, fitter.num_betas)


def camera_init(fitter, pose, betas, kp_px, focal: float):
    """``estimate_translation`` of the initial body on all 14 keypoints; where it fails or puts the body
    behind the camera (a poor initial pose can), similar triangles on the torso as smplify4 starts, and
    SPIN's mean camera as the last resort."""
    import torch

    from smplfast.fitting.camera import (
        default_translation,
        estimate_translation,
        similar_triangles_translation,
    )

    with torch.no_grad():
        joints = fitter.keypoints(pose, betas)
    t, valid = estimate_translation(joints, kp_px, focal, img_size=float(RES), use_all_joints=True, return_valid=True)
    ok = valid & (t[:, 2] > 0)
    if not bool(ok.all()):
        rs, ls, rh, lh = fitter.gt_torso[2], fitter.gt_torso[3], fitter.gt_torso[0], fitter.gt_torso[1]
        t_st = similar_triangles_translation(joints, kp_px, focal_length=focal, img_size=float(RES),
                                             torso_pairs=[((rs, rh), (ls, lh))]).to(t.dtype)
        t_st = torch.where((t_st[:, 2:] > 0) & torch.isfinite(t_st).all(1, keepdim=True), t_st,
                           default_translation(t.shape[0], focal, float(RES), dtype=t.dtype))
        t = torch.where(ok[:, None], t, t_st)
    return t


def run_fits(fitter, kp_px, init, batch: int, focal: float) -> dict[str, object]:
    """Fit ``kp_px`` (n, 14, 3) in batches; ``init`` is None (smplify4 from the mean), ``"mean"`` (X1) or
    ``(pose, betas)``. Returns pose, betas, cam_t, vertices-free outputs, iterations, converged and the
    seconds spent in the fitter (camera initialisation included)."""
    import torch

    n = kp_px.shape[0]
    out = {k: [] for k in ("pose", "betas", "cam_t", "iterations", "converged")}
    secs = 0.0
    for s in range(0, n, batch):
        kp = kp_px[s:s + batch]
        B = kp.shape[0]
        center = torch.full((B, 2), RES / 2.0)
        t0 = time.perf_counter()
        if init is None:
            r = fitter.fit(None, None, None, center, kp)
        else:
            pose, betas = mean_init(fitter, B) if isinstance(init, str) else (init[0][s:s + batch], init[1][s:s + batch])
            t = camera_init(fitter, pose, betas, kp, focal)
            r = fitter.fit(pose, betas, t, center, kp)
        secs += time.perf_counter() - t0
        for k, v in (("pose", r.pose), ("betas", r.betas), ("cam_t", r.camera_translation),
                     ("iterations", r.iterations), ("converged", r.converged)):
            out[k].append(v)
    res = {k: torch.cat(v) for k, v in out.items()}
    res["seconds"] = secs
    return res


# ------------------------------------------------------------------------------------------ scores
def score(people, pose, betas, cam_t, models, renderer, focal: float, segmentation: bool = True) -> dict[str, list]:
    """Per-person metrics of a prediction (pose (n, 72) axis-angle, betas (n, 10), camera translation in
    the fitter's crop) and the summed segmentation confusions."""
    import torch
    from smplfast_train.eval.metrics import (
        mesh_metrics,
        pred_body,
        segmentation_metrics,
    )
    from smplfast_train.rotations import axis_angle_to_matrix

    from smplfast.render import PerspectiveCamera

    n = pose.shape[0]
    rotmat = axis_angle_to_matrix(pose.double().reshape(n, 24, 3))
    m = mesh_metrics(rotmat, betas.double(), people["pose"][:n], people["betas"][:n], people["gender"][:n], models,
                     return_bodies=True)
    pv, gv = m["pred_vertices"], m["gt_vertices"]
    per = {"pa_mpjpe": m["pa_mpjpe"].tolist(), "pve": m["pve"].tolist(),
           "pve_model": ((pv - gv).norm(dim=-1).mean(1) * 1000.0).tolist()}
    # Global orientation error (deg): pve_model counts it in full, PA-MPJPE not at all.
    r_gt = axis_angle_to_matrix(people["pose"][:n, :3].reshape(n, 1, 3))[:, 0]
    cos = ((rotmat[:, 0] * r_gt).sum((-1, -2)) - 1.0) / 2.0
    per["orient_err"] = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))).tolist()
    pv_gt, _ = pred_body(rotmat, people["betas"][:n], models)
    per["pve_model_gt_shape"] = ((pv_gt - gv).norm(dim=-1).mean(1) * 1000.0).tolist()
    conf = {}
    if segmentation:
        # The crop camera scaled from the fitter's 224 px to the 64² ground truth.
        cam = PerspectiveCamera.crop_camera(cam_t.double(), focal * SEG_RES / RES, SEG_RES)
        ok = torch.isfinite(cam_t).all(1) & (cam_t[:, 2] > 0)
        verts = torch.where(ok[:, None, None], pv, torch.full_like(pv, float("nan")))
        seg = segmentation_metrics(verts, cam, people["mask"][:n], people["parts24"][:n], renderer)
        per["fb_acc"], per["parts_acc"] = seg["fb_acc"].tolist(), seg["parts_acc"].tolist()
        conf = {"fb": seg["fb_confusion"].sum(0), "parts": seg["parts_confusion"].sum(0)}
    return per, conf


def run_experiment(people, net, *, optimizers: Sequence[str] = OPTIMIZERS, anchor_weights=ANCHOR_WEIGHTS,
                   adam_num: int | None = None, batch: int = 100, focal: float = FOCAL, pose_prior=None,
                   segmentation: bool = True, inputs: Sequence[str] = INPUTS, keep_fits: bool = False,
                   progress: bool = False) -> dict[str, object]:
    """Every arm (module docstring) on ``people`` (:func:`load_people`) with the priors ``net``.

    Returns ``{"arms": {input: {arm: {"per_sample", "mean", "seconds", "s_per_person", "n", ...}}}}``;
    with ``keep_fits`` each arm also keeps ``pose`` / ``betas`` tensors and the Priors' prediction
    ``init_pose`` per input (for tests)."""
    import torch
    from smplfast_train.eval.metrics import load_eval_models, segmentation_scores
    from smplfast_train.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    from smplfast.fitting import PriorWeights, SMPLify, estimate_translation
    from smplfast.render import BodyRenderer

    models = load_eval_models(keypoints_2d=False)
    renderer = BodyRenderer.from_model() if segmentation else None
    n = people["n"]
    fitters = {}

    def fitter(mode, opt, w):
        key = (mode, opt, w)
        if key not in fitters:
            fitters[key] = SMPLify(focal_length=focal, optimizer=opt, keypoints="lsp_14", mode=mode,
                                   pose_prior=pose_prior, weights=PriorWeights(anchor_weight=w))
        return fitters[key]

    result = {"arms": {}, "n": n}
    for inp in inputs:
        kp_norm = people["kp"][inp]
        kp_px = to_pixels(kp_norm)
        arms = {}
        t0 = time.perf_counter()
        with torch.no_grad():
            pred_pose, pred_betas = net(kp_norm, people["silhouette"])
            # A rotation-matrix-trained PosePrior's axis-angle may wind several turns; the same rotations
            # in [0, π] are a valid SMPLify initialisation (and anchor).
            pred_pose = matrix_to_axis_angle(axis_angle_to_matrix(pred_pose.reshape(n, 24, 3))).reshape(n, 72)
        t_net = time.perf_counter() - t0
        f0 = fitter("single_stage", "lm", 0.0)
        cam_direct = estimate_translation(f0.keypoints(pred_pose, pred_betas).detach(), kp_px, focal,
                                          img_size=float(RES), use_all_joints=True)
        per, conf = score(people, pred_pose, pred_betas, cam_direct, models, renderer, focal, segmentation)
        arms["direct"] = {"per_sample": per, "conf": conf, "seconds": t_net, "n": n}
        if keep_fits:
            arms["direct"].update(pose=pred_pose, betas=pred_betas)
            result.setdefault("init_pose", {})[inp] = pred_pose
        plan = []
        for opt in optimizers:
            plan.append((f"smplify4_{opt}", "smplify4", opt, 0.0, None))
            for w in anchor_weights:
                if inp == "annotated" or w == P3_ANCHOR:
                    plan.append((f"anchored_w{w:g}_{opt}", "single_stage", opt, float(w), (pred_pose, pred_betas)))
            if inp == "annotated":
                plan.append((f"single_mean_{opt}", "single_stage", opt, 0.0, "mean"))
        for name, mode, opt, w, init in plan:
            m = n if opt == "lm" or not adam_num else min(n, int(adam_num))
            init_m = init if not isinstance(init, tuple) else (init[0][:m], init[1][:m])
            fits = run_fits(fitter(mode, opt, w), kp_px[:m], init_m, batch, focal)
            per, conf = score(people, fits["pose"], fits["betas"], fits["cam_t"], models, renderer, focal, segmentation)
            per["iterations"] = fits["iterations"].double().tolist()
            per["converged"] = fits["converged"].double().tolist()
            arms[name] = {"per_sample": per, "conf": conf, "seconds": fits["seconds"], "n": m}
            if keep_fits:
                arms[name].update(pose=fits["pose"], betas=fits["betas"])
            if progress:
                print(f"{inp} {name}: n={m} {fits['seconds']:.1f} s ({fits['seconds'] / m:.3f} s/person), "
                      f"PA-MPJPE {np.mean(per['pa_mpjpe']):.1f}, pve_model {np.mean(per['pve_model']):.1f}", flush=True)
        for a in arms.values():
            a["s_per_person"] = a["seconds"] / a["n"]
            a["mean"] = {k: float(np.nanmean(v)) for k, v in a["per_sample"].items()}
            conf = a.pop("conf")
            if conf:
                fb, parts = segmentation_scores(conf["fb"]), segmentation_scores(conf["parts"])
                a["segmentation"] = {"fb_acc": fb["acc"], "fb_f1": fb["f1"], "parts_acc": parts["acc"],
                                     "parts_f1": parts["f1"]}
        result["arms"][inp] = arms
    return result


# ------------------------------------------------------------------------------------------ claims
def _verdict(d, direction: int) -> str:
    """§6.1 with one seed; ``direction`` -1: the paper says a − b < 0, +1: > 0."""
    lo, hi = d["ci_low"], d["ci_high"]
    if (direction < 0 and hi < 0) or (direction > 0 and lo > 0):
        return "reproduced (1 seed)"
    if (direction < 0 and lo > 0) or (direction > 0 and hi < 0):
        return "reversed (1 seed)"
    return "not resolved"


def _claim_rows(optimizers, anchor_weights) -> list:
    """(claim id, text, input, arm a, arm b, metric, paper's direction of a − b)."""
    w = f"anchored_w{P3_ANCHOR:g}"
    rows = []
    for opt in optimizers:
        for metric, d in (("pa_mpjpe", -1), ("pve", -1), ("pve_model", -1), ("fb_acc", 1), ("parts_acc", 1),
                          ("iterations", -1)):
            rows.append(("P2", f"anchored (w {P3_ANCHOR:g}) vs vanilla smplify4, {opt}: {metric}", "annotated",
                         f"{w}_{opt}", f"smplify4_{opt}", metric, d))
        for aw in anchor_weights:
            if aw != P3_ANCHOR:
                rows.append(("P2", f"anchored (w {aw:g}) vs vanilla smplify4, {opt}: pa_mpjpe", "annotated",
                             f"anchored_w{aw:g}_{opt}", f"smplify4_{opt}", "pa_mpjpe", -1))
        rows.append(("X1", f"single stage from the network (w 0) vs smplify4 from the mean, {opt}: pa_mpjpe",
                     "annotated", f"anchored_w0_{opt}", f"smplify4_{opt}", "pa_mpjpe", -1))
        rows.append(("X1", f"single stage from the network (w 0) vs single stage from the mean, {opt}: pa_mpjpe",
                     "annotated", f"anchored_w0_{opt}", f"single_mean_{opt}", "pa_mpjpe", -1))
        rows.append(("X1", (f"single stage from the mean vs smplify4 from the mean, {opt}: pa_mpjpe (SPIN: 4 stages "
                     "needed without a network)"), "annotated", f"single_mean_{opt}", f"smplify4_{opt}", "pa_mpjpe", 1))
        for inp in INPUTS:
            rows.append(("P3", f"direct vs vanilla smplify4 ({opt}), {inp}: pve_model", inp, "direct", f"smplify4_{opt}",
                         "pve_model", -1))
            rows.append(("P3", f"direct vs vanilla smplify4 ({opt}), {inp}, GT β: pve_model_gt_shape", inp, "direct",
                         f"smplify4_{opt}", "pve_model_gt_shape", -1))
            rows.append(("P3", f"direct vs vanilla smplify4 ({opt}), {inp}: pa_mpjpe", inp, "direct", f"smplify4_{opt}",
                         "pa_mpjpe", -1))
    for inp in INPUTS:
        rows.append(("P3", f"direct with GT β vs predicted β, {inp}: pve_model (GT shape helps)", inp,
                     "direct:pve_model_gt_shape", "direct:pve_model", None, -1))
    return rows


def claims(result, optimizers=OPTIMIZERS, anchor_weights=ANCHOR_WEIGHTS, n_boot: int = 2000, seed: int = 0) -> list:
    """Paired differences a − b (bootstrap 95 % CI over people) and the verdicts."""
    from smplfast_train.eval.metrics import paired_difference

    out = []
    for cid, text, inp, a, b, metric, direction in _claim_rows(optimizers, anchor_weights):
        arms = result["arms"].get(inp, {})
        (arm_a, ka), (arm_b, kb) = [(x.split(":")[0], x.split(":")[1]) if metric is None else (x, metric)
                                    for x in (a, b)]
        if arm_a not in arms or arm_b not in arms or ka not in arms[arm_a]["per_sample"] \
                or kb not in arms[arm_b]["per_sample"]:
            continue
        xa, xb = (np.asarray(arms[x]["per_sample"][k], dtype=np.float64) for x, k in ((arm_a, ka), (arm_b, kb)))
        m = min(len(xa), len(xb))  # Adam arms may cover a prefix of the people
        xa, xb = xa[:m], xb[:m]
        ok = np.isfinite(xa) & np.isfinite(xb)
        if not ok.any():
            continue
        d = paired_difference(xa[ok], xb[ok], n_boot=n_boot, seed=seed)
        out.append({"id": cid, "claim": text, "input": inp, "a": f"{arm_a}:{ka}", "b": f"{arm_b}:{kb}",
                    "mean_a": float(xa[ok].mean()), "mean_b": float(xb[ok].mean()), "diff": d.to_dict(),
                    "paper_sign": direction, "verdict": _verdict(d, direction)})
    return out


def speed(result, optimizers=OPTIMIZERS) -> list:
    """P2's speed claim: vanilla / anchored (w 4.78) wall time per person and mean iterations (≥ 3×),
    on the same people (the anchored arm's people for Adam prefixes)."""
    rows = []
    arms = result["arms"].get("annotated", {})
    for opt in optimizers:
        for w in sorted({float(k.split("_")[1][1:]) for k in arms if k.startswith("anchored_w") and k.endswith(opt)}):
            va, an = arms.get(f"smplify4_{opt}"), arms.get(f"anchored_w{w:g}_{opt}")
            if va is None or an is None:
                continue
            t_ratio = va["s_per_person"] / an["s_per_person"]
            it_ratio = float(np.mean(va["per_sample"]["iterations"]) / np.mean(an["per_sample"]["iterations"]))
            rows.append({"optimizer": opt, "anchor_weight": w, "vanilla_s_per_person": va["s_per_person"],
                         "anchored_s_per_person": an["s_per_person"], "time_ratio": t_ratio,
                         "vanilla_iterations": float(np.mean(va["per_sample"]["iterations"])),
                         "anchored_iterations": float(np.mean(an["per_sample"]["iterations"])),
                         "iteration_ratio": it_ratio,
                         "verdict": "reproduced (1 seed)" if t_ratio >= 3.0 else "not reproduced (< 3×)"})
    return rows


# ------------------------------------------------------------------------------------------ report
def _fmt(v, d=1):
    return "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def markdown(out) -> str:
    cols = (("pa_mpjpe", "PA-MPJPE", 1), ("pve", "PVE", 1), ("pve_model", "pve_model", 1),
            ("pve_model_gt_shape", "pve_model GT β", 1), ("orient_err", "orient. err °", 1), ("iterations", "iters", 1),
            ("converged", "conv.", 2))
    lines = [f"# Pavlakos P2 / P3 and X1 on wild_test ({out['num']} people, seed {out['seed']})", "",
             (f"Checkpoint `{out['checkpoint']}`; SMPLify in SPIN's crop (f = {out['focal']:g} px, {RES} px), lsp_14, "
             f"pose prior {out['pose_prior'] or 'shipped default'}; Adam arms on {out['adam_num']} people; "
             f"one thread, batches of {out['batch']}; total {out['total_s']:.0f} s."), ""]
    for inp, arms in out["result"]["arms"].items():
        lines += [f"## {inp} keypoints", "",
                  "| arm | n | " + " | ".join(c[1] for c in cols) + " | FB acc | FB F1 | part acc | part F1 | s/person |",
                  "|---|---|" + "---|" * (len(cols) + 5)]
        for name, a in arms.items():
            seg = a.get("segmentation", {})
            vals = [_fmt(a["mean"].get(k), d) for k, _, d in cols]
            vals += [_fmt(seg.get("fb_acc"), 2), _fmt(seg.get("fb_f1"), 3), _fmt(seg.get("parts_acc"), 2),
                     _fmt(seg.get("parts_f1"), 3), _fmt(a["s_per_person"], 3)]
            lines.append(f"| {name} | {a['n']} | " + " | ".join(vals) + " |")
        lines.append("")
    lines += ["## P2 speed (vanilla smplify4 / anchored, annotated keypoints; paper ≥ 3×)", "",
              ("| optimizer | anchor w | vanilla s/person | anchored s/person | time ratio | vanilla iters | "
              "anchored iters | iteration ratio | verdict |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in out["speed"]:
        lines.append(f"| {r['optimizer']} | {r['anchor_weight']:g} | {r['vanilla_s_per_person']:.3f} | "
                     f"{r['anchored_s_per_person']:.3f} | {r['time_ratio']:.2f} | {r['vanilla_iterations']:.1f} | "
                     f"{r['anchored_iterations']:.1f} | {r['iteration_ratio']:.2f} | {r['verdict']} |")
    lines += ["", "## Orderings (paired over people; a − b with its bootstrap 95 % interval)", "",
              "| id | claim | a | b | a − b [95 % CI] | paper | verdict |", "|---|---|---|---|---|---|---|"]
    for c in out["claims"]:
        d = c["diff"]
        lines.append(f"| {c['id']} | {c['claim']} | {_fmt(c['mean_a'], 2)} | {_fmt(c['mean_b'], 2)} | "
                     f"{d['mean']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}] | {'<' if c['paper_sign'] < 0 else '>'} 0 | "
                     f"{c['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder holding the wild_test split")
    ap.add_argument("--split", default="wild_test")
    ap.add_argument("--checkpoint", required=True, help="a pavlakos_priors run's checkpoint")
    ap.add_argument("--shape-checkpoint", default=None,
                    help="another pavlakos_priors run whose ShapePrior replaces the checkpoint's")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--adam-num", type=int, default=0, help="people for the Adam arms (0: all --num)")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--anchor-weights", default=",".join(f"{w:g}" for w in ANCHOR_WEIGHTS))
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--focal", type=float, default=FOCAL)
    ap.add_argument("--pose-prior", default=None, help="GMM file for SMPLify (default: the shipped prior)")
    ap.add_argument("--no-segmentation", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated detections and of the bootstrap")
    ap.add_argument("--out", required=True, help="folder for pavlakos_smplify.{json,md}")
    args = ap.parse_args(argv)
    import torch
    from smplfast_train.trainers.pavlakos import load_priors_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    optimizers = tuple(o for o in args.optimizers.split(",") if o)
    weights = tuple(float(w) for w in args.anchor_weights.split(",") if w)
    if P3_ANCHOR not in weights:
        ap.error(f"--anchor-weights must include {P3_ANCHOR:g} (the P2 / P3 anchored arm)")
    t0 = time.perf_counter()
    net, _ = load_priors_checkpoint(args.checkpoint)
    if args.shape_checkpoint:
        net.shape_prior.load_state_dict(load_priors_checkpoint(args.shape_checkpoint)[0].shape_prior.state_dict())
    people = load_people(Path(args.data) / args.split, args.num, seed=args.seed)
    res = run_experiment(people, net, optimizers=optimizers, anchor_weights=weights, adam_num=args.adam_num or None,
                         batch=args.batch, focal=args.focal, pose_prior=args.pose_prior,
                         segmentation=not args.no_segmentation, progress=True)
    out = {"num": people["n"], "seed": args.seed, "checkpoint": str(args.checkpoint),
           "shape_checkpoint": args.shape_checkpoint, "focal": args.focal,
           "pose_prior": args.pose_prior, "batch": args.batch, "adam_num": args.adam_num or people["n"],
           "anchor_weights": list(weights), "optimizers": list(optimizers), "result": res,
           "speed": speed(res, optimizers), "claims": claims(res, optimizers, weights, seed=args.seed)}
    out["total_s"] = time.perf_counter() - t0
    dst = Path(args.out)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "pavlakos_smplify.json").write_text(json.dumps(out, indent=1))
    md = markdown(out)
    (dst / "pavlakos_smplify.md").write_text(md)
    print(md)
    return out


if __name__ == "__main__":
    main()
