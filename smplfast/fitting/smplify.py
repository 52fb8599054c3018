"""SMPLify: fit SMPL to 2D keypoints, as SPIN's fitter does, solved by Levenberg–Marquardt (default) or
by SPIN's exact Adam procedure.

The objective is SPIN's: Geman–McClure reprojection error weighted by the squared keypoint
confidences, the max-mixture GMM pose prior, the elbow/knee angle prior and the quadratic shape prior
(camera stage: squared torso reprojection error plus a depth term), with optional Pavlakos-2018
anchor and HoloPose shape-bound terms. Every term is a sum of squares, so Gauss–Newton / LM solves it
in a few iterations: residuals and analytic Jacobians of the projected keypoints come from the
``project_keypoints`` kernel, the priors add their own exact residuals, and each sample runs its own
damped iterations (see :mod:`smplfast.fitting.lm`).
"""
from __future__ import annotations

import math

import os
import time
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import ops
from ..body.smpl import SMPL
from ..geometry import perspective_projection  # SPIN's projection; re-exported as fitting.perspective_projection
from . import camera as cam
from .keypoint_model import KeypointModel
from .lm import LMOptions, levenberg_marquardt
from .priors import (ANGLE_PRIOR_INDICES, ANGLE_PRIOR_SIGNS, MaxMixturePrior, PriorWeights, anchor_prior, angle_prior, angle_prior_residuals, gmof,
                     robust_residual, shape_bound, shape_bound_residuals)

OPTIMIZERS = ("lm", "adam")
MODES = ("spin", "single_stage", "smplify4")
# The original SMPLify schedule (Bogo et al. 2016): pose-prior and shape-prior weights per stage; the
# angle prior keeps SPIN's ratio to the pose prior (15.2 / 4.78).
SMPLIFY4_POSE_WEIGHTS = (404.0, 404.0, 57.4, 4.78)
SMPLIFY4_SHAPE_WEIGHTS = (100.0, 50.0, 10.0, 5.0)

# Input bounds. Values beyond these are not physical and overflow float32 in the squared residuals
# (a 1e20 px keypoint squares to Inf), so the fitters reject them with a ValueError instead of
# returning NaN. NaN / Inf keypoints are not errors: they are missing keypoints (confidence 0);
# negative confidences count as 0.
MAX_ABS_POSE = 30.0          # |axis-angle component| of init_pose, rad (~5 turns: SPIN's angle prior is
                             # exp(2θ), which overflows float32 beyond ~44 rad)
MAX_ABS_BETAS = 1e3          # |shape coefficient|
MAX_ABS_PIXELS = 1e6         # |keypoint coordinate| and |camera centre|, px
MAX_CONFIDENCE = 1e3         # keypoint confidence (squared in the objective)
MAX_ABS_TRANSLATION = 1e6    # |camera / body translation component|, model units
ROTATION_TOLERANCE = 1e-3    # max |RᵀR − I| for a camera rotation (which must also have det +1)


@dataclass
class SMPLifyResult:
    """Everything a fit produced; ``as_tuple()`` gives SPIN's return value."""

    vertices: Tensor             # (B, V, 3), without camera translation (as SPIN)
    joints: Tensor               # (B, Nk, 3), the fitter's keypoints, without camera translation
    pose: Tensor                 # (B, 72) axis-angle
    betas: Tensor                # (B, nb)
    camera_translation: Tensor   # (B, 3)
    reprojection_loss: Tensor    # (B, Nk): conf² · Σ_xy GMoF(proj − kp), ignored joints 0 (SPIN's output)
    loss: Tensor                 # (B,) final body-stage objective
    iterations: Tensor           # (B,) iterations over all stages
    converged: Tensor            # (B,) bool
    missing_keypoints: Tensor    # (B,) number of keypoints given as NaN (treated as confidence 0)
    timings: Dict[str, float] = field(default_factory=dict)
    history: list = field(default_factory=list)  # (seconds, objective (B,)) per iteration when recorded
    world_orient: Optional[Tensor] = None        # calibrated multi-view fits: (B, 3) world orientation
    world_transl: Optional[Tensor] = None        # calibrated multi-view fits: (B, 3) world translation

    def as_tuple(self):
        return (self.vertices, self.joints, self.pose, self.betas, self.camera_translation, self.reprojection_loss)


# ------------------------------------------------------------------------------- SPIN's loss functions
def camera_fitting_loss(model_joints, camera_t, camera_t_est, camera_center, joints_2d, joints_conf,
                        focal_length=5000.0, depth_loss_weight=100.0, op_torso=None, gt_torso=None, reduce=True):
    """SPIN's camera-stage loss: squared error of 4 torso joints (OpenPose's when all four are
    confident, else the ground-truth ones) plus depth_loss_weight² (t_z − t_z,est)²."""
    op_torso = cam.SPIN49_OPENPOSE_TORSO if op_torso is None else op_torso
    gt_torso = cam.SPIN49_GT_TORSO if gt_torso is None else gt_torso
    B = model_joints.shape[0]
    eye = torch.eye(3, dtype=model_joints.dtype, device=model_joints.device).expand(B, 3, 3)
    proj = perspective_projection(model_joints, eye, camera_t, focal_length, camera_center)
    err_op = ((joints_2d[:, op_torso] - proj[:, op_torso]) ** 2).sum(dim=(1, 2))
    err_gt = ((joints_2d[:, gt_torso] - proj[:, gt_torso]) ** 2).sum(dim=(1, 2))
    use_op = joints_conf[:, op_torso].min(dim=-1).values > 0
    loss = torch.where(use_op, err_op, err_gt) + depth_loss_weight ** 2 * (camera_t[:, 2] - camera_t_est[:, 2]) ** 2
    return loss.sum() if reduce else loss


