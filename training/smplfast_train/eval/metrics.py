"""Metrics of the evaluation protocol (TRAINING_SPEC §1.7, §2.6, §8 E1-E3), built on :mod:`smplfast.metrics`.

**3D joints and meshes** (:func:`mesh_metrics`). The predicted mesh comes from the *neutral* model;
the ground-truth mesh from the model of the sample's *ground-truth gender* (SPIN's 3DPW protocol;
``gender`` 0 = male, 1 = female, anything else neutral). Joints are the ``h36m_17`` keypoints of the
bundled model (``SMPL(keypoints="h36m_17")``, the rows of SPIN's ``J_regressor_h36m``) applied to both
meshes, never ``S`` (§8 E2). As SPIN's ``eval.py``:

* the pelvis is regressor joint 0 (:data:`H36M_PELVIS`), taken from the 17 joints *before* the
  subset is selected (it is not among the 14), and subtracted from the prediction and the ground
  truth separately;
* J14 = :data:`H36M_TO_J14` (LSP order; its 14th joint is the H36M head, not LSP's head top) for
  ``mpjpe`` / ``pa_mpjpe``; J17 = :data:`H36M_TO_J17` (J14, then pelvis, spine, jaw) for the
  MPI-INF-3DHP-style measures ``mpjpe_j17``, ``pa_mpjpe_j17``, ``pck150``, ``auc`` and their ``pa_``
  versions.

Per-sample values (:data:`METRIC_UNITS`): ``mpjpe``, ``pa_mpjpe`` (similarity Procrustes per sample,
fitted on the 14 joints), ``pve`` (all vertices, both meshes centred on their own regressor pelvis),
``pa_pve`` (Procrustes fitted on all vertices), all in mm; ``rot_err`` (mean geodesic angle of the
23 local body-joint rotations, the global orientation excluded), degrees; ``pck150`` (fraction of
the J17 joints closer than 150 mm) and ``auc`` (mean PCK over thresholds 0, 5, ..., 150 mm), in %,
pelvis-centred (``pck150``, ``auc``) or after Procrustes on J17 (``pa_pck150``, ``pa_auc``).

**Segmentation** (SPIN Table 2, LSP). :func:`segmentation_metrics` renders the predicted mesh with
:class:`smplfast.render.BodyRenderer` (``silhouette``, ``parts6``) and compares it with the ground-truth
silhouette and with the DensePose part image mapped to the six LSP parts by
:func:`parts6_from_densepose` (the renderer's own table, ``DENSEPOSE_TO_LSP6``). It returns per-sample
confusion matrices (rows = ground truth, columns = prediction); :func:`segmentation_scores` turns their
sum over a dataset into SPIN's numbers: pixel accuracy (%) and the mean over the classes ({bg, fg}, or
background + 6 parts) of the per-class F1 of the accumulated counts. Unlike SPIN, which uncrops the
render to the original image, the comparison is made in the crop (``img_res`` pixels).

**2D** (:func:`keypoint_2d_pck`): PCK of normalised crop keypoints (crop = [-1, 1]).

**Paired statistics** (§6.1): :func:`paired_difference` (bootstrap CI of a mean paired difference) and
:func:`claim` (the claim rule over seeds).
"""
from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

import smplfast
from smplfast import metrics as M
from smplfast.body.keypoints import CONVENTIONS

from ..rotations import axis_angle_to_matrix, geodesic_angle

__all__ = [
    "H36M_TO_J17",
    "H36M_TO_J14",
    "H36M_PELVIS",
    "J17_NAMES",
    "J14_NAMES",
    "METRIC_UNITS",
    "MESH_METRICS",
    "load_eval_models",
    "pred_body",
    "gt_body",
    "joint_metrics",
    "mesh_metrics",
    "parts6_from_densepose",
    "fb_confusion",
    "parts_confusion",
    "segmentation_scores",
    "segmentation_metrics",
    "keypoint_2d_pck",
    "PairedDifference",
    "paired_difference",
    "claim",
]

