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

    synth = sub.add_parser("synth", help="generate synthetic people with images, masks, IUV, keypoints and SMPL "
                                         "parameters in SPIN / MV-SPIN / DensePose formats (see docs/DATA.md)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--num", type=int, required=True, help="number of people (samples)")
    synth.add_argument("--views", type=int, default=1, help="1: one random camera per person; V > 1: a rig of V calibrated cameras (default: 1)")
    synth.add_argument("--size", type=int, default=224, help="image side in pixels, >= 32 (default: 224)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    synth.add_argument("--shard-size", type=int, default=64, help="people per shard, the unit of resuming (default: 64)")
    synth.add_argument("--densepose-points", type=int, default=100, help="DensePose points per person and image (default: 100)")
    synth.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    synth.add_argument("--overwrite", action="store_true", help="replace data in --out written with other settings")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")

    args = parser.parse_args(argv)
    if args.command == "info":
        from . import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    if args.command == "synth":
        from .data.synth import generate

        try:
            summary = generate(args.out, args.num, views=args.views, size=args.size, seed=args.seed, workers=args.workers,
                               shard_size=args.shard_size, densepose_points=args.densepose_points,
                               image_format=args.image_format, overwrite=args.overwrite, progress=not args.no_progress)
        except (ValueError, TypeError) as e:
            parser.error(f"synth: {e}")
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(out_dir=args.out, model_path=args.model, batch=args.batch, seed=args.seed)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
