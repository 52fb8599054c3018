"""Pavlakos et al. (CVPR 2018) PosePrior and ShapePrior, their synthetic training instances and losses
(TRAINING_SPEC §5.3, §8 P1-P6).

**Networks.**

* :class:`PosePrior`: ``(B, K, 3)`` keypoints (x, y in the crop's [-1, 1], confidence; a missing joint is
  (0, 0, 0)) -> ``(B, 72)`` axis-angle θ. ``Linear(3K→1024) → BN → ReLU → Dropout(0.5)``, two of
  Martinez et al.'s residual blocks (``[Linear → BN → ReLU → Dropout] × 2 + skip``; the paper's
  "bilinear units", §8 P5), ``Linear(1024→72)``; Kaiming init (``out_init_scale`` scales the output
  layer's; 1 by default: a 0.01 start lowered the training loss but not the wild_test error in a
  1k-step cpu check).
* :class:`ShapePrior`: ``(B, 1, 64, 64)`` silhouette -> ``(B, 10)`` β. Five ``conv3×3 → BN → ReLU →
  maxpool 2`` (32, 64, 128, 128, 128 channels; 64 → 2), flatten (512), ``Linear(1024) → BN → ReLU →
  Dropout``, one residual block, ``Linear(1024→10)``.
* :class:`PavlakosPriors`: both, as one module (``pose_prior``, ``shape_prior``).

**Synthetic instances** (:func:`make_instances`, :class:`InstanceBank`, :class:`PriorInstances`).
Poses from :func:`smplfast.body.samplers.sample_poses` restricted to the bank's families (``matched``:
all of :data:`~smplfast.body.samplers.POSE_FAMILIES`; ``shifted``: the lab families,
:data:`smplfast.data.splits.LAB_FAMILIES`), drawn upright with zero global orientation; betas from
``sample_betas``. The viewpoint becomes the global orientation in the camera frame (x right, y down,
z forward)::

    R = R_z(roll) · R_x(elevation) · R_x(π) · R_y(yaw),   yaw ~ U(-180°, 180°), elevation ~ U(-15°, 35°),
                                                          roll ~ U(-10°, 10°)

(``R_x(π)`` turns the model's frame, y up and facing +z, into an upright person facing the camera:
global orientation (π, 0, 0); elevation > 0 is a camera above the person). A crop-equivalent focal
length f ~ log-U(500, 5000) px for a 224 px crop sets the distance ``d = f · 1.2 · 1.7 m / 224`` of the
body's 3D box centre on the optical axis (the perspective strength; the crop removes the scale). The
crop is SPIN's: the square of side 1.2 × the larger side of the projected mesh's box, centred on the
box (as ``smplfast synth`` makes ``center`` / ``scale`` from the silhouette), keypoints in [-1, 1].
Silhouettes are rasterised (:func:`smplfast.ops.rasterize`) into the same crop at 64² and stored
bit-packed (``np.packbits``). Instances come in chunks of :data:`CHUNK` seeded by ``(seed, chunk)``, so
a bank of N instances is the prefix of any larger bank of the same seed and families.

Detection simulation per draw (:func:`simulate_detections`; seeded by ``(seed, epoch, index)``): Gaussian
noise σ = 2 % of the box side, confidences U(0.5, 1), with p 0.3 one to three joints dropped (0, 0, 0),
with p 0.02 a left/right swap of one arm or one leg (shoulder-elbow-wrist or hip-knee-ankle).

**Losses.** :func:`param_loss` (``aa``: ``‖θ̂ − θ‖²`` over the 72 values; ``rotmat``: over the 24 × 9
Rodrigues entries), :func:`betas_loss` ``‖β̂ − β‖²``, both the paper's squared norms per sample
(``reduction="mean"`` divides by the number of values: the MSE), averaged over the batch;
:func:`vertex_loss` ``(6890 / N) Σ_i ‖P̂_i − P_i‖²`` = 6890 × the mean squared vertex error, on all
vertices or a uniform subset (the same expectation), averaged over the batch. The meshes come from the
SMPL layer inside the autograd graph (:func:`prior_vertex_losses`; §8 P1).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .rotations import axis_angle_to_matrix

__all__ = [
    "NUM_KEYPOINTS", "SIL_RES", "CHUNK", "PAPER_NUM_VERTICES", "BANK_FAMILIES", "ResidualBlock", "PosePrior",
    "ShapePrior", "PavlakosPriors", "PavlakosPipeline", "bank_families", "make_instances", "render_silhouettes", "pack_silhouettes",
    "unpack_silhouettes", "InstanceBank", "simulate_detections", "PriorInstances", "param_loss", "betas_loss",
    "vertex_loss", "prior_vertex_losses", "load_bank", "SWAP_GROUPS", "annotated_keypoints", "weak_perspective_fit",
    "to_pixels", "reprojection_losses", "DetectionItems", "build_e2e_train_set",
]

NUM_KEYPOINTS = 14          # lsp_14
SIL_RES = 64
CHUNK = 1024                # instances per seeded chunk
PAPER_NUM_VERTICES = 6890   # SMPL's vertex count (the paper's sum), §5.3 normalisation
BOX_MARGIN = 1.2
CROP_REF = 224.0            # the crop the focal length is expressed in
BODY_HEIGHT_REF = 1.7       # metres, for the distance of the body
BANK_VERSION = 1


# ------------------------------------------------------------------------------------------ networks
def _kaiming(module: nn.Module, out: Optional[nn.Linear] = None, out_scale: float = 1.0) -> None:
    """Kaiming-normal weights, zero biases; the output layer ``out`` scaled by ``out_scale`` (so the first
    predictions sit near zero, the rest pose and mean shape, instead of O(1) random rotations)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if out is not None:
        with torch.no_grad():
            out.weight.mul_(out_scale)


