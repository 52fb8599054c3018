"""Objective against time for SMPLify's solvers on the benchmark problems; draws
docs/images/smplify_convergence.png and prints the 'time to reach Adam's final objective' table.

Run: ``python benchmarks/smplify_convergence.py [--device cpu] [--out docs/images/smplify_convergence.png]``.
"""
import argparse
import os
import time

import torch

from smplify_problems import make_multiview_problem, make_problem


def trace(fitter, args):
    """(seconds, summed objective) after every body-stage iteration, camera stage time included."""
    t0 = time.perf_counter()
    res = fitter.fit(*args, record_history=True)
    total = time.perf_counter() - t0
    offset = res.timings.get("camera", 0.0)
    points = [(offset + t, float(f.sum())) for t, f in res.history]
    points.append((total, float(res.loss.sum())))
    return points, res, total


def time_to_reach(points, target):
    for t, f in points:
        if f <= target:
            return t
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "images",
                                                   "smplify_convergence.png"))
    ap.add_argument("--skip-smplx", action="store_true")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    torch.manual_seed(0)
    cases = [("single-view batch 64", lambda s: make_problem(64, a.device, s),
              ["lm", "lm-cg", "adam"] + ([] if a.skip_smplx else ["adam-smplx"])),
             ("multi-view 16x4", lambda s: make_multiview_problem(16, 4, a.device, s), ["lm", "adam"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    print("| problem | solver | total time (s) | iterations (mean) | final objective | time to reach Adam's final objective (s) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for ax, (name, make, solvers) in zip(axes, cases):
        traces = {}
        for s in solvers:
            fitter, args = make(s)
            if s.startswith("lm"):
                fitter.fit(*args)  # warm-up (first calls allocate)
            traces[s] = trace(fitter, args)
        target = traces["adam"][1].loss.sum().item()
        adam_time = traces["adam"][2]
        for s, (points, res, total) in traces.items():
            reach = time_to_reach(points, target * (1 + 1e-6))
            print(f"| {name} | {s} | {total:.3f} | {res.iterations.float().mean():.1f} | {res.loss.sum():.1f} | "
                  f"{reach:.3f} | {adam_time / reach if s.startswith('lm') else float('nan'):.1f}x |")
            ts, fs = zip(*points)
            ax.plot(ts, fs, label=s)
        if "adam-smplx" in traces:
            lm_reach = time_to_reach(traces["lm"][0], target * (1 + 1e-6))
            print(f"| {name} | adam-smplx / lm | | | | | {traces['adam-smplx'][2] / lm_reach:.1f}x |")
        ax.axhline(target, color="gray", ls=":", lw=1, label="Adam's final objective")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("seconds (camera + body stages)")
        ax.set_ylabel("summed objective")
        ax.set_title(f"{name} ({a.device})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
