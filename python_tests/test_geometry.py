"""smplfast.geometry: the one camera class, projections, rotation conversions, and the package's layering."""
import ast
import math
import pathlib

import numpy as np
import pytest
import torch

import smplfast
import smplfast.render
import smplfast.surface
from smplfast import geometry
from smplfast.body import samplers
from smplfast.geometry import (PerspectiveCamera, WeakPerspectiveCamera, perspective_projection, project_points)

D = torch.float64


def _rotation(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return geometry.axis_angle_to_matrix(torch.randn(B, 3, generator=g, dtype=D) * 0.3)


def _points(B, N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 3, generator=g, dtype=D) * 0.3


def _formula(points, f, c, R, t):
    """u = f_x X/Z + c_x, v = f_y Y/Z + c_y with X = R x + t, written out per coordinate."""
    X = torch.einsum("bij,bnj->bni", R, points) + t[:, None]
    return torch.stack([f[:, None, 0] * X[..., 0] / X[..., 2] + c[:, None, 0],
                        f[:, None, 1] * X[..., 1] / X[..., 2] + c[:, None, 1]], -1)


# ------------------------------------------------------------------------------------------ one class
def test_one_camera_class_on_every_import_path():
    from smplfast.render.camera import PerspectiveCamera as RenderModuleCamera
    from smplfast.surface.densepose import PerspectiveCamera as SurfaceModuleCamera

    assert smplfast.render.PerspectiveCamera is smplfast.surface.PerspectiveCamera is PerspectiveCamera
    assert RenderModuleCamera is SurfaceModuleCamera is PerspectiveCamera
    assert smplfast.surface.WeakPerspectiveCamera is WeakPerspectiveCamera
    assert smplfast.surface.project_points is project_points
    assert smplfast.fitting.perspective_projection is perspective_projection
    cam = smplfast.surface.PerspectiveCamera(1000.0, (256.0, 256.0))
    assert isinstance(cam, smplfast.render.PerspectiveCamera)


def test_both_keyword_styles_and_surface_positional_order_agree():
    B = 3
    R, t = _rotation(B), torch.tensor([[0.1, -0.2, 4.0]], dtype=D).expand(B, 3)
    f, c = torch.tensor([[900.0, 950.0], [1000.0, 1000.0], [800.0, 820.0]], dtype=D), torch.tensor([256.0, 240.0], dtype=D)
    cams = [PerspectiveCamera(focal=f, center=c, rotation=R, translation=t),           # canonical (render's names)
            PerspectiveCamera(focal_length=f, center=c, rotation=R, translation=t),    # SPIN's / surface's name
            PerspectiveCamera(f, c, R, t)]                                              # surface's positional order
    x = _points(B, 7)
    want = _formula(x, f, c.expand(B, 2), R, t)
    for cam in cams:
        assert cam.batch_size == B and cam.focal_length is cam.focal
        torch.testing.assert_close(cam.project(x), want, rtol=1e-13, atol=1e-10)
        torch.testing.assert_close(project_points(x, cam), want, rtol=1e-13, atol=1e-10)
        for a, b in zip(cam.resolved(B, x), (f, c.expand(B, 2), R, t)):
            assert torch.equal(a, b)
    # SPIN's functional form gives the same pixels
    torch.testing.assert_close(perspective_projection(x, R, t, f, c.expand(B, 2)), want, rtol=1e-13, atol=1e-10)


def test_focal_forms_and_broadcast():
    R3 = _rotation(3)
    # (2,) is (f_x, f_y) of one camera, also next to a batch of 3 cameras ...
    assert PerspectiveCamera(focal=(100.0, 120.0)).focal.tolist() == [[100.0, 120.0]]
    assert PerspectiveCamera(focal=(100.0, 120.0), center=(1.0, 2.0), rotation=R3).focal.tolist() == [[100.0, 120.0]] * 3
    # ... and one focal length per camera next to exactly two cameras; (B,) is always per camera
    assert PerspectiveCamera(focal=(100.0, 120.0), rotation=R3[:2]).focal.tolist() == [[100.0, 100.0], [120.0, 120.0]]
    assert PerspectiveCamera(focal=torch.tensor([1.0, 2.0, 3.0]), rotation=R3).focal[:, 1].tolist() == [1.0, 2.0, 3.0]
    # a (2,) center is always one principal point
    cam = PerspectiveCamera(1000.0, (320.0, 240.0), R3[:2])
    assert cam.center.tolist() == [[320.0, 240.0]] * 2
    # one camera broadcasts over the samples of a loss and the bodies of a render
    one = PerspectiveCamera(500.0, (10.0, 20.0), R3[0], torch.tensor([0.0, 0.0, 3.0], dtype=D))
    x = _points(4, 5)
    torch.testing.assert_close(project_points(x, one), one.expand(4).project(x))
    assert one.resolved(4, x)[2].shape == (4, 3, 3)


def test_surface_style_camera_in_the_renderer():
    verts = torch.tensor([[[-0.5, -0.5, 2.0], [0.5, -0.5, 2.0], [0.5, 0.5, 2.0], [-0.5, 0.5, 2.0]]], dtype=D)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    cam = smplfast.surface.PerspectiveCamera(16.0, torch.tensor([8.0, 8.0], dtype=D))  # focal_length, center
    sil = smplfast.render.BodyRenderer(faces).render(verts, cam, (16, 16), maps=("silhouette",))["silhouette"][0]
    assert sil[4:12, 4:12].all() and int(sil.sum()) == 64


def test_render_style_camera_in_surface_refine():
    from smplfast.body import load_default_model
    from smplfast.surface import (BodyParams, IUVPoints, RefineOptions, SurfaceCharts, UVGrid, densepose_loss, refine,
                                  sample_chart_points)

    m = load_default_model()
    grid = UVGrid.from_model(m, resolution=8, dtype=D)
    charts = SurfaceCharts.from_npz_dict(m.extras)
    B, N = 2, 60
    g = torch.Generator().manual_seed(0)
    part, uv, _, _ = sample_chart_points(charts, B * N, g)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=D))
    cam = smplfast.render.PerspectiveCamera(rotation=flip, translation=torch.tensor([0.0, 0.0, 5.0], dtype=D),
                                            focal=1000.0, center=(256.0, 256.0))
    params = BodyParams.from_pose(torch.zeros(B, 10, dtype=D), torch.zeros(B, 72, dtype=D))
    from smplfast.surface.densepose import _grid_points, posed_points

    pts = IUVPoints(part.view(B, N), uv.view(B, N, 2).to(D), torch.zeros(B, N, 2, dtype=D)).check()
    xy = project_points(posed_points(grid, params.check("test"), _grid_points(grid, pts)), cam)
    pts = IUVPoints(pts.part, pts.uv, xy + 2.0)
    assert float(densepose_loss(params, pts, cam, grid).min()) > 1.0
    res = refine(params, iuv_points=pts, camera=cam, grid=grid, options=RefineOptions(max_iters=3))
    assert res.camera is cam and bool((res.loss < 0.5).all())


