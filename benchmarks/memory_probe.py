"""Peak memory of one SMPL forward (+ backward) in a fresh process.

Run as ``python benchmarks/memory_probe.py IMPL BATCH MODE MODEL`` with IMPL in smplfast, smplx, reference
and MODE in forward, forward_backward; prints a JSON line with the peak bytes the call added.

CPU: the process's peak resident set (VmHWM, reset just before) during the call minus the resident
set just before it (glibc returns large tensor buffers to the system on free, so resident size follows
live tensor memory). CUDA: torch.cuda.max_memory_allocated around the call.
"""
import json
import resource
import sys
import warnings

import torch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """VmHWM: the peak resident set of this process's memory since the last reset_peak_rss()."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current resident set (Linux >= 4.0).
    # (ru_maxrss cannot be used: it carries the parent's peak across fork and exec.)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(impl: str, batch: int, mode: str, model_path: str, device: str = "cpu") -> dict:
    from bench_common import make_inputs, make_runner

    run = make_runner(impl, model_path, device, backward=(mode == "forward_backward"))
    inputs = make_inputs(batch, device, requires_grad=(mode == "forward_backward"))
    run(make_inputs(2, device, requires_grad=(mode == "forward_backward")))  # warm-up at a small batch
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(inputs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        reset_peak_rss()
        before = rss_bytes()
        run(inputs)
        peak = peak_rss_bytes() - before
    return {"impl": impl, "batch": batch, "mode": mode, "device": device, "peak_bytes": int(peak)}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    impl, batch, mode, model_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    print(json.dumps(main(impl, batch, mode, model_path, device)))
