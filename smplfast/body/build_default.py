"""Build smplfast's bundled default body model from the free Anny body model.

Run ``python -m smplfast.body.build_default [--out DIR]`` with the ``anny``
package installed (``pip install anny==0.6.2``).  It writes
``SMPL_{NEUTRAL,FEMALE,MALE}.pkl`` (plain-numpy pickles that both
:func:`smplfast.body.load_model` and ``smplx.SMPL`` read) and a
``build_report.json`` with the measured quality numbers.

What the conversion does (Anny: NAVER LABS, code Apache-2.0; body data from
MakeHuman, CC0):

1. Mesh.  Anny's default ``anny`` topology (triangles, 13718 vertices).  The
   eyeballs and the tongue (separate closed shells) and the eye and mouth
   cavities are removed; each hole left by a cavity is closed with a fan around
   a new vertex at the centre of its rim, so the body stays one closed,
   consistently oriented surface.
2. Frame.  Anny is z-up, facing -y, in metres; the model is turned to SMPL's
   frame (y up, facing +z, left on +x).
3. Skeleton.  Anny's 104 bones are grouped into SMPL's 24 joints (see
   :data:`BONE_GROUPS`); each group's skinning weights are summed, at most
   :data:`MAX_INFLUENCES` influences per vertex are kept and renormalised.  A
   joint sits at the head of the group's first bone (the hand and foot joints
   at the mean of the finger / toe bases).  Because every bone of a group
   moves rigidly with the group, this skinning reproduces Anny's own for
   SMPL-level rotations.
4. Rest pose.  Anny's rest pose is an A-pose; each arm is rotated at the
   shoulder, elbow and wrist (minimal rotations, so no twist) to lie along
   the x axis: SMPL's T-pose.  Legs and spine keep Anny's rest posture.
5. Shape.  :data:`NUM_SHAPE_SAMPLES` adult phenotypes are drawn from Anny's
   calibrated phenotype distribution (morphological age 18-80 years, gender
   uniform for ``neutral``, 1 for ``female``, 0 for ``male``; height, weight,
   muscle, proportions conditioned on age and gender), T-posed, and a PCA
   gives ``v_template`` (the mean) and ``shapedirs`` scaled so that
   ``betas ~ N(0, I)``.
6. ``J_regressor``: for each joint a non-negative, sum-to-one combination of
   at most :data:`REGRESSOR_SUPPORT` nearby vertices, fitted by NNLS to
   reproduce the joint positions over :data:`REGRESSOR_SAMPLES` shape
   samples; its error is reported over all of them.
7. ``posedirs`` are zero: Anny has no pose-corrective blend shapes.

Everything is seeded; the same ``anny`` and ``torch`` versions give the same
files (up to float round-off across BLAS builds).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .keypoints import definitions_to_arrays
from .model_file import ROOT_SENTINEL, ModelData, validate_model
from .random_model import SMPL_JOINT_NAMES, SMPL_PARENTS

ANNY_VERSION = "0.6.2"
GENDERS = ("neutral", "female", "male")
NUM_SHAPE_SAMPLES = 1500
NUM_BETAS = 10
MAX_INFLUENCES = 4
REGRESSOR_SUPPORT = 24
REGRESSOR_SAMPLES = 300
SEED = 0
ADULT_AGE_YEARS = (18.0, 80.0)

#: Anny bone -> SMPL joint.  Bones not listed take their parent's joint.
BONE_GROUPS: Dict[str, Tuple[str, ...]] = {
    "pelvis": ("root", "pelvis.L", "pelvis.R", "spine05", "spine04"),
    "left_hip": ("upperleg01.L", "upperleg02.L"),
    "right_hip": ("upperleg01.R", "upperleg02.R"),
    "spine1": ("spine03",),
    "left_knee": ("lowerleg01.L", "lowerleg02.L"),
    "right_knee": ("lowerleg01.R", "lowerleg02.R"),
    "spine2": ("spine02",),
    "left_ankle": ("foot.L",),
    "right_ankle": ("foot.R",),
    "spine3": ("spine01",),
    "left_foot": tuple(f"toe{i}-1.L" for i in range(1, 6)),
    "right_foot": tuple(f"toe{i}-1.R" for i in range(1, 6)),
    "neck": ("neck01", "neck02", "neck03"),
    "left_collar": ("clavicle.L", "shoulder01.L"),
    "right_collar": ("clavicle.R", "shoulder01.R"),
    "head": ("head", "eye.L", "eye.R"),
    "left_shoulder": ("upperarm01.L", "upperarm02.L"),
    "right_shoulder": ("upperarm01.R", "upperarm02.R"),
    "left_elbow": ("lowerarm01.L", "lowerarm02.L"),
    "right_elbow": ("lowerarm01.R", "lowerarm02.R"),
    "left_wrist": ("wrist.L", "finger1-1.L") + tuple(f"metacarpal{i}.L" for i in range(1, 5)),
    "right_wrist": ("wrist.R", "finger1-1.R") + tuple(f"metacarpal{i}.R" for i in range(1, 5)),
    "left_hand": ("finger1-2.L",) + tuple(f"finger{i}-1.L" for i in range(2, 6)),
    "right_hand": ("finger1-2.R",) + tuple(f"finger{i}-1.R" for i in range(2, 6)),
}

#: Joints placed at the mean of several bone heads instead of one.
JOINT_PIVOTS: Dict[str, Tuple[str, ...]] = {
    "left_foot": tuple(f"toe{i}-1.L" for i in range(1, 6)),
    "right_foot": tuple(f"toe{i}-1.R" for i in range(1, 6)),
    "left_hand": tuple(f"finger{i}-1.L" for i in range(2, 6)),
    "right_hand": tuple(f"finger{i}-1.R" for i in range(2, 6)),
}

#: Segmentation labels of Anny's body-part map that are removed.
REMOVED_PARTS = ("eye_back.L", "eye_front.L", "eye_back.R", "eye_front.R",
                 "eye_cavity.L", "eye_cavity.R", "mouth_cavity", "tongue")

#: Anny (z up, facing -y) -> SMPL (y up, facing +z): a -90 degree turn about x.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

#: Arm chains T-posed, as (joint, child joint, target direction).
_T_POSE_CHAIN = (
    ("left_shoulder", "left_elbow", (1.0, 0.0, 0.0)),
    ("left_elbow", "left_wrist", (1.0, 0.0, 0.0)),
    ("left_wrist", "left_hand", (1.0, 0.0, 0.0)),
    ("right_shoulder", "right_elbow", (-1.0, 0.0, 0.0)),
    ("right_elbow", "right_wrist", (-1.0, 0.0, 0.0)),
    ("right_wrist", "right_hand", (-1.0, 0.0, 0.0)),
)


# ---------------------------------------------------------------------------
# Anny access


def _load_anny():
    try:
        import anny  # noqa: F401
        import torch
    except ImportError as e:  # pragma: no cover - exercised without anny
        raise ImportError(
            f"building the default model needs the anny package: pip install anny=={ANNY_VERSION}"
        ) from e
    import anny

    if anny.__version__ != ANNY_VERSION:
        raise RuntimeError(
            f"the default model is built from anny=={ANNY_VERSION}, found anny=={anny.__version__}"
        )
    return anny.Anny(rig="anny", topology="anny").to(torch.float64)


def _removed_face_mask(model) -> np.ndarray:
    from anny.face_segmentation import get_face_segmentation_mask

    return get_face_segmentation_mask(model, list(REMOVED_PARTS)).cpu().numpy()


def _sample_phenotypes(model, n: int, gender: str, seed: int):
    """Adult phenotypes from Anny's calibrated distribution, as a (n, P) tensor."""
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    lo, hi = (torch.tensor(a, dtype=model.dtype) for a in ADULT_AGE_YEARS)
    if gender == "neutral":
        gender_dist = torch.distributions.Uniform(torch.tensor(0.0, dtype=model.dtype),
                                                  torch.tensor(1.0, dtype=model.dtype))
    else:
        value = torch.tensor(1.0 if gender == "female" else 0.0, dtype=model.dtype)
        gender_dist = _Constant(value)
    dist = SimpleShapeDistribution(model, torch.distributions.Uniform(lo, hi), gender_dist)
    _, kwargs = dist.sample(n)
    return torch.stack([kwargs[k] for k in model.phenotype_labels], dim=1)


