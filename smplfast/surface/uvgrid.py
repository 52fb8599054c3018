"""HoloPose's Cartesian UV-grid body model: every DensePose part resampled on a regular R x R grid.

A body mesh with per-part (u, v) charts (:class:`~smplfast.surface.charts.SurfaceCharts`) becomes
24 small images whose "pixels" carry everything the mesh's vertices carry: the rest position, the
shape blend shapes, the pose blend shapes (when the model has non-zero ones) and the skinning
weights.  Grid point ``[p, row, col]`` sits at ``u = col / (R - 1)``, ``v = row / (R - 1)`` of part
``p + 1`` (``align_corners=True``), and gets its values by barycentric interpolation on the chart
triangle that contains it.

The grid is then a body model of its own whose vertices are the ``24 R R`` grid points: it is
posed by the same kinematic chain and sparse skinning ops as the mesh, with the joints of the
original mesh (``J(beta) = J_template + J_shapedirs beta``, independent of the grid).  The pose is
axis-angle (``body_pose``, ``global_orient``) or, like ``SMPL(..., pose2rot=False)``, rotation
matrices ``rotmat`` (B, 24, 3, 3) used as given (a network's output, with gradients straight to the
matrices, never through a matrix-to-axis-angle conversion).  A surface
point ``(part, u, v)`` is a bilinear lookup (the ``uv_lookup`` op) in the posed grid, or, for
fitting, a lookup of the rest-space data followed by skinning that single point
(:meth:`UVGrid.lookup_points` + :func:`skin_points`).

:class:`ChartTriangles` is the mesh-based alternative: find the chart triangle containing
``(u, v)`` and interpolate its three vertices.  It is used to build the grid, as the ground truth
of the grid's accuracy, and as the baseline of the lookup benchmark.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import ops
from ..body.model_file import ModelData, load_model
from ..body.smpl import SMPL
from ..ops.uv_lookup import uv_lookup as _uv_lookup  # the compiled op (uv_lookup_reference is its specification)
from .charts import NUM_PARTS, SurfaceCharts

__all__ = [
    "ChartTriangles",
    "UVGrid",
    "GridPoints",
    "skin_points",
    "sample_chart_points",
    "check_part_uv",
    "grid_accuracy",
]

# Barycentric tolerance for "inside a triangle": points on shared edges belong to either face.
_INSIDE_TOL = 1e-9


def check_part_uv(op: str, part: Tensor, uv: Tensor, one_based: bool = True) -> None:
    """Shape, dtype and range checks of DensePose surface coordinates (raises ValueError/TypeError)."""
    if not torch.is_tensor(part) or not torch.is_tensor(uv):
        raise TypeError(f"{op}: part and uv must be torch tensors; got {type(part).__name__}, {type(uv).__name__}")
    if part.dim() != 1:
        raise ValueError(f"{op}: part must be (N,); got {tuple(part.shape)}")
    if uv.dim() != 2 or uv.shape[1] != 2 or uv.shape[0] != part.shape[0]:
        raise ValueError(f"{op}: uv must be ({part.shape[0]}, 2); got {tuple(uv.shape)}")
    if part.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: part must be an int64 or int32 tensor; got {part.dtype}")
    if not uv.is_floating_point():
        raise TypeError(f"{op}: uv must be a floating point tensor; got {uv.dtype}")
    if part.numel():
        lo, hi = (1, NUM_PARTS) if one_based else (0, NUM_PARTS - 1)
        pmin, pmax = int(part.min()), int(part.max())
        if pmin < lo or pmax > hi:
            raise ValueError(f"{op}: part must be in {lo}..{hi} (DensePose part ids); got {pmin}..{pmax}")
        if not bool(torch.isfinite(uv).all()) or float(uv.min()) < -1e-6 or float(uv.max()) > 1 + 1e-6:
            raise ValueError(f"{op}: uv must be finite and in [0, 1]; got values in "
                             f"[{float(uv.min()):.4g}, {float(uv.max()):.4g}]")


# --------------------------------------------------------------------------------------------------
# Mesh-based lookup: the chart triangle containing (u, v)
# --------------------------------------------------------------------------------------------------


class ChartTriangles:
    """Point location in the 24 charts: which chart triangle contains ``(part, u, v)``, with what
    barycentric coordinates.  Pure PyTorch, vectorised over the faces of each part.

    ``locate`` tests every face of the point's part (a dense (points x faces) barycentric test);
    among the faces that contain the point (overlapping triangles exist where a chart folds) it
    picks the most interior one (largest smallest barycentric coordinate), so the answer is
    deterministic.  ``interpolate`` then blends the three mesh vertices of that face.
    """

    def __init__(self, charts: SurfaceCharts, device=None, dtype=torch.float64) -> None:
        charts.validate()
        self.charts = charts
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        uv = torch.as_tensor(charts.uv, dtype=torch.float64)
        faces = torch.as_tensor(charts.faces, dtype=torch.long)
        self.vertex_ids = torch.as_tensor(charts.vertex_ids, dtype=torch.long, device=self.device)
        self.faces = faces.to(self.device)
        self.face_mesh_vertices = self.vertex_ids[self.faces]  # (F, 3) mesh vertex ids
        self.part_face_ids = []   # per part: (F_p,) face indices
        self.part_origin = []     # per part: (F_p, 2) first corner
        self.part_inverse = []    # per part: (F_p, 2, 2) inverse of [b - a, c - a]
        fpid = torch.as_tensor(charts.face_part_ids, dtype=torch.long)
        for p in range(1, NUM_PARTS + 1):
            fid = torch.nonzero(fpid == p).flatten()
            tri = uv[faces[fid]]  # (F_p, 3, 2)
            E = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], dim=2)  # columns b-a, c-a
            det = E[:, 0, 0] * E[:, 1, 1] - E[:, 0, 1] * E[:, 1, 0]
            keep = det.abs() > 1e-14  # degenerate (zero-area) chart triangles contain nothing
            fid, tri, E, det = fid[keep], tri[keep], E[keep], det[keep]
            inv = torch.stack([torch.stack([E[:, 1, 1], -E[:, 0, 1]], 1),
                               torch.stack([-E[:, 1, 0], E[:, 0, 0]], 1)], 1) / det[:, None, None]
            self.part_face_ids.append(fid.to(self.device))
            self.part_origin.append(tri[:, 0].to(self.device, dtype))
            self.part_inverse.append(inv.to(self.device, dtype))

    def to(self, device=None, dtype=None) -> "ChartTriangles":
        """The same index on ``device`` with the uv maths in ``dtype``."""
        return ChartTriangles(self.charts, device=device or self.device, dtype=dtype or self.dtype)

    def _barycentric(self, p: int, uv: Tensor) -> Tensor:
        """(n, F_p, 3) barycentric coordinates of ``uv`` (n, 2) in every face of part index ``p``."""
        d = uv[:, None, :] - self.part_origin[p][None]               # (n, F_p, 2)
        l12 = torch.einsum("fij,nfj->nfi", self.part_inverse[p], d)  # (n, F_p, 2)
        return torch.cat([1 - l12.sum(-1, keepdim=True), l12], dim=-1)

    def locate(self, part: Tensor, uv: Tensor, chunk: int = 1 << 22,
               nearest: bool = False) -> Tuple[Tensor, Tensor]:
        """Face (N,) long (-1 where no triangle contains the point) and barycentrics (N, 3).

        part (N,) 1..24, uv (N, 2).  ``nearest=True`` returns, for a point outside its chart, the
        face whose barycentric coordinates are least negative and those (extrapolating)
        coordinates, instead of -1.  ``chunk`` bounds the points x faces work of one pass.
        """
        check_part_uv("ChartTriangles.locate", part, uv)
        N = part.shape[0]
        uv = uv.to(self.device, self.dtype)
        part = part.to(self.device)
        face = torch.full((N,), -1, dtype=torch.long, device=self.device)
        bary = torch.zeros(N, 3, dtype=self.dtype, device=self.device)
        for p in range(NUM_PARTS):
            idx = torch.nonzero(part == p + 1).flatten()
            F = self.part_face_ids[p].shape[0]
            if idx.numel() == 0 or F == 0:
                continue
            step = max(1, chunk // F)
            for s in range(0, idx.numel(), step):
                rows = idx[s:s + step]
                b = self._barycentric(p, uv[rows])
                score, best = b.min(dim=-1).values.max(dim=1)
                inside = score >= -_INSIDE_TOL
                ok = inside | nearest
                bb = b[torch.arange(rows.numel(), device=self.device), best]
                face[rows] = torch.where(ok, self.part_face_ids[p][best], -1)
                bary[rows] = torch.where(ok[:, None], bb, 0)
        return face, bary

    def interpolate(self, values: Tensor, face: Tensor, bary: Tensor, batch_index: Optional[Tensor] = None) -> Tensor:
        """Blend mesh-vertex values at located points.

        values (V, C) or (B, V, C) per mesh vertex; face (N,) and bary (N, 3) from :meth:`locate`
        (every face must be >= 0); batch_index (N,) picks the sample of each point for batched
        values (default: point n of every sample, giving (B, N, C)).
        """
        if bool((face < 0).any()):
            raise ValueError("ChartTriangles.interpolate: some points lie outside every chart triangle (face -1)")
        vid = self.face_mesh_vertices.to(values.device)[face.to(values.device)]  # (N, 3)
        w = bary.to(values.device, values.dtype)
        if values.dim() == 2:
            return (values[vid] * w[..., None]).sum(1)
        if batch_index is None:
            return (values[:, vid] * w[None, ..., None]).sum(2)
        return (values[batch_index.to(values.device)[:, None], vid] * w[..., None]).sum(1)


def sample_chart_points(charts: SurfaceCharts, n: int, generator: Optional[torch.Generator] = None,
                        parts=None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` random surface points uniform in chart area: part (n,) 1..24, uv (n, 2) float64, and the
    chart face (n,) and barycentrics (n, 3) they were drawn from (``parts`` restricts the parts)."""
    uv = torch.as_tensor(charts.uv, dtype=torch.float64)
    faces = torch.as_tensor(charts.faces, dtype=torch.long)
    fpid = torch.as_tensor(charts.face_part_ids, dtype=torch.long)
    tri = uv[faces]
    area = 0.5 * ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                  - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])).abs()
    if parts is not None:
        area = area * torch.isin(fpid, torch.as_tensor(list(parts), dtype=torch.long)).double()
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    flip = r.sum(1) > 1
    r = torch.where(flip[:, None], 1 - r, r)
    bary = torch.stack([1 - r.sum(1), r[:, 0], r[:, 1]], dim=1)
    pts = (tri[face] * bary[..., None]).sum(1).clamp(0, 1)
    return fpid[face], pts, face, bary


