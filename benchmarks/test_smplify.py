"""SMPLify: batched Levenberg–Marquardt (fused kernel, and the unfused LM driven from Python) vs SPIN's
Adam procedure (on smplfast's skinning and on smplx).

Problems: batch 64 single-view and 16 people × 4 views, bodies from the pose sampler on the default
model, SPIN-49 keypoints projected by SPIN-style cameras with 1 px noise, initialisation perturbed
(pose 0.15 rad, β 0.5, camera depth 5 %). Each benchmark runs a whole fit; ``extra_info`` records the
objective reached, so the time to reach Adam's final objective is read from the same runs
(``python benchmarks/smplify_convergence.py`` draws the convergence plot and prints the table).

Run: ``pytest benchmarks/test_smplify.py``.
"""
import pytest
import torch

import smplfast
from smplify_problems import make_multiview_problem, make_problem

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("solver", ["lm", "lm-unfused", "lm-cg", "adam", "adam-smplx"])
def test_smplify_single_view(benchmark, solver, device):
    batch = 64
    if solver == "adam-smplx":
        pytest.importorskip("smplx")
    fitter, args = make_problem(batch, device, solver)
    result = {}

    def run():
        result["res"] = fitter.fit(*args)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{device} SMPLify single-view batch {batch}"
    benchmark.pedantic(run, rounds=1 if solver.startswith("adam") else 9, iterations=1, warmup_rounds=1)
    res = result["res"]
    benchmark.extra_info.update(solver=solver, batch=batch, device=device,
                                objective=float(res.loss.sum()), mean_iterations=float(res.iterations.float().mean()),
                                converged=float(res.converged.float().mean()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("solver", ["lm", "lm-unfused", "adam"])
def test_smplify_multi_view(benchmark, solver, device):
    fitter, args = make_multiview_problem(16, 4, device, solver)
    result = {}

    def run():
        result["res"] = fitter.fit(*args)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{device} SMPLify multi-view 16x4"
    benchmark.pedantic(run, rounds=1 if solver == "adam" else 9, iterations=1, warmup_rounds=1)
    res = result["res"]
    benchmark.extra_info.update(solver=solver, people=16, views=4, device=device, objective=float(res.loss.sum()),
                                mean_iterations=float(res.iterations.float().mean()),
                                converged=float(res.converged.float().mean()))


@pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a GPU")
def test_smplify_lm_batch_1024_gpu(benchmark):
    fitter, args = make_problem(1024, "cuda", "lm")
    fitter.fit(*args)  # warm-up

    def run():
        fitter.fit(*args)
        torch.cuda.synchronize()

    benchmark.group = "cuda SMPLify LM batch 1024"
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
