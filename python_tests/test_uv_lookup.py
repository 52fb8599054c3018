"""uv_lookup (bilinear (part, u, v) lookup on per-part UV grids) against its grid_sample reference and
an explicit per-point formula, on cpu (and cuda when present)."""
import math

import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.ops.uv_lookup import UV_SLACK, _grid_grad_sorted

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
# Values and grid gradients are sums of a few products. The uv gradient divides by the sum of the
# valid corners' weights twice, which magnifies rounding where that sum is small: float32 gets a
# looser absolute tolerance there.
TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}
TOL_UV = {torch.float32: dict(rtol=1e-3, atol=2e-2), torch.float64: dict(rtol=1e-8, atol=1e-8)}
needs_cuda = pytest.mark.skipif(not smplfast.cuda_available(), reason="needs smplfast's CUDA kernels and a GPU")


def make_case(G=3, P=4, R=8, C=3, N=400, dtype=torch.float64, device="cpu", masked=True, seed=0, shared_index=True):
    """Random grids and points, with the awkward positions listed first: the four chart corners,
    points on grid lines and on grid nodes, and (with a mask) points inside a 2x2 block of invalid
    cells (all four corners invalid) of every part. Invalid cells hold NaN: they must never be read."""
    gen = torch.Generator().manual_seed(seed)
    n_all = max(N, 140)  # the special points come first; small cases keep a prefix of them
    grid = torch.randn(G, P, R, R, C, generator=gen, dtype=torch.float64)
    part = torch.randint(0, P, (n_all,), generator=gen)[:N]
    batch_index = torch.randint(0, G, (n_all,), generator=gen)[:N] if (G > 1 or not shared_index) else None
    uv = torch.rand(n_all, 2, generator=gen, dtype=torch.float64)
    k = torch.randint(0, R, (n_all, 2), generator=gen).double() / max(R - 1, 1)
    uv[:4] = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    uv[4:40, 0] = k[4:40, 0]           # on a column line
    uv[40:76, 1] = k[40:76, 1]         # on a row line
    uv[76:110] = k[76:110]             # on a grid node
    valid = None
    if masked:
        valid = torch.rand(P, R, R, generator=gen) > 0.4
        valid[:, 1:3, 1:3] = False     # cell (1, 1) has four invalid corners ...
        valid[:, 0, 0] = True          # ... and every part keeps a valid cell
        inside = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        uv[110:140] = (1 + inside) / (R - 1)  # ... and these points lie inside it
    uv = uv[:N].to(dtype)
    if valid is not None:
        grid = torch.where(valid[None, :, :, :, None], grid, float("nan"))
    out = dict(grid=grid.to(dtype=dtype, device=device), part=part.to(device), uv=uv.to(device),
               batch_index=batch_index.to(device) if batch_index is not None else None,
               valid=valid.to(device) if valid is not None else None)
    return out


