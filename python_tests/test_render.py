"""smplfast.render: cameras, per-pixel body maps (silhouette, parts, parts6, IUV, depth, normals, rgb),
face tables from surface charts, and mesh overlays.

Images stay small and the body is rendered once per module (48 x 48 pixels)."""
import math

import numpy as np
import pytest
import torch

import smplfast
from smplfast.render import (
    DENSEPOSE_TO_LSP6,
    LSP6_PART_NAMES,
    MAP_NAMES,
    BodyRenderer,
    PerspectiveCamera,
    default_part_colors,
    face_tables_from_charts,
    iuv_to_uint8,
    overlay,
    vertex_normals,
)
from smplfast.surface import DENSEPOSE_PART_NAMES, SurfaceCharts


# ------------------------------------------------------------------------------------------ fixtures
def plane(z=2.0, half=0.5, n=2, flip=False, dtype=torch.float64):
    """A square grid of (n x n) quads (2 triangles each) at depth z, centred on the optical axis."""
    s = torch.linspace(-half, half, n + 1, dtype=dtype)
    yy, xx = torch.meshgrid(s, s, indexing="ij")
    verts = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.full(((n + 1) ** 2,), z, dtype=dtype)], -1)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1
            faces += [[a, b, d], [a, d, c]]
    faces = torch.tensor(faces, dtype=torch.int64)
    if flip:
        faces = faces[:, [0, 2, 1]]
    return verts[None], faces


@pytest.fixture(scope="module")
def body():
    """The default model in T-pose seen from the front and from the back (48 x 48 pixels)."""
    model = smplfast.SMPL()
    with torch.no_grad():
        v = model().vertices
    renderer = BodyRenderer.from_model(model)
    cam = PerspectiveCamera.look_at(eye=torch.tensor([[0.0, 0.0, 3.2], [0.0, 0.0, -3.2]]),
                                    target=torch.zeros(2, 3), focal=80.0, center=(24.0, 24.0))
    verts = v.expand(2, -1, -1).contiguous()
    maps = renderer.render(verts, cam, (48, 48))
    return renderer, verts, cam, maps


# ------------------------------------------------------------------------------------------ camera
def test_camera_projection_and_broadcast():
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64)
    cam = PerspectiveCamera(rotation=R, translation=t, focal=(100.0, 120.0), center=(20.0, 30.0))
    assert cam.batch_size == 1 and cam.focal.shape == (1, 2)
    X = torch.randn(2, 5, 3, dtype=torch.float64)
    Xc = X @ R.T + t
    uv = cam.expand(2).project(X)
    assert torch.allclose(uv[..., 0], 100.0 * Xc[..., 0] / Xc[..., 2] + 20.0)
    assert torch.allclose(uv[..., 1], 120.0 * Xc[..., 1] / Xc[..., 2] + 30.0)
    # (B,) focal is one focal length per camera
    cam2 = PerspectiveCamera(rotation=R.expand(3, 3, 3), focal=torch.tensor([1.0, 2.0, 3.0]))
    assert cam2.focal.tolist() == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert cam2.centers((10, 40)).tolist() == [[20.0, 5.0]] * 3


def test_look_at_sees_the_target_at_the_principal_point():
    cam = PerspectiveCamera.look_at(eye=[1.0, 2.0, 3.0], target=[0.0, 0.5, 0.0], focal=50.0, center=(8.0, 6.0))
    R = cam.rotation[0]
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=R.dtype), atol=1e-12)
    assert torch.allclose(cam.project(torch.tensor([[[0.0, 0.5, 0.0]]], dtype=torch.float64))[0, 0],
                          torch.tensor([8.0, 6.0], dtype=torch.float64))
    # world up is image up (smaller row)
    above = cam.project(torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64))[0, 0]
    assert above[1] < 6.0


def test_camera_bad_inputs():
    with pytest.raises(ValueError, match="focal is required"):
        PerspectiveCamera(rotation=torch.eye(3))
    with pytest.raises(ValueError, match=r"rotation must be \(B, 3, 3\)"):
        PerspectiveCamera(rotation=torch.eye(4), focal=1.0)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        PerspectiveCamera(rotation=torch.eye(3).expand(2, 3, 3), translation=torch.zeros(3, 3), focal=1.0)
    with pytest.raises(ValueError, match="focal lengths must be > 0"):
        PerspectiveCamera(focal=-1.0)
    with pytest.raises(ValueError, match="does not match the 3 bodies"):
        PerspectiveCamera(translation=torch.zeros(2, 3), focal=1.0).expand(3)


