"""SPIN's Table 1 ordering and Fig. 4 on the synthetic splits (TRAINING_SPEC §6.3, recipe E-S).

    python training/experiments/spin_ablation.py --data data/synth --runs runs/spin_ablation

Stages, each skipped when its output exists, so a killed run is resumed by running the same command:

1. a GMM pose prior fitted on the lab families only (the fits must not know the test poses);
2. static fits of wild_train: 4-stage SMPLify from the mean pose with that prior (SPIN Sup.Mat.'s first
   approach), with their error against the hidden ground truth;
3. spin_pretrain_lab: full supervision on lab_train, the common start of every arm;
4. hmr2d_prior's weight, calibrated at that checkpoint (calibrate_prior.py);
5. the arms (hmr2d, hmr2d_prior, spin_static, spin by default) from the same checkpoint, with the same
   data order, steps and seed, ``--parallel`` at a time (one thread each); each evaluates wild_test and
   lab_test at its end;
6. the report: per-arm means, paired differences against ``spin`` with bootstrap 95 % intervals, the
   claim rule of §6.1 ("reproduced" only if every seed agrees and the pooled interval excludes 0, else
   "not resolved"), wall time per arm, the fits dictionary's error against the hidden GT over training
   (spin vs spin_static, SPIN Fig. 4) as a plot; written to ``--runs``/report.{json,md} and, with
   ``--docs``, the plot to docs/images.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINING = HERE.parent
sys.path.insert(0, str(TRAINING))

LAB_FAMILIES = "standing,walking,t_pose,a_pose,arms_raised"
METRICS = ("pa_mpjpe", "mpjpe", "pve", "rot_err")


def _run(cmd, log=None, env=None):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if log is None:
        subprocess.run([str(c) for c in cmd], check=True, env=env)
        return None
    f = open(log, "a")
    return subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env)


def _train_cmd(preset, data, out, sets):
    cmd = [sys.executable, TRAINING / "train.py", "--preset", preset, "--data", data, "--out", out, "--no-progress"]
    if (Path(out) / "ckpt" / "last.pt").is_file():
        cmd.append("--resume")
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _finished(run: Path, steps: int) -> bool:
    ev = sorted((run / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1])) if (run / "eval").is_dir() else []
    return bool(ev) and int(ev[-1].stem.split("_")[1]) == steps


def stages(args):
    data, runs = Path(args.data), Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    prior = data / "gmm_lab.npz"
    if not prior.is_file():
        _run([sys.executable, "-m", "smplfast.fitting.build_prior", "--families", LAB_FAMILIES, "--out", prior])
    static = data / "static_fits" / "wild_train_static_fits.npz"
    if not static.is_file():
        _run([sys.executable, TRAINING / "make_static_fits.py", "--data", data / "wild_train", "--out",
              data / "static_fits", "--init", "mean", "--pose-prior", prior])
    pre = runs / "spin_pretrain_lab"
    common = {"pose_prior": prior, "seed": args.seed}
    if not _finished(pre, args.pretrain_steps):
        _run(_train_cmd("spin_pretrain_lab", data, pre, {**common, "num_steps": args.pretrain_steps,
                                                          "eval_max_samples": args.eval_samples}))
    ckpt = pre / "ckpt" / "last.pt"
    cal_path = runs / "prior_calibration.json"
    if not cal_path.is_file():
        from calibrate_prior import calibrate

        import torch

        torch.set_num_threads(1)
        cal_path.write_text(json.dumps(calibrate(ckpt, data, pose_prior=str(prior)), indent=1))
    w_prior = json.loads(cal_path.read_text())["w_prior"]
    todo = []
    for arm in args.arms:
        run = runs / f"{arm}_s{args.seed}"
        if _finished(run, args.steps):
            continue
        sets = {**common, "num_steps": args.steps, "eval_max_samples": args.eval_samples,
                "eval_splits": "[wild_test,lab_test]"}
        if arm != "spin_unpaired":  # the lab pretrain saw 3D and SMPL labels: an unpaired arm starts without it
            sets["init_checkpoint"] = ckpt
        if arm == "hmr2d_prior":
            sets["w_prior"] = w_prior
        todo.append((arm, _train_cmd(arm, data, run, sets), run))
    run_queue(todo, args.parallel)


def run_queue(todo, parallel: int) -> None:
    """Run ``(name, command, run folder)`` entries, ``parallel`` at a time, each logging to
    ``<run folder>.log``; stop at the first failure."""
    todo = list(todo)
    running = []
    while todo or running:
        while todo and len(running) < parallel:
            name, cmd, run = todo.pop(0)
            run.mkdir(parents=True, exist_ok=True)
            running.append((name, run, _run(cmd, log=run.parent / f"{run.name}.log"), time.time()))
        time.sleep(10)
        for item in list(running):
            name, run, p, t0 = item
            if p.poll() is not None:
                running.remove(item)
                print(f"{name}: exit {p.returncode} after {time.time() - t0:.0f} s", flush=True)
                if p.returncode != 0:
                    raise SystemExit(f"{name} failed; see {run.parent / (run.name + '.log')}")


def _final_eval(run: Path) -> dict:
    ev = sorted((run / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return json.loads(ev[-1].read_text())


def _dict_curve(run: Path):
    steps, err = [], []
    for line in open(run / "log.jsonl"):
        d = json.loads(line)
        if "fits_wild_train_pa_mpjpe" in d:
            steps.append(d["step"])
            err.append(d["fits_wild_train_pa_mpjpe"])
    return steps, err


def report(args) -> dict:
    import numpy as np

    from smplfast_train.eval.metrics import claim, paired_difference
    from smplfast_train.loop import load_checkpoint

    runs = Path(args.runs)
    seeds = args.report_seeds or [args.seed]
    table = {}
    for arm in args.arms:
        for seed in seeds:
            run = runs / f"{arm}_s{seed}"
            if not _finished(run, args.steps):
                continue
            ev = _final_eval(run)["results"]
            log = [json.loads(x) for x in open(run / "log.jsonl")]
            seconds = float(load_checkpoint(run / "ckpt" / "last.pt")["elapsed"])
            table[(arm, seed)] = {"eval": ev, "seconds": seconds,
                                  "fit_time": float(np.mean([x.get("time_fit", 0) for x in log])),
                                  "step_time": float(np.mean([x.get("time_step", 0) for x in log]))}
    out = {"arms": {}, "paired": {}, "claims": {}, "seeds": seeds}
    for (arm, seed), row in table.items():
        out["arms"][f"{arm}_s{seed}"] = {
            split: {m: row["eval"][split]["mean"][m] for m in METRICS if m in row["eval"][split]["mean"]}
            for split in row["eval"]} | {"train_seconds": row["seconds"], "step_time": row["step_time"],
                                         "fit_time": row["fit_time"]}
    # The orderings of SPIN Table 1 (lower error first): "a < b" is tested on a - b < 0 per sample.
    orderings = [("spin", "spin_static"), ("spin", "hmr2d"), ("spin", "hmr2d_prior"), ("spin_static", "hmr2d"),
                 ("spin_static", "hmr2d_prior"), ("hmr2d_prior", "hmr2d"), ("spin_oracle_fits", "spin"),
                 ("spin_oracle_fits", "spin_static"),
                 ("spin", "spin_unpaired")]
    for a, b in orderings:
        if a not in args.arms or b not in args.arms:
            continue
        for split in ("wild_test", "lab_test"):
            for m in METRICS:
                per_seed, pooled = [], []
                for seed in seeds:
                    if (a, seed) not in table or (b, seed) not in table:
                        continue
                    ea, eb = table[(a, seed)]["eval"][split], table[(b, seed)]["eval"][split]
                    assert ea["sample_index"] == eb["sample_index"], "arms were evaluated on different samples"
                    va, vb = np.asarray(ea["per_sample"][m], float), np.asarray(eb["per_sample"][m], float)
                    per_seed.append(va - vb)
                    pooled.append(seed)
                    out["paired"][f"{a} - {b} / {split} / {m} / s{seed}"] = paired_difference(va, vb)
                if per_seed:
                    c = claim(per_seed, expected_sign=-1)
                    c["seeds"] = pooled
                    if len(pooled) < len(seeds):  # a requested seed is missing: no claim either way
                        c["verdict"] = f"incomplete ({len(pooled)} of {len(seeds)} seeds)"
                    out["claims"][f"{a} < {b} on {split} {m}"] = c
    curves = {}
    for arm in ("spin", "spin_static"):
        run = runs / f"{arm}_s{args.seed}"
        if (run / "log.jsonl").is_file():
            curves[arm] = _dict_curve(run)
    out["dictionary_curves"] = curves
    (runs / "report.json").write_text(json.dumps(out, indent=1, default=float))
    md = _markdown(out, args)
    (runs / "report.md").write_text(md)
    print(md)
    if curves:
        losses = _loss_curves(runs, args.arms, args.seed)
        _plot(curves, runs / "spin_fits_curve.png", losses)
        if args.docs:
            _plot(curves, Path(args.docs) / "spin_fits_curve.png", losses)
    return out


def _markdown(out, args) -> str:
    lines = ["| arm | wild_test PA-MPJPE | MPJPE | PVE | rot_err | lab_test PA-MPJPE | MPJPE | PVE | rot_err | step (s) | fit (s) | train (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in out["arms"].items():
        w, lab = r.get("wild_test", {}), r.get("lab_test", {})
        cells = [f"{w.get(m, float('nan')):.1f}" for m in METRICS] + [f"{lab.get(m, float('nan')):.1f}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['step_time']:.2f} | {r['fit_time']:.2f} | {r['train_seconds'] / 60:.1f} |")
    lines += ["", "| claim (seeds pooled) | verdict | per-seed mean differences | pooled mean | 95 % CI |",
              "|---|---|---|---|---|"]
    for k, c in out["claims"].items():
        p = c["pooled"]
        per = ", ".join(f"{d['mean']:+.2f}" for d in c["per_seed"])
        lines.append(f"| {k} ({', '.join(str(s) for s in c['seeds'])}) | {c['verdict']} | {per} | {p['mean']:+.2f} | "
                     f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] |")
    return "\n".join(lines) + "\n"


def _loss_curves(runs: Path, arms, seed):
    out = {}
    for arm in arms:
        log = runs / f"{arm}_s{seed}" / "log.jsonl"
        if log.is_file():
            rows = [json.loads(x) for x in open(log)]
            out[arm] = ([r["step"] for r in rows], [r.get("loss_kp_2d", float("nan")) for r in rows])
    return out


def _plot(curves, path, losses=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if losses else 1, figsize=(10 if losses else 5, 3.4), dpi=120, squeeze=False)
    ax = axes[0, 0]
    for arm, (s, e) in curves.items():
        ax.plot(s, e, marker="o", ms=3, label=arm)
    ax.set_xlabel("training step")
    ax.set_ylabel("fits vs hidden GT, PA-MPJPE (mm)")
    ax.set_title("wild_train fits dictionary during training")
    ax.grid(alpha=0.3)
    ax.legend()
    if losses:
        ax = axes[0, 1]
        for arm, (s, v) in losses.items():
            ax.plot(s, v, lw=1, label=arm)
        ax.set_xlabel("training step")
        ax.set_ylabel("2D keypoint loss (SPIN's L_2d)")
        ax.set_title("training loss per arm")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--arms", default="hmr2d,hmr2d_prior,spin_static,spin")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-seeds", default="", help="seeds to pool in the report (default: --seed)")
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--docs", default=None, help="also write the plot into this folder (e.g. docs/images)")
    args = ap.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    args.report_seeds = [int(s) for s in args.report_seeds.split(",") if s]
    if not args.report_only:
        stages(args)
    return report(args)


if __name__ == "__main__":
    main()
