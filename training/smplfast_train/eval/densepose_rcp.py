"""DensePose "ratio of correct points" (RCP) with geodesic distances on the rest-pose template
(TRAINING_SPEC §1.7, HoloPose Table 1 / Fig. 5, §8 H8).

A DensePose correspondence names a point of the body surface: (part I, chart coordinates U, V). Its
error against the ground truth is the **geodesic** distance between the two surface points on the
template in its rest pose (so the error does not depend on the pose, and two points on either side
of a gap, such as the inner thighs, are far apart). From per-point errors ``e``:

* ``RCP(t)`` = fraction of points with ``e < t`` (a point with no prediction, e.g. a pixel the
  predicted mesh does not cover, has ``e = inf``);
* ``AUC_a`` = ``(1/a) ∫_0^a RCP(t) dt`` for ``a`` = 10 and 30 cm. For the step curve of a finite
  point set the integral is exact: ``AUC_a = mean_i max(0, 1 - e_i / a)`` (:func:`rcp_auc`);
* ``FR10`` = the *failure rate* at 10 cm, % of points with ``e >= 10 cm`` = ``100 (1 - RCP(10 cm))``
  (HoloPose's FR10: lower is better; its Table 3 prints 51.1 for the unrefined model, its Table 1
  32.0 for the DensePose branch). ``rcp10`` = ``RCP(10 cm)`` is reported next to it.

**Geodesic table** (:class:`GeodesicTable`). Dijkstra (``scipy.sparse.csgraph.dijkstra``) on a graph
of the template mesh, from ``L`` landmark vertices chosen by geodesic farthest-point sampling (each
landmark is the vertex farthest, along the graph, from those already chosen; the Dijkstra row that
picks the next landmark is the one the table keeps, so sampling costs nothing extra). The table
``D`` (V, L) holds the graph distance from every vertex to every landmark. It is cached on disk
(default ``~/.cache/smplfast/geodesics``) under a name that holds the mesh checksum (sha256 of the
float64 rest vertices and the faces), the graph kind and ``L``; a cache file whose stored checksum
does not match is rebuilt, never used.

*Graph.* ``graph="edges"`` is the mesh's edge graph. Shortest paths along edges zig-zag and
over-estimate surface geodesics; on the bundled template the edge-graph distance of vertex pairs
2-20 cm apart is >= 7-8 % above their straight-line distance for 90 % of the pairs (a lower bound of
the metrication error). ``graph="unfolded"`` (default) adds, for every interior edge, the segment
between the two vertices opposite it, with its length in the plane of the two triangles unfolded
about the edge (a true surface path across the edge when it crosses the edge inside the segment;
pairs where it would not are left out). That halves the over-estimate (>= 3-4 % at the 10th
percentile). Both graphs give upper bounds of the surface geodesic.

*Between two surface points* p and q (a mesh face and barycentric weights each), the landmark
distance of a point is the barycentric blend of its face vertices' rows, ``D[p] = Σ_k b_k D[v_k]``.
By the triangle inequality, for every landmark l, ``|D[p,l] - D[q,l]| <= d(p,q) <= D[p,l] + D[q,l]``.
The estimate is the tightest lower bound, ``max(max_l |D[p,l] - D[q,l]|, ||p - q||)`` (the straight
line on the template is a lower bound too), kept below the tightest upper bound
``min_l D[p,l] + D[q,l]``; :meth:`GeodesicTable.distance` can return the bracket. The lower bound is
exact when a landmark lies on the extension of the shortest path beyond p or q, so it tightens as L
grows. Measured on the bundled template (unfolded graph) against exact Dijkstra on the same graph
(20,000 vertex pairs closer than 30 cm, the range that matters for AUC30 and FR10; mean / 95th
percentile of the absolute error): L = 256: 2.8 / 13.5 mm; 512: 1.8 / 8.5 mm; 1024: 1.0 / 5.4 mm;
2048 (default): 0.65 / 3.7 mm; 4096: 0.25 / 1.6 mm. The estimate errs low (for vertices it is a lower
bound of the graph distance). Snapping a point to its nearest landmark instead (that landmark's
exact distance to the other point) is several times worse at equal L (edge graph, 2048 landmarks by
Euclidean farthest-point sampling: 6.7 mm mean, 14.5 mm p95 on pairs under 30 cm).
``python_tests/test_train_densepose_rcp.py`` checks the bracket and the estimate against exact Dijkstra
on small meshes, and points inside faces against straight lines on a flat mesh. Building the default
table takes 3-7 s on one core; it takes 2048 x 12,411 x 2 bytes = 51 MB on disk (distances quantised
to 0.05 mm) and twice that in memory (float32).

**Surface points** (:class:`SurfacePoints`): from DensePose (I, U, V) through the chart triangles
(:func:`surface_points_from_iuv`), or from a rasterised mesh (face id and barycentrics at a pixel,
:func:`surface_points_from_raster`; background pixels are invalid, i.e. infinite error).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "RCP_THRESHOLDS_M",
    "SurfacePoints",
    "GeodesicTable",
    "mesh_checksum",
    "mesh_graph",
    "default_template",
    "default_cache_dir",
    "surface_points_from_iuv",
    "surface_points_from_raster",
    "point_errors",
    "rcp_curve",
    "rcp_auc",
    "failure_rate",
    "rcp_summary",
    "per_sample_rcp",
]

#: Thresholds of the RCP curve: 0 to 30 cm in 1 mm steps (metres).
RCP_THRESHOLDS_M = np.round(np.linspace(0.0, 0.30, 301), 6)
_QUANT = 5e-5          # cache quantisation step of the distances (m): 0.05 mm
_CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------- mesh
def mesh_checksum(vertices, faces) -> str:
    """sha256 (hex) of the float64 vertices (V, 3) and the int64 faces (F, 3)."""
    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64))
    f = np.ascontiguousarray(np.asarray(faces, dtype=np.int64))
    h = hashlib.sha256()
    h.update(np.asarray(v.shape, np.int64).tobytes())
    h.update(v.tobytes())
    h.update(np.asarray(f.shape, np.int64).tobytes())
    h.update(f.tobytes())
    return h.hexdigest()


def _unique_edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def _unfolded_diagonals(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For every edge shared by exactly two faces, the pair of opposite vertices and their distance
    in the plane of the two triangles unfolded about the edge, kept only where that straight segment
    crosses the shared edge strictly inside it (then it is a path on the surface)."""
    a = faces[:, [0, 1, 2]].reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    c = faces[:, [2, 0, 1]].reshape(-1)          # vertex opposite the edge (a, b) in its face
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo.astype(np.int64) * (int(vertices.shape[0]) + 1) + hi
    order = np.argsort(key, kind="stable")
    ks = key[order]
    _, start, count = np.unique(ks, return_index=True, return_counts=True)
    two = start[count == 2]
    i1, i2 = order[two], order[two + 1]
    A, B = vertices[lo[i1]], vertices[hi[i1]]
    C, D = vertices[c[i1]], vertices[c[i2]]
    L = np.linalg.norm(B - A, axis=1)
    ok = L > 1e-12
    u = (B - A) / np.where(ok, L, 1.0)[:, None]
    cx = ((C - A) * u).sum(1)
    cy = np.linalg.norm(C - A - cx[:, None] * u, axis=1)
    dx = ((D - A) * u).sum(1)
    dy = -np.linalg.norm(D - A - dx[:, None] * u, axis=1)
    den = cy - dy
    ok &= den > 1e-12
    t = cy / np.where(ok, den, 1.0)
    x = cx + t * (dx - cx)
    ok &= (x > 0) & (x < L) & (c[i1] != c[i2])
    pairs = np.stack([c[i1][ok], c[i2][ok]], 1)
    length = np.hypot(cx - dx, cy - dy)[ok]
    return pairs, length