# ------------------------------------------------------------------------------------------ geometry maps
@pytest.mark.parametrize("flip", [False, True])
def test_plane_depth_and_normals(flip):
    verts, faces = plane(z=2.0, flip=flip)
    r = BodyRenderer(faces)
    cam = PerspectiveCamera(focal=16.0, center=(8.0, 8.0))
    out = r.render(verts, cam, (16, 16), maps=("silhouette", "depth", "normals", "rgb"))
    sil = out["silhouette"][0]
    # the plane spans [-0.5, 0.5] m at 2 m: [-4, 4] px around the centre
    assert sil[4:12, 4:12].all() and int(sil.sum()) == 64
    assert torch.equal(sil, out["face_index"][0] >= 0)
    assert torch.allclose(out["depth"][0][sil], torch.tensor(2.0, dtype=torch.float64), atol=1e-12)
    assert (out["depth"][0][~sil] == 0).all()
    n = out["normals"][0]
    assert torch.allclose(n[sil], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), atol=1e-12)
    assert (n[~sil] == 0).all()
    rgb = out["rgb"][0]
    assert (rgb[~sil] == 0).all() and float(rgb.min()) >= 0 and float(rgb.max()) <= 1


def test_tilted_plane_with_rotated_camera():
    """Depth is camera Z of the surface point; normals are the rotated world normal."""
    verts, faces = plane(z=0.0, half=1.0)
    ang = 0.4
    # camera 3 m from the plane, looking at it from an angle about the y axis
    eye = torch.tensor([3.0 * math.sin(ang), 0.0, -3.0 * math.cos(ang)], dtype=torch.float64)
    cam = PerspectiveCamera.look_at(eye=eye, target=[0.0, 0.0, 0.0], focal=20.0, center=(12.0, 12.0))
    out = BodyRenderer(faces).render(verts, cam, (24, 24), maps=("depth", "normals"))
    sil = out["face_index"][0] >= 0
    R, t = cam.rotation[0], cam.translation[0]
    # plane z = 0 in world: camera-frame plane through t with normal R e_z
    nz = R[:, 2]
    assert torch.allclose(out["normals"][0][sil], -nz if nz[2] > 0 else nz, atol=1e-10)
    # every pixel's depth puts its ray's point on the plane: n . (d * ray - t) = 0
    rows, cols = (i.double() for i in torch.nonzero(sil, as_tuple=True))
    ray = torch.stack([(cols + 0.5 - 12.0) / 20.0, (rows + 0.5 - 12.0) / 20.0, torch.ones_like(cols)], -1)
    X = out["depth"][0][sil][:, None] * ray
    assert torch.allclose((X - t) @ nz, torch.zeros(X.shape[0], dtype=torch.float64), atol=1e-9)


def test_vertex_normals_area_weighted():
    # two faces meeting at vertex 0: a big one in the z=0 plane (normal +z) and a small one in x=0 (normal +x)
    v = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [0, 1, 0]]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 4, 3]])
    n = vertex_normals(v, f)[0, 0]
    expected = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64)  # cross products: (0,0,4) and (1,0,0), halved
    assert torch.allclose(n, expected / expected.norm())
    assert torch.equal(vertex_normals(torch.zeros(1, 3, 3, dtype=torch.float64), torch.tensor([[0, 1, 2]])),
                       torch.zeros(1, 3, 3, dtype=torch.float64))


# ------------------------------------------------------------------------------------------ body maps
def test_body_maps_shapes_and_silhouette(body):
    renderer, verts, cam, maps = body
    assert set(maps) == {"face_index", *MAP_NAMES}
    B, H, W = 2, 48, 48
    assert maps["face_index"].shape == (B, H, W) and maps["face_index"].dtype == torch.int64
    assert maps["silhouette"].dtype == torch.bool and maps["parts"].dtype == torch.int64
    assert maps["iuv"].shape == (B, H, W, 3) and maps["normals"].shape == (B, H, W, 3)
    sil = maps["silhouette"]
    assert torch.equal(sil, maps["face_index"] >= 0)
    assert 0.05 < sil.float().mean() < 0.6
    # the back view is the front view mirrored (T-pose, camera on the axis): similar areas
    a, b = sil[0].sum().item(), sil[1].sum().item()
    assert abs(a - b) < 0.1 * a


