"""Peak memory of one SMPL forward (+ backward) in a fresh process.

Run as ``python benchmarks/memory_probe.py IMPL BATCH MODE MODEL`` with IMPL in smplfast, smplx, reference
and MODE in forward, forward_backward; prints a JSON line with the peak bytes the call added.

CPU: the process's peak resident set (ru_maxrss) during the call minus the resident set just
before it (glibc returns large tensor buffers to the system on free, so resident size follows
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
        before = rss_bytes()
        max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run(inputs)
        max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if max_after <= max_before:
            raise RuntimeError("peak of the call is below an earlier peak of the process; cannot measure it")
        peak = max_after - before
    return {"impl": impl, "batch": batch, "mode": mode, "device": device, "peak_bytes": int(peak)}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    impl, batch, mode, model_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    print(json.dumps(main(impl, batch, mode, model_path, device)))