def mesh_graph(vertices, faces, graph: str = "unfolded"):
    """Symmetric sparse (V, V) graph of the mesh for Dijkstra: ``"edges"`` (edge lengths) or
    ``"unfolded"`` (edges plus the unfolded across-edge diagonals; module docstring)."""
    from scipy.sparse import coo_matrix

    if graph not in ("edges", "unfolded"):
        raise ValueError(f"graph must be 'edges' or 'unfolded'; got {graph!r}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3) and faces (F, 3); got {v.shape} and {f.shape}")
    e = _unique_edges(f)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    if graph == "unfolded":
        pairs, length = _unfolded_diagonals(v, f)
        e = np.concatenate([e, pairs])
        w = np.concatenate([w, length])
    n = v.shape[0]
    # Zero-length edges would vanish from a sparse matrix; keep them as a tiny positive length.
    w = np.maximum(w, 1e-12)
    g = coo_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)).tocsr()
    g.sum_duplicates()
    return g


def default_template() -> Tuple[np.ndarray, np.ndarray]:
    """The bundled (neutral) model's rest vertices (V, 3) float64 and faces (F, 3) int64."""
    import smplfast

    m = smplfast.SMPL(create_betas=False, create_global_orient=False, create_body_pose=False,
                      create_transl=False)
    return m.v_template.detach().double().cpu().numpy(), np.asarray(m.faces, dtype=np.int64)


