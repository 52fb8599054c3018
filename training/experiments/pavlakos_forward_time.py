"""Forward time of Pavlakos 2018's full predictor on CPU: Human2D (stacked hourglass) -> argmax keypoints +
confidences and the body silhouette -> PosePrior + ShapePrior (the paper: 50 ms on a Titan X).

    python training/experiments/pavlakos_forward_time.py [--threads 1] [--runs 20]

Prints JSON with the median seconds of the whole pipeline and of its parts (eval mode, batch 1, no
gradients; median of ``--runs`` calls after ``--warmup``). Defaults: 2 stacks, width 256, 256² input
(64² maps, the ShapePrior's silhouette size).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(stacks: int = 2, width: int = 256, res: int = 256, threads: int = 1, runs: int = 20, warmup: int = 3,
            seed: int = 0) -> dict:
    """Median forward seconds (``total``, ``human2d``, ``priors``) of randomly initialised networks."""
    import torch
    import torch.nn.functional as F

    from smplfast_train.heads.hourglass import StackedHourglass, extract_keypoints, forward_time, silhouette_from_logits
    from smplfast_train.pavlakos import SIL_RES, PavlakosPriors

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    human2d = StackedHourglass(num_stacks=stacks, width=width).eval()
    priors = PavlakosPriors().eval()

    def pipeline(img):
        last = human2d(img)[-1]
        kp = extract_keypoints(last.heatmaps, "argmax")
        sil = silhouette_from_logits(last.silhouette)
        if sil.shape[-1] != SIL_RES:
            sil = F.interpolate(sil, size=(SIL_RES, SIL_RES), mode="bilinear", align_corners=False)
        return priors(kp, sil)

    img = torch.randn(1, 3, res, res)
    kp, sil = torch.zeros(1, 14, 3), torch.zeros(1, 1, SIL_RES, SIL_RES)
    out = {
        "total": forward_time(pipeline, (img,), runs=runs, warmup=warmup),
        "human2d": forward_time(human2d, (img,), runs=runs, warmup=warmup),
        "priors": forward_time(priors, (kp, sil), runs=runs, warmup=warmup),
    }
    return {"seconds_median": out, "ms_median": {k: 1000.0 * v for k, v in out.items()}, "stacks": stacks,
            "width": width, "input_res": res, "batch": 1, "threads": threads, "runs": runs, "warmup": warmup,
            "torch": torch.__version__, "device": "cpu"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", type=int, default=2)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.stacks, a.width, a.res, a.threads, a.runs, a.warmup), indent=1))


if __name__ == "__main__":
    main()