class _Constant:
    def __init__(self, value):
        self.value = value

    def sample(self, shape):
        return self.value.expand(shape).clone()


def _rest_state(model, phenotypes):
    """Rest vertices (n, V, 3) and bone heads (n, 104, 3) in Anny's frame."""
    import torch

    with torch.no_grad():
        n = phenotypes.shape[0]
        zeros = lambda k: torch.zeros(n, k, dtype=model.dtype)  # noqa: E731
        coeffs = model._get_phenotype_blendshape_coefficients(
            phenotypes, zeros(len(model.local_change_labels)), zeros(len(model.facial_action_labels)))
        rest = model.get_rest_model(coeffs)
        return rest["rest_vertices"].numpy(), rest["rest_bone_heads"].numpy()


# ---------------------------------------------------------------------------
# Mesh clean-up


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def _boundary_loops(faces: np.ndarray) -> List[List[int]]:
    """Boundary loops, each as vertices in the order of the faces' directed boundary edges."""
    directed = _edges(faces)
    key = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse.ravel()] == 1]
    nxt = {}
    for a, b in boundary:
        if a in nxt:
            raise ValueError(f"boundary vertex {a} is shared by two holes; cannot cap")
        nxt[int(a)] = int(b)
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        v = nxt.pop(start)
        while v != start:
            loop.append(v)
            v = nxt.pop(v)
        loops.append(loop)
    return loops


