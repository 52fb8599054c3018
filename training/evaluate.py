"""Evaluate a trained HMR checkpoint on one or more split folders.

    python training/evaluate.py --ckpt runs/NAME/ckpt/last.pt --split data/wild_test [--split data/lab_test]
        [--max-samples N] [--out results.json] [--no-seg] [--batch-size 64] [--device cpu] [--threads 1]

The checkpoint is a ``torch.save`` dict with at least ``"config"`` (a flat dict with ``backbone``,
``img_res`` and optionally ``hmr_relu`` / ``hmr_iters``) and ``"model"`` (the HMR state dict). The
model is rebuilt (HoloPose checkpoints: ``trainers.holopose.holopose_net(config)``) with ``build_hmr(config["backbone"], relu=config.get("hmr_relu", False),
n_iter=config.get("hmr_iters", 3))`` and evaluated on the plain crops at ``config["img_res"]``
(metrics: smplfast_train/eval/metrics.py). Prints one table row per split and writes JSON with the
per-sample values of every metric (for paired comparisons across runs and seeds): to ``--out``, or by
default to ``RUN_DIR/eval/<checkpoint name>.json`` when the checkpoint sits in ``RUN_DIR/ckpt/``
(beside the checkpoint otherwise).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


class EvaluateError(Exception):
    """A problem with the command's inputs (printed without a traceback)."""


def load_checkpoint(path: str) -> dict:
    """The checkpoint dict at ``path``, checked for the ``config`` and ``model`` entries."""
    import torch

    if not os.path.isfile(path):
        raise EvaluateError(f"checkpoint not found: {path!r} (expected a file written by training, e.g. "
                            f"RUN_DIR/ckpt/last.pt)")
    try:
        # Checkpoints hold numpy arrays and RNG states besides tensors: they are trusted local files.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise EvaluateError(f"cannot read checkpoint {path!r}: {type(e).__name__}: {e} (expected a torch.save dict "
                            f"with 'config' and 'model')") from e
    if not isinstance(ckpt, dict):
        raise EvaluateError(f"checkpoint {path!r} holds a {type(ckpt).__name__}; expected a dict with 'config' "
                            f"and 'model'")
    missing = [k for k in ("config", "model") if k not in ckpt]
    if missing:
        raise EvaluateError(f"checkpoint {path!r} has no {' / '.join(repr(k) for k in missing)} entry; expected a "
                            f"dict with 'config' (backbone, img_res, ...) and 'model' (the state dict); it has "
                            f"{sorted(map(str, ckpt))}")
    cfg = ckpt["config"]
    if not isinstance(cfg, dict):
        raise EvaluateError(f"checkpoint {path!r}: 'config' is a {type(cfg).__name__}; expected a flat dict")
    for key in ("backbone", "img_res"):
        if key not in cfg:
            raise EvaluateError(f"checkpoint {path!r}: config has no {key!r}; it has {sorted(map(str, cfg))}")
    if not isinstance(ckpt["model"], dict):
        raise EvaluateError(f"checkpoint {path!r}: 'model' is a {type(ckpt['model']).__name__}; expected a state dict")
    return ckpt


def build_model(ckpt: dict, path: str = "checkpoint"):
    """The network of a checkpoint (SPIN's HMR regressor, or HoloPose's network for ``trainer: holopose``),
    with its weights loaded (strict)."""
    from smplfast_train.heads.hmr import build_hmr

    cfg = ckpt["config"]
    holopose = cfg.get("trainer") == "holopose"
    try:
        if holopose:
            from smplfast_train.config import config_from_dict
            from smplfast_train.trainers.holopose import holopose_net

            model = holopose_net(config_from_dict(cfg))
        else:
            model = build_hmr(cfg["backbone"], relu=bool(cfg.get("hmr_relu", False)), n_iter=int(cfg.get("hmr_iters", 3)))
    except (ValueError, KeyError) as e:
        raise EvaluateError(f"{path}: cannot build the model of config backbone={cfg['backbone']!r}: {e}") from e
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        what = "HoloPose's network" if holopose else f"build_hmr({cfg['backbone']!r})"
        raise EvaluateError(f"{path}: the 'model' state dict does not fit {what}: {e}") from e
    return model


def default_out_path(ckpt_path: str) -> str:
    ckpt_path = os.path.abspath(ckpt_path)
    d = os.path.dirname(ckpt_path)
    stem = os.path.splitext(os.path.basename(ckpt_path))[0]
    if os.path.basename(d) == "ckpt":
        return os.path.join(os.path.dirname(d), "eval", f"{stem}.json")
    return os.path.join(d, f"{stem}_eval.json")


def _json_safe(x):
    """NaN / infinity -> None so that the file is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _plain(x):
    """Config values as JSON-able plain values."""
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return str(x)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="checkpoint file (RUN_DIR/ckpt/last.pt)")
    p.add_argument("--split", required=True, action="append", help="split folder holding synth_spin.npz (repeatable)")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples of each split")
    p.add_argument("--out", default=None, help="JSON output (default RUN_DIR/eval/<ckpt name>.json)")
    p.add_argument("--no-seg", action="store_true", help="skip the silhouette / part segmentation scores")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-res", type=int, default=None, help="override the checkpoint's img_res")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    if args.max_samples is not None and args.max_samples < 1:
        p.error(f"--max-samples must be >= 1; got {args.max_samples}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1; got {args.batch_size}")
    return args


def run(args: argparse.Namespace) -> dict:
    import torch

    from smplfast_train.eval.metrics import load_eval_models
    from smplfast_train.eval.runner import evaluate_model, format_table, resolve_split

    torch.set_num_threads(max(1, int(args.threads)))
    splits = []
    for s in args.split:  # check every split before any work
        try:
            splits.append(resolve_split(s))
        except FileNotFoundError as e:
            raise EvaluateError(str(e)) from None
    ckpt = load_checkpoint(args.ckpt)
    model = build_model(ckpt, args.ckpt).to(args.device)
    cfg = ckpt["config"]
    img_res = int(args.img_res if args.img_res is not None else cfg["img_res"])
    models = load_eval_models(device=args.device)
    renderer = None
    if not args.no_seg:
        from smplfast.render import BodyRenderer
        renderer = BodyRenderer.from_model()

    results = {}
    for npz, root, name in splits:
        key, k = name, 2
        while key in results:
            key, k = f"{name}_{k}", k + 1
        try:
            results[key] = evaluate_model(model, npz, img_res=img_res, batch_size=args.batch_size,
                                          max_samples=args.max_samples, device=args.device,
                                          segmentation=not args.no_seg, models=models, renderer=renderer,
                                          progress=args.progress)
        except (ValueError, FileNotFoundError) as e:
            raise EvaluateError(f"split {root!r}: {e}") from e
    print(format_table(results))
    out = os.path.abspath(args.out) if args.out else default_out_path(args.ckpt)
    doc = {
        "ckpt": os.path.abspath(args.ckpt),
        "step": ckpt.get("step") if isinstance(ckpt.get("step"), (int, float)) else None,
        "config": _plain(cfg),
        "img_res": img_res,
        "results": results,
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_safe(doc), f, allow_nan=False)
    os.replace(tmp, out)
    print(f"per-sample results: {out}")
    return doc


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except EvaluateError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
