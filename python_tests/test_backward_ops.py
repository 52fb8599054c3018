"""Every registered backward custom op validates its incoming gradients against the forward's shapes,
dtype and device before the kernel reads them (a wrong one used to be read out of bounds).

Backward ops registered in smplfast.ops: rodrigues_backward, kinematic_chain_backward,
sparse_lbs_backward, soft_silhouette_backward, uv_lookup_backward."""
import pytest
import torch

import smplfast
from smplfast import ops

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
BACKWARD_OPS = {"rodrigues_backward", "kinematic_chain_backward", "sparse_lbs_backward",
                "soft_silhouette_backward", "uv_lookup_backward"}


def test_list_of_backward_ops_is_complete():
    import smplfast.ops.rasterize, smplfast.ops.batched_solve, smplfast.ops.keypoint_projection  # noqa: F401,E401
    names = {n for n in dir(torch.ops.smplfast) if n.endswith("_backward")}
    assert names == BACKWARD_OPS


def _bad_grads(good):
    """Wrong shape (smaller, larger, other rank), wrong dtype."""
    other = torch.float32 if good.dtype == torch.float64 else torch.float64
    return [
        (good.new_zeros(good.shape[:-1] + (good.shape[-1] - 1,)), ValueError, "shape"),
        (good.new_zeros(good.shape[:-1] + (good.shape[-1] + 5,)), ValueError, "shape"),
        (good.new_zeros((good.numel(),)), ValueError, "shape"),
        (good.new_zeros((2,) + tuple(good.shape)), ValueError, "shape"),
        (good.to(other), TypeError, "dtype"),
    ]


def _rodrigues(device):
    aa = torch.randn(5, 3, dtype=torch.float64, device=device)
    return torch.ops.smplfast.rodrigues_backward, lambda g: (g, aa), torch.zeros(5, 3, 3, dtype=torch.float64, device=device)


def _chain(device):
    par = torch.tensor([-1, 0, 1, 1], device=device)
    R = ops.rodrigues(torch.randn(2, 4, 3, dtype=torch.float64, device=device))
    rest = torch.randn(2, 4, 3, dtype=torch.float64, device=device)
    posed, A = ops.kinematic_chain(R, rest, par)
    gA = torch.zeros_like(A)
    return (torch.ops.smplfast.kinematic_chain_backward,
            lambda g: (g, gA, R, rest, par, A), torch.zeros_like(posed))


def _chain_transforms(device):
    op, make, gP = _chain(device)
    par = torch.tensor([-1, 0, 1, 1], device=device)
    R = ops.rodrigues(torch.randn(2, 4, 3, dtype=torch.float64, device=device))
    rest = torch.randn(2, 4, 3, dtype=torch.float64, device=device)
    posed, A = ops.kinematic_chain(R, rest, par)
    return op, lambda g: (torch.zeros_like(posed), g, R, rest, par, A), torch.zeros_like(A)


def _lbs(device):
    A = torch.randn(2, 4, 3, 4, dtype=torch.float64, device=device)
    vp = torch.randn(2, 9, 3, dtype=torch.float64, device=device)
    idx = torch.randint(0, 4, (9, 2), dtype=torch.int32, device=device)
    w = torch.rand(9, 2, dtype=torch.float64, device=device)
    return (torch.ops.smplfast.sparse_lbs_backward, lambda g: (g, A, vp, idx, w, True, True),
            torch.zeros(2, 9, 3, dtype=torch.float64, device=device))


def _soft(device):
    v = torch.tensor([[[2.0, 2.0], [12.0, 3.0], [5.0, 11.0]]], dtype=torch.float64, device=device)
    f = torch.tensor([[0, 1, 2]], dtype=torch.int64, device=device)
    alpha, trans = torch.ops.smplfast.soft_silhouette(v, f, 8, 10, 1.0, 0.01)
    return (torch.ops.smplfast.soft_silhouette_backward, lambda g: (g, v, f, trans, 1.0, 0.01),
            torch.zeros_like(alpha))


def _uv(device):
    grid = torch.randn(1, 2, 3, 3, 4, dtype=torch.float64, device=device)
    part = torch.tensor([0, 1, 1, 0, 1], device=device)
    uv = torch.rand(5, 2, dtype=torch.float64, device=device)
    return (torch.ops.smplfast.uv_lookup_backward, lambda g: (g, grid, part, uv, None, None, True, True, False),
            torch.zeros(5, 4, dtype=torch.float64, device=device))


CASES = {"rodrigues": _rodrigues, "chain_posed": _chain, "chain_transforms": _chain_transforms, "lbs": _lbs,
         "soft_silhouette": _soft, "uv_lookup": _uv}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_backward_op_rejects_bad_gradients(case, device):
    op, make, good = CASES[case](device)
    op(*make(good))  # the right gradient is accepted
    for bad, exc, what in _bad_grads(good):
        if case == "soft_silhouette" and exc is TypeError:
            op(*make(bad))  # converted to verts_2d's dtype by design
            continue
        with pytest.raises(exc, match=what):
            op(*make(bad))
    with pytest.raises(TypeError, match="dtype"):
        op(*make(good.to(torch.int64)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the wrong-device case")
@pytest.mark.parametrize("case", list(CASES))
def test_backward_op_rejects_gradient_on_other_device_cuda(case):
    if not smplfast.cuda_available():
        pytest.skip("smplfast built without CUDA kernels")
    op, make, good = CASES[case]("cuda")
    with pytest.raises(ValueError, match="cpu"):
        op(*make(good.cpu()))


@pytest.mark.parametrize("case", list(CASES))
def test_backward_op_fake_checks_shapes_too(case):
    """The fake (meta) implementation runs the same checks, so torch.compile traces fail loudly too."""
    op, make, good = CASES[case]("cpu")
    from torch._subclasses.fake_tensor import FakeTensorMode
    args = make(good.new_zeros(good.shape[:-1] + (good.shape[-1] + 1,)))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(ValueError, match="shape"):
            op(*fargs)


def test_wrong_gradient_through_autograd_is_caught():
    """A hand-written autograd.Function handing a wrong-sized gradient reaches the same check."""
    aa = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    R = ops.rodrigues(aa)
    with pytest.raises(RuntimeError):  # autograd itself rejects the wrong shape before the op
        R.backward(torch.ones(4, 3, 2, dtype=torch.float64))
