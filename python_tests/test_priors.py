"""Tests for smplfast.fitting.priors: SPIN's prior values, the least-squares forms and their
Jacobians, and the GMM file loading; and for smplfast.fitting.build_prior's priors fitted on a subset
of the pose families."""

import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from smplfast.fitting.priors import (
    ANGLE_PRIOR_INDICES,
    DEFAULT_PRIOR_PATH,
    MaxMixturePrior,
    PriorFileError,
    PriorFileNotFoundError,
    PriorWeights,
    anchor_prior,
    anchor_residuals,
    angle_prior,
    angle_prior_residuals,
    gmof,
    load_gmm,
    robust_residual,
    shape_bound,
    shape_bound_residuals,
    shape_prior,
    shape_prior_residuals,
)

D = 69


# ------------------------------------------------------------------------------ synthetic GMM files
def random_gmm(M=8, D=D, seed=0):
    """A random GMM in SMPLify's layout: covariances with eigenvalues in [0.003, 0.3] rad^2."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.3, (M, D))
    covars = np.empty((M, D, D))
    for m in range(M):
        Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
        covars[m] = (Q * rng.uniform(0.003, 0.3, D)) @ Q.T
    covars = 0.5 * (covars + covars.transpose(0, 2, 1))
    weights = rng.uniform(0.5, 2.0, M)
    return {"means": means, "covars": covars, "weights": weights / weights.sum()}


class _GlobalName:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler only checks that a reducer's function is callable
        raise AssertionError("never called")


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for a dict of numpy arrays: byte strings for str,
    numpy.core.multiarray._reconstruct and array state with the raw buffer as a byte string."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def _save_global_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[str] = _save_str
    dispatch[bytes] = _save_str
    dispatch[_GlobalName] = _save_global_name

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj, dtype=np.float64)
            dtype_state = (3, "<", None, None, None, -1, -1, 0)
            dt = (_GlobalName("numpy", "dtype"), ("f8", 0, 1), dtype_state)
            return (_GlobalName("numpy.core.multiarray", "_reconstruct"),
                    (_GlobalName("numpy", "ndarray"), (0,), b"b"),
                    (1, a.shape, _DtypeProxy(dt), False, a.tobytes()))
        if isinstance(obj, _DtypeProxy):
            return obj.reduce
        return NotImplemented


class _DtypeProxy:
    def __init__(self, reduce):
        self.reduce = reduce


def write_py2_pickle(path, data):
    with open(path, "wb") as fh:
        _Python2Pickler(fh, protocol=2).dump(data)
    return path


def spin_merged_log_likelihood(gmm, pose):
    """SPIN's merged_log_likelihood written out per sample in numpy (float64)."""
    means, covs, weights = gmm["means"], gmm["covars"], gmm["weights"]
    precisions = [np.linalg.inv(c) for c in covs]
    sqrdets = np.array([np.sqrt(np.linalg.det(c)) for c in covs])
    const = (2 * np.pi) ** (69 / 2.0)
    nll_weights = weights / (const * (sqrdets / sqrdets.min()))
    out = []
    for x in pose:
        vals = [0.5 * (x - mu) @ P @ (x - mu) - np.log(w) for mu, P, w in zip(means, precisions, nll_weights)]
        out.append(min(vals))
    return np.array(out)


@pytest.fixture(scope="module")
def gmm():
    return random_gmm()


@pytest.fixture(scope="module")
def gmm_pickle(tmp_path_factory, gmm):
    return write_py2_pickle(tmp_path_factory.mktemp("prior") / "gmm_08.pkl", gmm)


# ------------------------------------------------------------------------------------ robust kernel
def test_gmof_hand_values():
    x = torch.tensor([0.0, 3.0, -3.0, 100.0], dtype=torch.float64)
    assert torch.allclose(gmof(x, 4.0), torch.tensor([0.0, 144 / 25, 144 / 25, 16 * 1e4 / (16 + 1e4)], dtype=torch.float64))
    assert torch.allclose(gmof(torch.tensor(1e8, dtype=torch.float64), 100.0), torch.tensor(1e4, dtype=torch.float64))