def body_fitting_loss(body_pose, betas, model_joints, camera_t, camera_center, joints_2d, joints_conf, pose_prior,
                      focal_length=5000.0, sigma=100.0, pose_prior_weight=4.78, shape_prior_weight=5.0,
                      angle_prior_weight=15.2, output="sum", weights: Optional[PriorWeights] = None,
                      pose=None, init_pose=None):
    """SPIN's body-stage loss. ``output``: 'sum' (scalar), 'per_sample' (B,) or 'reprojection' (B, Nk).

    With ``weights`` the optional anchor (on the full ``pose`` against ``init_pose``) and shape-bound
    terms are added when their weights are non-zero."""
    B = body_pose.shape[0]
    eye = torch.eye(3, dtype=body_pose.dtype, device=body_pose.device).expand(B, 3, 3)
    proj = perspective_projection(model_joints, eye, camera_t, focal_length, camera_center)
    reprojection = joints_conf ** 2 * gmof(proj - joints_2d, sigma).sum(dim=-1)
    if output == "reprojection":
        return reprojection
    total = (reprojection.sum(dim=-1) + pose_prior_weight ** 2 * pose_prior(body_pose, betas)
             + angle_prior_weight ** 2 * angle_prior(body_pose).sum(dim=-1)
             + shape_prior_weight ** 2 * (betas ** 2).sum(dim=-1))
    if weights is not None and weights.anchor_weight and pose is not None and init_pose is not None:
        total = total + weights.anchor_weight ** 2 * anchor_prior(pose, init_pose, weights.anchor_sigma)
    if weights is not None and weights.shape_bound_weight:
        total = total + weights.shape_bound_weight ** 2 * shape_bound(betas, weights.shape_bound)
    if output == "per_sample":
        return total
    return total.sum()


