"""MV-SPIN's Table 7 ablation on the synthetic rigs (TRAINING_SPEC §6.3, recipe E-M, M2 and M3).

    python training/experiments/mvspin_ablation.py --data data/synth --runs runs/mvspin_ablation \\
        --init runs/spin_ablation/spin_pretrain_lab/ckpt/last.pt --seeds 0,1

Needs ``rig_train`` / ``rig_test`` (``smplfast synth --split rig_train|rig_test``), ``wild_test`` and the lab
GMM prior (``gmm_lab.npz``, made by spin_ablation.py). Every arm starts from the same checkpoint (``--init``,
the lab pretrain), uses the same data order, steps and seed, and is evaluated single-view on every view of
``rig_test`` and on ``wild_test``:

* M2: ``mvspin_l2d_l3d`` (no fits), ``mvspin_sv`` (single-view SMPLify per view), ``mvspin`` (uncalibrated
  multi-view SMPLify), ``mvspin_calibrated`` (known rig);
* M3: the same arms without the rig's 3D labels (``unpaired``: 2D keypoints only; ``mvspin_l2d_l3d`` is
  then L2D only).

Runs are skipped when finished and resumed when interrupted (run the same command again). The report
(``--runs``/report.{json,md}, ``--docs`` for the dictionary plot) gives per-arm means, the paired
differences with bootstrap intervals, the claim rule of §6.1, step time and the fit's share of it, and the
fits dictionary's error against the hidden GT during training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from spin_ablation import _final_eval, _finished, _train_cmd, run_queue  # noqa: E402

METRICS = ("pa_mpjpe", "mpjpe", "pve", "pa_pve", "rot_err")
SPLITS = ("rig_test", "wild_test")
ARMS = ("mvspin_l2d_l3d", "mvspin_sv", "mvspin", "mvspin_calibrated")
#: "a < b" (lower error first) orderings of MV-SPIN's premise (M1 in the loop) and Table 7.
ORDERINGS = (("mvspin", "mvspin_l2d_l3d"), ("mvspin", "mvspin_sv"), ("mvspin_sv", "mvspin_l2d_l3d"),
             ("mvspin_calibrated", "mvspin"), ("mvspin_calibrated", "mvspin_l2d_l3d"))


def _runs(args):
    """(name, preset, seed, settings) of every run requested."""
    out = []
    for exp in args.experiments:
        for seed in (args.seeds if exp == "m2" else args.seeds[:args.m3_seeds]):
            for arm in args.arms:
                sets = {"pose_prior": Path(args.data) / "gmm_lab.npz", "seed": seed, "num_steps": args.steps,
                        "init_checkpoint": args.init, "eval_max_samples": 0, "eval_splits": "[rig_test,wild_test]"}
                if exp == "m3":
                    sets["unpaired"] = True
                out.append((f"{arm}_{exp}_s{seed}", arm, seed, sets))
    return out


def stages(args):
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    todo = [(name, _train_cmd(arm, args.data, runs / name, sets), runs / name)
            for name, arm, seed, sets in _runs(args) if not _finished(runs / name, args.steps)]
    run_queue(todo, args.parallel)


def _curve(run: Path, key="fits_rig_train_pa_mpjpe"):
    steps, vals = [], []
    for line in open(run / "log.jsonl"):
        d = json.loads(line)
        if key in d:
            steps.append(d["step"])
            vals.append(d[key])
    return steps, vals


def report(args) -> dict:
    import numpy as np

    from smplfast_train.eval.metrics import claim, paired_difference
    from smplfast_train.loop import load_checkpoint

    runs = Path(args.runs)
    table = {}
    for name, arm, seed, _ in _runs(args):
        run = runs / name
        if not _finished(run, args.steps):
            continue
        log = [json.loads(x) for x in open(run / "log.jsonl")]
        table[name] = {"eval": _final_eval(run)["results"],
                       "seconds": float(load_checkpoint(run / "ckpt" / "last.pt")["elapsed"]),
                       "step_time": float(np.median([x["time_step"] for x in log if "time_step" in x])),
                       "fit_time": float(np.median([x.get("time_fit", 0.0) for x in log if "time_step" in x]))}
    out = {"arms": {}, "paired": {}, "claims": {}, "seeds": args.seeds, "curves": {}}
    for name, row in table.items():
        out["arms"][name] = {s: {m: row["eval"][s]["mean"][m] for m in METRICS} for s in row["eval"]}
        out["arms"][name].update(train_seconds=row["seconds"], step_time=row["step_time"], fit_time=row["fit_time"])
    for exp in args.experiments:
        seeds = args.seeds if exp == "m2" else args.seeds[:args.m3_seeds]
        for a, b in ORDERINGS:
            for split in SPLITS:
                for m in METRICS:
                    per_seed, used = [], []
                    for seed in seeds:
                        ra, rb = table.get(f"{a}_{exp}_s{seed}"), table.get(f"{b}_{exp}_s{seed}")
                        if ra is None or rb is None:
                            continue
                        ea, eb = ra["eval"][split], rb["eval"][split]
                        assert ea["sample_index"] == eb["sample_index"], "arms were evaluated on different samples"
                        d = np.asarray(ea["per_sample"][m], float) - np.asarray(eb["per_sample"][m], float)
                        per_seed.append(d)
                        used.append(seed)
                        out["paired"][f"{exp}: {a} - {b} / {split} / {m} / s{seed}"] = paired_difference(d)
                    if per_seed:
                        c = claim(per_seed, expected_sign=-1)
                        c["seeds"] = used
                        if len(used) < len(seeds):
                            c["verdict"] = f"incomplete ({len(used)} of {len(seeds)} seeds)"
                        out["claims"][f"{exp}: {a} < {b} on {split} {m}"] = c
    for name in table:
        if "_m2_s" in name and not name.startswith("mvspin_l2d_l3d"):
            out["curves"][name] = _curve(runs / name)
    (runs / "report.json").write_text(json.dumps(out, indent=1, default=float))
    md = _markdown(out)
    (runs / "report.md").write_text(md)
    print(md)
    if out["curves"]:
        _plot(out["curves"], runs / "mvspin_fits_curve.png")
        if args.docs:
            _plot(out["curves"], Path(args.docs) / "mvspin_fits_curve.png")
    return out


def _markdown(out) -> str:
    head = " | ".join(f"{s} {m}" for s in SPLITS for m in METRICS)
    lines = [f"| run | {head} | step (s) | fit (s) | train (min) |", "|---" * (2 + 2 * len(METRICS) + 2) + "|"]
    for name, r in out["arms"].items():
        cells = [f"{r.get(s, {}).get(m, float('nan')):.1f}" for s in SPLITS for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {r['step_time']:.2f} | {r['fit_time']:.2f} | {r['train_seconds'] / 60:.1f} |")
    lines += ["", "| claim (seeds pooled) | verdict | per-seed mean differences | pooled mean | 95 % CI |",
              "|---|---|---|---|---|"]
    for k, c in out["claims"].items():
        p = c["pooled"]
        per = ", ".join(f"{d['mean']:+.2f}" for d in c["per_seed"])
        lines.append(f"| {k} ({', '.join(str(s) for s in c['seeds'])}) | {c['verdict']} | {per} | {p['mean']:+.2f} | "
                     f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] |")
    return "\n".join(lines) + "\n"


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
    for name, (s, e) in sorted(curves.items()):
        ax.plot(s, e, marker="o", ms=3, label=name.replace("_m2", ""))
    ax.set_xlabel("training step")
    ax.set_ylabel("fits vs hidden GT, PA-MPJPE (mm)")
    ax.set_title("rig_train fits dictionary during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--init", required=True, help="the common starting checkpoint (the lab pretrain)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--experiments", default="m2,m3", help="m2 (with the rig's 3D labels), m3 (without)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--m3-seeds", type=int, default=1, help="how many of --seeds M3 runs")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--docs", default=None, help="also write the plot into this folder (e.g. docs/images)")
    args = ap.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    args.experiments = [e for e in args.experiments.split(",") if e]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.report_only:
        stages(args)
    return report(args)


if __name__ == "__main__":
    main()