def test_robust_residual_squares_to_gmof_and_derivative():
    e = torch.linspace(-500, 500, 1001, dtype=torch.float64, requires_grad=True)
    r, dr = robust_residual(e, 100.0)
    assert torch.allclose(r ** 2, gmof(e, 100.0), rtol=1e-13, atol=1e-10)
    assert torch.equal(torch.sign(r), torch.sign(e))
    (g,) = torch.autograd.grad(r.sum(), e)
    assert torch.allclose(dr, g, rtol=1e-12, atol=1e-15)
    assert dr[500].item() == pytest.approx(1.0)  # e = 0
    # Tensor sigma broadcasts.
    r2, _ = robust_residual(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 2.0]))
    assert r2.shape == (2, 2) and r2[0, 0].item() == pytest.approx(1 / math.sqrt(2))


# ------------------------------------------------------------------------------------------ GMM prior
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_gmm_prior_equals_spin_formula(gmm, gmm_pickle, dtype, rtol):
    prior = MaxMixturePrior(gmm_pickle, num_gaussians=8, dtype=dtype)
    rng = np.random.default_rng(1)
    pose = np.concatenate([gmm["means"][:4] + rng.normal(0, 0.1, (4, D)), rng.normal(0, 0.5, (12, D))])
    ref = spin_merged_log_likelihood(gmm, pose)
    got = prior(torch.tensor(pose, dtype=dtype))
    assert got.dtype == dtype and got.shape == (16,)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=rtol)
    # Float64 poses on a float32 module are evaluated in float64 (buffers cast).
    got64 = prior(torch.tensor(pose))
    assert got64.dtype == torch.float64
    # SPIN's buffers and name.
    assert prior.means.shape == (8, D) and prior.precisions.shape == (8, D, D) and prior.nll_weights.shape == (8,)
    np.testing.assert_allclose(prior.merged_log_likelihood(torch.tensor(pose, dtype=dtype), None).double().numpy(), ref, rtol=rtol)


def test_gmm_prior_component_and_energies(gmm, gmm_pickle):
    prior = MaxMixturePrior(gmm_pickle, dtype=torch.float64)
    pose = torch.tensor(gmm["means"])  # each mean is (almost surely) claimed by its own component
    e = prior.energies(pose)
    assert e.shape == (8, 8)
    assert torch.equal(prior.component(pose), e.argmin(1))
    assert torch.allclose(prior(pose), e.min(1).values)
    # At a component's mean its energy is exactly its constant -log nll_weights.
    assert torch.allclose(torch.diagonal(e), prior.constants)
    assert bool((prior.constants >= 0).all())
    assert torch.allclose(prior.constants, -torch.log(prior.nll_weights))


def test_gmm_prior_npz_and_directory_and_arrays(tmp_path, gmm, gmm_pickle):
    pose = torch.tensor(np.random.default_rng(2).normal(0, 0.4, (5, D)))
    ref = MaxMixturePrior(gmm_pickle, dtype=torch.float64)(pose)
    np.savez(tmp_path / "g.npz", **gmm)
    assert torch.allclose(MaxMixturePrior(tmp_path / "g.npz", dtype=torch.float64)(pose), ref, rtol=1e-12)
    # SPIN's prior_folder: a directory with gmm_08.pkl.
    assert torch.allclose(MaxMixturePrior(prior_folder=gmm_pickle.parent, num_gaussians=8, dtype=torch.float64)(pose), ref)
    assert torch.allclose(MaxMixturePrior(gmm_pickle.parent, dtype=torch.float64)(pose), ref)
    arr = MaxMixturePrior.from_arrays(gmm["means"], torch.tensor(gmm["covars"]), gmm["weights"], dtype=torch.float64)
    assert torch.allclose(arr(pose), ref, rtol=1e-12)
    # A plain Python 3 pickle reads the same.
    (tmp_path / "p3.pkl").write_bytes(pickle.dumps(gmm, protocol=4))
    assert torch.allclose(MaxMixturePrior(tmp_path / "p3.pkl", dtype=torch.float64)(pose), ref, rtol=1e-12)