# ------------------------------------------------------------------------------------------ SMPLify
class SMPLify:
    """Drop-in for SPIN's ``SMPLify`` (same constructor arguments and call), solved by batched
    Levenberg–Marquardt unless ``optimizer="adam"``.

    Args (SPIN's): ``step_size`` (Adam's learning rate), ``batch_size`` (unused: any batch works, large
    ones are processed in chunks of ``chunk_size``), ``num_iters`` (Adam iterations per stage),
    ``focal_length``, ``device``.
    Additional: ``optimizer`` 'lm' | 'adam'; ``model``: an ``smplfast.SMPL`` whose output joints are the
    keypoints (for 'adam' any smplx-style module returning ``.joints`` works), a model file path, or
    None for the bundled default model; ``keypoints``: the convention of ``keypoints_2d`` (default
    SPIN's 49) and ``keypoint_regressors`` (e.g. SPIN's J_regressor_extra.npy) to build it;
    ``pose_prior``: a :class:`MaxMixturePrior`, a ``gmm_08.pkl`` path or None (the shipped default);
    ``weights``: :class:`PriorWeights` (SPIN's values by default; keyword overrides such as
    ``pose_prior_weight=...`` are accepted too); ``mode``: 'spin' (camera stage then body stage),
    'single_stage' (body and camera together, for fits initialised from a regressor), 'smplify4' (the
    original 4-stage schedule from the mean pose); ``linear_solver`` 'cholesky' | 'cg';
    ``lm_iters`` (max LM iterations per body stage), ``camera_lm_iters`` (max LM iterations of the
    camera stage; it stops when converged, and a capped camera stage caps the final objective),
    ``ignore_joints`` (keypoints given confidence 0 in the body stage; SPIN's by default), ``min_visible``
    (fewer confident keypoints: the sample keeps its initialisation with ``converged=False``), ``dtype``,
    ``lm_check_every`` (stopped samples leave the LM batch every that many iterations: fewer device
    synchronisations, the same fits up to floating-point rounding; default 1 on the CPU, 5 on CUDA);
    ``fused`` (LM only, default True): run each stage's whole LM loop in one kernel call
    (:func:`smplfast.ops.lm_fit`: every term accumulated into JᵀJ per sample on the device, no host
    synchronisation between iterations); False drives the same LM from Python with the unfused ops
    (the reference; also used when ``record_history`` asks for the per-iteration objective).

    ``converged`` in the result is True when every stage converged: LM by its own test; Adam (a fixed
    number of steps) when the objective changed by less than :data:`ADAM_PLATEAU_RTOL` (relative) over
    its last 10 steps.

    Unlike SPIN's fitter, the inputs are never modified: SPIN's ``SMPLify.__call__`` zeroes the ignored
    joints' confidences in the caller's keypoint tensor, and SPIN's trainer relies on that side effect
    (its camera stage then falls back to the ground-truth torso joints). Here the ignored joints are
    dropped inside the body stage only, and the camera stage chooses OpenPose or ground-truth torso
    joints by their own confidences.
    """

    def __init__(self, step_size: float = 1e-2, batch_size: int = 66, num_iters: int = 100,
                 focal_length: float = 5000.0, device: Union[str, torch.device] = "cpu", *,
                 optimizer: str = "lm", model=None, keypoints: str = "spin_49", keypoint_regressors=None,
                 pose_prior=None, weights: Optional[PriorWeights] = None, mode: str = "spin",
                 linear_solver: str = "cholesky", cg_iters: int = 20, lm_iters: int = 30, camera_lm_iters: int = 30,
                 ftol: float = 1e-6, ignore_joints: Optional[Sequence[int]] = None, min_visible: int = 4,
                 chunk_size: int = 4096, dtype: torch.dtype = torch.float32, lm_check_every: Optional[int] = None,
                 fused: bool = True, **weight_overrides) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"SMPLify: optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        if mode not in MODES:
            raise ValueError(f"SMPLify: mode must be one of {MODES}; got {mode!r}")
        if linear_solver not in ("cholesky", "cg"):
            raise ValueError(f"SMPLify: linear_solver must be 'cholesky' or 'cg'; got {linear_solver!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"SMPLify: dtype must be torch.float32 or torch.float64; got {dtype}")
        self.device = torch.device(device)
        self.step_size = float(step_size)
        self.batch_size = batch_size
        self.num_iters = int(num_iters)
        self.focal_length = float(focal_length)
        if not (0.0 < self.focal_length < float("inf")):
            raise ValueError(f"SMPLify: focal_length must be finite and > 0 (px); got {focal_length!r}")
        self.optimizer = optimizer
        self.mode = mode
        self.dtype = dtype
        self.chunk_size = int(chunk_size)
        self.min_visible = int(min_visible)
        # Stopped samples leave the LM batch every `check_every` iterations (a host read, a device sync
        # on CUDA); the fits are the same for any value, up to rounding.
        check_every = (5 if self.device.type == "cuda" else 1) if lm_check_every is None else lm_check_every
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"SMPLify: lm_check_every must be an int >= 1 (or None); got {lm_check_every!r}")
        if not isinstance(fused, bool):
            raise TypeError(f"SMPLify: fused must be True or False; got {fused!r}")
        self.fused = fused and optimizer == "lm"
        self._cols_cache: Dict[tuple, Tensor] = {}
        self.lm_options = LMOptions(max_iters=lm_iters, ftol=ftol, linear_solver=linear_solver, cg_iters=cg_iters,
                                    check_every=check_every)
        self.camera_lm_options = LMOptions(max_iters=camera_lm_iters, ftol=ftol, linear_solver=linear_solver,
                                           cg_iters=cg_iters, check_every=check_every)
        self.weights = weights or PriorWeights()
        for k, v in weight_overrides.items():
            if not hasattr(self.weights, k):
                raise TypeError(f"SMPLify: unexpected argument {k!r}")
            self.weights = replace(self.weights, **{k: float(v)})
        self.keypoint_convention = keypoints

        if model is None or isinstance(model, (str, os.PathLike)):
            model = SMPL(model, keypoints=keypoints, keypoint_regressors=keypoint_regressors, dtype=dtype,
                         create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False)
        self.smpl = model.to(self.device)
        self.is_smplfast = isinstance(model, SMPL)
        if self.is_smplfast:
            self.smpl = self.smpl.to(dtype)
            self._kp_model = KeypointModel.from_smpl(self.smpl).to(self.device, dtype)
            self.num_keypoints = self._kp_model.num_keypoints
            self.num_betas = self.smpl.num_betas
        elif optimizer == "lm":
            raise TypeError("SMPLify: optimizer='lm' needs an smplfast.SMPL model (its keypoints feed the "
                            f"Jacobian kernel); got {type(model).__name__}. Use optimizer='adam' for other models.")
        else:
            self.num_keypoints = None
            self.num_betas = getattr(model, "num_betas", 10)
        if isinstance(pose_prior, MaxMixturePrior):
            self.pose_prior = pose_prior
        else:
            self.pose_prior = MaxMixturePrior(pose_prior, num_gaussians=8, dtype=dtype)
        self.pose_prior = self.pose_prior.to(self.device, dtype)
        ign = cam.SPIN49_IGNORED_JOINTS if ignore_joints is None and keypoints == "spin_49" else (ignore_joints or [])
        self.ign_joints = list(ign)
        self.op_torso, self.gt_torso = _torso_indices(keypoints)

    # --------------------------------------------------------------------------------- public API
    def __call__(self, init_pose: Tensor, init_betas: Tensor, init_cam_t: Tensor, camera_center: Tensor,
                 keypoints_2d: Tensor):
        """SPIN's call: returns (vertices, joints, pose, betas, camera_translation, reprojection_loss)."""
        return self.fit(init_pose, init_betas, init_cam_t, camera_center, keypoints_2d).as_tuple()

    def fit(self, init_pose: Optional[Tensor], init_betas: Optional[Tensor], init_cam_t: Optional[Tensor],
            camera_center: Tensor, keypoints_2d: Tensor, record_history: bool = False) -> SMPLifyResult:
        """Fit and return a :class:`SMPLifyResult` (per-sample loss, iterations, converged flag, timings).

        init_pose (B, 72), init_betas (B, nb), init_cam_t (B, 3), camera_center (B, 2), keypoints_2d
        (B, Nk, 3) = [x, y, confidence] in pixels. In mode 'smplify4' the initialisation may be None
        (an upright body facing the camera, global orientation (pi, 0, 0), in the mean pose; zero shape;
        similar-triangles camera).

        Input ranges (a ValueError naming the argument otherwise): every value finite; |init_pose| <
        MAX_ABS_POSE (30 rad), |init_betas| < MAX_ABS_BETAS, |camera_center| and finite keypoint
        coordinates < MAX_ABS_PIXELS (1e6 px), confidences <= MAX_CONFIDENCE (1e3; negative counts as
        0, NaN / Inf keypoints are missing), |init_cam_t| < MAX_ABS_TRANSLATION with depth t_z > 0.
        The result is always finite: a sample whose fit is not keeps its initialisation with
        ``converged=False``."""
        kp = self._check_keypoints(keypoints_2d)
        B = kp.shape[0]
        init_pose, init_betas, init_cam_t, camera_center = self._check_init(init_pose, init_betas, init_cam_t,
                                                                            camera_center, B)
        results = []
        for s in range(0, max(B, 1), self.chunk_size):
            sl = slice(s, s + self.chunk_size)
            results.append(self._fit_chunk(init_pose[sl], init_betas[sl], None if init_cam_t is None else init_cam_t[sl],
                                           camera_center[sl], kp[sl],
                                           record_history))
        return _concat_results(results)

    def get_fitting_loss(self, pose: Tensor, betas: Tensor, cam_t: Tensor, camera_center: Tensor,
                         keypoints_2d: Tensor) -> Tensor:
        """SPIN's per-keypoint reprojection loss (B, Nk) of given parameters (ignored joints 0)."""
        kp = self._check_keypoints(keypoints_2d)
        pose, betas, cam_t, camera_center = self._check_init(pose, betas, cam_t, camera_center, kp.shape[0])
        conf = self._body_confidence(kp[..., 2])
        with torch.no_grad():
            joints = self.keypoints(pose, betas)
            return body_fitting_loss(pose[:, 3:], betas, joints, cam_t, camera_center, kp[..., :2], conf,
                                     self.pose_prior, focal_length=self.focal_length, sigma=self.weights.sigma,
                                     output="reprojection")

    def keypoints(self, pose: Tensor, betas: Tensor) -> Tensor:
        """The model's 3D keypoints (B, Nk, 3) in the fitter's convention, without translation: the
        points the reprojection term projects."""
        return self._joints(pose[:, :3], pose[:, 3:], betas)

    def _joints(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor) -> Tensor:
        # smplfast models skip the mesh; other smplx-style modules compute it (as SPIN pays for it).
        extra = {"joints_only": True} if self.is_smplfast else {}
        return self.smpl(global_orient=global_orient, body_pose=body_pose, betas=betas, **extra).joints

    # ------------------------------------------------------------------------------------ checks
    def _check_keypoints(self, keypoints_2d) -> Tensor:
        if not torch.is_tensor(keypoints_2d):
            raise TypeError(f"SMPLify: keypoints_2d must be a torch.Tensor; got {type(keypoints_2d).__name__}")
        Nk = self.num_keypoints
        if keypoints_2d.dim() != 3 or keypoints_2d.shape[-1] != 3 or (Nk is not None and keypoints_2d.shape[1] != Nk):
            raise ValueError(f"SMPLify: keypoints_2d must be (B, {Nk or 'Nk'}, 3) [x, y, confidence] in the "
                             f"{self.keypoint_convention} convention; got {tuple(keypoints_2d.shape)}")
        self._check_tensor("keypoints_2d", keypoints_2d)
        present = torch.isfinite(keypoints_2d).all(dim=-1)   # NaN / Inf keypoints are missing ones
        xy = keypoints_2d[..., :2].abs().masked_fill(~present[..., None], 0)
        if bool((xy >= MAX_ABS_PIXELS).any()):
            raise ValueError(f"SMPLify: keypoints_2d coordinates must satisfy |x|, |y| < {MAX_ABS_PIXELS:g} px "
                             f"(or be NaN for a missing keypoint); got max |x| = {float(xy.max()):g}")
        conf = keypoints_2d[..., 2].masked_fill(~present, 0)
        if bool((conf > MAX_CONFIDENCE).any()):
            raise ValueError(f"SMPLify: keypoints_2d confidences must be in [0, {MAX_CONFIDENCE:g}]; "
                             f"got {float(conf.max()):g}")
        return keypoints_2d

    @staticmethod
    def _check_bound(name: str, t: Tensor, bound: float, unit: str = "") -> None:
        """``t`` finite with every |component| < bound, else a ValueError naming it and the range."""
        if not torch.isfinite(t).all():
            raise ValueError(f"SMPLify: {name} contains NaN or Inf")
        if t.numel() and bool((t.abs() >= bound).any()):
            raise ValueError(f"SMPLify: {name} must satisfy |value| < {bound:g}{unit}; got max |value| = "
                             f"{float(t.abs().max()):g}")

    @staticmethod
    def _check_depth(name: str, t: Tensor) -> None:
        if t.numel() and bool((t[..., 2] <= 0).any()):
            raise ValueError(f"SMPLify: {name} must put the body in front of the camera (depth t_z > 0); "
                             f"got min t_z = {float(t[..., 2].min()):g}")

    def _check_tensor(self, name: str, t: Tensor) -> None:
        if t.device.type != self.device.type or (self.device.index is not None and t.device != self.device):
            raise ValueError(f"SMPLify: {name} is on {t.device} but the fitter runs on {self.device}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"SMPLify: {name} must be float32 or float64; got {t.dtype}")

    def _check_init(self, init_pose, init_betas, init_cam_t, camera_center, B):
        dtype = self.dtype
        if self.mode == "smplify4":
            if init_pose is None:
                init_pose = torch.zeros(B, 72, dtype=dtype, device=self.device)
                # SMPLify's start: an upright body facing the camera (the model's y-up frame turned by pi
                # about x into the keypoints' y-down camera frame; a zero orientation is upside down there)
                # in the mixture's weighted mean pose.
                init_pose[:, 0] = math.pi
                init_pose[:, 3:] = (self.pose_prior.weights.flatten() @ self.pose_prior.means).to(dtype)
            if init_betas is None:
                init_betas = torch.zeros(B, self.num_betas, dtype=dtype, device=self.device)
        specs = (("init_pose", init_pose, 72, MAX_ABS_POSE, " rad"), ("init_betas", init_betas, self.num_betas, MAX_ABS_BETAS, ""),
                 ("camera_center", camera_center, 2, MAX_ABS_PIXELS, " px"))
        out = []
        for name, t, n, bound, unit in specs:
            if t is None:
                raise ValueError(f"SMPLify: {name} is required (shape (B, {n})) in mode {self.mode!r}")
            if not torch.is_tensor(t) or t.dim() != 2 or t.shape != (B, n):
                got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise ValueError(f"SMPLify: {name} must be ({B}, {n}); got {got}")
            self._check_tensor(name, t)
            self._check_bound(name, t, bound, unit)
            out.append(t.to(dtype))
        if init_cam_t is None:
            if self.mode != "smplify4":
                raise ValueError("SMPLify: init_cam_t (B, 3) is required unless mode='smplify4'")
        else:
            if not torch.is_tensor(init_cam_t) or init_cam_t.shape != (B, 3):
                got = tuple(init_cam_t.shape) if torch.is_tensor(init_cam_t) else type(init_cam_t).__name__
                raise ValueError(f"SMPLify: init_cam_t must be ({B}, 3); got {got}")
            self._check_tensor("init_cam_t", init_cam_t)
            self._check_bound("init_cam_t", init_cam_t, MAX_ABS_TRANSLATION)
            self._check_depth("init_cam_t", init_cam_t)
            init_cam_t = init_cam_t.to(dtype)
        return out[0], out[1], init_cam_t, out[2]

    # ------------------------------------------------------------------------------------- fitting
    def _body_confidence(self, conf: Tensor) -> Tensor:
        """Confidences (B, Nk) with the body stage's ignored keypoints at 0 (a copy)."""
        conf = conf.clone()
        conf[:, self.ign_joints] = 0.0
        return conf

    def _prepare_keypoints(self, kp: Tensor):
        """NaN keypoints are missing ones: confidence 0 and finite coordinates, so nothing propagates.
        Returns joints_2d, confidences (clamped at 0), body-stage confidences, the missing mask, and
        which samples have at least ``min_visible`` body-stage keypoints."""
        bad = ~torch.isfinite(kp).all(dim=-1)
        kp = torch.where(bad[..., None], torch.zeros((), dtype=kp.dtype, device=kp.device), kp).to(self.dtype)
        conf = kp[..., 2].clamp_min(0)
        conf_body = self._body_confidence(conf)
        visible = (conf_body > 0).sum(dim=1) >= self.min_visible
        return kp[..., :2], conf, conf_body, bad, visible

    def _fit_chunk(self, init_pose, init_betas, init_cam_t, camera_center, kp, record_history) -> SMPLifyResult:
        joints_2d, conf_raw, conf_body, bad, visible = self._prepare_keypoints(kp)
        timings: Dict[str, float] = {}
        history: list = []
        B = kp.shape[0]
        iters = torch.zeros(B, dtype=torch.long, device=kp.device)

        if init_cam_t is None:  # smplify4 without a camera: similar triangles on the torso
            with torch.no_grad():
                joints3d = self.keypoints(init_pose, init_betas)
            init_cam_t = cam.similar_triangles_translation(joints3d, kp, focal_length=self.focal_length,
                                                           center=camera_center,
                                                           torso_pairs=None if kp.shape[1] == 49 else
                                                           [((self.gt_torso[2], self.gt_torso[0]),
                                                             (self.gt_torso[3], self.gt_torso[1]))])
        pose, betas, cam_t = init_pose.clone(), init_betas.clone(), init_cam_t.clone()
        converged = torch.ones(B, dtype=torch.bool, device=kp.device)

        if self.mode in ("spin", "smplify4"):
            t0 = time.perf_counter()
            pose, cam_t, it, conv = self._camera_stage(pose, betas, cam_t, init_cam_t, camera_center, joints_2d, conf_raw,
                                                       visible)
            timings["camera"] = time.perf_counter() - t0
            iters += it
            converged &= conv  # a capped camera stage is not converged, whatever the body stage does
        schedule = [(None, None)]
        if self.mode == "smplify4":
            schedule = list(zip(SMPLIFY4_POSE_WEIGHTS, SMPLIFY4_SHAPE_WEIGHTS))
        t0 = time.perf_counter()
        for pose_w, shape_w in schedule:
            w = self.weights
            if pose_w is not None:
                w = replace(w, pose_prior_weight=pose_w, shape_prior_weight=shape_w,
                            angle_prior_weight=w.angle_prior_weight / w.pose_prior_weight * pose_w)
            pose, betas, cam_t, it, conv, hist = self._body_stage(
                pose, betas, cam_t, init_pose, camera_center, joints_2d, conf_body, visible, w,
                optimize_camera=self.mode == "single_stage", init_cam_t=init_cam_t, record_history=record_history)
            iters += it
            history.extend(hist)
        converged &= conv
        timings["body"] = time.perf_counter() - t0

        # Never return NaN / Inf: a sample whose fit (parameters, or the outputs computed from them) is not
        # finite keeps its initialisation with converged=False.
        keep = visible & torch.isfinite(pose).all(1) & torch.isfinite(betas).all(1) & torch.isfinite(cam_t).all(1)
        for _ in range(2):
            pose = torch.where(keep[:, None], pose, init_pose)
            betas = torch.where(keep[:, None], betas, init_betas)
            cam_t = torch.where(keep[:, None], cam_t, init_cam_t)
            with torch.no_grad():
                out = self.smpl(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
                joints = out.joints
                reproj = body_fitting_loss(pose[:, 3:], betas, joints, cam_t, camera_center, joints_2d, conf_body,
                                           self.pose_prior, focal_length=self.focal_length, sigma=self.weights.sigma,
                                           output="reprojection")
                loss = self._body_objective(pose, betas, cam_t, init_pose, camera_center, joints_2d, conf_body,
                                            self.weights, joints)
            ok = (torch.isfinite(out.vertices).flatten(1).all(1) & torch.isfinite(joints).flatten(1).all(1)
                  & torch.isfinite(reproj).all(1) & torch.isfinite(loss))
            if bool((ok | ~keep).all()):
                break
            keep = keep & ok
        converged &= keep
        if not bool(ok.all()):  # `ok` covers every sample of the last outputs, the initialisations kept too
            raise FloatingPointError("SMPLify: the initialisation itself gives non-finite outputs; check the "
                                     "input ranges (see smplfast.fitting.smplify.MAX_ABS_*)")
        return SMPLifyResult(out.vertices.detach(), joints.detach(), pose.detach(), betas.detach(), cam_t.detach(),
                             reproj.detach(), loss.detach(), iters, converged, bad.sum(dim=1), timings, history)

    def _body_objective(self, pose, betas, cam_t, init_pose, center, joints_2d, conf, w: PriorWeights, joints=None):
        if joints is None:
            joints = self.keypoints(pose, betas)
        return body_fitting_loss(pose[:, 3:], betas, joints, cam_t, center, joints_2d, conf, self.pose_prior,
                                 focal_length=self.focal_length, sigma=w.sigma, pose_prior_weight=w.pose_prior_weight,
                                 shape_prior_weight=w.shape_prior_weight, angle_prior_weight=w.angle_prior_weight,
                                 output="per_sample", weights=w, pose=pose, init_pose=init_pose)

    # -------------------------------------------------------------------------------- camera stage
    def _camera_stage(self, pose, betas, cam_t, cam_t_est, center, joints_2d, conf, visible):
        B = pose.shape[0]
        use_op = conf[:, self.op_torso].min(dim=-1).values > 0
        if self.optimizer == "adam":
            global_orient = pose[:, :3].clone().requires_grad_(True)
            body_pose = pose[:, 3:].detach()
            t = cam_t.clone().requires_grad_(True)
            opt = torch.optim.Adam([global_orient, t], lr=self.step_size, betas=(0.9, 0.999))
            trace = []
            for _ in range(self.num_iters):
                joints = self._joints(global_orient, body_pose, betas)
                per_sample = camera_fitting_loss(joints, t, cam_t_est, center, joints_2d, conf, self.focal_length,
                                                 self.weights.depth_loss_weight, self.op_torso, self.gt_torso,
                                                 reduce=False)
                trace.append(per_sample.detach())
                opt.zero_grad()
                per_sample.sum().backward()
                opt.step()
            pose = torch.cat([global_orient.detach(), body_pose], dim=1)
            n = torch.full((B,), self.num_iters, dtype=torch.long, device=pose.device)
            return pose, t.detach(), n, _adam_plateaued(trace, B, pose.device) | ~visible

        # LM on [global_orient (3), camera translation (3)]: torso residuals (plain squares) + depth.
        weight = torch.zeros_like(conf)
        weight[:, self.op_torso] = use_op[:, None].to(weight.dtype)
        weight[:, self.gt_torso] = (~use_op)[:, None].to(weight.dtype)
        km = self._kp_model
        P = km.num_params
        wd2 = self.weights.depth_loss_weight ** 2
        body = pose[:, 3:]
        eye, zero3, focal = self._camera_constants(B, pose)

        def evaluate(x, rows):
            full = torch.cat([x[:, :3], body[rows]], dim=1).view(-1, km.num_joints, 3)
            res, jac, _, _ = ops.project_keypoints(km, full, betas[rows], x[:, 3:], eye[rows], zero3[rows], focal[rows],
                                                   center[rows], joints_2d[rows], weight[rows], 0.0)
            r = res.flatten(1)
            jac = jac.flatten(1, 2)
            Jc = torch.cat([jac[:, :, :3], jac[:, :, P - 3:]], dim=2)
            dz = x[:, 5] - cam_t_est[rows, 2]
            f = (r * r).sum(1) + wd2 * dz * dz
            H = torch.bmm(Jc.transpose(1, 2), Jc)
            g = torch.bmm(Jc.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)
            H[:, 5, 5] += wd2
            g[:, 5] += wd2 * dz
            return f, H, g

        x0 = torch.cat([pose[:, :3], cam_t], dim=1)
        if self.fused:  # x = [global orient (3), translation (3)]: kernel columns 0..2 and P-3..P-1
            cols = self._columns(("camera", P), pose.device, lambda: [list(range(3)) + [-1] * (P - 6) + [3, 4, 5]])
            x, _, it, conv = ops.lm_fit(km, x0, base=torch.cat([pose, betas, cam_t], dim=1)[:, None], cols=cols,
                                        cam_rot=eye[:, None], cam_transl=zero3[:, None], focal=focal[:, None],
                                        center=center[:, None], target=joints_2d[:, None], weight=weight[:, None],
                                        sigma=0.0, depth_col=5, depth_target=cam_t_est[:, 2], depth_w2=wd2,
                                        active=visible, **_lm_kwargs(self.camera_lm_options))
            return torch.cat([x[:, :3], body], dim=1), x[:, 3:].clone(), it, conv | ~visible
        res = levenberg_marquardt(evaluate, x0, self.camera_lm_options, active=visible)
        pose = torch.cat([res.x[:, :3], body], dim=1)
        return pose, res.x[:, 3:].clone(), res.iterations, res.converged | ~visible

    def _columns(self, key: tuple, device, make) -> Tensor:
        """The fused kernel's column map (V, P) int32 for one stage layout, ``make()`` (a (V, P) nested
        list or tensor) run once per layout and device: the kernel validates a map once per tensor."""
        key = key + (str(device),)
        if key not in self._cols_cache:
            self._cols_cache[key] = torch.as_tensor(make(), dtype=torch.int32).to(device).contiguous()
        return self._cols_cache[key]

    def _camera_constants(self, B, ref):
        eye = torch.eye(3, dtype=ref.dtype, device=ref.device).expand(B, 3, 3)
        zero3 = ref.new_zeros(1, 3).expand(B, 3)
        focal = ref.new_full((1, 2), self.focal_length).expand(B, 2)
        return eye, zero3, focal

    # ---------------------------------------------------------------------------------- body stage
    def _body_stage(self, pose, betas, cam_t, init_pose, center, joints_2d, conf, visible, w: PriorWeights,
                    optimize_camera: bool, init_cam_t, record_history: bool):
        B = pose.shape[0]
        if self.optimizer == "adam":
            return self._body_stage_adam(pose, betas, cam_t, init_pose, center, joints_2d, conf, w, optimize_camera,
                                         init_cam_t, record_history)
        km = self._kp_model
        nb = betas.shape[1]
        P = km.num_params
        n = 72 + nb + (3 if optimize_camera else 0)
        eye, zero3, focal = self._camera_constants(B, pose)
        prior = self.pose_prior
        wp2, wa2, ws2 = w.pose_prior_weight ** 2, w.angle_prior_weight ** 2, w.shape_prior_weight ** 2
        wan2, wb2, wd2 = w.anchor_weight ** 2, w.shape_bound_weight ** 2, w.depth_loss_weight ** 2
        body = slice(3, 72)
        shape = slice(72, 72 + nb)
        parts = [pose, betas] + ([cam_t] if optimize_camera else [])
        x0 = torch.cat(parts, dim=1)
        if self.fused and not record_history:
            # x = [pose (72), betas (nb)(, translation (3))]: the kernel's own column order.
            cols = self._columns(("body", P, optimize_camera), pose.device, lambda: [
                list(range(72 + nb)) + (list(range(72 + nb, 75 + nb)) if optimize_camera else [-1] * 3)])
            x, _, it, conv = ops.lm_fit(
                km, x0, base=torch.cat([pose, betas, cam_t], dim=1)[:, None], cols=cols, cam_rot=eye[:, None],
                cam_transl=zero3[:, None], focal=focal[:, None], center=center[:, None], target=joints_2d[:, None],
                weight=conf[:, None], sigma=w.sigma, gmm=_gmm_buffers(prior, x0.dtype), pose_w2=wp2, angle_w2=wa2,
                body_col=3, shape_col=72, shape_w2=ws2, bound_w2=wb2, bound=w.shape_bound,
                anchor_col=0 if wan2 else -1, anchor_target=init_pose if wan2 else None, anchor_w2=wan2,
                anchor_sigma=w.anchor_sigma, depth_col=72 + nb + 2 if optimize_camera else -1,
                depth_target=init_cam_t[:, 2] if optimize_camera else None, depth_w2=wd2, active=visible,
                **_lm_kwargs(self.lm_options))
            if optimize_camera:
                cam_t = x[:, 72 + nb:].clone()
            return x[:, :72].clone(), x[:, shape].clone(), cam_t, it, conv, []

        # The unfused loop (the reference; per-iteration history).
        if optimize_camera:  # the kernel's columns [pose, β, translation]; otherwise its first n columns
            cols = torch.cat([torch.arange(72 + nb, device=pose.device), torch.arange(P - 3, P, device=pose.device)])
        angle_signs = torch.tensor(ANGLE_PRIOR_SIGNS, dtype=pose.dtype, device=pose.device)
        angle_idx = torch.tensor(ANGLE_PRIOR_INDICES, device=pose.device) + 3
        eye_nb = torch.eye(nb, dtype=pose.dtype, device=pose.device)

        def evaluate(x, rows):
            b = x.shape[0]
            t = x[:, 72 + nb:] if optimize_camera else cam_t[rows]
            res, jac, _, _ = ops.project_keypoints(km, x[:, :72].reshape(b, km.num_joints, 3), x[:, shape], t, eye[rows],
                                                   zero3[rows], focal[rows], center[rows], joints_2d[rows], conf[rows],
                                                   w.sigma)
            r = res.flatten(1)
            Jr = jac.flatten(1, 2)
            Jr = Jr.index_select(2, cols) if optimize_camera else Jr[:, :, :n]
            f = (r * r).sum(1)
            H = torch.bmm(Jr.transpose(1, 2), Jr)
            g = torch.bmm(Jr.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)
            # Pose prior: the chosen Gaussian's whitened residual (component re-selected at every point);
            # its JᵀJ is half that component's precision matrix.
            rp, Jp, comp = prior.residuals(x[:, body])
            f = f + wp2 * (rp * rp).sum(1)
            H[:, body, body] += (0.5 * wp2) * prior.precisions.to(x.dtype)[comp]
            g[:, body] += wp2 * torch.bmm(Jp.transpose(1, 2), rp.unsqueeze(-1)).squeeze(-1)
            # Angle prior: one residual per joint angle, so a diagonal contribution.
            ra, _ = angle_prior_residuals(x[:, body])
            s = ra * angle_signs
            f = f + wa2 * (ra * ra).sum(1)
            H[:, angle_idx, angle_idx] += wa2 * s * s
            g[:, angle_idx] += wa2 * s * ra
            beta = x[:, shape]
            f = f + ws2 * (beta * beta).sum(1)
            H[:, shape, shape] += ws2 * eye_nb
            g[:, shape] += ws2 * beta
            if wan2:
                ra, da = robust_residual(x[:, :72] - init_pose[rows], w.anchor_sigma)
                f = f + wan2 * (ra * ra).sum(1)
                H[:, :72, :72] += torch.diag_embed(wan2 * da * da)
                g[:, :72] += wan2 * da * ra
            if wb2:
                rb, Jb = shape_bound_residuals(beta, w.shape_bound, beta)
                f = f + wb2 * shape_bound(beta, w.shape_bound)
                H[:, shape, shape] += wb2 * (Jb.transpose(1, 2) @ Jb)
                g[:, shape] += wb2 * (Jb.transpose(1, 2) @ rb.unsqueeze(-1)).squeeze(-1)
            if optimize_camera:
                dz = t[:, 2] - init_cam_t[rows, 2]
                f = f + wd2 * dz * dz
                H[:, -1, -1] += wd2
                g[:, -1] += wd2 * dz
            return f, H, g

        opts = self.lm_options
        if record_history:
            opts = replace(opts, record_history=True)
        res = levenberg_marquardt(evaluate, x0, opts, active=visible)
        pose, betas = res.x[:, :72].clone(), res.x[:, shape].clone()
        if optimize_camera:
            cam_t = res.x[:, 72 + nb:].clone()
        return pose, betas, cam_t, res.iterations, res.converged, res.history

    def _body_stage_adam(self, pose, betas, cam_t, init_pose, center, joints_2d, conf, w, optimize_camera, init_cam_t,
                         record_history):
        B = pose.shape[0]
        global_orient = pose[:, :3].clone().requires_grad_(True)
        body_pose = pose[:, 3:].clone().requires_grad_(True)
        betas = betas.clone().requires_grad_(True)
        t = cam_t.clone().requires_grad_(optimize_camera)
        params = [body_pose, betas, global_orient] + ([t] if optimize_camera else [])
        opt = torch.optim.Adam(params, lr=self.step_size, betas=(0.9, 0.999))
        history = []
        trace = []
        t0 = time.perf_counter()
        for _ in range(self.num_iters):
            joints = self._joints(global_orient, body_pose, betas)
            full = torch.cat([global_orient, body_pose], dim=1)
            per_sample = body_fitting_loss(body_pose, betas, joints, t, center, joints_2d, conf, self.pose_prior,
                                           focal_length=self.focal_length, sigma=w.sigma,
                                           pose_prior_weight=w.pose_prior_weight, shape_prior_weight=w.shape_prior_weight,
                                           angle_prior_weight=w.angle_prior_weight, output="per_sample", weights=w,
                                           pose=full, init_pose=init_pose)
            if optimize_camera:
                per_sample = per_sample + w.depth_loss_weight ** 2 * (t[:, 2] - init_cam_t[:, 2]) ** 2
            if record_history:
                history.append((time.perf_counter() - t0, per_sample.detach().clone()))
            trace.append(per_sample.detach())
            opt.zero_grad()
            per_sample.sum().backward()
            opt.step()
        pose = torch.cat([global_orient, body_pose], dim=1).detach()
        n = torch.full((B,), self.num_iters, dtype=torch.long, device=pose.device)
        return (pose, betas.detach(), t.detach(), n, _adam_plateaued(trace, B, pose.device), history)


#: Adam runs a fixed number of steps; it counts as converged when its objective changed by less than
#: this (relative) over the last :data:`ADAM_PLATEAU_STEPS` steps.
ADAM_PLATEAU_RTOL = 1e-3
ADAM_PLATEAU_STEPS = 10


def _adam_plateaued(trace, B: int, device) -> Tensor:
    """Per sample (B,): the objective's relative change over the last ADAM_PLATEAU_STEPS steps is below
    ADAM_PLATEAU_RTOL (False when fewer steps ran, or when the objective is not finite)."""
    if len(trace) <= ADAM_PLATEAU_STEPS:
        return torch.zeros(B, dtype=torch.bool, device=device)
    a, b = trace[-1 - ADAM_PLATEAU_STEPS], trace[-1]
    ok = torch.isfinite(a) & torch.isfinite(b)
    return ok & ((a - b).abs() <= ADAM_PLATEAU_RTOL * a.abs().clamp_min(1e-12))


def _lm_kwargs(opt: LMOptions) -> dict:
    """LMOptions as the fused kernel's keyword arguments."""
    return dict(max_iters=opt.max_iters, ftol=opt.ftol, xtol=opt.xtol, gtol=opt.gtol, init_damping=opt.init_damping,
                max_damping=opt.max_damping, linear_solver=opt.linear_solver, cg_iters=opt.cg_iters)


def _gmm_buffers(prior: MaxMixturePrior, dtype) -> tuple:
    """The pose prior's buffers the fused kernel reads (means, prec_chol, precisions, constants)."""
    return tuple(getattr(prior, k).to(dtype) for k in ("means", "prec_chol", "precisions", "constants"))


def _torso_indices(convention: str):
    """The camera stage's torso joints (right hip, left hip, right shoulder, left shoulder): SPIN's
    OpenPose and ground-truth sets for SPIN-49, else the convention's own hips and shoulders twice."""
    if convention == "spin_49":
        return list(cam.SPIN49_OPENPOSE_TORSO), list(cam.SPIN49_GT_TORSO)
    from ..body.keypoints import keypoint_names
    names = list(keypoint_names(convention))
    idx = []
    for part in ("right_hip", "left_hip", "right_shoulder", "left_shoulder"):
        found = [i for i, n in enumerate(names) if n.startswith(part)]
        if not found:
            raise ValueError(f"SMPLify: keypoint convention {convention!r} has no {part} for the camera stage")
        idx.append(found[0])
    return idx, idx


def _concat_results(results) -> SMPLifyResult:
    if len(results) == 1:
        return results[0]
    tensors = {}
    for name in ("vertices", "joints", "pose", "betas", "camera_translation", "reprojection_loss", "loss", "iterations",
                 "converged", "missing_keypoints"):
        tensors[name] = torch.cat([getattr(r, name) for r in results], dim=0)
    timings = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return SMPLifyResult(**tensors, timings=timings, history=[])
