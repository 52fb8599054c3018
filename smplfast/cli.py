"""The ``smplfast`` command."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="smplfast", description="Fast SMPL body models and fitting.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pose a body model, fit it to joints, print a table and write a picture")
    demo.add_argument("--out", default="demo_out", help="folder for the picture and the results (default: demo_out)")
    demo.add_argument("--model", default=None, help="an SMPL .pkl/.npz file (default: the bundled default body model)")
    demo.add_argument("--batch", type=int, default=64, help="batch size of the timing and fitting runs (default: 64)")
    demo.add_argument("--seed", type=int, default=0)

    sub.add_parser("info", help="print what the compiled core contains (CUDA, OpenMP, version)")

    args = parser.parse_args(argv)
    if args.command == "info":
        from . import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(out_dir=args.out, model_path=args.model, batch=args.batch, seed=args.seed)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