def clean_mesh(faces: np.ndarray, num_vertices: int, removed_faces: np.ndarray):
    """Drop the removed faces and every shell but the largest, cap the holes.

    Returns ``(faces, combine, num_caps)`` where ``combine`` is a sparse (V_new, V) matrix
    whose rows give each new vertex as an average of original vertices (a
    one-hot row for kept vertices, the rim average for a cap centre).
    """
    from .charts import face_components

    faces = np.asarray(faces, dtype=np.int64)
    keep = np.zeros(len(faces), dtype=bool)
    keep[max(face_components(num_vertices, faces), key=len)] = True
    faces = faces[keep & ~removed_faces]
    loops = _boundary_loops(faces)
    kept = np.unique(faces)
    old_to_new = np.full(num_vertices, -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    rows, cols, vals = [np.arange(len(kept))], [kept], [np.ones(len(kept))]
    new_faces = [old_to_new[faces]]
    for i, loop in enumerate(loops):
        centre = len(kept) + i
        rows.append(np.full(len(loop), centre))
        cols.append(np.array(loop))
        vals.append(np.full(len(loop), 1.0 / len(loop)))
        ring = old_to_new[np.array(loop)]
        # The rim edge a->b belongs to a kept face; the cap uses b->a.
        new_faces.append(np.stack([np.roll(ring, -1), ring, np.full_like(ring, centre)], axis=1))
    from scipy.sparse import csr_matrix

    combine = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(kept) + len(loops), num_vertices))
    return np.concatenate(new_faces), combine, len(loops)


# ---------------------------------------------------------------------------
# Skeleton, weights, T-pose


