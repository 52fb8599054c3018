"""Build the shipped default pose prior: ``python -m smplfast.fitting.build_prior``.

Fits an 8-component full-covariance Gaussian mixture (scikit-learn's ``GaussianMixture``, EM from a
k-means start) to body poses (69 values, global orientation excluded) drawn from
:func:`smplfast.body.samplers.sample_poses` over all pose families, and writes
``smplfast/fitting/data/gmm_default_08.npz`` in SMPLify's ``gmm_08.pkl`` layout (``means``,
``covars``, ``weights``, float64) plus metadata (seed, sample counts, families, regulariser, and the
measured held-out numbers). Every covariance gets ``reg_covar`` added to its diagonal.

``--cross-validate`` prints the leave-one-family-out comparison used to choose ``reg_covar``
(docs/POSE_PRIOR.md); ``--figure PATH`` draws the per-component mean poses. scikit-learn (and
matplotlib for the figure) are needed here only, never at run time.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..body.random_model import SMPL_JOINT_NAMES
from ..body.samplers import POSE_FAMILIES, TWIST_AXIS, pose_limits, sample_poses, swing_twist_to_axis_angle
from .priors import DEFAULT_PRIOR_PATH, MaxMixturePrior

#: Defaults of the shipped file.
NUM_GAUSSIANS = 8
NUM_TRAIN = 100_000
NUM_HELDOUT = 20_000
SEED = 0
# rad^2 added to every covariance's diagonal (std floor 0.1 rad). From --cross-validate: families that
# nothing else in training covers score much better than with 1e-3 (the best mean), while poses
# uniform within the joint limits stay ~150 nats above them (docs/POSE_PRIOR.md).
REG_COVAR = 1e-2


def _sklearn():
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:  # build-time tool only
        raise ImportError("building the pose prior needs scikit-learn: pip install 'smplfast[build-default]'") from exc
    return GaussianMixture


def training_poses(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(n, 69) float64 body poses from :func:`sample_poses` over all families, and their family
    indices (n,)."""
    poses, fam = sample_poses(n, seed=seed, dtype=torch.float64, return_family=True)
    return poses[:, 3:].numpy(), fam.numpy()


def uniform_limit_poses(n: int, seed: int) -> np.ndarray:
    """(n, 69) body poses with every swing-twist component uniform within its joint limit: each
    joint is plausible on its own, their combination mostly is not."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = pose_limits(torch.float64)
    comps = lo + (hi - lo) * torch.rand(n, 23, 3, generator=g, dtype=torch.float64)
    twist = torch.tensor([TWIST_AXIS[name] for name in SMPL_JOINT_NAMES[1:]])
    return swing_twist_to_axis_angle(comps, twist).reshape(n, 69).numpy()


def uniform_box_poses(n: int, seed: int, half_width: float = 0.5) -> np.ndarray:
    """(n, 69) body poses with every axis-angle value uniform in [-half_width, half_width] rad."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-half_width, half_width, size=(n, 69))


def fit_gmm(x: np.ndarray, num_gaussians: int = NUM_GAUSSIANS, reg_covar: float = REG_COVAR,
            seed: int = SEED) -> Dict[str, np.ndarray]:
    """Full-covariance GMM (EM, k-means start) of the rows of ``x``: ``means``, ``covars``, ``weights``."""
    gm = _sklearn()(num_gaussians, covariance_type="full", reg_covar=reg_covar, random_state=seed,
                    max_iter=500, tol=1e-4).fit(x)
    if not gm.converged_:
        raise RuntimeError("GaussianMixture did not converge")
    return {"means": gm.means_.astype(np.float64), "covars": gm.covariances_.astype(np.float64),
            "weights": gm.weights_.astype(np.float64)}


