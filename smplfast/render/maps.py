"""Per-pixel maps of posed bodies: silhouette, DensePose parts, 6-part LSP segmentation, IUV, depth,
normals and a shaded colour image, all from one rasterization.

:class:`BodyRenderer` holds a mesh's faces and, per face, its DensePose part (1..24), the (u, v) of
its three corners in that part's chart, and its part in the 6-part segmentation of the LSP
evaluation.  :meth:`BodyRenderer.render` rasterizes a batch of posed meshes seen by a
:class:`~smplfast.render.PerspectiveCamera` and derives every requested map from the face index and
perspective-correct barycentrics of each pixel.
"""
from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from ..ops.rasterize import interpolate
from ..ops.uv_lookup import uv_lookup
from ..ops.rasterize import rasterize as _rasterize  # the compiled op (CPU/CUDA); rasterize_reference is its specification
from ..body.charts import NUM_PARTS, SurfaceCharts, load_densepose_uv
from .camera import PerspectiveCamera

__all__ = [
    "BodyRenderer",
    "MAP_NAMES",
    "LSP6_PART_NAMES",
    "DENSEPOSE_TO_LSP6",
    "default_part_colors",
    "face_tables_from_charts",
    "iuv_to_uint8",
    "vertex_normals",
]

#: Every map :meth:`BodyRenderer.render` can produce ("face_index" is always returned).
MAP_NAMES: Tuple[str, ...] = ("silhouette", "parts", "parts6", "iuv", "depth", "normals", "rgb")

#: The six body parts of the LSP part-segmentation evaluation (UP-3D, Lassner et al. 2017; used by
#: SMPLify's and SPIN's evaluations through UP-3D's rendered ground truth): label ``k`` (1-based, 0 is
#: background) is ``LSP6_PART_NAMES[k - 1]``.  Order and grouping follow ``six_region_groups`` in
#: UP-3D's ``up_tools/model.py`` (github.com/classner/up): head; torso with neck and shoulders;
#: right arm with hand; left arm with hand; right leg with foot; left leg with foot.  Its evaluation
#: script merges 4 into 3 and 6 into 5 for the left/right-agnostic score, which fixes the pairs.
#: "Right"/"left" are the person's own sides, as in DensePose.
LSP6_PART_NAMES: Tuple[str, ...] = ("head", "torso", "right arm", "left arm", "right leg", "left leg")

#: Map from DensePose's part ids (index 0..24, 0 = no part) to the six LSP parts (0 = background).
#: DensePose's upper arms start at the shoulder, so the shoulder caps fall in the arms here, where
#: UP-3D's region colouring puts them in the torso; all else follows the part names.
DENSEPOSE_TO_LSP6: np.ndarray = np.array([
    0,
    2, 2,          # 1 torso back, 2 torso front
    3, 4,          # 3 right hand, 4 left hand
    6, 5,          # 5 left foot, 6 right foot
    5, 6, 5, 6,    # 7-10 upper legs (right back, left back, right front, left front)
    5, 6, 5, 6,    # 11-14 lower legs (same order)
    4, 3, 4, 3,    # 15-18 upper arms (left inside, right inside, left outside, right outside)
    4, 3, 4, 3,    # 19-22 lower arms (same order)
    1, 1,          # 23 head right, 24 head left
], dtype=np.int64)