# --------------------------------------------------------------------------------------------------
# The grid model
# --------------------------------------------------------------------------------------------------


@dataclass
class GridPoints:
    """Rest-space data of N surface points looked up in a :class:`UVGrid` (constant while fitting).

    template (N, 3), shapedirs (N, 3, S), weights (N, J) (skinning weights, rows sum to 1),
    posedirs (N, 3, 9 (J - 1)) or None when the model has no pose blend shapes.
    """

    template: Tensor
    shapedirs: Tensor
    weights: Tensor
    posedirs: Optional[Tensor] = None

    @property
    def num_points(self) -> int:
        return int(self.template.shape[0])

    def index(self, idx: Tensor) -> "GridPoints":
        return GridPoints(self.template[idx], self.shapedirs[idx], self.weights[idx],
                          None if self.posedirs is None else self.posedirs[idx])


def _load_model_and_charts(model, charts):
    """(ModelData or None, SMPL-like tensors source, charts) from the accepted model inputs."""
    if isinstance(model, SMPL):
        data = None
        src = model.model_source
    elif isinstance(model, ModelData):
        data, src = model, model.source
    elif isinstance(model, (str, os.PathLike)):
        data = load_model(os.fspath(model))
        src = data.source
    else:
        raise TypeError(f"UVGrid.from_model: model must be a smplfast.SMPL, a model file path or a ModelData; "
                        f"got {type(model).__name__}")
    if charts is None:
        extras = data.extras if data is not None else None
        if extras is None:
            try:
                extras = load_model(src).extras if src and os.path.isfile(src) else {}
            except Exception:  # noqa: BLE001 - reported below as "no charts"
                extras = {}
        if "uv_uv" not in extras:
            raise ValueError(f"UVGrid.from_model: the model {src!r} carries no surface charts (uv_* keys); pass "
                             "charts=load_densepose_uv('UV_Processed.mat') for SMPL, or build them with "
                             "densepose_parts_from_weights + flatten_charts")
        charts = SurfaceCharts.from_npz_dict(extras)
    if not isinstance(charts, SurfaceCharts):
        raise TypeError(f"UVGrid.from_model: charts must be a SurfaceCharts or None; got {type(charts).__name__}")
    return data, charts