def test_gradients_reach_the_camera_and_the_renderer_detaches():
    t = torch.tensor([0.1, 0.0, 4.0], dtype=D, requires_grad=True)
    cam = PerspectiveCamera(focal=800.0, center=(100.0, 100.0), translation=t)
    project_points(_points(2, 5), cam).sum().backward()
    assert t.grad is not None and bool((t.grad != 0).any())
    assert not cam.detach().translation.requires_grad
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]], dtype=D)
    out = smplfast.render.BodyRenderer(torch.tensor([[0, 1, 2]])).render(verts, cam, (8, 8), maps=("depth",))
    assert not out["depth"].requires_grad


def test_indexing_and_conversions():
    R = _rotation(3)
    cam = PerspectiveCamera(focal=torch.tensor([1.0, 2.0, 3.0]), center=torch.ones(3, 2), rotation=R)
    assert cam[1].batch_size == 1 and cam[1].focal.tolist() == [[2.0, 2.0]]
    assert cam[torch.tensor([0, 2])].focal[:, 0].tolist() == [1.0, 3.0]
    assert cam[-1].focal.tolist() == [[3.0, 3.0]]
    assert cam.to(dtype=torch.float32).dtype == torch.float32
    assert "PerspectiveCamera(batch_size=3" in repr(cam)


