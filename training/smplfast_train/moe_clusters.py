"""Range-of-motion cluster centres for HoloPose's mixture-of-experts rotation prior (TRAINING_SPEC §4.3).

HoloPose clusters Euler angles of recorded joint-limit motions per joint and regresses each joint's
angles as a convex combination of the cluster centres. The analogue here is a *range-of-motion set*
of body poses for the 23 SMPL body joints (the global orientation is not clustered):

* ``uniform``: swing-twist components uniform in :data:`smplfast.body.samplers.POSE_LIMITS_DEG`
  (each joint independently), converted with ``swing_twist_to_axis_angle``;
* ``families``: :func:`smplfast.body.samplers.sample_poses` over every pose family, with a seed of
  its own (1000 by default; the data splits use other seeds);

half and half, 100k poses by default.

**Euler order per joint.** Convex combinations are taken in Euler space, so each joint gets the
intrinsic Tait–Bryan order (:data:`ORDER_TABLE`) that keeps its data farthest from gimbal lock: the
smallest ``max |middle angle|`` over the whole set, among the orders that pass the wrap-around check
(:func:`wrap_check`: every component's values lie on one arc of (−π, π] that does not contain ±π,
with an empty arc of at least ``margin_deg`` around ±π that is the largest gap between values). A
joint for which no order passes keeps the order with the smallest middle angle and gets
``wrap_ok = False``; the MoE head then regresses it by 6D votes instead (heads/moe.py).

**Clusters.** scikit-learn ``KMeans(n_clusters=K, n_init=4, random_state=0)`` per joint, on the
joint's Euler angles (radians) in its order, optionally on a fixed random subsample of the set
(``fit_samples``; the order check always uses the whole set).

File ``moe_clusters_K{K}.npz`` (written by ``training/experiments/build_moe_clusters.py``):

==================  ============  ===================================================================
key                 shape         meaning
==================  ============  ===================================================================
``centers``         (23, K, 3)    float64 Euler angles (radians) per body joint 1..23, in ``orders``
``orders``          (23,)         order strings, e.g. ``"ZXY"``: ``R = R_z(a0) @ R_x(a1) @ R_y(a2)``
``order_index``     (23,)         int index of each order in :data:`ORDER_TABLE`
``wrap_ok``         (23,)         bool: the joint passed the wrap-around check
``max_middle_deg``  (23, 6)       max |middle angle| (degrees) of every order, ORDER_TABLE columns
``order_wrap_ok``   (23, 6)       wrap-around check of every order
``euler_min``       (23, 3)       per-component minimum of the whole set in the chosen order
``euler_max``       (23, 3)       per-component maximum
``joint_names``     (23,)         SMPL body joint names
``inertia``         (23,)         KMeans inertia per joint (on the fitted samples)
provenance          scalars       ``K``, ``n_poses``, ``n_uniform``, ``n_families``, ``family_seed``,
                                  ``uniform_seed``, ``fit_samples``, ``fit_seed``, ``n_init``,
                                  ``random_state``, ``margin_deg``, ``sklearn_version``,
                                  ``torch_version``, ``families``, ``format_version``
==================  ============  ===================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from smplfast.body.random_model import SMPL_JOINT_NAMES

from .rotations import EULER_ORDERS, axis_angle_to_matrix, matrix_to_euler

__all__ = [
    "ORDER_TABLE",
    "BODY_JOINT_NAMES",
    "FORMAT_VERSION",
    "DATA_DIR",
    "cluster_path",
    "sample_rom_poses",
    "circular_gaps",
    "wrap_check",
    "select_euler_orders",
    "euler_per_joint",
    "fit_clusters",
    "build_cluster_files",
    "save_clusters",
    "MoEClusters",
    "load_clusters",
]

#: Euler order table: ``order_index`` i in a cluster file means ``ORDER_TABLE[i]``.
#: 0 XYZ, 1 XZY, 2 YXZ, 3 YZX, 4 ZXY, 5 ZYX (intrinsic: ``"ZXY"`` is ``R_z @ R_x @ R_y``).
ORDER_TABLE: Tuple[str, ...] = tuple(EULER_ORDERS)

#: The 23 body joints (SMPL joints 1..23) that get clusters.
BODY_JOINT_NAMES: Tuple[str, ...] = tuple(SMPL_JOINT_NAMES[1:])

FORMAT_VERSION = 1

#: Where the cluster files live in the repository.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"

_REQUIRED = {
    "centers": 3,
    "orders": 1,
    "order_index": 1,
    "wrap_ok": 1,
}


def cluster_path(K: int, data_dir: Union[str, Path, None] = None) -> Path:
    """``training/data/moe_clusters_K{K}.npz`` (or the same name under ``data_dir``)."""
    return Path(DATA_DIR if data_dir is None else data_dir) / f"moe_clusters_K{int(K)}.npz"


# ----------------------------------------------------------------------------------------- data


def sample_rom_poses(
    n: int = 100_000,
    uniform_fraction: float = 0.5,
    family_seed: int = 1000,
    uniform_seed: int = 1100,
    families: Optional[Sequence[str]] = None,
) -> Tuple[torch.Tensor, np.ndarray]:
    """The range-of-motion set: body poses (n, 23, 3) axis-angle (float64) and the source of each row
    (n,) int8: 0 uniform in the swing-twist limits, 1 from :func:`sample_poses` (all families unless
    ``families``). The uniform rows come first. Deterministic for given seeds."""
    from smplfast.body import samplers as S

    n = int(n)
    n_uni = int(round(n * float(uniform_fraction)))
    n_fam = n - n_uni
    g = torch.Generator().manual_seed(int(uniform_seed))
    lo, hi = S.pose_limits(torch.float64)
    u = torch.rand(n_uni, 23, 3, generator=g, dtype=torch.float64)
    twist = torch.tensor([S.TWIST_AXIS[name] for name in BODY_JOINT_NAMES])
    uni = S.swing_twist_to_axis_angle(lo + (hi - lo) * u, twist)
    fam = S.sample_poses(n_fam, family=None if families is None else list(families), seed=int(family_seed),
                         dtype=torch.float64)[:, 3:].reshape(n_fam, 23, 3)
    src = np.concatenate([np.zeros(n_uni, np.int8), np.ones(n_fam, np.int8)])
    return torch.cat([uni, fam], dim=0), src


def circular_gaps(values: np.ndarray) -> Tuple[float, float]:
    """``(wrap_gap, largest_inner_gap)`` in radians of angles (N,) in (−π, π]: the empty arc across
    ±π (``2π − (max − min)``) and the largest gap between consecutive sorted values."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0:
        raise ValueError("circular_gaps: no values")
    inner = float(np.diff(v).max()) if v.size > 1 else 0.0
    return float(2 * math.pi - (v[-1] - v[0])), inner