#: SPIN's ``constants.H36M_TO_J17``: rows of the 17 H36M-regressor joints in MPI-INF-3DHP's order.
H36M_TO_J17: Tuple[int, ...] = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
#: SPIN's ``constants.H36M_TO_J14``: the first 14 of :data:`H36M_TO_J17` (LSP order).
H36M_TO_J14: Tuple[int, ...] = H36M_TO_J17[:14]
#: The pelvis used for alignment: H36M regressor joint 0 (not the mid-point of the hips; §8 E1).
H36M_PELVIS: int = 0
J17_NAMES: Tuple[str, ...] = tuple(CONVENTIONS["h36m_17"][i] for i in H36M_TO_J17)
J14_NAMES: Tuple[str, ...] = J17_NAMES[:14]

#: The per-sample mesh measures of :func:`mesh_metrics`, in order.
MESH_METRICS: Tuple[str, ...] = (
    "mpjpe", "pa_mpjpe", "pve", "pa_pve", "rot_err", "pck150", "auc", "pa_pck150", "pa_auc",
    "mpjpe_j17", "pa_mpjpe_j17",
)

#: Unit of every metric name used by this package's evaluation.
METRIC_UNITS: Dict[str, str] = {
    "mpjpe": "mm", "pa_mpjpe": "mm", "pve": "mm", "pa_pve": "mm", "mpjpe_j17": "mm", "pa_mpjpe_j17": "mm",
    "rot_err": "deg",
    "pck150": "%", "auc": "%", "pa_pck150": "%", "pa_auc": "%", "pck2d": "%",
    "fb_acc": "%", "parts_acc": "%", "fb_f1": "0-1", "parts_f1": "0-1",
}

_GENDER_NAMES = {"m": "male", "male": "male", "f": "female", "female": "female",
                 "n": "neutral", "neutral": "neutral", "": "neutral"}


# ------------------------------------------------------------------------------------------ models
def load_eval_models(device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float64,
                     keypoints_2d: bool = True) -> Dict[str, torch.nn.Module]:
    """The bundled body models evaluation needs, in eval mode on ``device``.

    Keys: ``"neutral"``, and ``"female"`` / ``"male"`` where the installation has them, each
    ``SMPL(gender=..., keypoints="h36m_17")``; with ``keypoints_2d`` also ``"neutral_spin24"``
    (``keypoints="spin_24"``, the joints of ``part_gt``, for the 2D PCK).
    """
    from smplfast.body.default_model import default_model_path

    # check_finite=False: a broken (NaN) prediction must give NaN metrics for its sample, not an error.
    kw = dict(dtype=dtype, create_betas=False, create_global_orient=False, create_body_pose=False,
              create_transl=False, check_finite=False)
    models: Dict[str, torch.nn.Module] = {}
    for g in ("neutral", "female", "male"):
        try:
            default_model_path(g)
        except FileNotFoundError:
            if g == "neutral":
                raise
            continue
        models[g] = smplfast.SMPL(gender=g, keypoints="h36m_17", **kw).to(device).eval()
    if keypoints_2d:
        models["neutral_spin24"] = smplfast.SMPL(gender="neutral", keypoints="spin_24", **kw).to(device).eval()
    return models


def _model_ref(models: Mapping[str, torch.nn.Module]) -> Tuple[torch.dtype, torch.device]:
    if "neutral" not in models:
        raise ValueError(f"models must hold a 'neutral' model (see load_eval_models); got keys {sorted(models)}")
    buf = models["neutral"].v_template
    return buf.dtype, buf.device


def _tensor(x, name: str, dtype, device) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a tensor or array; got {type(x).__name__}") from e
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers; got {t.dtype}")
    return t.detach().to(device=device, dtype=dtype)


def _gender_keys(gender, batch: int) -> list:
    """Per-sample model keys ("male" / "female" / "neutral") from SPIN codes (0 m, 1 f, other neutral)
    or strings ('m', 'f', 'n', 'male', ...)."""
    if isinstance(gender, (str, int, np.integer)):
        gender = [gender] * batch
    if isinstance(gender, Tensor):
        gender = gender.detach().cpu().reshape(-1).tolist()
    elif isinstance(gender, np.ndarray):
        gender = gender.reshape(-1).tolist()
    gender = list(gender)
    if len(gender) != batch:
        raise ValueError(f"gt_gender must have one entry per sample ({batch}); got {len(gender)}")
    keys = []
    for g in gender:
        if isinstance(g, (str, np.str_)):
            s = str(g).strip().lower()
            if s not in _GENDER_NAMES:
                raise ValueError(f"unknown gender {g!r}; expected 'm', 'f', 'n', 'male', 'female' or 'neutral'")
            keys.append(_GENDER_NAMES[s])
        else:
            code = int(g)
            keys.append("male" if code == 0 else "female" if code == 1 else "neutral")
    return keys