def test_data_cameras_bridge():
    from smplfast.data.cameras import Cameras, rig_cameras

    rng = np.random.default_rng(0)
    rig = rig_cameras(rng, np.zeros((2, 3)) + [0.0, 1.0, 0.0], np.full(2, 1.7), 64, 3)
    cam = rig.to_perspective()
    assert cam.batch_size == 6 and cam.dtype == D
    X = rng.normal(size=(2, 3, 5, 3)) * 0.3 + [0.0, 1.0, 0.0]
    want = rig.project(rig.to_camera(X)).reshape(6, 5, 2)
    got = cam.project(torch.from_numpy(X.reshape(6, 5, 3)))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-9)
    back = Cameras.from_perspective(cam).reshape(2, 3)
    for k in ("rotation", "translation", "focal", "center"):
        np.testing.assert_array_equal(getattr(back, k), getattr(rig, k))
    assert rig[1].to_perspective(dtype=torch.float32).batch_size == 3


# ------------------------------------------------------------------------------------------ bad input
def test_bad_camera_input():
    with pytest.raises(ValueError, match="focal is required"):
        PerspectiveCamera(center=(1.0, 2.0))
    with pytest.raises(ValueError, match="not both"):
        PerspectiveCamera(focal=1.0, focal_length=1.0)
    with pytest.raises(ValueError, match="focal must be .*rotation matrix"):
        PerspectiveCamera(torch.eye(3), torch.zeros(3), 100.0)  # render's old positional order
    with pytest.raises(ValueError, match=r"rotation must be \(B, 3, 3\)"):
        PerspectiveCamera(focal=1.0, rotation=torch.eye(4))
    with pytest.raises(ValueError, match=r"translation must be \(B, 3\)"):
        PerspectiveCamera(focal=1.0, translation=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"center must be \(B, 2\)"):
        PerspectiveCamera(focal=1.0, center=torch.zeros(3))
    with pytest.raises(ValueError, match="focal must be finite"):
        PerspectiveCamera(focal=float("nan"))
    with pytest.raises(ValueError, match="rotation must be finite"):
        PerspectiveCamera(focal=1.0, rotation=torch.full((3, 3), float("inf")))
    with pytest.raises(ValueError, match="focal lengths must be > 0"):
        PerspectiveCamera(focal=(1.0, 0.0))
    with pytest.raises(ValueError, match="batch sizes disagree"):
        PerspectiveCamera(focal=torch.ones(3), rotation=_rotation(4))
    with pytest.raises(TypeError, match="must be numeric"):
        PerspectiveCamera(focal=torch.tensor([True]))
    x = _points(3, 4)
    with pytest.raises(ValueError, match="has no center"):
        project_points(x, PerspectiveCamera(focal=1.0))
    with pytest.raises(ValueError, match="holds 2 cameras but there are 3 samples"):
        project_points(x, PerspectiveCamera(focal=torch.ones(2, 2), center=(0.0, 0.0)))
    with pytest.raises(ValueError, match=r"camera params must be \(3, 3\)"):
        project_points(x, WeakPerspectiveCamera(torch.ones(2, 3, dtype=D)))
    with pytest.raises(TypeError, match="camera must be a PerspectiveCamera or a WeakPerspectiveCamera"):
        project_points(x, object())