def test_gmm_prior_other_dimension(tmp_path):
    g = random_gmm(M=3, D=12, seed=5)
    np.savez(tmp_path / "g.npz", **g)
    prior = MaxMixturePrior(tmp_path / "g.npz", num_gaussians=None, dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    ld = np.linalg.slogdet(g["covars"])[1]
    c = -np.log(g["weights"]) + 6 * math.log(2 * math.pi) + 0.5 * (ld - ld.min())
    d = x.numpy()[:, None] - g["means"][None]
    ref = (0.5 * np.einsum("bmi,mij,bmj->bm", d, np.linalg.inv(g["covars"]), d) + c).min(1)
    np.testing.assert_allclose(prior(x).numpy(), ref, rtol=1e-10)
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        prior(torch.zeros(2, 69, dtype=torch.float64))


def test_gmm_prior_extreme_determinants_stay_finite(tmp_path):
    # det of 69x69 covariances of 1e-6 underflows float64 (1e-414); slogdet does not.
    g = random_gmm(M=2, seed=3)
    g["covars"][0] *= 1e-5
    np.savez(tmp_path / "g.npz", **g)
    prior = MaxMixturePrior(tmp_path / "g.npz", num_gaussians=2, dtype=torch.float32)
    assert torch.isfinite(prior.constants).all() and torch.isfinite(prior(torch.zeros(3, D))).all()
    ld = np.linalg.slogdet(g["covars"])[1]
    assert prior.constants[1].item() == pytest.approx(
        -math.log(g["weights"][1]) + 34.5 * math.log(2 * math.pi) + 0.5 * (ld[1] - ld[0]), rel=1e-5)


def _variant(gmm, **changes):
    out = {k: np.array(v) for k, v in gmm.items()}
    out.update(changes)
    return out


@pytest.mark.parametrize("case,match", [
    ("missing_key", "missing key"),
    ("means_shape", "covars must have shape"),
    ("weights_shape", "weights must have shape"),
    ("means_ndim", "means must have shape"),
    ("nan", "NaN or Inf"),
    ("not_pd", "not positive definite"),
    ("asymmetric", "not symmetric"),
    ("negative_weight", "weights must be positive"),
    ("count", "holds 8 components but num_gaussians=6"),
    ("object", "not a numeric array"),
])
def test_gmm_file_errors(tmp_path, gmm, case, match):
    num = 6 if case == "count" else 8
    if case == "missing_key":
        data = {"means": gmm["means"], "weights": gmm["weights"]}
    elif case == "means_shape":
        data = _variant(gmm, means=gmm["means"][:, :68])
    elif case == "weights_shape":
        data = _variant(gmm, weights=gmm["weights"][:7])
    elif case == "means_ndim":
        data = _variant(gmm, means=gmm["means"].ravel())
    elif case == "nan":
        m = gmm["means"].copy()
        m[3, 4] = np.nan
        data = _variant(gmm, means=m)
    elif case == "not_pd":
        c = gmm["covars"].copy()
        c[2] -= 0.5 * np.eye(D)
        data = _variant(gmm, covars=c)
    elif case == "asymmetric":
        c = gmm["covars"].copy()
        c[1, 0, 5] += 0.01
        data = _variant(gmm, covars=c)
    elif case == "negative_weight":
        w = gmm["weights"].copy()
        w[0] = -0.1
        data = _variant(gmm, weights=w)
    elif case == "object":
        data = _variant(gmm, weights=["a"] * 8)
    else:
        data = gmm
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(PriorFileError, match=match):
        MaxMixturePrior(path, num_gaussians=num)
    with pytest.raises(PriorFileError, match=match):
        load_gmm(path, num)


def test_gmm_file_missing_and_refused(tmp_path):
    with pytest.raises(PriorFileNotFoundError, match="does not exist"):
        MaxMixturePrior(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        MaxMixturePrior(tmp_path)  # a directory without gmm_08.pkl
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(PriorFileError, match="unsupported suffix"):
        MaxMixturePrior(tmp_path / "x.txt")
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x02garbage")
    with pytest.raises(PriorFileError, match="not a valid"):
        MaxMixturePrior(tmp_path / "bad.pkl")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo hacked",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"means": Evil()}, protocol=2))
    with pytest.raises(PriorFileError, match="refusing"):
        MaxMixturePrior(tmp_path / "evil.pkl")
    with pytest.raises(ValueError, match="merged"):
        MaxMixturePrior(use_merged=False)


# ------------------------------------------------------------------------------------ GMM residuals
def _jacobian(fn, x):
    return torch.autograd.functional.jacobian(fn, x)  # (B, m, B, n): keep the diagonal blocks


def _blocks(Jfull):
    B = Jfull.shape[0]
    return torch.stack([Jfull[b, :, b] for b in range(B)])


def test_gmm_residuals_square_to_loss_and_jacobian(gmm, gmm_pickle):
    prior = MaxMixturePrior(gmm_pickle, dtype=torch.float64)
    rng = np.random.default_rng(4)
    pose = torch.tensor(np.concatenate([gmm["means"][[1, 5]] + rng.normal(0, 0.05, (2, D)), rng.normal(0, 0.4, (4, D))]))
    r, J, comp = prior.residuals(pose)
    assert r.shape == (6, 70) and J.shape == (6, 70, 69) and comp.dtype == torch.long
    assert torch.allclose((r ** 2).sum(-1), prior(pose), rtol=1e-12)
    assert torch.equal(comp, prior.component(pose))
    assert comp[0].item() == 1 and comp[1].item() == 5
    assert torch.all(r[:, -1] ** 2 == prior.constants[comp]) or torch.allclose(r[:, -1] ** 2, prior.constants[comp])
    assert torch.count_nonzero(J[:, -1]) == 0
    Jref = _blocks(_jacobian(lambda p: prior.residuals(p)[0], pose))
    assert torch.allclose(J, Jref, atol=1e-12)
    # J^T J = P_m / 2 and the gradient of the loss is 2 J^T r.
    P = prior.precisions[comp]
    assert torch.allclose(J.transpose(1, 2) @ J, 0.5 * P, atol=1e-9)
    pose.requires_grad_(True)
    (g,) = torch.autograd.grad(prior(pose).sum(), pose)
    assert torch.allclose(g, 2 * (J.transpose(1, 2) @ r.detach().unsqueeze(-1)).squeeze(-1), atol=1e-9)


def test_gmm_residuals_finite_difference_float64(gmm, gmm_pickle):
    prior = MaxMixturePrior(gmm_pickle, dtype=torch.float64)
    pose = torch.tensor(gmm["means"][2:3] + 0.03)
    r, J, comp = prior.residuals(pose)
    h = 1e-6
    for k in (0, 17, 68):
        e = torch.zeros_like(pose)
        e[0, k] = h
        fd = (prior.residuals(pose + e)[0] - prior.residuals(pose - e)[0]) / (2 * h)
        assert torch.allclose(fd[0], J[0, :, k], atol=1e-7)


def test_gmm_prior_float32_residuals_and_device(gmm_pickle):
    prior = MaxMixturePrior(gmm_pickle)
    pose = torch.randn(3, D) * 0.3
    r, J, _ = prior.residuals(pose)
    assert r.dtype == torch.float32 and J.dtype == torch.float32
    assert torch.allclose((r ** 2).sum(-1), prior(pose), rtol=1e-5)
    if torch.cuda.is_available():
        p = prior.to("cuda")
        assert torch.allclose(p(pose.cuda()).cpu(), prior(pose), rtol=1e-5)
        rc, Jc, _ = p.residuals(pose.cuda())
        assert torch.allclose(Jc.cpu(), J, atol=1e-5)


# ----------------------------------------------------------------------------------- default prior
def test_default_prior_file():
    assert DEFAULT_PRIOR_PATH.is_file()
    assert DEFAULT_PRIOR_PATH.stat().st_size < 600_000
    prior = MaxMixturePrior()
    assert prior.num_gaussians == 8 and prior.dim == 69
    assert prior.weights.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert bool((prior.constants >= 0).all())
    with np.load(DEFAULT_PRIOR_PATH) as z:
        for k in ("seed", "num_train", "families", "reg_covar"):
            assert k in z.files
        assert z["covars"].dtype == np.float64
        reg = float(z["reg_covar"])
        # The regulariser floors every covariance's spectrum.
        assert np.linalg.eigvalsh(z["covars"]).min() >= reg * (1 - 1e-6)


def test_default_prior_prefers_sampler_poses():
    from smplfast.body.samplers import sample_poses

    prior = MaxMixturePrior(dtype=torch.float64)
    plausible = sample_poses(300, seed=12345, dtype=torch.float64)[:, 3:]
    random = (torch.rand(300, 69, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5)
    a, b = prior(plausible), prior(random)
    assert a.median() < b.min()
    # SPIN's own calls work: float32 module, float32 pose, betas ignored.
    p32 = MaxMixturePrior(num_gaussians=8, dtype=torch.float32)
    assert torch.allclose(p32(plausible.float(), torch.zeros(300, 10)).double(), a, rtol=1e-4)


# ------------------------------------------------------------------------------------- other terms
def test_angle_prior_hand_values_and_residuals():
    pose = torch.zeros(2, 69, dtype=torch.float64)
    assert torch.equal(angle_prior(pose), torch.ones(2, 4, dtype=torch.float64))
    pose[1, 52] = 0.5   # left elbow hyperextended: exp(0.5)^2
    pose[1, 55] = 0.5   # right elbow flexed: exp(-0.5)^2
    pose[1, 9] = -0.25  # left knee hyperextended: exp(0.25)^2
    pose[1, 12] = 1.0   # right knee flexed: exp(-1)^2
    expected = torch.tensor([math.e, math.exp(-1), math.exp(0.5), math.exp(-2)], dtype=torch.float64)
    assert torch.allclose(angle_prior(pose)[1], expected)
    # SPIN's expression, indices 55-3, 58-3, 12-3, 15-3 of the full pose.
    assert ANGLE_PRIOR_INDICES == (55 - 3, 58 - 3, 12 - 3, 15 - 3)
    x = torch.randn(3, 69, dtype=torch.float64)
    spin = torch.exp(x[:, [52, 55, 9, 12]] * torch.tensor([1.0, -1.0, -1, -1.0], dtype=torch.float64)) ** 2
    assert torch.allclose(angle_prior(x), spin)
    r, J = angle_prior_residuals(x)
    assert r.shape == (3, 4) and J.shape == (3, 4, 69)
    assert torch.allclose((r ** 2), angle_prior(x))
    assert torch.allclose(J, _blocks(_jacobian(lambda p: angle_prior_residuals(p)[0], x)), atol=1e-12)
    assert torch.count_nonzero(J) == 12


def test_shape_prior():
    betas = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(shape_prior(betas), torch.tensor([5.25, 9.0], dtype=torch.float64))
    r, J = shape_prior_residuals(betas)
    assert torch.equal(r, betas) and torch.equal(J, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert torch.allclose((r ** 2).sum(-1), shape_prior(betas))


def test_anchor_prior_and_residuals():
    pose = torch.tensor([[0.1, -0.3, 0.0]], dtype=torch.float64)
    init = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    s = 0.2
    hand = sum(s * s * e * e / (s * s + e * e) for e in (0.1, -0.3, 0.0))
    assert anchor_prior(pose, init, s).item() == pytest.approx(hand)
    x = torch.randn(4, 69, dtype=torch.float64)
    x0 = torch.randn(4, 69, dtype=torch.float64)
    r, J = anchor_residuals(x, x0, 0.2)
    assert torch.allclose((r ** 2).sum(-1), anchor_prior(x, x0, 0.2), rtol=1e-12)
    assert torch.allclose(J, _blocks(_jacobian(lambda p: anchor_residuals(p, x0, 0.2)[0], x)), atol=1e-12)


def test_shape_bound_and_irls_residuals():
    betas = torch.tensor([[3.0, -2.5, 1.0, 2.0, -1.9]], dtype=torch.float64)
    assert shape_bound(betas, 2.0).item() == pytest.approx(1.5)
    assert shape_bound(torch.zeros(2, 10), 2.0).tolist() == [0.0, 0.0]
    r, J = shape_bound_residuals(betas, 2.0)
    # At the reference point r^2 = h: 1, 0.5, 0, 0, 0.
    assert torch.allclose(r ** 2, torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose((r ** 2).sum(-1), shape_bound(betas, 2.0))
    # Jacobian at a fixed reference: autograd and finite differences (away from the kink).
    x = torch.tensor([[3.0, -2.6, 1.0, 2.3, -3.4]], dtype=torch.float64)
    ref = x + 0.1
    r, J = shape_bound_residuals(x, 2.0, ref)
    Ja = _blocks(_jacobian(lambda p: shape_bound_residuals(p, 2.0, ref)[0], x))
    assert torch.allclose(J, Ja, atol=1e-12)
    h = 1e-6
    fd = torch.stack([(shape_bound_residuals(x + h * e, 2.0, ref)[0] - shape_bound_residuals(x - h * e, 2.0, ref)[0])[0] / (2 * h)
                      for e in torch.eye(5, dtype=torch.float64).unsqueeze(1)], dim=-1)
    assert torch.allclose(J[0], fd, atol=1e-7)
    # A Gauss-Newton step on this residual alone lands every violating beta on the bound.
    r, J = shape_bound_residuals(x, 2.0)
    step = torch.linalg.pinv(J[0]) @ -r[0]
    assert torch.allclose((x[0] + step), torch.tensor([2.0, -2.0, 1.0, 2.0, -2.0], dtype=torch.float64), atol=1e-12)
    # Tiny violations (below eps) stay consistent: r^2 <= h and the step still hits the bound.
    y = torch.tensor([[2.00001]], dtype=torch.float64)
    r, J = shape_bound_residuals(y, 2.0)
    assert 0 <= (r ** 2).item() <= 1e-5 + 1e-15
    assert (y - r / J[:, 0]).item() == pytest.approx(2.0, abs=1e-12)


def test_prior_weights_defaults():
    w = PriorWeights()
    assert (w.pose_prior_weight, w.shape_prior_weight, w.angle_prior_weight, w.sigma, w.depth_loss_weight) == (
        4.78, 5.0, 15.2, 100.0, 100.0)
    assert w.anchor_weight == 0.0 and w.shape_bound_weight == 0.0 and w.shape_bound == 2.0
    assert w.anchor_sigma > 0


# ------------------------------------------------------------------------- priors on family subsets
LAB = ("standing", "walking", "arms_raised", "t_pose", "a_pose")  # POSE_FAMILIES order
EXCLUDED = ("sitting", "crouching")


@pytest.fixture(scope="module")
def lab_prior(tmp_path_factory):
    pytest.importorskip("sklearn")
    from smplfast.fitting import build_prior as bp

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("lab_prior")
    # Any order: the families are stored in POSE_FAMILIES order.
    result = bp.build_prior("arms_raised, a_pose,t_pose,walking,standing", num_samples=4000, num_heldout=200,
                            out=folder / "gmm_lab.npz")
    pkl = bp.write_prior(result, folder / "gmm_08.pkl")
    return result, folder / "gmm_lab.npz", pkl


def test_subset_prior_npz_loads(lab_prior):
    import smplfast

    result, npz, _ = lab_prior
    assert result["families"] == LAB and result["path"] == str(npz)
    assert result["facts"]["families"] == list(LAB)
    with np.load(npz) as z:
        assert tuple(z["families"].tolist()) == LAB
        assert int(z["num_train"]) == 4000 and float(z["reg_covar"]) == 1e-2
        for k in ("means", "covars", "weights"):
            assert z[k].dtype == np.float64 and np.array_equal(z[k], result[k])
    assert [p.name for p in npz.parent.iterdir() if p.name.endswith(".tmp")] == []
    prior = MaxMixturePrior(npz, dtype=torch.float64)
    ref = MaxMixturePrior.from_arrays(result["means"], result["covars"], result["weights"], dtype=torch.float64)
    pose = torch.tensor(result["means"][:3] + 0.05)
    assert torch.equal(prior(pose), ref(pose))
    fitter = smplfast.SMPLify(pose_prior=npz)
    assert fitter.pose_prior.num_gaussians == 8 and fitter.pose_prior.source == str(npz)


def test_subset_prior_pkl_is_spin_format(lab_prior):
    import pickletools

    import smplfast

    result, _, pkl = lab_prior
    with open(pkl, "rb") as fh:  # SPIN's MaxMixturePrior: pickle.load(f, encoding='latin1'), a dict
        gmm = pickle.load(fh, encoding="latin1")
    with open(pkl, "rb") as fh:
        assert pickle.load(fh).keys() == gmm.keys()
    assert type(gmm) == dict  # noqa: E721  (SPIN's own check)
    assert gmm["means"].shape == (8, D) and gmm["covars"].shape == (8, D, D) and gmm["weights"].shape == (8,)
    for k in ("means", "covars", "weights"):
        assert isinstance(gmm[k], np.ndarray) and gmm[k].dtype == np.float64 and np.array_equal(gmm[k], result[k])
    assert gmm["families"] == list(LAB)
    # Protocol 2, and only globals that Python 2 / numpy 1.x can resolve (numpy 2 writes numpy._core).
    raw = pkl.read_bytes()
    assert raw[:2] == b"\x80\x02"
    names = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "_codecs encode"}
    # smplfast's restricted loader, SPIN's prior_folder call, and SMPLify.
    np.testing.assert_array_equal(load_gmm(pkl)["means"], result["means"])
    pose = torch.tensor(result["means"][:2] - 0.05)
    a = MaxMixturePrior(prior_folder=pkl.parent, num_gaussians=8, dtype=torch.float64)(pose)
    assert torch.equal(a, MaxMixturePrior.from_arrays(gmm["means"], gmm["covars"], gmm["weights"], dtype=torch.float64)(pose))
    assert smplfast.SMPLify(pose_prior=pkl).pose_prior.source == str(pkl)


def test_subset_prior_prefers_its_own_families(lab_prior):
    from smplfast.fitting.build_prior import family_nll

    _, npz, _ = lab_prior
    nll = family_nll({"all": DEFAULT_PRIOR_PATH, "lab": npz}, n_per_family=300, seed=3, families=LAB + EXCLUDED)
    gap = {label: min(t[f] for f in EXCLUDED) - max(t[f] for f in LAB) for label, t in nll.items()}
    # The shipped prior saw every family: sitting and crouching score about as well as the lab poses
    # (lower is better). The lab prior did not: they score far worse than every family it was fitted on.
    assert gap["all"] < 20
    assert gap["lab"] > 100 and gap["lab"] > gap["all"] + 100
    for f in LAB:  # and its own families stay about as likely as under the shipped prior
        assert nll["lab"][f] < nll["all"][f] + 10


def test_build_prior_cli_pkl(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from smplfast.fitting.build_prior import main

    torch.set_num_threads(1)
    out = tmp_path / "sub" / "gmm_02.pkl"
    assert main(["--families", "a_pose,t_pose", "--samples", "400", "--heldout", "50", "--components", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "families: t_pose, a_pose" in text
    assert os.listdir(out.parent) == ["gmm_02.pkl"]
    gmm = load_gmm(out, num_gaussians=2)
    assert gmm["means"].shape == (2, D)
    with open(out, "rb") as fh:
        assert pickle.load(fh)["families"] == ["t_pose", "a_pose"]


def test_build_prior_defaults_are_the_shipped_prior():
    """The default options are those recorded in the shipped file, and the default family list
    samples exactly what the shipped prior was fitted on (all families, in POSE_FAMILIES order)."""
    import inspect

    from smplfast.body.samplers import POSE_FAMILIES, sample_poses
    from smplfast.fitting import build_prior as bp

    defaults = {k: v.default for k, v in inspect.signature(bp.build_prior).parameters.items()}
    with np.load(DEFAULT_PRIOR_PATH) as z:
        assert tuple(z["families"].tolist()) == POSE_FAMILIES
        assert int(z["num_train"]) == defaults["num_samples"] and int(z["num_heldout"]) == defaults["num_heldout"]
        assert int(z["seed"]) == defaults["seed"] and float(z["reg_covar"]) == defaults["reg_covar"]
        assert z["means"].shape[0] == defaults["num_gaussians"]
    assert defaults["families"] is None and bp.resolve_families(None) == POSE_FAMILIES
    assert bp.resolve_families("all") == bp.resolve_families(list(reversed(POSE_FAMILIES))) == POSE_FAMILIES
    x, fam = bp.training_poses(60, 0, list(reversed(POSE_FAMILIES)))
    ref, ref_fam = sample_poses(60, seed=0, dtype=torch.float64, return_family=True)
    assert np.array_equal(x, ref[:, 3:].numpy()) and np.array_equal(fam, ref_fam.numpy())


def test_build_prior_bad_input(tmp_path):
    from smplfast.fitting import build_prior as bp

    for bad, match in (("standing,flying", "families: unknown pose family 'flying'; allowed: standing, walking"),
                       ([], "families: give at least one pose family; allowed: standing"),
                       ("", "families: give at least one pose family"),
                       ("standing,standing", "families: pose family 'standing' is listed more than once")):
        with pytest.raises(ValueError, match=match):
            bp.build_prior(bad, num_samples=100, out=tmp_path / "g.npz")
    with pytest.raises(ValueError, match=r"out: unknown output extension '\.json'.*allowed: \.npz .*\.pkl"):
        bp.build_prior(LAB, num_samples=100, out=tmp_path / "g.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out: cannot write .* is a file, not a folder"):
        bp.build_prior(LAB, num_samples=100, out=tmp_path / "file" / "g.npz")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(ValueError, match="out: .* is a directory"):
        bp.check_output(tmp_path / "folder.npz")
    with pytest.raises(ValueError, match="is the shipped all-family prior"):
        bp.build_prior(LAB, num_samples=100, out=DEFAULT_PRIOR_PATH)
    with pytest.raises(ValueError, match="num_samples: must be an integer >= 8"):
        bp.build_prior(LAB, num_samples=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.npz"]


@pytest.mark.parametrize("argv,needle", [
    (["--families", "standing,jumping"], "argument --families: unknown pose family 'jumping'; allowed: standing, walking,"),
    (["--families", ""], "argument --families: give at least one pose family; allowed: standing"),
    (["--families", "standing", "--out", "g.txt"], "argument --out: unknown output extension '.txt'"),
    (["--families", "standing"], "argument --out: required with --families"),
    (["--samples", "0", "--out", "g.npz"], "argument --samples: must be >= 1"),
])
def test_build_prior_cli_bad_input(argv, needle, capsys):
    from smplfast.fitting.build_prior import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_build_prior_cli_unwritable(tmp_path, capsys):
    from smplfast.fitting.build_prior import main

    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["--families", "standing", "--out", str(tmp_path / "file" / "g.pkl")])
    assert "argument --out: cannot write" in capsys.readouterr().err


def test_write_prior_is_atomic(tmp_path, monkeypatch, gmm):
    from smplfast.fitting import build_prior as bp

    out = tmp_path / "g.pkl"
    out.write_bytes(b"previous")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bp.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        bp.write_prior(gmm, out)
    assert out.read_bytes() == b"previous" and os.listdir(tmp_path) == ["g.pkl"]
    monkeypatch.undo()
    bp.write_prior(gmm, out)
    np.testing.assert_array_equal(load_gmm(out)["covars"], gmm["covars"])
    assert os.listdir(tmp_path) == ["g.pkl"]