def pred_body(pred_rotmat, pred_betas, models: Mapping[str, torch.nn.Module], keypoints_2d: bool = False):
    """The predicted mesh of the neutral model: ``(vertices (B, V, 3), joints (B, 17, 3))`` in the
    models' dtype (``h36m_17`` joints, no translation), plus the ``spin_24`` joints (B, 24, 3) with
    ``keypoints_2d``. ``pred_rotmat`` (B, 24, 3, 3), ``pred_betas`` (B, 10)."""
    dtype, device = _model_ref(models)
    R = _tensor(pred_rotmat, "pred_rotmat", dtype, device)
    b = _tensor(pred_betas, "pred_betas", dtype, device)
    if R.dim() != 4 or R.shape[1:] != (24, 3, 3):
        raise ValueError(f"pred_rotmat must be (B, 24, 3, 3); got {tuple(R.shape)}")
    if b.dim() != 2 or b.shape[0] != R.shape[0]:
        raise ValueError(f"pred_betas must be (B, num_betas) with B = {R.shape[0]}; got {tuple(b.shape)}")
    kw = dict(betas=b, global_orient=R[:, :1], body_pose=R[:, 1:], pose2rot=False)
    out = models["neutral"](**kw)
    if not keypoints_2d:
        return out.vertices, out.joints
    if "neutral_spin24" not in models:
        raise ValueError("keypoints_2d needs the 'neutral_spin24' model (load_eval_models(keypoints_2d=True))")
    j24 = models["neutral_spin24"](joints_only=True, **kw).joints
    return out.vertices, out.joints, j24


def gt_body(gt_pose_aa, gt_betas, gt_gender, models: Mapping[str, torch.nn.Module]):
    """The ground-truth mesh of each sample's gender model: ``(vertices (B, V, 3), joints (B, 17, 3))``.

    ``gt_pose_aa`` (B, 72) axis-angle, ``gt_betas`` (B, 10), ``gt_gender`` (B,) SPIN codes (0 male,
    1 female, other neutral) or strings. A gender whose model is missing from ``models`` is an error
    (it is never silently replaced by the neutral model)."""
    dtype, device = _model_ref(models)
    pose = _tensor(gt_pose_aa, "gt_pose_aa", dtype, device)
    betas = _tensor(gt_betas, "gt_betas", dtype, device)
    if pose.dim() != 2 or pose.shape[1] != 72:
        raise ValueError(f"gt_pose_aa must be (B, 72); got {tuple(pose.shape)}")
    B = pose.shape[0]
    if betas.dim() != 2 or betas.shape[0] != B:
        raise ValueError(f"gt_betas must be (B, num_betas) with B = {B}; got {tuple(betas.shape)}")
    keys = _gender_keys(gt_gender, B)
    V = models["neutral"].get_num_verts()
    verts = torch.empty(B, V, 3, dtype=dtype, device=device)
    joints = torch.empty(B, 17, 3, dtype=dtype, device=device)
    for key in sorted(set(keys)):
        if key not in models:
            raise ValueError(f"ground truth of gender {key!r} needs models[{key!r}] (the GT mesh uses the GT gender); "
                             f"models has {sorted(models)}")
        idx = torch.as_tensor([i for i, k in enumerate(keys) if k == key], device=device)
        out = models[key](betas=betas[idx], global_orient=pose[idx, :3], body_pose=pose[idx, 3:])
        if out.vertices.shape[1] != V:
            raise ValueError(f"the {key} model has {out.vertices.shape[1]} vertices, the neutral one {V}")
        verts[idx] = out.vertices
        joints[idx] = out.joints
    return verts, joints