def default_cache_dir() -> Path:
    """``$SMPLFAST_CACHE/geodesics``, else ``$XDG_CACHE_HOME/smplfast/geodesics``, else
    ``~/.cache/smplfast/geodesics``."""
    root = os.environ.get("SMPLFAST_CACHE")
    if root:
        return Path(root) / "geodesics"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "smplfast" / "geodesics"


# ------------------------------------------------------------------------------------ surface points
@dataclass
class SurfacePoints:
    """N points on the template surface: the three mesh vertices ``vid`` (N, 3) int64 of a face and
    barycentric weights ``bary`` (N, 3) (rows sum to 1); ``valid`` (N,) bool, False for a missing
    point (its error is infinite)."""

    vid: Tensor
    bary: Tensor
    valid: Tensor

    def __post_init__(self):
        self.vid = torch.as_tensor(self.vid, dtype=torch.long)
        self.bary = torch.as_tensor(self.bary, dtype=torch.float64)
        self.valid = torch.as_tensor(self.valid, dtype=torch.bool)
        n = self.vid.shape[0]
        if self.vid.shape != (n, 3) or self.bary.shape != (n, 3) or self.valid.shape != (n,):
            raise ValueError(f"SurfacePoints: vid (N, 3), bary (N, 3), valid (N,); got {tuple(self.vid.shape)}, "
                             f"{tuple(self.bary.shape)}, {tuple(self.valid.shape)}")

    def __len__(self) -> int:
        return int(self.vid.shape[0])

    @classmethod
    def from_vertices(cls, vid) -> "SurfacePoints":
        """Points sitting exactly on mesh vertices ``vid`` (N,)."""
        v = torch.as_tensor(vid, dtype=torch.long).reshape(-1)
        bary = torch.zeros(v.shape[0], 3, dtype=torch.float64)
        bary[:, 0] = 1
        return cls(v[:, None].repeat(1, 3), bary, torch.ones(v.shape[0], dtype=torch.bool))

    def index(self, idx) -> "SurfacePoints":
        return SurfacePoints(self.vid[idx], self.bary[idx], self.valid[idx])

    @staticmethod
    def cat(points: Sequence["SurfacePoints"]) -> "SurfacePoints":
        return SurfacePoints(torch.cat([p.vid for p in points]), torch.cat([p.bary for p in points]),
                             torch.cat([p.valid for p in points]))

    def positions(self, vertices) -> Tensor:
        """(N, 3) positions on a mesh ``vertices`` (V, 3) of the same topology (NaN where invalid)."""
        v = torch.as_tensor(vertices, dtype=torch.float64)
        x = (v[self.vid] * self.bary[..., None]).sum(1)
        return torch.where(self.valid[:, None], x, torch.full_like(x, float("nan")))


def surface_points_from_iuv(part, uv, triangles) -> SurfacePoints:
    """Surface points of DensePose correspondences: ``part`` (N,) 1..24, ``uv`` (N, 2) in [0, 1],
    located in ``triangles`` (a :class:`smplfast.surface.ChartTriangles`). A (part, u, v) outside its
    chart snaps to the least-outside chart triangle (barycentrics clamped to the triangle)."""
    part = torch.as_tensor(part, dtype=torch.long).reshape(-1)
    uv = torch.as_tensor(uv, dtype=torch.float64).reshape(-1, 2).clamp(0, 1)
    face, bary = triangles.locate(part, uv, nearest=True)
    bary = bary.double().clamp_min(0)
    bary = bary / bary.sum(1, keepdim=True).clamp_min(1e-12)
    valid = face >= 0
    vid = triangles.face_mesh_vertices[face.clamp_min(0)].cpu()
    return SurfacePoints(vid, bary.cpu(), valid.cpu())


def surface_points_from_raster(face_index, bary, faces) -> SurfacePoints:
    """Surface points of rasterised pixels: ``face_index`` (N,) (-1 = background: invalid),
    ``bary`` (N, 3) of that face's vertices, ``faces`` (F, 3) the mesh faces."""
    fi = torch.as_tensor(face_index, dtype=torch.long).reshape(-1)
    b = torch.as_tensor(bary, dtype=torch.float64).reshape(-1, 3)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    valid = fi >= 0
    vid = f[fi.clamp_min(0)]
    b = torch.where(valid[:, None], b, torch.full_like(b, 1.0 / 3))
    return SurfacePoints(vid, b, valid)


