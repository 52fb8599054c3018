"""HoloPose's refinement: time of one Gauss-Newton iteration (residuals, Jacobian, normal equations and
the 20-iteration conjugate-gradient solve) with 2000 DensePose points per person, plus 24 2D keypoints,
at batch 1 and 64, float32, perspective camera. The DensePose term is accumulated point by point by the
fused kernel (``ops.point_normal_equations``, the default) or through the explicit (B, N, 2, n)
Jacobian. The one-off lookup of the points'
rest-space data is not part of an iteration (it happens once per refinement).

(An autograd Jacobian needs one backward pass per residual row, 4048 per person here, because the
skinning ops are custom ops that ``torch.func.jacrev``'s vmap cannot batch; it is not timed.)
Run: ``pytest benchmarks/test_refine.py``.
"""
from dataclasses import replace

import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.body.default_model import load_default_model
from smplfast.body.samplers import sample_betas, sample_poses
from smplfast.surface import (IUVPoints, PerspectiveCamera, RefineOptions, RefineProblem, SurfaceCharts, UVGrid,
                              sample_chart_points)

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
POINTS = 2000


@pytest.fixture(scope="module")
def model():
    m = load_default_model()
    return UVGrid.from_model(m, resolution=32), SurfaceCharts.from_npz_dict(m.extras)


def make_problem(grid, charts, B, device):
    grid = grid.to(device)
    gen = torch.Generator().manual_seed(0)
    part, uv, _, _ = sample_chart_points(charts, B * POINTS, gen)
    xy = torch.rand(B, POINTS, 2, generator=gen) * 200 + 150
    pts = IUVPoints(part.view(B, POINTS).to(device), uv.view(B, POINTS, 2).float().to(device), xy.to(device))
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0])).expand(B, 3, 3).to(device)
    cam = PerspectiveCamera(1000.0, torch.tensor([256.0, 256.0], device=device), flip,
                            torch.tensor([0.0, 0.0, 5.0], device=device).expand(B, 3))
    kp2 = (torch.rand(B, 24, 3, generator=gen) * 200 + 150).to(device)
    kp2[..., 2] = 1
    problem = RefineProblem(grid, cam, RefineOptions(), B, pts.check(), kp2, None)
    pose = sample_poses(B, seed=1)
    x = torch.cat([pose, sample_betas(B, 10, seed=2), torch.zeros(B, 3)], 1).to(device)
    return problem, x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("impl", ["fused", "explicit-jacobian"])
def test_refine_iteration(benchmark, model, batch, device, impl):
    problem, x = make_problem(*model, batch, device)
    problem.opt = replace(problem.opt, fused=impl == "fused")
    lam = torch.full((batch,), 1e-6, device=device)

    def iteration():
        f, H, g, _ = problem.evaluate(x)
        diag = torch.diagonal(H, dim1=1, dim2=2)
        ops.conjugate_gradient_solve(H, -g, lam, diag.clamp_min(1e-6), max_iters=20)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"refine iteration, {POINTS} DensePose points + 24 keypoints per person"
    benchmark.extra_info.update(batch=batch, device=device, points=POINTS, impl=impl)
    rounds = 50 if device == "cuda" else (3 if batch == 64 else 10)
    benchmark.pedantic(iteration, rounds=rounds, warmup_rounds=1)
