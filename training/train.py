"""Train a SPIN-family regressor on smplfast's synthetic splits (or any SPIN-format data).

    python training/train.py --preset spin --tier cpu --data data/synth --out runs/spin
    python training/train.py --preset spin --out runs/spin --resume            # continue after a kill
    torchrun --nproc_per_node 2 training/train.py --preset spin --out runs/spin_ddp

Presets are the files of training/configs (``--list`` prints them); ``--set key=value`` overrides any
config key (values are YAML: ``--set lr=1e-4 --set "train_splits={lab_train: 1.0}"``). The run folder
gets config.yaml, ckpt/last.pt, fits/, log.jsonl, eval/ (see smplfast_train/loop.py). After the last
step the evaluation splits are evaluated and a table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the smplfast_train package next to this file


def main(argv=None) -> int:
    from smplfast_train.config import ConfigError, load_config, parse_overrides, preset_names

    ap = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    ap.add_argument("--tier", default="cpu", choices=("cpu", "paper"), help="cpu (this machine's scale) or paper")
    ap.add_argument("--data", default=None, help="folder with one subfolder per split (default: the preset's, data/synth)")
    ap.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the config's, 1 on cpu)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the presets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name in preset_names():
            print(name)
        return 0
    if not args.preset:
        ap.error("--preset is required (see --list)")
    try:
        overrides = parse_overrides(args.overrides)
        if args.data is not None:
            overrides["data"] = args.data
        if args.threads is not None:
            overrides["threads"] = args.threads
        cfg = load_config(args.preset, args.tier, overrides)
    except ConfigError as e:
        ap.error(str(e))
    out = Path(args.out or os.path.join("runs", cfg.preset))
    if args.resume and (out / "config.yaml").is_file() and not args.overrides:
        # a resumed run keeps its own settings unless told otherwise
        from smplfast_train.config import config_from_dict
        import yaml

        stored = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
        if stored.preset != cfg.preset or stored.tier != cfg.tier:
            ap.error(f"--resume: {out} holds a {stored.preset} / {stored.tier} run, not {cfg.preset} / {cfg.tier}")
        cfg = stored

    import torch

    torch.set_num_threads(cfg.threads)
    from smplfast_train.loop import TrainingError
    from smplfast_train.trainers import TRAINERS

    try:
        trainer = TRAINERS[cfg.trainer](cfg, out, resume=args.resume, progress=not args.no_progress)
        summary = trainer.train()
    except (TrainingError, FileNotFoundError, ValueError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    if trainer.dist.is_main:
        short = {k: v for k, v in summary.items() if k != "eval"}
        print(json.dumps(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
