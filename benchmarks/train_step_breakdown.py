"""Time per stage of the SPIN training step (cpu tier): data, forward, fit, backward.

    python benchmarks/train_step_breakdown.py --data data/synth --steps 30 --init-checkpoint runs/spin_ablation/spin_pretrain_lab/ckpt/last.pt
    python benchmarks/train_step_breakdown.py --data data/synth --presets mvspin,mvspin_calibrated,mvspin_sv \
        --batches 8,16 --optimizers lm,adam       # MV-SPIN: batch = subjects (x 4 views)

Runs the ``spin`` preset (``tiny`` backbone at 128², one thread) for ``--steps`` steps at each batch
size, with SMPLify by LM (the default: the fused kernel; ``lm-unfused``: the LM loop driven from
Python) and by SPIN's Adam procedure (100 + 100 iterations, lr 1e-2) on
the same steps, and prints the median seconds per stage (the first 5 steps are warm-up and left out)
and the share of the step the in-loop fit takes. The goal: the fit ≤ 10 % of the step with LM.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))


def measure(data, batch, optimizer, steps, threads=1, init_checkpoint="", preset="spin", pose_prior="") -> dict:
    import numpy as np
    import torch
    from smplfast_train.config import load_config
    from smplfast_train.trainers import TRAINERS

    torch.set_num_threads(threads)
    over = {"data": str(data), "batch_size": batch, "num_steps": steps,
            "fit_optimizer": "lm" if optimizer.startswith("lm") else optimizer, "fit_fused": optimizer != "lm-unfused",
            "log_every": 1, "ckpt_every": 0, "diag_every": 0, "eval_splits": [], "tensorboard": False,
            "threads": threads}
    if init_checkpoint:
        over["init_checkpoint"] = init_checkpoint
    if pose_prior:
        over["pose_prior"] = pose_prior
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(preset, "cpu", over)
        t = TRAINERS[cfg.trainer](cfg, Path(tmp) / "run", progress=False)
        t.train()
        lines = [json.loads(x) for x in open(Path(tmp) / "run" / "log.jsonl")][5:]
    med = {k: float(np.median([x[k] for x in lines if k in x])) for k in
           ("time_data", "time_prepare", "time_forward", "time_fit", "time_backward", "time_step")}
    med["fit_share"] = med["time_fit"] / med["time_step"]
    # SMPLify's own time inside the fit stage (the rest: the stored fits' loss, the dictionary)
    smplify = [x.get("time_fit_camera", 0.0) + x.get("time_fit_body", 0.0) for x in lines]
    med["time_smplify"] = float(np.median(smplify))
    med["smplify_share"] = med["time_smplify"] / med["time_step"]
    med["fit_rows"] = float(np.median([x.get("fit_rows", 0) for x in lines]))
    med["fit_accept"] = float(np.mean([x.get("fit_accept", 0) for x in lines]))
    return {"preset": preset, "batch": batch, "optimizer": optimizer, "steps": len(lines), **med}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--presets", default="spin", help="comma-separated presets (mvspin*: batch = subjects)")
    ap.add_argument("--pose-prior", default="", help="GMM for SMPLify (default: the shipped prior)")
    ap.add_argument("--batches", default="64,32")
    ap.add_argument("--optimizers", default="lm,adam", help="lm (fused kernel), lm-unfused, adam")
    ap.add_argument("--init-checkpoint", default="", help="start from these weights (e.g. the lab pretrain)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for preset in args.presets.split(","):
        for b in (int(x) for x in args.batches.split(",")):
            for opt in args.optimizers.split(","):
                r = measure(args.data, b, opt, args.steps, init_checkpoint=args.init_checkpoint, preset=preset,
                            pose_prior=args.pose_prior)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print("\n| preset | batch | SMPLify | data | forward | fit stage (SMPLify) | backward | step | fit share (SMPLify) | fitted rows | accepted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['batch']} | {r['optimizer']} | {r['time_data']:.3f} | {r['time_forward']:.3f} | "
              f"{r['time_fit']:.3f} ({r['time_smplify']:.3f}) | {r['time_backward']:.3f} | {r['time_step']:.3f} | "
              f"{100 * r['fit_share']:.0f} % ({100 * r['smplify_share']:.0f} %) | {r['fit_rows']:.0f} | {100 * r['fit_accept']:.0f} % |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
