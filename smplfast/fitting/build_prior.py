"""Build a GMM pose prior: ``python -m smplfast.fitting.build_prior``.

Fits an 8-component full-covariance Gaussian mixture (scikit-learn's ``GaussianMixture``, EM from a
k-means start) to body poses (69 values, global orientation excluded) drawn from
:func:`smplfast.body.samplers.sample_poses`, and writes it in SMPLify's ``gmm_08.pkl`` layout
(``means``, ``covars``, ``weights``, float64). Every covariance gets ``reg_covar`` added to its
diagonal.

With the defaults (all pose families) it rebuilds the shipped default
``smplfast/fitting/data/gmm_default_08.npz`` (plus metadata: seed, sample counts, families,
regulariser, and the measured held-out numbers). ``--families standing,walking,...`` fits on a
subset of :data:`~smplfast.body.samplers.POSE_FAMILIES` only, so that experiments on poses of the
other families fit with a prior that has not seen them; such a prior needs an explicit ``--out``.
``--out`` ending in ``.npz`` writes the shipped layout with metadata; ``.pkl`` writes SPIN's
``gmm_08.pkl`` format (a pickle of a dict of numpy arrays, readable by SPIN's ``MaxMixturePrior``
and by :func:`smplfast.fitting.priors.load_gmm`). Files are written atomically.

``--cross-validate`` prints the leave-one-family-out comparison used to choose ``reg_covar``
(docs/POSE_PRIOR.md); ``--compare PRIOR ...`` prints the mean negative log-likelihood of fresh poses
of every family under each given prior; ``--figure PATH`` draws the per-component mean poses.
scikit-learn (and matplotlib for the figure) are needed here only, never at run time.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from .._io import atomic_write_bytes
import torch

from ..body.random_model import SMPL_JOINT_NAMES
from ..body.samplers import POSE_FAMILIES, TWIST_AXIS, pose_limits, sample_poses, swing_twist_to_axis_angle
from .priors import DEFAULT_PRIOR_PATH, MaxMixturePrior, load_gmm

#: Defaults of the shipped file.
NUM_GAUSSIANS = 8
NUM_TRAIN = 100_000
NUM_HELDOUT = 20_000
SEED = 0
# rad^2 added to every covariance's diagonal (std floor 0.1 rad). From --cross-validate: families that
# nothing else in training covers score much better than with 1e-3 (the best mean), while poses
# uniform within the joint limits stay ~150 nats above them (docs/POSE_PRIOR.md).
REG_COVAR = 1e-2
#: The families of the "lab" prior in docs/POSE_PRIOR.md: poses a capture lab records on purpose.
LAB_FAMILIES = ("standing", "walking", "arms_raised", "t_pose", "a_pose")
#: Output formats by file extension.
OUTPUT_FORMATS = {".npz": "the shipped layout, with metadata", ".pkl": "SPIN's gmm_08.pkl pickle"}


def _sklearn():
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:  # build-time tool only
        raise ImportError("building the pose prior needs scikit-learn: pip install 'smplfast[build-default]'") from exc
    return GaussianMixture


def _parse_families(families) -> Tuple[str, ...]:
    allowed = ", ".join(POSE_FAMILIES)
    if families is None:
        return POSE_FAMILIES
    if isinstance(families, str):
        if families.strip().lower() == "all":
            return POSE_FAMILIES
        names = [f.strip() for f in families.split(",")]
        names = [] if names == [""] else names
    else:
        names = list(families)
    if not names:
        raise ValueError(f"give at least one pose family; allowed: {allowed} (or 'all')")
    if "" in names:
        raise ValueError(f"empty family name in {families!r}; allowed: {allowed} (or 'all')")
    for name in names:
        if name not in POSE_FAMILIES:
            raise ValueError(f"unknown pose family {name!r}; allowed: {allowed} (or 'all')")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"pose family {dup[0]!r} is listed more than once")
    # Canonical order: the prior depends on the set only, and all families equal the default.
    return tuple(n for n in POSE_FAMILIES if n in names)


def resolve_families(families=None, option: str = "families") -> Tuple[str, ...]:
    """The pose families to fit on, in :data:`POSE_FAMILIES` order: ``None`` or ``"all"`` for all of
    them, a comma-separated string or a sequence of names. Raises ``ValueError`` naming ``option``
    and the allowed names for an unknown, repeated or empty list."""
    try:
        return _parse_families(families)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def training_poses(n: int, seed: int, families: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(n, 69) float64 body poses from :func:`sample_poses` over ``families`` (default: all), and
    their family indices (n,) into :data:`POSE_FAMILIES`."""
    poses, fam = sample_poses(n, family=resolve_families(families), seed=seed, dtype=torch.float64,
                              return_family=True)
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