def _model_arrays(model, data: Optional[ModelData]):
    """float64 numpy arrays: template (V,3), shapedirs (V,3,S), posedirs (V,3,P9) or None, weights (V,J),
    J_regressor (J,V), parents (J,)."""
    if isinstance(model, SMPL):
        t = lambda x: x.detach().cpu().double().numpy()  # noqa: E731
        V = model.v_template.shape[0]
        posedirs = t(model.posedirs).T.reshape(V, 3, -1)
        return (t(model.v_template), t(model.shapedirs), posedirs if np.any(posedirs != 0) else None,
                t(model.lbs_weights), t(model.J_regressor), model.parents.detach().cpu().numpy().astype(np.int64))
    posedirs = data.posedirs if data.posedirs.size and np.any(data.posedirs != 0) else None
    return data.v_template, data.shapedirs, posedirs, data.weights, data.J_regressor, data.parents


def _nearest_fill_index(valid: np.ndarray) -> np.ndarray:
    """For each cell of an (R, R) mask, the flat index of its nearest valid cell (itself when valid)."""
    R = valid.shape[0]
    if valid.all():
        return np.arange(R * R)
    from scipy.ndimage import distance_transform_edt

    _, (ri, ci) = distance_transform_edt(~valid, return_indices=True)
    return (ri * R + ci).reshape(-1)


