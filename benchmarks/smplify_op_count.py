"""How many torch operations one SMPLify fit dispatches, per LM iteration: the launch count a GPU would pay.

    OMP_NUM_THREADS=1 python benchmarks/smplify_op_count.py [--batch 64] [--json out.json] [--device cuda]

Runs one single-view LM fit (batch ``--batch``, SPIN's two stages, the benchmark problem of
benchmarks/test_smplify.py) and one multi-view fit (16 people x 4 views) under ``torch.profiler`` (CPU
activities), with the fused kernel (``smplfast::lm_fit``, one call per stage) and with the unfused LM,
and counts the dispatched ``aten::`` operations and smplfast's custom ops. "Per LM iteration" divides the
whole fit's aten count by the iterations of its slowest sample (the loop's length, summed over stages);
for the unfused loop the count per objective evaluation (one ``smplfast::project_keypoints`` call) is
given too.
``aten::_local_scalar_dense`` (``.item()`` / ``bool(tensor)``) and ``aten::to``/``copy_`` to the CPU are
the host synchronisations on a GPU. Prints a JSON report; the numbers are machine-independent (counts,
not times).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smplify_problems import make_multiview_problem, make_problem  # noqa: E402


def _count(run, device: str = "cpu") -> dict:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    out = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        out["res"] = run()
        if device == "cuda":
            torch.cuda.synchronize()
    res = out["res"]
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    counts = collections.Counter(e.name for e in events if e.device_type == DeviceType.CPU)
    aten = {k: v for k, v in counts.items() if k.startswith("aten::")}
    custom = {k: v for k, v in counts.items() if k.startswith("smplfast::")}
    evaluations = custom.get("smplfast::project_keypoints", 0)
    # The LM loop runs as long as its slowest sample: the iterations a batched loop pays for.
    loop_iterations = int(res.iterations.max())
    report = {"aten_ops": sum(aten.values()), "custom_ops": custom, "lm_loop_iterations": loop_iterations,
              "aten_ops_per_lm_iteration": sum(aten.values()) / max(loop_iterations, 1),
              "host_syncs (aten::_local_scalar_dense)": aten.get("aten::_local_scalar_dense", 0),
              "top_aten": dict(collections.Counter(aten).most_common(12))}
    if evaluations:
        report.update(lm_evaluations=evaluations, aten_ops_per_evaluation=sum(aten.values()) / evaluations)
    if device == "cuda":
        report.update(cuda_kernels=len(kernels), cuda_kernels_per_lm_iteration=len(kernels) / max(loop_iterations, 1),
                      top_kernels=dict(collections.Counter(e.name for e in kernels).most_common(8)))
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", default="")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (on a GPU: also counts the kernels launched)")
    ap.add_argument("--check-every", type=int, default=1,
                    help="LM iterations between removals of stopped samples (SMPLify's lm_check_every; CUDA's default is 5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = {"check_every": args.check_every, "torch": torch.__version__}
    for solver in ("lm", "lm-unfused"):
        fitter, fit_args = make_problem(args.batch, args.device, solver)
        mv, mv_args = make_multiview_problem(16, 4, args.device, solver)
        for f in (fitter, mv):  # as SMPLify(lm_check_every=...) sets them (the unfused loop only)
            f.lm_options = replace(f.lm_options, check_every=args.check_every)
            f.camera_lm_options = replace(f.camera_lm_options, check_every=args.check_every)
        fitter.fit(*fit_args)  # warm-up (first-call checks and caches)
        single = _count(lambda: fitter.fit(*fit_args), args.device)
        mv.fit(*mv_args)
        multi = _count(lambda: mv.fit(*mv_args), args.device)
        out[solver] = {"single_view": {"batch": args.batch, **single}, "multi_view": {"people": 16, "views": 4, **multi}}
    text = json.dumps(out, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