def _unit(width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout))


class ResidualBlock(nn.Module):
    """Martinez et al. 2017: ``x + [Linear → BN → ReLU → Dropout] × 2 (x)``."""

    def __init__(self, width: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(_unit(width, dropout), _unit(width, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class PosePrior(nn.Module):
    """Keypoints ``(B, K, 3)`` (x, y, confidence) -> axis-angle pose ``(B, 72)``."""

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 1024, blocks: int = 2, dropout: float = 0.5,
                 out_init_scale: float = 1.0):
        super().__init__()
        self.num_keypoints = int(num_keypoints)
        self.inp = nn.Sequential(nn.Linear(3 * self.num_keypoints, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, 72)
        _kaiming(self, self.out, out_init_scale)

    def forward(self, keypoints: Tensor) -> Tensor:
        if keypoints.dim() != 3 or keypoints.shape[1:] != (self.num_keypoints, 3):
            raise ValueError(f"PosePrior: keypoints must be (B, {self.num_keypoints}, 3); got {tuple(keypoints.shape)}")
        x = torch.nan_to_num(keypoints.float(), nan=0.0, posinf=0.0, neginf=0.0).flatten(1)
        return self.out(self.blocks(self.inp(x)))


class ShapePrior(nn.Module):
    """Silhouette ``(B, 1, 64, 64)`` -> shape ``(B, 10)``."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 128, 128), width: int = 1024, blocks: int = 1,
                 dropout: float = 0.5, res: int = SIL_RES, num_betas: int = 10, out_init_scale: float = 1.0):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.res = int(res)
        self.features = nn.Sequential(*layers)
        side = self.res // 2 ** len(channels)
        self.fc = nn.Sequential(nn.Linear(c_in * side * side, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                                nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.out = nn.Linear(width, num_betas)
        _kaiming(self, self.out, out_init_scale)

    def forward(self, silhouette: Tensor) -> Tensor:
        if silhouette.dim() == 3:
            silhouette = silhouette[:, None]
        if silhouette.dim() != 4 or silhouette.shape[1:] != (1, self.res, self.res):
            raise ValueError(f"ShapePrior: silhouette must be (B, 1, {self.res}, {self.res}); got {tuple(silhouette.shape)}")
        x = torch.nan_to_num(silhouette.float(), nan=0.0)
        return self.out(self.blocks(self.fc(self.features(x).flatten(1))))


class PavlakosPriors(nn.Module):
    """Both priors; ``forward(keypoints, silhouette) -> (pose (B, 72), betas (B, 10))``."""

    def __init__(self, width: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.pose_prior = PosePrior(width=width, dropout=dropout)
        self.shape_prior = ShapePrior(width=width, dropout=dropout)

    def forward(self, keypoints: Tensor, silhouette: Tensor) -> Tuple[Tensor, Tensor]:
        return self.pose_prior(keypoints), self.shape_prior(silhouette)


class PavlakosPipeline(nn.Module):
    """Human2D + both priors, the paper's whole network (§5.1): ``forward(images=...)`` runs image ->
    Human2D -> keypoints (``kp_extract``: ``argmax`` or ``softargmax`` of the last stack's heatmaps) and
    body probability (upsampled to the ShapePrior's 64²) -> PosePrior / ShapePrior, and returns
    ``(pose, betas, {"outputs": every stack's outputs, "keypoints": (B, K, 3), "silhouette": (B, 1, 64, 64)})``;
    ``forward(keypoints, silhouette)`` is :class:`PavlakosPriors`' (the priors on given inputs)."""

    def __init__(self, human2d: nn.Module, width: int = 1024, dropout: float = 0.5, kp_extract: str = "argmax"):
        super().__init__()
        if kp_extract not in ("argmax", "softargmax"):
            raise ValueError(f"PavlakosPipeline: kp_extract must be 'argmax' or 'softargmax'; got {kp_extract!r}")
        self.human2d = human2d
        self.pose_prior = PosePrior(width=width, dropout=dropout)
        self.shape_prior = ShapePrior(width=width, dropout=dropout)
        self.kp_extract = kp_extract

    def forward(self, keypoints: Optional[Tensor] = None, silhouette: Optional[Tensor] = None, *,
                images: Optional[Tensor] = None):
        if images is None:
            return self.pose_prior(keypoints), self.shape_prior(silhouette)
        from .heads.hourglass import extract_keypoints, silhouette_from_logits

        outs = self.human2d(images)
        kp = extract_keypoints(outs[-1].heatmaps, self.kp_extract)
        sil = torch.nn.functional.interpolate(silhouette_from_logits(outs[-1].silhouette), size=(SIL_RES, SIL_RES),
                                              mode="bilinear", align_corners=False)
        return self.pose_prior(kp), self.shape_prior(sil), {"outputs": outs, "keypoints": kp, "silhouette": sil}


# ------------------------------------------------------------------------------------ instances
def bank_families(bank: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``matched`` -> every pose family; ``shifted`` -> the lab split's families; or an explicit list."""
    from smplfast.body.samplers import POSE_FAMILIES
    from smplfast.data.splits import LAB_FAMILIES

    if isinstance(bank, str):
        if bank == "matched":
            return tuple(POSE_FAMILIES)
        if bank == "shifted":
            return tuple(LAB_FAMILIES)
        bank = [b for b in bank.split(",") if b]
    fams = tuple(bank)
    bad = [f for f in fams if f not in POSE_FAMILIES]
    if not fams or bad:
        raise ValueError(f"bank: 'matched', 'shifted' or pose families from {POSE_FAMILIES}; got {bank!r}")
    return fams


#: Bank names -> families (filled lazily by :func:`bank_families`).
BANK_FAMILIES = ("matched", "shifted")


def viewpoint_rotation(yaw, elevation, roll) -> np.ndarray:
    """``R_z(roll) R_x(elevation) R_x(π) R_y(yaw)`` (radians; arrays) -> (n, 3, 3): the global orientation of
    an upright body (zero global orientation in the model frame) seen from that viewpoint."""
    from .rotations import euler_to_matrix

    yaw, elevation, roll = (torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (yaw, elevation, roll))
    # R_x(elevation) R_x(pi) = R_x(elevation + pi): intrinsic Z-X-Y angles
    return euler_to_matrix(torch.stack([roll, elevation + math.pi, yaw], -1), "ZXY").numpy()


_MODELS: Dict[str, object] = {}


def _model(keypoints: str = "lsp_14"):
    """The bundled neutral model (float64, cached) with ``keypoints`` joints."""
    import smplfast

    if keypoints not in _MODELS:
        _MODELS[keypoints] = smplfast.SMPL(keypoints=keypoints, dtype=torch.float32, create_betas=False,
                                           create_global_orient=False, create_body_pose=False,
                                           create_transl=False).eval()
    return _MODELS[keypoints]


def _chunk_instances(families: Tuple[str, ...], seed: int, chunk: int, num: int, model) -> Dict[str, np.ndarray]:
    """``num`` instances of chunk ``chunk`` (vertices included, camera frame)."""
    from smplfast.body.samplers import sample_betas, sample_poses
    from smplfast.body.samplers import matrix_to_axis_angle as s_matrix_to_aa

    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, chunk, 0x9A71]).generate_state(1)[0]))
    body = sample_poses(num, family=list(families), seed=g, yaw_range=(0.0, 0.0), max_tilt_deg=0.0,
                        dtype=torch.float64)
    betas = sample_betas(num, seed=g, dtype=torch.float64)
    rng = np.random.default_rng([seed, chunk, 0x71E4])
    yaw = rng.uniform(-math.pi, math.pi, num)
    elev = np.deg2rad(rng.uniform(-15.0, 35.0, num))
    roll = np.deg2rad(rng.uniform(-10.0, 10.0, num))
    focal = np.exp(rng.uniform(math.log(500.0), math.log(5000.0), num))
    R = torch.from_numpy(viewpoint_rotation(yaw, elev, roll))
    glob = s_matrix_to_aa(R).reshape(num, 3)
    pose = torch.cat([glob, body[:, 3:]], 1)
    dt = model.v_template.dtype
    with torch.no_grad():
        out = model(global_orient=pose[:, :3].to(dt), body_pose=pose[:, 3:].to(dt), betas=betas.to(dt))
    v, j = out.vertices.double(), out.joints.double()
    mid = 0.5 * (v.amin(1) + v.amax(1))                                        # (n, 3) 3D box centre
    depth = torch.from_numpy(focal * BOX_MARGIN * BODY_HEIGHT_REF / CROP_REF)
    transl = torch.stack([-mid[:, 0], -mid[:, 1], depth - mid[:, 2]], 1)
    vc, jc = v + transl[:, None], j + transl[:, None]
    f = torch.from_numpy(focal)[:, None]
    uv_v = f[..., None] * vc[..., :2] / vc[..., 2:]
    lo, hi = uv_v.amin(1), uv_v.amax(1)
    centre = 0.5 * (lo + hi)
    side = BOX_MARGIN * (hi - lo).amax(1)
    uv_j = f[..., None] * jc[..., :2] / jc[..., 2:]
    kp = (uv_j - centre[:, None]) / (0.5 * side[:, None, None])
    return {"pose": pose.numpy(), "betas": betas.numpy(), "focal": focal, "transl": transl.numpy(),
            "box": torch.cat([centre, side[:, None]], 1).numpy(), "kp": kp.numpy(),
            "joints3d": jc.numpy(), "vertices": vc}


def render_silhouettes(vertices: Tensor, faces, focal: np.ndarray, box: np.ndarray, res: int = SIL_RES) -> np.ndarray:
    """Bool ``(n, res, res)`` silhouettes of camera-frame meshes in the crops ``box`` ``(n, 3)`` (centre u,
    v and side in focal-plane pixels of focal length ``focal``)."""
    from smplfast.ops import rasterize

    box = np.asarray(box, dtype=np.float64)
    k = res / box[:, 2]
    fpix = torch.from_numpy(np.asarray(focal, dtype=np.float64) * k)
    f2 = torch.stack([fpix, fpix], 1)
    c2 = torch.from_numpy(np.stack([res / 2 - box[:, 0] * k, res / 2 - box[:, 1] * k], 1))
    faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    face_index, _, _ = rasterize(vertices.contiguous(), faces_t, f2, c2, (res, res))
    return (face_index >= 0).numpy()


def pack_silhouettes(sil: np.ndarray) -> np.ndarray:
    """Bool ``(n, H, W)`` -> uint8 ``(n, H·W/8)`` (``np.packbits`` per row-major image)."""
    sil = np.asarray(sil, dtype=bool)
    return np.packbits(sil.reshape(sil.shape[0], -1), axis=1)


def unpack_silhouettes(packed: np.ndarray, res: int = SIL_RES) -> np.ndarray:
    """Inverse of :func:`pack_silhouettes`."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=res * res).reshape(packed.shape[0], res, res).astype(bool)


def make_instances(num: int, *, bank: Union[str, Sequence[str]] = "matched", seed: int = 0, silhouettes: int = 0,
                   progress: bool = False) -> Dict[str, np.ndarray]:
    """``num`` synthetic instances (module docstring) and silhouettes of the first ``silhouettes`` of them.

    Returns arrays: ``pose`` (n, 72) camera-frame axis-angle, ``betas`` (n, 10), ``focal`` (n,), ``transl``
    (n, 3), ``box`` (n, 3) (crop centre u, v and side, focal-plane pixels), ``kp`` (n, 14, 2) exact
    normalised ``lsp_14`` keypoints, ``sil_packed`` (m, 512) uint8, plus provenance ``seed``, ``families``,
    ``count``, ``sil_count``, ``version`` and ``seconds_per_silhouette`` / ``seconds_per_instance``.
    Deterministic in (``bank``, ``seed``); a prefix of any larger bank."""
    num, silhouettes = int(num), int(silhouettes)
    if num < 1 or not 0 <= silhouettes <= num:
        raise ValueError(f"make_instances: num >= 1 and 0 <= silhouettes <= num; got {num}, {silhouettes}")
    fams = bank_families(bank)
    model = _model("lsp_14")
    parts = {k: [] for k in ("pose", "betas", "focal", "transl", "box", "kp")}
    sils, t_inst, t_sil = [], 0.0, 0.0
    for c in range(math.ceil(num / CHUNK)):
        t0 = time.perf_counter()
        ch = _chunk_instances(fams, int(seed), c, CHUNK, model)
        take = min(CHUNK, num - c * CHUNK)
        for k in parts:
            parts[k].append(ch[k][:take])
        t1 = time.perf_counter()
        t_inst += t1 - t0
        m = min(max(silhouettes - c * CHUNK, 0), take)
        if m:
            sils.append(pack_silhouettes(render_silhouettes(ch["vertices"][:m], model.faces, ch["focal"][:m],
                                                            ch["box"][:m])))
            t_sil += time.perf_counter() - t1
        if progress:
            print(f"instances {min((c + 1) * CHUNK, num)}/{num}")
    out = {k: np.concatenate(v).astype(np.float32 if k != "focal" else np.float64) for k, v in parts.items()}
    out["sil_packed"] = np.concatenate(sils) if sils else np.zeros((0, SIL_RES * SIL_RES // 8), np.uint8)
    out.update(seed=np.int64(seed), families=np.array(fams), count=np.int64(num), sil_count=np.int64(silhouettes),
               version=np.int64(BANK_VERSION), seconds_per_instance=np.float64(t_inst / num),
               seconds_per_silhouette=np.float64(t_sil / max(silhouettes, 1)))
    return out


def bank_path(folder, bank: str, seed: int, num: int, silhouettes: int) -> Path:
    return Path(folder) / f"prior_bank_{bank}_seed{seed}_n{num}_sil{silhouettes}.npz"


def load_bank(folder, bank: str, seed: int, num: int, silhouettes: int, *, progress: bool = False) -> Dict[str, np.ndarray]:
    """The bank from its cache file in ``folder`` (made and written atomically when missing or stale)."""
    from smplfast._io import atomic_write

    path = bank_path(folder, bank, seed, num, silhouettes)
    fams = bank_families(bank)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            ok = (int(d["version"]) == BANK_VERSION and int(d["seed"]) == seed and int(d["count"]) == num
                  and int(d["sil_count"]) == silhouettes and tuple(str(f) for f in d["families"]) == fams)
            if ok:
                return d
        except Exception:  # noqa: BLE001 - a broken cache is regenerated
            pass
    d = make_instances(num, bank=bank, seed=seed, silhouettes=silhouettes, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **d))
    return d


class InstanceBank:
    """Arrays of :func:`make_instances` with unpacked access to the silhouettes."""

    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.arrays = arrays
        self.pose = np.asarray(arrays["pose"], np.float32)
        self.betas = np.asarray(arrays["betas"], np.float32)
        self.kp = np.asarray(arrays["kp"], np.float32)
        self.sil_packed = np.asarray(arrays["sil_packed"], np.uint8)

    def __len__(self) -> int:
        return len(self.pose)

    @property
    def num_silhouettes(self) -> int:
        return len(self.sil_packed)

    def silhouette(self, i: int) -> np.ndarray:
        return unpack_silhouettes(self.sil_packed[i:i + 1])[0]


# ------------------------------------------------------------------------------------- detections
def _lsp_groups() -> Tuple[np.ndarray, np.ndarray]:
    from smplfast.body.keypoints import flip_permutation, keypoint_names

    names = keypoint_names("lsp_14")
    arm = [names.index(f"left_{j}") for j in ("shoulder", "elbow", "wrist")]
    leg = [names.index(n) for n in ("left_hip_lsp", "left_knee", "left_ankle")]
    return np.asarray(flip_permutation("lsp_14")), np.asarray([arm, leg])


#: (left/right permutation of lsp_14, [left arm rows, left leg rows]).
SWAP_GROUPS = None


def simulate_detections(rng: np.random.Generator, kp: np.ndarray, *, noise: float = 0.02, drop_prob: float = 0.3,
                        max_drop: int = 3, swap_prob: float = 0.02, conf=(0.5, 1.0)) -> np.ndarray:
    """Human2D-like detections ``(K, 3)`` from exact normalised keypoints ``kp`` ``(K, 2)`` (module
    docstring). ``noise`` is σ as a fraction of the box side (the box is 2 / 1.2 wide in crop units).
    The draws are made in a fixed order, whatever their outcome."""
    global SWAP_GROUPS
    if SWAP_GROUPS is None:
        SWAP_GROUPS = _lsp_groups()
    perm, groups = SWAP_GROUPS
    K = kp.shape[0]
    c = rng.uniform(conf[0], conf[1], K)
    eps = rng.standard_normal((K, 2))
    u_drop, n_drop, which = rng.uniform(), rng.integers(1, max_drop + 1), rng.permutation(K)
    u_swap, g = rng.uniform(), rng.integers(0, len(groups))
    xy = kp + eps * (noise * 2.0 / BOX_MARGIN)
    out = np.concatenate([xy, c[:, None]], 1).astype(np.float32)
    if u_swap < swap_prob:
        idx = np.concatenate([groups[g], perm[groups[g]]])
        out[idx] = out[perm[idx]]
    if u_drop < drop_prob:
        out[which[:n_drop]] = 0.0
    return out


class PriorInstances(torch.utils.data.Dataset):
    """The Priors' training set: item ``i`` of epoch ``e`` is instance ``i``'s simulated detections (drawn
    from ``(seed, e, i)``) with its pose and betas, and the silhouette of instance ``i mod M`` (M bank
    silhouettes) with that instance's pose and betas. Keys: ``keypoints`` (14, 3), ``pose`` (72), ``betas``
    (10), ``silhouette`` (1, 64, 64) float, ``sil_pose`` (72), ``sil_betas`` (10), ``index``."""

    def __init__(self, bank: InstanceBank, seed: int = 0, noise: float = 0.02, drop_prob: float = 0.3,
                 swap_prob: float = 0.02):
        if bank.num_silhouettes < 1:
            raise ValueError("PriorInstances: the bank holds no silhouette")
        self.bank, self.seed = bank, int(seed)
        self.noise, self.drop_prob, self.swap_prob = float(noise), float(drop_prob), float(swap_prob)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.bank)

    def __getitem__(self, index: int) -> dict:
        b = self.bank
        i = int(index)
        rng = np.random.default_rng([self.seed, self.epoch, i, 0xDE7])
        kp = simulate_detections(rng, b.kp[i], noise=self.noise, drop_prob=self.drop_prob, swap_prob=self.swap_prob)
        j = i % b.num_silhouettes
        return {"keypoints": torch.from_numpy(kp), "pose": torch.from_numpy(b.pose[i]),
                "betas": torch.from_numpy(b.betas[i]),
                "silhouette": torch.from_numpy(b.silhouette(j).astype(np.float32))[None],
                "sil_pose": torch.from_numpy(b.pose[j]), "sil_betas": torch.from_numpy(b.betas[j]),
                "index": torch.tensor(i)}


# ------------------------------------------------------------------------------------------ losses
def param_loss(pred_aa: Tensor, gt_aa: Tensor, kind: str = "rotmat", reduction: str = "sum") -> Tensor:
    """``‖θ̂ − θ‖²`` per sample, averaged over the batch: on the 72 axis-angle values (``aa``) or on the
    24 × 9 rotation-matrix entries (``rotmat``, Rodrigues of both). ``reduction="mean"``: the MSE (divided
    by 72 or 216)."""
    B = pred_aa.shape[0]
    if kind == "aa":
        d = (pred_aa - gt_aa).reshape(B, -1)
    elif kind == "rotmat":
        d = (axis_angle_to_matrix(pred_aa.reshape(B, 24, 3)) - axis_angle_to_matrix(gt_aa.reshape(B, 24, 3))).reshape(B, -1)
    else:
        raise ValueError(f"param_loss: kind must be 'aa' or 'rotmat'; got {kind!r}")
    per = (d ** 2).sum(1) if reduction == "sum" else (d ** 2).mean(1)
    return per.mean()


def betas_loss(pred: Tensor, gt: Tensor, reduction: str = "sum") -> Tensor:
    """``‖β̂ − β‖²`` per sample (``mean``: the MSE), averaged over the batch."""
    d = (pred - gt) ** 2
    return (d.sum(1) if reduction == "sum" else d.mean(1)).mean()


def vertex_loss(pred_vertices: Tensor, gt_vertices: Tensor, num_reference: int = PAPER_NUM_VERTICES) -> Tensor:
    """``(num_reference / N) Σ_i ‖P̂_i − P_i‖²`` over the N given vertices, averaged over the batch."""
    n = pred_vertices.shape[1]
    return (num_reference / n) * ((pred_vertices - gt_vertices) ** 2).sum((1, 2)).mean()


def prior_vertex_losses(model, pred_pose: Tensor, gt_pose: Tensor, gt_betas: Tensor, pred_betas: Optional[Tensor] = None,
                        sil_pose: Optional[Tensor] = None, sil_betas: Optional[Tensor] = None,
                        subsample: int = 0, generator: Optional[torch.Generator] = None,
                        pose_term: bool = True) -> Dict[str, Tensor]:
    """The per-vertex losses through the SMPL layer ``model`` (inside the autograd graph): ``pose``: the
    PosePrior's mesh SMPL(θ̂, β_gt) against SMPL(θ, β_gt); ``shape`` (with ``pred_betas``): SMPL(θ_gt, β̂)
    against SMPL(θ_gt, β) of the silhouette instances. ``subsample`` > 0: a uniform subset of that many
    vertices (drawn with ``generator``), rescaled to the same expectation; ``pose_term=False`` skips the
    PosePrior's term."""
    out: Dict[str, Tensor] = {}
    V = model.get_num_verts()
    idx = None
    if 0 < subsample < V:
        idx = torch.randperm(V, generator=generator)[:subsample].to(pred_pose.device)

    def verts(pose, betas):
        v = model(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas).vertices
        return v if idx is None else v[:, idx]

    dt = next(iter(model.buffers())).dtype
    if pose_term:
        with torch.no_grad():
            gt_v = verts(gt_pose.to(dt), gt_betas.to(dt))
        out["pose"] = vertex_loss(verts(pred_pose.to(dt), gt_betas.to(dt)), gt_v).to(pred_pose.dtype)
    if pred_betas is not None:
        sp, sb = sil_pose.to(dt), sil_betas.to(dt)
        with torch.no_grad():
            gt_s = verts(sp, sb)
        out["shape"] = vertex_loss(verts(sp, pred_betas.to(dt)), gt_s).to(pred_betas.dtype)
    return out


# ------------------------------------------------------------------------------------ training set
def prior_bank_folder(cfg) -> Path:
    """``prior_bank_dir`` (relative: inside ``data``)."""
    p = Path(cfg.prior_bank_dir)
    return p if p.is_absolute() else Path(cfg.data) / p


def build_prior_train_set(cfg):
    """The :class:`~smplfast_train.data.TrainSet` of ``trainer: pavlakos_priors``: a
    :class:`PriorInstances` over the bank ``prior_bank`` of ``prior_bank_size`` instances and
    ``prior_sil_bank_size`` silhouettes (seed ``prior_bank_seed``), cached in ``prior_bank_dir``."""
    from .data import TrainSet

    arrays = load_bank(prior_bank_folder(cfg), cfg.prior_bank, cfg.prior_bank_seed, cfg.prior_bank_size,
                       cfg.prior_sil_bank_size)
    ds = PriorInstances(InstanceBank(arrays), seed=cfg.seed, noise=cfg.prior_kp_noise, drop_prob=cfg.prior_drop_prob,
                        swap_prob=cfg.prior_swap_prob)
    return TrainSet(ds, [f"prior_{cfg.prior_bank}"], [ds])


# ------------------------------------------------------------------ reprojection fine-tuning (§5.4)
def annotated_keypoints(keypoints49: Tensor) -> Tensor:
    """SPIN's 49 keypoint rows of dataset items ``(B, 49, 3)`` (normalised crop coordinates) -> the
    annotated ``lsp_14`` joints ``(B, 14, 3)`` (rows 25..48 = ``spin_24``; confidence = the label's
    visibility); unlabelled or non-finite rows become (0, 0, 0), the Priors' missing-joint input."""
    from smplfast.body.keypoints import convert

    kp = convert(keypoints49[:, 25:].float(), "spin_24", "lsp_14")
    bad = ~torch.isfinite(kp).all(-1) | (kp[..., 2] <= 0)
    return torch.where(bad[..., None], torch.zeros_like(kp), kp)


def weak_perspective_fit(points: Tensor, target: Tensor, weight: Tensor, min_points: int = 2) -> Tuple[Tensor, Tensor, Tensor]:
    """Closed-form weighted least squares ``argmin_{s, t} Σ_j w_j ‖s·x_j + t − y_j‖²`` per sample.

    ``points`` (B, K, 2) (the model's x, y), ``target`` (B, K, 2), ``weight`` (B, K) >= 0. Returns ``s``
    (B,), ``t`` (B, 2) and ``ok`` (B,) bool: at least ``min_points`` weighted points, a finite solution and
    ``s > 0`` (otherwise ``s = 1``, ``t = 0``). Call it on detached points: the camera must not absorb the
    error it is used to measure (TRAINING_SPEC §5.4)."""
    w = torch.where(torch.isfinite(weight) & (weight > 0), weight, torch.zeros_like(weight))
    x = torch.nan_to_num(points)
    y = torch.nan_to_num(target)
    wsum = w.sum(1, keepdim=True)                                                  # (B, 1)
    safe = wsum.clamp_min(1e-12)
    xm = (w[..., None] * x).sum(1) / safe                                          # (B, 2)
    ym = (w[..., None] * y).sum(1) / safe
    xc, yc = x - xm[:, None], y - ym[:, None]
    num = (w[..., None] * xc * yc).sum((1, 2))
    den = (w[..., None] * xc * xc).sum((1, 2))
    s = num / den.clamp_min(1e-12)
    t = ym - s[:, None] * xm
    ok = ((w > 0).sum(1) >= min_points) & (den > 1e-12) & (s > 0) & torch.isfinite(s) & torch.isfinite(t).all(1)
    s = torch.where(ok, s, torch.ones_like(s))
    t = torch.where(ok[:, None], t, torch.zeros_like(t))
    return s, t, ok


def to_pixels(xy_normalised: Tensor, res: int) -> Tensor:
    """Crop coordinates in [-1, 1] -> pixels of a ``res`` x ``res`` map (pixel (i, j) has its centre at
    (j + 0.5, i + 0.5); -1 is the left edge of the crop, +1 the right edge)."""
    return (xy_normalised + 1.0) * (0.5 * res)


def reprojection_losses(joints: Tensor, vertices: Tensor, faces: Tensor, s: Tensor, t: Tensor, target_kp: Tensor,
                        kp_weight: Tensor, target_mask: Tensor, *, res: int = SIL_RES, sigma: float = 0.1) -> Dict[str, Tensor]:
    """Pavlakos' Eq. 3 terms per sample, through a weak-perspective camera ``(s, t)`` in normalised crop
    coordinates: ``kp`` = ``Σ_j w_j ‖Ŵ_j − W_j‖²`` (pixels of the ``res``² map, the Human2D output frame)
    and ``sil`` = ``Σ_p (Ŝ_p − S_p)²`` with Ŝ :func:`smplfast.ops.soft_silhouette` (``sigma`` in px²;
    SoftRas's 1e-4 in normalised units is 0.1 px² at 64²).

    ``joints`` (B, K, 3) and ``vertices`` (B, V, 3) in the camera-aligned model frame (x right, y down);
    ``target_kp`` (B, K, 2) normalised; ``kp_weight`` (B, K); ``target_mask`` (B, res, res) in [0, 1].
    Returns ``{"kp": (B,), "sil": (B,), "silhouette": (B, res, res)}``. The caller weights ``kp`` by μ."""
    from smplfast.ops import soft_silhouette

    proj_j = to_pixels(s[:, None, None] * joints[..., :2] + t[:, None], res)
    w = torch.where(torch.isfinite(kp_weight) & (kp_weight > 0), kp_weight, torch.zeros_like(kp_weight))
    tgt = torch.where(w[..., None] > 0, to_pixels(torch.nan_to_num(target_kp), res), proj_j.detach())
    kp = (w * ((proj_j - tgt) ** 2).sum(-1)).sum(1)
    proj_v = to_pixels(s[:, None, None] * vertices[..., :2] + t[:, None], res)
    sil_hat = soft_silhouette(proj_v, faces, res, sigma)
    sil = ((sil_hat - target_mask.to(sil_hat.dtype)) ** 2).sum((1, 2))
    return {"kp": kp, "sil": sil, "silhouette": sil_hat}


class DetectionItems(torch.utils.data.Dataset):
    """Image-split items for the Priors-only reprojection fine-tuning (TRAINING_SPEC §6.3 E-P step 3):
    the Priors' inputs are Human2D-like detections simulated from the annotated keypoints (the
    :func:`simulate_detections` draws of ``(seed, epoch, index)``; unlabelled joints stay missing) and the
    ground-truth mask; the supervision is the annotation itself. Keys: ``detections`` (14, 3),
    ``keypoints`` (14, 3) annotated (normalised x, y, visibility), ``mask`` (64, 64), ``pose`` (72),
    ``betas`` (10), ``index``; with ``images`` (the whole network) also ``img``, ``keypoints49`` (SPIN's
    rows) and ``mask_full`` at the crop's resolution (a multiple of 64; ``mask`` is its area reduction)."""

    def __init__(self, dataset, seed: int = 0, noise: float = 0.02, drop_prob: float = 0.3, swap_prob: float = 0.02,
                 images: bool = False):
        self.dataset, self.seed, self.images = dataset, int(seed), bool(images)
        self.noise, self.drop_prob, self.swap_prob = float(noise), float(drop_prob), float(swap_prob)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        it = self.dataset[int(index)]
        kp = annotated_keypoints(torch.as_tensor(it["keypoints"])[None])[0]
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 0xE2E])
        det = torch.from_numpy(simulate_detections(rng, kp[:, :2].numpy(), noise=self.noise, drop_prob=self.drop_prob,
                                                   swap_prob=self.swap_prob))
        det[kp[:, 2] <= 0] = 0.0  # a joint without a label is not detected either
        mask = torch.as_tensor(np.asarray(it["mask"]), dtype=torch.float32)
        out = {"detections": det, "keypoints": kp, "pose": torch.as_tensor(it["pose"]).float(),
               "betas": torch.as_tensor(it["betas"]).float(), "index": torch.tensor(int(index))}
        if self.images:  # the whole network: the crop, SPIN's 49 keypoints and the full-resolution mask too
            out.update(img=torch.as_tensor(it["img"]), keypoints49=torch.as_tensor(it["keypoints"]).float(), mask_full=mask)
            res = mask.shape[-1]
            if res % SIL_RES:
                raise ValueError(f"DetectionItems: the crop size {res} is not a multiple of {SIL_RES}")
            mask = (torch.nn.functional.avg_pool2d(mask[None, None], res // SIL_RES)[0, 0] >= 0.5).float()
        out["mask"] = mask
        return out


def build_e2e_train_set(cfg):
    """The :class:`~smplfast_train.data.TrainSet` of ``trainer: pavlakos_e2e``: :class:`DetectionItems`
    over the one split of ``train_splits`` (crops and masks at ``SIL_RES``, or at ``hg_in_res`` with the
    images when ``e2e_human2d_init`` is set; no augmentation: the detections carry the noise)."""
    from smplfast.data import SPINDataset

    from .data import TrainSet, split_npz

    names = [n for n, r in cfg.train_splits.items() if r > 0]
    if len(names) != 1:
        raise ValueError(f"trainer pavlakos_e2e takes one image split in train_splits; got {names}")
    npz, root = split_npz(cfg.data, names[0], False)
    full = bool(cfg.e2e_human2d_init)
    ds = SPINDataset(npz, root, is_train=False, img_res=cfg.hg_in_res if full else SIL_RES, load_masks=True,
                     dataset_name=names[0])
    items = DetectionItems(ds, seed=cfg.seed, noise=cfg.prior_kp_noise, drop_prob=cfg.prior_drop_prob,
                           swap_prob=cfg.prior_swap_prob, images=full)
    return TrainSet(items, names, [ds])
