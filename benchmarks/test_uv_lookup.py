"""Surface lookups at DensePose coordinates: the UV-grid lookup against the mesh (face-based) lookup.

100 000 (part, u, v) points spread over B = 64 posed bodies of the bundled model:

- ``grid-reference``: ``ops.uv_lookup.uv_lookup_reference`` (pure PyTorch, ``grid_sample`` per
  (sample, part) pair) on the posed 24 x 32 x 32 grids (``UVGrid.forward``), with ``valid``;
- ``grid-op``: the compiled ``ops.uv_lookup.uv_lookup`` (when the module provides it);
- ``grid-gather``: the same bilinear lookup written as four vectorised torch gathers with the valid
  corners renormalised (what one would write in plain PyTorch without ``grid_sample``; it returns 0
  instead of the nearest valid cell when all four corners are invalid, which never happens for
  points inside the charts);
- ``face-search``: what a user does without a grid: find the chart triangle containing (u, v) by a
  vectorised barycentric test against every face of the point's part
  (:class:`smplfast.surface.ChartTriangles`), fetch its three posed mesh vertices, blend;
- ``face-known``: the same blend when the face and barycentrics are already known (precomputed once
  for fixed (part, u, v)): only a gather of 3 vertices per point.

Forward, and forward + backward (gradient w.r.t. the posed grid / posed vertices and, for the grid,
uv). The posing itself (grid or mesh) is not timed. Run: ``pytest benchmarks/test_uv_lookup.py``.
"""
import pytest
import torch

import smplfast
from smplfast.body.default_model import load_default_model
from smplfast.body.samplers import sample_betas, sample_poses
from smplfast.ops.uv_lookup import uv_lookup_reference

try:  # the compiled op
    from smplfast.ops.uv_lookup import uv_lookup as compiled_uv_lookup
except ImportError:  # pragma: no cover - builds without it
    compiled_uv_lookup = None
from smplfast.surface import ChartTriangles, SurfaceCharts, UVGrid, sample_chart_points

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
IMPLS = ["grid-reference", "grid-op", "grid-gather", "face-search", "face-known"]
NUM_POINTS = 100_000
BATCH = 64


def grid_gather(grid, part, uv, batch_index, valid):
    """Bilinear lookup (align_corners=True) as four gathers, invalid corners renormalised away."""
    R = grid.shape[2]
    pos = uv.clamp(0, 1) * (R - 1)
    x0 = pos[:, 0].detach().floor().clamp(0, R - 2).long()
    y0 = pos[:, 1].detach().floor().clamp(0, R - 2).long()
    fx, fy = pos[:, 0] - x0, pos[:, 1] - y0
    out, wsum = 0, 0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        w = w * valid[part, y0 + dy, x0 + dx]
        out = out + w[:, None] * grid[batch_index, part, y0 + dy, x0 + dx]
        wsum = wsum + w
    return out / wsum.clamp_min(1e-12)[:, None]


@pytest.fixture(scope="module")
def scene():
    m = load_default_model()
    charts = SurfaceCharts.from_npz_dict(m.extras)
    grid = UVGrid.from_model(m, resolution=32)
    smpl = smplfast.SMPL()
    pose = sample_poses(BATCH, seed=0)
    betas = sample_betas(BATCH, 10, seed=1)
    with torch.no_grad():
        posed_grid = grid(betas, pose[:, 3:], pose[:, :3])
        verts = smpl(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3]).vertices
    gen = torch.Generator().manual_seed(2)
    part, uv, _, _ = sample_chart_points(charts, NUM_POINTS, gen)
    batch_index = torch.randint(BATCH, (NUM_POINTS,), generator=gen)
    return dict(grid=grid, charts=charts, posed_grid=posed_grid, verts=verts, part=part, uv=uv.float(),
                batch_index=batch_index)


def _runner(impl, scene, device, backward):
    grid = scene["grid"].to(device)
    part0 = (scene["part"] - 1).to(device)
    part1 = scene["part"].to(device)
    uv = scene["uv"].to(device)
    bi = scene["batch_index"].to(device)
    valid = grid.valid
    if impl.startswith("grid"):
        fn = {"grid-reference": uv_lookup_reference, "grid-gather": grid_gather, "grid-op": compiled_uv_lookup}[impl]
        if fn is None:
            pytest.skip("the compiled uv_lookup op is not available in this build")
        posed = scene["posed_grid"].to(device).detach().requires_grad_(backward)
        uvg = uv.clone().requires_grad_(backward)

        def run():
            posed.grad = uvg.grad = None
            out = fn(posed, part0, uvg, bi, valid)
            if backward:
                out.sum().backward()
            return out
    else:
        tri = ChartTriangles(scene["charts"], device=device, dtype=torch.float32)
        verts = scene["verts"].to(device).detach().requires_grad_(backward)
        known = tri.locate(part1, uv) if impl == "face-known" else None

        def run():
            verts.grad = None
            face, bary = known if known is not None else tri.locate(part1, uv)
            out = tri.interpolate(verts, face, bary, bi)
            if backward:
                out.sum().backward()
            return out

    def timed():
        run()
        if device == "cuda":
            torch.cuda.synchronize()

    return timed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("impl", IMPLS)
def test_uv_lookup(benchmark, scene, impl, backward, device):
    run = _runner(impl, scene, device, backward)
    benchmark.group = f"uv lookup {NUM_POINTS} points, B={BATCH}, {device}, {'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info.update(impl=impl, device=device, points=NUM_POINTS, batch=BATCH)
    rounds = 20 if device == "cuda" else (2 if impl == "face-search" else 5)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)


def test_lookups_agree(scene):
    """The timed implementations compute the same surface (to the grid's accuracy, about a millimetre)."""
    tri = ChartTriangles(scene["charts"], dtype=torch.float32)
    n = 5000
    part, uv, bi = scene["part"][:n], scene["uv"][:n], scene["batch_index"][:n]
    face, bary = tri.locate(part, uv)
    mesh = tri.interpolate(scene["verts"], face, bary, bi)
    g = uv_lookup_reference(scene["posed_grid"], part - 1, uv, bi, scene["grid"].valid)
    d = (mesh - g).norm(dim=-1) * 1000
    assert float(d.mean()) < 2.0
    torch.testing.assert_close(grid_gather(scene["posed_grid"], part - 1, uv, bi, scene["grid"].valid), g)