def test_parts_and_iuv_follow_the_face_tables(body):
    renderer, _, _, maps = body
    sil, fi = maps["silhouette"], maps["face_index"]
    parts, iuv = maps["parts"], maps["iuv"]
    f = fi[sil]
    assert torch.equal(parts[sil], renderer.face_parts[f])
    assert (parts[~sil] == 0).all() and (iuv[~sil] == 0).all()
    assert torch.equal(iuv[..., 0], parts.to(iuv.dtype))
    corner_uv = renderer.face_uv[f].to(iuv.dtype)  # (N,3,2)
    uv = iuv[sil][:, 1:]
    tol = 1e-5
    assert ((uv >= corner_uv.min(1).values - tol) & (uv <= corner_uv.max(1).values + tol)).all()
    assert ((uv >= 0) & (uv <= 1)).all()
    # uv varies inside parts (not stuck at a corner)
    assert uv.std(0).min() > 0.05


def test_all_24_parts_visible_front_and_back(body):
    _, _, _, maps = body
    seen = set(torch.unique(maps["parts"]).tolist()) - {0}
    assert seen == set(range(1, 25))
    # the torso front (2) faces the front camera, the torso back (1) the back camera
    front, back = maps["parts"][0], maps["parts"][1]
    assert (front == 2).sum() > 5 * (front == 1).sum()
    assert (back == 1).sum() > 5 * (back == 2).sum()


def test_right_side_parts_on_image_left_from_the_front(body):
    _, _, _, maps = body
    cols = torch.arange(48)
    p = maps["parts"][0]
    right_hand = cols.expand_as(p)[p == 3].float().mean()
    left_hand = cols.expand_as(p)[p == 4].float().mean()
    assert right_hand < 24 < left_hand


def test_parts6_covers_the_foreground(body):
    _, _, _, maps = body
    p6, sil, parts = maps["parts6"], maps["silhouette"], maps["parts"]
    assert torch.equal(p6 > 0, sil)
    assert torch.equal(p6, torch.as_tensor(DENSEPOSE_TO_LSP6)[parts])
    assert set(torch.unique(p6).tolist()) == set(range(7))
    assert len(LSP6_PART_NAMES) == 6


def test_lsp6_table_follows_part_names():
    for p, name in enumerate(DENSEPOSE_PART_NAMES, start=1):
        six = LSP6_PART_NAMES[DENSEPOSE_TO_LSP6[p] - 1]
        lname = name.lower()
        if "head" in lname or "torso" in lname:
            assert six == ("head" if "head" in lname else "torso")
        else:
            side = "right" if "right" in lname else "left"
            assert six == f"{side} {'arm' if ('arm' in lname or 'hand' in lname) else 'leg'}"


def test_rgb_range_and_background(body):
    _, _, _, maps = body
    rgb, sil = maps["rgb"], maps["silhouette"]
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    assert (rgb[~sil] == 0).all()
    assert (rgb[sil].sum(-1) > 0).all()  # ambient light keeps every foreground pixel lit
    n = maps["normals"][sil]
    assert torch.allclose(n.norm(dim=-1), torch.ones(n.shape[0]), atol=1e-5)
    # normals face the camera: against the ray through each pixel centre (focal 80, centre (24, 24))
    rows, cols = torch.nonzero(sil, as_tuple=True)[1:]
    ray = torch.stack([(cols + 0.5 - 24.0) / 80.0, (rows + 0.5 - 24.0) / 80.0, torch.ones(cols.shape)], -1)
    assert ((n * ray).sum(-1) <= 0).all()