class UVGrid(nn.Module):
    """A body model on 24 per-part R x R grids (HoloPose's Cartesian surface charting).

    Buffers (P = 24 parts, R = resolution, S shape coefficients, J = 24 joints):

    * ``template`` (P, R, R, 3), ``shapedirs`` (P, R, R, 3, S), ``posedirs`` (P, R, R, 3, 9(J-1))
      (only when the source model has non-zero pose blend shapes; else ``None``),
      ``weights`` (P, R, R, J): the mesh's quantities resampled at the grid points;
    * ``valid`` (P, R, R) bool: grid points inside their part's chart (``inside`` when the grid
      was built with ``border="nearest"``; with ``border="extrapolate"`` also the ring of cells
      just outside the chart, whose values are linear extrapolations of the nearest chart triangle);
      every other cell holds the values of its nearest valid cell, so no cell holds garbage;
    * ``inside`` (P, R, R) bool: grid points inside the chart;
    * ``joint_template`` (J, 3), ``joint_shapedirs`` (J, 3, S), ``parents`` (J,): the skeleton of
      the original mesh (its joint regressor), independent of the grid;
    * ``point_data`` (1, P, R, R, C): template, shapedirs, weights (and posedirs) packed as channels
      for one lookup per surface point (:meth:`lookup_points`).

    Build it with :meth:`from_model`; :meth:`forward` poses the grid, :meth:`surface_points` looks up
    posed surface points.
    """

    def __init__(self, template: Tensor, shapedirs: Tensor, posedirs: Optional[Tensor], weights: Tensor,
                 valid: Tensor, inside: Tensor, joint_template: Tensor, joint_shapedirs: Tensor,
                 parents: Tensor, dtype=torch.float32) -> None:
        super().__init__()
        P, R = template.shape[0], template.shape[1]
        J, S = weights.shape[-1], shapedirs.shape[-1]
        self.resolution, self.num_parts, self.num_betas, self.num_joints = R, P, S, J
        self.register_buffer("template", template.to(dtype).contiguous())
        self.register_buffer("shapedirs", shapedirs.to(dtype).contiguous())
        self.register_buffer("posedirs", None if posedirs is None else posedirs.to(dtype).contiguous())
        self.register_buffer("weights", weights.to(dtype).contiguous())
        self.register_buffer("valid", valid.to(torch.bool).contiguous())
        self.register_buffer("inside", inside.to(torch.bool).contiguous())
        self.register_buffer("joint_template", joint_template.to(dtype).contiguous())
        self.register_buffer("joint_shapedirs", joint_shapedirs.to(dtype).contiguous())
        self.register_buffer("parents", parents.to(torch.long).contiguous())
        M = P * R * R
        idx, w = ops.dense_to_sparse_weights(weights.reshape(M, J).to(torch.float64))
        self.register_buffer("_lbs_idx", idx, persistent=False)
        self.register_buffer("_lbs_w", w.to(dtype), persistent=False)
        chans = [self.template, self.shapedirs.reshape(P, R, R, 3 * S), self.weights]
        if self.posedirs is not None:
            chans.append(self.posedirs.reshape(P, R, R, -1))
        self.register_buffer("point_data", torch.cat(chans, dim=-1)[None].contiguous(), persistent=False)

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def from_model(cls, model=None, charts: Optional[SurfaceCharts] = None, resolution: int = 32, *,
                   border: str = "extrapolate", dtype=torch.float32) -> "UVGrid":
        """Resample a body model on per-part grids.

        model: a :class:`smplfast.SMPL`, a model file path, a :class:`ModelData`, or None (the
        bundled default model).  charts: :class:`SurfaceCharts` (e.g. from
        :func:`~smplfast.surface.charts.load_densepose_uv` for SMPL's ``UV_Processed.mat``); default:
        the charts bundled with the model file (the default model has them).  resolution: R >= 2.
        border: ``"nearest"`` marks only grid points inside the chart valid; ``"extrapolate"``
        (default) also fills the one-cell ring around each chart by linear extrapolation of the
        nearest chart triangle and marks it valid, so bilinear lookups near a chart's border
        interpolate instead of averaging fewer corners (see docs/SURFACE.md for the effect).
        """
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
            raise ValueError(f"UVGrid.from_model: resolution must be an int >= 2; got {resolution!r}")
        if border not in ("nearest", "extrapolate"):
            raise ValueError(f"UVGrid.from_model: border must be 'nearest' or 'extrapolate'; got {border!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"UVGrid.from_model: dtype must be torch.float32 or torch.float64; got {dtype}")
        if model is None:
            from ..body.default_model import load_default_model

            model = load_default_model()
        data, charts = _load_model_and_charts(model, charts)
        template, shapedirs, posedirs, weights, J_regressor, parents = _model_arrays(model, data)
        V = template.shape[0]
        charts.validate(V)
        R, P = resolution, NUM_PARTS
        S = shapedirs.shape[2]
        tri = ChartTriangles(charts)
        lin = torch.linspace(0, 1, R, dtype=torch.float64)
        vv, uu = torch.meshgrid(lin, lin, indexing="ij")  # row index <-> v, column index <-> u
        uv = torch.stack([uu.reshape(-1), vv.reshape(-1)], 1)
        part = torch.arange(1, P + 1).repeat_interleave(R * R)
        uv_all = uv.repeat(P, 1)
        face_in, bary_in = tri.locate(part, uv_all)
        inside = (face_in >= 0).reshape(P, R, R).numpy()
        valid = inside.copy()
        face, bary = face_in.clone(), bary_in.clone()
        if border == "extrapolate":
            from scipy.ndimage import binary_dilation

            ring = np.stack([binary_dilation(inside[p], structure=np.ones((3, 3), bool)) & ~inside[p]
                             for p in range(P)])
            ring_flat = torch.as_tensor(ring.reshape(-1))
            if bool(ring_flat.any()):
                f2, b2 = tri.locate(part[ring_flat], uv_all[ring_flat], nearest=True)
                # Linear extrapolation is trusted up to a cell away; clamp the coordinates so that a
                # sliver triangle cannot throw a ring cell far off the surface.
                far = (b2 < -1.0).any(1, keepdim=True)
                inner = b2.clamp_min(0)
                inner = inner / inner.sum(1, keepdim=True).clamp_min(1e-12)
                b2 = torch.where(far, inner, b2)
                face[ring_flat], bary[ring_flat] = f2, b2
            valid = inside | ring
        # Blend the three mesh vertices of each located face; nearest valid cell elsewhere.
        ok = torch.as_tensor(valid.reshape(-1))
        vid = tri.face_mesh_vertices[face.clamp_min(0)]  # (M, 3)
        w = bary.double()

        def blend(a: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(a, dtype=torch.float64).reshape(V, -1)
            out = (t[vid] * w[..., None]).sum(1)
            out[~ok] = 0
            return out.numpy()

        fill = np.concatenate([_nearest_fill_index(valid[p]) + p * R * R if valid[p].any()
                               else np.arange(p * R * R, (p + 1) * R * R) for p in range(P)])

        def grid(a: np.ndarray, shape) -> Tensor:
            return torch.as_tensor(blend(a)[fill].reshape(P, R, R, *shape))

        g_template = grid(template, (3,))
        g_shapedirs = grid(shapedirs, (3, S))
        g_posedirs = grid(posedirs, (3, posedirs.shape[2])) if posedirs is not None else None
        g_weights = grid(weights, (weights.shape[1],))
        # Extrapolated weights can leave [0, 1]: clip, then renormalise so rows sum to one again.
        # Drop negligible ones (they would only lengthen the sparse per-point lists).
        g_weights = g_weights.clamp_min(0)
        g_weights = torch.where(g_weights < 1e-7 * g_weights.amax(-1, keepdim=True), 0, g_weights)
        g_weights = g_weights / g_weights.sum(-1, keepdim=True)
        J_template = J_regressor @ template
        J_shapedirs = np.einsum("jv,vcs->jcs", J_regressor, shapedirs)
        return cls(g_template, g_shapedirs, g_posedirs, g_weights, torch.as_tensor(valid), torch.as_tensor(inside),
                   torch.as_tensor(J_template), torch.as_tensor(J_shapedirs), torch.as_tensor(parents), dtype=dtype)

    # ------------------------------------------------------------------------------------- sizes
    @property
    def num_grid_points(self) -> int:
        return self.num_parts * self.resolution * self.resolution

    @property
    def has_pose_blend(self) -> bool:
        return self.posedirs is not None

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, betas={self.num_betas}, valid cells={int(self.valid.sum())}/"
                f"{self.valid.numel()}, inside={int(self.inside.sum())}, pose blend shapes={self.has_pose_blend}")

    # ----------------------------------------------------------------------------------- posing
    def _check_params(self, op, betas, body_pose, global_orient, transl, rotmat=None) -> Tuple[Tensor, ...]:
        """Checked (betas, body_pose, global_orient, transl) for axis-angle inputs, or
        (betas, None, None, transl) plus the checked ``rotmat`` as a fifth entry for rotation matrices."""
        ref = self.template
        B = betas.shape[0] if torch.is_tensor(betas) and betas.dim() == 2 else None
        J = self.num_joints
        if rotmat is not None:
            if body_pose is not None or global_orient is not None:
                raise TypeError(f"{op}: give either body_pose and global_orient (axis-angle) or rotmat (B, {J}, 3, 3) "
                                "(rotation matrices), not both")
            specs = (("betas", betas, (self.num_betas,)), ("rotmat", rotmat, (J, 3, 3)), ("transl", transl, (3,)))
        else:
            if body_pose is None or global_orient is None:
                missing = [n for n, t in (("body_pose", body_pose), ("global_orient", global_orient)) if t is None]
                raise TypeError(f"{op}: {' and '.join(missing)} missing: give body_pose (B, {3 * (J - 1)}) and "
                                f"global_orient (B, 3) (axis-angle) or rotmat (B, {J}, 3, 3) (rotation matrices)")
            specs = (("betas", betas, (self.num_betas,)), ("body_pose", body_pose, (3 * (J - 1),)),
                     ("global_orient", global_orient, (3,)), ("transl", transl, (3,)))
        out = {}
        for name, t, tail in specs:
            if t is None and name == "transl":
                out[name] = ref.new_zeros(B or 1, 3)
                continue
            if not torch.is_tensor(t):
                raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
            if t.dim() != 1 + len(tail) or tuple(t.shape[1:]) != tail or (B is not None and t.shape[0] != B):
                want = ", ".join(str(d) for d in (B if B is not None else "B", *tail))
                raise ValueError(f"{op}: {name} must be ({want}); got {tuple(t.shape)}")
            if t.dtype != ref.dtype or t.device != ref.device:
                raise TypeError(f"{op}: {name} must be {ref.dtype} on {ref.device} (the grid's); got {t.dtype} on "
                                f"{t.device}")
            out[name] = t
        if rotmat is not None:
            return out["betas"], None, None, out["transl"], out["rotmat"]
        return out["betas"], out["body_pose"], out["global_orient"], out["transl"]

    def _rotations(self, op, betas, body_pose, global_orient, transl, rotmat) -> Tuple[Tensor, Tensor, Tensor]:
        """Checked betas (B, S), joint rotations (B, J, 3, 3) and transl: the given rotation matrices
        as they are (no detour through axis-angle), or Rodrigues of the axis-angle pose."""
        checked = self._check_params(op, betas, body_pose, global_orient, transl, rotmat)
        betas, transl = checked[0], checked[3]
        if rotmat is not None:
            return betas, checked[4].contiguous(), transl
        B, J = betas.shape[0], self.num_joints
        rot = ops.rodrigues(torch.cat([checked[2], checked[1]], 1).reshape(B, J, 3))
        return betas, rot, transl

    def _chain(self, betas: Tensor, rot: Tensor) -> Tuple[Tensor, Tensor]:
        """Untranslated posed joints (B, J, 3) and skinning transforms (B, J, 3, 4)."""
        rest = self.joint_template[None] + torch.einsum("jcs,bs->bjc", self.joint_shapedirs, betas)
        return ops.kinematic_chain(rot, rest, self.parents)

    def joints(self, betas: Tensor, body_pose: Optional[Tensor] = None, global_orient: Optional[Tensor] = None,
               transl: Optional[Tensor] = None, *, rotmat: Optional[Tensor] = None):
        """Posed skeleton joints (B, J, 3) (with ``transl``), rotations (B, J, 3, 3) and the skinning
        transforms (B, J, 3, 4) of the original mesh's skeleton.

        The pose is either axis-angle ``body_pose`` (B, 3 (J - 1)) and ``global_orient`` (B, 3), or
        ``rotmat`` (B, J, 3, 3): the relative rotation matrices of every joint, global orientation
        first (like ``smplfast.SMPL(..., pose2rot=False)``).  Rotation matrices are used as given (no
        conversion to axis-angle), so gradients flow to them directly and stay finite at any angle,
        π included; they are not checked to be rotations.  The returned rotations are then ``rotmat``."""
        betas, rot, transl = self._rotations("UVGrid.joints", betas, body_pose, global_orient, transl, rotmat)
        posed, transforms = self._chain(betas, rot)
        return posed + transl[:, None], rot, transforms

    def forward(self, betas: Tensor, body_pose: Optional[Tensor] = None, global_orient: Optional[Tensor] = None,
                transl: Optional[Tensor] = None, *, rotmat: Optional[Tensor] = None) -> Tensor:
        """The posed grid (B, P, R, R, 3): every grid point blended and skinned like a mesh vertex.

        Pose by axis-angle ``body_pose``/``global_orient`` or by rotation matrices ``rotmat``
        (B, J, 3, 3), global orientation first, as :meth:`joints`."""
        betas, rot, transl = self._rotations("UVGrid.forward", betas, body_pose, global_orient, transl, rotmat)
        B, M, S = betas.shape[0], self.num_grid_points, self.num_betas
        _, transforms = self._chain(betas, rot)
        v = torch.addmm(self.template.reshape(1, M * 3), betas, self.shapedirs.reshape(M * 3, S).T)
        if self.posedirs is not None:
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            feat = (rot[:, 1:] - eye).reshape(B, -1)
            v = v + feat @ self.posedirs.reshape(M * 3, -1).T
        out = ops.sparse_lbs(transforms, v.view(B, M, 3), self._lbs_idx, self._lbs_w, transl.expand(B, 3))
        R = self.resolution
        return out.view(B, self.num_parts, R, R, 3)

    pose = forward

    def surface_points(self, posed_grid: Tensor, part: Tensor, uv: Tensor,
                       batch_index: Optional[Tensor] = None) -> Tensor:
        """3D points (N, 3) at DensePose coordinates: part (N,) 1..24, uv (N, 2) in [0, 1], in the
        posed grids ``posed_grid`` (B, P, R, R, 3) (from :meth:`forward`), sample ``batch_index[n]``
        for point n (None: every point in sample 0, which needs B = 1).  Bilinear (``uv_lookup``)
        over the valid cells; differentiable w.r.t. the posed grid (so the body parameters) and uv."""
        if posed_grid.dim() != 5 or posed_grid.shape[1:] != (self.num_parts, self.resolution, self.resolution, 3):
            R = self.resolution
            raise ValueError(f"UVGrid.surface_points: posed_grid must be (B, {self.num_parts}, {R}, {R}, 3); "
                             f"got {tuple(posed_grid.shape)}")
        check_part_uv("UVGrid.surface_points", part, uv)
        if batch_index is None and posed_grid.shape[0] != 1:
            raise ValueError(f"UVGrid.surface_points: batch_index (N,) is needed for {posed_grid.shape[0]} posed grids")
        return _uv_lookup(posed_grid, part.long() - 1, uv.to(posed_grid.dtype), batch_index, self.valid)

    def lookup_points(self, part: Tensor, uv: Tensor) -> GridPoints:
        """Rest-space data of surface points (template, shapedirs, skinning weights, posedirs), one
        lookup per point; :func:`skin_points` then poses them for any parameters."""
        check_part_uv("UVGrid.lookup_points", part, uv)
        S, J = self.num_betas, self.num_joints
        d = _uv_lookup(self.point_data, part.long() - 1, uv.to(self.point_data.dtype), None, self.valid)
        N = d.shape[0]
        template = d[:, :3]
        shapedirs = d[:, 3:3 + 3 * S].reshape(N, 3, S)
        weights = d[:, 3 + 3 * S:3 + 3 * S + J]
        posedirs = d[:, 3 + 3 * S + J:].reshape(N, 3, -1) if self.posedirs is not None else None
        return GridPoints(template, shapedirs, weights, posedirs)


def skin_points(points: GridPoints, rot: Tensor, transforms: Tensor, betas: Tensor, transl: Optional[Tensor],
                point_index: Optional[Tensor] = None) -> Tensor:
    """Pose looked-up surface points with linear blend skinning.

    points: :class:`GridPoints` with N points; rot (B, J, 3, 3) and transforms (B, J, 3, 4) from the
    kinematic chain; betas (B, S); transl (B, 3) or None.  Without ``point_index`` every sample poses
    all N points: (B, N, 3).  With ``point_index`` (B, M) long the sample b poses points
    ``point_index[b]``: (B, M, 3) (per-sample point sets, padded).
    """
    B = betas.shape[0]
    if point_index is None:
        t, sd, w = points.template[None], points.shapedirs[None], points.weights[None]
        pd = None if points.posedirs is None else points.posedirs[None]
    else:
        t, sd, w = points.template[point_index], points.shapedirs[point_index], points.weights[point_index]
        pd = None if points.posedirs is None else points.posedirs[point_index]
    v = t + torch.einsum("bncs,bs->bnc", sd.expand(B, *sd.shape[1:]), betas)
    if pd is not None:
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        feat = (rot[:, 1:] - eye).reshape(B, -1)
        v = v + torch.einsum("bncf,bf->bnc", pd.expand(B, *pd.shape[1:]), feat)
    M = torch.einsum("bnj,bjcd->bncd", w.expand(B, *w.shape[1:]), transforms)  # blended 3x4 per point
    x = (M[..., :3] @ v.unsqueeze(-1))[..., 0] + M[..., 3]
    return x if transl is None else x + transl[:, None]


def grid_accuracy(grid: UVGrid, smpl: SMPL, charts: SurfaceCharts, betas: Tensor, body_pose: Optional[Tensor] = None,
                  global_orient: Optional[Tensor] = None, num_points: int = 20000, seed: int = 0, *,
                  rotmat: Optional[Tensor] = None) -> dict:
    """Distances (metres) between the grid surface and the mesh surface at random chart points.

    For ``num_points`` (part, u, v) drawn uniformly in chart area, the mesh point is the barycentric
    point of the chart triangle containing (u, v) on the mesh posed by ``smpl``; the grid point is the
    bilinear lookup in the posed grid.  Returns ``dict(error (B, n), part (n,), uv (n, 2),
    border_distance (n,))`` where ``border_distance`` is the distance, in grid cells, from the point to
    the nearest grid cell outside its chart (small values: near the chart's border or a seam).
    The bodies are posed by axis-angle ``body_pose``/``global_orient`` or by rotation matrices
    ``rotmat`` (B, J, 3, 3) (global orientation first), as :meth:`UVGrid.forward`.
    """
    tri = ChartTriangles(charts, device=grid.template.device)
    part, uv, _, _ = sample_chart_points(charts, num_points, torch.Generator().manual_seed(seed))
    face, bary = tri.locate(part, uv)
    B = betas.shape[0]
    with torch.no_grad():
        posed = grid(betas, body_pose, global_orient, rotmat=rotmat)
        if rotmat is None:
            verts = smpl(betas=betas, body_pose=body_pose, global_orient=global_orient).vertices
        else:
            verts = smpl(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False).vertices
        gt = tri.interpolate(verts, face, bary.to(verts.dtype))
        bi = torch.arange(B, device=posed.device).repeat_interleave(num_points)
        pts = grid.surface_points(posed, part.repeat(B).to(posed.device), uv.repeat(B, 1).to(posed.device), bi)
    err = (pts.view(B, num_points, 3) - gt).norm(dim=-1)
    from scipy.ndimage import distance_transform_edt

    R = grid.resolution
    dist = np.stack([distance_transform_edt(m) for m in grid.inside.cpu().numpy()])  # cells to the outside
    col = (uv[:, 0] * (R - 1)).round().long().clamp(0, R - 1)
    row = (uv[:, 1] * (R - 1)).round().long().clamp(0, R - 1)
    border = torch.as_tensor(dist)[part - 1, row, col]
    return dict(error=err.cpu(), part=part, uv=uv, border_distance=border)