def _group_index(bone_labels: Sequence[str], bone_parents: Sequence[int]) -> np.ndarray:
    """SMPL joint of every Anny bone."""
    explicit = {b: SMPL_JOINT_NAMES.index(j) for j, bones in BONE_GROUPS.items() for b in bones}
    missing = [b for bones in BONE_GROUPS.values() for b in bones if b not in bone_labels]
    if missing:
        raise RuntimeError(f"anny's rig lacks the bones {missing}")
    group = np.full(len(bone_labels), -1, dtype=np.int64)
    for i, name in enumerate(bone_labels):  # parents come before children in Anny's list
        group[i] = explicit[name] if name in explicit else group[bone_parents[i]]
        if group[i] < 0:
            raise RuntimeError(f"anny bone {name!r} has no SMPL joint")
    return group


def bone_weights(anny_weights, anny_indices, num_bones: int, combine) -> np.ndarray:
    """(V_new, num_bones) dense Anny skinning weights of the cleaned mesh's vertices."""
    v = anny_weights.shape[0]
    dense = np.zeros((v, num_bones))
    np.add.at(dense, (np.repeat(np.arange(v), anny_weights.shape[1]), anny_indices.ravel()),
              anny_weights.ravel())
    return np.asarray(combine @ dense)


def merged_weights(bone_w: np.ndarray, group: np.ndarray, max_influences=MAX_INFLUENCES):
    """(V, 24) skinning weights: bone weights (V, B) summed per joint, pruned, renormalised."""
    dense = np.zeros((bone_w.shape[0], 24))
    np.add.at(dense.T, group, bone_w.T)
    order = np.argsort(-dense, axis=1, kind="stable")
    pruned = np.zeros_like(dense)
    rows = np.arange(len(dense))[:, None]
    top = order[:, :max_influences]
    pruned[rows, top] = dense[rows, top]
    lost = 1.0 - pruned.sum(1) / dense.sum(1)
    return pruned / pruned.sum(1, keepdims=True), lost


