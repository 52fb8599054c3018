"""HoloPose's image-tier experiments H2, H3, H4 (TRAINING_SPEC §6.3, recipe E-H).

    python training/experiments/holopose_ablation.py --data data/synth --runs runs/holopose \\
        --stage1-steps 3000 --steps 1000 --eval-num 300

Needs ``lab_train``, ``wild_train``, ``wild_test`` and ``wild_test_occ`` (``smplfast synth --split ...``).
One stage-1 run (``holopose_stage1``: heatmap and integral 3D heads) is the common start of every stage-2
arm; each arm takes the backbone and the two keypoint heads from it and starts everything else from the
same seeded initialisation, draws the same batches and runs the same number of steps:

=================  ====================================================  ======
arm                what changes                                          tests
=================  ====================================================  ======
``moe32``          ``holopose``: part-based MoE, K = 32                  all
``global``         ``holopose_global``: HMR's global regressor           H2
``no_dp``          ``holopose`` with ``w_dp = 0`` (no DensePose loss)     H4
``direct6d``       ``holopose_direct6d``: 6D votes, no MoE prior         H3
``direct_euler``   unconstrained Euler votes                             H3
``moe8``           K = 8                                                 H3
``moe128``         K = 128                                               H3
=================  ====================================================  ======

Every arm is evaluated on the same first ``--eval-num`` people of ``wild_test`` and ``wild_test_occ``
(occluders, same people and cameras) by ``smplfast_train.eval.holopose.evaluate_holopose``: the model's
joints (PA-MPJPE, J14), the integral 3D branch (PA-MPJPE on the 24 skeleton joints), DensePose RCP
(FR10, AUC10/30; geodesic) of the model's reprojection and of the DensePose branch, and the refinement
configurations ``base`` and ``kps3d_dp`` ("Ours+Synergy"). H3 adds plausibility of the predicted body
poses: pose-limit violation (degrees beyond the swing-twist limits of ``smplfast.body.samplers``) and
the negative log-likelihood under the shipped GMM pose prior.

Runs are resumed when interrupted and skipped when finished (run the same command again); the
evaluation of each (arm, split) is cached next to the run. The report gives per-arm means and paired
differences (bootstrap 95 % intervals over people); with one seed an ordering is "reproduced (1 seed)"
only when the interval excludes 0.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from spin_ablation import _train_cmd, run_queue  # noqa: E402

#: arm -> (preset, settings beyond the preset)
ARMS = {
    "moe32": ("holopose", {}),
    "global": ("holopose_global", {}),
    "no_dp": ("holopose", {"w_dp": 0.0}),
    "direct6d": ("holopose_direct6d", {}),
    "direct_euler": ("holopose", {"regressor": "direct_euler"}),
    "moe8": ("holopose", {"moe_k": 8}),
    "moe128": ("holopose", {"moe_k": 128}),
}
SPLITS = ("wild_test", "wild_test_occ")
#: (a, b, split, metric key, paper's claim): "a has the lower value of metric".
ORDERINGS = (
    # H2: the DensePose branch aligns better than the model (Table 1: FR10 32.0 vs 51.1); synergy helps (44.6);
    # the 3D keypoint branch beats the model (Table 2: 36.8 vs 50.6); part-based beats global (50.6 vs 56.8)
    ("moe32", "moe32", "wild_test", ("branch_dp/dp_branch_fr10", "model/fr10"), "DP branch < model (FR10)"),
    ("moe32", "moe32", "wild_test", ("refine/kps3d_dp/fr10", "model/fr10"), "Synergy < model (FR10)"),
    ("moe32", "moe32", "wild_test", ("refine/kps3d_dp/pa_mpjpe", "model/pa_mpjpe"), "Synergy < model (PA-MPJPE)"),
    ("moe32", "moe32", "wild_test", ("branch3d/pa_mpjpe24", "model/pa_mpjpe24"), "3D-kps branch < model (PA-MPJPE, 24 joints)"),
    ("moe32", "global", "wild_test", "model/pa_mpjpe", "part-based < global (PA-MPJPE)"),
    ("moe32", "global", "wild_test_occ", "model/pa_mpjpe", "part-based < global on occluded crops (PA-MPJPE)"),
    ("moe32", "global", "wild_test", "model/fr10", "part-based < global (FR10)"),
    # H4: the DensePose loss in training improves alignment
    ("moe32", "no_dp", "wild_test", "model/fr10", "with L_DP < without (FR10)"),
    ("moe32", "no_dp", "wild_test", "model/pa_mpjpe", "with L_DP vs without (PA-MPJPE)"),
    # H3: the MoE keeps predictions plausible
    ("moe32", "direct6d", "wild_test", "plaus/violation", "MoE < direct 6D (pose-limit violation)"),
    ("moe32", "direct_euler", "wild_test", "plaus/violation", "MoE < direct Euler (pose-limit violation)"),
    ("moe32", "direct6d", "wild_test", "plaus/nll", "MoE < direct 6D (GMM NLL)"),
    ("moe32", "direct6d", "wild_test", "model/pa_mpjpe", "MoE vs direct 6D (PA-MPJPE)"),
    ("moe8", "moe32", "wild_test", "model/pa_mpjpe", "K = 8 vs 32 (PA-MPJPE)"),
    ("moe128", "moe32", "wild_test", "model/pa_mpjpe", "K = 128 vs 32 (PA-MPJPE)"),
)


def _log_rows(run: Path) -> list:
    """The lines of a run's log.jsonl (none when it has no log yet)."""
    log = run / "log.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []


