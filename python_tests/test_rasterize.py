"""The z-buffer rasterizer (rasterize) against its pure-PyTorch reference and against geometry whose
answer is known exactly: shared edges and vertices on pixel centres, closed meshes, depth order,
near-plane culling, perspective-correct barycentrics; plus interpolate, opcheck, torch.compile,
empty inputs and bad inputs, on cpu (and cuda when present)."""
import math

import numpy as np
import pytest
import torch

import smplfast
from smplfast import ops
from smplfast.ops.rasterize import interpolate, rasterize, rasterize_reference

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
needs_cuda = pytest.mark.skipif(not smplfast.cuda_available(), reason="needs a CUDA device and CUDA kernels")


def random_scene(B, V, F, dtype=torch.float64, device="cpu", seed=0, size=(24, 32)):
    """Random triangles (random vertex triples, so many overlaps, both windings) in front of the camera,
    and per-image cameras that spread them over the image."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, V, 3, generator=g, dtype=torch.float64) * 0.5
    v[..., 2] = v[..., 2].abs() * 0.7 + 1.5
    faces = torch.randint(0, V, (F, 3), generator=g)
    H, W = size
    focal = 0.6 * W * (1 + 0.2 * torch.rand(B, 2, generator=g, dtype=torch.float64))
    center = torch.tensor([W / 2, H / 2], dtype=torch.float64) + torch.randn(B, 2, generator=g, dtype=torch.float64)
    return v.to(device=device, dtype=dtype), faces.to(device), focal.to(device), center.to(device)


def flat(points2d, depth=1.0, dtype=torch.float64, device="cpu"):
    """Camera-space vertices at depth `depth` that project exactly to `points2d` with focal = depth and
    center 0 (u = depth * (X / depth) + 0 = X for the dyadic values used here)."""
    p = torch.as_tensor(points2d, dtype=torch.float64)
    z = torch.full((p.shape[0], 1), float(depth), dtype=torch.float64)
    return torch.cat([p, z], 1)[None].to(device=device, dtype=dtype)


def coverage_count(vertices, faces, size, focal=1.0, center=(0.0, 0.0), fn=rasterize):
    """How many faces, each rasterized alone, cover each pixel of image 0."""
    count = torch.zeros(size, dtype=torch.int64)
    for k in range(faces.shape[0]):
        fi, _, _ = fn(vertices, faces[k:k + 1], focal, center, size)
        count += (fi[0] >= 0).cpu().long()
    return count


def half_open_box(size, u0, u1, v0, v1):
    """Pixels whose centre lies in [u0, u1) x [v0, v1): what the tie rule covers for an axis-aligned box
    (left and top edges in, right and bottom edges out)."""
    H, W = size
    pu = torch.arange(W, dtype=torch.float64) + 0.5
    pv = torch.arange(H, dtype=torch.float64) + 0.5
    return ((pv[:, None] >= v0) & (pv[:, None] < v1) & (pu[None] >= u0) & (pu[None] < u1))


# --------------------------------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_random_meshes(device, dtype):
    for seed, (B, V, F, size) in enumerate([(3, 40, 60, (24, 32)), (2, 9, 200, (17, 13)), (1, 300, 500, (40, 40))]):
        v, faces, focal, center = random_scene(B, V, F, dtype, device, seed=seed, size=size)
        fi, bary, depth = rasterize(v, faces, focal, center, size)
        rfi, rbary, rdepth = rasterize_reference(v, faces, focal, center, size)
        assert fi.dtype == torch.int64 and bary.dtype == dtype and depth.dtype == dtype
        assert fi.shape == (B,) + size and bary.shape == (B,) + size + (3,) and depth.shape == (B,) + size
        assert 0.05 < (fi >= 0).float().mean() < 1.0  # a real test: both covered and empty pixels
        # The kernel and the reference run the same float64 operations in the same order, so even
        # exact ties agree.
        torch.testing.assert_close(fi, rfi, rtol=0, atol=0)
        tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bary, rbary, **tol)
        torch.testing.assert_close(depth, rdepth, **tol)
        hit = fi >= 0
        assert torch.all(bary[~hit] == 0) and torch.all(depth[~hit] == 0)
        torch.testing.assert_close(bary[hit].sum(-1), torch.ones_like(bary[hit].sum(-1)), **tol)
        assert torch.all(bary[hit] >= 0)


def test_body_matches_reference():
    model = smplfast.SMPL()
    faces = torch.as_tensor(model.faces.astype(np.int64))
    pose = smplfast.body.samplers.sample_poses(2, seed=3)
    with torch.no_grad():
        v = model(global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices
    v = v - v.mean(1, keepdim=True)
    v[..., 2] += 2.7
    size = (48, 40)
    fi, bary, depth = rasterize(v, faces, 45.0, (20.0, 24.0), size)
    rfi, rbary, rdepth = rasterize_reference(v, faces, 45.0, (20.0, 24.0), size)
    assert (fi >= 0).sum() > 150
    torch.testing.assert_close(fi, rfi, rtol=0, atol=0)
    torch.testing.assert_close(bary, rbary, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(depth, rdepth, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- exact coverage geometry
@pytest.mark.parametrize("depth", [1.0, 4.0])
@pytest.mark.parametrize("diagonal", [0, 1])
@pytest.mark.parametrize("flip", [False, True])
def test_square_of_two_triangles_covers_exactly_its_pixels(depth, diagonal, flip):
    size = (12, 11)
    # Corners on pixel centres: both the outline and the diagonal pass through pixel centres.
    corners = [(1.5, 2.5), (9.5, 2.5), (9.5, 10.5), (1.5, 10.5)]
    v = flat(corners, depth)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]] if diagonal == 0 else [[0, 1, 3], [1, 2, 3]])
    if flip:
        faces = faces[:, [0, 2, 1]]
    expected = half_open_box(size, 1.5, 9.5, 2.5, 10.5)
    count = coverage_count(v, faces, size, focal=depth)
    assert torch.equal(count, expected.long())  # every pixel once, no hole on the diagonal
    fi, _, _ = rasterize(v, faces, depth, (0.0, 0.0), size)
    assert torch.equal(fi[0] >= 0, expected)
    # Corners off the pixel grid: exactly the pixels whose centre is inside.
    v2 = flat([(1.3, 2.2), (9.9, 2.2), (9.9, 10.1), (1.3, 10.1)], depth)
    fi2, _, _ = rasterize(v2, faces, depth, (0.0, 0.0), size)
    assert torch.equal(fi2[0] >= 0, half_open_box(size, 1.3, 9.9, 2.2, 10.1))


def test_tie_rule_on_edges_through_pixel_centres():
    size = (8, 8)
    # Right triangle with legs on pixel centres: top edge v = 1.5, left edge u = 1.5, hypotenuse
    # from (1.5, 6.5) to (6.5, 1.5) through the centres with u + v = 8.
    v = flat([(1.5, 1.5), (6.5, 1.5), (1.5, 6.5)])
    for faces in (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])):
        fi, _, _ = rasterize(v, faces, 1.0, (0.0, 0.0), size)
        pu = torch.arange(8, dtype=torch.float64) + 0.5
        U, Vv = pu[None].expand(8, 8), pu[:, None].expand(8, 8)
        # Top and left edges belong to the face; the hypotenuse (moving right leaves the face) does not.
        expected = (U >= 1.5) & (Vv >= 1.5) & (U + Vv < 8)
        assert torch.equal(fi[0] >= 0, expected)
        # The mirror image across the hypotenuse takes exactly the centres on it.
        m = flat([(6.5, 6.5), (6.5, 1.5), (1.5, 6.5)])
        fim, _, _ = rasterize(m, faces, 1.0, (0.0, 0.0), size)
        assert not torch.any((fi[0] >= 0) & (fim[0] >= 0))
        on = (U + Vv == 8) & (U >= 1.5) & (Vv >= 1.5) & (U < 6.5) & (Vv < 6.5)
        assert torch.all(fim[0][on] >= 0)


def test_fan_around_a_vertex_on_a_pixel_centre_covers_each_pixel_once():
    size = (11, 11)
    centre = (5.5, 5.5)
    ring = [(0.5, 0.5), (5.5, 0.5), (10.5, 0.5), (10.5, 5.5), (10.5, 10.5), (5.5, 10.5), (0.5, 10.5), (0.5, 5.5)]
    v = flat([centre] + ring)
    n = len(ring)
    for flip in (False, True):
        faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % n] for k in range(n)])
        if flip:  # mixed windings
            faces[::2] = faces[::2][:, [0, 2, 1]]
        count = coverage_count(v, faces, size)
        assert torch.equal(count, half_open_box(size, 0.5, 10.5, 0.5, 10.5).long())


def test_random_fans_have_no_holes_and_no_double_cover():
    g = torch.Generator().manual_seed(5)
    size = (32, 32)
    for trial in range(6):
        n = int(torch.randint(3, 13, (1,), generator=g))
        angles = torch.sort(torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi).values
        if trial % 2:
            angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)  # spokes through pixel centres
        c = torch.tensor([15.5, 16.5], dtype=torch.float64)
        ring = c + 13 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
        pts = torch.cat([c[None], ring])
        v = flat(pts.tolist())
        faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % n] for k in range(n)])
        # The fan tiles the ring's convex polygon when no angular gap reaches pi (else a triangle
        # spans the far side and overlaps the others).
        gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
        if gaps.max() >= math.pi:
            continue
        count = coverage_count(v, faces, size)
        assert count.max() <= 1
        # Pixel centres inside the polygon (away from its outline) are covered.
        pu = torch.arange(32, dtype=torch.float64) + 0.5
        P = torch.stack(torch.meshgrid(pu, pu, indexing="xy"), -1)  # (H, W, 2) as (u, v)
        inside = torch.ones(size, dtype=torch.bool)
        for k in range(n):
            a, b = ring[k], ring[(k + 1) % n]
            cross = (b[0] - a[0]) * (P[..., 1] - a[1]) - (b[1] - a[1]) * (P[..., 0] - a[0])
            inside &= cross > 1e-9
        assert inside.sum() > 100
        assert torch.all(count[inside] == 1)


def icosphere(subdivisions=2):
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        cache, new_faces = {}, []

        def mid(i, j):
            key = (min(i, j), max(i, j))
            if key not in cache:
                m = verts[i] + verts[j]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return torch.tensor(np.array(verts)), torch.tensor(faces, dtype=torch.int64)


@pytest.mark.parametrize("device", DEVICES)
def test_closed_mesh_has_no_holes(device):
    from scipy.spatial import Delaunay

    verts, faces = icosphere(3)
    size = (48, 64)
    g = torch.Generator().manual_seed(11)
    B = 6
    R = ops.rodrigues_reference(torch.randn(B, 3, generator=g, dtype=torch.float64))
    scale = torch.tensor([0.6, 1.0, 0.8], dtype=torch.float64)  # an ellipsoid, so rotations matter
    v = torch.einsum("bij,vj->bvi", R, verts * scale)
    t = torch.tensor([0.1, -0.05, 2.5], dtype=torch.float64)
    v = v + t
    focal = torch.full((B, 2), 60.0, dtype=torch.float64)
    center = (32.0, 24.0)
    fi, _, depth = rasterize(v.to(device), faces.to(device), focal.to(device), center, size)
    fi, depth = fi.cpu(), depth.cpu()
    pu, pv = torch.arange(64, dtype=torch.float64) + 0.5, torch.arange(48, dtype=torch.float64) + 0.5
    P = torch.stack(torch.meshgrid(pu, pv, indexing="xy"), -1).reshape(-1, 2).numpy()
    for b in range(B):
        uv = (60.0 * v[b, :, :2] / v[b, :, 2:] + torch.tensor([32.0, 24.0], dtype=torch.float64)).numpy()
        # A closed convex surface projects onto the convex hull of its projected vertices; shrink it a
        # hair to stay clear of rounding on the outline.
        c = uv.mean(0)
        inside = torch.from_numpy(Delaunay(c + (uv - c) * (1 - 1e-6)).find_simplex(P) >= 0).reshape(size)
        outside = torch.from_numpy(Delaunay(c + (uv - c) * (1 + 1e-6)).find_simplex(P) < 0).reshape(size)
        assert inside.sum() > 300
        assert torch.all(fi[b][inside] >= 0), f"image {b}: {(fi[b][inside] < 0).sum()} holes"
        assert torch.all(fi[b][outside] < 0)
        # The z-buffer keeps the near side: compare with the ray's first hit of the exact ellipsoid
        # |S^-1 R^T (z d - t)| = 1, d = ((u - c_x) / f, (v - c_y) / f, 1), away from the outline.
        well_inside = torch.from_numpy(Delaunay(c + (uv - c) * 0.8).find_simplex(P) >= 0).reshape(size)
        d = torch.cat([(torch.from_numpy(P) - torch.tensor([32.0, 24.0], dtype=torch.float64)) / 60.0,
                       torch.ones(P.shape[0], 1, dtype=torch.float64)], 1)
        M = R[b].T / scale[:, None]  # maps a camera point minus t to the unit sphere
        a_, b_ = d @ M.T, (-t) @ M.T
        A, Bq, C = (a_ * a_).sum(1), 2 * (a_ * b_).sum(1), (b_ * b_).sum() - 1
        z_near = ((-Bq - torch.sqrt(Bq * Bq - 4 * A * C)) / (2 * A)).reshape(size)
        err = (depth[b] - z_near)[well_inside].abs()
        assert err.max() < 0.02  # the mesh's chord error; the far side is ~1 m further


# ---------------------------------------------------------------------- depth, perspective, near
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depth_test_keeps_the_nearest_face_in_either_order(device, dtype):
    size = (10, 10)
    near_quad = [(-0.3, -0.3, 2.0), (0.2, -0.3, 2.0), (0.2, 0.2, 2.0), (-0.3, 0.2, 2.0)]
    far_quad = [(-0.1, -0.1, 3.0), (0.9, -0.1, 3.0), (0.9, 0.45, 3.0), (-0.1, 0.45, 3.0)]
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for order in (0, 1):
        pts = near_quad + far_quad if order == 0 else far_quad + near_quad
        v = torch.tensor([pts], dtype=dtype, device=device)
        faces = torch.cat([quad, quad + 4]).to(device)
        fi, bary, depth = rasterize(v, faces, 10.0, (5.0, 5.0), size)
        near_faces = (0, 1) if order == 0 else (2, 3)
        fi_near, _, _ = rasterize(v, faces[list(near_faces)], 10.0, (5.0, 5.0), size)
        fi_far, _, _ = rasterize(v, faces[[f for f in range(4) if f not in near_faces]], 10.0, (5.0, 5.0), size)
        cn, cf = fi_near[0] >= 0, fi_far[0] >= 0
        assert torch.any(cn & cf) and torch.any(cf & ~cn)
        isnear = (fi[0] == near_faces[0]) | (fi[0] == near_faces[1])
        assert torch.equal(isnear, cn)
        assert torch.equal(fi[0] >= 0, cn | cf)
        torch.testing.assert_close(depth[0][cn], torch.full_like(depth[0][cn], 2.0))
        torch.testing.assert_close(depth[0][cf & ~cn], torch.full_like(depth[0][cf & ~cn], 3.0))


def test_equal_depth_goes_to_the_smaller_face_index():
    v = flat([(1.0, 1.0), (7.0, 1.0), (1.0, 7.0)], depth=2.0)
    for faces in (torch.tensor([[0, 1, 2], [0, 1, 2]]), torch.tensor([[2, 1, 0], [0, 1, 2], [1, 2, 0]])):
        fi, _, _ = rasterize(v, faces, 2.0, (0.0, 0.0), (8, 8))
        assert torch.all(fi[fi >= 0] == 0) and (fi >= 0).sum() > 10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_barycentrics_are_perspective_correct(device, dtype):
    # A steeply tilted triangle: screen-space and perspective-correct weights differ a lot.
    v = torch.tensor([[[-0.5, -0.4, 1.0], [0.8, -0.3, 4.0], [-0.2, 0.7, 2.0]]], dtype=dtype, device=device)
    faces = torch.tensor([[0, 1, 2]], device=device)
    focal = torch.tensor([[40.0, 35.0]], dtype=torch.float64, device=device)
    center = (20.0, 18.0)
    fi, bary, depth = rasterize(v, faces, focal, center, (36, 40))
    hit = fi[0] >= 0
    assert hit.sum() > 100
    X = interpolate(v, faces, fi, bary)[0].double()  # the surface point under each pixel centre
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    rows, cols = torch.nonzero(hit, as_tuple=True)
    u = 40.0 * X[hit][:, 0] / X[hit][:, 2] + 20.0
    w = 35.0 * X[hit][:, 1] / X[hit][:, 2] + 18.0
    torch.testing.assert_close(u, cols.double() + 0.5, **tol)
    torch.testing.assert_close(w, rows.double() + 0.5, **tol)
    torch.testing.assert_close(X[hit][:, 2], depth[0][hit].double(), **tol)
    n = torch.linalg.cross(v[0, 1] - v[0, 0], v[0, 2] - v[0, 0]).double()
    torch.testing.assert_close((X[hit] - v[0, 0].double()) @ n, torch.zeros(int(hit.sum()), dtype=torch.float64,
                                                                           device=device), **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_near_plane_culling(device):
    tri = [[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.0, 0.5, 2.0]]
    faces = torch.tensor([[0, 1, 2]], device=device)
    for z, near, drawn in [(2.0, 1e-3, True), (0.05, 0.1, False), (0.1, 0.1, True), (-1.0, 1e-3, False),
                           (0.0, 1e-3, False)]:
        pts = [list(p) for p in tri]
        pts[1][2] = z
        v = torch.tensor([pts], dtype=torch.float64, device=device)
        fi, _, _ = rasterize(v, faces, 10.0, (8.0, 8.0), (16, 16), near=near)
        assert bool((fi >= 0).any()) == drawn, (z, near)


def test_degenerate_faces_are_skipped():
    v = flat([(1.5, 1.5), (6.5, 6.5), (3.5, 3.5), (6.5, 1.5)])
    fi, _, _ = rasterize(v, torch.tensor([[0, 1, 2], [0, 0, 3], [1, 1, 1]]), 1.0, (0.0, 0.0), (8, 8))
    assert torch.all(fi < 0)


# -------------------------------------------------------------------------------- sizes and args
def test_image_sizes_from_one_pixel_to_1024():
    v = flat([(0.0, 0.0), (2.0, 0.0), (0.0, 2.0)])
    fi, bary, depth = rasterize(v, torch.tensor([[0, 1, 2]]), 1.0, (0.0, 0.0), (1, 1))
    assert fi.shape == (1, 1, 1) and fi.item() == 0 and depth.item() == 1.0
    torch.testing.assert_close(bary[0, 0, 0], torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    fi, _, _ = rasterize(v, torch.tensor([[0, 1, 2]]), 1.0, (0.0, 0.0), (1, 5))
    assert fi.tolist() == [[[0, -1, -1, -1, -1]]]  # (1.5, 0.5) lies on the hypotenuse, which is not taken
    # 1024 x 1024: a quad over most of the image (corners on pixel centres) and a few triangles.
    size = (1024, 1024)
    pts = [(3.5, 5.5), (1000.5, 5.5), (1000.5, 1020.5), (3.5, 1020.5), (100.25, 80.0), (900.0, 300.75),
           (200.0, 990.5)]
    v = flat(pts, depth=2.0)
    v[0, 4:, 2] = 1.5  # the triangle in front (its vertices project with focal 2 at depth 1.5)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    fi, bary, depth = rasterize(v, faces, 2.0, (0.0, 0.0), size)
    quad = half_open_box(size, 3.5, 1000.5, 5.5, 1020.5)
    assert torch.equal((fi[0] == 0) | (fi[0] == 1) | (fi[0] == 2), quad | (fi[0] == 2))
    assert torch.equal(fi[0] >= 0, quad | (fi[0] == 2))
    rfi, rbary, rdepth = rasterize_reference(v, faces, 2.0, (0.0, 0.0), size)
    torch.testing.assert_close(fi, rfi, rtol=0, atol=0)
    torch.testing.assert_close(bary, rbary, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(depth, rdepth, rtol=1e-12, atol=1e-12)
    # Larger than 1024 and non-square.
    fi, _, _ = rasterize(v, faces, 2.0, (0.0, 0.0), (1100, 1500))
    assert fi.shape == (1, 1100, 1500) and torch.equal(fi[0, :1024, :1024] >= 0, rfi[0] >= 0)


def test_camera_argument_forms_agree():
    v, faces, _, _ = random_scene(2, 30, 40, seed=8, size=(20, 20))
    ref = rasterize(v, faces, torch.tensor([[25.0, 25.0], [25.0, 25.0]]), torch.tensor([[10.0, 9.0], [10.0, 9.0]]),
                    (20, 20))
    for focal, center in [(25.0, (10.0, 9.0)), (torch.tensor([25.0, 25.0]), torch.tensor([10.0, 9.0])),
                          (torch.tensor(25.0), [10, 9]), (torch.tensor([25.0, 25.0], dtype=torch.float32),
                                                          (10.0, 9.0))]:
        out = rasterize(v, faces, focal, center, [20, 20])
        for a, b in zip(out, ref):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_no_faces_no_vertices(device):
    v, faces, focal, center = random_scene(0, 10, 5, device=device)
    fi, bary, depth = rasterize(v, faces, focal, center, (4, 6))
    assert fi.shape == (0, 4, 6) and bary.shape == (0, 4, 6, 3) and depth.shape == (0, 4, 6)
    v, _, focal, center = random_scene(2, 10, 5, device=device)
    no_faces = torch.zeros((0, 3), dtype=torch.int64, device=device)
    for fn in (rasterize, rasterize_reference):
        fi, bary, depth = fn(v, no_faces, focal, center, (4, 6))
        assert torch.all(fi == -1) and torch.all(bary == 0) and torch.all(depth == 0)
        fi, _, _ = fn(v[:, :0], no_faces, focal, center, (3, 3))
        assert fi.shape == (2, 3, 3) and torch.all(fi == -1)
    attr = interpolate(torch.randn(10, 2, device=device), no_faces, fi, torch.zeros(2, 3, 3, 3, device=device))
    assert attr.shape == (2, 3, 3, 2) and torch.all(attr == 0)


def test_faces_of_any_integer_type_are_accepted():
    """What a model gives (numpy, int32, uint32) rasterizes exactly as int64 faces."""
    v, faces, focal, center = random_scene(2, 10, 5)
    ref = rasterize(v, faces, focal, center, (8, 8))
    for alt in (faces.numpy(), faces.numpy().astype(np.uint32), faces.int(), faces.tolist()):
        out = rasterize(v, alt, focal, center, (8, 8))
        assert all(torch.equal(a, b) for a, b in zip(ref, out))


def test_bad_inputs():
    v, faces, focal, center = random_scene(2, 10, 5)
    size = (8, 8)
    cases = [
        ((v[0], faces, focal, center, size), r"vertices must have shape \(B, V, 3\)"),
        ((v[..., :2], faces, focal, center, size), r"vertices must have shape \(B, V, 3\)"),
        ((v.half(), faces, focal, center, size), "vertices must be float32 or float64"),
        ((v.tolist(), faces, focal, center, size), "vertices must be a"),
        ((v, faces.double(), focal, center, size), "faces must hold integer vertex indices"),
        ((v, faces.numpy().astype(float), focal, center, size), "faces must hold integer vertex indices"),
        ((v, faces[:, :2], focal, center, size), r"faces must have shape \(F, 3\)"),
        ((v, faces + 10, focal, center, size), r"faces must index vertices in \[0, 10\); got values in"),
        ((v, faces - 20, focal, center, size), "faces must index vertices"),
        ((v, faces, focal[:1], center, size), "focal must be"),
        ((v, faces, torch.zeros(3, 2, 2, dtype=torch.float64), center, size), "focal must be"),
        ((v, faces, 0.0, center, size), "focal must be > 0"),
        ((v, faces, -focal, center, size), "focal must be > 0"),
        ((v, faces, focal, 5.0, size), "center must be"),
        ((v, faces, focal, (1.0, 2.0, 3.0), size), "center must be"),
        ((v, faces, focal, center, (0, 8)), "image_size must be positive"),
        ((v, faces, focal, center, (8, -1)), "image_size must be positive"),
        ((v, faces, focal, center, (8.0, 8)), "image_size must be a pair of ints"),
        ((v, faces, focal, center, 8), "image_size must be a pair of ints"),
        ((v, faces, focal, center, size, 0.0), "near must be a finite number > 0"),
        ((v, faces, focal, center, size, float("nan")), "near must be a finite number > 0"),
        ((v, faces, focal.long(), center, size), "focal must be a floating-point tensor"),
    ]
    bad_v = v.clone()
    bad_v[1, 3, 2] = float("nan")
    cases.append(((bad_v, faces, focal, center, size), r"vertices must be finite; got nan at index \(1, 3, 2\)"))
    inf_v = v.clone()
    inf_v[0, 0, 0] = float("inf")
    cases.append(((inf_v, faces, focal, center, size), "vertices must be finite"))
    nan_c = center.clone()
    nan_c[0, 1] = float("nan")
    cases.append(((v, faces, focal, nan_c, size), "center must be finite"))
    for fn in (rasterize, rasterize_reference):
        for args, msg in cases:
            with pytest.raises(ValueError, match=msg):
                fn(*args)


@needs_cuda
def test_mixed_devices_raise():
    v, faces, focal, center = random_scene(2, 10, 5)
    with pytest.raises(ValueError, match="faces is on"):
        rasterize(v.cuda(), faces, 10.0, (4.0, 4.0), (8, 8))
    with pytest.raises(ValueError, match="focal is on"):
        rasterize(v.cuda(), faces.cuda(), focal, (4.0, 4.0), (8, 8))


def test_not_differentiable():
    v, faces, focal, center = random_scene(1, 10, 20)
    v.requires_grad_(True)
    fi, bary, depth = rasterize(v, faces, focal, center, (16, 16))
    with pytest.raises(RuntimeError, match="not differentiable"):
        (bary.sum() + depth.sum()).backward()


def test_opcheck():
    v, faces, focal, center = random_scene(2, 20, 30, seed=4, size=(12, 10))
    for dtype in DTYPES:
        torch.library.opcheck(torch.ops.smplfast.rasterize.default, (v.to(dtype), faces, focal, center, 12, 10, 1e-3))


def test_compile_fullgraph():
    v, faces, focal, center = random_scene(2, 30, 40, torch.float32, seed=6, size=(16, 20))
    colours = torch.rand(30, 3)

    def render(verts, focal):
        fi, bary, depth = rasterize(verts, faces, focal, (10.0, 8.0), (16, 20))
        return interpolate(colours, faces, fi, bary), (fi >= 0).float(), depth

    compiled = torch.compile(render, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(v, focal), render(v, focal)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------ interpolate
def test_interpolate_vertex_batched_and_corner_attributes():
    v, faces, focal, center = random_scene(2, 25, 40, seed=9, size=(14, 18))
    fi, bary, _ = rasterize(v, faces, focal, center, (14, 18))
    hit = fi >= 0
    g = torch.Generator().manual_seed(1)
    shared = torch.randn(25, 4, generator=g, dtype=torch.float64)
    batched = torch.randn(2, 25, 4, generator=g, dtype=torch.float64)
    corners = torch.randn(40, 3, 4, generator=g, dtype=torch.float64)
    # A direct loop over the covered pixels.
    b_idx, r_idx, c_idx = torch.nonzero(hit, as_tuple=True)
    want_s, want_b, want_c = (torch.zeros(2, 14, 18, 4, dtype=torch.float64) for _ in range(3))
    for b, r, c in zip(b_idx.tolist(), r_idx.tolist(), c_idx.tolist()):
        f = int(fi[b, r, c])
        w = bary[b, r, c]
        want_s[b, r, c] = sum(w[k] * shared[faces[f, k]] for k in range(3))
        want_b[b, r, c] = sum(w[k] * batched[b, faces[f, k]] for k in range(3))
        want_c[b, r, c] = sum(w[k] * corners[f, k] for k in range(3))
    torch.testing.assert_close(interpolate(shared, faces, fi, bary), want_s)
    torch.testing.assert_close(interpolate(batched, faces, fi, bary), want_b)
    torch.testing.assert_close(interpolate(corners, faces, fi, bary), want_c)
    # Background is zero even for non-finite attributes of unused vertices.
    inf_attr = shared.clone()
    inf_attr[:] = float("inf")
    out = interpolate(inf_attr, faces, fi, bary)
    assert torch.all(out[~hit] == 0)


def test_interpolate_gradient_and_ambiguity():
    v, faces, focal, center = random_scene(1, 6, 8, seed=10, size=(10, 10))
    fi, bary, _ = rasterize(v, faces, focal, center, (10, 10))
    attr = torch.randn(1, 6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, fi, bary), (attr,))
    corner = torch.randn(8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, fi, bary), (corner,))
    # (1, 3, D) attributes with one face and a batch of one fit both readings: per vertex by default.
    tri = torch.tensor([[2, 1, 0]])
    vt = flat([(1.0, 1.0), (7.0, 1.0), (1.0, 7.0)])
    fi1, bary1, _ = rasterize(vt, tri, 1.0, (0.0, 0.0), (8, 8))
    a = torch.randn(1, 3, 2, dtype=torch.float64)
    by_vertex = interpolate(a, tri, fi1, bary1)
    torch.testing.assert_close(by_vertex, interpolate(a, tri, fi1, bary1, corners=False))
    torch.testing.assert_close(by_vertex, interpolate(a.flip(1), tri, fi1, bary1, corners=True))
    assert not torch.allclose(by_vertex, interpolate(a, tri, fi1, bary1, corners=True))
    with pytest.raises(ValueError, match="per-corner attributes must have shape"):
        interpolate(attr, faces, fi, bary, corners=True)
    with pytest.raises(ValueError, match="attributes must be"):
        interpolate(torch.randn(3, 6, 2), faces, fi, bary)
    with pytest.raises(ValueError, match="bary must be"):
        interpolate(attr, faces, fi, bary[..., :2])


# --------------------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    for seed, (B, V, F, size) in enumerate([(3, 40, 60, (24, 32)), (2, 300, 900, (64, 48))]):
        v, faces, focal, center = random_scene(B, V, F, dtype, seed=seed, size=size)
        cpu = rasterize(v, faces, focal, center, size)
        gpu = rasterize(v.cuda(), faces.cuda(), focal.cuda(), center.cuda(), size)
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=0, atol=0)
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gpu[2].cpu(), cpu[2], rtol=1e-6, atol=1e-6)
    # Faces larger than one thread's share (queued for whole blocks) and a body.
    model = smplfast.SMPL()
    body_faces = torch.as_tensor(model.faces.astype(np.int64))
    pose = smplfast.body.samplers.sample_poses(4, seed=1)
    with torch.no_grad():
        bv = model(global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices.to(dtype)
    bv = bv - bv.mean(1, keepdim=True)
    bv[..., 2] += 2.7
    for f in (300.0, 3000.0):  # small faces, then faces spanning many pixels
        cpu = rasterize(bv, body_faces, f, (128.0, 128.0), (256, 256))
        gpu = rasterize(bv.cuda(), body_faces.cuda(), f, (128.0, 128.0), (256, 256))
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=0, atol=0)
        torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gpu[2].cpu(), cpu[2], rtol=1e-6, atol=1e-6)


@needs_cuda
def test_cuda_exact_geometry_and_compile():
    corners = [(1.5, 2.5), (9.5, 2.5), (9.5, 10.5), (1.5, 10.5)]
    v = flat(corners, 2.0, device="cuda")
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]], device="cuda")
    fi, _, _ = rasterize(v, faces, 2.0, (0.0, 0.0), (12, 11))
    assert torch.equal((fi[0] >= 0).cpu(), half_open_box((12, 11), 1.5, 9.5, 2.5, 10.5))
    big = flat([(-5.0, -5.0), (2000.0, -5.0), (-5.0, 2000.0)], device="cuda")
    fi, _, _ = rasterize(big, torch.tensor([[0, 1, 2]], device="cuda"), 1.0, (0.0, 0.0), (1024, 1024))
    assert torch.equal(fi.cpu(), rasterize(big.cpu(), torch.tensor([[0, 1, 2]]), 1.0, (0.0, 0.0), (1024, 1024))[0])
    vs, fs, focal, center = random_scene(2, 30, 40, torch.float32, "cuda", seed=6, size=(16, 20))
    fn = torch.compile(lambda x: rasterize(x, fs, focal, center, (16, 20)), fullgraph=True, backend="aot_eager")
    for a, b in zip(fn(vs), rasterize(vs, fs, focal, center, (16, 20))):
        torch.testing.assert_close(a, b)
    torch.library.opcheck(torch.ops.smplfast.rasterize.default, (vs, fs, focal, center, 16, 20, 1e-3))
