"""HoloPose's part-based mixture-of-experts rotation regressor (TRAINING_SPEC §4.3, Güler & Kokkinos
CVPR 2019, Eq. 1–2), with the neighbourhood table and the ablation arms.

Keypoint vocabulary (:data:`HOLOPOSE_KEYPOINTS`, 29 points): SMPL's 24 skeleton joints (``smpl_24``)
followed by the 5 face points of ``smplx_45`` (24 nose, 25 right eye, 26 left eye, 27 right ear,
28 left ear). Part features ``f_j`` (B, 29, D) are pooled at these points.

**Neighbourhoods** (:func:`build_neighbourhoods`), generated from the kinematic tree ``parents``:
``N(i) = {parent(i), i} ∪ children(i)`` for the body joints i = 1..23 (knee: {hip, knee, ankle};
hands, which have no child: {wrist, hand}); ``neck`` and ``head`` also get the 5 face points; the root
(pelvis, joint 0) gets {pelvis} ∪ children(pelvis) ∪ {spine2}, i.e. {pelvis, L/R hip, spine1, spine2}.

**Eq. 2, part-based fusion** (``mode="moe"``): for body joint i and each j ∈ N(i) a separate linear
layer gives ``w_{·,j}^i = Linear_{i,j}(f_j) ∈ R^K``; with ``m_{i,j}`` = visibility of keypoint j,

    θ^i = Σ_{j,k} exp(w_{k,j}^i) m_{i,j} C_{i,k} / Σ_{j,k} exp(w_{k,j}^i) m_{i,j},

a softmax over the concatenated (j, k) axis with missing j at −inf (a masked log-sum-exp; not a
per-j softmax followed by an average). When no j ∈ N(i) is visible, θ^i = 0 (the rest pose): the
softmax is then evaluated on finite stand-in logits and multiplied by 0, so neither the value nor
the gradient is ever NaN. The weights of all (i, j) pairs form one (P, D, K) tensor and all pairs
are evaluated by one einsum. ``R_i = euler_to_matrix(θ^i, order_i)`` with the per-joint order of
the cluster file. The same result read as a mixture of per-j experts
``θ̂_j = Σ_k softmax_k(w_{·,j}) C_k`` with gates ``π_j ∝ m_j Σ_k exp(w_{k,j})`` is returned for
logging (``expert_euler``, ``expert_weights``).

A joint whose cluster data failed the wrap-around check (``wrap_ok`` False in the cluster file) is
regressed by 6D votes instead (below), and listed in :attr:`PartMoERotation.vote_joints`.

**Votes** (root always; every body joint with ``mode="direct6d"``): each visible j ∈ N(i) gives a
6D rotation r_j (SPIN layout) and a score a_j; ``R_i = GS(Σ_j softmax_j(a) r_j)`` over the visible
j. All-missing: a body joint gets the identity (rest pose), the root a learned 6D fallback
(initialised at the mean parameters' root orientation, as are the biases of the root votes).

**Direct Euler** (``mode="direct_euler"``): each visible j gives unconstrained Euler angles (in the
joint's order from the cluster file, or XYZ without one) and a score; fused by the same masked
softmax; all-missing → 0.

Initialisation: every (i, j) linear layer is Xavier-uniform with gain 0.01 (as HMR's output heads),
biases 0 except the 6D biases (identity for body joints, the mean root orientation for the root), so
at initialisation the MoE gives about the uniform mixture of each joint's centres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from smplfast.body.keypoints import keypoint_names
from smplfast.body.random_model import SMPL_JOINT_NAMES, SMPL_PARENTS

from ..moe_clusters import ORDER_TABLE, MoEClusters, load_clusters
from ..rotations import IDENTITY_6D, euler_to_matrix_per_joint, rot6d_to_matrix

__all__ = [
    "HOLOPOSE_KEYPOINTS",
    "FACE_POINTS",
    "MOE_MODES",
    "Neighbourhoods",
    "build_neighbourhoods",
    "masked_softmax",
    "MoEOutput",
    "PartMoERotation",
]

#: The 29-point keypoint vocabulary: ``smpl_24`` + nose, right eye, left eye, right ear, left ear.
HOLOPOSE_KEYPOINTS: Tuple[str, ...] = tuple(keypoint_names("smplx_45")[:29])
#: Indices of the 5 face points in :data:`HOLOPOSE_KEYPOINTS`.
FACE_POINTS: Tuple[int, ...] = (24, 25, 26, 27, 28)
#: Regressor variants of :class:`PartMoERotation`.
MOE_MODES = ("moe", "direct6d", "direct_euler")

assert HOLOPOSE_KEYPOINTS[:24] == tuple(SMPL_JOINT_NAMES)
assert HOLOPOSE_KEYPOINTS[24:] == ("nose", "right_eye", "left_eye", "right_ear", "left_ear")


@dataclass(frozen=True)
class Neighbourhoods:
    """``body[i - 1]``: keypoint indices N(i) of body joint i = 1..23 (sorted); ``root``: N(root)."""

    body: Tuple[Tuple[int, ...], ...]
    root: Tuple[int, ...]

    @property
    def num_pairs(self) -> int:
        return sum(len(n) for n in self.body)

    def named(self) -> Dict[str, Tuple[str, ...]]:
        """``{joint name: keypoint names}``, the root under ``"root"``."""
        out = {"root": tuple(HOLOPOSE_KEYPOINTS[k] for k in self.root)}
        for i, n in enumerate(self.body, start=1):
            out[SMPL_JOINT_NAMES[i]] = tuple(HOLOPOSE_KEYPOINTS[k] for k in n)
        return out


def _children(parents: Sequence[int]) -> List[List[int]]:
    ch: List[List[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            ch[int(p)].append(j)
    return ch


def build_neighbourhoods(
    parents: Optional[Sequence[int]] = None,
    face_joints: Sequence[str] = ("neck", "head"),
    face_points: Sequence[int] = FACE_POINTS,
    root_extra: Sequence[str] = ("spine2",),
) -> Neighbourhoods:
    """The neighbourhood table from the kinematic tree ``parents`` (default SMPL's; root parent −1).

    ``N(i) = {parent(i), i} ∪ children(i)`` for i ≥ 1, plus ``face_points`` for the joints named in
    ``face_joints``; ``N(root) = {root} ∪ children(root) ∪ root_extra``."""
    parents = [int(p) for p in (SMPL_PARENTS if parents is None else parents)]
    if len(parents) != 24 or parents[0] >= 0 or any(not (0 <= p < j) for j, p in enumerate(parents) if j > 0):
        raise ValueError("parents must describe SMPL's 24-joint tree: parents[0] < 0, 0 <= parents[j] < j")
    ch = _children(parents)
    face_idx = {SMPL_JOINT_NAMES.index(n) for n in face_joints}
    body = []
    for i in range(1, 24):
        n = {parents[i], i, *ch[i]}
        if i in face_idx:
            n.update(int(k) for k in face_points)
        body.append(tuple(sorted(n)))
    root = {0, *ch[0], *(SMPL_JOINT_NAMES.index(n) for n in root_extra)}
    return Neighbourhoods(tuple(body), tuple(sorted(root)))


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tuple[Tensor, Tensor]:
    """Softmax of ``logits`` along ``dim`` over the entries where ``mask`` (broadcastable bool) is
    True, and ``any_visible`` (that dim reduced). Rows without a True entry get all-zero weights; the
    softmax of such a row is taken over finite stand-in logits, so values and gradients are finite."""
    mask = mask.expand_as(logits)
    any_vis = mask.any(dim=dim, keepdim=True)
    use = mask | ~any_vis
    w = torch.softmax(logits.masked_fill(~use, float("-inf")), dim=dim)
    return w * any_vis.to(w.dtype), any_vis.squeeze(dim)


class _PairTable(nn.Module):
    """Index buffers of the (joint, keypoint) pairs of some joints' neighbourhoods.

    ``pair_kp`` (P,): keypoint of each pair; ``pad_index`` (J, N): pair index per (joint, slot), P
    for padding; ``pad_kp`` (J, N): keypoint per slot (0 for padding); ``pad_valid`` (J, N)."""

    def __init__(self, neighbourhoods: Sequence[Sequence[int]]):
        super().__init__()
        nmax = max(len(n) for n in neighbourhoods)
        pair_kp, pad_index, pad_kp, pad_valid = [], [], [], []
        for n in neighbourhoods:
            idx = list(range(len(pair_kp), len(pair_kp) + len(n)))
            pair_kp.extend(n)
            pad = nmax - len(n)
            pad_index.append(idx + [-1] * pad)
            pad_kp.append(list(n) + [0] * pad)
            pad_valid.append([True] * len(n) + [False] * pad)
        P = len(pair_kp)
        pad_index = [[P if v < 0 else v for v in row] for row in pad_index]
        self.register_buffer("pair_kp", torch.tensor(pair_kp, dtype=torch.long), persistent=False)
        self.register_buffer("pad_index", torch.tensor(pad_index, dtype=torch.long), persistent=False)
        self.register_buffer("pad_kp", torch.tensor(pad_kp, dtype=torch.long), persistent=False)
        self.register_buffer("pad_valid", torch.tensor(pad_valid, dtype=torch.bool), persistent=False)
        self.num_pairs = P
        self.num_joints = len(neighbourhoods)
        self.max_size = nmax

    def linear(self, feats: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Per-pair linear layers on the pair's keypoint feature, padded: (B, J, N, out)."""
        y = torch.einsum("bpd,pdo->bpo", feats[:, self.pair_kp], weight) + bias  # (B, P, out)
        y = torch.cat([y, y.new_zeros(y.shape[0], 1, y.shape[2])], dim=1)
        return y[:, self.pad_index]

    def mask(self, vis: Tensor) -> Tensor:
        """Visibility (B, J, N) of each slot from keypoint visibility (B, num_keypoints)."""
        return vis[:, self.pad_kp] & self.pad_valid


def _xavier(P: int, fan_in: int, fan_out: int, gain: float) -> nn.Parameter:
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return nn.Parameter(torch.empty(P, fan_in, fan_out).uniform_(-a, a))


@dataclass
class MoEOutput:
    """Output of :class:`PartMoERotation`.

    ``rotmat`` (B, 24, 3, 3): root then body joints; ``euler`` (B, 23, 3): each body joint's Euler
    angles in its order (zeros for joints regressed by 6D votes; None for ``direct6d``);
    ``any_visible`` (B, 23) and ``root_any_visible`` (B,): whether the neighbourhood had a visible
    keypoint; ``expert_euler`` (B, 23, N, 3) and ``expert_weights`` (B, 23, N) (detached, ``moe``
    only; padding slots have weight 0); ``root_weights`` (B, N_root)."""

    rotmat: Tensor
    euler: Optional[Tensor]
    any_visible: Tensor
    root_any_visible: Tensor
    root_weights: Tensor
    expert_euler: Optional[Tensor] = None
    expert_weights: Optional[Tensor] = None


class PartMoERotation(nn.Module):
    """Part-based rotation regressor: part features (B, 29, D) and keypoint visibility (B, 29) →
    24 rotation matrices (root + 23 body joints).

    ``clusters``: a :class:`~smplfast_train.moe_clusters.MoEClusters`, K (int: the repository's
    ``training/data/moe_clusters_K{K}.npz``) or a path; required for ``mode="moe"``, optional for
    ``direct_euler`` (gives the Euler orders), unused by ``direct6d``. ``root_6d``: initial and
    fallback root orientation in SPIN's 6D (default identity)."""

    def __init__(
        self,
        feat_dim: int,
        clusters: Union[None, int, str, MoEClusters] = 32,
        mode: str = "moe",
        neighbourhoods: Optional[Neighbourhoods] = None,
        num_keypoints: int = 29,
        root_6d: Optional[Sequence[float]] = None,
        init_gain: float = 0.01,
    ):
        super().__init__()
        if mode not in MOE_MODES:
            raise ValueError(f"mode must be one of {MOE_MODES}; got {mode!r}")
        self.mode = mode
        self.feat_dim = int(feat_dim)
        self.num_keypoints = int(num_keypoints)
        nb = build_neighbourhoods() if neighbourhoods is None else neighbourhoods
        if max(max(n) for n in (*nb.body, nb.root)) >= self.num_keypoints:
            raise ValueError("a neighbourhood uses a keypoint index >= num_keypoints")
        self.neighbourhoods = nb
        cl = None
        if clusters is not None and mode != "direct6d":
            cl = clusters if isinstance(clusters, MoEClusters) else load_clusters(clusters)
        if mode == "moe" and cl is None:
            raise ValueError("mode='moe' needs cluster centres (clusters=K or a path)")
        self.orders: Tuple[str, ...] = cl.orders if cl is not None else ("XYZ",) * 23
        # saved with the weights, so that a checkpoint is never read with other Euler orders
        self.register_buffer("euler_order_index", torch.tensor([ORDER_TABLE.index(o) for o in self.orders]))
        D = self.feat_dim

        if mode == "moe":
            moe_joints = [i for i in range(23) if bool(cl.wrap_ok[i])]
            vote_joints = [i for i in range(23) if not bool(cl.wrap_ok[i])]
        elif mode == "direct6d":
            moe_joints, vote_joints = [], list(range(23))
        else:
            moe_joints, vote_joints = list(range(23)), []
        self.moe_joints: Tuple[int, ...] = tuple(moe_joints)  # body-joint indices 0..22 (joint i + 1)
        self.vote_joints: Tuple[int, ...] = tuple(vote_joints)
        self.register_buffer("moe_index", torch.tensor(moe_joints, dtype=torch.long), persistent=False)
        self.register_buffer("vote_index", torch.tensor(vote_joints, dtype=torch.long), persistent=False)

        self.moe_pairs = _PairTable([nb.body[i] for i in moe_joints]) if moe_joints else None
        if mode == "moe" and moe_joints:
            K = cl.K
            self.num_clusters = K
            self.register_buffer("centers", torch.as_tensor(cl.centers[moe_joints], dtype=torch.float32))
            self.moe_weight = _xavier(self.moe_pairs.num_pairs, D, K, init_gain)
            self.moe_bias = nn.Parameter(torch.zeros(self.moe_pairs.num_pairs, K))
        elif mode == "direct_euler":
            self.num_clusters = 0
            self.moe_weight = _xavier(self.moe_pairs.num_pairs, D, 4, init_gain)  # 3 angles + score
            self.moe_bias = nn.Parameter(torch.zeros(self.moe_pairs.num_pairs, 4))

        self.vote_pairs = _PairTable([nb.body[i] for i in vote_joints]) if vote_joints else None
        if vote_joints:
            P = self.vote_pairs.num_pairs
            self.vote_weight = _xavier(P, D, 7, init_gain)  # 6D + score
            self.vote_bias = nn.Parameter(torch.cat([torch.tensor(IDENTITY_6D).expand(P, 6), torch.zeros(P, 1)], 1).clone())

        r6 = torch.tensor(IDENTITY_6D if root_6d is None else [float(v) for v in root_6d], dtype=torch.float32)
        if r6.shape != (6,):
            raise ValueError("root_6d must have 6 values")
        self.root_pairs = _PairTable([nb.root])
        Pr = self.root_pairs.num_pairs
        self.root_weight = _xavier(Pr, D, 7, init_gain)
        self.root_bias = nn.Parameter(torch.cat([r6.expand(Pr, 6), torch.zeros(Pr, 1)], 1).clone())
        self.root_fallback = nn.Parameter(r6.clone())
        self.register_buffer("identity_6d", torch.tensor(IDENTITY_6D, dtype=torch.float32), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "euler_order_index"
        if key in state_dict and not torch.equal(state_dict[key].cpu().long(), self.euler_order_index.cpu()):
            theirs = [ORDER_TABLE[int(i)] for i in state_dict[key]]
            raise ValueError(f"PartMoERotation: the state dict was saved with Euler orders {theirs}, this module "
                             f"uses {list(self.orders)} (build it with the same cluster file)")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --------------------------------------------------------------------------------------------

    def num_pairs(self) -> int:
        """(joint, keypoint) pairs of the body joints (root excluded)."""
        return self.neighbourhoods.num_pairs

    def _votes(self, table: _PairTable, weight: Tensor, bias: Tensor, feats: Tensor, vis: Tensor, fallback: Tensor):
        out = table.linear(feats, weight, bias)  # (B, J, N, 7)
        w, any_vis = masked_softmax(out[..., 6], table.mask(vis), dim=-1)  # (B, J, N), (B, J)
        fused = (w[..., None] * out[..., :6]).sum(-2)
        fused = torch.where(any_vis[..., None], fused, fallback.to(fused.dtype).expand_as(fused))
        return rot6d_to_matrix(fused), any_vis, w

    def forward(self, feats: Tensor, vis: Tensor) -> MoEOutput:
        """``feats`` (B, num_keypoints, D) part features, ``vis`` (B, num_keypoints) bool (or 0/1)."""
        if feats.dim() != 3 or feats.shape[1:] != (self.num_keypoints, self.feat_dim):
            raise ValueError(f"feats must be (B, {self.num_keypoints}, {self.feat_dim}); got {tuple(feats.shape)}")
        vis = vis.bool()
        if vis.shape != feats.shape[:2]:
            raise ValueError(f"vis must be (B, {self.num_keypoints}); got {tuple(vis.shape)}")
        B = feats.shape[0]
        dtype = feats.dtype
        body = feats.new_zeros(B, 23, 3, 3)
        euler = feats.new_zeros(B, 23, 3) if self.mode != "direct6d" else None
        any_body = torch.zeros(B, 23, dtype=torch.bool, device=feats.device)
        expert_euler = expert_weights = None

        if self.moe_joints:
            t = self.moe_pairs
            out = t.linear(feats, self.moe_weight, self.moe_bias)  # (B, J, N, K) or (B, J, N, 4)
            m = t.mask(vis)  # (B, J, N)
            J, N = t.num_joints, t.max_size
            if self.mode == "moe":
                K = out.shape[-1]
                w, any_vis = masked_softmax(out.reshape(B, J, N * K), m[..., None].expand(B, J, N, K).reshape(B, J, N * K))
                theta = torch.einsum("bjk,jkc->bjc", w.reshape(B, J, N, K).sum(2), self.centers.to(dtype))
                with torch.no_grad():  # the mixture-of-experts reading, for logging
                    expert_euler = torch.einsum("bjnk,jkc->bjnc", torch.softmax(out, -1), self.centers.to(dtype))
                    lse = torch.logsumexp(out, -1)
                    expert_weights, _ = masked_softmax(lse, m)
            else:  # direct_euler
                w, any_vis = masked_softmax(out[..., 3], m)
                theta = (w[..., None] * out[..., :3]).sum(-2)  # all-missing: w = 0, so theta = 0
            orders = [self.orders[i] for i in self.moe_joints]
            R = euler_to_matrix_per_joint(theta, orders)
            body = body.index_copy(1, self.moe_index, R)
            euler = euler.index_copy(1, self.moe_index, theta)
            any_body = any_body.index_copy(1, self.moe_index, any_vis)

        if self.vote_joints:
            R, any_vis, _ = self._votes(self.vote_pairs, self.vote_weight, self.vote_bias, feats, vis, self.identity_6d)
            body = body.index_copy(1, self.vote_index, R)
            any_body = any_body.index_copy(1, self.vote_index, any_vis)

        Rroot, any_root, wroot = self._votes(self.root_pairs, self.root_weight, self.root_bias, feats, vis, self.root_fallback)
        rotmat = torch.cat([Rroot, body], dim=1)
        if expert_euler is not None and len(self.moe_joints) < 23:
            full_e = feats.new_zeros(B, 23, *expert_euler.shape[2:])
            full_w = feats.new_zeros(B, 23, expert_weights.shape[2])
            expert_euler = full_e.index_copy(1, self.moe_index, expert_euler)
            expert_weights = full_w.index_copy(1, self.moe_index, expert_weights)
        return MoEOutput(rotmat, euler, any_body, any_root[:, 0], wroot[:, 0], expert_euler, expert_weights)
