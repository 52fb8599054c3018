"""Value checks without per-call device synchronisation (smplfast.ops._value_checks): model constants are
validated once per tensor (again after an in-place change or for a new tensor), per-call checks are on
for the CPU and opt-in on CUDA, and uv_lookup's unchecked path (what CUDA runs without value checks) gives
NaN and zero gradients for unusable points instead of reading out of bounds. The CUDA path itself is
exercised here through the same Python code with the checks switched off."""
import pytest
import torch

from smplfast import ops
from smplfast.ops import _value_checks as vc
import importlib

uv_mod = importlib.import_module("smplfast.ops.uv_lookup")

torch.set_num_threads(1)


def test_policy_cpu_always_cuda_opt_in():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    previous = ops.set_value_checks(False)
    try:
        assert ops.value_checks_enabled(cpu) and not ops.value_checks_enabled(cuda)
        with ops.value_checks():
            assert ops.value_checks_enabled(cuda)
            with ops.value_checks(False):
                assert not ops.value_checks_enabled(cuda)
            assert ops.value_checks_enabled(cuda)
        assert not ops.value_checks_enabled(cuda)
        assert ops.set_value_checks(True) is False and ops.value_checks_enabled(cuda)
    finally:
        ops.set_value_checks(previous)


def test_check_once_caches_per_tensor_and_version():
    calls = []
    t = torch.arange(5)
    check = lambda: calls.append(1)  # noqa: E731
    vc.check_once("a", (t,), check)
    vc.check_once("a", (t,), check)
    assert len(calls) == 1
    vc.check_once("b", (t,), check)          # another check of the same tensor
    assert len(calls) == 2
    t[0] = 7                                 # modified in place: checked again
    vc.check_once("a", (t,), check)
    assert len(calls) == 3
    u = t.clone()                            # a new tensor
    vc.check_once("a", (u,), check)
    assert len(calls) == 4
    # a failing check is not cached
    def fail():
        raise ValueError("bad")
    for _ in range(2):
        with pytest.raises(ValueError):
            vc.check_once("c", (t,), fail)


def test_model_constants_rechecked_after_in_place_change():
    V = 4
    verts = torch.tensor([[[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 2.0]]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    ops.rasterize(verts, faces, 10.0, (8.0, 8.0), (16, 16))
    faces[1, 1] = V  # out of range, in place
    with pytest.raises(ValueError, match="faces must index vertices"):
        ops.rasterize(verts, faces, 10.0, (8.0, 8.0), (16, 16))
    with pytest.raises(ValueError, match="faces must index vertices"):
        ops.soft_silhouette(verts[..., :2] * 4 + 8, faces, 16, 0.5)
    # sparse_lbs: the joint ids of the skinning weights
    A = torch.eye(3, 4).expand(1, 2, 3, 4).contiguous()
    idx = torch.zeros(V, 1, dtype=torch.int32)
    w = torch.ones(V, 1)
    ops.sparse_lbs(A, verts, idx, w, torch.zeros(1, 3))
    idx[2, 0] = 5
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 2\)"):
        ops.sparse_lbs(A, verts, idx, w, torch.zeros(1, 3))


def _grid_inputs():
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 3, 5, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    part = torch.tensor([0, 2, 7, 1, -1, 1])
    uv = torch.rand(6, 2, generator=g, dtype=torch.float64)
    uv[3, 0] = float("nan")
    uv = uv.requires_grad_(True)
    batch = torch.tensor([0, 1, 1, 0, 0, 5])
    bad = torch.tensor([False, False, True, True, True, True])
    return grid, part, uv, batch, bad


def test_uv_lookup_raises_with_checks_and_gives_nan_without(monkeypatch):
    grid, part, uv, batch, bad = _grid_inputs()
    with pytest.raises(ValueError):
        ops.uv_lookup(grid, part, uv, batch)
    # the path CUDA takes without value checks (no device sync), run here on the CPU
    monkeypatch.setattr(uv_mod, "value_checks_enabled", lambda device: False)
    out = ops.uv_lookup(grid, part, uv, batch)
    assert torch.isnan(out[bad]).all() and torch.isfinite(out[~bad]).all()
    ref = ops.uv_lookup_reference(grid.detach(), part[~bad], uv.detach()[~bad], batch[~bad])
    assert torch.allclose(out[~bad], ref)
    # gradients: zero for the unusable points, and the grid's gradient only from the usable ones
    go = torch.randn(out.shape, dtype=out.dtype)
    gg, guv = torch.autograd.grad(out, (grid, uv), go.masked_fill(bad[:, None], 0.0))
    assert (guv[bad] == 0).all() and torch.isfinite(guv).all()
    g2 = grid.detach().clone().requires_grad_(True)
    uv2 = uv.detach()[~bad].clone().requires_grad_(True)
    gg_ref, guv_ref = torch.autograd.grad(ops.uv_lookup(g2, part[~bad], uv2, batch[~bad]), (g2, uv2), go[~bad])
    assert torch.allclose(gg, gg_ref) and torch.allclose(guv[~bad], guv_ref)
    # the public backward op is guarded the same way
    gg_op, guv_op = torch.ops.smplfast.uv_lookup_backward(go, grid.detach(), part, uv.detach(), batch, None, True, True,
                                                           False)
    assert torch.allclose(gg_op, gg_ref) and (guv_op[bad] == 0).all()


def test_uv_lookup_backward_op_checks_values_on_the_cpu():
    grid, part, uv, batch, _ = _grid_inputs()
    go = torch.ones(6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="part must lie"):
        torch.ops.smplfast.uv_lookup_backward(go, grid.detach(), part, uv.detach(), batch, None, True, True, False)