def test_rgb_part_colors_and_lighting():
    verts, faces = plane(z=2.0)
    uv = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]] * 4,
                      dtype=torch.float64)
    r = BodyRenderer(faces, face_parts=torch.full((8,), 5), face_uv=uv)
    cam = PerspectiveCamera(focal=16.0, center=(8.0, 8.0))
    colors = np.zeros((25, 3))
    colors[5] = (0.2, 0.4, 0.8)
    head_on = r.render(verts, cam, (16, 16), maps=("rgb",), part_colors=colors, light_dir=(0.0, 0.0, -1.0))
    sil = head_on["face_index"][0] >= 0
    assert torch.allclose(head_on["rgb"][0][sil], torch.tensor([0.2, 0.4, 0.8], dtype=torch.float64))
    # light at 60 degrees: ambient + (1 - ambient) cos 60
    slanted = r.render(verts, cam, (16, 16), maps=("rgb",), part_colors=torch.tensor(colors)[None],
                       light_dir=torch.tensor([math.sin(math.pi / 3), 0.0, -math.cos(math.pi / 3)]), ambient=0.2)
    assert torch.allclose(slanted["rgb"][0][sil], torch.tensor([0.2, 0.4, 0.8], dtype=torch.float64) * 0.6)
    # light from behind: ambient only
    back = r.render(verts, cam, (16, 16), maps=("rgb",), part_colors=colors, light_dir=(0.0, 0.0, 1.0))
    assert torch.allclose(back["rgb"][0][sil], torch.tensor([0.2, 0.4, 0.8], dtype=torch.float64) * 0.35)
    again = r.render(verts, cam, (16, 16), maps=("rgb",), part_colors=colors, light_dir=(0.0, 0.0, 1.0))
    assert torch.equal(back["rgb"], again["rgb"])


def test_texture_is_sampled_bilinearly_at_uv():
    verts, faces = plane(z=2.0)
    # u runs with x and v with y across the square
    uv = ((verts[0, :, :2] + 0.5)[faces]).clamp(0, 1)
    r = BodyRenderer(faces, face_parts=torch.full((8,), 7), face_uv=uv)
    T = 5
    tex = torch.zeros(24, T, T, 3, dtype=torch.float64)
    grid = torch.linspace(0, 1, T, dtype=torch.float64)
    tex[6, :, :, 0] = grid[None, :]  # red = u
    tex[6, :, :, 1] = grid[:, None] ** 2  # green = v^2 at the texels, bilinear in between
    cam = PerspectiveCamera(focal=16.0, center=(8.0, 8.0))
    out = r.render(verts, cam, (16, 16), maps=("iuv", "rgb"), texture=tex, ambient=1.0)
    sil = out["face_index"][0] >= 0
    U, V = out["iuv"][0][sil][:, 1], out["iuv"][0][sil][:, 2]
    rgb = out["rgb"][0][sil]
    assert torch.allclose(rgb[:, 0], U, atol=1e-12)
    # bilinear interpolation of v^2 between the two nearest texel rows
    y = V * (T - 1)
    y0 = y.floor().clamp(max=T - 2)
    w = y - y0
    expected = (1 - w) * (y0 / (T - 1)) ** 2 + w * ((y0 + 1) / (T - 1)) ** 2
    assert torch.allclose(rgb[:, 1], expected, atol=1e-12)
    assert (rgb[:, 2] == 0).all()


# ------------------------------------------------------------------------------------------ face tables
def test_face_tables_from_charts_match_by_vertex_triples():
    mesh_faces = np.array([[0, 1, 2], [2, 1, 3], [3, 4, 2], [4, 5, 3]])
    # chart vertices: part 3 for faces 0,1 (vertices 0..3), part 9 for face 3 (vertices 3..5); face 2 uncovered
    vid = np.array([0, 1, 2, 3, 3, 4, 5])
    pid = np.array([3, 3, 3, 3, 9, 9, 9])
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    # chart faces listed out of order, with rotated / mirrored corner orders
    cfaces = np.array([[6, 4, 5], [1, 2, 0], [3, 2, 1]])
    charts = SurfaceCharts(vertex_ids=vid, part_ids=pid, uv=uvs, faces=cfaces, face_part_ids=np.array([9, 3, 3]))
    parts, face_uv = face_tables_from_charts(mesh_faces, charts, num_vertices=6)
    assert parts.tolist() == [3, 3, 0, 9]
    for k, face in enumerate(mesh_faces):
        if parts[k] == 0:
            assert (face_uv[k] == 0).all()
            continue
        for corner, mv in enumerate(face):
            j = np.flatnonzero((vid == mv) & (pid == parts[k]))[0]
            assert np.array_equal(face_uv[k, corner], uvs[j])
    r = BodyRenderer(mesh_faces, parts, face_uv)
    assert r.face_parts6.tolist() == [DENSEPOSE_TO_LSP6[3], DENSEPOSE_TO_LSP6[3], 0, DENSEPOSE_TO_LSP6[9]]