def default_part_colors() -> np.ndarray:
    """(25, 3) float64 colours in [0, 1]: row ``p`` colours DensePose part ``p``; row 0 (grey) colours
    the faces that have no part.  Hues step by the golden angle so neighbouring ids differ."""
    out = np.empty((NUM_PARTS + 1, 3))
    out[0] = (0.62, 0.62, 0.62)
    for p in range(1, NUM_PARTS + 1):
        h = ((p - 1) * 0.61803398875) % 1.0
        out[p] = colorsys.hsv_to_rgb(h, 0.55 + 0.25 * (p % 2), 0.95 - 0.15 * ((p // 2) % 2))
    return out


def iuv_to_uint8(iuv) -> np.ndarray:
    """An IUV map (..., 3) (I in 0..24, U, V in [0, 1]) as a uint8 image in DensePose's convention:
    channel 0 = I, channels 1, 2 = round(U * 255), round(V * 255).  Accepts tensors or arrays."""
    a = iuv.detach().cpu().numpy() if isinstance(iuv, torch.Tensor) else np.asarray(iuv)
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"iuv_to_uint8: iuv must be (..., 3); got {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"iuv_to_uint8: iuv must be numeric; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError("iuv_to_uint8: iuv must be finite")
    I, UV = a[..., 0], a[..., 1:]
    if a.size and (I.min() < 0 or I.max() > NUM_PARTS or np.any(I != np.round(I))):
        raise ValueError(f"iuv_to_uint8: channel 0 (I) must hold integers in 0..{NUM_PARTS}; got {I.min()}..{I.max()}")
    if a.size and (UV.min() < -1e-6 or UV.max() > 1 + 1e-6):
        raise ValueError(f"iuv_to_uint8: U and V must be in [0, 1]; got {UV.min()}..{UV.max()}")
    out = np.empty(a.shape, dtype=np.uint8)
    out[..., 0] = I.astype(np.uint8)
    out[..., 1:] = np.round(np.clip(UV, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B,V,3) of meshes ``vertices`` (B,V,3) with ``faces`` (F,3):
    each face adds its cross product (twice its area times its unit normal) to its three corners,
    then the sums are normalised (a vertex used by no face or only by degenerate ones gets zero)."""
    tri = vertices[:, faces]  # (B,F,3,3)
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    length = n.norm(dim=-1, keepdim=True)
    return torch.where(length > 0, n / length.clamp_min(torch.finfo(n.dtype).tiny), torch.zeros_like(n))


def face_tables_from_charts(faces, charts: SurfaceCharts, num_vertices: Optional[int] = None
                            ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-face DensePose part and per-corner (u, v) of a mesh from its :class:`SurfaceCharts`.

    A chart face is matched to the mesh face with the same three mesh vertices (the chart
    vertices' ``vertex_ids``), whatever their order; each mesh corner takes the (u, v) of the chart
    corner on the same mesh vertex.  Mesh faces no chart face covers (DensePose's
    ``UV_Processed.mat`` covers 13774 of SMPL's 13776 faces) get part 0 and (u, v) = 0.

    Returns ``face_parts`` (F,) int64 in 0..24 and ``face_uv`` (F, 3, 2) float64.
    Raises ``ValueError`` if a chart face matches no mesh face (the charts belong to another
    mesh) or two chart faces of different parts match the same mesh face.
    """
    F = faces.detach().cpu().numpy() if isinstance(faces, torch.Tensor) else np.asarray(faces)
    if F.ndim != 2 or F.shape[1] != 3 or F.dtype.kind not in "iu":
        raise ValueError(f"faces must be an (F, 3) integer array; got {F.shape} {F.dtype}")
    F = F.astype(np.int64)
    if num_vertices is None:
        num_vertices = int(F.max(initial=-1)) + 1
    charts.validate(num_vertices)
    C = charts.vertex_ids[charts.faces]  # (Fc, 3) mesh vertex ids of each chart face's corners
    nf = F.shape[0]
    key_mesh, key_chart = np.sort(F, axis=1), np.sort(C, axis=1)
    uniq, inv = np.unique(np.concatenate([key_mesh, key_chart]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    owner = np.full(uniq.shape[0], -1, dtype=np.int64)  # mesh face of each distinct vertex triple
    owner[inv[:nf][::-1]] = np.arange(nf)[::-1]  # the first mesh face wins for repeated triples
    target = owner[inv[nf:]]  # mesh face of each chart face
    missing = np.flatnonzero(target < 0)
    if missing.size:
        i = int(missing[0])
        raise ValueError(f"charts do not fit this mesh: {missing.size} of {C.shape[0]} chart faces have vertex "
                         f"triples that are no mesh face (chart face {i} on mesh vertices {C[i].tolist()})")
    parts = np.zeros(nf, dtype=np.int64)
    face_uv = np.zeros((nf, 3, 2), dtype=np.float64)
    parts[target] = charts.face_part_ids
    clash = np.flatnonzero(parts[target] != charts.face_part_ids)
    if clash.size:
        i = int(clash[0])
        raise ValueError(f"charts: mesh face {target[i]} is covered by chart faces of parts "
                         f"{sorted({int(charts.face_part_ids[j]) for j in np.flatnonzero(target == target[i])})}")
    # Corner k of the mesh face (in sorted-vertex order) is the chart corner holding the same vertex.
    om = np.argsort(F[target], axis=1, kind="stable")
    oc = np.argsort(C, axis=1, kind="stable")
    rows = np.arange(target.shape[0])[:, None]
    corner_uv = charts.uv[charts.faces]  # (Fc, 3, 2)
    tmp = np.empty_like(corner_uv)
    tmp[rows, om] = corner_uv[rows, oc]
    face_uv[target] = tmp
    return parts, face_uv


def _as_vertices(vertices, name: str = "vertices") -> torch.Tensor:
    if isinstance(vertices, np.ndarray):
        vertices = torch.as_tensor(vertices)
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array (B, V, 3); got {type(vertices).__name__}")
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"{name} must be (B, V, 3); got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {vertices.dtype}")
    return vertices


def _cpu_tensor(x) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _image_size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    try:
        H, W = (int(s) for s in image_size)
        ok = all(float(s) == int(s) for s in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok or H < 1 or W < 1:
        raise ValueError(f"image_size must be (H, W) with positive integers; got {image_size!r}")
    return H, W


class BodyRenderer:
    """Renders maps of a mesh family (one face list) from posed vertices and cameras.

    Args:
        faces: (F, 3) vertex indices.
        face_parts: (F,) DensePose part per face, 0..24 (0 = no part); ``None`` = all 0.
        face_uv: (F, 3, 2) (u, v) of each face corner within its part's chart; ``None`` = all 0.
        num_vertices: vertex count of the meshes (default: largest face index + 1).

    :meth:`from_model` builds the tables from a body model and its surface charts.  Without
    tables the renderer still gives silhouettes, depth, normals and shaded colour images.
    """

    def __init__(self, faces, face_parts=None, face_uv=None, num_vertices: Optional[int] = None) -> None:
        f = torch.as_tensor(faces.astype(np.int64) if isinstance(faces, np.ndarray) else faces)
        if f.ndim != 2 or f.shape[1] != 3 or f.dtype.is_floating_point or f.dtype == torch.bool:
            raise ValueError(f"BodyRenderer: faces must be (F, 3) integers; got {tuple(f.shape)} {f.dtype}")
        f = f.to(torch.int64).cpu().contiguous()
        if f.shape[0] == 0:
            raise ValueError("BodyRenderer: faces is empty")
        if int(f.min()) < 0:
            raise ValueError(f"BodyRenderer: faces must be >= 0; got {int(f.min())}")
        nv = int(f.max()) + 1 if num_vertices is None else int(num_vertices)
        if int(f.max()) >= nv:
            raise ValueError(f"BodyRenderer: faces index vertex {int(f.max())} but num_vertices is {nv}")
        nf = f.shape[0]
        p = torch.zeros(nf, dtype=torch.int64) if face_parts is None else _cpu_tensor(face_parts)
        if p.shape != (nf,) or p.is_floating_point():
            raise ValueError(f"BodyRenderer: face_parts must be ({nf},) integers; got {tuple(p.shape)} {p.dtype}")
        p = p.to(torch.int64)
        if int(p.min()) < 0 or int(p.max()) > NUM_PARTS:
            raise ValueError(f"BodyRenderer: face_parts must be in 0..{NUM_PARTS}; got {int(p.min())}..{int(p.max())}")
        uv = torch.zeros(nf, 3, 2, dtype=torch.float64) if face_uv is None else _cpu_tensor(face_uv)
        if uv.shape != (nf, 3, 2) or not (uv.is_floating_point() or uv.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"BodyRenderer: face_uv must be ({nf}, 3, 2); got {tuple(uv.shape)}")
        if not bool(torch.isfinite(uv).all()) or float(uv.min()) < -1e-6 or float(uv.max()) > 1 + 1e-6:
            raise ValueError("BodyRenderer: face_uv must be finite and in [0, 1]")
        uv = uv.to(torch.float64)
        self.faces = f
        self.face_parts = p
        self.face_uv = uv
        self.face_parts6 = torch.as_tensor(DENSEPOSE_TO_LSP6)[p]
        self.num_vertices = nv

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model=None, charts=None) -> "BodyRenderer":
        """A renderer for a body model's mesh with its DensePose face tables.

        Args:
            model: a :class:`smplfast.SMPL` module, a model file path, a
                :class:`~smplfast.body.model_file.ModelData`, or ``None`` for the bundled default model.
            charts: :class:`~smplfast.surface.SurfaceCharts`, a path to DensePose's ``UV_Processed.mat``
                (for SMPL's own mesh), or ``None`` for the charts stored in the model file.
        """
        from ..body.default_model import load_default_model
        from ..body.model_file import ModelData, load_model

        data = None
        if model is None:
            data = load_default_model()
            faces = data.f
        elif isinstance(model, ModelData):
            data, faces = model, model.f
        elif isinstance(model, (str, os.PathLike)):
            data = load_model(os.fspath(model))
            faces = data.f
        elif hasattr(model, "faces") and hasattr(model, "get_num_verts"):
            faces = np.asarray(model.faces, dtype=np.int64)
            if charts is None:
                src = getattr(model, "model_source", None)
                if not src or not Path(src).is_file():
                    raise ValueError(f"BodyRenderer.from_model: the model was not loaded from a file ({src!r}), "
                                     "so its charts are unknown; pass charts=SurfaceCharts(...)")
                data = load_model(src)
        else:
            raise TypeError("BodyRenderer.from_model: model must be an SMPL module, a model path, ModelData or None; "
                            f"got {type(model).__name__}")
        num_vertices = int(model.get_num_verts()) if data is None else data.num_vertices
        if charts is None:
            try:
                charts = SurfaceCharts.from_npz_dict(data.extras)
            except ValueError:
                raise ValueError(f"BodyRenderer.from_model: {data.source} stores no surface charts; pass "
                                 "charts=load_densepose_uv('UV_Processed.mat') for SMPL's mesh, or use "
                                 "BodyRenderer(faces) for silhouettes, depth and normals only") from None
        elif isinstance(charts, (str, os.PathLike)):
            charts = load_densepose_uv(charts)
        elif not isinstance(charts, SurfaceCharts):
            raise TypeError(f"BodyRenderer.from_model: charts must be SurfaceCharts, a path or None; "
                            f"got {type(charts).__name__}")
        parts, face_uv = face_tables_from_charts(faces, charts, num_vertices)
        return cls(faces, parts, face_uv, num_vertices=num_vertices)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """Area-weighted unit vertex normals (B,V,3) of posed meshes (B,V,3), in their own frame."""
        v = _as_vertices(vertices)
        return vertex_normals(v, self.faces.to(v.device))

    def __repr__(self) -> str:
        covered = int((self.face_parts > 0).sum())
        return (f"BodyRenderer(faces={self.num_faces}, vertices={self.num_vertices}, "
                f"faces_with_part={covered})")

    # ------------------------------------------------------------------ rendering
    def render(self, vertices, camera: PerspectiveCamera, image_size, maps: Iterable[str] = MAP_NAMES,
               part_colors=None, texture=None, light_dir=None, ambient: float = 0.35,
               near: float = 1e-3) -> Dict[str, torch.Tensor]:
        """Rasterize posed meshes and derive per-pixel maps.

        Args:
            vertices: (B,V,3) world coordinates (metres).
            camera: :class:`PerspectiveCamera` with B cameras or one (broadcast).
            image_size: (H, W) or an int for square images.
            maps: names from :data:`MAP_NAMES`.
            part_colors: (25,3) or (B,25,3) colours in [0,1] per DensePose part for ``rgb`` (row 0 colours
                faces without a part); ``None`` = :func:`default_part_colors`.
            texture: (B,24,T,T,3) or (24,T,T,3) per-part textures in [0,1] for ``rgb``, sampled bilinearly
                at (u, v) by :func:`smplfast.ops.uv_lookup` (texel (row r, col c) at ``v = r/(T-1)``,
                ``u = c/(T-1)``); it replaces ``part_colors`` for pixels with a part.
            light_dir: (3,) or (B,3) camera-frame direction towards a directional light;
                ``None`` = (0.3, -0.4, -1) normalised (from behind the camera, above and to the right).
            ambient: ambient term in [0,1]; ``rgb = colour * (ambient + (1 - ambient) * max(n·l, 0))``.
            near: faces closer than this depth (metres) are clipped by the rasterizer.

        Returns a dict of tensors on the vertices' device: ``face_index`` (B,H,W) int64 (-1 on
        background) always, plus the requested ``silhouette`` (B,H,W) bool, ``parts`` (B,H,W) int64
        (0 background, 1..24; 0 also on faces without a part), ``parts6`` (B,H,W) int64 0..6, ``iuv``
        (B,H,W,3) (I, U, V), ``depth`` (B,H,W) camera Z in metres (0 background), ``normals``
        (B,H,W,3) unit camera-frame normals turned towards the camera (0 background), ``rgb``
        (B,H,W,3) in [0,1] (0 background).  Float maps have the vertices' dtype.
        """
        v = _as_vertices(vertices)
        B, V, _ = v.shape
        if V != self.num_vertices:
            raise ValueError(f"vertices must have {self.num_vertices} vertices per mesh (this renderer's mesh); "
                             f"got {V}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("vertices must be finite")
        if not isinstance(camera, PerspectiveCamera):
            raise TypeError(f"camera must be a PerspectiveCamera; got {type(camera).__name__}")
        if isinstance(maps, str):
            maps = (maps,)
        wanted = tuple(maps)
        unknown = [m for m in wanted if m not in MAP_NAMES]
        if unknown:
            raise ValueError(f"unknown maps {unknown}; choose from {MAP_NAMES}")
        H, W = _image_size(image_size)
        ambient = float(ambient)
        if not 0.0 <= ambient <= 1.0:
            raise ValueError(f"ambient must be in [0, 1]; got {ambient}")
        # Rendering does not differentiate w.r.t. the camera (the rasterizer is discrete).
        cam = camera.expand(B).to(device=v.device).detach()
        dev, dt = v.device, v.dtype
        faces = self.faces.to(dev)
        focal = cam.focal.to(torch.float64).contiguous()
        center = cam.centers((H, W)).to(torch.float64).contiguous()
        Xc = cam.world_to_camera(v).contiguous()
        # Coverage is discrete: face ids, barycentrics and depth are constants for autograd (normals and
        # shading still carry gradients to the vertices through the vertex normals).
        face_index, bary, depth = _rasterize(Xc.detach(), faces, focal, center, (H, W), near=near)
        fg = face_index >= 0
        fi = face_index.clamp_min(0)
        zero = torch.zeros((), dtype=dt, device=dev)
        out: Dict[str, torch.Tensor] = {"face_index": face_index}
        if "silhouette" in wanted:
            out["silhouette"] = fg
        need_parts = any(m in wanted for m in ("parts", "iuv", "rgb"))
        parts = torch.where(fg, self.face_parts.to(dev)[fi], 0) if need_parts else None
        if "parts" in wanted:
            out["parts"] = parts
        if "parts6" in wanted:
            out["parts6"] = torch.where(fg, self.face_parts6.to(dev)[fi], 0)
        if "depth" in wanted:
            out["depth"] = torch.where(fg, depth.to(dt), zero)
        uv = None
        if "iuv" in wanted or (texture is not None and "rgb" in wanted):
            uv = interpolate(self.face_uv.to(device=dev, dtype=dt), faces, face_index, bary.to(dt), corners=True)
            uv = torch.where(fg[..., None], uv.clamp(0.0, 1.0), zero)
        if "iuv" in wanted:
            out["iuv"] = torch.cat([parts.to(dt)[..., None], uv], dim=-1)
        if "normals" in wanted or "rgb" in wanted:
            n_cam = vertex_normals(v, faces) @ cam.rotation.to(dt).transpose(-1, -2)
            n = interpolate(n_cam, faces, face_index, bary.to(dt), corners=False)
            # Turn the normal towards the camera: against the viewing ray through the pixel centre.
            cols = torch.arange(W, device=dev, dtype=torch.float64) + 0.5
            rows = torch.arange(H, device=dev, dtype=torch.float64) + 0.5
            rx = (cols[None, None, :] - center[:, 0, None, None]) / focal[:, 0, None, None]
            ry = (rows[None, :, None] - center[:, 1, None, None]) / focal[:, 1, None, None]
            ray = torch.stack(torch.broadcast_tensors(rx, ry, torch.ones_like(rx)), dim=-1).to(dt)
            n = torch.where(((n * ray).sum(-1, keepdim=True) > 0), -n, n)
            length = n.norm(dim=-1, keepdim=True)
            n = torch.where(fg[..., None] & (length > 0), n / length.clamp_min(torch.finfo(dt).tiny), zero)
            if "normals" in wanted:
                out["normals"] = n
            if "rgb" in wanted:
                out["rgb"] = self._shade(n, fg, fi, parts, uv, B, part_colors, texture, light_dir, ambient)
        return out

    def _shade(self, n, fg, fi, parts, uv, B, part_colors, texture, light_dir, ambient) -> torch.Tensor:
        dev, dt = n.device, n.dtype
        if part_colors is None:
            pc = torch.as_tensor(default_part_colors(), dtype=dt, device=dev).expand(B, -1, -1)
        else:
            pc = torch.as_tensor(part_colors.detach() if isinstance(part_colors, torch.Tensor) else
                                 np.asarray(part_colors, dtype=np.float64)).to(device=dev, dtype=dt)
            if pc.shape == (NUM_PARTS + 1, 3):
                pc = pc.expand(B, -1, -1)
            if pc.shape != (B, NUM_PARTS + 1, 3):
                raise ValueError(f"part_colors must be ({NUM_PARTS + 1}, 3) or ({B}, {NUM_PARTS + 1}, 3); "
                                 f"got {tuple(pc.shape)}")
            if not bool(torch.isfinite(pc).all()) or float(pc.min()) < 0 or float(pc.max()) > 1:
                raise ValueError("part_colors must be in [0, 1]")
        b = torch.arange(B, device=dev)[:, None, None]
        base = pc[b, parts]  # (B,H,W,3)
        if texture is not None:
            base = torch.where((parts > 0)[..., None], _sample_texture(texture, parts, uv, B), base)
        if light_dir is None:
            light = torch.tensor([0.3, -0.4, -1.0], dtype=dt, device=dev).expand(B, 3)
        else:
            light = torch.as_tensor(light_dir.detach() if isinstance(light_dir, torch.Tensor) else
                                    np.asarray(light_dir, dtype=np.float64)).to(device=dev, dtype=dt)
            if light.shape == (3,):
                light = light.expand(B, 3)
            if light.shape != (B, 3):
                raise ValueError(f"light_dir must be (3,) or ({B}, 3); got {tuple(light.shape)}")
        ln = light.norm(dim=-1, keepdim=True)
        if not bool(torch.isfinite(light).all()) or bool((ln < 1e-12).any()):
            raise ValueError("light_dir must be finite and non-zero")
        light = light / ln
        lambert = (n * light[:, None, None, :]).sum(-1).clamp_min(0.0)
        rgb = base * (ambient + (1.0 - ambient) * lambert)[..., None]
        return torch.where(fg[..., None], rgb.clamp(0.0, 1.0), torch.zeros((), dtype=dt, device=dev))


def _sample_texture(texture, parts: torch.Tensor, uv: torch.Tensor, B: int) -> torch.Tensor:
    """Bilinear lookup (:func:`smplfast.ops.uv_lookup`) of per-part textures (B,24,T,T,3) or (24,T,T,3)
    at each foreground pixel's (part, u, v) -> (B,H,W,3), zero where ``parts == 0``."""
    dev, dt = uv.device, uv.dtype
    tex = texture.to(device=dev, dtype=dt) if isinstance(texture, torch.Tensor) else \
        torch.as_tensor(np.asarray(texture, dtype=np.float64)).to(device=dev, dtype=dt)
    if tex.ndim == 4:
        tex = tex[None]
    if tex.ndim != 5 or tex.shape[0] not in (1, B) or tex.shape[1] != NUM_PARTS or tex.shape[-1] != 3 \
            or tex.shape[2] != tex.shape[3] or tex.shape[2] < 2:
        raise ValueError(f"texture must be ({B}, {NUM_PARTS}, T, T, 3) or ({NUM_PARTS}, T, T, 3) with T >= 2; "
                         f"got {tuple(tex.shape)}")
    if not bool(torch.isfinite(tex).all()) or float(tex.min()) < 0 or float(tex.max()) > 1:
        raise ValueError("texture must be in [0, 1]")
    out = torch.zeros(parts.shape + (3,), dtype=dt, device=dev)
    b, i, j = torch.nonzero(parts > 0, as_tuple=True)
    if b.numel():
        batch_index = b if tex.shape[0] == B and B > 1 else torch.zeros_like(b)
        out[b, i, j] = uv_lookup(tex.contiguous(), parts[b, i, j] - 1, uv[b, i, j].contiguous(), batch_index)
    return out