# ----------------------------------------------------------------------------------------- the table
class GeodesicTable:
    """Graph geodesic distances from ``L`` landmark vertices to every vertex of a mesh, and the
    landmark estimate of the distance between any two surface points (module docstring).

    ``dist`` (V, L) float32 metres; ``landmarks`` (L,) vertex ids (``dist[landmarks[i], i] = 0``);
    ``vertices`` (V, 3) float64, ``faces`` (F, 3); ``graph`` the graph kind; ``checksum`` the mesh's.
    """

    def __init__(self, vertices, faces, landmarks, dist, graph: str = "unfolded") -> None:
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        self.landmarks = np.asarray(landmarks, dtype=np.int64)
        d = np.asarray(dist, dtype=np.float32)
        V, L = self.vertices.shape[0], self.landmarks.shape[0]
        if d.shape != (V, L):
            raise ValueError(f"dist must be (V, L) = ({V}, {L}); got {d.shape}")
        if not np.isfinite(d).all():
            raise ValueError("the mesh graph is disconnected: some vertices are unreachable from a landmark")
        self.graph = graph
        self.checksum = mesh_checksum(self.vertices, self.faces)
        self.dist = torch.from_numpy(np.ascontiguousarray(d))
        self._verts_t = torch.from_numpy(self.vertices)

    @property
    def num_landmarks(self) -> int:
        return int(self.landmarks.shape[0])

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, vertices, faces, num_landmarks: int = 2048, graph: str = "unfolded",
              start_vertex: int = 0) -> "GeodesicTable":
        """Geodesic farthest-point sampling of ``num_landmarks`` landmarks from ``start_vertex``, with
        one single-source Dijkstra per landmark (``scipy.sparse.csgraph.dijkstra``)."""
        from scipy.sparse.csgraph import dijkstra

        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces, dtype=np.int64)
        V = v.shape[0]
        L = int(num_landmarks)
        if not 1 <= L <= V:
            raise ValueError(f"num_landmarks must be in 1..{V} (the vertex count); got {num_landmarks}")
        g = mesh_graph(v, f, graph)
        land = np.empty(L, dtype=np.int64)
        rows = np.empty((V, L), dtype=np.float32)
        nearest = np.full(V, np.inf)
        cur = int(start_vertex)
        for i in range(L):
            d = dijkstra(g, directed=False, indices=cur)
            if i == 0 and not np.isfinite(d).all():
                raise ValueError("the mesh graph is disconnected: geodesic distances are undefined between parts")
            land[i] = cur
            rows[:, i] = d
            nearest = np.minimum(nearest, d)
            nearest[land[:i + 1]] = -1.0
            cur = int(np.argmax(nearest))
        return cls(v, f, land, rows, graph)

    @classmethod
    def cached(cls, vertices=None, faces=None, num_landmarks: int = 2048, graph: str = "unfolded",
               cache_dir: Optional[Union[str, os.PathLike]] = None, verbose: bool = False) -> "GeodesicTable":
        """The table of a mesh (default: the bundled template, :func:`default_template`), loaded from
        ``cache_dir`` (default :func:`default_cache_dir`) when a file with the same mesh checksum,
        graph and landmark count is there, else built and saved (atomically)."""
        if vertices is None or faces is None:
            if vertices is not None or faces is not None:
                raise ValueError("give both vertices and faces, or neither (the bundled template)")
            vertices, faces = default_template()
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces, dtype=np.int64)
        ck = mesh_checksum(v, f)
        d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = d / f"geodesic_{ck[:16]}_{graph}_L{int(num_landmarks)}.npz"
        if path.is_file():
            try:
                t = cls.load(path, expected_checksum=ck)
                if t.graph == graph and t.num_landmarks == int(num_landmarks):
                    return t
            except (ValueError, OSError, KeyError):
                pass  # a stale or damaged cache file is rebuilt below
        t0 = time.perf_counter()
        t = cls.build(v, f, num_landmarks, graph)
        if verbose:
            print(f"geodesic table: {num_landmarks} landmarks, {graph} graph, built in "
                  f"{time.perf_counter() - t0:.1f} s -> {path}")
        t.save(path)
        return t

    def save(self, path) -> None:
        """npz with the mesh, landmarks, checksum and the distances quantised to 0.05 mm (uint16;
        float32 when a distance exceeds the uint16 range)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = self.dist.numpy()
        if float(d.max()) / _QUANT < 65535:
            q = np.round(d / _QUANT).astype(np.uint16)
            dist_kw = dict(dist_q=q, quant=np.float64(_QUANT))
        else:
            dist_kw = dict(dist=d)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, version=np.int64(_CACHE_VERSION), checksum=np.str_(self.checksum), graph=np.str_(self.graph),
                 vertices=self.vertices, faces=self.faces, landmarks=self.landmarks, **dist_kw)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path, expected_checksum: Optional[str] = None) -> "GeodesicTable":
        """Load a saved table; ``expected_checksum`` (a mesh's :func:`mesh_checksum`) must match the
        stored one and the stored mesh (ValueError otherwise)."""
        with np.load(path) as z:
            if int(z["version"]) != _CACHE_VERSION:
                raise ValueError(f"{path}: cache version {int(z['version'])}, expected {_CACHE_VERSION}")
            ck = str(z["checksum"])
            if expected_checksum is not None and ck != expected_checksum:
                raise ValueError(f"{path}: mesh checksum {ck[:16]}... does not match {expected_checksum[:16]}...")
            dist = z["dist_q"].astype(np.float32) * np.float32(z["quant"]) if "dist_q" in z else z["dist"]
            t = cls(z["vertices"], z["faces"], z["landmarks"], dist, str(z["graph"]))
        if t.checksum != ck:
            raise ValueError(f"{path}: the stored mesh does not match its stored checksum")
        return t

    # ------------------------------------------------------------------------------------ queries
    def point_rows(self, points: SurfacePoints) -> Tensor:
        """(N, L) landmark distances of surface points: barycentric blends of their vertices' rows."""
        return torch.einsum("nk,nkl->nl", points.bary.to(torch.float32), self.dist[points.vid])

    def distance(self, a: SurfacePoints, b: SurfacePoints, return_bounds: bool = False,
                 chunk: int = 4096):
        """Estimated geodesic distance (N,) float64 metres between paired points ``a[i]``, ``b[i]``
        (inf where either is invalid). With ``return_bounds`` also the (lower, upper) landmark
        bracket."""
        if len(a) != len(b):
            raise ValueError(f"a and b must pair points: {len(a)} and {len(b)}")
        N = len(a)
        est = torch.empty(N, dtype=torch.float64)
        lo_all = torch.empty(N, dtype=torch.float64)
        up_all = torch.empty(N, dtype=torch.float64)
        for s in range(0, N, chunk):
            sl = slice(s, min(N, s + chunk))
            pa, pb = a.index(sl), b.index(sl)
            ra, rb = self.point_rows(pa), self.point_rows(pb)
            lo = (ra - rb).abs().amax(1).double()
            up = (ra + rb).amin(1).double()
            eu = (pa.positions(self._verts_t) - pb.positions(self._verts_t)).norm(dim=1)
            # (float32 rows can put the lower bound a rounding error above the upper one)
            lo = torch.minimum(torch.maximum(lo, torch.nan_to_num(eu, nan=0.0)), up)
            e = lo
            bad = ~(pa.valid & pb.valid)
            inf = torch.full_like(e, float("inf"))
            est[sl] = torch.where(bad, inf, e)
            lo_all[sl] = torch.where(bad, inf, lo)
            up_all[sl] = torch.where(bad, inf, up)
        if return_bounds:
            return est, lo_all, up_all
        return est

    def vertex_distance(self, i, j, return_bounds: bool = False):
        """Estimated geodesic distance between vertex pairs ``i[k]``, ``j[k]``."""
        return self.distance(SurfacePoints.from_vertices(i), SurfacePoints.from_vertices(j), return_bounds)

    def euclidean(self, a: SurfacePoints, b: SurfacePoints) -> Tensor:
        """Straight-line distance (N,) on the rest template (``rcp_euclid``'s cross-check; inf where
        either point is invalid)."""
        d = (a.positions(self._verts_t) - b.positions(self._verts_t)).norm(dim=1)
        return torch.where(a.valid & b.valid, d, torch.full_like(d, float("inf")))


# ----------------------------------------------------------------------------------------- metrics
def point_errors(table: GeodesicTable, gt: SurfacePoints, pred: SurfacePoints, kind: str = "geodesic") -> Tensor:
    """Per-point error (N,) metres of predicted surface points against the ground truth:
    ``"geodesic"`` (default) or ``"euclid"`` (straight line on the rest template). A missing
    prediction (invalid point) is an infinite error; a missing ground truth gives NaN (drop it)."""
    if kind == "geodesic":
        e = table.distance(gt, pred)
    elif kind == "euclid":
        e = table.euclidean(gt, pred)
    else:
        raise ValueError(f"kind must be 'geodesic' or 'euclid'; got {kind!r}")
    return torch.where(gt.valid, e, torch.full_like(e, float("nan")))


def _errors(errors) -> np.ndarray:
    e = np.asarray(errors.detach().cpu().numpy() if isinstance(errors, Tensor) else errors, dtype=np.float64)
    e = e.reshape(-1)
    e = e[~np.isnan(e)]
    if np.any(e < 0):
        raise ValueError("errors must be >= 0 (NaN entries are ignored, inf is a failed point)")
    return e


def rcp_curve(errors, thresholds=RCP_THRESHOLDS_M) -> np.ndarray:
    """RCP(t): fraction of points with error < t, for each threshold (metres). NaN errors are
    ignored; inf counts as a failure at every threshold. NaN curve for an empty set."""
    e = np.sort(_errors(errors))
    t = np.asarray(thresholds, dtype=np.float64)
    if e.size == 0:
        return np.full(t.shape, np.nan)
    return np.searchsorted(e, t, side="left") / e.size


def rcp_auc(errors, a: float) -> float:
    """``(1/a) ∫_0^a RCP(t) dt`` (``a`` in metres), exact for the step curve:
    ``mean(max(0, 1 - e/a))``. NaN for an empty set."""
    if a <= 0:
        raise ValueError(f"a must be > 0; got {a}")
    e = _errors(errors)
    if e.size == 0:
        return float("nan")
    return float(np.clip(1.0 - e / a, 0.0, 1.0).mean())


def failure_rate(errors, t: float = 0.10) -> float:
    """% of points with error >= t (metres): ``100 (1 - RCP(t))``. NaN for an empty set."""
    e = _errors(errors)
    if e.size == 0:
        return float("nan")
    return float(100.0 * np.mean(e >= t))


def rcp_summary(errors, curve: bool = False) -> Dict[str, object]:
    """``auc10``, ``auc30`` (0-1), ``fr10`` (%), ``rcp10`` (0-1), ``median_cm``, ``n``; with ``curve``
    also ``rcp`` (the curve at :data:`RCP_THRESHOLDS_M`) and ``thresholds_cm``."""
    e = _errors(errors)
    out: Dict[str, object] = {
        "auc10": rcp_auc(e, 0.10), "auc30": rcp_auc(e, 0.30), "fr10": failure_rate(e, 0.10),
        "rcp10": float(np.mean(e < 0.10)) if e.size else float("nan"),
        "median_cm": float(np.median(e) * 100.0) if e.size else float("nan"), "n": int(e.size),
    }
    if curve:
        out["thresholds_cm"] = (RCP_THRESHOLDS_M * 100.0).tolist()
        out["rcp"] = rcp_curve(e).tolist()
    return out


def per_sample_rcp(errors, sample_index, num_samples: int) -> Dict[str, np.ndarray]:
    """Per-sample ``auc10``, ``auc30``, ``fr10`` (num_samples,) arrays from per-point ``errors`` (N,)
    and their ``sample_index`` (N,) (paired statistics over people). A sample without points gets NaN."""
    e = np.asarray(errors.detach().cpu().numpy() if isinstance(errors, Tensor) else errors, dtype=np.float64)
    idx = np.asarray(sample_index, dtype=np.int64).reshape(-1)
    if e.shape != idx.shape:
        raise ValueError(f"errors and sample_index must have the same shape; got {e.shape} and {idx.shape}")
    keep = ~np.isnan(e)
    e, idx = e[keep], idx[keep]
    cnt = np.bincount(idx, minlength=num_samples).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        def mean_of(x):
            return np.bincount(idx, weights=x, minlength=num_samples) / cnt
        return {
            "auc10": mean_of(np.clip(1.0 - e / 0.10, 0.0, 1.0)),
            "auc30": mean_of(np.clip(1.0 - e / 0.30, 0.0, 1.0)),
            "fr10": 100.0 * mean_of((e >= 0.10).astype(np.float64)),
        }
