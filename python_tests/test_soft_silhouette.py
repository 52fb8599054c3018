"""The soft silhouette (soft_silhouette) against its pure-PyTorch reference (values and gradients),
float64 gradcheck, opcheck and torch.compile, agreement with rasterize's hard silhouette as sigma -> 0
on a real body, an optimisation that pulls a mesh onto a target silhouette, the gradient's sign,
degenerate faces, empty inputs and bad inputs, on cpu (and cuda when present)."""
import math

import numpy as np
import pytest
import torch

import smplfast
from smplfast.ops import rasterize, soft_silhouette, soft_silhouette_reference
from smplfast.ops.soft_silhouette import cutoff_distance2

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
needs_cuda = pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA device and CUDA kernels")


def random_mesh(B, V, F, size, seed=0, dtype=torch.float64, device="cpu", spread=None):
    """Random vertices over (and a little beyond) an H x W image; faces are random vertex triples (large
    overlapping triangles of both windings), or, with `spread`, small triangles around random centres."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    box = torch.tensor([W + 4.0, H + 4.0], dtype=torch.float64)
    if spread is None:
        v = torch.rand(B, V, 2, generator=g, dtype=torch.float64) * box - 2.0
        faces = torch.randint(0, V, (F, 3), generator=g)
    else:  # F independent small triangles (V ignored)
        centre = torch.rand(B, F, 1, 2, generator=g, dtype=torch.float64) * box - 2.0
        v = (centre + spread * torch.randn(B, F, 3, 2, generator=g, dtype=torch.float64)).reshape(B, 3 * F, 2)
        faces = torch.arange(3 * F).view(F, 3)
    return v.to(device=device, dtype=dtype), faces.to(device)


def weighted_grad(fn, v, faces, size, sigma, cutoff, w):
    x = v.detach().clone().requires_grad_(True)
    A = fn(x, faces, size, sigma, cutoff)
    (g,) = torch.autograd.grad((A * w).sum(), x)
    return A.detach(), g


_BODY = {}


def body_scene(B=2, side=128, seed=3):
    """Posed default-model bodies 2.7 m in front of a pinhole camera (a body fills ~60% of the height),
    their projected vertices in pixels, and rasterize's hard silhouette."""
    key = (B, side, seed)
    if key not in _BODY:
        if "model" not in _BODY:
            _BODY["model"] = smplfast.SMPL()
        model = _BODY["model"]
        faces = torch.as_tensor(model.faces.astype(np.int64))
        pose = smplfast.body.samplers.sample_poses(B, seed=seed)
        with torch.no_grad():
            v = model(global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices.double()
        v = v - v.mean(1, keepdim=True)
        v[..., 2] += 2.7
        f, c = 1.76 * side, side / 2
        uv = f * v[..., :2] / v[..., 2:] + c  # rasterize's projection (float64, same order)
        hard = rasterize(v, faces, f, (c, c), (side, side))[0] >= 0
        _BODY[key] = (uv, faces, hard)
    return _BODY[key]


def iou(a, b):
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


# --------------------------------------------------------------------------- kernel vs reference
CASES = [  # (B, V, F, size, sigma, cutoff, spread)
    (2, 12, 10, (9, 11), 1.0, 1e-4, None),
    (1, 10, 8, (12, 7), 0.3, 0.0, None),
    (3, 0, 30, (16, 16), 0.5, 1e-4, 1.5),
    (2, 0, 12, (10, 13), 4.0, 1e-2, 0.7),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_forward_and_gradient(device, dtype):
    for seed, (B, V, F, size, sigma, cutoff, spread) in enumerate(CASES):
        v, faces = random_mesh(B, V, F, size, seed=seed, dtype=dtype, device=device, spread=spread)
        w = torch.rand((B,) + size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        w = w.to(device=device, dtype=dtype)
        A, g = weighted_grad(soft_silhouette, v, faces, size, sigma, cutoff, w)
        R, gr = weighted_grad(soft_silhouette_reference, v, faces, size, sigma, cutoff, w)
        assert A.shape == (B,) + size and A.dtype == dtype and g.dtype == dtype
        assert torch.all((A >= 0) & (A <= 1))
        assert 0.02 < float((A > 0.5).float().mean()) < 0.98  # a real test: inside and outside pixels
        assert float(((A > 1e-3) & (A < 0.999)).float().mean()) > 0.05  # and soft ones
        tol = dict(rtol=1e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(A, R, **tol)
        gscale = float(gr.abs().max())
        assert gscale > 0.05
        gtol = dict(rtol=1e-4, atol=1e-5 * gscale) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11 * gscale)
        torch.testing.assert_close(g, gr, **gtol)


def test_body_matches_reference():
    uv, faces, _ = body_scene(B=1, side=32)
    w = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A, g = weighted_grad(soft_silhouette, uv, faces, 32, 0.2, 1e-4, w)
    R, gr = weighted_grad(soft_silhouette_reference, uv, faces, 32, 0.2, 1e-4, w)
    assert float((A > 0.5).sum()) > 100
    torch.testing.assert_close(A, R, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-10 * float(gr.abs().max()))


def test_gradcheck_float64():
    for seed, (cutoff, spread) in enumerate([(0.0, None), (1e-3, 1.2)]):
        v, faces = random_mesh(2, 7, 5, (6, 7), seed=10 + seed, spread=spread)
        x = v.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t: soft_silhouette(t, faces, (6, 7), 1.5, cutoff), (x,),
                                        eps=1e-6, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------ semantics
def test_single_triangle_values():
    # A right triangle with its legs on pixel centres (u = 2.5 and v = 2.5).
    v = torch.tensor([[[2.5, 2.5], [12.5, 2.5], [2.5, 12.5]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    sigma = 0.5
    A = soft_silhouette(v, faces, (16, 16), sigma)[0]
    assert A[2, 6] == 0.5 and A[6, 2] == 0.5  # on an edge: d = 0
    # Inside at distance 2 from the nearest edge, outside at distance 1 and 4.
    torch.testing.assert_close(A[4, 4], torch.sigmoid(torch.tensor(4.0 / sigma, dtype=torch.float64)))
    torch.testing.assert_close(A[1, 5], torch.sigmoid(torch.tensor(-1.0 / sigma, dtype=torch.float64)))
    assert A[0, 0] == 0  # beyond the cutoff: d^2 = 8 > 0.5 * log(9999)
    assert 8.0 > cutoff_distance2(sigma, 1e-4)
    A0 = soft_silhouette(v, faces, (16, 16), sigma, cutoff=0.0)[0]
    torch.testing.assert_close(A0[0, 0], torch.sigmoid(torch.tensor(-8.0 / sigma, dtype=torch.float64)))
    # Both windings and both face orders give the same image.
    for f in (faces[:, [0, 2, 1]], faces[:, [1, 2, 0]]):
        torch.testing.assert_close(soft_silhouette(v, f, (16, 16), sigma), A[None], rtol=0, atol=1e-15)


def test_union_of_two_faces_and_int32_faces():
    v, faces = random_mesh(1, 0, 2, (10, 10), seed=4, spread=2.0)
    a = soft_silhouette(v, faces[:1], 10, 1.0, cutoff=0.0)
    b = soft_silhouette(v, faces[1:], 10, 1.0, cutoff=0.0)
    both = soft_silhouette(v, faces, (10, 10), 1.0, cutoff=0.0)
    torch.testing.assert_close(both, 1 - (1 - a) * (1 - b), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(soft_silhouette(v, faces.int(), (10, 10), 1.0, cutoff=0.0), both, rtol=0, atol=0)


def test_gradient_sign_moves_the_outline_towards_the_target():
    # A triangle (mirror-symmetric about v = 7, like the pixel grid) left of its target copy: the loss
    # gradient pushes it right (+u) and not up or down, and the silhouette's derivative w.r.t. a right
    # shift is positive right of the triangle and negative left of it.
    tri = torch.tensor([[[4.0, 4.0], [4.0, 10.0], [10.0, 7.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    target = (soft_silhouette(tri + torch.tensor([3.0, 0.0], dtype=torch.float64), faces, (14, 20), 1e-4) > 0.5)
    assert target.sum() > 10
    shift = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    A = soft_silhouette(tri + shift, faces, (14, 20), 1.0)
    ((A - target.double()) ** 2).sum().backward()
    assert shift.grad[0] < 0 and abs(float(shift.grad[1])) < 1e-9 * abs(float(shift.grad[0]))
    jac = torch.autograd.functional.jacobian(lambda s: soft_silhouette(tri + s, faces, (14, 20), 1.0)[0, 7], shift)
    assert torch.all(jac[9:11, 0] > 0) and torch.all(jac[2:4, 0] < 0)


def test_iou_against_hard_silhouette_at_small_sigma():
    uv, faces, hard = body_scene(B=2, side=128)
    for dtype in DTYPES:
        A = soft_silhouette(uv.to(dtype), faces, 128, 1e-3)
        assert A.shape == (2, 128, 128)
        for b in range(2):
            assert hard[b].sum() > 1500
            assert iou(A[b] > 0.5, hard[b]) > 0.98
    # Larger sigma: a soft outline, still the same shape.
    A = soft_silhouette(uv, faces, 128, 0.4)
    assert iou(A[0] > 0.5, hard[0]) > 0.85


def test_optimisation_pulls_a_mesh_onto_a_target_silhouette():
    # Adam on a 2D shift and scale of a projected body (64 x 64), silhouette loss against a binary mask
    # of the body in place; the mesh's (near-hard) silhouette moves onto the mask.
    uv, faces, _ = body_scene(B=1, side=128)
    uv = (uv * 0.5).float()
    target = soft_silhouette(uv, faces, 64, 1e-3) > 0.5
    centre = uv.mean(1, keepdim=True)
    shift = torch.tensor([3.0, -2.0], requires_grad=True)
    log_scale = torch.tensor(math.log(0.85), requires_grad=True)
    opt = torch.optim.Adam([{"params": [shift], "lr": 0.3}, {"params": [log_scale], "lr": 0.03}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 40)

    def placed():
        return centre + torch.exp(log_scale) * (uv - centre) + shift

    def hard_iou():
        return iou(soft_silhouette(placed().detach(), faces, 64, 1e-3)[0] > 0.5, target[0])

    before = hard_iou()
    for it in range(40):
        loss = ((soft_silhouette(placed(), faces, 64, 0.1) - target.float()) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = hard_iou()
    assert before < 0.5 and after > 0.85, (before, after)
    assert float(shift.detach().abs().max()) < 0.5 and abs(float(log_scale.detach())) < 0.05


# --------------------------------------------------------------------------- degenerate, empty
def test_degenerate_faces_contribute_nothing_and_gradients_stay_finite():
    v = torch.tensor([[[1.5, 1.5], [6.5, 6.5], [3.5, 3.5], [6.5, 1.5], [2.0, 7.0], [2.0 + 1e-7, 7.0 + 1e-7],
                       [7.0, 7.5]]], dtype=torch.float64)
    good = torch.tensor([[0, 3, 1]])
    degenerate = torch.tensor([[0, 1, 2], [0, 0, 3], [1, 1, 1], [4, 5, 4]])  # collinear, repeated corners
    sliver = torch.tensor([[4, 5, 6]])  # nearly degenerate: a real, very thin triangle
    x = v.clone().requires_grad_(True)
    for fn in (soft_silhouette, soft_silhouette_reference):
        A = fn(x, torch.cat([good, degenerate]), (9, 9), 0.7)
        torch.testing.assert_close(A, fn(x, good, (9, 9), 0.7), rtol=0, atol=1e-15)
        (g,) = torch.autograd.grad(A.sum(), x)
        assert torch.all(torch.isfinite(g)) and torch.all(g[0, [2, 4, 5, 6]] == 0)
        A = fn(x, torch.cat([good, degenerate, sliver]), (9, 9), 0.7)
        (g,) = torch.autograd.grad(A.sum(), x)
        assert torch.all(torch.isfinite(g)) and torch.all(torch.isfinite(A))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        soft_silhouette(v, good, (9, 9), 0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_no_faces_no_vertices(device):
    for fn in (soft_silhouette, soft_silhouette_reference):
        v = torch.zeros(0, 5, 2, dtype=torch.float64, device=device, requires_grad=True)
        A = fn(v, torch.tensor([[0, 1, 2]], device=device), (4, 6), 1.0)
        assert A.shape == (0, 4, 6)
        A.sum().backward()
        assert v.grad.shape == (0, 5, 2)
        v = torch.rand(2, 5, 2, dtype=torch.float64, device=device, requires_grad=True)
        A = fn(v, torch.zeros(0, 3, dtype=torch.int64, device=device), (4, 6), 1.0)
        assert A.shape == (2, 4, 6) and torch.all(A == 0)
        A.sum().backward()
        assert torch.all(v.grad == 0)
        A = fn(torch.zeros(2, 0, 2, device=device), torch.zeros(0, 3, dtype=torch.int64, device=device), 3, 1.0)
        assert A.shape == (2, 3, 3) and torch.all(A == 0)


def test_bad_inputs():
    v, faces = random_mesh(2, 10, 5, (8, 8))
    size = (8, 8)
    bad_v = v.clone()
    bad_v[1, 3, 0] = float("nan")
    inf_v = v.clone()
    inf_v[0, 2, 1] = float("inf")
    cases = [
        ((v, faces, size, 0.0), "sigma must be a finite number > 0"),
        ((v, faces, size, -1.0), "sigma must be a finite number > 0"),
        ((v, faces, size, float("nan")), "sigma must be a finite number > 0"),
        ((v, faces, size, float("inf")), "sigma must be a finite number > 0"),
        ((v, faces, size, True), "sigma must be a float"),
        ((v, faces, size, torch.tensor(1.0)), "sigma must be a float"),
        ((v, faces, size, 1.0, 0.5), r"cutoff must lie in \[0, 0.5\)"),
        ((v, faces, size, 1.0, -1e-3), r"cutoff must lie in \[0, 0.5\)"),
        ((v, faces + 10, size, 1.0), r"faces must index vertices in \[0, 10\); got values in \[\d+, "),
        ((v, faces - 20, size, 1.0), "faces must index vertices"),
        ((v[0], faces, size, 1.0), r"verts_2d must have shape \(B, V, 2\)"),
        ((torch.cat([v, v[..., :1]], -1), faces, size, 1.0), r"verts_2d must have shape \(B, V, 2\)"),
        ((v.half(), faces, size, 1.0), "verts_2d must be float32 or float64"),
        ((v.long(), faces, size, 1.0), "verts_2d must be float32 or float64"),
        ((v.tolist(), faces, size, 1.0), "verts_2d must be a"),
        ((v, faces.float(), size, 1.0), "faces must be int64 or int32"),
        ((v, faces[:, :2], size, 1.0), r"faces must have shape \(F, 3\)"),
        ((v, faces.tolist(), size, 1.0), "faces must be an"),
        ((v, faces, (0, 8), 1.0), "image_size must be positive"),
        ((v, faces, -3, 1.0), "image_size must be positive"),
        ((v, faces, (8.0, 8), 1.0), "image_size must be an int or a pair of ints"),
        ((v, faces, (8, 8, 3), 1.0), "image_size must be an int or a pair of ints"),
        ((v, faces, "8", 1.0), "image_size must be an int or a pair of ints"),
        ((bad_v, faces, size, 1.0), r"verts_2d must be finite; got nan at index \(1, 3, 0\)"),
        ((inf_v, faces, size, 1.0), r"verts_2d must be finite; got inf at index \(0, 2, 1\)"),
    ]
    for fn in (soft_silhouette, soft_silhouette_reference):
        for args, msg in cases:
            with pytest.raises(ValueError, match=msg):
                fn(*args)


def test_not_twice_differentiable():
    v, faces = random_mesh(1, 8, 6, (8, 8), seed=2)
    x = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(soft_silhouette(x, faces, 8, 1.0).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        torch.autograd.grad(g.sum(), x)


# ------------------------------------------------------------------------------- opcheck, compile
def test_opcheck():
    for dtype in DTYPES:
        v, faces = random_mesh(2, 10, 12, (9, 8), seed=5, dtype=dtype)
        torch.library.opcheck(torch.ops.smplfast.soft_silhouette.default, (v.requires_grad_(True), faces, 9, 8, 1.0,
                                                                           1e-4))
        t = torch.rand(2, 9, 8, dtype=dtype)
        torch.library.opcheck(torch.ops.smplfast.soft_silhouette_backward.default,
                              (torch.rand(2, 9, 8, dtype=dtype), v.detach(), faces, t, 1.0, 1e-4))


def test_compile_fullgraph():
    v, faces = random_mesh(2, 12, 16, (10, 12), seed=6, dtype=torch.float32)
    target = (torch.rand(2, 10, 12, generator=torch.Generator().manual_seed(1)) > 0.5).float()

    def loss(x):
        return ((soft_silhouette(x, faces, (10, 12), 0.8) - target) ** 2).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    x1, x2 = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    l1, l2 = compiled(x1), loss(x2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad)


# --------------------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    cases = [(random_mesh(3, 30, 40, (24, 32), seed=1, dtype=dtype), (24, 32), 1.0, 1e-4),
             (random_mesh(2, 0, 50, (20, 20), seed=2, dtype=dtype, spread=1.0), (20, 20), 0.5, 1e-4),
             # windows of whole images (queued for whole blocks)
             (random_mesh(2, 10, 8, (40, 30), seed=3, dtype=dtype), (40, 30), 2.0, 0.0)]
    uv, bfaces, _ = body_scene(B=2, side=128)
    cases.append(((uv.to(dtype), bfaces), 128, 0.4, 1e-4))
    for (v, faces), size, sigma, cutoff in cases:
        w = torch.rand(v.shape[0], *((size, size) if isinstance(size, int) else size), dtype=dtype)
        A, g = weighted_grad(soft_silhouette, v, faces, size, sigma, cutoff, w)
        Ac, gc = weighted_grad(soft_silhouette, v.cuda(), faces.cuda(), size, sigma, cutoff, w.cuda())
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(Ac.cpu(), A, **tol)
        gscale = float(g.abs().max())
        gtol = dict(rtol=1e-4, atol=1e-4 * gscale) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11 * gscale)
        torch.testing.assert_close(gc.cpu(), g, **gtol)


@needs_cuda
def test_cuda_opcheck_compile_and_devices():
    v, faces = random_mesh(2, 10, 12, (9, 8), seed=5, device="cuda")
    torch.library.opcheck(torch.ops.smplfast.soft_silhouette.default, (v.requires_grad_(True), faces, 9, 8, 1.0, 1e-4))
    fn = torch.compile(lambda x: soft_silhouette(x, faces, (9, 8), 1.0).sum(), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(v), soft_silhouette(v, faces, (9, 8), 1.0).sum())
    with pytest.raises(ValueError, match="faces is on"):
        soft_silhouette(v, faces.cpu(), (9, 8), 1.0)
