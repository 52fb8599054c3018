"""3-D pose and mesh evaluation metrics: MPJPE, PA-MPJPE (reconstruction error), 3DPCK, AUC and PVE.

These are the measures SPIN's ``eval.py`` reports, computed in batches in PyTorch:

* :func:`mpjpe` - mean per-joint position error, optionally after subtracting a root point from the
  prediction and the ground truth separately (SPIN centres on the pelvis, the mean of the two hips:
  ``root_align=(2, 3)`` for its 14 LSP-ordered joints, or ``root_align=SPIN_PELVIS`` with
  ``convention="lsp_14"``);
* :func:`pa_mpjpe` - MPJPE after a similarity Procrustes alignment of the prediction onto the ground
  truth (SPIN's "reconstruction error"); :func:`similarity_transform` and :func:`procrustes_align`
  expose the alignment itself;
* :func:`pck` and :func:`auc` - the MPI-INF-3DHP measures: fraction of joints closer than 150 mm, and
  the mean of that fraction over the thresholds 0, 5, ..., 150 mm;
* :func:`pve` - mean per-vertex error between two meshes.

Conventions shared by every function:

* Points are ``(..., J, 3)`` (2-D points ``(..., J, 2)`` work too), with any number of leading batch
  dimensions; the result has the leading shape (``(B,)`` for ``(B, J, 3)``, a 0-d tensor for a single
  ``(J, 3)`` pose, an empty tensor for ``B = 0``). Results are per sample; average them yourself.
* Inputs may be torch tensors (any device) or numpy arrays; the result is always a torch tensor, on
  the inputs' device. float32 and float64 are kept; other dtypes are computed in float32 (integers,
  half precision) or the default dtype.
* Errors are in the inputs' units. SPIN reports millimetres from joints in metres, so multiply the
  errors by 1000; thresholds of :func:`pck` / :func:`auc` default to metres (0.15 = 150 mm), pass
  ``threshold=150`` / ``thresholds=torch.linspace(0, 150, 31)`` for joints in millimetres.
* ``mask`` (``(J,)`` for all samples or ``(..., J)`` per sample) is boolean or numeric; numeric values
  are non-negative weights (0/1 gives the plain masked mean). Joints with weight 0 take no part in any
  average nor in the Procrustes fit, so they may hold anything, NaN included.
* A sample whose valid joints contain NaN or infinity gives NaN for that sample only; so does a
  sample with no valid joint (all weights 0). No error is raised for either, so an evaluation loop
  can drop such samples with ``torch.nanmean`` / ``isnan``.
* Shape, dtype and device problems raise ``ValueError`` / ``TypeError`` naming what was expected.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .body.keypoints import APPROXIMATE_GROUPS, keypoint_names

__all__ = [
    "SPIN_PELVIS",
    "MPI_INF_3DHP_AUC_THRESHOLDS_MM",
    "mpjpe",
    "pa_mpjpe",
    "similarity_transform",
    "procrustes_align",
    "pck",
    "auc",
    "pve",
]

#: The two hips whose mean SPIN's evaluation uses as the pelvis (indices 2 and 3 of its 14 joints).
SPIN_PELVIS: Tuple[str, str] = ("right_hip_lsp", "left_hip_lsp")

#: Thresholds of the MPI-INF-3DHP AUC in millimetres: 0, 5, ..., 150.
MPI_INF_3DHP_AUC_THRESHOLDS_MM: Tuple[float, ...] = tuple(float(5 * i) for i in range(31))

Array = Union[torch.Tensor, np.ndarray]
RootSpec = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor, np.ndarray]


# --------------------------------------------------------------------------------------- helpers
def _device_of(*xs) -> Optional[torch.device]:
    devices = {x.device for x in xs if isinstance(x, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"inputs are on different devices: {sorted(str(d) for d in devices)}")
    return devices.pop() if devices else None


def _to_tensor(x, name: str, device: Optional[torch.device]) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        t = torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}") from e
    return t.to(device) if device is not None else t


def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    for t in ts:
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"points must be real numbers, got dtype {t.dtype}")
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        return torch.get_default_dtype()
    # The SVD (and accurate sums) need at least single precision.
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _points_pair(pred, gt, names=("pred", "gt")) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both point sets as tensors of one floating dtype on one device, with equal (..., J, D) shapes."""
    device = _device_of(pred, gt)
    p = _to_tensor(pred, names[0], device)
    g = _to_tensor(gt, names[1], device)
    if p.dim() < 2 or p.shape[-1] not in (2, 3):
        raise ValueError(f"{names[0]} must have shape (..., J, 3), got {tuple(p.shape)}")
    if g.shape != p.shape:
        raise ValueError(f"{names[1]} must have the shape of {names[0]}: expected {tuple(p.shape)}, "
                         f"got {tuple(g.shape)}")
    dtype = _compute_dtype(p, g)
    return p.to(dtype), g.to(dtype)