def _output_format(out, option: Optional[str] = "out") -> str:
    suffix = Path(os.fspath(out)).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        allowed = ", ".join(f"{k} ({v})" for k, v in OUTPUT_FORMATS.items())
        msg = f"unknown output extension {suffix or '(none)'!r} in {str(out)!r}; allowed: {allowed}"
        raise ValueError(f"{option}: {msg}" if option else msg)
    return suffix


def check_output(out, families: Sequence[str] = POSE_FAMILIES, option: str = "out") -> Path:
    """Validate an output path before any work: a known extension (:data:`OUTPUT_FORMATS`), not a
    directory, a folder that exists or can be made and that accepts a new file, and never the shipped
    default's path for a prior fitted on a subset of the families. Returns the path; raises
    ``ValueError`` naming ``option``."""
    p = Path(os.fspath(out)).expanduser()
    _output_format(p, option)
    if tuple(families) != POSE_FAMILIES and p.resolve() == DEFAULT_PRIOR_PATH.resolve():
        raise ValueError(f"{option}: {str(p)!r} is the shipped all-family prior; a prior fitted on "
                         f"{', '.join(families)} needs another path")
    if p.is_dir():
        raise ValueError(f"{option}: {str(p)!r} is a directory; give a file path ending in .npz or .pkl")
    blocker = next((a for a in p.parents if a.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"{option}: cannot write {str(p)!r}: {str(blocker)!r} is a file, not a folder")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(f"{option}: cannot write {str(p)!r}: {exc.strerror or exc}") from None
    return p


class _SpinPickler(pickle._Pickler):
    """Protocol-2 pickler that names numpy's array constructor ``numpy.core.multiarray._reconstruct``
    (as numpy 1.x does, and as numpy 2.x still reads), so that SPIN's numpy 1.x environments can load
    the file: numpy 2.x itself writes ``numpy._core``, which numpy 1.x cannot import."""

    _reconstruct = np.ndarray.__reduce_ex__(np.zeros(1), 2)[0]

    def save_global(self, obj, name=None):
        if obj is self._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def spin_pickle_bytes(gmm: Dict[str, np.ndarray], families: Optional[Sequence[str]] = None) -> bytes:
    """SPIN's ``gmm_08.pkl`` format: a protocol-2 pickle of a plain dict with float64 arrays
    ``means`` (M, 69), ``covars`` (M, 69, 69) and ``weights`` (M,), plus ``families`` (a list of
    str) when given. Python 2 and 3, numpy 1.x and 2.x read it."""
    data = {k: np.ascontiguousarray(gmm[k], dtype=np.float64) for k in ("means", "covars", "weights")}
    if families is not None:
        data["families"] = [str(f) for f in families]
    buf = io.BytesIO()
    _SpinPickler(buf, protocol=2).dump(data)
    return buf.getvalue()


def write_prior(result: dict, out) -> Path:
    """Write a :func:`build_prior` result (or any dict with ``means``, ``covars``, ``weights`` and
    optionally ``families`` and ``metadata``) to ``out``: ``.npz`` in the shipped layout with the
    metadata, ``.pkl`` in SPIN's format (:func:`spin_pickle_bytes`). Atomic: a temporary file in the
    same folder is renamed onto ``out``."""
    families = resolve_families(result.get("families"), "result['families']")
    p = check_output(out, families)
    gmm = {k: np.asarray(result[k], dtype=np.float64) for k in ("means", "covars", "weights")}
    if _output_format(p) == ".pkl":
        data = spin_pickle_bytes(gmm, families)
    else:
        buf = io.BytesIO()
        meta = dict(result.get("metadata", {}))
        meta["families"] = np.array(families)
        np.savez_compressed(buf, **gmm, **meta)
        data = buf.getvalue()
    atomic_write_bytes(p, data)
    return p


def build_prior(families=None, num_samples: int = NUM_TRAIN, num_heldout: int = NUM_HELDOUT, seed: int = SEED,
                reg_covar: float = REG_COVAR, num_gaussians: int = NUM_GAUSSIANS, out=None) -> dict:
    """Fit a GMM pose prior on poses of the given families and optionally write it.

    ``families``: ``None``/``"all"`` (every family of :data:`POSE_FAMILIES`), a comma-separated
    string or a sequence of names; the order does not matter. ``num_samples`` training poses and
    ``num_heldout`` held-out poses are drawn together with :func:`sample_poses` (``seed``), each from
    one of the families chosen uniformly; the mixture has ``num_gaussians`` full-covariance
    components with ``reg_covar`` (rad²) added to each diagonal. With all the defaults the arrays are
    those of the shipped :data:`~smplfast.fitting.priors.DEFAULT_PRIOR_PATH`.

    ``out``: ``None`` (write nothing), or a ``.npz`` / ``.pkl`` path (:func:`write_prior`); the
    path is checked before any sampling. Returns a dict with ``means`` (M, 69), ``covars``
    (M, 69, 69), ``weights`` (M,) (float64), ``families`` (tuple), ``metadata`` (what the npz stores
    besides the arrays), ``facts`` (measured numbers: timings, held-out and random-pose prior
    values, conditioning) and ``path`` (str or None). Raises ``ValueError`` naming the argument for
    bad input; needs scikit-learn.
    """
    fams = resolve_families(families)
    for name, value, lo in (("num_samples", num_samples, max(int(num_gaussians), 1)), ("num_heldout", num_heldout, 1),
                            ("num_gaussians", num_gaussians, 1)):
        if isinstance(value, bool) or int(value) != value or value < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}; got {value!r}")
    if not (np.isfinite(reg_covar) and reg_covar >= 0):
        raise ValueError(f"reg_covar: must be a finite number >= 0; got {reg_covar!r}")
    num_samples, num_heldout, num_gaussians = int(num_samples), int(num_heldout), int(num_gaussians)
    if out is not None:
        check_output(out, fams)
    _sklearn()
    import sklearn

    t0 = time.time()
    x, _ = training_poses(num_samples + num_heldout, seed, fams)
    train, heldout = x[:num_samples], x[num_samples:]
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
        "families": list(fams),
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
    metadata = {
        "seed": np.int64(seed), "num_train": np.int64(num_samples), "num_heldout": np.int64(num_heldout),
        "families": np.array(fams), "reg_covar": np.float64(reg_covar),
        "fitter": np.array(f"sklearn.mixture.GaussianMixture (scikit-learn {sklearn.__version__}), full covariance"),
        "nll_heldout_mean": np.float64(facts["nll_heldout_mean"]),
        "nll_uniform_limits_mean": np.float64(facts["nll_uniform_limits_mean"]),
        "nll_uniform_box_mean": np.float64(facts["nll_uniform_box_mean"]),
    }
    result = {**gmm, "families": fams, "metadata": metadata, "facts": facts, "path": None}
    if out is not None:
        p = write_prior(result, out)
        result["path"] = str(p)
        facts["path"] = str(p)
        facts["bytes"] = p.stat().st_size
    return result


