"""The ``smplfast`` command."""
from __future__ import annotations

import argparse
import json
import sys


def _names(text: str):
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _azimuths(text: str):
    if text.strip().lower() in ("all", "any", "circle"):
        return "all"
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected degrees like 45,135,225,315 or 'all'; got {text!r}") from None


def _range(text: str):
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers); got {text!r}") from None
    return (lo, hi)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="smplfast", description="Fast SMPL body models and fitting.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pose a body model, fit it to joints, print a table and write a picture")
    demo.add_argument("--out", default="demo_out", help="folder for the picture and the results (default: demo_out)")
    demo.add_argument("--model", default=None, help="an SMPL .pkl/.npz file (default: the bundled default body model)")
    demo.add_argument("--batch", type=int, default=64, help="batch size of the timing and fitting runs (default: 64)")
    demo.add_argument("--seed", type=int, default=0)

    sub.add_parser("info", help="print what the compiled core contains (CUDA, OpenMP, version)")

    synth = sub.add_parser(
        "synth", help="generate synthetic people with images, masks, IUV, keypoints and SMPL parameters in "
                      "SPIN / MV-SPIN / DensePose formats (see docs/DATA.md)",
        description="Generate synthetic people. A standard split (--split) sets every option below to the "
                    "values of docs/DATA.md; --config FILE (json/yaml) and explicit options override it.")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--split", default=None, metavar="NAME",
                       help="a standard split: lab_train, lab_test, wild_train, wild_test, wild_test_occ, rig_train, rig_test")
    synth.add_argument("--config", default=None, metavar="FILE", help="a .json or .yaml file of settings (keys as the options, with _)")
    synth.add_argument("--num", type=int, default=None, help="number of people (required unless --split gives it)")
    synth.add_argument("--views", type=int, default=None, help="1: one random camera per person; V > 1: a rig of V calibrated cameras (default: 1)")
    synth.add_argument("--size", type=int, default=None, help="image side in pixels, >= 32 (default: 224)")
    synth.add_argument("--seed", type=int, default=None, help="default: 0, or the split's seed")
    synth.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    synth.add_argument("--shard-size", type=int, default=None, help="people per shard, the unit of resuming (default: 64)")
    synth.add_argument("--densepose-points", type=int, default=None, help="DensePose points per person and image (default: 100)")
    synth.add_argument("--image-format", choices=("jpg", "png"), default=None)
    synth.add_argument("--families", type=_names, default=None, metavar="A,B,..",
                       help="pose families to draw from (default: all of standing, walking, running, sitting, crouching, "
                            "reaching, arms_raised, t_pose, a_pose)")
    synth.add_argument("--azimuths", type=_azimuths, default=None, metavar="DEG,DEG,..|all",
                       help="fixed camera azimuths in degrees relative to the way the person faces (0 = front), or "
                            "'all' for any azimuth (default)")
    synth.add_argument("--azimuth-jitter", type=float, default=None, metavar="DEG", help="+- jitter of fixed azimuths (default: 10)")
    synth.add_argument("--elevation", type=_range, default=None, metavar="LO,HI", help="camera elevation range, degrees")
    synth.add_argument("--roll", type=_range, default=None, metavar="LO,HI", help="camera roll range, degrees (default: -6,6)")
    synth.add_argument("--distance", type=_range, default=None, metavar="LO,HI", help="camera distance range, metres (default: 2.5,8; rig: 3,6)")
    synth.add_argument("--fill", type=_range, default=None, metavar="LO,HI",
                       help="person size as a fraction of the image side (default: 0.45,0.85; rig: 0.5,0.8)")
    synth.add_argument("--keypoint-noise", type=float, default=None, metavar="SIGMA",
                       help="annotation noise on the annotated 2D (part, smpl_joints_2d), sigma as a fraction of the box side (default: 0)")
    synth.add_argument("--mislabel-prob", type=float, default=None, metavar="P", help="probability that a hidden joint's annotation is a guess (default: 0)")
    synth.add_argument("--swap-prob", type=float, default=None, metavar="P", help="probability of a left/right annotation swap per person (default: 0)")
    synth.add_argument("--occluders", type=float, default=None, metavar="FRACTION",
                       help="one random textured shape per image over up to this fraction of the box (default: 0 = none)")
    synth.add_argument("--bbox-jitter", type=float, default=None, metavar="SIGMA", help="jitter of the stored box, fraction of its side (default: 0)")
    synth.add_argument("--hide-3d", action="store_const", const=True, default=None, help="mark 3D joints as not for training (has_pose_3d = 0)")
    synth.add_argument("--hide-smpl", action="store_const", const=True, default=None, help="mark SMPL parameters as not for training (has_smpl = 0)")
    synth.add_argument("--overwrite", action="store_true", help="replace data in --out written with other settings")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")

    args = parser.parse_args(argv)
    if args.command == "info":
        from . import build_info
        from ._backend import describe_build

        info = build_info()
        print(describe_build(info))
        print(json.dumps(info, indent=2))
        return 0
    if args.command == "synth":
        from .data.synth import generate

        options = {k: getattr(args, k) for k in (
            "num", "views", "size", "seed", "shard_size", "densepose_points", "image_format", "families", "azimuths",
            "azimuth_jitter", "elevation", "roll", "distance", "fill", "keypoint_noise", "mislabel_prob", "swap_prob",
            "occluders", "bbox_jitter", "hide_3d", "hide_smpl")}
        try:
            summary = generate(args.out, workers=args.workers, split=args.split, config=args.config,
                               overwrite=args.overwrite, progress=not args.no_progress, **options)
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