def _weights(mask, points: torch.Tensor, name: str = "mask") -> Optional[torch.Tensor]:
    """The mask as float weights of shape (..., J) (the points' leading shape), or None for no mask."""
    if mask is None:
        return None
    m = _to_tensor(mask, name, points.device).to(points.device)
    lead, J = tuple(points.shape[:-2]), points.shape[-2]
    if m.shape != (J,) and tuple(m.shape) != lead + (J,):
        raise ValueError(f"{name} must have shape ({J},) or {lead + (J,)}, got {tuple(m.shape)}")
    if m.is_complex():
        raise TypeError(f"{name} must be boolean or real, got dtype {m.dtype}")
    w = m.to(points.dtype)
    if not bool((w >= 0).all()):
        raise ValueError(f"{name} weights must be non-negative numbers (no NaN)")
    return w.expand(lead + (J,))


def _root_indices(root_align: RootSpec, num_points: int, convention, what: str = "joints") -> Optional[list]:
    """``root_align`` as a list of point indices (None when there is no root alignment)."""
    if root_align is None:
        return None
    if isinstance(root_align, (torch.Tensor, np.ndarray)):
        arr = root_align.detach().cpu().numpy() if isinstance(root_align, torch.Tensor) else root_align
        if arr.ndim > 1 or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"root_align must be an index, a name or a 1-D sequence of them, got an "
                            f"array of {arr.dtype} with shape {tuple(arr.shape)}")
        items = [int(i) for i in arr.reshape(-1)]
    elif isinstance(root_align, (int, np.integer, str)) and not isinstance(root_align, bool):
        items = [root_align]
    else:
        try:
            items = list(root_align)
        except TypeError:
            raise TypeError(f"root_align must be an index, a keypoint name or a sequence of them, "
                            f"got {type(root_align).__name__}") from None
    if not items:
        raise ValueError("root_align is an empty sequence; pass None for no root alignment")
    names = None
    indices = []
    for item in items:
        if isinstance(item, str):
            if convention is None:
                raise ValueError(f"root_align names a keypoint ({item!r}); pass convention= to say "
                                 f"which keypoints the {what} are")
            if names is None:
                names = keypoint_names(convention)
                if len(names) != num_points:
                    raise ValueError(f"convention {convention!r} has {len(names)} keypoints but the "
                                     f"points have {num_points}")
            if item not in names:  # another definition of the landmark (h36m_17's pelvis is pelvis_mpii)
                alt = next((n for g in APPROXIMATE_GROUPS if item in g for n in g if n in names), None)
                if alt is None:
                    raise ValueError(f"keypoint {item!r} is not in convention {convention!r}")
                item = alt
            indices.append(names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            i = int(item)
            if not -num_points <= i < num_points:
                raise ValueError(f"root_align index {i} is out of range for {num_points} {what}")
            indices.append(i % num_points)
        else:
            raise TypeError(f"root_align entries must be ints or keypoint names, got {type(item).__name__}")
    return indices


def _centre(x: torch.Tensor, indices: Optional[list]) -> torch.Tensor:
    if indices is None:
        return x
    return x - x[..., indices, :].mean(dim=-2, keepdim=True)


def _weighted_mean(values: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over the last axis with weights; NaN where the weights sum to 0."""
    if w is None:
        return values.mean(dim=-1)
    # where() rather than a product so that NaN at a weight-0 joint cannot leak into the sum.
    num = torch.where(w > 0, values * w, torch.zeros((), dtype=values.dtype, device=values.device))
    return num.sum(dim=-1) / w.sum(dim=-1)


def _distances(pred, gt, mask, root_align, convention, what="joints"):
    p, g = _points_pair(pred, gt)
    w = _weights(mask, p)
    idx = _root_indices(root_align, p.shape[-2], convention, what)
    p, g = _centre(p, idx), _centre(g, idx)
    d = torch.linalg.vector_norm(p - g, dim=-1)
    # An infinite coordinate means a broken sample, not a large error: report it as NaN like NaN input.
    return torch.where(torch.isinf(d), torch.full_like(d, float("nan")), d), w


# ----------------------------------------------------------------------------------------- MPJPE
def mpjpe(pred: Array, gt: Array, mask=None, root_align: RootSpec = None, *, convention=None) -> torch.Tensor:
    """Mean per-joint position error: the mean Euclidean distance between corresponding joints.

    Args:
        pred, gt: joints ``(..., J, 3)`` of equal shape (torch or numpy).
        mask: ``(J,)`` or ``(..., J)`` boolean mask or non-negative weights; joints with weight 0
            are left out of the mean.
        root_align: ``None`` (no alignment), a joint index, or a sequence of indices whose mean is the
            root; the prediction's root is subtracted from the prediction and the ground truth's from
            the ground truth (``(2, 3)`` is SPIN's pelvis for its 14 joints). Keypoint names are
            accepted together with ``convention``. Root joints are used even when masked out.
        convention: keypoint convention of the joints (a name from
            :data:`smplfast.body.keypoints.CONVENTIONS` or a sequence of names), only needed to
            resolve names in ``root_align``.

    Returns:
        Per-sample error of the leading shape, in the inputs' units (multiply by 1000 for millimetres
        from metres, as SPIN reports). NaN for samples with non-finite valid joints or no valid joint.
    """
    d, w = _distances(pred, gt, mask, root_align, convention)
    return _weighted_mean(d, w)


def pve(pred_vertices: Array, gt_vertices: Array, root_align: RootSpec = None, mask=None) -> torch.Tensor:
    """Per-vertex error: the mean Euclidean distance between corresponding vertices of two meshes.

    Args:
        pred_vertices, gt_vertices: ``(..., V, 3)`` of equal shape with the same topology.
        root_align: ``None``, a vertex index or a sequence of vertex indices whose mean is subtracted
            from each mesh separately. To centre both meshes on a joint instead, subtract it from
            the vertices before calling.
        mask: optional ``(V,)`` or ``(..., V)`` vertex mask or non-negative weights.

    Returns:
        Per-sample mean vertex error in the inputs' units (SPIN reports millimetres: multiply by 1000
        for vertices in metres).
    """
    d, w = _distances(pred_vertices, gt_vertices, mask, root_align, None, what="vertices")
    return _weighted_mean(d, w)


# ------------------------------------------------------------------------------------ Procrustes
def _similarity(X: torch.Tensor, Y: torch.Tensor, w: Optional[torch.Tensor]):
    """Similarity transform (s, R, t) minimising sum_j w_j |s R x_j + t - y_j|^2, for X, Y (N, J, D)."""
    N, J, D = X.shape
    dtype, device = X.dtype, X.device
    zero = torch.zeros((), dtype=dtype, device=device)
    if w is None:
        w = torch.ones(N, J, dtype=dtype, device=device)
    valid = (w > 0).unsqueeze(-1)
    # Zero the points of masked-out joints so that their values (NaN too) cannot reach the sums.
    X = torch.where(valid, X, zero)
    Y = torch.where(valid, Y, zero)
    wsum = w.sum(dim=-1, keepdim=True)                                   # (N, 1)
    mu1 = (w.unsqueeze(-1) * X).sum(dim=-2) / wsum                       # (N, D); NaN when no joint
    mu2 = (w.unsqueeze(-1) * Y).sum(dim=-2) / wsum
    X1 = torch.where(valid, X - mu1.unsqueeze(-2), zero)
    Y1 = torch.where(valid, Y - mu2.unsqueeze(-2), zero)
    wX1 = w.unsqueeze(-1) * X1
    var1 = (wX1 * X1).sum(dim=(-2, -1))                                  # (N,)
    K = wX1.transpose(-1, -2) @ Y1                                       # (N, D, D) = sum w x y^T

    # The SVD would fail on non-finite input: solve those samples on a stand-in, then poison them.
    bad = ~(torch.isfinite(K).flatten(1).all(dim=1) & torch.isfinite(var1)
            & torch.isfinite(mu1).all(dim=1) & torch.isfinite(mu2).all(dim=1))
    eye = torch.eye(D, dtype=dtype, device=device)
    K = torch.where(bad[:, None, None], eye, K)

    U, S, Vh = torch.linalg.svd(K)
    V = Vh.transpose(-1, -2)
    # R = V Z U^T maximises trace(R K); Z flips the last axis when V U^T is a reflection so that
    # det(R) = +1 (a proper rotation, never a mirror image).
    det = torch.linalg.det(U @ Vh)
    z = torch.ones(N, D, dtype=dtype, device=device)
    z[:, -1] = torch.where(det < 0, -1.0, 1.0).to(dtype)
    R = (V * z.unsqueeze(-2)) @ U.transpose(-1, -2)
    # trace(R K) = sum_i z_i S_i. A prediction whose valid joints all coincide (var1 = 0) gets scale 0:
    # every scale maps it to one point, and 0 makes that point the target centroid.
    tr = (S * z).sum(dim=-1)
    scale = torch.where(var1 > 0, tr / torch.where(var1 > 0, var1, torch.ones_like(var1)), zero)
    t = mu2 - scale.unsqueeze(-1) * (R @ mu1.unsqueeze(-1)).squeeze(-1)

    nan = torch.full((), float("nan"), dtype=dtype, device=device)
    scale = torch.where(bad, nan, scale)
    R = torch.where(bad[:, None, None], nan, R)
    t = torch.where(bad[:, None], nan, t)
    return scale, R, t


def similarity_transform(pred: Array, gt: Array, mask=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity transform that best maps ``pred`` onto ``gt`` in the least-squares sense.

    Finds the scale ``s``, proper rotation ``R`` (``det R = +1``) and translation ``t`` minimising
    ``sum_j w_j |s R pred_j + t - gt_j|^2`` (Umeyama's solution via an SVD of the cross-covariance,
    the same as SPIN's ``compute_similarity_transform``, batched). Joints with mask weight 0 are
    ignored.

    Args:
        pred, gt: ``(..., J, 3)`` points of equal shape.
        mask: optional ``(J,)`` or ``(..., J)`` boolean mask or non-negative weights.

    Returns:
        ``(scale (...,), R (..., 3, 3), t (..., 3))`` with ``aligned_j = scale * R @ pred_j + t``.
        Samples with non-finite valid points or no valid point give NaN. When all valid ``pred``
        points coincide the scale is 0 (and ``R`` is arbitrary).
    """
    p, g = _points_pair(pred, gt)
    w = _weights(mask, p)
    lead, J, D = p.shape[:-2], p.shape[-2], p.shape[-1]
    scale, R, t = _similarity(p.reshape(-1, J, D), g.reshape(-1, J, D),
                              None if w is None else w.reshape(-1, J))
    return scale.reshape(lead), R.reshape(lead + (D, D)), t.reshape(lead + (D,))


def _apply(scale: torch.Tensor, R: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return scale[..., None, None] * (x @ R.transpose(-1, -2)) + t.unsqueeze(-2)


def procrustes_align(pred: Array, gt: Array, mask=None) -> torch.Tensor:
    """``pred`` mapped onto ``gt`` by :func:`similarity_transform` (fitted on the valid joints, applied
    to all joints). Returns ``(..., J, 3)`` in the computation dtype."""
    p, _ = _points_pair(pred, gt)
    scale, R, t = similarity_transform(pred, gt, mask)
    return _apply(scale, R, t, p)


def pa_mpjpe(pred: Array, gt: Array, mask=None) -> torch.Tensor:
    """Procrustes-aligned MPJPE (SPIN's "reconstruction error").

    ``pred`` is aligned onto ``gt`` by a similarity transform (scale, proper rotation, translation;
    :func:`similarity_transform`) fitted on the valid joints, then the MPJPE is taken over the same
    joints. No root alignment is needed: the translation absorbs it.

    Args:
        pred, gt: ``(..., J, 3)`` joints of equal shape.
        mask: optional ``(J,)`` or ``(..., J)`` boolean mask or non-negative weights; joints with
            weight 0 take part neither in the fit nor in the mean.

    Returns:
        Per-sample error in the inputs' units (x1000 for SPIN's millimetres from metres). NaN for
        samples with non-finite valid joints or no valid joint.
    """
    p, g = _points_pair(pred, gt)
    w = _weights(mask, p)
    lead, J, D = p.shape[:-2], p.shape[-2], p.shape[-1]
    pf, gf = p.reshape(-1, J, D), g.reshape(-1, J, D)
    wf = None if w is None else w.reshape(-1, J)
    scale, R, t = _similarity(pf, gf, wf)
    d = torch.linalg.vector_norm(_apply(scale, R, t, pf) - gf, dim=-1)
    return _weighted_mean(d, wf).reshape(lead)


# -------------------------------------------------------------------------------------- PCK, AUC
def _fraction_within(d: torch.Tensor, thresholds: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample (weighted) mean over joints and thresholds of [d < threshold], NaN-propagating."""
    hit = (d.unsqueeze(-1) < thresholds).to(d.dtype).mean(dim=-1)       # (..., J)
    # A comparison with NaN is False; keep the NaN so that a broken sample does not score 0.
    hit = torch.where(torch.isnan(d), d, hit)
    return _weighted_mean(hit, w)


def _thresholds(values, like: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(values.detach() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=np.float64))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers, got dtype {t.dtype}")
    t = t.to(device=like.device, dtype=like.dtype)
    return t


def pck(pred: Array, gt: Array, threshold: float = 0.15, mask=None, root_align: RootSpec = None,
        *, convention=None) -> torch.Tensor:
    """3-D percentage of correct keypoints: the fraction of joints with error strictly below
    ``threshold`` (as in the MPI-INF-3DHP evaluation code).

    Args:
        pred, gt: ``(..., J, 3)`` joints of equal shape.
        threshold: distance in the inputs' units; the default 0.15 is the protocol's 150 mm for
            joints in metres (pass 150 for millimetres).
        mask, root_align, convention: as in :func:`mpjpe`. The MPI-INF-3DHP protocol compares
            root-centred joints; for PCK after Procrustes alignment pass
            :func:`procrustes_align` ``(pred, gt)`` as ``pred``.

    Returns:
        Per-sample fraction in [0, 1] (x100 for the percentage papers report). Averaging it over
        samples equals the protocol's pooled count when every sample has the same number of valid
        joints.
    """
    d, w = _distances(pred, gt, mask, root_align, convention)
    t = _thresholds(threshold, d, "threshold")
    if t.dim() != 0:
        raise ValueError(f"threshold must be a single number, got shape {tuple(t.shape)}; see auc()")
    return _fraction_within(d, t.reshape(1), w)


def auc(pred: Array, gt: Array, thresholds=None, mask=None, root_align: RootSpec = None,
        *, convention=None) -> torch.Tensor:
    """Area under the 3-D PCK curve, normalised to [0, 1].

    As in the MPI-INF-3DHP evaluation code, this is the mean of :func:`pck` over the thresholds
    (for the protocol's evenly spaced thresholds from 0 this is the normalised area).

    Args:
        pred, gt: ``(..., J, 3)`` joints of equal shape.
        thresholds: 1-D sequence of distances in the inputs' units; the default is the protocol's
            0, 5, ..., 150 mm (31 values) in metres, i.e. ``linspace(0, 0.15, 31)``. For joints in
            millimetres pass :data:`MPI_INF_3DHP_AUC_THRESHOLDS_MM`.
        mask, root_align, convention: as in :func:`mpjpe`.

    Returns:
        Per-sample AUC in [0, 1] (x100 for the figure papers report).
    """
    d, w = _distances(pred, gt, mask, root_align, convention)
    if thresholds is None:
        t = torch.tensor(MPI_INF_3DHP_AUC_THRESHOLDS_MM, dtype=torch.float64) / 1000.0
        t = t.to(device=d.device, dtype=d.dtype)
    else:
        t = _thresholds(thresholds, d, "thresholds")
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    return _fraction_within(d, t, w)
