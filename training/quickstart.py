"""Train SPIN end to end on a fresh machine in minutes: small synthetic splits, static fits, training with
SMPLify in the loop, evaluation table.

    python training/quickstart.py --out runs/quickstart

1. ``smplfast synth --split ...`` at a reduced size (``--people`` per training split, a quarter of it
   per test split), 160-px images;
2. static fits of wild_train: 4-stage SMPLify from the mean pose (the shipped pose prior);
3. ``train.py --preset spin --tier cpu`` for ``--steps`` steps (batch 32, from scratch, lr 3e-4);
4. the evaluation of wild_test and lab_test printed as a table (also in RUN/eval/).

Every stage is skipped when its output exists, so re-running continues where a kill stopped it. The
experiments of docs/TRAINING.md use the full-size splits and the lab-pretrained start instead.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/quickstart", help="folder for the data and the run")
    ap.add_argument("--people", type=int, default=600, help="people per training split")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="processes for the data generation")
    args = ap.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(cmd):
        print("+", " ".join(str(c) for c in cmd), flush=True)
        subprocess.run([str(c) for c in cmd], check=True, env=env)

    for split, num in (("lab_train", args.people), ("wild_train", args.people), ("wild_test", max(args.people // 4, 8)),
                       ("lab_test", max(args.people // 4, 8))):
        if not (data / split / "synth_spin.npz").is_file():
            run(["smplfast", "synth", "--split", split, "--num", num, "--size", 160, "--densepose-points", 0,
                 "--workers", args.workers, "--no-progress", "--out", data / split])
    if not (data / "static_fits" / "wild_train_static_fits.npz").is_file():
        run([sys.executable, HERE / "make_static_fits.py", "--data", data / "wild_train", "--out", data / "static_fits",
             "--init", "mean"])
    run_dir = out / "spin"
    cmd = [sys.executable, HERE / "train.py", "--preset", "spin", "--tier", "cpu", "--data", data, "--out", run_dir,
           "--set", f"num_steps={args.steps}", "--set", "batch_size=32", "--set", "lr=3e-4"]
    if (run_dir / "ckpt" / "last.pt").is_file():
        cmd.append("--resume")
    run(cmd)
    print(f"run folder: {run_dir} (log.jsonl, eval/, ckpt/last.pt); evaluate again with "
          f"python training/evaluate.py --ckpt {run_dir / 'ckpt' / 'last.pt'} --split {data / 'wild_test'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
