"""project_keypoints (residuals + analytic Jacobian in one kernel) against its pure-PyTorch reference
with an autograd Jacobian (torch.func.jacrev), at batch 1, 64 and 1024.

Models: the bundled default body model with SPIN's 49 keypoints (no pose blend shapes), and a random
SMPL-size model with 207 dense pose blend shapes and 26 extra keypoints, each regressed from the
20-60 vertices nearest to a point of the body (about the load of real SMPL with SPIN's
J_regressor_extra and J_regressor_h36m).

Run: ``pytest benchmarks/test_keypoint_projection.py``.
"""
import numpy as np
import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.fitting import KeypointModel

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
BATCHES = [1, 64, 1024]
IMPLS = ["kernel", "kernel-no-jacobian", "reference-jacrev"]


@pytest.fixture(scope="module")
def keypoint_models():
    default = KeypointModel.from_smpl(smplfast.SMPL(keypoints="spin_49", dtype=torch.float64))
    V = 6890
    data = smplfast.body.random_model(num_vertices=V, num_betas=10, seed=0)
    rng = np.random.default_rng(0)
    reg = np.zeros((26, V))
    for r in range(26):
        # Like a real joint regressor row: the vertices nearest to a point of the body.
        near = np.argsort(np.linalg.norm(data.v_template - data.v_template[rng.integers(V)], axis=1))
        cols = near[:int(rng.integers(20, 61))]
        w = rng.random(cols.size)
        reg[r, cols] = w / w.sum()
    smpl = smplfast.SMPL(data_struct=data, keypoints=None, vertex_ids=None, extra_joint_regressor=reg,
                         dtype=torch.float64)
    return {"default-spin49": default, "smpl-size-pose-blend": KeypointModel.from_smpl(smpl)}


def make_inputs(model, batch, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    J, nb, Nk = model.num_joints, model.num_betas, model.num_keypoints
    f = torch.float64
    inputs = (
        0.4 * torch.randn(batch, J, 3, generator=g, dtype=f),
        torch.randn(batch, nb, generator=g, dtype=f),
        0.1 * torch.randn(batch, 3, generator=g, dtype=f),
        ops.rodrigues_reference(0.2 * torch.randn(batch, 3, generator=g, dtype=f)),
        torch.tensor([0.0, 0.2, 4.0], dtype=f).expand(batch, 3).clone(),
        torch.full((batch, 2), 1000.0, dtype=f),
        torch.full((batch, 2), 112.0, dtype=f),
        112 + 100 * torch.randn(batch, Nk, 2, generator=g, dtype=f),
        torch.rand(batch, Nk, generator=g, dtype=f),
    )
    return tuple(t.to(device=device, dtype=dtype) for t in inputs)


def _rounds(impl, batch, device):
    if impl == "reference-jacrev":
        return {1: 20, 64: 3, 1024: 1}[batch] if device == "cpu" else 10
    return {1: 200, 64: 50, 1024: 5}[batch] if device == "cpu" else 100


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model_name", ["default-spin49", "smpl-size-pose-blend"])
def test_project_keypoints(benchmark, keypoint_models, model_name, impl, batch, device):
    if impl == "reference-jacrev" and model_name == "smpl-size-pose-blend" and batch == 1024:
        pytest.skip("the jacrev reference needs tens of GB at this size")
    dtype = torch.float64 if device == "cpu" else torch.float32
    model = keypoint_models[model_name].to(device=device, dtype=dtype)
    inputs = make_inputs(model, batch, device, dtype)
    fn = ops.project_keypoints_reference if impl == "reference-jacrev" else ops.project_keypoints
    jac = impl != "kernel-no-jacobian"

    def run():
        out = fn(model, *inputs, 100.0, compute_jacobian=jac)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{device} {model_name} batch {batch}"
    benchmark.extra_info.update(impl=impl, batch=batch, device=device, model=model_name, dtype=str(dtype),
                                keypoints=model.num_keypoints, params=model.num_params)
    benchmark.pedantic(run, rounds=_rounds(impl, batch, device), iterations=1, warmup_rounds=1)