def _last_step(run: Path) -> int:
    rows = _log_rows(run)
    return int(rows[-1]["step"]) if rows else 0


def train(args) -> None:
    data, runs = Path(args.data), Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    stage1 = runs / "stage1"
    common = {"seed": args.seed, "eval_splits": "[]"}
    if _last_step(stage1) < args.stage1_steps:
        run_queue([("stage1", _train_cmd("holopose_stage1", data, stage1, {**common, "num_steps": args.stage1_steps}),
                    stage1)], 1)
    todo = []
    for arm in args.arms:
        preset, extra = ARMS[arm]
        run = runs / f"{arm}_s{args.seed}"
        if _last_step(run) >= args.steps:
            continue
        sets = {**common, **extra, "num_steps": args.steps, "init_checkpoint": stage1 / "ckpt" / "last.pt"}
        todo.append((arm, _train_cmd(preset, data, run, sets), run))
    run_queue(todo, args.parallel)


# ------------------------------------------------------------------------------------ evaluation
def plausibility(net, split_dir, num: int, img_res: int) -> dict:
    """Per person: the predicted body pose's largest pose-limit violation over the joints (degrees), whether
    any joint is beyond its limits by more than 5 degrees, and the GMM negative log-likelihood."""
    import torch

    from smplfast.body.samplers import pose_limit_violation
    from smplfast.data import SPINDataset
    from smplfast.fitting import MaxMixturePrior
    from smplfast_train.rotations import matrix_to_axis_angle

    split_dir = Path(split_dir)
    ds = SPINDataset(split_dir / "synth_spin.npz", split_dir, is_train=False, img_res=img_res)
    n = min(num, len(ds))
    gmm = MaxMixturePrior()
    pred, gt = [], []
    with torch.no_grad():
        for a in range(0, n, 32):
            items = [ds[i] for i in range(a, min(n, a + 32))]
            out = net(torch.stack([it["img"] for it in items]))
            pred.append(matrix_to_axis_angle(out.rotmat).reshape(-1, 72).double())
            gt.append(torch.stack([it["pose"] for it in items]).double())
    res = {}
    for name, pose in (("", torch.cat(pred)), ("gt_", torch.cat(gt))):
        viol = pose_limit_violation(pose)  # (n, 23) degrees
        res[name + "violation"] = viol.mean(1).tolist()
        res[name + "violation_max"] = viol.amax(1).tolist()
        res[name + "any_over5"] = (viol.amax(1) > 5).double().tolist()
        res[name + "nll"] = gmm(pose[:, 3:].float()).double().tolist()
    return res


def baseline(args, eval_set) -> None:
    """The constant prediction (rest pose, mean shape, every person's least-squares weak camera) on each
    split: the error a network that learned nothing about pose would have."""
    import torch

    runs = Path(args.runs)
    for split in SPLITS:
        path = runs / f"baseline_{split}_n{args.eval_num}.json"
        if path.is_file():
            continue
        es = eval_set(split)
        pose = torch.zeros(es.n, 72, dtype=torch.float64)
        pose[:, 0] = np.pi  # upright in the camera's y-down frame
        per, _ = es.evaluate(pose, torch.zeros(es.n, 10, dtype=torch.float64), es.gt_cam)
        path.write_text(json.dumps({"model": {k: np.asarray(v).tolist() for k, v in per.items()}}))