def explicit(grid, part, uv, batch_index=None, valid=None):
    """The op's formula written out point by point in float64 (positions in the input's dtype)."""
    G, P, R, _, C = grid.shape
    grid, valid = grid.double().cpu(), valid.cpu() if valid is not None else None
    pos = (uv.clamp(0, 1) * (R - 1)).cpu()
    rows = []
    for n in range(part.shape[0]):
        g = 0 if batch_index is None else int(batch_index[n])
        p = int(part[n])
        x, y = float(pos[n, 0]), float(pos[n, 1])
        j0, i0 = min(int(math.floor(x)), R - 1), min(int(math.floor(y)), R - 1)
        j1, i1 = min(j0 + 1, R - 1), min(i0 + 1, R - 1)
        fx, fy = x - j0, y - i0
        acc, den = torch.zeros(C, dtype=torch.float64), 0.0
        for i, wy in ((i0, 1 - fy), (i1, fy)):
            for j, wx in ((j0, 1 - fx), (j1, fx)):
                if valid is None or bool(valid[p, i, j]):
                    acc = acc + wy * wx * grid[g, p, i, j]
                    den += wy * wx
        if valid is None:
            rows.append(acc)
        elif den > 0:
            rows.append(acc / den)
        else:
            cells = [(float((i - y) ** 2 + (j - x) ** 2), i * R + j) for i in range(R) for j in range(R)
                     if bool(valid[p, i, j])]
            _, best = min(cells)
            rows.append(grid[g, p, best // R, best % R])
    return torch.stack(rows) if rows else torch.zeros(0, C, dtype=torch.float64)


def run_both(case, fn_a, fn_b, seed=1, deterministic=False):
    """Values and gradients (grid, uv) of two implementations under the same upstream gradient."""
    res = []
    go = None
    for fn in (fn_a, fn_b):
        grid = case["grid"].clone().requires_grad_(True)
        uv = case["uv"].clone().requires_grad_(True)
        out = fn(grid, case["part"], uv, case["batch_index"], case["valid"], deterministic=deterministic)
        if go is None:
            go = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            go = go.to(dtype=out.dtype, device=out.device)
        out.backward(go)
        res.append((out.detach(), grid.grad, uv.grad))
    return res


# ----------------------------------------------------------------------- against the references
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
@pytest.mark.parametrize("G", [1, 3], ids=["shared-grid", "per-sample-grid"])
@pytest.mark.parametrize("R", [7, 8])
def test_matches_reference(device, dtype, masked, G, R):
    case = make_case(G=G, R=R, dtype=dtype, device=device, masked=masked, seed=R + 10 * G)
    (out, gg, guv), (out_r, gg_r, guv_r) = run_both(case, ops.uv_lookup, ops.uv_lookup_reference)
    assert out.shape == (400, 3) and out.dtype == dtype and out.device.type == device
    assert torch.isfinite(out).all() and torch.isfinite(gg).all() and torch.isfinite(guv).all()
    torch.testing.assert_close(out, out_r, **TOL[dtype])
    torch.testing.assert_close(gg, gg_r, **TOL[dtype])
    torch.testing.assert_close(guv, guv_r, **TOL_UV[dtype])
    if masked:  # invalid cells get no gradient
        invalid = ~case["valid"][None, :, :, :, None].expand_as(gg)
        assert bool((gg[invalid] == 0).all())


@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
@pytest.mark.parametrize("R", [1, 2, 5])
def test_matches_explicit_formula(masked, R):
    case = make_case(G=2, P=3, R=R, C=2, N=150, masked=masked and R >= 4, seed=R)
    expected = explicit(**case)
    torch.testing.assert_close(ops.uv_lookup(**case), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ops.uv_lookup_reference(**case), expected, rtol=1e-12, atol=1e-12)


def test_float32_positions_follow_the_input_dtype():
    # u = k / (R - 1) in float32 times R - 1 may round to exactly k: both implementations must then
    # take the same cell, which the explicit formula decides from the float32 product.
    case = make_case(R=32, dtype=torch.float32, masked=True, seed=3)
    expected = explicit(**case).float()
    torch.testing.assert_close(ops.uv_lookup(**case), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ masks, fallback
def test_renormalisation_and_nearest_cell():
    R = 4
    grid = torch.full((1, 1, R, R, 1), float("nan"), dtype=torch.float64)
    valid = torch.zeros(1, R, R, dtype=torch.bool)
    for (i, j), val in {(0, 0): 1.0, (0, 1): 3.0, (3, 3): 10.0, (3, 0): 20.0}.items():
        valid[0, i, j] = True
        grid[0, 0, i, j, 0] = val
    uv = torch.tensor([
        [0.25 / 3, 0.5 / 3],   # (y, x) = (.5, .25): valid corners (0,0) w=.375 and (0,1) w=.125
        [1.5 / 3, 1.5 / 3],    # (1.5, 1.5): no valid corner; (0,1) at d^2 2.5 beats the others at 4.5
        [1.5 / 3, 2.5 / 3],    # (2.5, 1.5): no valid corner; (3,0) and (3,3) tie at 2.5 -> (3,0)
        [1.5 / 3, 1.0],        # (3, 1.5), last row: (3,1), (3,2) invalid; tie (3,0)/(3,3) -> (3,0)
        [2.0 / 3, 0.0],        # grid node (0, 2): cell (0,2)'s corners are invalid -> (0,1) at d^2 1
    ], dtype=torch.float64, requires_grad=True)
    part = torch.zeros(5, dtype=torch.int64)
    out = ops.uv_lookup(grid, part, uv, valid=valid)
    expected = torch.tensor([[(0.375 * 1 + 0.125 * 3) / 0.5], [3.0], [20.0], [20.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(ops.uv_lookup_reference(grid, part, uv, valid=valid), expected, rtol=0, atol=1e-14)
    g = torch.autograd.grad(out.sum(), uv)[0]
    assert bool((g[1:] == 0).all())  # nearest-cell values do not move with uv
    assert g[0, 0] != 0


def test_edge_between_invalid_corners_uses_nearest_cell():
    # On the column line x = 1 with cells (.,1) invalid and (.,2) valid: the valid corners have
    # weight 0, so the point takes the nearest valid cell (ties to the smallest flat index).
    R = 4
    grid = torch.arange(R * R, dtype=torch.float64).reshape(1, 1, R, R, 1)
    valid = torch.ones(1, R, R, dtype=torch.bool)
    valid[0, :, 1] = False
    uv = torch.tensor([[1 / 3, 1.5 / 3]], dtype=torch.float64)
    part = torch.zeros(1, dtype=torch.int64)
    # distance^2 from (1.5, 1) to (1, 0), (1, 2), (2, 0), (2, 2) is 1.25: the first is cell 4.
    out = ops.uv_lookup(grid, part, uv, valid=valid)
    assert out.item() == 4.0
    assert ops.uv_lookup_reference(grid, part, uv, valid=valid).item() == 4.0


def test_uv_within_slack_is_clamped():
    case = make_case(G=1, R=6, masked=False, N=4)
    uv = torch.tensor([[-0.5 * UV_SLACK, 0.3], [1 + 0.5 * UV_SLACK, 0.7], [0.0, 0.3], [1.0, 0.7]],
                      dtype=torch.float64, requires_grad=True)
    out = ops.uv_lookup(case["grid"], torch.zeros(4, dtype=torch.int64), uv)
    torch.testing.assert_close(out[:2], out[2:], rtol=0, atol=0)
    g = torch.autograd.grad(out.sum(), uv)[0]
    assert g[0, 0] == 0 and g[1, 0] == 0       # clamped coordinates
    assert g[0, 1] != 0 and g[2, 0] != 0       # u = 0 takes the derivative from the right
    assert g[3, 0] == 0                         # u = 1: the value is constant beyond the border


# ------------------------------------------------------------------------------ autograd checks
@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
def test_gradcheck(masked):
    gen = torch.Generator().manual_seed(5)
    G, P, R, C, N = 2, 3, 5, 2, 40
    grid = torch.randn(G, P, R, R, C, generator=gen, dtype=torch.float64, requires_grad=True)
    part = torch.randint(0, P, (N,), generator=gen)
    bidx = torch.randint(0, G, (N,), generator=gen)
    # Stay 1e-3 away from grid lines, where the derivative jumps.
    uv = (torch.randint(0, R - 1, (N, 2), generator=gen) + 0.001
          + 0.998 * torch.rand(N, 2, generator=gen, dtype=torch.float64)) / (R - 1)
    uv.requires_grad_(True)
    valid = None
    if masked:
        valid = torch.rand(P, R, R, generator=gen) > 0.35
        valid[:, 0, 0] = True
    assert torch.autograd.gradcheck(lambda g, u: ops.uv_lookup(g, part, u, bidx, valid), (grid, uv))


def test_opcheck():
    case = make_case(G=2, R=5, N=60, masked=True, seed=2)
    grid, uv = case["grid"].requires_grad_(True), case["uv"].requires_grad_(True)
    args = (grid, case["part"], uv, case["batch_index"], case["valid"], False)
    torch.library.opcheck(torch.ops.smplfast.uv_lookup.default, args)
    finite = case["grid"].nan_to_num().requires_grad_(True)  # without a mask every cell is read
    torch.library.opcheck(torch.ops.smplfast.uv_lookup.default, (finite, case["part"], uv, None, None, True))


def test_compile_fullgraph():
    case = make_case(G=2, R=6, N=100, masked=True, seed=4)

    def lookup_loss(grid, uv):
        return (ops.uv_lookup(grid, case["part"], uv, case["batch_index"], case["valid"]) ** 2).sum()

    compiled = torch.compile(lookup_loss, fullgraph=True, backend="aot_eager")
    grid, uv = case["grid"].clone().requires_grad_(True), case["uv"].clone().requires_grad_(True)
    grid2, uv2 = case["grid"].clone().requires_grad_(True), case["uv"].clone().requires_grad_(True)
    loss, loss2 = compiled(grid, uv), lookup_loss(grid2, uv2)
    torch.testing.assert_close(loss, loss2)
    loss.backward()
    loss2.backward()
    torch.testing.assert_close(grid.grad, grid2.grad)
    torch.testing.assert_close(uv.grad, uv2.grad)


def test_single_input_gradients():
    # Asking for one gradient only skips the other's work; the one asked for is unchanged.
    case = make_case(G=2, R=6, N=80, masked=True, seed=6)
    _, gg_both, guv_both = run_both(case, ops.uv_lookup, ops.uv_lookup, seed=3)[0]
    go = torch.randn(80, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    args = (case["part"],)
    grid = case["grid"].clone().requires_grad_(True)
    out = ops.uv_lookup(grid, *args, case["uv"], case["batch_index"], case["valid"])
    assert torch.equal(torch.autograd.grad(out, grid, go)[0], gg_both)
    uv = case["uv"].clone().requires_grad_(True)
    out = ops.uv_lookup(case["grid"], *args, uv, case["batch_index"], case["valid"])
    assert torch.equal(torch.autograd.grad(out, uv, go)[0], guv_both)


# ------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_backward(device, dtype):
    # Few cells, many points: every cell collects hundreds of contributions.
    case = make_case(G=2, P=2, R=3, N=3000, dtype=dtype, device=device, masked=False, seed=7)
    runs = [run_both(case, ops.uv_lookup, ops.uv_lookup, deterministic=True) for _ in range(2)]
    (a, b), (c, _) = runs
    for x, y in ((a, b), (a, c)):
        assert torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
    default = run_both(case, ops.uv_lookup, ops.uv_lookup)[0]
    torch.testing.assert_close(default[1], a[1], **TOL[dtype])
    torch.testing.assert_close(default[2], a[2], **TOL_UV[dtype])


@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sorted_backward_equals_bucket_backward_bitwise(masked, dtype):
    """The sort-and-segment-sum backward (CUDA's deterministic path) run on the CPU adds every
    cell's contributions in the same order as the CPU kernel: identical bits."""
    case = make_case(G=3, R=6, N=2000, dtype=dtype, masked=masked, seed=8)
    grid, uv = case["grid"].clone().requires_grad_(True), case["uv"].clone().requires_grad_(True)
    out = ops.uv_lookup(grid, case["part"], uv, case["batch_index"], case["valid"])
    go = torch.randn_like(out)
    out.backward(go)
    gg, guv = _grid_grad_sorted(go, case["grid"], case["part"], case["uv"], case["batch_index"], case["valid"])
    assert torch.equal(gg, grid.grad)
    assert torch.equal(guv, uv.grad)


def test_global_deterministic_mode():
    case = make_case(G=2, R=5, N=300, masked=True, seed=9)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        (out, gg, guv), (out_r, gg_r, guv_r) = run_both(case, ops.uv_lookup, ops.uv_lookup_reference)
    finally:
        torch.use_deterministic_algorithms(before)
    torch.testing.assert_close(gg, gg_r, **TOL[torch.float64])
    torch.testing.assert_close(guv, guv_r, **TOL_UV[torch.float64])


# ------------------------------------------------------------------------------ shapes, errors
@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
def test_empty(masked):
    case = make_case(G=2, R=5, N=0, masked=masked)
    grid, uv = case["grid"].clone().requires_grad_(True), case["uv"].clone().requires_grad_(True)
    for fn in (ops.uv_lookup, ops.uv_lookup_reference):
        out = fn(grid, case["part"], uv, case["batch_index"], case["valid"])
        assert out.shape == (0, 3) and out.dtype == grid.dtype
        gg, guv = torch.autograd.grad(out.sum(), (grid, uv))
        assert gg.shape == grid.shape and not bool(gg.any())
        assert guv.shape == (0, 2)


def test_non_contiguous_inputs():
    case = make_case(G=2, R=6, N=120, masked=True, seed=11)
    grid = case["grid"].permute(4, 0, 1, 2, 3).contiguous().permute(1, 2, 3, 4, 0)
    uv = case["uv"].T.contiguous().T
    part = torch.stack([case["part"], case["part"]], 1)[:, 0]
    bidx = torch.stack([case["batch_index"], case["batch_index"]], 1)[:, 1]
    valid = case["valid"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not (grid.is_contiguous() or uv.is_contiguous() or part.is_contiguous() or valid.is_contiguous())
    before = [t.clone() for t in (grid, uv, part, bidx, valid)]
    torch.testing.assert_close(ops.uv_lookup(grid, uv=uv, part=part, batch_index=bidx, valid=valid),
                               ops.uv_lookup(**case), rtol=0, atol=0, equal_nan=False)
    for t, b in zip((grid, uv, part, bidx, valid), before):
        assert torch.equal(t.nan_to_num(), b.nan_to_num())  # inputs are not modified


def _bad_cases():
    c = make_case(G=2, P=3, R=5, N=10, masked=True, seed=12)
    g, p, uv, b, v = c["grid"], c["part"], c["uv"], c["batch_index"], c["valid"]
    no_cells = v.clone()
    no_cells[1] = False
    nan_uv = uv.clone()
    nan_uv[3, 1] = float("nan")
    return [
        ("grid rank", (g[0], p, uv, b, v), "grid must be (G, P, R, R, C); got (3, 5, 5, 3)"),
        ("grid not square", (g[:, :, :4], p, uv, b, v), "grid must be (G, P, R, R, C); got (2, 3, 4, 5, 3)"),
        ("grid dtype", (g.to(torch.float16), p, uv, b, v), "grid must be float32 or float64; got torch.float16"),
        ("part rank", (g, p[:, None], uv, b, v), "part must be (N,); got (10, 1)"),
        ("part dtype", (g, p.int(), uv, b, v), "part must be int64; got torch.int32"),
        ("uv shape", (g, p, uv[:, :1], b, v), "uv must be (10, 2) (N from part); got (10, 1)"),
        ("uv length", (g, p, uv[:9], b, v), "uv must be (10, 2) (N from part); got (9, 2)"),
        ("uv dtype", (g, p, uv.float(), b, v), "uv must have grid's dtype torch.float64; got torch.float32"),
        ("batch_index shape", (g, p, uv, b[:5], v), "batch_index must be (10,) (N from part) or None; got (5,)"),
        ("batch_index dtype", (g, p, uv, b.int(), v), "batch_index must be int64; got torch.int32"),
        ("valid shape", (g, p, uv, b, v[:2]), "valid must be (3, 5, 5) (P, R, R from grid) or None; got (2, 5, 5)"),
        ("valid dtype", (g, p, uv, b, v.to(torch.uint8)), "valid must be bool; got torch.uint8"),
        ("device", (g, p.to("meta"), uv, b, v), "part must be on grid's device cpu; got meta"),
        ("part range", (g, p + 1, uv, b, v), "part must lie in [0, 3)"),
        ("negative part", (g, p - 3, uv, b, v), "part must lie in [0, 3)"),
        ("batch_index range", (g, p, uv, b + 2, v), "batch_index must lie in [0, 2) (G from grid)"),
        ("uv range", (g, p, uv + 2e-6 + (1 - uv.max()), b, v), "uv must lie in [0, 1] (slack 1e-06)"),
        ("uv negative", (g, p, uv - 1e-3 - uv.min(), b, v), "uv must lie in [0, 1]"),
        ("uv nan", (g, p, nan_uv, b, v), "uv must be finite; got NaN or Inf at index (3, 1)"),
        ("part without valid cells", (g, p, uv, b, no_cells), "every part needs at least one valid cell; parts [1]"),
    ]


@pytest.mark.parametrize("fn", [ops.uv_lookup, ops.uv_lookup_reference], ids=["op", "reference"])
@pytest.mark.parametrize("name,args,message", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_inputs(fn, name, args, message):
    with pytest.raises(ValueError) as err:
        fn(*args)
    assert message in str(err.value)


def test_not_a_tensor():
    case = make_case(G=1, R=4, N=5, masked=False)
    with pytest.raises(TypeError, match="uv must be a torch.Tensor; got list"):
        ops.uv_lookup(case["grid"], case["part"], [[0.5, 0.5]] * 5)


# ------------------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True], ids=["all-valid", "masked"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_matches_cpu(dtype, masked, deterministic):
    cpu = make_case(G=3, R=8, N=5000, dtype=dtype, masked=masked, seed=13)
    gpu = {k: (v.cuda() if v is not None else None) for k, v in cpu.items()}
    (o_c, gg_c, guv_c), = [run_both(cpu, ops.uv_lookup, ops.uv_lookup)[0]]
    (o_g, gg_g, guv_g), = [run_both(gpu, ops.uv_lookup, ops.uv_lookup, deterministic=deterministic)[0]]
    torch.testing.assert_close(o_g.cpu(), o_c, **TOL[dtype])
    torch.testing.assert_close(gg_g.cpu(), gg_c, **TOL[dtype])
    torch.testing.assert_close(guv_g.cpu(), guv_c, **TOL_UV[dtype])


@needs_cuda
def test_cuda_deterministic_is_bitwise_reproducible():
    case = make_case(G=2, P=2, R=3, N=200000, dtype=torch.float32, device="cuda", masked=True, seed=14)
    grads = [run_both(case, ops.uv_lookup, ops.uv_lookup, deterministic=True)[0][1] for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])
