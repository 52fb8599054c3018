"""SMPLify's priors, each in two forms.

* The *loss* form returns exactly the per-sample value SPIN's ``smplify/losses.py`` and
  ``smplify/prior.py`` compute (unweighted; SPIN multiplies each term by its weight squared, see
  :class:`PriorWeights`). The Adam solver minimises these.
* The *residual* form returns ``(r, J)`` with ``r`` (B, m) and its analytic Jacobian ``J`` (B, m, n)
  with respect to the term's parameters, such that ``(r ** 2).sum(-1)`` equals the loss form. A
  Gauss-Newton / Levenberg-Marquardt solver stacks ``weight * r`` and ``weight * J``.

Everything is batched torch, runs on any device and in float32 or float64. The residual forms take
no gradient of their own Jacobians: ``r`` stays differentiable, ``J`` is a plain tensor built from
the inputs.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "gmof",
    "robust_residual",
    "PriorFileError",
    "PriorFileNotFoundError",
    "DEFAULT_PRIOR_PATH",
    "load_gmm",
    "MaxMixturePrior",
    "ANGLE_PRIOR_INDICES",
    "ANGLE_PRIOR_SIGNS",
    "angle_prior",
    "angle_prior_residuals",
    "shape_prior",
    "shape_prior_residuals",
    "anchor_prior",
    "anchor_residuals",
    "shape_bound",
    "shape_bound_residuals",
    "PriorWeights",
]

#: The shipped default pose prior (``python -m smplfast.fitting.build_prior``; docs/POSE_PRIOR.md).
DEFAULT_PRIOR_PATH = Path(__file__).resolve().parent / "data" / "gmm_default_08.npz"

_GMM_KEYS = ("means", "covars", "weights")
_GMM_NDIM = {"means": (2, "(M, D)"), "covars": (3, "(M, D, D)"), "weights": (1, "(M,)")}


# ------------------------------------------------------------------------------------ robust kernel
def gmof(x: Tensor, sigma) -> Tensor:
    """Geman-McClure error ``sigma**2 * x**2 / (sigma**2 + x**2)``, elementwise (SPIN's ``gmof``)."""
    x_squared = x ** 2
    sigma_squared = sigma ** 2
    return (sigma_squared * x_squared) / (sigma_squared + x_squared)


def robust_residual(e: Tensor, sigma) -> Tuple[Tensor, Tensor]:
    """Square root of :func:`gmof` as a smooth residual: ``(r, dr_de)``, elementwise.

    ``r = sigma * e / sqrt(sigma**2 + e**2)``, so ``r**2 == gmof(e, sigma)`` exactly and ``r`` keeps
    the sign of ``e``; ``dr/de = sigma**3 / (sigma**2 + e**2)**1.5``, which is positive, equal to 1
    at ``e = 0`` and decays like ``1/|e|**3``.
    """
    t = sigma / torch.sqrt(sigma ** 2 + e ** 2)
    return t * e, t ** 3


# --------------------------------------------------------------------------------- GMM file loading
class PriorFileError(ValueError):
    """A pose prior file could not be read or does not hold a valid Gaussian mixture."""


class PriorFileNotFoundError(PriorFileError, FileNotFoundError):
    """The pose prior file does not exist."""


def _read_raw(path: Path) -> dict:
    from ..body import safe_pickle  # restricted unpickler: arrays only, never runs code

    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        try:
            raw = safe_pickle.load_records(path)
        except safe_pickle.SafePickleError as exc:
            raise PriorFileError(f"pose prior {str(path)!r}: {exc}") from None
        out = {}
        for k, v in raw.items():  # declared shapes first: nothing is allocated yet
            key = k.decode("latin1") if isinstance(k, bytes) else str(k)
            if key in _GMM_NDIM:
                try:
                    shape = safe_pickle.declared_shape(v)
                except safe_pickle.SafePickleError as exc:
                    raise PriorFileError(f"pose prior {str(path)!r}: {key}: {exc}") from None
                ndim, layout = _GMM_NDIM[key]
                if shape is not None and len(shape) != ndim:
                    raise PriorFileError(f"pose prior {str(path)!r}: {key} must have shape {layout}; got {shape}")
        for k, v in raw.items():
            key = k.decode("latin1") if isinstance(k, bytes) else str(k)
            if key in _GMM_KEYS:
                try:
                    out[key] = safe_pickle.materialize(v, key, str(path))
                except safe_pickle.SafePickleError as exc:
                    raise PriorFileError(f"pose prior {str(path)!r}: {exc}") from None
            else:
                out[key] = None  # only the keys' presence matters
        return out
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                out = {}
                for k in npz.files:
                    out[k] = npz[k] if k in _GMM_KEYS else None
                return out
        except ValueError as exc:
            raise PriorFileError(f"pose prior {str(path)!r}: cannot read the .npz archive without pickle: {exc}") from None
        except Exception as exc:
            raise PriorFileError(f"pose prior {str(path)!r}: not a valid .npz archive: {type(exc).__name__}: {exc}") from None
    raise PriorFileError(f"pose prior {str(path)!r}: unsupported suffix {path.suffix!r}; expected .pkl or .npz")


def load_gmm(path, num_gaussians: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Read and validate a Gaussian mixture pose prior.

    ``path`` is SMPLify's ``gmm_08.pkl`` format (a Python 2 pickle of a dict with ``means`` (M, D),
    ``covars`` (M, D, D) and ``weights`` (M,), read with the restricted unpickler of
    :mod:`smplfast.body.safe_pickle`, which only rebuilds arrays), a ``.npz`` with the same keys, or
    a directory holding ``gmm_{num_gaussians:02d}.pkl`` (SPIN's ``prior_folder``). Returns float64 arrays ``means``, ``covars`` (symmetrised) and
    ``weights``. Raises :class:`PriorFileNotFoundError` / :class:`PriorFileError` for a missing file,
    missing keys, wrong shapes, non-finite values, non-positive weights, a covariance that is not
    symmetric positive definite, or ``M != num_gaussians`` when ``num_gaussians`` is given.
    """
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        if num_gaussians is None:
            raise PriorFileError(f"pose prior {str(p)!r} is a directory: pass num_gaussians to pick gmm_XX.pkl")
        p = p / f"gmm_{int(num_gaussians):02d}.pkl"
    if not p.is_file():
        raise PriorFileNotFoundError(f"pose prior file {str(p)!r} does not exist")
    raw = _read_raw(p)
    missing = [k for k in _GMM_KEYS if k not in raw]
    if missing:
        raise PriorFileError(f"pose prior {str(p)!r}: missing key(s) {missing}; keys found: {sorted(raw)}")
    return _validate_gmm(raw, f"pose prior {str(p)!r}", num_gaussians)


def _validate_gmm(raw, where: str, num_gaussians: Optional[int] = None) -> Dict[str, np.ndarray]:
    arrs = {}
    for k in _GMM_KEYS:
        try:
            value = raw[k]
            if torch.is_tensor(value):
                value = value.detach().cpu().double().numpy()
            arrs[k] = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PriorFileError(f"{where}: {k} is not a numeric array ({exc})") from None
    means, covars, weights = arrs["means"], arrs["covars"], arrs["weights"]
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise PriorFileError(f"{where}: means must have shape (M, D); got {means.shape}")
    M, D = means.shape
    if covars.shape != (M, D, D):
        raise PriorFileError(f"{where}: covars must have shape (M, D, D) = ({M}, {D}, {D}) to match means; got {covars.shape}")
    if weights.shape != (M,):
        raise PriorFileError(f"{where}: weights must have shape (M,) = ({M},) to match means; got {weights.shape}")
    for k, a in arrs.items():
        if not np.isfinite(a).all():
            raise PriorFileError(f"{where}: {k} contains NaN or Inf")
    if (weights <= 0).any():
        raise PriorFileError(f"{where}: weights must be positive; got {weights.tolist()}")
    if num_gaussians is not None and M != int(num_gaussians):
        raise PriorFileError(f"{where}: holds {M} components but num_gaussians={num_gaussians}")
    asym = np.abs(covars - covars.transpose(0, 2, 1)).max(axis=(1, 2))
    scale = np.abs(covars).max(axis=(1, 2))
    bad = np.nonzero(asym > 1e-6 * scale)[0]
    if len(bad):
        raise PriorFileError(f"{where}: covariance {int(bad[0])} is not symmetric (max |C - C^T| = {asym[bad[0]]:.3g})")
    covars = 0.5 * (covars + covars.transpose(0, 2, 1))
    _, info = torch.linalg.cholesky_ex(torch.from_numpy(covars))
    bad = torch.nonzero(info).flatten()
    if len(bad):
        raise PriorFileError(f"{where}: covariance {int(bad[0])} is not positive definite")
    return {"means": means, "covars": covars, "weights": weights}


# ------------------------------------------------------------------------------------- GMM prior
class MaxMixturePrior(nn.Module):
    """SMPLify's Gaussian mixture pose prior with the max approximation (SPIN's ``MaxMixturePrior``).

    ``forward(pose)`` equals SPIN's ``merged_log_likelihood``::

        min_m  0.5 (θ - μ_m)^T P_m (θ - μ_m) - log nll_weights_m
        P_m = Σ_m^-1,  nll_weights_m = w_m / ((2π)^(D/2) sqrt(det Σ_m) / min_k sqrt(det Σ_k))

    with D = 69 for SMPL body poses. The determinants enter through ``slogdet`` in float64, which
    gives the same value without the under/overflow of a 69x69 determinant.

    ``path``: None for the shipped default prior (:data:`DEFAULT_PRIOR_PATH`), else a file or
    directory accepted by :func:`load_gmm` (SMPLify's ``gmm_08.pkl``). ``prior_folder`` is SPIN's
    name for a directory and is used when ``path`` is None. ``num_gaussians``: the component count
    the file must have (None accepts any); with a directory it picks ``gmm_{num_gaussians:02d}.pkl``.
    Buffers live in ``dtype``; a pose of another dtype is evaluated in the pose's dtype.
    ``epsilon`` and ``use_merged`` are accepted for SPIN's signature (only ``use_merged=True`` exists).

    Buffers: ``means`` (M, D), ``covs`` (M, D, D), ``precisions`` (M, D, D), ``weights`` (M,),
    ``nll_weights`` (M,), ``constants`` (M,) = -log nll_weights (all >= 0), ``prec_chol`` (M, D, D)
    lower-triangular with ``precisions = prec_chol @ prec_chol^T``.
    """

    def __init__(self, path=None, num_gaussians: Optional[int] = 8, dtype=torch.float32,
                 prior_folder=None, epsilon: float = 1e-16, use_merged: bool = True, source: Optional[str] = None):
        super().__init__()
        if not use_merged:
            raise ValueError("MaxMixturePrior: only the merged (max-mixture) likelihood SPIN uses is implemented")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"MaxMixturePrior: dtype must be torch.float32 or torch.float64; got {dtype}")
        if isinstance(path, dict):  # already validated arrays, from from_arrays
            gmm, source = path, source or "<arrays>"
        else:
            if path is None:
                path = prior_folder if prior_folder is not None else DEFAULT_PRIOR_PATH
            gmm, source = load_gmm(path, num_gaussians), str(path)
        covs = torch.from_numpy(gmm["covars"])
        M, D = gmm["means"].shape
        self.num_gaussians = M
        self.dim = D
        self.source = source

        chol_cov = torch.linalg.cholesky(covs)
        precisions = torch.cholesky_inverse(chol_cov)
        precisions = 0.5 * (precisions + precisions.transpose(-1, -2))
        prec_chol, info = torch.linalg.cholesky_ex(precisions)
        if bool((info != 0).any()):  # only for covariances at the edge of float64 conditioning
            raise PriorFileError(f"pose prior {self.source!r}: a precision matrix is not positive definite in float64")
        _, logdet = torch.linalg.slogdet(covs)
        weights = torch.from_numpy(gmm["weights"])
        # -log nll_weights = -log w + (D/2) log 2π + log(sqrt(det Σ_m) / min_k sqrt(det Σ_k))
        constants = -torch.log(weights) + 0.5 * D * math.log(2 * math.pi) + 0.5 * (logdet - logdet.min())
        if bool((constants < 0).any()):
            raise PriorFileError(
                f"pose prior {self.source!r}: -log nll_weights must be >= 0 for the residual form; "
                f"got {constants.tolist()} (weights above 1?)"
            )
        self.register_buffer("means", torch.from_numpy(gmm["means"]).to(dtype))
        self.register_buffer("covs", covs.to(dtype))
        self.register_buffer("precisions", precisions.to(dtype))
        self.register_buffer("prec_chol", prec_chol.to(dtype))
        self.register_buffer("weights", weights.to(dtype))
        self.register_buffer("nll_weights", torch.exp(-constants).to(dtype))
        self.register_buffer("constants", constants.to(dtype))

    @classmethod
    def from_arrays(cls, means, covars, weights, dtype=torch.float32) -> "MaxMixturePrior":
        """A prior from in-memory ``means`` (M, D), ``covars`` (M, D, D) and ``weights`` (M,)
        (numpy arrays or tensors), validated like a file."""
        gmm = _validate_gmm({"means": means, "covars": covars, "weights": weights}, "MaxMixturePrior.from_arrays")
        return cls(gmm, num_gaussians=None, dtype=dtype, source="<arrays>")

    def extra_repr(self) -> str:
        return f"num_gaussians={self.num_gaussians}, dim={self.dim}, source={self.source!r}"

    def _check(self, pose: Tensor) -> Tensor:
        if not torch.is_tensor(pose) or not pose.is_floating_point():
            raise TypeError("MaxMixturePrior: pose must be a floating point tensor")
        if pose.dim() != 2 or pose.shape[1] != self.dim:
            raise ValueError(f"MaxMixturePrior: pose must have shape (B, {self.dim}); got {tuple(pose.shape)}")
        return pose

    def _buf(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def _whitened(self, pose: Tensor) -> Tensor:
        """L_m^T (θ - μ_m) for every component: (B, M, D)."""
        diff = pose.unsqueeze(1) - self._buf("means", pose)
        return torch.einsum("mji,bmj->bmi", self._buf("prec_chol", pose), diff)

    def energies(self, pose: Tensor) -> Tensor:
        """Per-component negative log-likelihoods (B, M); :meth:`forward` is their minimum."""
        z = self._whitened(self._check(pose))
        return 0.5 * (z * z).sum(-1) + self._buf("constants", pose)

    def forward(self, pose: Tensor, betas: Optional[Tensor] = None) -> Tensor:
        """Max-mixture negative log-likelihood (B,) of body poses ``pose`` (B, 69); ``betas`` is
        accepted for SPIN's call signature and ignored."""
        return self.energies(pose).min(dim=1).values

    def merged_log_likelihood(self, pose: Tensor, betas: Optional[Tensor] = None) -> Tensor:
        """Alias of :meth:`forward` under SPIN's name."""
        return self.forward(pose, betas)

    def component(self, pose: Tensor) -> Tensor:
        """Index (B,) long of the component that attains the minimum."""
        return self.energies(pose).argmin(dim=1)

    def residuals(self, pose: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Least-squares form: ``(r (B, D+1), J (B, D+1, D), component (B,))``.

        With m the minimising component, ``r = [L_m^T (θ - μ_m) / sqrt(2); sqrt(c_m)]`` and
        ``J = [L_m^T / sqrt(2); 0]``, where ``P_m = L_m L_m^T`` and ``c_m = -log nll_weights_m``,
        so ``(r**2).sum(-1) == forward(pose)``. The component is held fixed within one
        linearisation (the max is piecewise smooth).
        """
        self._check(pose)
        z = self._whitened(pose)
        const = self._buf("constants", pose)
        comp = (0.5 * (z * z).sum(-1) + const).argmin(dim=1)
        rows = torch.arange(pose.shape[0], device=pose.device)
        s = 1.0 / math.sqrt(2.0)
        r = torch.cat([z[rows, comp] * s, torch.sqrt(const[comp]).unsqueeze(1)], dim=1)
        Lt = self._buf("prec_chol", pose).transpose(-1, -2)[comp] * s
        J = torch.cat([Lt, Lt.new_zeros(pose.shape[0], 1, self.dim)], dim=1)
        return r, J.detach(), comp


# ------------------------------------------------------------------------------------ angle prior
#: Body-pose entries of the elbows' and knees' bending angles (left elbow y, right elbow y, left
#: knee x, right knee x) and the signs that make a positive product a hyperextension.
ANGLE_PRIOR_INDICES = (52, 55, 9, 12)
ANGLE_PRIOR_SIGNS = (1.0, -1.0, -1.0, -1.0)


def _angle_signs(like: Tensor) -> Tensor:
    return torch.tensor(ANGLE_PRIOR_SIGNS, dtype=like.dtype, device=like.device)


def _check_body_pose(body_pose: Tensor, what: str) -> None:
    if body_pose.dim() != 2 or body_pose.shape[1] != 69:
        raise ValueError(f"{what}: body_pose must have shape (B, 69); got {tuple(body_pose.shape)}")


def angle_prior(body_pose: Tensor) -> Tensor:
    """SPIN's angle prior (B, 4): ``exp(body_pose[:, [52, 55, 9, 12]] * [1, -1, -1, -1]) ** 2``;
    it grows exponentially as elbows and knees bend the unnatural way. Sum over the last axis for
    the loss."""
    _check_body_pose(body_pose, "angle_prior")
    return torch.exp(body_pose[:, list(ANGLE_PRIOR_INDICES)] * _angle_signs(body_pose)) ** 2


def angle_prior_residuals(body_pose: Tensor) -> Tuple[Tensor, Tensor]:
    """Least-squares form of :func:`angle_prior`: ``r = exp(s * θ_k)`` (B, 4) and its Jacobian
    (B, 4, 69), non-zero only at ``(k, ANGLE_PRIOR_INDICES[k])`` where it is ``s_k r_k``."""
    _check_body_pose(body_pose, "angle_prior_residuals")
    s = _angle_signs(body_pose)
    r = torch.exp(body_pose[:, list(ANGLE_PRIOR_INDICES)] * s)
    J = body_pose.new_zeros(body_pose.shape[0], 4, 69)
    J[:, torch.arange(4, device=J.device), torch.tensor(ANGLE_PRIOR_INDICES, device=J.device)] = (r * s).detach()
    return r, J


# ------------------------------------------------------------------------------------ shape prior
def shape_prior(betas: Tensor) -> Tensor:
    """SPIN's shape regulariser ``(betas ** 2).sum(-1)`` (B,)."""
    return (betas ** 2).sum(dim=-1)


def shape_prior_residuals(betas: Tensor) -> Tuple[Tensor, Tensor]:
    """Least-squares form of :func:`shape_prior`: ``r = betas`` (B, nb), ``J = I`` (B, nb, nb)."""
    B, nb = betas.shape
    J = torch.eye(nb, dtype=betas.dtype, device=betas.device).expand(B, nb, nb).clone()
    return betas, J


# ----------------------------------------------------------------------------------- anchor prior
def anchor_prior(pose: Tensor, pose_init: Tensor, sigma) -> Tensor:
    """Pavlakos et al. 2018's anchor ``sum_i gmof(θ_i - θ_init_i, sigma)`` (B,): keeps the pose near
    a network's prediction and lets joints go once the data pull them further than about sigma."""
    return gmof(pose - pose_init, sigma).sum(dim=-1)


def anchor_residuals(pose: Tensor, pose_init: Tensor, sigma) -> Tuple[Tensor, Tensor]:
    """Least-squares form of :func:`anchor_prior` via :func:`robust_residual`: ``r`` (B, n) and the
    diagonal Jacobian ``J`` (B, n, n) with respect to ``pose``."""
    r, dr = robust_residual(pose - pose_init, sigma)
    return r, torch.diag_embed(dr.detach())


# ------------------------------------------------------------------------------------ shape bound
def shape_bound(betas: Tensor, bound: float = 2.0) -> Tensor:
    """HoloPose's shape bound ``sum_i max(0, |β_i| - bound)`` (B,): free inside the box, linear
    outside it."""
    return torch.clamp(betas.abs() - bound, min=0.0).sum(dim=-1)


def shape_bound_residuals(betas: Tensor, bound: float = 2.0, betas_ref: Optional[Tensor] = None,
                          eps: float = 1e-4) -> Tuple[Tensor, Tensor]:
    """Least-squares form of :func:`shape_bound` by iteratively reweighted least squares.

    ``h = max(0, |β| - bound)`` is not a square, so each linearisation reweights it:
    ``r_i = h_i(β) / sqrt(max(h_i(β_ref), eps))`` with ``β_ref`` the linearisation point (default:
    ``betas`` itself, detached). At ``β = β_ref``, ``r_i**2 = h_i`` (exactly when ``h_i >= eps``,
    and ``h_i**2 / eps``, at most ``eps / 4`` below, otherwise), so ``(r**2).sum(-1)`` is the loss.
    ``J`` (B, nb, nb) is diagonal with ``sign(β_i) [|β_i| > bound] / sqrt(max(h_ref_i, eps))``; a
    Gauss-Newton step on this residual alone moves each β_i exactly onto the bound. Call it again
    at every new linearisation point (``betas_ref = betas``).
    """
    if betas_ref is None:
        betas_ref = betas.detach()
    h = torch.clamp(betas.abs() - bound, min=0.0)
    h_ref = torch.clamp(betas_ref.detach().abs() - bound, min=0.0)
    scale = torch.rsqrt(torch.clamp(h_ref, min=eps))
    r = h * scale
    d = torch.sign(betas.detach()) * (betas.detach().abs() > bound).to(betas.dtype) * scale
    return r, torch.diag_embed(d)


# ------------------------------------------------------------------------------------------ weights
@dataclass
class PriorWeights:
    """Weights of the SMPLify loss; as in SPIN every term enters as ``weight ** 2 * term``.

    The first five are SPIN's defaults. ``anchor_weight`` and ``shape_bound_weight`` are 0 (off) as
    in SPIN. ``anchor_sigma`` = 0.2 rad (11.5 degrees) is on the scale of a regressor's per-joint
    angle error: the Geman-McClure anchor pulls hardest at ``sigma / sqrt(3)`` (6.6 degrees) and
    releases joints that the keypoints move much further, which is Pavlakos et al.'s intent (keep
    the prediction unless the image disagrees). ``shape_bound`` = 2 is HoloPose's bound.
    """

    pose_prior_weight: float = 4.78
    shape_prior_weight: float = 5.0
    angle_prior_weight: float = 15.2
    sigma: float = 100.0
    depth_loss_weight: float = 100.0
    anchor_weight: float = 0.0
    anchor_sigma: float = 0.2
    shape_bound_weight: float = 0.0
    shape_bound: float = 2.0