# -------------------------------------------------------------------------------------- 3D metrics
def joint_metrics(pred_joints17, gt_joints17) -> Dict[str, Tensor]:
    """The joint measures of :func:`mesh_metrics` from ``h36m_17`` joints in the regressor's order
    (B, 17, 3), metres: each set is centred on its own joint :data:`H36M_PELVIS`, then J14 gives
    ``mpjpe`` / ``pa_mpjpe`` and J17 ``mpjpe_j17`` / ``pa_mpjpe_j17`` / ``pck150`` / ``auc`` /
    ``pa_pck150`` / ``pa_auc`` (mm, %)."""
    pj = pred_joints17 if isinstance(pred_joints17, Tensor) else torch.as_tensor(np.asarray(pred_joints17))
    gj = gt_joints17 if isinstance(gt_joints17, Tensor) else torch.as_tensor(np.asarray(gt_joints17))
    if pj.dim() != 3 or pj.shape[1:] != (17, 3) or gj.shape != pj.shape:
        raise ValueError(f"pred_joints17 and gt_joints17 must both be (B, 17, 3); got {tuple(pj.shape)} and "
                         f"{tuple(gj.shape)}")
    if not pj.is_floating_point():
        pj = pj.to(torch.get_default_dtype())
    gj = gj.to(device=pj.device, dtype=pj.dtype)
    j17 = torch.as_tensor(H36M_TO_J17, device=pj.device)
    pp, gp = pj[:, H36M_PELVIS:H36M_PELVIS + 1], gj[:, H36M_PELVIS:H36M_PELVIS + 1]
    p17, g17 = (pj[:, j17] - pp) * 1000.0, (gj[:, j17] - gp) * 1000.0     # mm, pelvis-centred
    p14, g14 = p17[:, :14], g17[:, :14]
    thr = torch.as_tensor(M.MPI_INF_3DHP_AUC_THRESHOLDS_MM, dtype=pj.dtype, device=pj.device)
    p17_pa = M.procrustes_align(p17, g17)
    return {
        "mpjpe": M.mpjpe(p14, g14),
        "pa_mpjpe": M.pa_mpjpe(p14, g14),
        "pck150": M.pck(p17, g17, threshold=150.0) * 100.0,
        "auc": M.auc(p17, g17, thresholds=thr) * 100.0,
        "pa_pck150": M.pck(p17_pa, g17, threshold=150.0) * 100.0,
        "pa_auc": M.auc(p17_pa, g17, thresholds=thr) * 100.0,
        "mpjpe_j17": M.mpjpe(p17, g17),
        "pa_mpjpe_j17": M.pa_mpjpe(p17, g17),
    }


def mesh_metrics(pred_rotmat, pred_betas, gt_pose_aa, gt_betas, gt_gender,
                 models: Mapping[str, torch.nn.Module], *, return_bodies: bool = False) -> Dict[str, Tensor]:
    """Per-sample 3D measures (module docstring) of a batch.

    Args:
        pred_rotmat: (B, 24, 3, 3) predicted rotations (global orientation first).
        pred_betas: (B, 10).
        gt_pose_aa: (B, 72) ground-truth axis-angle pose; gt_betas (B, 10).
        gt_gender: (B,) SPIN gender codes (0 male, 1 female, -1 / other neutral) or strings.
        models: :func:`load_eval_models`; its dtype and device are used for the computation.
        return_bodies: also return ``pred_vertices``, ``pred_joints17``, ``gt_vertices``,
            ``gt_joints17`` (raw regressor order, metres, no alignment).

    Returns:
        dict of (B,) tensors in the models' dtype: the keys of :data:`MESH_METRICS` in the units of
        :data:`METRIC_UNITS` (mm, degrees, %). Samples with non-finite predictions give NaN.
    """
    pv, pj = pred_body(pred_rotmat, pred_betas, models)
    gv, gj = gt_body(gt_pose_aa, gt_betas, gt_gender, models)
    dtype, device = _model_ref(models)
    out = joint_metrics(pj, gj)
    pp, gp = pj[:, H36M_PELVIS:H36M_PELVIS + 1], gj[:, H36M_PELVIS:H36M_PELVIS + 1]
    out["pve"] = M.pve((pv - pp) * 1000.0, (gv - gp) * 1000.0)
    out["pa_pve"] = M.pa_mpjpe(pv * 1000.0, gv * 1000.0)
    R_pred = _tensor(pred_rotmat, "pred_rotmat", dtype, device)[:, 1:]
    R_gt = axis_angle_to_matrix(_tensor(gt_pose_aa, "gt_pose_aa", dtype, device)[:, 3:].reshape(-1, 23, 3))
    out["rot_err"] = torch.rad2deg(geodesic_angle(R_pred, R_gt)).mean(dim=1)
    # A non-finite prediction is a broken sample: NaN in every measure (the Procrustes code already
    # does so; the rotation error must not report a number for it either).
    bad = ~torch.isfinite(pv).flatten(1).all(dim=1)
    out = {k: torch.where(bad, torch.full_like(out[k], float("nan")), out[k]) for k in MESH_METRICS}
    if return_bodies:
        out.update(pred_vertices=pv, pred_joints17=pj, gt_vertices=gv, gt_joints17=gj)
    return out


