"""Pavlakos et al. 2018, Table 1 at CPU scale: experiment P1 (TRAINING_SPEC §6.2, recipe E-P).

    python training/experiments/pavlakos_ablation.py --data data/synth --runs runs/pavlakos --seeds 0 1

The supervision ladder of the PosePrior, for each prior-data bank (``matched``: every pose family, the
paper's UP-3D column; ``shifted``: the lab families only, its CMU column) and seed:

==================  ==========================================================================  =========
row                 what it is                                                                  preset
==================  ==========================================================================  =========
``aa``              parameter loss on the 72 axis-angle values                                  priors
``rotmat``          parameter loss on the 24 Rodrigues matrices                                 priors
``rotvert``         ``rotmat``, then + the per-vertex loss (last 3k of 5k steps)                 priors
``e2e``             ``rotvert`` fine-tuned with the reprojection loss (keypoints + silhouette)  e2e
``rotvert_step``    ``rotvert`` with the vertex loss switched on at once (no ramp, the         priors
                    paper's literal schedule and the preset's default; matched)
``e2e_noalt``       ``e2e`` without the alternating Priors updates (§8 P7; matched)           e2e
``pipeline``        Human2D (``human2d_s0``) + the ``rotvert`` / ``shape`` priors, on images   e2e, 0 steps
``e2e_full``        the whole network fine-tuned (Human2D updates in the round robin)         e2e
==================  ==========================================================================  =========

``e2e`` and the rows below it run after the first five (``--e2e-steps`` each); the last four only for the
first bank and seed. ``pipeline`` and ``e2e_full`` read images (Human2D's keypoints and silhouette), the
other rows the annotated keypoints and masks.

Every row of a (bank, seed) starts from the same seeded initialisation, draws the same instances and
detections in the same order and runs the same 5,000 PosePrior steps (``e2e`` adds its fine-tuning steps
to ``rotvert``'s). The ShapePrior, whose input (the silhouette) and target (β) the ladder does not change,
is trained once (``shape``: matched bank, seed 0) and shared by every row's evaluation with predicted β and
by the fine-tuning. Evaluation: ``pve_model`` (mm, meshes in the model frame, no alignment; the paper's
measure), the same with ground-truth β, PA-MPJPE and PVE on the first ``--eval-num`` people of
``wild_test``, with their annotated keypoints as input.

The report gives per-row means and paired differences (bootstrap 95 % intervals over people) per seed;
an ordering is "reproduced" only when every seed's interval excludes 0 in the paper's direction
(§6.1), "reversed" when every seed's excludes it the other way, else "not resolved".
Runs are resumed when interrupted and skipped when finished.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from spin_ablation import _finished, _train_cmd, run_queue  # noqa: E402

#: row -> (preset, settings beyond the preset)
ROWS = {
    "aa": ("pavlakos_priors", {"prior_param_loss": "aa", "prior_vertex_steps": 0}),
    "rotmat": ("pavlakos_priors", {"prior_param_loss": "rotmat", "prior_vertex_steps": 0}),
    "rotvert": ("pavlakos_priors", {"prior_vertex_ramp": 500}),
    "rotvert_step": ("pavlakos_priors", {"prior_vertex_ramp": 0}),
}
#: fine-tuning rows (second phase, from the ``rotvert`` run of the same bank and seed and the ``shape`` run):
#: row -> (settings, needs Human2D, first bank and seed only)
E2E_ROWS = {
    "e2e": ({}, False, False),
    "e2e_noalt": ({"e2e_alternate": False}, False, True),
    "pipeline": ({"num_steps": 0}, True, True),
    "e2e_full": ({}, True, True),
}
BANKS = ("matched", "shifted")
#: (better row, worse row, metric, the paper's claim): "better has the lower value".
ORDERINGS = (
    ("rotmat", "aa", "pve_model_gt_shape", "rot-matrix loss < axis-angle loss (Table 1 rows 2 < 1)"),
    ("rotvert", "rotmat", "pve_model_gt_shape", "+ per-vertex loss < rot-matrix loss (rows 3 < 2)"),
    ("e2e", "rotvert", "pve_model_gt_shape", "+ reprojection fine-tuning <= + per-vertex (rows 4 <= 3)"),
    ("rotvert", "rotvert_step", "pve_model_gt_shape", "vertex-loss ramp < step switch"),
    ("e2e", "e2e_noalt", "pve_model_gt_shape", "fine-tuning alternated with Priors updates < without (§8 P7)"),
    ("e2e_full", "pipeline", "pve_model_gt_shape", "whole network: fine-tuned < before fine-tuning"),
    ("e2e_full", "pipeline", "pa_mpjpe", "whole network: fine-tuned vs before fine-tuning, PA-MPJPE"),
    ("rotmat", "aa", "pa_mpjpe", "rot-matrix loss vs axis-angle loss, PA-MPJPE"),
    ("rotvert", "rotmat", "pa_mpjpe", "+ per-vertex loss vs rot-matrix loss, PA-MPJPE"),
    ("e2e", "rotvert", "pa_mpjpe", "+ reprojection fine-tuning vs + per-vertex, PA-MPJPE"),
)
METRICS = ("pve_model", "pve_model_gt_shape", "pve", "pa_mpjpe", "mpjpe")


def _run_dir(runs: Path, row: str, bank: str, seed: int) -> Path:
    return runs / f"{row}_{bank}_s{seed}"


def _rows_for(bank: str, seed: int, args):
    rows = [r for r in args.rows if r in ROWS]
    if "rotvert_step" in rows and not (bank == "matched" and seed == args.seeds[0]):
        rows.remove("rotvert_step")  # the ramp check runs once
    return rows


def train(args) -> None:
    data, runs = Path(args.data), Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    common = {"eval_splits": "[wild_test]", "eval_max_samples": args.eval_num}
    todo = []
    shape = runs / "shape_matched_s0"
    if not _finished(shape, args.shape_steps):
        todo.append(("shape", _train_cmd("pavlakos_priors", data, shape, {
            **common, "prior_train": "shape", "seed": 0, "batch_size": args.shape_batch, "num_steps": args.shape_steps,
            "prior_vertex_steps": args.shape_steps // 2}), shape))
    for seed in args.seeds:
        for bank in args.banks:
            for row in _rows_for(bank, seed, args):
                preset, sets = ROWS[row]
                run = _run_dir(runs, row, bank, seed)
                if _finished(run, args.steps):
                    continue
                sets = {**common, **sets, "prior_train": "pose", "prior_bank": bank, "seed": seed,
                        "num_steps": args.steps}
                if "prior_vertex_steps" not in sets:
                    sets["prior_vertex_steps"] = args.steps * 3 // 5
                todo.append((f"{row}_{bank}_s{seed}", _train_cmd(preset, data, run, sets), run))
    human2d = runs / "human2d_s0"
    if any(E2E_ROWS[r][1] for r in args.rows if r in E2E_ROWS) and not _finished(human2d, args.human2d_steps):
        todo.append(("human2d", _train_cmd("pavlakos_human2d", data, human2d, {
            "eval_splits": "[wild_test]", "eval_max_samples": args.eval_num, "seed": 0, "num_steps": args.human2d_steps,
            "eval_every": 1000}), human2d))
    # the long vertex-loss rows first, so the short ones fill the other process
    todo.sort(key=lambda t: 0 if "rotvert" in t[0] or t[0] in ("shape", "human2d") else 1)
    run_queue(todo, args.parallel)
    todo = []
    for seed in args.seeds:
        for bank in args.banks:
            for row, (sets, full, once) in E2E_ROWS.items():
                if row not in args.rows or (once and not (bank == args.banks[0] and seed == args.seeds[0])):
                    continue
                run = _run_dir(runs, row, bank, seed)
                steps = sets.get("num_steps", args.e2e_steps)
                if _finished(run, steps):
                    continue
                needs = [_run_dir(runs, "rotvert", bank, seed), shape] + ([human2d] if full else [])
                steps_of = {human2d: args.human2d_steps, shape: args.shape_steps}
                unfinished = [str(r) for r in needs if not _finished(r, steps_of.get(r, args.steps))]
                if unfinished:  # its starting checkpoints are still training (another invocation runs them)
                    print(f"{row}_{bank}_s{seed}: waiting for {unfinished}; run this command again later", flush=True)
                    continue
                sets = {**common, "num_steps": args.e2e_steps, **sets, "prior_bank": bank, "seed": seed,
                        "e2e_pose_init": _run_dir(runs, "rotvert", bank, seed) / "ckpt" / "last.pt",
                        "e2e_shape_init": shape / "ckpt" / "last.pt"}
                if full:
                    sets["e2e_human2d_init"] = human2d / "ckpt" / "last.pt"
                todo.append((f"{row}_{bank}_s{seed}", _train_cmd("pavlakos_e2e", data, run, sets), run))
    run_queue(todo, args.parallel)


def _final(run: Path, shape_run: Path = None, data: Path = None, eval_num: int = 500):
    """The run's final ``wild_test`` evaluation. The supervision-ladder rows train the PosePrior only, so
    their own ShapePrior is untrained: with ``shape_run`` they are evaluated again with that run's
    ShapePrior (cached as ``eval_shared_shape_n<N>.json``), so ``pve_model`` means the same in every row."""
    ev = sorted((run / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1])) if (run / "eval").is_dir() else []
    if not ev:
        return None
    if shape_run is not None:
        cache = run / f"eval_shared_shape_n{eval_num}.json"
        if not cache.is_file():
            import torch
            from smplfast_train.trainers.pavlakos import evaluate_priors, load_priors_checkpoint

            torch.set_num_threads(1)
            net, _ = load_priors_checkpoint(run / "ckpt" / "last.pt")
            net.shape_prior.load_state_dict(load_priors_checkpoint(shape_run / "ckpt" / "last.pt")[0].shape_prior.state_dict())
            cache.write_text(json.dumps(evaluate_priors(net, data / "wild_test", max_samples=eval_num)))
        return json.loads(cache.read_text())
    res = json.loads(ev[-1].read_text())["results"]
    return res.get("wild_test") or next(iter(res.values()))


def report(args) -> dict:
    from smplfast_train.eval.metrics import paired_difference

    runs = Path(args.runs)
    table, per = {}, {}
    for bank in args.banks:
        for seed in args.seeds:
            for row in list(ROWS) + list(E2E_ROWS):
                shared = runs / "shape_matched_s0" if row in ROWS else None
                r = _final(_run_dir(runs, row, bank, seed), shared, Path(args.data), args.eval_num)
                if r is None:
                    continue
                per[(row, bank, seed)] = {k: np.asarray(r["per_sample"][k], np.float64) for k in METRICS}
                table.setdefault(bank, {}).setdefault(row, {})[f"s{seed}"] = {k: float(np.nanmean(v)) for k, v in
                                                                              per[(row, bank, seed)].items()}
    claims = []
    for bank in args.banks:
        for a, b, key, text in ORDERINGS:
            diffs = {}
            for seed in args.seeds:
                if (a, bank, seed) in per and (b, bank, seed) in per:
                    xa, xb = per[(a, bank, seed)][key], per[(b, bank, seed)][key]
                    ok = np.isfinite(xa) & np.isfinite(xb)
                    diffs[f"s{seed}"] = paired_difference(xa[ok], xb[ok]).to_dict()
            if not diffs:
                continue
            if all(d["ci_high"] < 0 for d in diffs.values()):
                verdict = f"reproduced ({len(diffs)} seed{'s' if len(diffs) > 1 else ''})"
            elif all(d["ci_low"] > 0 for d in diffs.values()):
                verdict = f"reversed ({len(diffs)} seed{'s' if len(diffs) > 1 else ''})"
            else:
                verdict = "not resolved"
            claims.append({"bank": bank, "claim": text, "metric": key, "better": a, "worse": b, "diff": diffs,
                           "verdict": verdict})
    # the fine-tuning gain under the domain shift vs matched (Table 1: -6.5 vs -3.0 mm): per person
    # (e2e - rotvert) on shifted minus the same on matched (the same wild_test people in every run)
    if set(BANKS) <= set(args.banks):
        for key in ("pve_model_gt_shape", "pa_mpjpe"):
            diffs = {}
            for seed in args.seeds:
                need = [(r, b, seed) for r in ("e2e", "rotvert") for b in BANKS]
                if all(n in per for n in need):
                    gain = {b: per[("e2e", b, seed)][key] - per[("rotvert", b, seed)][key] for b in BANKS}
                    x = gain["shifted"] - gain["matched"]
                    diffs[f"s{seed}"] = paired_difference(x[np.isfinite(x)]).to_dict()
            if diffs:
                n = len(diffs)
                verdict = (f"reproduced ({n} seed{'s' if n > 1 else ''})" if all(d["ci_high"] < 0 for d in diffs.values())
                           else f"reversed ({n} seed{'s' if n > 1 else ''})" if all(d["ci_low"] > 0 for d in diffs.values())
                           else "not resolved")
                claims.append({"bank": "shifted − matched", "metric": key, "better": "e2e gain (shifted)",
                               "worse": "e2e gain (matched)", "diff": diffs, "verdict": verdict,
                               "claim": "fine-tuning gains more under the prior-data shift (Table 1: −6.5 vs −3.0 mm)"})
    out = {"seeds": list(args.seeds), "steps": args.steps, "eval_num": args.eval_num, "table": table, "claims": claims}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    Path(args.out).with_suffix(".md").write_text(_markdown(out))
    if args.docs:
        plot(runs, Path(args.docs) / "pavlakos_training.png")
    return out


def _log(run: Path, key: str):
    steps, vals = [], []
    if (run / "log.jsonl").is_file():
        for line in (run / "log.jsonl").read_text().splitlines():
            d = json.loads(line)
            if key in d:
                steps.append(d["step"])
                vals.append(d[key])
    return steps, vals


def plot(runs: Path, path: Path) -> None:
    """Training curves: the PosePrior's parameter loss through the per-vertex phase (ramp vs step switch),
    the fine-tuning's reprojection terms (with vs without the alternating Priors updates) and the
    alternating updates' parameter loss, Human2D's PCK and silhouette IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    for row, label in (("rotmat", "rot-matrix loss only"), ("rotvert", "+ vertex loss, 500-step ramp"),
                       ("rotvert_step", "+ vertex loss, step switch")):
        ax[0].plot(*_log(_run_dir(runs, row, "matched", 0), "loss_pose_param"), label=label)
    ax[0].axvline(2000, color="grey", lw=0.8, ls=":")
    ax[0].set(title="PosePrior parameter loss (matched, seed 0)", xlabel="step", ylabel="Σ ‖R̂ − R‖²", yscale="log")
    for row, ls in (("e2e", "-"), ("e2e_noalt", "--"), ("e2e_full", ":")):
        run = _run_dir(runs, row, "matched", 0)
        ax[1].plot(*_log(run, "loss_e2e_kp"), ls=ls, color="C0", label=f"{row}: keypoint term (before μ)")
        ax[1].plot(*_log(run, "loss_e2e_sil"), ls=ls, color="C3", label=f"{row}: silhouette term")
    ax[1].set(title="reprojection terms (px², per image)", xlabel="fine-tuning step", yscale="log")
    for row, ls in (("e2e", "-"), ("e2e_full", ":")):
        ax[2].plot(*_log(_run_dir(runs, row, "matched", 0), "loss_prior_param"), ls=ls, label=f"{row}: alternating Priors updates")
    ax[2].set(title="Priors' own parameter loss during fine-tuning", xlabel="fine-tuning step")
    h2d = runs / "human2d_s0" / "eval"
    ev = sorted(h2d.glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1])) if h2d.is_dir() else []
    if ev:
        steps = [int(p.stem.split("_")[1]) for p in ev]
        means = [json.loads(p.read_text())["results"]["wild_test"]["mean"] for p in ev]
        for key in ("pck_0.05", "pck_0.1", "sil_iou"):
            ax[3].plot(steps, [m[key] for m in means], marker="o", label=key)
    ax[3].set(title="Human2D on wild_test", xlabel="step", ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, d=1):
    return "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def _markdown(out) -> str:
    lines = [f"# Pavlakos Table 1 at CPU scale (seeds {out['seeds']}, {out['steps']} PosePrior steps, "
             f"{out['eval_num']} wild_test people)", ""]
    for bank, rows in out["table"].items():
        lines += [f"## bank `{bank}`", "", "| row | seed | pve_model (mm) | pve_model, GT β | PVE | PA-MPJPE | MPJPE |",
                  "|---|---|---|---|---|---|---|"]
        for row, seeds in rows.items():
            for s, m in seeds.items():
                lines.append(f"| {row} | {s} | " + " | ".join(_fmt(m[k]) for k in METRICS) + " |")
        lines.append("")
    lines += ["## Orderings (paired, bootstrap 95 % interval of better − worse, mm)", "",
              "| bank | claim | metric | " + " | ".join(f"s{s}" for s in out["seeds"]) + " | verdict |",
              "|---|---|---|" + "---|" * len(out["seeds"]) + "---|"]
    for c in out["claims"]:
        cells = []
        for s in out["seeds"]:
            d = c["diff"].get(f"s{s}")
            cells.append("–" if d is None else f"{d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]")
        lines.append(f"| {c['bank']} | {c['claim']} | {c['metric']} | " + " | ".join(cells) + f" | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("train", "report", "all"), nargs="?", default="all")
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--runs", default="runs/pavlakos")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--banks", nargs="+", default=list(BANKS), choices=BANKS)
    ap.add_argument("--rows", nargs="+", default=list(ROWS) + list(E2E_ROWS), choices=list(ROWS) + list(E2E_ROWS))
    ap.add_argument("--steps", type=int, default=5000, help="PosePrior steps per row (the last 3/5 with the vertex loss)")
    ap.add_argument("--shape-steps", type=int, default=2000)
    ap.add_argument("--e2e-steps", type=int, default=500)
    ap.add_argument("--human2d-steps", type=int, default=3000)
    ap.add_argument("--shape-batch", type=int, default=64)
    ap.add_argument("--eval-num", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default="docs/results/pavlakos_ablation")
    ap.add_argument("--docs", default="", help="folder for the training-curve picture (e.g. docs/images)")
    args = ap.parse_args(argv)
    if args.stage in ("train", "all"):
        train(args)
    if args.stage in ("report", "all"):
        print(json.dumps(report(args)["claims"], indent=1))


if __name__ == "__main__":
    main()
