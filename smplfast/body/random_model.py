"""Random but valid SMPL-format body models, for tests and benchmarks.

:func:`random_model` builds a stick-figure human: the template mesh is made of
closed tubes around the bones of SMPL's 24-joint skeleton (T-pose, metres,
y up, facing +z, the model's left side on +x), with SMPL-like skinning
weights, a sparse joint regressor, and random shape and pose blend shapes.
Any vertex count from :data:`MIN_VERTICES` up works, including SMPL's 6890.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .model_file import ROOT_SENTINEL, ModelData, validate_model

__all__ = [
    "random_model",
    "MIN_VERTICES",
    "SMPL_JOINT_NAMES",
    "SMPL_PARENTS",
    "SMPL_REST_JOINTS",
]

#: Smallest ``num_vertices`` :func:`random_model` accepts.
MIN_VERTICES = 24

SMPL_JOINT_NAMES: Tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

#: SMPL's kinematic tree (parent of each joint, -1 for the root).
SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],
    dtype=np.int64,
)

#: Rough rest (T-pose) joint positions in metres: y up, facing +z, left = +x.
SMPL_REST_JOINTS = np.array(
    [
        [0.000, 0.000, 0.000],     # pelvis
        [0.070, -0.090, -0.005],   # left_hip
        [-0.070, -0.090, -0.005],  # right_hip
        [0.000, 0.110, -0.025],    # spine1
        [0.100, -0.470, 0.000],    # left_knee
        [-0.100, -0.470, 0.000],   # right_knee
        [0.000, 0.240, 0.000],     # spine2
        [0.085, -0.870, -0.040],   # left_ankle
        [-0.085, -0.870, -0.040],  # right_ankle
        [0.000, 0.290, 0.010],     # spine3
        [0.110, -0.930, 0.090],    # left_foot
        [-0.110, -0.930, 0.090],   # right_foot
        [0.000, 0.450, -0.020],    # neck
        [0.075, 0.370, -0.010],    # left_collar
        [-0.075, 0.370, -0.010],   # right_collar
        [0.000, 0.520, 0.030],     # head
        [0.180, 0.400, -0.020],    # left_shoulder
        [-0.180, 0.400, -0.020],   # right_shoulder
        [0.440, 0.400, -0.035],    # left_elbow
        [-0.440, 0.400, -0.035],   # right_elbow
        [0.690, 0.400, -0.025],    # left_wrist
        [-0.690, 0.400, -0.025],   # right_wrist
        [0.770, 0.395, -0.025],    # left_hand
        [-0.770, 0.395, -0.025],   # right_hand
    ],
    dtype=np.float64,
)

# Tube radius of the bone that ends at each joint (indexed by the child joint).
_BONE_RADIUS = {
    1: 0.085, 2: 0.085, 3: 0.110, 4: 0.070, 5: 0.070, 6: 0.115, 7: 0.050, 8: 0.050,
    9: 0.120, 10: 0.045, 11: 0.045, 12: 0.055, 13: 0.060, 14: 0.060, 15: 0.050,
    16: 0.055, 17: 0.055, 18: 0.045, 19: 0.045, 20: 0.038, 21: 0.038, 22: 0.032, 23: 0.032,
}
# (radius, length, direction or None = continue the last bone) of the tube that
# extends a leaf joint: toes, head, hands.
_LEAF_TUBE = {
    10: (0.035, 0.080, None),
    11: (0.035, 0.080, None),
    15: (0.085, 0.170, (0.0, 1.0, 0.0)),
    22: (0.030, 0.090, None),
    23: (0.030, 0.090, None),
}
_EXTRA_BONE_RADIUS = 0.012
_EXTRA_CHAIN_ROOTS = (22, 23, 15, 10, 11)

_MIN_SEGMENT_VERTICES = 3
_CAP_MIN_VERTICES = 16
_JITTER = 0.0015  # metres


def _skeleton(num_joints: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Parents and rest joint positions for ``num_joints`` joints."""
    n0 = min(num_joints, 24)
    parents = list(SMPL_PARENTS[:n0])
    pos = [p.copy() for p in SMPL_REST_JOINTS[:n0]]
    if num_joints > 24:
        # Extra joints continue short chains out of the hands, head and feet.
        tips = {r: r for r in _EXTRA_CHAIN_ROOTS}
        for j in range(24, num_joints):
            root = _EXTRA_CHAIN_ROOTS[(j - 24) % len(_EXTRA_CHAIN_ROOTS)]
            tip = tips[root]
            direction = pos[tip] - pos[parents[tip]]
            direction = direction / max(np.linalg.norm(direction), 1e-9)
            side = np.cross(direction, [0.0, 0.0, 1.0])
            if np.linalg.norm(side) < 1e-6:
                side = np.array([1.0, 0.0, 0.0])
            side = side / np.linalg.norm(side)
            lateral = ((j - 24) // len(_EXTRA_CHAIN_ROOTS) % 3 - 1) * 0.004
            parents.append(tip)
            pos.append(pos[tip] + 0.03 * direction + lateral * side)
            tips[root] = j
    joints = np.array(pos, dtype=np.float64) + rng.normal(0.0, 0.004, (num_joints, 3))
    return np.array(parents, dtype=np.int64), joints


def _segments(parents: np.ndarray, joints: np.ndarray) -> List[Dict]:
    """One tube per bone (owned by the bone's parent joint) plus one per leaf joint."""
    J = len(parents)
    children: List[List[int]] = [[] for _ in range(J)]
    for j in range(1, J):
        children[int(parents[j])].append(j)
    segs: List[Dict] = []
    for j in range(J):
        for c in children[j]:
            radius = _BONE_RADIUS.get(c, _EXTRA_BONE_RADIUS) if c < 24 else _EXTRA_BONE_RADIUS
            segs.append(dict(owner=j, child=c, a=joints[j], b=joints[c], radius=radius, rounded=False))
        if not children[j]:
            p = int(parents[j])
            if j in _LEAF_TUBE and j < 24:
                radius, length, direction = _LEAF_TUBE[j]
            else:
                inc = _BONE_RADIUS.get(j, _EXTRA_BONE_RADIUS) if j < 24 else _EXTRA_BONE_RADIUS
                radius = inc if p >= 0 else 0.1
                length = 0.5 * np.linalg.norm(joints[j] - joints[p]) if p >= 0 else 0.2
                length = max(length, 0.03)
                direction = None
            if direction is None:
                direction = joints[j] - joints[p] if p >= 0 else np.array([0.0, 1.0, 0.0])
            direction = np.asarray(direction, dtype=np.float64)
            direction = direction / max(np.linalg.norm(direction), 1e-9)
            segs.append(dict(owner=j, child=-1, a=joints[j], b=joints[j] + length * direction,
                             radius=radius, rounded=True))
    for s in segs:
        s["length"] = max(float(np.linalg.norm(s["b"] - s["a"])), 1e-3)
    return segs


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``total`` into integers >= ``minimum`` roughly proportional to ``weights``."""
    n = len(weights)
    free = total - minimum * n
    share = free * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    left = free - int(counts.sum())
    if left > 0:
        order = np.argsort(-(share - counts), kind="stable")
        counts[order[:left]] += 1
    return counts + minimum


def _frame(d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Unit vectors u, w with (u, w, d) right-handed and orthonormal."""
    helper = np.eye(3)[int(np.argmin(np.abs(d)))]
    u = np.cross(helper, d)
    u /= np.linalg.norm(u)
    w = np.cross(d, u)
    return u, w


def _tube(n: int, seg: Dict, phase: float) -> Dict[str, np.ndarray]:
    """``n`` vertices on a helix around the segment, triangulated into a closed tube.

    Consecutive turns of the helix are stitched into a triangle strip, so any
    vertex count works; with enough vertices both ends get a cap vertex.  The
    first turn is centred on the start joint and the last on the end point.
    """
    A, B, R = seg["a"], seg["b"], seg["radius"]
    L = seg["length"]
    d = (B - A) / L
    u, w = _frame(d)
    caps = n >= _CAP_MIN_VERTICES
    nt = n - 2 if caps else n
    if nt >= 5:
        spacing = np.sqrt(2.0 * np.pi * R * L / nt)
        k = int(round(2.0 * np.pi * R / spacing))
        k = int(np.clip(k, 3, (nt + 1) // 2))
    else:
        k = 3
    pitch = L * k / max(nt - k, 1)
    i = np.arange(nt, dtype=np.float64)
    axial = (i - (k - 1) / 2.0) * pitch / k
    theta = phase + 2.0 * np.pi * i / k
    t = np.clip(axial / L, 0.0, 1.0)
    if seg["rounded"]:
        r = R * np.sqrt(np.clip(1.0 - 0.85 * (2.0 * t - 1.0) ** 2, 0.0, 1.0))
    else:
        r = np.full(nt, R)
    radial = np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * w
    pos = A + axial[:, None] * d + r[:, None] * radial

    if nt >= k + 2:
        a1 = np.arange(nt - k)
        a2 = np.arange(nt - k - 1)
        faces = [
            np.stack([a1, a1 + 1, a1 + k], axis=1),
            np.stack([a2 + 1, a2 + k + 1, a2 + k], axis=1),
        ]
    else:
        s = np.arange(nt - 2)
        faces = [np.stack([s, s + 1, s + 2], axis=1)]
    if caps:
        c0, c1 = nt, nt + 1
        s = np.arange(k)
        faces.append(np.stack([np.full(k, c0), s + 1, s], axis=1))
        e = np.arange(nt - k - 1, nt - 1)
        faces.append(np.stack([np.full(k, c1), e, e + 1], axis=1))
        end0 = A + d * (axial[0] - 0.3 * r[0] - 0.3 * R * (not seg["rounded"]))
        end1 = A + d * (axial[-1] + 0.3 * r[-1] + 0.3 * R * (not seg["rounded"]))
        pos = np.vstack([pos, end0, end1])
        t = np.concatenate([t, [0.0, 1.0]])
        radial = np.vstack([radial, -d, d])
        axial = np.concatenate([axial, [0.0, L]])
    return dict(
        pos=pos,
        t=t,
        radial=radial,
        axial=(axial / L - 0.5)[:, None] * d,
        faces=np.concatenate(faces, axis=0),
        first_turn=np.arange(min(k, nt)) if nt >= 5 else np.arange(0),
        last_turn=np.arange(nt - k, nt) if nt >= 5 else np.arange(0),
    )


def _tree_neighbours(parents: np.ndarray, max_dist: int) -> List[List[int]]:
    """For each joint, the joints at tree distance 1..max_dist, nearest first."""
    J = len(parents)
    adj: List[List[int]] = [[] for _ in range(J)]
    for j in range(1, J):
        adj[j].append(int(parents[j]))
        adj[int(parents[j])].append(j)
    out: List[List[int]] = []
    for j in range(J):
        seen = {j}
        frontier = [j]
        order: List[int] = []
        for _ in range(max_dist):
            nxt = []
            for a in frontier:
                for b in adj[a]:
                    if b not in seen:
                        seen.add(b)
                        nxt.append(b)
                        order.append(b)
            frontier = nxt
        out.append(order)
    return out


def _project_simplex(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean projection onto the simplex over the masked entries."""
    z = np.where(mask, y, -np.inf)
    s = -np.sort(-z, axis=1)
    finite = np.isfinite(s)
    css = np.cumsum(np.where(finite, s, 0.0), axis=1)
    k = np.arange(1, y.shape[1] + 1)
    cond = finite & (s - (css - 1.0) / k > 0)
    rho = np.maximum(cond.sum(axis=1) - 1, 0)
    theta = (css[np.arange(y.shape[0]), rho] - 1.0) / (rho + 1)
    return np.where(mask, np.maximum(y - theta[:, None], 0.0), 0.0)


def _regressor_weights(points: np.ndarray, mask: np.ndarray, targets: np.ndarray,
                       start: np.ndarray, iterations: int = 400) -> np.ndarray:
    """Convex weights (per row) whose combination of ``points`` is close to ``targets``.

    Accelerated projected gradient on ``|sum_i w_i p_i - x|^2`` over the simplex,
    started from random weights so the result is not a fixed pattern.
    """
    P = np.where(mask[..., None], points - targets[:, None, :], 0.0)  # (B, m, 3)
    G = P @ np.swapaxes(P, 1, 2)  # (B, m, m)
    lip = 2.0 * np.linalg.eigvalsh(G)[:, -1] + 1e-12
    step = (1.0 / lip)[:, None]
    w = _project_simplex(start, mask)
    y, t = w.copy(), 1.0
    for _ in range(iterations):
        grad = 2.0 * np.einsum("bij,bj->bi", G, y)
        w_new = _project_simplex(y - step * grad, mask)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = w_new + ((t - 1.0) / t_new) * (w_new - w)
        w, t = w_new, t_new
    w[w < 1e-6] = 0.0
    w = np.where(mask, w, 0.0)
    sums = w.sum(axis=1, keepdims=True)
    return w / np.where(sums > 0, sums, 1.0)


def random_model(
    num_vertices: int = 6890,
    num_betas: int = 10,
    seed: int = 0,
    *,
    num_joints: int = 24,
    max_influences: int = 4,
    pose_blend_scale: float = 0.01,
    shape_blend_scale: float = 0.03,
    dense_pose_blend_shapes: bool = True,
) -> ModelData:
    """A random but valid SMPL-format model; the same ``seed`` gives the same model.

    * Skeleton: SMPL's kinematic tree and rough T-pose joint positions (with a
      few millimetres of random variation).  ``num_joints < 24`` keeps the
      first joints of SMPL's tree; more than 24 adds short chains out of the
      hands, head and feet.  Rest joints are also stored in ``extras["J"]``.
    * Template: exactly ``num_vertices`` vertices on closed tubes around the
      bones (hands, feet and head are tubes that extend the last bone); the
      vertex budget is split over the tubes by surface (bone length times
      radius).  Every vertex belongs to at least one face.
    * ``weights``: at most ``max_influences`` non-zeros per vertex, mostly the
      joint that drives the vertex's bone, blended towards the neighbouring
      joint near each end, plus small random influences of nearby joints.
    * ``J_regressor``: each row a convex combination of 4-10 vertices around
      the joint, so ``J_regressor @ v_template`` is close to the rest joints.
    * ``shapedirs`` (V, 3, num_betas): smooth per-joint thickness / length /
      size patterns plus noise, scaled by ``shape_blend_scale``.
    * ``posedirs`` (V, 3, 9 * (num_joints - 1)): dense random values scaled by
      ``pose_blend_scale``; with ``dense_pose_blend_shapes=False`` a vertex is
      only driven by the pose features of its bone's joint and that joint's
      tree neighbours (a sparse, STAR-like structure).
    """
    num_vertices = int(num_vertices)
    num_betas = int(num_betas)
    num_joints = int(num_joints)
    max_influences = int(max_influences)
    if num_vertices < MIN_VERTICES:
        raise ValueError(f"random_model needs num_vertices >= {MIN_VERTICES}, got {num_vertices}")
    if num_betas < 1:
        raise ValueError(f"random_model needs num_betas >= 1, got {num_betas}")
    if num_joints < 1:
        raise ValueError(f"random_model needs num_joints >= 1, got {num_joints}")
    if max_influences < 1:
        raise ValueError(f"random_model needs max_influences >= 1, got {max_influences}")

    rng = np.random.default_rng(seed)
    V, J, S = num_vertices, num_joints, num_betas
    K = min(max_influences, J)

    parents, joints = _skeleton(J, rng)
    segs = _segments(parents, joints)

    # ---- vertex budget -------------------------------------------------------
    area = np.array([s["length"] * s["radius"] for s in segs])
    counts = np.zeros(len(segs), dtype=np.int64)
    if V >= _MIN_SEGMENT_VERTICES * len(segs):
        counts[:] = _allocate(V, area, _MIN_SEGMENT_VERTICES)
    else:
        keep = np.argsort(-area, kind="stable")[: V // _MIN_SEGMENT_VERTICES]
        counts[keep] = _allocate(V, area[keep], _MIN_SEGMENT_VERTICES)

    # ---- template mesh -------------------------------------------------------
    pos_parts, face_parts, t_parts, radial_parts, axial_parts, owner_parts = [], [], [], [], [], []
    seg_ranges: List[Tuple[int, int]] = []
    first_turn: Dict[int, np.ndarray] = {}
    last_turn: Dict[int, np.ndarray] = {}
    offset = 0
    phases = rng.uniform(0.0, 2.0 * np.pi, len(segs))
    for si, (seg, n) in enumerate(zip(segs, counts)):
        n = int(n)
        seg_ranges.append((offset, offset + n))
        if n == 0:
            continue
        tube = _tube(n, seg, phases[si])
        pos_parts.append(tube["pos"])
        face_parts.append(tube["faces"] + offset)
        t_parts.append(tube["t"])
        radial_parts.append(tube["radial"])
        axial_parts.append(tube["axial"])
        owner_parts.append(np.full(n, si))
        first_turn[si] = tube["first_turn"] + offset
        last_turn[si] = tube["last_turn"] + offset
        offset += n
    v_template = np.concatenate(pos_parts)
    v_template += rng.normal(0.0, _JITTER, v_template.shape)
    faces = np.concatenate(face_parts).astype(np.int64)
    vert_t = np.concatenate(t_parts)
    vert_radial = np.concatenate(radial_parts)
    vert_axial = np.concatenate(axial_parts)
    vert_seg = np.concatenate(owner_parts)
    seg_owner = np.array([s["owner"] for s in segs], dtype=np.int64)
    vert_joint = seg_owner[vert_seg]
    assert v_template.shape[0] == V

    # ---- skinning weights ----------------------------------------------------
    neighbours = _tree_neighbours(parents, 2)
    weights = np.zeros((V, J))
    full_rows: List[Tuple[int, List[int]]] = []  # a vertex that can take K influences
    for si, seg in enumerate(segs):
        lo, hi = seg_ranges[si]
        n = hi - lo
        if n == 0:
            continue
        o, c, p = seg["owner"], seg["child"], int(parents[seg["owner"]])
        start_partner = p if p >= 0 else c
        end_partner = c if c >= 0 else p
        if start_partner < 0 and end_partner < 0 and neighbours[o]:
            start_partner = end_partner = neighbours[o][0]
        t = vert_t[lo:hi]
        near_start = t < 0.5
        partner = np.where(near_start, start_partner, end_partner)
        dist = np.where(near_start, t, 1.0 - t)
        blend = 0.5 * np.clip(1.0 - dist / 0.35, 0.0, 1.0) ** 2
        rows = np.arange(lo, hi)
        own_w = 1.0 - blend
        if K >= 2 and partner.max() >= 0:
            jitter = rng.uniform(0.002, 0.03, n) * (rng.random(n) < 0.7)
            partner_w = np.where(partner >= 0, blend + jitter, 0.0)
            has_partner = (partner >= 0) & (partner_w > 0)
            weights[rows[has_partner], partner[has_partner]] = partner_w[has_partner]
        else:
            own_w = np.ones(n)
            has_partner = np.zeros(n, dtype=bool)
        weights[rows, o] = own_w
        extra_pool = [j for j in neighbours[o] if j not in (start_partner, end_partner)]
        extra_pool = list(rng.permutation(extra_pool)) if extra_pool else []
        extras = extra_pool[: max(K - 2, 0)]
        for e in extras:
            on = rng.random(n) < 0.35
            weights[rows[on], e] = rng.uniform(0.005, 0.05, int(on.sum()))
        if K >= 2 and len(extras) == K - 2 and not full_rows and (partner >= 0).any():
            idx = int(np.argmax(partner >= 0))
            full_rows.append((lo + idx, [o, int(partner[idx])] + [int(e) for e in extras]))
    if K >= 2 and full_rows and not (np.count_nonzero(weights, axis=1) == K).any():
        # Make sure the maximum number of influences actually occurs.
        r, cols = full_rows[0]
        for j in cols:
            if weights[r, j] == 0.0:
                weights[r, j] = 0.01
    weights /= weights.sum(axis=1, keepdims=True)

    # ---- joint regressor -----------------------------------------------------
    M = 10
    cand = np.zeros((J, M), dtype=np.int64)
    cmask = np.zeros((J, M), dtype=bool)
    incoming = {seg["child"]: si for si, seg in enumerate(segs) if seg["child"] >= 0}
    for j in range(J):
        m = int(rng.integers(4, M + 1))
        pool_parts = []
        owned = [si for si, seg in enumerate(segs) if seg["owner"] == j and len(first_turn.get(si, ())) >= 3]
        if owned:
            best = max(owned, key=lambda si: counts[si])
            pool_parts.append(first_turn[best])
        si_in = incoming.get(j)
        if si_in is not None and len(last_turn.get(si_in, ())) >= 3:
            pool_parts.append(last_turn[si_in])
        pool = np.concatenate(pool_parts) if pool_parts else np.arange(0)
        if len(pool) >= 4:
            m = min(m, len(pool))
            shift = int(rng.integers(0, len(pool)))
            picks = pool[(shift + np.floor(np.arange(m) * len(pool) / m).astype(np.int64)) % len(pool)]
        else:
            m = min(m, V)
            picks = np.argsort(np.linalg.norm(v_template - joints[j], axis=1), kind="stable")[:m]
        cand[j, :m] = picks
        cmask[j, :m] = True
    start = rng.dirichlet(np.ones(M), size=J)
    reg_w = _regressor_weights(v_template[cand], cmask, joints, start)
    J_regressor = np.zeros((J, V))
    for j in range(J):
        np.add.at(J_regressor[j], cand[j][cmask[j]], reg_w[j][cmask[j]])
    J_regressor /= J_regressor.sum(axis=1, keepdims=True)

    # ---- shape blend shapes --------------------------------------------------
    thickness = weights @ rng.normal(size=(J, S))
    stretch = weights @ rng.normal(size=(J, S))
    size = rng.normal(size=S)
    decay = 1.0 / (1.0 + 0.3 * np.arange(S))
    centred = v_template - v_template.mean(axis=0)
    shapedirs = (
        0.5 * vert_radial[:, :, None] * thickness[:, None, :]
        + 0.3 * vert_axial[:, :, None] * stretch[:, None, :]
        + centred[:, :, None] * size[None, None, :]
        + 0.1 * rng.normal(size=(V, 3, S))
    ) * (shape_blend_scale * decay)

    # ---- pose blend shapes ---------------------------------------------------
    P = 9 * (J - 1)
    # Smooth over the body (each vertex blends its joints' random patterns, so the mesh bulges rather
    # than crumples) plus a little per-vertex noise that keeps every entry non-zero, like real SMPL's.
    joint_patterns = rng.standard_normal((J, 3 * P))
    posedirs = (weights @ joint_patterns).reshape(V, 3, P) + 0.1 * rng.standard_normal((V, 3, P))
    posedirs *= pose_blend_scale
    if not dense_pose_blend_shapes and P:
        near = np.zeros((J, J), dtype=bool)
        near[np.arange(J), np.arange(J)] = True
        for j in range(1, J):
            near[j, parents[j]] = True
            near[parents[j], j] = True
        feature_mask = np.repeat(near[vert_joint][:, 1:], 9, axis=1)  # (V, P)
        posedirs *= feature_mask[:, None, :]

    kintree_table = np.stack([parents, np.arange(J, dtype=np.int64)])
    kintree_table[0, 0] = ROOT_SENTINEL

    model = ModelData(
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=posedirs,
        J_regressor=J_regressor,
        weights=weights,
        kintree_table=kintree_table,
        f=faces,
        source=f"<random_model(num_vertices={V}, num_betas={S}, seed={seed}, num_joints={J})>",
        extras={"J": joints},
    )
    return validate_model(model)