def evaluate(args) -> None:
    import torch

    from smplfast_train.eval.holopose import HoloPoseEvalSet, evaluate_holopose
    from smplfast_train.trainers.holopose import load_holopose_checkpoint

    torch.set_num_threads(1)

    @functools.lru_cache(maxsize=None)
    def eval_set(split):  # each split's evaluation set, built once when first needed, shared by every arm
        return HoloPoseEvalSet(Path(args.data) / split, args.eval_num, verbose=False)

    baseline(args, eval_set)
    runs = Path(args.runs)
    for arm in args.arms:
        run = runs / f"{arm}_s{args.seed}"
        if _last_step(run) < args.steps:
            print(f"{arm}: not trained to {args.steps} steps, skipped")
            continue
        net, cfg = load_holopose_checkpoint(run / "ckpt" / "last.pt")
        for split in SPLITS:
            path = run / f"holopose_eval_{split}_n{args.eval_num}.json"
            if path.is_file():
                continue
            t0 = time.perf_counter()
            configs = ("base", "kps3d_dp") if split == "wild_test" else ("base",)
            res = evaluate_holopose(net, Path(args.data) / split, num=args.eval_num, img_res=cfg.img_res,
                                    configs=configs, eval_set=eval_set(split))
            res["plaus"] = plausibility(net, Path(args.data) / split, args.eval_num, cfg.img_res)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(res))
            tmp.replace(path)
            print(f"{arm} {split}: {time.perf_counter() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------- report
def _per_sample(res: dict, key: str) -> np.ndarray:
    """``group/metric`` or ``refine/config/metric`` of an evaluation result, per person."""
    parts = key.split("/")
    v = res
    for p in parts:
        v = v[p]
    return np.asarray(v, dtype=np.float64)


def _load(runs: Path, arm: str, split: str, args):
    path = runs / f"{arm}_s{args.seed}" / f"holopose_eval_{split}_n{args.eval_num}.json"
    return json.loads(path.read_text()) if path.is_file() else None


#: The constant rest-pose baseline's metric each metric is compared with.
_BASELINE_OF = {"model/pa_mpjpe": "model/pa_mpjpe", "model/pa_mpjpe24": "model/pa_mpjpe24", "model/fr10": "model/fr10",
                "branch3d/pa_mpjpe24": "model/pa_mpjpe24", "branch_dp/dp_branch_fr10": "model/fr10",
                "refine/kps3d_dp/pa_mpjpe": "model/pa_mpjpe", "refine/kps3d_dp/fr10": "model/fr10"}


def report(args) -> dict:
    from smplfast_train.eval.metrics import paired_difference

    runs = Path(args.runs)
    keys = ("model/pa_mpjpe", "model/mpjpe", "model/pa_mpjpe24", "model/fr10", "model/auc10", "model/auc30",
            "branch3d/pa_mpjpe24", "branch_dp/dp_branch_fr10", "branch_dp/dp_branch_auc10", "branch2d/pck", "refine/kps3d_dp/pa_mpjpe",
            "refine/kps3d_dp/fr10", "plaus/violation", "plaus/any_over5", "plaus/nll", "model/camera_ok")
    table = {}
    for arm in ARMS:
        for split in SPLITS:
            res = _load(runs, arm, split, args)
            if res is None:
                continue
            row = {}
            for k in keys:
                try:
                    a = _per_sample(res, k)
                except KeyError:
                    continue
                row[k] = float(np.nanmean(a))
            row["gt/violation"] = float(np.mean(res["plaus"]["gt_violation"]))
            row["gt/nll"] = float(np.mean(res["plaus"]["gt_nll"]))
            table.setdefault(arm, {})[split] = row
    for split in SPLITS:
        path = runs / f"baseline_{split}_n{args.eval_num}.json"
        if path.is_file():
            res = json.loads(path.read_text())
            table.setdefault("rest pose (constant)", {})[split] = {
                k: float(np.nanmean(_per_sample(res, k))) for k in ("model/pa_mpjpe", "model/pa_mpjpe24", "model/fr10")}
    claims = []
    for a, b, split, key, text in ORDERINGS:
        ra, rb = _load(runs, a, split, args), _load(runs, b, split, args)
        if ra is None or rb is None:
            continue
        ka, kb = key if isinstance(key, tuple) else (key, key)
        try:
            xa, xb = _per_sample(ra, ka), _per_sample(rb, kb)
        except KeyError:
            continue
        ok = np.isfinite(xa) & np.isfinite(xb)
        d = paired_difference(xa[ok], xb[ok])
        verdict = ("reproduced (1 seed)" if d["ci_high"] < 0 else
                   "reversed (1 seed)" if d["ci_low"] > 0 else "not resolved")
        # An ordering between two predictors that are both worse than predicting the rest pose for everyone
        # says nothing about the method: report it as not resolved.
        base = table.get("rest pose (constant)", {}).get(split, {})
        ref = [base.get(_BASELINE_OF.get(k)) for k in (ka, kb)]
        if all(r is not None for r in ref) and xa[ok].mean() >= ref[0] and xb[ok].mean() >= ref[1]:
            verdict = "not resolved (both worse than the constant rest pose)"
        claims.append({"claim": text, "split": split, "a": f"{a}:{ka}", "b": f"{b}:{kb}", "mean_a": float(xa[ok].mean()),
                       "mean_b": float(xb[ok].mean()), "diff": d.to_dict(), "verdict": verdict})
    times = {}
    for arm in ARMS:
        rows = _log_rows(runs / f"{arm}_s{args.seed}")
        if rows:
            times[arm] = float(np.median([r["time_step"] for r in rows if "time_step" in r]))
    out = {"seed": args.seed, "steps": args.steps, "stage1_steps": args.stage1_steps, "eval_num": args.eval_num,
           "table": table, "claims": claims, "median_step_s": times}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    Path(args.out).with_suffix(".md").write_text(_markdown(out))
    if args.docs:
        _plot(runs, args, Path(args.docs) / "holopose_training.png")
    return out


def _fmt(v, d=1):
    return "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def _markdown(out) -> str:
    cols = [("model/pa_mpjpe", "PA-MPJPE", 1), ("model/pa_mpjpe24", "PA-24", 1), ("branch3d/pa_mpjpe24", "3D-kps PA-24", 1),
            ("model/fr10", "FR10", 1), ("branch_dp/dp_branch_fr10", "DP-branch FR10", 1), ("refine/kps3d_dp/pa_mpjpe", "Synergy PA", 1),
            ("refine/kps3d_dp/fr10", "Synergy FR10", 1), ("plaus/violation", "viol. °", 2),
            ("plaus/any_over5", "% >5°", 1), ("plaus/nll", "GMM NLL", 0), ("model/camera_ok", "% s>0", 1)]
    lines = [f"# HoloPose image tier: H2, H3, H4 (seed {out['seed']}, stage 1 {out['stage1_steps']} steps, "
             f"stage 2 {out['steps']} steps, {out['eval_num']} people)", ""]
    for split in SPLITS:
        lines += [f"## {split}", "", "| arm | " + " | ".join(c[1] for c in cols) + " | s/step |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for arm, by in out["table"].items():
            row = by.get(split)
            if row is None:
                continue
            vals = []
            for k, _, d in cols:
                v = row.get(k)
                vals.append(_fmt(100 * v if k in ("plaus/any_over5", "model/camera_ok") and v is not None else v, d))
            lines.append(f"| {arm} | " + " | ".join(vals) + f" | {_fmt(out['median_step_s'].get(arm), 2)} |")
        gt = next((by[split] for by in out["table"].values() if split in by and "gt/violation" in by[split]), None)
        if gt:
            lines += ["", f"Ground-truth poses: violation {gt['gt/violation']:.2f}°, GMM NLL {gt['gt/nll']:.0f}.", ""]
    lines += ["## Orderings (paired over people; 95 % bootstrap interval of a − b)", "",
              "| claim | split | a | b | a − b [95 % CI] | verdict |", "|---|---|---|---|---|---|"]
    for c in out["claims"]:
        d = c["diff"]
        lines.append(f"| {c['claim']} | {c['split']} | {_fmt(c['mean_a'], 2)} | {_fmt(c['mean_b'], 2)} | "
                     f"{d['mean']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}] | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def _plot(runs: Path, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), dpi=110)
    s1 = _log_rows(runs / "stage1")
    ax = axes[0]
    ax.plot([r["step"] for r in s1], [r["loss_int3d"] for r in s1], label="integral 3D L1 (m)")
    ax.plot([r["step"] for r in s1], [r["heatmap_visible"] for r in s1], label="joints with heatmap max ≥ 0.4")
    ax.set_title("stage 1")
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    for ax, key, title in ((axes[1], "loss_kp3d", "stage 2: model 3D joints L1 (m)"),
                           (axes[2], "loss_dp", "stage 2: DensePose surface loss (Eq. 4)")):
        for arm in ARMS:
            rows = _log_rows(runs / f"{arm}_s{args.seed}")
            if not rows:
                continue
            ax.plot([r["step"] for r in rows], [r.get(key, np.nan) for r in rows], lw=1, label=arm)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--stage1-steps", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-num", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--stage", default="all", choices=("all", "train", "evaluate", "report"))
    ap.add_argument("--out", default="docs/results/holopose_ablation", help="report path without suffix")
    ap.add_argument("--docs", default=None, help="also write the training-curve plot into this folder")
    args = ap.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        ap.error(f"unknown arms {unknown}; arms: {', '.join(ARMS)}")
    if args.stage in ("all", "train"):
        train(args)
    if args.stage in ("all", "evaluate"):
        evaluate(args)
    if args.stage in ("all", "report"):
        print(_markdown(report(args)))


if __name__ == "__main__":
    main()