# ------------------------------------------------------------------------------------ segmentation
def parts6_from_densepose(parts24) -> Tensor:
    """DensePose part indices (0 background, 1..24) -> the six LSP parts (0 background, 1..6) with the
    renderer's table :data:`smplfast.render.DENSEPOSE_TO_LSP6`."""
    from smplfast.render import DENSEPOSE_TO_LSP6

    p = parts24 if isinstance(parts24, Tensor) else torch.as_tensor(np.asarray(parts24))
    if p.is_floating_point():
        if not bool((p == p.round()).all()):
            raise ValueError("parts24 must hold integer part indices")
    p = p.to(torch.int64)
    if p.numel() and (int(p.min()) < 0 or int(p.max()) > 24):
        raise ValueError(f"parts24 must be DensePose part indices in 0..24; got {int(p.min())}..{int(p.max())}")
    return torch.as_tensor(DENSEPOSE_TO_LSP6, device=p.device)[p]


def _confusion(pred: Tensor, gt: Tensor, k: int, what: str) -> Tensor:
    if pred.shape != gt.shape or pred.dim() < 2:
        raise ValueError(f"{what}: prediction and ground truth must be (B, H, W) of one shape; got "
                         f"{tuple(pred.shape)} and {tuple(gt.shape)}")
    if pred.dim() == 2:
        pred, gt = pred[None], gt[None]
    p = pred.reshape(pred.shape[0], -1).to(torch.int64)
    g = gt.reshape(gt.shape[0], -1).to(device=p.device, dtype=torch.int64)
    for name, t in (("prediction", p), ("ground truth", g)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(f"{what}: {name} labels must be in 0..{k - 1}; got {int(t.min())}..{int(t.max())}")
    B = p.shape[0]
    flat = (torch.arange(B, device=p.device)[:, None] * (k * k) + g * k + p).reshape(-1)
    return torch.bincount(flat, minlength=B * k * k).reshape(B, k, k)


def fb_confusion(pred_fg, gt_fg) -> Tensor:
    """Per-sample foreground/background confusion (B, 2, 2) int64, ``[b, gt, pred]`` (0 bg, 1 fg),
    of boolean (or 0/1) maps (B, H, W)."""
    p = pred_fg if isinstance(pred_fg, Tensor) else torch.as_tensor(np.asarray(pred_fg))
    g = gt_fg if isinstance(gt_fg, Tensor) else torch.as_tensor(np.asarray(gt_fg))
    return _confusion((p != 0).to(torch.int64), (g != 0).to(torch.int64), 2, "fb_confusion")


def parts_confusion(pred_parts6, gt_parts6) -> Tensor:
    """Per-sample 7-class confusion (B, 7, 7) int64, ``[b, gt, pred]``, of LSP part maps (B, H, W)
    with labels 0 (background) .. 6."""
    p = pred_parts6 if isinstance(pred_parts6, Tensor) else torch.as_tensor(np.asarray(pred_parts6))
    g = gt_parts6 if isinstance(gt_parts6, Tensor) else torch.as_tensor(np.asarray(gt_parts6))
    return _confusion(p, g, 7, "parts_confusion")


def segmentation_scores(confusion) -> Dict[str, object]:
    """SPIN's segmentation scores of a confusion matrix ``[gt, pred]`` (K, K), or of a stack (N, K, K)
    that is summed first (dataset accumulation).

    Returns ``acc`` (pixel accuracy, %), ``f1`` (mean over the K classes of 2TP / (2TP + FP + FN) of
    the accumulated counts, 0-1) and ``f1_per_class`` (list). A class absent from both ground truth
    and prediction has F1 NaN and is left out of the mean."""
    c = confusion if isinstance(confusion, Tensor) else torch.as_tensor(np.asarray(confusion))
    c = c.to(torch.float64)
    if c.dim() == 3:
        c = c.sum(dim=0)
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be (K, K) or (N, K, K); got {tuple(c.shape)}")
    tp = torch.diagonal(c)
    fp = c.sum(dim=0) - tp
    fn = c.sum(dim=1) - tp
    den = 2 * tp + fp + fn
    f1 = torch.where(den > 0, 2 * tp / torch.where(den > 0, den, torch.ones_like(den)),
                     torch.full_like(den, float("nan")))
    total = c.sum()
    acc = float(tp.sum() / total * 100.0) if total > 0 else float("nan")
    f1_mean = float(torch.nanmean(f1)) if bool(torch.isfinite(f1).any()) else float("nan")
    return {"acc": acc, "f1": f1_mean, "f1_per_class": [float(v) for v in f1]}


def _pixel_acc(conf: Tensor) -> Tensor:
    c = conf.to(torch.float64)
    return torch.diagonal(c, dim1=-2, dim2=-1).sum(-1) / c.sum(dim=(-2, -1)) * 100.0


def segmentation_metrics(pred_vertices, camera, gt_mask, gt_parts24, renderer, *, image_size=None,
                         return_maps: bool = False) -> Dict[str, Tensor]:
    """Render predicted meshes and compare them with the ground-truth silhouette and parts.

    Args:
        pred_vertices: (B, V, 3) meshes in the frame of ``camera`` (metres). Rows with non-finite
            vertices are not rendered: they count as predicting background everywhere.
        camera: :class:`smplfast.render.PerspectiveCamera` (B cameras or one), e.g.
            ``PerspectiveCamera.crop_camera(t, 5000, img_res)`` for a network's weak-perspective
            output converted by :func:`smplfast.fitting.weak_perspective_to_translation`.
        gt_mask: (B, H, W) boolean silhouettes.
        gt_parts24: (B, H, W) DensePose part indices 0..24, or None to skip the part scores.
        renderer: :class:`smplfast.render.BodyRenderer` of the model's mesh.
        image_size: (H, W) of the render; default the ground truth's.
        return_maps: also return ``pred_silhouette`` / ``pred_parts6`` / ``gt_parts6``.

    Returns:
        ``fb_confusion`` (B, 2, 2) and ``parts_confusion`` (B, 7, 7) int64 (rows = ground truth), and
        the per-sample pixel accuracies ``fb_acc`` / ``parts_acc`` (B,) in %. Sum the confusions over
        a dataset and pass them to :func:`segmentation_scores` for SPIN's accuracy and F1.
    """
    from smplfast.render import PerspectiveCamera

    v = pred_vertices if isinstance(pred_vertices, Tensor) else torch.as_tensor(np.asarray(pred_vertices))
    if v.dim() != 3 or v.shape[-1] != 3:
        raise ValueError(f"pred_vertices must be (B, V, 3); got {tuple(v.shape)}")
    if not isinstance(camera, PerspectiveCamera):
        raise TypeError(f"camera must be a smplfast.render.PerspectiveCamera; got {type(camera).__name__}")
    gm = gt_mask if isinstance(gt_mask, Tensor) else torch.as_tensor(np.asarray(gt_mask))
    if gm.dim() == 2:
        gm = gm[None]
    B = v.shape[0]
    if gm.dim() != 3 or gm.shape[0] != B:
        raise ValueError(f"gt_mask must be (B, H, W) with B = {B}; got {tuple(gm.shape)}")
    H, W = (int(gm.shape[1]), int(gm.shape[2])) if image_size is None else tuple(int(s) for s in image_size)
    if (H, W) != tuple(gm.shape[1:]):
        raise ValueError(f"image_size {(H, W)} differs from the ground truth's {tuple(gm.shape[1:])}")
    sil = torch.zeros(B, H, W, dtype=torch.bool, device=v.device)
    p6 = torch.zeros(B, H, W, dtype=torch.int64, device=v.device)
    ok = torch.isfinite(v).flatten(1).all(dim=1)
    if bool(ok.any()):
        idx = torch.nonzero(ok).reshape(-1)
        maps = renderer.render(v[idx], camera.expand(B)[idx], (H, W), maps=("silhouette", "parts6"))
        sil[idx] = maps["silhouette"]
        p6[idx] = maps["parts6"]
    out = {"fb_confusion": fb_confusion(sil, gm.to(v.device))}
    out["fb_acc"] = _pixel_acc(out["fb_confusion"])
    gp6 = None
    if gt_parts24 is not None:
        gp = gt_parts24 if isinstance(gt_parts24, Tensor) else torch.as_tensor(np.asarray(gt_parts24))
        if gp.dim() == 2:
            gp = gp[None]
        if tuple(gp.shape) != (B, H, W):
            raise ValueError(f"gt_parts24 must be (B, H, W) = {(B, H, W)}; got {tuple(gp.shape)}")
        gp6 = parts6_from_densepose(gp.to(v.device))
        out["parts_confusion"] = parts_confusion(p6, gp6)
        out["parts_acc"] = _pixel_acc(out["parts_confusion"])
    if return_maps:
        out.update(pred_silhouette=sil, pred_parts6=p6)
        if gp6 is not None:
            out["gt_parts6"] = gp6
    return out


# -------------------------------------------------------------------------------------------- 2D
def keypoint_2d_pck(pred_2d, gt_2d, threshold: float = 0.05, mask=None) -> Tensor:
    """Per-sample 2D PCK in % of keypoints in normalised crop units (the crop spans [-1, 1], so the
    default 0.05 is 2.5 % of the crop side).

    ``pred_2d`` (B, J, 2 or 3), ``gt_2d`` (B, J, 2 or 3); only x, y are compared. ``mask`` (B, J) /
    (J,) selects the joints; by default the ground truth's third column > 0 (its visibility) when it
    has one, else all joints. A sample with no selected joint gives NaN."""
    p = pred_2d if isinstance(pred_2d, Tensor) else torch.as_tensor(np.asarray(pred_2d))
    g = gt_2d if isinstance(gt_2d, Tensor) else torch.as_tensor(np.asarray(gt_2d))
    if p.dim() < 2 or g.dim() < 2 or p.shape[-1] < 2 or g.shape[-1] < 2 or p.shape[:-1] != g.shape[:-1]:
        raise ValueError(f"pred_2d and gt_2d must be (B, J, 2|3) with equal (B, J); got {tuple(p.shape)} "
                         f"and {tuple(g.shape)}")
    if mask is None and g.shape[-1] >= 3:
        mask = g[..., 2] > 0
    g = g.to(p.device)
    return M.pck(p[..., :2], g[..., :2], threshold=float(threshold), mask=mask) * 100.0


# ----------------------------------------------------------------------------------- paired stats
class PairedDifference(dict):
    """Mean paired difference ``mean(a - b)`` with its percentile bootstrap CI over samples.

    A plain dict (so it goes to JSON as is) with the keys ``mean``, ``ci_low``, ``ci_high``, ``n``,
    ``level``, ``excludes_zero``, also readable as attributes."""

    def __init__(self, mean: float, ci_low: float, ci_high: float, n: int, level: float = 0.95):
        super().__init__(mean=float(mean), ci_low=float(ci_low), ci_high=float(ci_high), n=int(n),
                         level=float(level), excludes_zero=bool(ci_low > 0 or ci_high < 0))

    mean = property(lambda self: self["mean"])
    ci_low = property(lambda self: self["ci_low"])
    ci_high = property(lambda self: self["ci_high"])
    n = property(lambda self: self["n"])
    level = property(lambda self: self["level"])
    excludes_zero = property(lambda self: self["excludes_zero"])

    def to_dict(self) -> dict:
        return dict(self)


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-sample values; got shape {a.shape}")
    return a


def _bootstrap_ci(d: np.ndarray, n_boot: int, seed: int, level: float) -> Tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = d.shape[0]
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(n, 1))
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        means[s:e] = d[rng.integers(0, n, size=(e - s, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_difference(a, b=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> PairedDifference:
    """Mean of the per-sample differences ``a - b`` and its bootstrap CI (percentile, ``n_boot``
    resamples of the samples with replacement, generator seeded with ``seed``).

    ``a``, ``b``: (N,) per-sample values of two arms on the same samples in the same order; with
    ``b=None``, ``a`` already holds the differences. Pairs with a NaN in either arm are dropped
    (``n`` counts the pairs used)."""
    da = _vector(a, "a")
    if b is not None:
        db = _vector(b, "b")
        if db.shape != da.shape:
            raise ValueError(f"a and b must pair the same samples: shapes {da.shape} and {db.shape}")
        d = da - db
    else:
        d = da
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("paired_difference: no finite paired difference")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    lo, hi = _bootstrap_ci(d, int(n_boot), int(seed), float(level))
    return PairedDifference(float(d.mean()), lo, hi, int(d.size), float(level))


def claim(*per_seed_diffs, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
          expected_sign: Optional[int] = None) -> Dict[str, object]:
    """The claim rule of TRAINING_SPEC §6.1 for an ordering "A < B" (or "A > B").

    Args:
        per_seed_diffs: one (N_s,) array of per-sample paired differences ``A - B`` per seed (or a
            single list of such arrays).
        n_boot, seed, level: bootstrap of the pooled differences (:func:`paired_difference`).
        expected_sign: -1 for a claim "A < B" (differences A - B negative), +1 for "A > B"; None
            accepts either direction.

    The pooled data: when every seed has the same number of samples (the paired design: the same
    held-out samples in the same order), the per-sample mean over seeds, so the bootstrap resamples
    test samples; otherwise all differences concatenated.

    Returns a dict: ``verdict`` = "reproduced" when every seed's mean difference has the same
    (non-zero) sign, that sign is ``expected_sign`` (if given), and the pooled CI excludes 0;
    otherwise "not resolved". Also ``sign`` (the common sign of the seed means, 0 when they
    disagree), ``per_seed`` (list of :class:`PairedDifference` dicts) and ``pooled`` (dict).
    """
    if len(per_seed_diffs) == 1 and isinstance(per_seed_diffs[0], (list, tuple)) and per_seed_diffs[0] \
            and np.ndim(per_seed_diffs[0][0]) == 1:
        per_seed_diffs = tuple(per_seed_diffs[0])
    if not per_seed_diffs:
        raise ValueError("claim: give at least one seed's paired differences")
    if expected_sign not in (None, -1, 1):
        raise ValueError(f"expected_sign must be -1, +1 or None; got {expected_sign!r}")
    seeds = [_vector(d, f"per_seed_diffs[{i}]") for i, d in enumerate(per_seed_diffs)]
    per_seed = [paired_difference(d, n_boot=n_boot, seed=seed, level=level) for d in seeds]
    signs = {int(np.sign(p.mean)) for p in per_seed}
    sign = signs.pop() if len(signs) == 1 else 0
    if len({d.shape[0] for d in seeds}) == 1:
        with warnings.catch_warnings():  # a sample that is NaN for every seed stays NaN (dropped below)
            warnings.simplefilter("ignore", RuntimeWarning)
            pooled_data = np.nanmean(np.stack(seeds), axis=0) if len(seeds) > 1 else seeds[0]
    else:
        pooled_data = np.concatenate(seeds)
    pooled = paired_difference(pooled_data, n_boot=n_boot, seed=seed, level=level)
    ok = sign != 0 and pooled.excludes_zero and int(np.sign(pooled.mean)) == sign
    if expected_sign is not None:
        ok = ok and sign == expected_sign
    return {
        "verdict": "reproduced" if ok else "not resolved",
        "sign": sign,
        "per_seed": [p.to_dict() for p in per_seed],
        "pooled": pooled.to_dict(),
    }
