"""SMPL forward and forward+backward: smplfast vs smplx (eager) vs the pure-PyTorch reference, plus
smplfast's joints-only path, at batch 1, 64 and 1024 on a 6890-vertex model; peak memory at 1024.

Run: ``pytest benchmarks/test_skinning.py`` (add ``--benchmark-json out.json`` and feed it to
``python benchmarks/report.py`` to refresh benchmarks/RESULTS.md).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import smplfast
from bench_common import make_inputs, make_runner

pytest.importorskip("smplx")

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
BATCHES = [1, 64, 1024]
CASES = [("smplfast", False), ("smplfast-joints-only", False), ("smplx", False), ("reference", False),
         ("smplfast", True), ("smplfast-joints-only", True), ("smplx", True), ("reference", True)]


def _rounds(batch: int, device: str, impl: str) -> int:
    if device == "cuda":
        return 50
    slow = impl in ("smplx", "reference")
    return {1: 50, 64: 10 if slow else 20, 1024: 2 if slow else 5}[batch]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl,backward", CASES, ids=[f"{i}-{'fwdbwd' if b else 'fwd'}" for i, b in CASES])
def test_smpl(benchmark, smpl_size_model_file, impl, backward, batch, device):
    joints_only = impl == "smplfast-joints-only"
    run = make_runner("smplfast" if joints_only else impl, smpl_size_model_file, device, backward, joints_only)
    inputs = make_inputs(batch, device, requires_grad=backward)
    benchmark.group = f"{device} {'forward+backward' if backward else 'forward'} batch {batch}"
    benchmark.extra_info.update(impl=impl, batch=batch, device=device, backward=backward)
    benchmark.pedantic(run, args=(inputs,), rounds=_rounds(batch, device, impl), iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["smplfast", "smplx", "reference"])
def test_peak_memory_forward_backward_1024(benchmark, smpl_size_model_file, impl, device):
    """Peak memory of one forward+backward at batch 1024, each in a fresh process (see memory_probe.py)."""
    probe = os.path.join(os.path.dirname(__file__), "memory_probe.py")

    def measure():
        out = subprocess.run([sys.executable, probe, impl, "1024", "forward_backward", smpl_size_model_file, device],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"memory probe failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.group = f"{device} peak memory forward+backward batch 1024 (time = whole probe process)"
    benchmark.extra_info.update(impl=impl, batch=1024, device=device, peak_bytes=result["peak_bytes"])
    assert result["peak_bytes"] > 0