# ------------------------------------------------------------------------------------------ rotations
def test_rotation_conversions_round_trip_and_re_exports():
    for name in ("axis_angle_to_matrix", "matrix_to_axis_angle", "euler_to_axis_angle", "axis_angle_to_euler",
                 "swing_twist_to_axis_angle", "axis_angle_to_swing_twist"):
        assert getattr(samplers, name) is getattr(geometry, name)
    g = torch.Generator().manual_seed(2)
    axis = torch.nn.functional.normalize(torch.randn(40, 3, generator=g, dtype=D), dim=-1)
    angle = torch.cat([torch.tensor([0.0, 1e-9, 1e-4, math.pi - 1e-6], dtype=D), torch.rand(36, generator=g, dtype=D) * 3.1])
    aa = axis * angle[:, None]
    R = samplers.axis_angle_to_matrix(aa)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=D).expand(40, 3, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(geometry.matrix_to_axis_angle(R), aa, atol=1e-9, rtol=0)
    torch.testing.assert_close(samplers.axis_angle_to_matrix(samplers.matrix_to_axis_angle(R)), R, atol=1e-12, rtol=0)
    for order in ("XYZ", "ZYX", "YXZ"):
        e = geometry.axis_angle_to_euler(aa, order)
        torch.testing.assert_close(geometry.axis_angle_to_matrix(samplers.euler_to_axis_angle(e, order)), R,
                                   atol=1e-10, rtol=0)
    st = geometry.axis_angle_to_swing_twist(aa, 1)
    torch.testing.assert_close(geometry.axis_angle_to_matrix(samplers.swing_twist_to_axis_angle(st, 1)), R,
                               atol=1e-10, rtol=0)
    # leading dims and float32
    R32 = geometry.axis_angle_to_matrix(aa.float().view(4, 10, 3))
    assert R32.shape == (4, 10, 3, 3) and R32.dtype == torch.float32


def test_rotation_bad_shapes():
    with pytest.raises(ValueError, match=r"axis_angle_to_matrix: expected shape \(\.\.\., 3\)"):
        geometry.axis_angle_to_matrix(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"matrix_to_axis_angle: expected shape \(\.\.\., 3, 3\)"):
        geometry.matrix_to_axis_angle(torch.zeros(4, 9))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        geometry.axis_angle_to_matrix([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="Euler order"):
        geometry.euler_to_axis_angle(torch.zeros(3), "XXY")


# ------------------------------------------------------------------------------------------ layering
# Each subpackage may import only from lower ranks (docs/ARCHITECTURE.md, "Package layers"); peers of
# one rank do not import each other.  Function-local imports count too.
RANKS = {"_C": -1, "geometry": 0, "_backend": 0, "_io": 0, "ops": 1, "body": 2, "fitting": 3, "metrics": 3,
         "surface": 4, "render": 4, "data": 5, "demo": 6, "__init__": 7, "cli": 8, "__main__": 9}


def _smplfast_imports(path: pathlib.Path, package):
    """(module name directly under smplfast, line) of every import of smplfast in a source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module.split(".") if node.module else []
            if node.level:
                mod = package[:len(package) - node.level + 1] + mod
            if mod[:1] != ["smplfast"]:
                continue
            names = [mod[1]] if len(mod) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("smplfast.")]
        else:
            continue
        for name in names:
            yield (name if name in RANKS else "__init__"), node.lineno


def test_lower_layers_never_import_higher_ones():
    root = pathlib.Path(smplfast.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        me = parts[0]
        package = ["smplfast", *parts[:-1]]
        assert me in RANKS, f"{path}: new top-level module, give it a rank in RANKS and docs/ARCHITECTURE.md"
        for name, line in _smplfast_imports(path, package):
            if name != me and RANKS[name] >= RANKS[me]:
                bad.append(f"{path.relative_to(root)}:{line} imports smplfast.{name}")
    assert not bad, "layering violations:\n" + "\n".join(bad)