def joint_positions(heads: np.ndarray, bone_labels: Sequence[str]) -> np.ndarray:
    """(n, 24, 3) SMPL joints from Anny bone heads (n, B, 3)."""
    idx = {b: i for i, b in enumerate(bone_labels)}
    out = []
    for name in SMPL_JOINT_NAMES:
        bones = JOINT_PIVOTS.get(name, BONE_GROUPS[name][:1])
        out.append(heads[:, [idx[b] for b in bones]].mean(axis=1))
    return np.stack(out, axis=1)


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (n, 3, 3) turning directions a (n, 3) onto b (3,)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = np.broadcast_to(np.asarray(b, dtype=float), a.shape)
    v = np.cross(a, b)
    c = np.einsum("ni,ni->n", a, b)
    k = np.zeros(a.shape[:1] + (3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k = k - k.transpose(0, 2, 1)
    return np.eye(3) + k + (k @ k) / (1.0 + c)[:, None, None]


def t_pose(verts: np.ndarray, joints: np.ndarray, weights: np.ndarray):
    """Rotate the arms of rest meshes (n, V, 3) with joints (n, 24, 3) into a T-pose.

    Linear blend skinning with SMPL's tree: each arm joint gets the smallest
    rotation that points its bone along the x axis.
    """
    n = verts.shape[0]
    world = np.tile(np.eye(4), (n, 24, 1, 1))
    local = np.tile(np.eye(3), (n, 24, 1, 1))
    for name, child, target in _T_POSE_CHAIN:
        j, c = SMPL_JOINT_NAMES.index(name), SMPL_JOINT_NAMES.index(child)
        # Current (already partially T-posed) positions of the joint and child.
        posed = _apply_chain(world, joints)
        rot_world = _align(posed[:, c] - posed[:, j], target)
        parent_rot = _chain_rotation(world, j)
        # Express the world-frame correction as a local rotation at joint j.
        local[:, j] = np.einsum("nji,njk,nkl,nlm->nim", parent_rot, rot_world, parent_rot,
                                local[:, j])
        world = _forward(local, joints)
    posed_joints = _apply_chain(world, joints)
    skin = np.einsum("vj,njab->nvab", weights, world)
    homo = np.concatenate([verts, np.ones(verts.shape[:2] + (1,))], axis=-1)
    posed_verts = np.einsum("nvab,nvb->nva", skin, homo)[..., :3]
    return posed_verts, posed_joints


def _forward(local: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """World transforms (n, 24, 4, 4) that map rest points to posed points."""
    n = local.shape[0]
    g = np.zeros((n, 24, 4, 4))
    for j in range(24):
        rel = np.tile(np.eye(4), (n, 1, 1))
        rel[:, :3, :3] = local[:, j]
        p = SMPL_PARENTS[j]
        rel[:, :3, 3] = joints[:, j] - (joints[:, p] if p >= 0 else 0.0)
        g[:, j] = rel if p < 0 else g[:, p] @ rel
    out = g.copy()
    out[:, :, :3, 3] -= np.einsum("njab,njb->nja", g[:, :, :3, :3], joints)
    return out


def _apply_chain(world: np.ndarray, joints: np.ndarray) -> np.ndarray:
    return np.einsum("njab,njb->nja", world[:, :, :3, :3], joints) + world[:, :, :3, 3]


def _chain_rotation(world: np.ndarray, j: int) -> np.ndarray:
    p = SMPL_PARENTS[j]
    return world[:, p, :3, :3] if p >= 0 else np.tile(np.eye(3), (world.shape[0], 1, 1))


# ---------------------------------------------------------------------------
# Shape space and joint regressor


def shape_pca(verts: np.ndarray, num_betas: int, seed: int = SEED):
    """Mean (V, 3), scaled components (V, 3, K) and the explained variance ratio of each."""
    n, v, _ = verts.shape
    x = verts.reshape(n, -1)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    sigma = s / np.sqrt(n - 1)
    comps = vt[:num_betas] * sigma[:num_betas, None]
    # Fix the sign of each component: component 0 grows the body along y, the
    # others point along a fixed random direction.
    probe = np.random.default_rng(seed).standard_normal(x.shape[1])
    probe_y = np.zeros((v, 3))
    probe_y[:, 1] = verts.mean(0)[:, 1] - verts.mean(0)[:, 1].mean()
    for k in range(num_betas):
        ref = probe_y.ravel() if k == 0 else probe
        if comps[k] @ ref < 0:
            comps[k] = -comps[k]
    ratio = sigma ** 2 / np.sum(sigma ** 2)
    return mean.reshape(v, 3), comps.reshape(num_betas, v, 3).transpose(1, 2, 0), ratio[:num_betas]


def fit_joint_regressor(verts: np.ndarray, joints: np.ndarray,
                        support: int = REGRESSOR_SUPPORT, candidates: int = 1500) -> np.ndarray:
    """(24, V) sparse, non-negative, rows summing to 1, with ``joints ~ J_regressor @ verts``.

    For each joint, NNLS (with a heavily weighted sum-to-one row) over the
    ``candidates`` vertices nearest to it in the mean shape, then again over
    the ``support`` largest weights.  Non-negativity bounds the accuracy: Anny
    places its joints from helper geometry that is not part of the surface, so
    a convex combination of surface vertices cannot follow them exactly (an
    unconstrained fit does, with large negative weights that would make the
    joints jump with small surface changes).
    """
    from scipy.optimize import nnls

    n, v, _ = verts.shape
    mean_v, mean_j = verts.mean(0), joints.mean(0)
    reg = np.zeros((24, v))
    for j in range(24):
        cand = np.argsort(np.linalg.norm(mean_v - mean_j[j], axis=1))[:candidates]

        def solve(ids):
            a = verts[:, ids].transpose(0, 2, 1).reshape(n * 3, len(ids))
            b = joints[:, j].reshape(n * 3)
            big = 1e3
            a = np.vstack([a, np.full((1, len(ids)), big)])
            b = np.concatenate([b, [big]])
            x, _ = nnls(a, b, maxiter=50 * len(ids))
            return x

        x = solve(cand)
        top = cand[np.argsort(-x)[:support]]
        top = top[x[np.argsort(-x)[:support]] > 0]
        x = solve(top)
        reg[j, top] = x / x.sum()
    return reg


# ---------------------------------------------------------------------------
# Keypoints and surface charts


def anatomical_keypoints(verts: np.ndarray, bone_w: np.ndarray, bone_labels: Sequence[str],
                         caps: np.ndarray, regressor: np.ndarray, joints: np.ndarray) -> Dict[str, tuple]:
    """Keypoint definitions (name -> (vertex ids, weights)) placed on the mean T-pose mesh.

    Face: eyes and mouth at the centres of the capped eye and mouth openings,
    nose at the most anterior midline point between them, ears at the most
    lateral head points at eye-to-mouth height, top of the head at the highest
    vertex.  Feet: big and small toe tips (the most anterior vertices of the
    first and fifth toe), heels (the most posterior vertex of the lower heel).
    Finger tips: the vertex of each last phalanx farthest from the wrist.
    Dataset joints that sit inside the body are combinations of the joint
    regressor's rows (LSP hips and neck, MPII pelvis and thorax, H36M spine).
    """
    dom = np.asarray(bone_labels)[bone_w.argmax(1)]
    J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    cap_pos = verts[caps]
    mouth = caps[np.argmin(np.abs(cap_pos[:, 0]))]
    left_eye = caps[np.argmax(cap_pos[:, 0])]
    right_eye = caps[np.argmin(cap_pos[:, 0])]
    eye_y, mouth_y = verts[left_eye, 1], verts[mouth, 1]
    head = np.isin(dom, ["head", "neck03"])
    x, y, z = verts.T
    defs: Dict[str, tuple] = {}

    def one(name, candidates, score):
        ids = np.flatnonzero(candidates)
        if ids.size == 0:
            raise RuntimeError(f"no vertex for keypoint {name!r}")
        defs[name] = ((int(ids[np.argmax(score[ids])]),), (1.0,))

    def rows(name, mix):
        row = sum(w * regressor[J[j]] for j, w in mix.items())
        ids = np.flatnonzero(row)
        defs[name] = (tuple(int(i) for i in ids), tuple(float(w) for w in row[ids] / row[ids].sum()))

    defs["left_eye"], defs["right_eye"] = ((int(left_eye),), (1.0,)), ((int(right_eye),), (1.0,))
    one("nose", head & (np.abs(x) < 0.01) & (y > mouth_y) & (y < eye_y), z)
    band = head & (y > mouth_y) & (y < eye_y + 0.01)
    one("left_ear", band, x)
    one("right_ear", band, -x)
    one("head_top_lsp", head, y)
    top = verts[defs["head_top_lsp"][0][0]]
    near_top = np.flatnonzero(head & (np.linalg.norm(verts - top, axis=1) < 0.03))
    defs["head_h36m"] = (tuple(int(i) for i in near_top), (1.0 / len(near_top),) * len(near_top))
    defs["jaw_h36m"] = ((int(mouth),), (1.0,))
    for side, s in (("left", "L"), ("right", "R")):
        one(f"{side}_big_toe", np.isin(dom, [f"toe1-1.{s}", f"toe1-2.{s}"]), z)
        one(f"{side}_small_toe", np.isin(dom, [f"toe5-1.{s}", f"toe5-2.{s}", f"toe5-3.{s}"]), z)
        ankle = joints[J[f"{side}_ankle"]]
        one(f"{side}_heel", (dom == f"foot.{s}") & (y < ankle[1] - 0.03), -z)
        wrist = joints[J[f"{side}_wrist"]]
        dist = np.linalg.norm(verts - wrist, axis=1)
        for k, tip in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1):
            one(f"{side}_{tip}", dom == f"finger{k}-3.{s}", dist)
        rows(f"{side}_hip_lsp", {f"{side}_hip": 1.0})
    rows("neck_lsp", {"neck": 1.0})
    rows("pelvis_mpii", {"pelvis": 1.0})
    rows("thorax_mpii", {"neck": 0.5, "spine3": 0.5})
    rows("spine_h36m", {"pelvis": 0.5, "neck": 0.5})
    return defs


def surface_charts(verts: np.ndarray, faces: np.ndarray, weights: np.ndarray, joints: np.ndarray):
    """DensePose-style charts of the mean T-pose mesh (see :mod:`smplfast.body.charts`)."""
    from .charts import densepose_parts_from_weights, flatten_charts

    parts = densepose_parts_from_weights(verts, faces, weights, joints)
    return flatten_charts(verts, faces, parts)


# ---------------------------------------------------------------------------
# Output


class _Zeros:
    """Pickles as ``numpy.zeros(shape, dtype)`` so that zero posedirs cost no space."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype).str

    def __reduce__(self):
        return (np.zeros, (self.shape, self.dtype))


def write_pickle(model: ModelData, path: Path) -> None:
    """Write ``model`` as a plain-numpy pickle readable by smplx; zero posedirs are stored compactly."""
    validate_model(model)
    # float32 like smplx's buffers, uint32 faces like SMPL's own files.
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == "f" else None)
              for k, v in model.arrays().items()}
    arrays["f"] = arrays["f"].astype(np.uint32)
    arrays.update({k: np.ascontiguousarray(v) for k, v in model.extras.items()})
    if not np.any(arrays["posedirs"]):
        arrays["posedirs"] = _Zeros(arrays["posedirs"].shape, arrays["posedirs"].dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(arrays, fh, protocol=2)
    tmp.replace(path)


def t_posed_samples(model, phenotypes, combine, weights, offset, chunk: int = 100):
    """T-posed meshes (n, V, 3) and joints (n, 24, 3) in SMPL's frame for Anny phenotypes."""
    verts, joints = [], []
    for i in range(0, phenotypes.shape[0], chunk):
        anny_v, heads = _rest_state(model, phenotypes[i:i + chunk])
        v = np.stack([combine @ x for x in anny_v]) @ ANNY_TO_SMPL.T + offset
        j = joint_positions(heads @ ANNY_TO_SMPL.T + offset, model.bone_labels)
        v, j = t_pose(v, j, weights)
        verts.append(v)
        joints.append(j)
    return np.concatenate(verts), np.concatenate(joints)


def build_gender(model, gender: str, faces: np.ndarray, combine: np.ndarray,
                 weights: np.ndarray, offset: np.ndarray, num_samples: int, seed: int):
    """Shape samples -> (ModelData, report dict) for one gender."""
    phen = _sample_phenotypes(model, num_samples, gender, seed)
    verts, joints = t_posed_samples(model, phen, combine, weights, offset)
    mean, shapedirs, ratio = shape_pca(verts, NUM_BETAS, seed)
    # The regressor is fitted on the first samples (NNLS cost grows with them) and
    # evaluated on all of them.
    regressor = fit_joint_regressor(verts[:REGRESSOR_SAMPLES], joints[:REGRESSOR_SAMPLES])

    # Joint error of the regressor on the samples, and on their PCA reconstructions.
    x = (verts - mean).reshape(num_samples, -1)
    basis = shapedirs.reshape(-1, NUM_BETAS)
    betas = np.linalg.lstsq(basis, x.T, rcond=None)[0].T
    recon = mean + (betas @ basis.T).reshape(verts.shape)
    err = np.linalg.norm(np.einsum("jv,nvc->njc", regressor, verts) - joints, axis=-1)
    err_recon = np.linalg.norm(np.einsum("jv,nvc->njc", regressor, recon) - joints, axis=-1)
    heights = verts[..., 1].max(1) - verts[..., 1].min(1)

    data = ModelData(
        v_template=mean.astype(np.float32),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=np.zeros((mean.shape[0], 3, 207), dtype=np.float32),
        J_regressor=regressor.astype(np.float32),
        weights=weights.astype(np.float32),
        kintree_table=np.stack([np.where(SMPL_PARENTS < 0, ROOT_SENTINEL, SMPL_PARENTS),
                                np.arange(24)]).astype(np.int64),
        f=faces.astype(np.int64),
    )
    report = {
        "gender": gender,
        "num_samples": num_samples,
        "explained_variance": [round(float(r), 6) for r in ratio],
        "explained_variance_total": round(float(ratio.sum()), 6),
        "pca_vertex_error_mm": {"mean": float(np.linalg.norm(recon - verts, axis=-1).mean() * 1e3),
                                "max": float(np.linalg.norm(recon - verts, axis=-1).max() * 1e3)},
        "joint_regressor_error_mm": {"mean": float(err.mean() * 1e3), "max": float(err.max() * 1e3)},
        "joint_regressor_error_per_joint_mm": {
            name: round(float(e), 2) for name, e in zip(SMPL_JOINT_NAMES, err.mean(0) * 1e3)},
        "joint_regressor_error_on_pca_mm": {"mean": float(err_recon.mean() * 1e3),
                                            "max": float(err_recon.max() * 1e3)},
        "sample_height_m": {"min": float(heights.min()), "mean": float(heights.mean()),
                            "max": float(heights.max())},
        "beta_std": [round(float(s), 4) for s in betas.std(0)],
    }
    return data, report


def build(out_dir: Path, genders: Sequence[str] = GENDERS, num_samples: int = NUM_SHAPE_SAMPLES,
          seed: int = SEED) -> dict:
    """Convert Anny into SMPL-format model files in ``out_dir``; returns the report."""
    model = _load_anny()
    removed = _removed_face_mask(model)
    faces, combine, num_caps = clean_mesh(model.faces.cpu().numpy(), model.template_vertices.shape[0],
                                          removed)
    group = _group_index(model.bone_labels, model.bone_parents)
    bone_w = bone_weights(model.vertex_bone_weights.cpu().numpy(), model.vertex_bone_indices.cpu().numpy(),
                          len(model.bone_labels), combine)
    weights, lost = merged_weights(bone_w, group)
    # Origin: the pelvis of Anny's default (phenotype 0.5) body.
    import torch

    _, heads0 = _rest_state(model, torch.full((1, len(model.phenotype_labels)), 0.5, dtype=model.dtype))
    offset = -joint_positions(heads0 @ ANNY_TO_SMPL.T, model.bone_labels)[0, 0]

    report = {
        "anny_version": ANNY_VERSION,
        "num_vertices": int(combine.shape[0]),
        "num_faces": int(len(faces)),
        "num_capped_holes": num_caps,
        "max_influences": MAX_INFLUENCES,
        "skinning_weight_dropped": {"mean": float(lost.mean()), "max": float(lost.max())},
        "models": {},
    }
    caps = np.arange(combine.shape[0] - num_caps, combine.shape[0])
    charts = None
    for i, gender in enumerate(genders):
        data, rep = build_gender(model, gender, faces, combine, weights, offset, num_samples, seed + i)
        rest_joints = data.J_regressor @ data.v_template
        defs = anatomical_keypoints(data.v_template, bone_w, model.bone_labels, caps,
                                    data.J_regressor, rest_joints)
        if charts is None:  # one mesh: the charts of the first model's mean shape serve all
            charts = surface_charts(data.v_template, data.f, data.weights, rest_joints)
            report["uv_charts"] = {"num_chart_vertices": charts.num_chart_vertices,
                                   "num_parts": charts.num_parts}
        data.extras.update(definitions_to_arrays(defs))
        data.extras.update(charts.to_npz_dict())
        write_pickle(data, out_dir / f"SMPL_{gender.upper()}.pkl")
        report["models"][gender] = rep
    (out_dir / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "anny_smpl")
    parser.add_argument("--samples", type=int, default=NUM_SHAPE_SAMPLES)
    parser.add_argument("--genders", nargs="+", default=list(GENDERS), choices=GENDERS)
    args = parser.parse_args(argv)
    report = build(args.out, args.genders, args.samples)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