def test_face_tables_reject_charts_of_another_mesh():
    charts = SurfaceCharts(vertex_ids=np.array([0, 1, 5]), part_ids=np.array([1, 1, 1]),
                           uv=np.zeros((3, 2)), faces=np.array([[0, 1, 2]]), face_part_ids=np.array([1]))
    with pytest.raises(ValueError, match="charts do not fit this mesh"):
        face_tables_from_charts(np.array([[0, 1, 2], [1, 2, 5]]), charts, num_vertices=6)
    with pytest.raises(ValueError, match="vertex_ids must be < 4"):
        face_tables_from_charts(np.array([[0, 1, 2], [1, 2, 3]]), charts, num_vertices=4)


def test_default_model_face_tables_cover_every_face():
    r = BodyRenderer.from_model()
    assert (r.face_parts >= 1).all() and set(r.face_parts.unique().tolist()) == set(range(1, 25))
    assert ((r.face_uv >= 0) & (r.face_uv <= 1)).all()
    with pytest.raises(ValueError, match="stores no surface charts"):
        from smplfast.body.default_model import load_default_model

        data = load_default_model()
        data.extras = {}
        BodyRenderer.from_model(data)


# ------------------------------------------------------------------------------------------ iuv_to_uint8
def test_iuv_to_uint8():
    iuv = torch.tensor([[[0.0, 0.0, 0.0], [24.0, 1.0, 0.5], [3.0, 0.2, 0.999]]])
    out = iuv_to_uint8(iuv)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0].tolist() == [[0, 0, 0], [24, 255, 128], [3, 51, 255]]
    with pytest.raises(ValueError, match=r"must be \(\.\.\., 3\)"):
        iuv_to_uint8(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="integers in 0..24"):
        iuv_to_uint8(np.array([25.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"U and V must be in \[0, 1\]"):
        iuv_to_uint8(np.array([1.0, 1.5, 0.0]))


# ------------------------------------------------------------------------------------------ overlay
def test_overlay_changes_only_the_silhouette(tmp_path):
    from PIL import Image

    verts, faces = plane(z=2.0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    cam = PerspectiveCamera(focal=16.0)  # centre: the image centre (10, 8)
    path = tmp_path / "over.png"
    out = overlay(img, verts[0], faces, cam, path=path, color=(1.0, 0.0, 0.0), alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    sil = BodyRenderer(faces).render(verts, cam, (16, 20), maps=("silhouette",))["silhouette"][0].numpy()
    assert sil.sum() == 64
    assert np.array_equal(out[~sil], img[~sil])
    assert (out[sil] != img[sil]).any(axis=-1).mean() > 0.9
    # 50% towards full red (light head-on from slightly off-axis: shading below 1)
    assert (out[sil][:, 0].astype(int) >= img[sil][:, 0].astype(int) // 2).all()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (20, 16)
        assert np.array_equal(np.array(im), out)
    # PIL images and paths give the same result; the input array is untouched
    assert np.array_equal(overlay(Image.fromarray(img), verts[0], faces, cam, color=(1, 0, 0), alpha=0.5), out)
    Image.fromarray(img).save(tmp_path / "in.png")
    assert np.array_equal(overlay(tmp_path / "in.png", verts, faces, cam, color=(1, 0, 0), alpha=0.5), out)
    assert not np.array_equal(out, img)
    # alpha 0 leaves the image as it is
    assert np.array_equal(overlay(img, verts[0], faces, cam, alpha=0.0), img)


def test_overlay_bad_inputs(tmp_path):
    verts, faces = plane(z=2.0)
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    cam = PerspectiveCamera(focal=16.0)
    with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8 array; got \(16, 16\) uint8"):
        overlay(img[..., 0], verts[0], faces, cam)
    with pytest.raises(ValueError, match="float32"):
        overlay(img.astype(np.float32), verts[0], faces, cam)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        overlay(tmp_path / "missing.png", verts[0], faces, cam)
    with pytest.raises(ValueError, match="camera must hold one camera; got 2"):
        overlay(img, verts[0], faces, PerspectiveCamera(focal=torch.tensor([16.0, 16.0]),
                                                          translation=torch.zeros(2, 3)))
    with pytest.raises(TypeError, match="camera must be a PerspectiveCamera"):
        overlay(img, verts[0], faces, {"focal": 16.0})
    with pytest.raises(ValueError, match=r"vertices must be \(V, 3\)"):
        overlay(img, verts[0, :, :2], faces, cam)
    with pytest.raises(ValueError, match="color must be three floats"):
        overlay(img, verts[0], faces, cam, color=(1.0, 2.0, 0.0))
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(img, verts[0], faces, cam, alpha=1.5)
    with pytest.raises(ValueError, match="faces index vertex 8 but num_vertices is 4"):
        overlay(img, verts[0, :4], faces, cam)


# ------------------------------------------------------------------------------------------ render errors
def test_render_bad_inputs():
    verts, faces = plane(z=2.0)
    r = BodyRenderer(faces)
    cam = PerspectiveCamera(focal=16.0)
    with pytest.raises(ValueError, match=r"vertices must be \(B, V, 3\); got \(9, 3\)"):
        r.render(verts[0], cam, (8, 8))
    with pytest.raises(ValueError, match="must have 9 vertices per mesh"):
        r.render(verts[:, :5], cam, (8, 8))
    with pytest.raises(ValueError, match="does not match the 2 bodies"):
        r.render(verts.expand(2, -1, -1), PerspectiveCamera(focal=torch.ones(3)), (8, 8))
    with pytest.raises(ValueError, match=r"unknown maps \['albedo'\]"):
        r.render(verts, cam, (8, 8), maps=("silhouette", "albedo"))
    with pytest.raises(ValueError, match="image_size must be"):
        r.render(verts, cam, (8, 0))
    with pytest.raises(TypeError, match="camera must be a PerspectiveCamera"):
        r.render(verts, None, (8, 8))
    with pytest.raises(ValueError, match=r"part_colors must be \(25, 3\)"):
        r.render(verts, cam, (8, 8), maps=("rgb",), part_colors=np.zeros((24, 3)))
    with pytest.raises(ValueError, match="part_colors must be in"):
        r.render(verts, cam, (8, 8), maps=("rgb",), part_colors=np.full((25, 3), 2.0))
    with pytest.raises(ValueError, match=r"texture must be \(1, 24, T, T, 3\)"):
        r.render(verts, cam, (8, 8), maps=("rgb",), texture=np.zeros((24, 4, 4)))
    with pytest.raises(ValueError, match="light_dir must be finite and non-zero"):
        r.render(verts, cam, (8, 8), maps=("rgb",), light_dir=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="ambient must be in"):
        r.render(verts, cam, (8, 8), maps=("rgb",), ambient=-0.1)
    with pytest.raises(ValueError, match="vertices must be finite"):
        r.render(torch.full_like(verts, float("nan")), cam, (8, 8))
    with pytest.raises(ValueError, match=r"face_parts must be in 0..24"):
        BodyRenderer(faces, face_parts=torch.full((8,), 25))
    with pytest.raises(ValueError, match=r"face_uv must be \(8, 3, 2\)"):
        BodyRenderer(faces, face_uv=np.zeros((8, 2)))


def test_float32_and_default_colors():
    verts, faces = plane(z=2.0, dtype=torch.float32)
    out = BodyRenderer(faces).render(verts, PerspectiveCamera(focal=16.0), (16, 16))
    for k in ("depth", "iuv", "normals", "rgb"):
        assert out[k].dtype == torch.float32
    pc = default_part_colors()
    assert pc.shape == (25, 3) and pc.min() >= 0 and pc.max() <= 1
    assert len({tuple(np.round(c, 3)) for c in pc}) == 25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(body):
    renderer, verts, cam, maps = body
    out = renderer.render(verts.cuda(), cam.to("cuda"), (48, 48))
    for k, v in maps.items():
        assert out[k].device.type == "cuda"
        if v.is_floating_point():
            assert torch.allclose(out[k].cpu(), v, atol=1e-5), k
        else:
            assert torch.equal(out[k].cpu(), v), k