def wrap_check(euler: np.ndarray, margin_deg: float = 20.0) -> bool:
    """True when every component of Euler angles (N, 3) lies on one arc that avoids ±π: the empty arc
    across ±π is at least ``margin_deg`` wide and is the largest gap between values (so the values
    form one arc, i.e. one mode on the circle, and never wrap)."""
    e = np.asarray(euler, dtype=np.float64).reshape(-1, 3)
    for c in range(3):
        wrap, inner = circular_gaps(e[:, c])
        if not (wrap >= math.radians(margin_deg) and wrap >= inner):
            return False
    return True


def _body_matrices(aa: torch.Tensor) -> torch.Tensor:
    if aa.dim() != 3 or aa.shape[1:] != (23, 3):
        raise ValueError(f"body poses must be (N, 23, 3) axis-angle; got {tuple(aa.shape)}")
    return axis_angle_to_matrix(aa.to(torch.float64))


def select_euler_orders(aa: torch.Tensor, margin_deg: float = 20.0, chunk: int = 20000) -> Dict[str, np.ndarray]:
    """Per-joint Euler order of body poses ``aa`` (N, 23, 3): the order with the smallest
    ``max |middle angle|`` among those passing :func:`wrap_check`, else the smallest overall.

    Returns ``order_index`` (23,), ``orders`` (23,) strings, ``wrap_ok`` (23,), ``max_middle_deg``
    (23, 6) and ``order_wrap_ok`` (23, 6) (columns in :data:`ORDER_TABLE` order)."""
    R = _body_matrices(aa)
    mid = np.zeros((23, len(ORDER_TABLE)))
    ok = np.zeros((23, len(ORDER_TABLE)), dtype=bool)
    for o, order in enumerate(ORDER_TABLE):
        e = torch.cat([matrix_to_euler(R[s:s + chunk], order) for s in range(0, R.shape[0], chunk)]).numpy()
        for j in range(23):
            mid[j, o] = math.degrees(float(np.abs(e[:, j, 1]).max()))
            ok[j, o] = wrap_check(e[:, j], margin_deg)
    index = np.zeros(23, dtype=np.int64)
    wrap_ok = np.zeros(23, dtype=bool)
    for j in range(23):
        cand = np.flatnonzero(ok[j])
        if cand.size:
            index[j] = int(cand[np.argmin(mid[j, cand])])
            wrap_ok[j] = True
        else:
            index[j] = int(np.argmin(mid[j]))
    return {
        "order_index": index,
        "orders": np.asarray([ORDER_TABLE[i] for i in index]),
        "wrap_ok": wrap_ok,
        "max_middle_deg": mid,
        "order_wrap_ok": ok,
    }


