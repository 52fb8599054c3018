"""DensePose-style surface charts: 24 body parts, each with its own (u, v) ∈ [0, 1]² parameterisation.

A :class:`SurfaceCharts` holds the per-part 2D coordinates of a mesh's vertices
in the layout of DensePose's ``UV_Processed.mat``: a "chart vertex" is a mesh
vertex in one part (a mesh vertex on a seam between parts appears once per
part), and chart faces index chart vertices, so every face lies in one part.

Charts come either from DensePose's own file (:func:`load_densepose_uv`) or
are built for any SMPL-format body in T-pose (y up, metres, facing +z, the
model's left on +x): :func:`densepose_parts_from_weights` splits the surface
into DensePose's 24 parts from the skinning weights, and :func:`flatten_charts`
flattens every part by multi-dimensional scaling of geodesic distances, the
charting HoloPose uses.  :func:`chart_quality` measures flipped triangles and
area distortion, :func:`plot_charts` draws the 24 charts.

scipy is needed to read ``.mat`` files and to compute geodesics; matplotlib to
plot.  Both are imported only by the functions that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .random_model import SMPL_PARENTS

__all__ = [
    "DENSEPOSE_PART_NAMES",
    "NUM_PARTS",
    "SurfaceCharts",
    "load_densepose_uv",
    "densepose_parts_from_weights",
    "face_components",
    "flatten_charts",
    "chart_quality",
    "plot_charts",
]

#: DensePose's 24 surface parts; part id ``i`` (1-based, as in ``dp_I`` and
#: ``All_FaceIndices``) is ``DENSEPOSE_PART_NAMES[i - 1]``.  "Right"/"Left" are
#: the person's own sides.
DENSEPOSE_PART_NAMES: Tuple[str, ...] = (
    "Torso back",
    "Torso front",
    "Right Hand",
    "Left Hand",
    "Left Foot",
    "Right Foot",
    "Upper Leg Right (back)",
    "Upper Leg Left (back)",
    "Upper Leg Right (front)",
    "Upper Leg Left (front)",
    "Lower Leg Right (back)",
    "Lower Leg Left (back)",
    "Lower Leg Right (front)",
    "Lower Leg Left (front)",
    "Upper Arm Left (inside)",
    "Upper Arm Right (inside)",
    "Upper Arm Left (outside)",
    "Upper Arm Right (outside)",
    "Lower Arm Left (inside)",
    "Lower Arm Right (inside)",
    "Lower Arm Left (outside)",
    "Lower Arm Right (outside)",
    "Head Right",
    "Head Left",
)
NUM_PARTS = len(DENSEPOSE_PART_NAMES)

_NPZ_FIELDS = ("vertex_ids", "part_ids", "uv", "faces", "face_part_ids")
_UV_TOL = 1e-6

PathLike = Union[str, Path]


def _np(x: Any, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _require_scipy(what: str):
    try:
        import scipy  # noqa: F401
        import scipy.sparse  # noqa: F401
        import scipy.sparse.csgraph  # noqa: F401
        import scipy.sparse.linalg  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs scipy, which is not installed: pip install scipy") from exc
    return scipy


# ---------------------------------------------------------------------------
# The chart container
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class SurfaceCharts:
    """Per-part (u, v) surface coordinates of a mesh, in DensePose's layout.

    ``C`` chart vertices, ``F`` chart faces::

        vertex_ids     (C,)   int64    mesh vertex of each chart vertex (a seam vertex
                                       appears once per part it belongs to)
        part_ids       (C,)   int64    DensePose part 1..24 of each chart vertex
        uv             (C, 2) float64  (u, v) in [0, 1]² within the part
        faces          (F, 3) int64    chart vertex indices of each face
        face_part_ids  (F,)   int64    part of each face; a face's three chart
                                       vertices belong to its part

    Arrays are converted on construction and checked; bad input raises ``ValueError``.
    """

    vertex_ids: np.ndarray
    part_ids: np.ndarray
    uv: np.ndarray
    faces: np.ndarray
    face_part_ids: np.ndarray

    def __post_init__(self) -> None:
        self.vertex_ids = _np(self.vertex_ids)
        self.part_ids = _np(self.part_ids)
        self.uv = _np(self.uv)
        self.faces = _np(self.faces)
        self.face_part_ids = _np(self.face_part_ids)
        self.validate()

    def validate(self, num_mesh_vertices: Optional[int] = None) -> "SurfaceCharts":
        """Check shapes, dtypes and ranges (and ``vertex_ids < num_mesh_vertices`` when given)."""

        def as_int(name: str, a: np.ndarray) -> np.ndarray:
            if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a))):
                raise ValueError(f"SurfaceCharts.{name} must hold integers, got dtype {a.dtype}")
            if a.dtype.kind == "f" and a.size and np.any(a != np.round(a)):
                raise ValueError(f"SurfaceCharts.{name} must hold integers, got non-integral values")
            return a.astype(np.int64)

        vid, pid, uv, f, fpid = (self.vertex_ids, self.part_ids, self.uv, self.faces, self.face_part_ids)
        if vid.ndim != 1:
            raise ValueError(f"SurfaceCharts.vertex_ids must have shape (C,), got {vid.shape}")
        C = vid.shape[0]
        if pid.shape != (C,):
            raise ValueError(f"SurfaceCharts.part_ids must have shape ({C},), got {pid.shape}")
        if uv.shape != (C, 2):
            raise ValueError(f"SurfaceCharts.uv must have shape ({C}, 2), got {uv.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"SurfaceCharts.faces must have shape (F, 3), got {f.shape}")
        if fpid.shape != (f.shape[0],):
            raise ValueError(f"SurfaceCharts.face_part_ids must have shape ({f.shape[0]},), got {fpid.shape}")
        vid, pid, f, fpid = (as_int(n, a) for n, a in
                             (("vertex_ids", vid), ("part_ids", pid), ("faces", f), ("face_part_ids", fpid)))
        if uv.dtype.kind not in "biuf":
            raise ValueError(f"SurfaceCharts.uv must be numeric, got dtype {uv.dtype}")
        uv = uv.astype(np.float64)
        if C and vid.min() < 0:
            raise ValueError("SurfaceCharts.vertex_ids must be >= 0")
        if num_mesh_vertices is not None and C and vid.max() >= num_mesh_vertices:
            raise ValueError(f"SurfaceCharts.vertex_ids must be < {num_mesh_vertices} (the mesh's "
                             f"vertex count), got {vid.max()}")
        for name, a in (("part_ids", pid), ("face_part_ids", fpid)):
            if a.size and (a.min() < 1 or a.max() > NUM_PARTS):
                raise ValueError(f"SurfaceCharts.{name} must be in 1..{NUM_PARTS}, got {a.min()}..{a.max()}")
        if C and (not np.all(np.isfinite(uv)) or uv.min() < -_UV_TOL or uv.max() > 1 + _UV_TOL):
            raise ValueError(f"SurfaceCharts.uv must be finite and in [0, 1], got {uv.min()}..{uv.max()}")
        if f.size and (f.min() < 0 or f.max() >= C):
            raise ValueError(f"SurfaceCharts.faces must index the {C} chart vertices, got {f.min()}..{f.max()}")
        if f.size:
            bad = np.flatnonzero(np.any(pid[f] != fpid[:, None], axis=1))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"SurfaceCharts: {bad.size} faces have chart vertices of another part; face {i} "
                                 f"(part {fpid[i]}) uses chart vertices of parts {pid[f[i]].tolist()}")
        self.vertex_ids, self.part_ids, self.uv, self.faces, self.face_part_ids = vid, pid, uv, f, fpid
        return self

    # --- sizes and selections ---------------------------------------------------------

    @property
    def num_chart_vertices(self) -> int:
        return int(self.vertex_ids.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def parts(self) -> np.ndarray:
        """Sorted ids of the parts that have at least one face."""
        return np.unique(self.face_part_ids)

    @property
    def num_parts(self) -> int:
        """Number of parts that have at least one face."""
        return int(self.parts.shape[0])

    def part_faces(self, part: int) -> np.ndarray:
        """Indices of the faces of ``part`` (1..24)."""
        return np.flatnonzero(self.face_part_ids == int(part))

    def part_vertices(self, part: int) -> np.ndarray:
        """Indices of the chart vertices of ``part`` (1..24)."""
        return np.flatnonzero(self.part_ids == int(part))

    def charts_per_vertex(self, num_mesh_vertices: Optional[int] = None) -> np.ndarray:
        """For each mesh vertex, the number of distinct parts it appears in."""
        n = int(num_mesh_vertices) if num_mesh_vertices is not None else int(self.vertex_ids.max(initial=-1)) + 1
        pairs = np.unique(np.stack([self.vertex_ids, self.part_ids], axis=1), axis=0)
        return np.bincount(pairs[:, 0], minlength=n)

    # --- storage ----------------------------------------------------------------------

    def to_npz_dict(self, prefix: str = "uv_") -> Dict[str, np.ndarray]:
        """Plain numpy arrays keyed ``{prefix}vertex_ids``, ``{prefix}part_ids``, ``{prefix}uv``,
        ``{prefix}faces``, ``{prefix}face_part_ids``: ready for ``np.savez`` or a model dict."""
        return {prefix + k: np.array(getattr(self, k)) for k in _NPZ_FIELDS}

    @classmethod
    def from_npz_dict(cls, data: Mapping[str, Any], prefix: str = "uv_") -> "SurfaceCharts":
        """Inverse of :meth:`to_npz_dict`; ``data`` may hold other keys too (e.g. a whole model)."""
        missing = [prefix + k for k in _NPZ_FIELDS if prefix + k not in data]
        if missing:
            raise ValueError(f"surface charts: missing keys {missing}")
        return cls(**{k: np.asarray(data[prefix + k]) for k in _NPZ_FIELDS})

    def __repr__(self) -> str:
        return (f"SurfaceCharts(chart_vertices={self.num_chart_vertices}, faces={self.num_faces}, "
                f"parts={self.num_parts}, mesh_vertices={np.unique(self.vertex_ids).size})")


# ---------------------------------------------------------------------------
# DensePose's UV_Processed.mat
# ---------------------------------------------------------------------------


def _mat_array(data: Mapping[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in data:
        raise ValueError(f"{path}: DensePose UV file has no '{key}'")
    a = np.asarray(data[key])
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{path}: '{key}' must be numeric, got dtype {a.dtype}")
    return a


def _mat_vector(data, key, path, length=None) -> np.ndarray:
    a = _mat_array(data, key, path)
    if not (a.ndim == 1 or (a.ndim == 2 and 1 in a.shape)):
        raise ValueError(f"{path}: '{key}' must have shape (N,), (1, N) or (N, 1), got {a.shape}")
    a = a.reshape(-1)
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{path}: '{key}' must have {length} entries, got shape {data[key].shape}")
    return a


def _mat_index(a: np.ndarray, key: str, path: Path, lo: int, hi: int) -> np.ndarray:
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        raise ValueError(f"{path}: '{key}' must hold integers")
    a = a.astype(np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{path}: '{key}' must be in {lo}..{hi}, got {a.min()}..{a.max()}")
    return a


def load_densepose_uv(path: PathLike) -> SurfaceCharts:
    """Read DensePose's ``UV_Processed.mat`` into :class:`SurfaceCharts`.

    The file (from DensePose's ``DensePoseData/get_densepose_uv.sh``) holds a UV
    mesh whose vertices are SMPL vertices split along the part seams:
    ``All_vertices`` (1-based SMPL vertex of each UV vertex), ``All_U_norm`` and
    ``All_V_norm`` (per-part coordinates in [0, 1]), ``All_Faces`` (F, 3) (1-based
    UV vertex ids) and ``All_FaceIndices`` (part 1..24 of each face).  Row or
    column vectors and integer or float storage are accepted; indices become
    0-based.  Every UV vertex must be used by faces of exactly one part, whose
    id becomes the chart vertex's ``part_ids``.  U and V are kept as stored.

    Raises ``FileNotFoundError`` if ``path`` does not exist, ``ValueError`` if a
    key is missing or has the wrong shape, type or range, ``ImportError`` without scipy.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DensePose UV file not found: {path} (expected DensePose's UV_Processed.mat, "
                                f"the per-part UV parameterisation of SMPL)")
    scipy = _require_scipy("load_densepose_uv (reading MATLAB .mat files)")
    import scipy.io  # noqa: F811

    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({type(exc).__name__}: {exc})") from exc

    u = _mat_vector(data, "All_U_norm", path)
    n = u.shape[0]
    v = _mat_vector(data, "All_V_norm", path, n)
    verts = _mat_index(_mat_vector(data, "All_vertices", path, n), "All_vertices", path, 1, np.iinfo(np.int64).max)
    faces = _mat_array(data, "All_Faces", path)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{path}: 'All_Faces' must have shape (F, 3), got {faces.shape}")
    faces = _mat_index(faces, "All_Faces", path, 1, n) - 1
    fpart = _mat_index(_mat_vector(data, "All_FaceIndices", path, faces.shape[0]), "All_FaceIndices",
                       path, 1, NUM_PARTS)
    uv = np.stack([u, v], axis=1).astype(np.float64)
    if not np.all(np.isfinite(uv)) or uv.min() < -_UV_TOL or uv.max() > 1 + _UV_TOL:
        raise ValueError(f"{path}: 'All_U_norm' and 'All_V_norm' must be in [0, 1]")

    lo = np.full(n, NUM_PARTS + 1, dtype=np.int64)
    hi = np.zeros(n, dtype=np.int64)
    fp3 = np.repeat(fpart, 3)
    np.minimum.at(lo, faces.reshape(-1), fp3)
    np.maximum.at(hi, faces.reshape(-1), fp3)
    unused = np.flatnonzero(hi == 0)
    if unused.size:
        raise ValueError(f"{path}: {unused.size} UV vertices are used by no face of 'All_Faces' "
                         f"(1-based ids {(unused[:5] + 1).tolist()}...); every UV vertex needs a part")
    mixed = np.flatnonzero(lo != hi)
    if mixed.size:
        i = int(mixed[0])
        raise ValueError(f"{path}: {mixed.size} UV vertices are used by faces of several parts (e.g. UV vertex "
                         f"{i + 1} by parts {lo[i]} and {hi[i]}); each UV vertex must belong to one part")
    return SurfaceCharts(vertex_ids=verts - 1, part_ids=lo, uv=uv, faces=faces, face_part_ids=fpart)


# ---------------------------------------------------------------------------
# Parts of an SMPL-format body from its skinning weights
# ---------------------------------------------------------------------------

# Coarse regions: (SMPL joints whose skinning weights vote for the region,
# bones (parent, child) whose axis defines the region's sides, side rule,
# part ids (positive side, negative side)).  Child -1 extends the parent's
# incoming bone beyond the (leaf) joint.
_FRONT = np.array([0.0, 0.0, 1.0])
_LEFT = np.array([1.0, 0.0, 0.0])
_INSIDE = np.array([0.0, -1.0, 1.0]) / np.sqrt(2.0)
_REGIONS: Tuple[Tuple[Tuple[int, ...], Tuple[Tuple[int, int], ...], Optional[np.ndarray], Tuple[int, ...]], ...] = (
    ((0, 3, 6, 9, 13, 14),
     ((0, 1), (0, 2), (0, 3), (3, 6), (6, 9), (9, 12), (9, 13), (9, 14), (13, 16), (14, 17)), _FRONT, (2, 1)),
    ((12, 15), ((12, 15), (15, -1)), _LEFT, (24, 23)),
    ((1,), ((1, 4),), _FRONT, (10, 8)),
    ((2,), ((2, 5),), _FRONT, (9, 7)),
    ((4,), ((4, 7),), _FRONT, (14, 12)),
    ((5,), ((5, 8),), _FRONT, (13, 11)),
    ((7, 10), (), None, (5,)),
    ((8, 11), (), None, (6,)),
    ((16,), ((16, 18),), _INSIDE, (15, 17)),
    ((17,), ((17, 19),), _INSIDE, (16, 18)),
    ((18,), ((18, 20),), _INSIDE, (19, 21)),
    ((19,), ((19, 21),), _INSIDE, (20, 22)),
    ((20, 22), (), None, (4,)),
    ((21, 23), (), None, (3,)),
)


def densepose_parts_from_weights(vertices, faces, weights, joints) -> np.ndarray:
    """DensePose part id (1..24) of every face of an SMPL-format body in T-pose.

    ``vertices`` (V, 3) and ``joints`` (24, 3) in SMPL's rest frame (y up, facing
    +z, the model's left on +x), ``faces`` (F, 3), ``weights`` (V, 24) skinning
    weights over SMPL's 24 joints.  Returns (F,) int64.

    1. Each face goes to the coarse region with the largest skinning weight
       summed over its three vertices and over the region's joints:
       torso = pelvis, spine1-3, both collars (the bones from the pelvis to the
       hips and from the collars to the shoulders are the torso's, like
       DensePose's torso, which includes the base of the neck); head = neck,
       head (DensePose's head includes the neck); upper leg = hip; lower leg =
       knee; foot = ankle, foot; upper arm = shoulder; lower arm = elbow;
       hand = wrist, hand.
    2. Regions with two parts are split by the face centroid's offset from the
       nearest bone of the region, perpendicular to that bone: torso and legs
       front (+z) / back; arms "inside" where the offset points along
       (0, -1, 1)/√2 (the lower front half in T-pose: the side that faces
       forward and towards the body when the arms hang with the palms in),
       "outside" otherwise, an approximation of DensePose's split; head Left
       on +x, Right on -x.  Hands and feet are one part each.
    """
    V = _np(vertices, np.float64)
    F = _np(faces).astype(np.int64)
    W = _np(weights, np.float64)
    Jp = _np(joints, np.float64)
    if V.ndim != 2 or V.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {V.shape}")
    if F.ndim != 2 or F.shape[1] != 3 or (F.size and (F.min() < 0 or F.max() >= V.shape[0])):
        raise ValueError(f"faces must have shape (F, 3) and index the {V.shape[0]} vertices")
    if W.shape != (V.shape[0], 24):
        raise ValueError(f"weights must have shape ({V.shape[0]}, 24) (SMPL's 24 joints), got {W.shape}")
    if Jp.shape != (24, 3):
        raise ValueError(f"joints must have shape (24, 3) (SMPL's rest joints), got {Jp.shape}")

    onehot = np.zeros((24, len(_REGIONS)))
    for r, (js, _, _, _) in enumerate(_REGIONS):
        onehot[list(js), r] = 1.0
    region = np.argmax((W @ onehot)[F].sum(axis=1), axis=1)
    centroid = V[F].mean(axis=1)
    part = np.zeros(F.shape[0], dtype=np.int64)
    for r, (_, bones, side, parts) in enumerate(_REGIONS):
        sel = np.flatnonzero(region == r)
        if side is None:
            part[sel] = parts[0]
            continue
        a = np.array([Jp[p] for p, _ in bones])
        b = np.array([Jp[c] if c >= 0 else 2.0 * Jp[p] - Jp[SMPL_PARENTS[p]] for p, c in bones])
        d = b - a
        c = centroid[sel]
        t = np.clip(np.einsum("nbk,bk->nb", c[:, None] - a, d) / np.einsum("bk,bk->b", d, d), 0.0, 1.0)
        offset = c[:, None] - (a + t[..., None] * d)
        nearest = np.argmin(np.einsum("nbk,nbk->nb", offset, offset), axis=1)
        off = offset[np.arange(sel.size), nearest]
        axis = d[nearest] / np.linalg.norm(d[nearest], axis=1, keepdims=True)
        off = off - np.einsum("nk,nk->n", off, axis)[:, None] * axis
        part[sel] = np.where(off @ side > 0, parts[0], parts[1])
    return part


# ---------------------------------------------------------------------------
# Flattening by multi-dimensional scaling of geodesic distances
# ---------------------------------------------------------------------------

# Direction (T-pose frame) along which v increases in each part's chart: up for the
# torso, head and legs, towards the shoulder for arms and hands (up when the arms
# hang down), towards the heel for the feet.
_CHART_UP = {p: (0.0, 1.0, 0.0) for p in (1, 2, 7, 8, 9, 10, 11, 12, 13, 14, 23, 24)}
_CHART_UP.update({p: (-1.0, 0.0, 0.0) for p in (4, 15, 17, 19, 21)})
_CHART_UP.update({p: (1.0, 0.0, 0.0) for p in (3, 16, 18, 20, 22)})
_CHART_UP.update({5: (0.0, 0.0, -1.0), 6: (0.0, 0.0, -1.0)})


def _signed_areas(X: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = X[faces[:, 0]], X[faces[:, 1]], X[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _areas3(P: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = P[faces[:, 0]], P[faces[:, 1]], P[faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def _geodesic_graph(P: np.ndarray, faces: np.ndarray, rings: int = 3, max_angle: float = 45.0):
    """Sparse graph for approximate geodesics: mesh edges plus chords, weighted by 3D length.

    Chords join vertices up to ``rings`` edges apart whose vertex normals differ
    by less than ``max_angle`` degrees.  They give paths in many directions
    (edges alone overestimate distances across a grid's diagonals by up to 41%),
    and the normal test keeps them off strongly curved places, where a chord
    would cut through the body (a chord spanning a normal angle θ is shorter
    than the surface path by about θ²/24, 2.6% at 45°).
    """
    import scipy.sparse as sp

    n = P.shape[0]
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = sp.coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    R, hop = A.copy(), A
    for _ in range(rings - 1):
        hop = hop @ A
        R = R + hop
    S = sp.triu(R + 1e12 * A, k=1).tocoo()
    normal = np.cross(P[faces[:, 1]] - P[faces[:, 0]], P[faces[:, 2]] - P[faces[:, 0]])
    vn = np.zeros_like(P)
    for k in range(3):
        np.add.at(vn, faces[:, k], normal)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-300)
    keep = (S.data >= 1e12) | (np.einsum("ij,ij->i", vn[S.row], vn[S.col]) > np.cos(np.radians(max_angle)))
    r, c = S.row[keep], S.col[keep]
    w = np.maximum(np.linalg.norm(P[r] - P[c], axis=1), 1e-12)
    return sp.csr_matrix((w, (r, c)), shape=(n, n))


def _top2(B: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The two largest eigenpairs of the symmetric matrix ``B`` (values descending)."""
    n = B.shape[0]
    if n <= 32:
        vals, vecs = np.linalg.eigh(B)
        vals, vecs = vals[-2:], vecs[:, -2:]
    else:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        try:
            vals, vecs = eigsh(B, k=2, which="LA", v0=np.cos(np.arange(n) * 0.7) + 1.5)
        except ArpackNoConvergence:  # pragma: no cover - rare; fall back to the dense solver
            vals, vecs = np.linalg.eigh(B)
            vals, vecs = vals[-2:], vecs[:, -2:]
    order = np.argsort(-vals)
    return vals[order], vecs[:, order]


def _double_centre(D2: np.ndarray) -> np.ndarray:
    return -0.5 * (D2 - D2.mean(axis=0) - D2.mean(axis=1)[:, None] + D2.mean())


def _mds(P: np.ndarray, faces: np.ndarray, max_exact: int, landmarks: int) -> np.ndarray:
    """2D classical MDS (or landmark MDS for large patches) of graph-geodesic distances."""
    from scipy.sparse.csgraph import dijkstra

    n = P.shape[0]
    G = _geodesic_graph(P, faces)
    if n <= max_exact:
        D2 = dijkstra(G, directed=False) ** 2
        vals, vecs = _top2(_double_centre(D2))
        return vecs * np.sqrt(np.maximum(vals, 0.0))
    # Landmark MDS: landmarks by farthest point sampling (3D distances), classical MDS on
    # them, every vertex placed from its squared geodesic distances to the landmarks.
    m = min(int(landmarks), n)
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = int(np.argmax(np.linalg.norm(P - P.mean(axis=0), axis=1)))
    dist = np.linalg.norm(P - P[chosen[0]], axis=1)
    for i in range(1, m):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(P - P[chosen[i]], axis=1))
    D2 = dijkstra(G, directed=False, indices=chosen) ** 2  # (m, n)
    DL = D2[:, chosen]
    vals, vecs = _top2(_double_centre(DL))
    pinv = vecs / np.sqrt(np.maximum(vals, 1e-300))
    return -0.5 * (D2 - DL.mean(axis=1)[:, None]).T @ pinv


def _orient(X: np.ndarray, P: np.ndarray, faces: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rotate so v grows along ``up`` in 3D, then mirror u so the triangles turn counter-clockwise."""
    X = X - X.mean(axis=0)
    s = (P - P.mean(axis=0)) @ up
    g = np.linalg.lstsq(X, s, rcond=None)[0]
    if np.linalg.norm(g) > 0:
        g = g / np.linalg.norm(g)
        X = X @ np.array([[g[1], g[0]], [-g[0], g[1]]])  # columns: u = g⊥, v = g
    if _signed_areas(X, faces).sum() < 0:
        X[:, 0] = -X[:, 0]
    return X


def face_components(n: int, faces: np.ndarray) -> List[np.ndarray]:
    """Face index sets of the edge-connected components."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    A = sp.coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(n, n))
    _, label = connected_components(A, directed=False)
    flabel = label[faces[:, 0]]
    return [np.flatnonzero(flabel == k) for k in np.unique(flabel)]


def _flatten_piece(P, faces, up, opts):
    """Flatten one connected piece; returns (2D coordinates, badness, acceptable)."""
    X = _orient(_mds(P, faces, opts["max_exact"], opts["landmarks"]), P, faces, up)
    a2 = _signed_areas(X, faces)
    flipped = int(np.count_nonzero(a2 <= 0.0))
    collapsed = a2.sum() < 0.5 * _areas3(P, faces).sum()
    bad = flipped + (faces.shape[0] if collapsed else 0)
    return X, bad, flipped <= opts["max_flip"] * faces.shape[0] and not collapsed


def _pieces(P, faces):
    """Connected pieces of a patch: (patch vertex ids, piece faces re-indexed, face indices)."""
    for comp in face_components(P.shape[0], faces):
        verts, local = np.unique(faces[comp], return_inverse=True)
        yield verts, local.reshape(-1, 3), comp


def _islands(P, faces, face_ids, up, opts, depth=0):
    """Flatten a patch into islands: (patch vertex ids, island faces, face ids, 2D coordinates).

    Each connected piece is flattened on its own.  A piece whose flattening
    flips more than ``opts["max_flip"]`` of its triangles or loses more than
    half its area (a closed, tube-like or strongly curved piece, which MDS
    folds or squashes) is cut in two by a plane through its centroid, across
    its thinnest or its middle principal direction, whichever flattens better,
    and the halves are treated the same way, ``opts["max_depth"]`` times at most.
    """
    out = []
    for verts, cf, comp in _pieces(P, faces):
        Pc = P[verts]
        X, bad, ok = _flatten_piece(Pc, cf, up, opts)
        if not ok and depth < opts["max_depth"] and cf.shape[0] >= 8:
            cen = Pc[cf].mean(axis=1)
            cen = cen - cen.mean(axis=0)
            axes = np.linalg.eigh(cen.T @ cen)[1]
            best = None
            for normal in (axes[:, 0], axes[:, 1]):
                side = cen @ normal > 0
                if 0 < side.sum() < side.size:
                    score = sum(_flatten_piece(Pc[v], f, up, opts)[1]
                                for half in (side, ~side) for v, f, _ in _pieces(Pc, cf[half]))
                    if best is None or score < best[0]:
                        best = (score, side)
            if best is not None and best[0] < bad:
                for half in (best[1], ~best[1]):
                    sub = _islands(Pc, cf[half], face_ids[comp][half], up, opts, depth + 1)
                    out.extend((verts[v], f, fi, x) for v, f, fi, x in sub)
                continue
        out.append((verts, cf, face_ids[comp], X))
    return out


def _pack(islands: List[np.ndarray], heights: np.ndarray) -> List[np.ndarray]:
    """Lay islands (same metric scale) out in rows, left to right and bottom to top in the
    order of ``heights`` (their mean 3D coordinate along the part's up direction)."""
    if len(islands) == 1:
        return [islands[0] - islands[0].min(axis=0)]
    lo = [x.min(axis=0) for x in islands]
    size = np.array([x.max(axis=0) - l for x, l in zip(islands, lo)])
    gap = 0.05 * float(np.sqrt((size[:, 0] * size[:, 1]).sum() + 1e-30))
    width = max(float(size[:, 0].max()), float(np.sqrt(((size[:, 0] + gap) * (size[:, 1] + gap)).sum())))
    out: List[Optional[np.ndarray]] = [None] * len(islands)
    x = y = row_h = 0.0
    for i in np.argsort(heights, kind="stable"):
        if x > 0 and x + size[i, 0] > width:
            x, y, row_h = 0.0, y + row_h + gap, 0.0
        out[i] = islands[i] - lo[i] + np.array([x, y])
        x += size[i, 0] + gap
        row_h = max(row_h, size[i, 1])
    return out  # type: ignore[return-value]


def _normalise(X: np.ndarray, mode: str) -> np.ndarray:
    X = X - X.min(axis=0)
    ext = X.max(axis=0)
    if mode == "axis":
        X = np.where(ext > 0, X / np.where(ext > 0, ext, 1.0), 0.5)
    else:
        s = float(ext.max())
        X = X / s + (1.0 - ext / s) / 2.0 if s > 0 else np.full_like(X, 0.5)
    return np.clip(X, 0.0, 1.0)


def flatten_charts(
    vertices,
    faces,
    face_part_ids,
    *,
    normalize: str = "axis",
    max_exact: int = 3000,
    landmarks: int = 500,
    max_flip_fraction: float = 0.01,
    max_splits: int = 3,
    up: Optional[Mapping[int, Sequence[float]]] = None,
) -> SurfaceCharts:
    """Flatten every part of a mesh into a (u, v) chart, HoloPose's way.

    ``vertices`` (V, 3), ``faces`` (F, 3), ``face_part_ids`` (F,) in 1..24
    (e.g. from :func:`densepose_parts_from_weights`).  Each part takes its faces
    and their vertices (a vertex shared by several parts gets one chart vertex
    per part, as in DensePose).  The chart faces keep the mesh's face order:
    chart face ``i`` is mesh face ``i``.

    Per part:

    * geodesic distances are approximated by Dijkstra over the mesh edges
      plus chords to the vertices up to three edges away where the surface is
      nearly flat (vertex normals within 45 degrees); classical MDS (top two
      eigenvectors of the double-centred squared distances) gives 2D
      coordinates; pieces with more than ``max_exact`` vertices use landmark
      MDS with ``landmarks`` landmarks picked by farthest point sampling;
    * each connected piece is flattened separately, and a piece whose
      flattening flips more than ``max_flip_fraction`` of its triangles or
      loses half its area (a closed or tube-like piece, e.g. a whole hand) is
      cut in two by a plane through its centroid (across its thinnest or its
      middle principal direction, whichever flattens better), up to
      ``max_splits`` times; the pieces ("islands") keep a common metric scale
      and are laid out in rows, ordered by their height along the part's up
      direction;
    * each island is rotated so that v increases along the part's "up"
      direction (T-pose frame: +y for torso, head and legs; towards the
      shoulder for arms and hands; towards the heel, -z, for feet; ``up`` maps
      part ids to other directions) and mirrored if needed so that its
      triangles run counter-clockwise (for outward-wound faces);
    * ``normalize="axis"`` scales u and v separately to fill [0, 1]² (like
      DensePose's per-part U, V; best use of a per-part grid), ``"uniform"``
      keeps the aspect ratio (one scale, centred), so the chart stays
      isometric up to scale.

    Needs scipy.
    """
    _require_scipy("flatten_charts (geodesic distances)")
    P = _np(vertices, np.float64)
    F = _np(faces).astype(np.int64)
    fp = _np(face_part_ids).astype(np.int64).reshape(-1)
    if P.ndim != 2 or P.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {P.shape}")
    if F.ndim != 2 or F.shape[1] != 3 or (F.size and (F.min() < 0 or F.max() >= P.shape[0])):
        raise ValueError(f"faces must have shape (F, 3) and index the {P.shape[0]} vertices")
    if fp.shape != (F.shape[0],) or (fp.size and (fp.min() < 1 or fp.max() > NUM_PARTS)):
        raise ValueError(f"face_part_ids must have shape ({F.shape[0]},) and values in 1..{NUM_PARTS}")
    if normalize not in ("axis", "uniform"):
        raise ValueError(f"normalize must be 'axis' or 'uniform', got {normalize!r}")
    opts = dict(max_exact=int(max_exact), landmarks=int(landmarks), max_flip=float(max_flip_fraction),
                max_depth=int(max_splits))
    ups = dict(_CHART_UP)
    if up:
        ups.update({int(k): tuple(v) for k, v in up.items()})

    vid, pid, uv = [], [], []
    chart_faces = np.empty_like(F)
    offset = 0
    for p in np.unique(fp):
        fids = np.flatnonzero(fp == p)
        verts, local = np.unique(F[fids], return_inverse=True)
        direction = np.asarray(ups.get(int(p), (0.0, 1.0, 0.0)), dtype=np.float64)
        direction = direction / np.linalg.norm(direction)
        isl = _islands(P[verts], local.reshape(-1, 3), fids, direction, opts)
        heights = np.array([P[verts[v]].mean(axis=0) @ direction for v, *_ in isl])
        coords = _normalise(np.concatenate(_pack([x for *_, x in isl], heights)), normalize)
        for v, f, fi, x in isl:
            chart_faces[fi] = f + offset
            vid.append(verts[v])
            offset += v.size
        pid.append(np.full(coords.shape[0], p, dtype=np.int64))
        uv.append(coords)
    if not vid:
        return SurfaceCharts(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), F[:0], fp[:0])
    return SurfaceCharts(np.concatenate(vid), np.concatenate(pid), np.concatenate(uv), chart_faces, fp)


# ---------------------------------------------------------------------------
# Quality and pictures
# ---------------------------------------------------------------------------


def chart_quality(charts: SurfaceCharts, vertices) -> Dict[int, Dict[str, float]]:
    """Per-part statistics of a chart against the 3D mesh it parameterises.

    Returns ``{part_id: {...}}`` with ``num_faces``, ``num_chart_vertices``,
    ``flipped_fraction`` (faces whose (u, v) triangle is clockwise or
    degenerate), ``area_distortion`` (standard deviation of log(uv area / 3D
    area) over the faces with positive areas; 0 for a map that scales all
    areas equally) and ``uv_coverage`` (total uv area of the part, at most 1
    when the islands do not overlap).
    """
    P = _np(vertices, np.float64)
    charts.validate(P.shape[0])
    P3 = P[charts.vertex_ids]
    stats: Dict[int, Dict[str, float]] = {}
    for p in charts.parts:
        f = charts.faces[charts.part_faces(p)]
        a2 = _signed_areas(charts.uv, f)
        a3 = _areas3(P3, f)
        ok = (a2 > 0) & (a3 > 0)
        ratio = np.log(a2[ok] / a3[ok]) if ok.any() else np.zeros(0)
        stats[int(p)] = dict(
            num_faces=int(f.shape[0]),
            num_chart_vertices=int(charts.part_vertices(p).size),
            flipped_fraction=float(np.mean(a2 <= 0.0)),
            area_distortion=float(ratio.std()) if ratio.size else float("nan"),
            uv_coverage=float(np.abs(a2).sum()),
        )
    return stats


def plot_charts(charts: SurfaceCharts, path: PathLike, *, dpi: int = 120) -> Path:
    """Draw the 24 charts' triangles in (u, v) on a 4 x 6 grid, coloured by part; save to ``path``.

    Needs matplotlib (imported here, without pyplot, so no display is used).
    Returns the path written.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.collections import PolyCollection
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_charts needs matplotlib: pip install matplotlib") from exc
    cmap = colormaps["hsv"]
    fig = Figure(figsize=(13, 9), constrained_layout=True)
    axes = fig.subplots(4, 6)
    for p, ax in enumerate(axes.ravel(), start=1):
        f = charts.faces[charts.part_faces(p)]
        color = cmap((p - 1) / NUM_PARTS)
        if f.size:
            ax.add_collection(PolyCollection(charts.uv[f], facecolors=[color], edgecolors="k",
                                             linewidths=0.1, alpha=0.85))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{p}: {DENSEPOSE_PART_NAMES[p - 1]}" + ("" if f.size else " (empty)"), fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