def max_mixture_nll(gmm: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """SMPLify's prior value (SPIN's merged_log_likelihood) of the rows of ``x``, float64."""
    prior = MaxMixturePrior.from_arrays(gmm["means"], gmm["covars"], gmm["weights"], dtype=torch.float64)
    with torch.no_grad():
        return prior(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def max_mixture_log_density(gmm: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """-log max_m w_m N(x; μ_m, Σ_m): the normalised density behind the prior (comparable between
    mixtures, unlike the prior's value, whose offset depends on the narrowest component)."""
    logdet = np.linalg.slogdet(gmm["covars"])[1]
    return max_mixture_nll(gmm, x) + 0.5 * logdet.min()


def cross_validate(regs: Sequence[float] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2), n: int = 45_000, seed: int = 1,
                   num_gaussians: int = NUM_GAUSSIANS) -> Dict[float, Dict[str, float]]:
    """Leave-one-family-out: fit on eight families, score the ninth with
    :func:`max_mixture_log_density`. Per regulariser returns each family's mean, their mean and
    worst (max) value, and the mean for poses uniform within the joint limits under a fit to all
    families (how far implausible poses stay)."""
    x, fam = training_poses(n, seed)
    uniform = uniform_limit_poses(5000, seed)
    out = {}
    for reg in regs:
        row = {}
        for k, name in enumerate(POSE_FAMILIES):
            gmm = fit_gmm(x[fam != k], num_gaussians, reg, seed)
            row[name] = float(max_mixture_log_density(gmm, x[fam == k]).mean())
        row["mean"] = float(np.mean([row[name] for name in POSE_FAMILIES]))
        row["worst"] = float(np.max([row[name] for name in POSE_FAMILIES]))
        row["uniform"] = float(max_mixture_log_density(fit_gmm(x, num_gaussians, reg, seed), uniform).mean())
        out[reg] = row
        print(f"reg_covar {reg:g}: held-out family NLL mean {row['mean']:.1f} worst {row['worst']:.1f} | "
              + " ".join(f"{name} {row[name]:.1f}" for name in POSE_FAMILIES)
              + f" | uniform within limits {row['uniform']:.1f}", flush=True)
    return out


def build(out: Path = DEFAULT_PRIOR_PATH, num_train: int = NUM_TRAIN, num_heldout: int = NUM_HELDOUT,
          seed: int = SEED, reg_covar: float = REG_COVAR, num_gaussians: int = NUM_GAUSSIANS) -> dict:
    """Sample, fit, measure and write the prior; returns the measured facts."""
    import sklearn

    t0 = time.time()
    x, _ = training_poses(num_train + num_heldout, seed)
    train, heldout = x[:num_train], x[num_train:]
    t1 = time.time()
    gmm = fit_gmm(train, num_gaussians, reg_covar, seed)
    t2 = time.time()
    nll_train = max_mixture_nll(gmm, train)
    nll_heldout = max_mixture_nll(gmm, heldout)
    nll_limits = max_mixture_nll(gmm, uniform_limit_poses(num_heldout, seed + 1))
    nll_box = max_mixture_nll(gmm, uniform_box_poses(num_heldout, seed + 2))
    prior = MaxMixturePrior.from_arrays(gmm["means"], gmm["covars"], gmm["weights"], dtype=torch.float64)
    eig = np.linalg.eigvalsh(gmm["covars"])
    facts = {
        "sampling_s": t1 - t0,
        "fit_s": t2 - t1,
        "weights": gmm["weights"].tolist(),
        "constants": prior.constants.tolist(),
        "condition_numbers": (eig.max(1) / eig.min(1)).tolist(),
        "min_eigenvalue": float(eig.min()),
        "max_eigenvalue": float(eig.max()),
        "nll_train_mean": float(nll_train.mean()),
        "nll_heldout_mean": float(nll_heldout.mean()),
        "nll_heldout_p99": float(np.percentile(nll_heldout, 99)),
        "nll_uniform_limits_mean": float(nll_limits.mean()),
        "nll_uniform_limits_min": float(nll_limits.min()),
        "nll_uniform_box_mean": float(nll_box.mean()),
        "nll_uniform_box_min": float(nll_box.min()),
        "heldout_component_share": np.bincount(prior.component(torch.from_numpy(heldout)).numpy(),
                                               minlength=num_gaussians).tolist(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        means=gmm["means"], covars=gmm["covars"], weights=gmm["weights"],
        seed=np.int64(seed), num_train=np.int64(num_train), num_heldout=np.int64(num_heldout),
        families=np.array(POSE_FAMILIES), reg_covar=np.float64(reg_covar),
        fitter=np.array(f"sklearn.mixture.GaussianMixture (scikit-learn {sklearn.__version__}), full covariance"),
        nll_heldout_mean=np.float64(facts["nll_heldout_mean"]),
        nll_uniform_limits_mean=np.float64(facts["nll_uniform_limits_mean"]),
        nll_uniform_box_mean=np.float64(facts["nll_uniform_box_mean"]),
    )
    facts["path"] = str(out)
    facts["bytes"] = out.stat().st_size
    return facts


def figure(path: Path, prior_path: Optional[Path] = None, heldout: int = 5000, seed: int = 7) -> Path:
    """Per-component mean poses on the default body model (front and side) and the prior's value on
    held-out sampler poses versus uniform ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    from ..body.smpl import SMPL
    from ..demo import _draw_mesh

    prior = MaxMixturePrior(prior_path, dtype=torch.float64)
    M = prior.num_gaussians
    model = SMPL()
    faces = np.asarray(model.faces, dtype=np.int64)
    fig = plt.figure(figsize=(1.9 * M, 9.0))
    gs = GridSpec(3, M, figure=fig, height_ratios=[1.0, 1.0, 0.8])
    order = torch.argsort(prior.weights, descending=True)
    with torch.no_grad():
        for c, m in enumerate(order.tolist()):
            v = model(body_pose=prior.means[m:m + 1].float()).vertices[0].numpy()
            for r, view in enumerate(("front", "side")):
                ax = fig.add_subplot(gs[r, c])
                _draw_mesh(ax, v, faces, (0.55, 0.65, 0.85), view)
                if r == 0:
                    ax.set_title(f"component {m}\nw = {prior.weights[m]:.3f}", fontsize=9)
    x, _ = training_poses(heldout, seed)
    gmm = {"means": prior.means.numpy(), "covars": prior.covs.numpy(), "weights": prior.weights.numpy()}
    ax = fig.add_subplot(gs[2, :])
    bins = np.linspace(50, 600, 111)
    for data, label in ((x, "held-out sampler poses"), (uniform_limit_poses(heldout, seed), "uniform within joint limits"),
                        (uniform_box_poses(heldout, seed), "uniform in [-0.5, 0.5] rad")):
        ax.hist(np.clip(max_mixture_nll(gmm, data), bins[0], bins[-1]), bins=bins, histtype="step", lw=1.5, label=label)
    ax.set_xlabel("prior value (SPIN's merged_log_likelihood; clipped at 600)")
    ax.set_ylabel("poses")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_PRIOR_PATH)
    ap.add_argument("--samples", type=int, default=NUM_TRAIN, help="training poses")
    ap.add_argument("--heldout", type=int, default=NUM_HELDOUT, help="held-out poses for the report")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--reg-covar", type=float, default=REG_COVAR)
    ap.add_argument("--cross-validate", action="store_true", help="print the leave-one-family-out table and exit")
    ap.add_argument("--figure", type=Path, default=None, help="also draw the figure to this path")
    args = ap.parse_args(argv)
    if args.cross_validate:
        cross_validate()
        return 0
    facts = build(args.out, args.samples, args.heldout, args.seed, args.reg_covar)
    for k, v in facts.items():
        if isinstance(v, list):
            v = "[" + ", ".join(f"{e:.4g}" if isinstance(e, float) else str(e) for e in v) + "]"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        print(f"{k}: {v}")
    if args.figure is not None:
        print(f"figure: {figure(args.figure, args.out)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