def build(out: Path = DEFAULT_PRIOR_PATH, num_train: int = NUM_TRAIN, num_heldout: int = NUM_HELDOUT,
          seed: int = SEED, reg_covar: float = REG_COVAR, num_gaussians: int = NUM_GAUSSIANS,
          families=None) -> dict:
    """Sample, fit, measure and write the prior (:func:`build_prior`); returns the measured facts."""
    return build_prior(families, num_train, num_heldout, seed, reg_covar, num_gaussians, out)["facts"]


def _as_gmm(prior) -> Dict[str, np.ndarray]:
    if isinstance(prior, dict):
        return {k: np.asarray(prior[k], dtype=np.float64) for k in ("means", "covars", "weights")}
    return load_gmm(prior)


def family_nll(priors: Dict[str, object], n_per_family: int = 5000, seed: int = 3,
               families: Iterable[str] = POSE_FAMILIES) -> Dict[str, Dict[str, float]]:
    """Mean :func:`max_mixture_log_density` (nats; lower is better, comparable between mixtures) of
    ``n_per_family`` fresh poses of each family (``sample_poses(family=f, seed=seed)``) under each
    prior. ``priors`` maps a label to a file path or a dict with ``means``, ``covars``, ``weights``.
    Returns ``{label: {family: mean}}``."""
    gmms = {label: _as_gmm(p) for label, p in priors.items()}
    out = {label: {} for label in gmms}
    for name in resolve_families(list(families)):
        x = sample_poses(n_per_family, family=name, seed=seed, dtype=torch.float64)[:, 3:].numpy()
        for label, gmm in gmms.items():
            out[label][name] = float(max_mixture_log_density(gmm, x).mean())
    return out