def euler_per_joint(R: torch.Tensor, orders: Sequence[str]) -> torch.Tensor:
    """Euler angles (N, J, 3) of rotation matrices (N, J, 3, 3), joint j in ``orders[j]``."""
    from .rotations import matrix_to_euler_per_joint

    return matrix_to_euler_per_joint(R, orders)


def fit_clusters(
    euler: np.ndarray,
    K: int,
    n_init: int = 4,
    random_state: int = 0,
    fit_samples: Optional[int] = None,
    fit_seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """KMeans centres (23, K, 3) and inertia (23,) of Euler angles (N, 23, 3), one KMeans per joint
    (scikit-learn, ``n_init``, ``random_state``), fitted on all N rows or on a fixed random subset of
    ``fit_samples`` rows (the same subset for every joint). Single-threaded (threadpoolctl)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    e = np.asarray(euler, dtype=np.float64)
    if e.ndim != 3 or e.shape[1:] != (23, 3):
        raise ValueError(f"euler must be (N, 23, 3); got {e.shape}")
    if fit_samples is not None and 0 < int(fit_samples) < e.shape[0]:
        rows = np.sort(np.random.default_rng(int(fit_seed)).choice(e.shape[0], int(fit_samples), replace=False))
        e = e[rows]
    centers = np.zeros((23, int(K), 3))
    inertia = np.zeros(23)
    with threadpool_limits(1):
        for j in range(23):
            km = KMeans(n_clusters=int(K), n_init=int(n_init), random_state=int(random_state)).fit(e[:, j])
            order = np.lexsort(km.cluster_centers_.T[::-1])  # deterministic listing: by (a0, a1, a2)
            centers[j] = km.cluster_centers_[order]
            inertia[j] = km.inertia_
    return centers, inertia


def build_cluster_files(
    Ks: Sequence[int] = (8, 32, 128),
    n: int = 100_000,
    uniform_fraction: float = 0.5,
    family_seed: int = 1000,
    uniform_seed: int = 1100,
    margin_deg: float = 20.0,
    n_init: int = 4,
    random_state: int = 0,
    fit_samples: Optional[int] = None,
    fit_seed: int = 0,
    log=print,
) -> Dict[int, Dict[str, np.ndarray]]:
    """Everything :func:`save_clusters` writes, for each K in ``Ks``: ``{K: arrays}``."""
    import time

    import sklearn

    t0 = time.time()
    aa, src = sample_rom_poses(n, uniform_fraction, family_seed, uniform_seed)
    log(f"sampled {aa.shape[0]} poses ({int((src == 0).sum())} uniform, {int((src == 1).sum())} families) "
        f"in {time.time() - t0:.1f} s")
    sel = select_euler_orders(aa, margin_deg)
    for j, name in enumerate(BODY_JOINT_NAMES):
        o = sel["order_index"][j]
        log(f"  {name:15s} {ORDER_TABLE[o]}  max|middle| {sel['max_middle_deg'][j, o]:5.1f} deg"
            + ("" if sel["wrap_ok"][j] else "  WRAP CHECK FAILED: this joint falls back to 6D votes"))
    euler = euler_per_joint(_body_matrices(aa), list(sel["orders"])).numpy()
    common = dict(
        orders=sel["orders"],
        order_index=sel["order_index"],
        wrap_ok=sel["wrap_ok"],
        max_middle_deg=sel["max_middle_deg"],
        order_wrap_ok=sel["order_wrap_ok"],
        euler_min=euler.min(axis=0),
        euler_max=euler.max(axis=0),
        joint_names=np.asarray(BODY_JOINT_NAMES),
        order_table=np.asarray(ORDER_TABLE),
        n_poses=np.asarray(aa.shape[0]),
        n_uniform=np.asarray(int((src == 0).sum())),
        n_families=np.asarray(int((src == 1).sum())),
        family_seed=np.asarray(int(family_seed)),
        uniform_seed=np.asarray(int(uniform_seed)),
        families=np.asarray("all"),
        fit_samples=np.asarray(int(aa.shape[0] if not fit_samples or fit_samples >= aa.shape[0] else fit_samples)),
        fit_seed=np.asarray(int(fit_seed)),
        n_init=np.asarray(int(n_init)),
        random_state=np.asarray(int(random_state)),
        margin_deg=np.asarray(float(margin_deg)),
        sklearn_version=np.asarray(sklearn.__version__),
        torch_version=np.asarray(torch.__version__),
        format_version=np.asarray(FORMAT_VERSION),
    )
    out = {}
    for K in Ks:
        t = time.time()
        centers, inertia = fit_clusters(euler, K, n_init, random_state, fit_samples, fit_seed)
        log(f"K={K}: KMeans on {int(common['fit_samples'])} poses x 23 joints in {time.time() - t:.1f} s")
        out[int(K)] = dict(common, centers=centers, inertia=inertia, K=np.asarray(int(K)))
    return out


def save_clusters(path: Union[str, Path], arrays: Dict[str, np.ndarray]) -> Path:
    """Write a cluster file atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class MoEClusters:
    """A loaded cluster file: ``centers`` (23, K, 3) float64 radians, ``orders`` (23 strings),
    ``wrap_ok`` (23,) bool, ``meta`` (every other array of the file), ``path``."""

    centers: np.ndarray
    orders: Tuple[str, ...]
    wrap_ok: np.ndarray
    meta: Dict[str, np.ndarray]
    path: Optional[Path] = None

    @property
    def K(self) -> int:
        return int(self.centers.shape[1])


def _fail(path, msg: str):
    raise ValueError(f"MoE cluster file {path}: {msg} (rebuild it with "
                     f"`python training/experiments/build_moe_clusters.py`)")


def load_clusters(source: Union[int, str, Path], data_dir: Union[str, Path, None] = None) -> MoEClusters:
    """Load and validate a cluster file: ``source`` is K (an int: ``training/data/moe_clusters_K{K}.npz``)
    or a path. Raises FileNotFoundError (missing file) or ValueError (unreadable, missing keys, wrong
    shapes, non-finite centres, centres outside (−π, π], unknown Euler orders)."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        path = cluster_path(int(source), data_dir)
    else:
        path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"MoE cluster file {path} not found; build it with "
            f"`python training/experiments/build_moe_clusters.py` (writes training/data/moe_clusters_K{{8,32,128}}.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError, EOFError ...
        _fail(path, f"cannot be read ({type(exc).__name__}: {exc})")
    for key, ndim in _REQUIRED.items():
        if key not in arrays:
            _fail(path, f"missing key {key!r}")
        if arrays[key].ndim != ndim:
            _fail(path, f"{key!r} must have {ndim} dimension(s); got shape {arrays[key].shape}")
    centers = arrays.pop("centers")
    if centers.shape[0] != 23 or centers.shape[2] != 3 or centers.shape[1] < 1:
        _fail(path, f"centers must be (23, K, 3); got {centers.shape}")
    if not np.issubdtype(centers.dtype, np.floating) or not np.isfinite(centers).all():
        _fail(path, "centers must be finite floats")
    if np.abs(centers).max() > math.pi + 1e-6:
        _fail(path, "centers must be Euler angles in radians within [-pi, pi]")
    orders_raw = arrays.pop("orders")
    if orders_raw.shape != (23,):
        _fail(path, f"orders must be (23,); got {orders_raw.shape}")
    orders = tuple(str(o) for o in orders_raw)
    bad = [o for o in orders if o not in ORDER_TABLE]
    if bad:
        _fail(path, f"unknown Euler orders {bad}; expected some of {ORDER_TABLE}")
    index = arrays["order_index"]
    if index.shape != (23,) or any(ORDER_TABLE[int(i)] != o for i, o in zip(index, orders)):
        _fail(path, "order_index disagrees with orders")
    wrap_ok = arrays.pop("wrap_ok").astype(bool)
    if wrap_ok.shape != (23,):
        _fail(path, f"wrap_ok must be (23,); got {wrap_ok.shape}")
    if "K" in arrays and int(arrays["K"]) != centers.shape[1]:
        _fail(path, f"K = {int(arrays['K'])} but centers hold {centers.shape[1]} clusters")
    return MoEClusters(centers.astype(np.float64), orders, wrap_ok, arrays, path)