def family_nll_markdown(table: Dict[str, Dict[str, float]]) -> str:
    """:func:`family_nll`'s result as a markdown table, one row per family."""
    labels = list(table)
    fams = list(next(iter(table.values())))
    lines = ["| family | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(f"{table[label][f]:.1f}" for label in labels) + " |")
    return "\n".join(lines)


def figure(path: Path, prior_path: Optional[Path] = None, heldout: int = 5000, seed: int = 7) -> Path:
    """Per-component mean poses on the default body model (front and side) and the prior's value on
    held-out sampler poses versus uniform ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    from ..body.smpl import SMPL
    from ..body.plot import draw_mesh

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
                draw_mesh(ax, v, faces, (0.55, 0.65, 0.85), view)
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


def _arg_type(check):
    def parse(value):
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = check.__name__.strip("_")
    return parse


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise ValueError(f"must be >= 1; got {n}")
    return n


def _out_path(value: str) -> Path:
    _output_format(value, None)
    return Path(value)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smplfast.fitting.build_prior", description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", type=_arg_type(_parse_families), default=POSE_FAMILIES,
                    help="comma-separated pose families to fit on, from: " + ", ".join(POSE_FAMILIES)
                    + " (default: all)")
    ap.add_argument("--out", type=_arg_type(_out_path), default=None,
                    help=".npz (shipped layout with metadata) or .pkl (SPIN's gmm_08.pkl); default: the shipped "
                    "prior's path, allowed only with all families")
    ap.add_argument("--samples", type=_arg_type(_positive_int), default=NUM_TRAIN, help="training poses")
    ap.add_argument("--heldout", type=_arg_type(_positive_int), default=NUM_HELDOUT, help="held-out poses for the report")
    ap.add_argument("--components", type=_arg_type(_positive_int), default=NUM_GAUSSIANS, help="mixture components")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--reg-covar", type=float, default=REG_COVAR, help="rad^2 added to every covariance's diagonal")
    ap.add_argument("--cross-validate", action="store_true", help="print the leave-one-family-out table and exit")
    ap.add_argument("--compare", type=Path, nargs="+", default=None, metavar="PRIOR",
                    help="print the mean NLL of fresh poses of every family under each prior file and exit")
    ap.add_argument("--figure", type=Path, default=None, help="also draw the figure to this path")
    args = ap.parse_args(argv)
    if args.cross_validate:
        cross_validate()
        return 0
    if args.compare:
        print(family_nll_markdown(family_nll({str(p): p for p in args.compare})))
        return 0
    if args.samples < args.components:
        ap.error(f"argument --samples: must be at least --components ({args.components}); got {args.samples}")
    if not (np.isfinite(args.reg_covar) and args.reg_covar >= 0):
        ap.error(f"argument --reg-covar: must be a finite number >= 0; got {args.reg_covar}")
    out = args.out
    if out is None:
        if args.families != POSE_FAMILIES:
            ap.error("argument --out: required with --families other than all (the default path is the shipped "
                     "all-family prior)")
        out = DEFAULT_PRIOR_PATH
    try:
        out = check_output(out, args.families, "--out")
    except ValueError as exc:
        ap.error(f"argument {exc}")
    print("families: " + ", ".join(args.families), flush=True)
    facts = build(out, args.samples, args.heldout, args.seed, args.reg_covar, args.components, args.families)
    for k, v in facts.items():
        if k == "families":
            continue  # printed above
        if isinstance(v, list):
            v = "[" + ", ".join(f"{e:.4g}" if isinstance(e, float) else str(e) for e in v) + "]"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        print(f"{k}: {v}")
    if args.figure is not None:
        print(f"figure: {figure(args.figure, out)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
