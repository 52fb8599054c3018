"""Pose and mesh evaluation metrics (smplfast.metrics)."""
import math

import numpy as np
import pytest
import torch

from smplfast import metrics as M


# ------------------------------------------------------------------------------ reference (numpy)
def spin_similarity_transform(S1, S2):
    """Per-sample similarity Procrustes as in SPIN's utils/pose_utils.py, for (J, 3) arrays.

    Points are handled as (3, J) columns explicitly (SPIN infers the layout from the shape, which is
    ambiguous for 3 joints)."""
    S1, S2 = np.asarray(S1, np.float64).T, np.asarray(S2, np.float64).T
    mu1 = S1.mean(axis=1, keepdims=True)
    mu2 = S2.mean(axis=1, keepdims=True)
    X1, X2 = S1 - mu1, S2 - mu2
    var1 = np.sum(X1 ** 2)
    K = X1 @ X2.T
    U, s, Vh = np.linalg.svd(K)
    V = Vh.T
    Z = np.eye(U.shape[0])
    Z[-1, -1] *= np.sign(np.linalg.det(U @ V.T))
    R = V @ Z @ U.T
    scale = np.trace(R @ K) / var1
    t = mu2 - scale * (R @ mu1)
    return (scale * R @ S1 + t).T, scale, R, t[:, 0]


def spin_reconstruction_error(S1, S2):
    """SPIN's reconstruction_error without the final mean: per-sample errors."""
    out = np.stack([spin_similarity_transform(a, b)[0] for a, b in zip(S1, S2)])
    return np.sqrt(((out - np.asarray(S2, np.float64)) ** 2).sum(axis=-1)).mean(axis=-1)


def rot(axis, angle):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def random_poses(B=8, J=14, seed=0):
    g = np.random.default_rng(seed)
    gt = g.normal(size=(B, J, 3)) * 0.3
    pred = gt + g.normal(size=(B, J, 3)) * 0.05
    return pred, gt


TRI = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])


# ------------------------------------------------------------------------------------------ MPJPE
def test_mpjpe_constant_offset_is_offset_length():
    gt = torch.tensor(TRI)[None]
    pred = gt + torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    e = M.mpjpe(pred, gt)
    assert e.shape == (1,) and e.dtype == torch.float64
    assert e.item() == pytest.approx(5.0, abs=1e-12)
    # Root alignment removes a global offset entirely, with one root or with a mean of several.
    assert M.mpjpe(pred, gt, root_align=0).item() == pytest.approx(0.0, abs=1e-12)
    assert M.mpjpe(pred, gt, root_align=[1, 2]).item() == pytest.approx(0.0, abs=1e-12)


def test_mpjpe_per_joint_errors_mask_and_root():
    gt = torch.tensor(TRI)[None]
    off = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], dtype=torch.float64)
    pred = gt + off
    assert M.mpjpe(pred, gt).item() == pytest.approx(2.0)
    assert M.mpjpe(pred, gt, mask=[True, True, False]).item() == pytest.approx(1.5)
    assert M.mpjpe(pred, gt, mask=torch.tensor([[1.0, 0.0, 1.0]])).item() == pytest.approx(2.0)
    # Weights: (1*1 + 3*2) / 4.
    assert M.mpjpe(pred, gt, mask=[1.0, 3.0, 0.0]).item() == pytest.approx(7.0 / 4.0)
    # Root = joint 0: the offsets become off - off[0] = (0,0,0), (-1,2,0), (-1,0,3).
    expect = (0 + math.sqrt(5) + math.sqrt(10)) / 3
    assert M.mpjpe(pred, gt, root_align=0).item() == pytest.approx(expect)
    assert M.mpjpe(pred, gt, root_align=-3).item() == pytest.approx(expect)
    # Root = mean of joints 1 and 2 (SPIN's pelvis style): offset mean (0.5, 1, 1.5).
    centred = off - off[1:].mean(0)
    expect = centred.norm(dim=-1).mean().item()
    assert M.mpjpe(pred, gt, root_align=(1, 2)).item() == pytest.approx(expect)
    assert M.mpjpe(pred, gt, root_align=np.array([1, 2])).item() == pytest.approx(expect)
    assert M.mpjpe(pred, gt, root_align=torch.tensor([1, 2])).item() == pytest.approx(expect)


def test_mpjpe_matches_spin_formula_with_pelvis_names():
    pred, gt = random_poses(B=5, J=14, seed=1)
    # SPIN's eval.py: pelvis = mean of joints 2 and 3 of its 14 joints, centred separately.
    p = pred - (pred[:, [2]] + pred[:, [3]]) / 2
    g = gt - (gt[:, [2]] + gt[:, [3]]) / 2
    ref = np.sqrt(((p - g) ** 2).sum(-1)).mean(-1)
    np.testing.assert_allclose(M.mpjpe(pred, gt, root_align=(2, 3)).numpy(), ref, rtol=1e-12)
    by_name = M.mpjpe(pred, gt, root_align=M.SPIN_PELVIS, convention="lsp_14")
    np.testing.assert_allclose(by_name.numpy(), ref, rtol=1e-12)


def test_mpjpe_names_in_h36m_convention():
    pred, gt = random_poses(B=3, J=17, seed=2)
    a = M.mpjpe(pred, gt, root_align=["right_hip_lsp", "left_hip_lsp"], convention="h36m_17")
    b = M.mpjpe(pred, gt, root_align=[4, 1])
    torch.testing.assert_close(a, b)


def test_pve_hand_case_and_root():
    gt = torch.zeros(2, 4, 3)
    pred = gt.clone()
    pred[0, :, 0] = torch.tensor([1.0, 1.0, 1.0, 5.0])
    pred[1, :, 2] = 2.0
    torch.testing.assert_close(M.pve(pred, gt), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(M.pve(pred, gt, root_align=0), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(M.pve(pred, gt, mask=[1, 1, 1, 0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="out of range for 4 vertices"):
        M.pve(pred, gt, root_align=4)


# -------------------------------------------------------------------------------------- Procrustes
def test_similarity_transform_recovers_known_transform():
    s, R, t = 2.5, rot([1.0, 2.0, 3.0], 0.7), np.array([0.3, -1.0, 2.0])
    pred = TETRA
    gt = s * pred @ R.T + t
    scale, R_hat, t_hat = M.similarity_transform(pred[None], gt[None])
    assert scale.shape == (1,) and R_hat.shape == (1, 3, 3) and t_hat.shape == (1, 3)
    assert scale.item() == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(R_hat[0].numpy(), R, atol=1e-12)
    np.testing.assert_allclose(t_hat[0].numpy(), t, atol=1e-12)
    np.testing.assert_allclose(M.procrustes_align(pred, gt).numpy(), gt, atol=1e-12)
    assert M.pa_mpjpe(pred[None], gt[None]).item() == pytest.approx(0.0, abs=1e-12)


def test_reflection_gives_proper_rotation_and_positive_error():
    pred = TETRA[None]
    gt = pred * np.array([1.0, 1.0, -1.0])  # a mirror image: no rotation reaches it
    _, R, _ = M.similarity_transform(pred, gt)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(R[0] @ R[0].T, torch.eye(3, dtype=torch.float64))
    e = M.pa_mpjpe(pred, gt)
    assert e.item() > 0.1
    np.testing.assert_allclose(e.numpy(), spin_reconstruction_error(pred, gt), rtol=1e-10)
    # Without the fix the best orthogonal map is the mirror itself and would match exactly.
    X1, X2 = pred[0] - pred[0].mean(0), gt[0] - gt[0].mean(0)
    U, _, Vh = np.linalg.svd(X1.T @ X2)
    R_free = Vh.T @ U.T
    assert np.linalg.det(R_free) == pytest.approx(-1.0)
    np.testing.assert_allclose(X1 @ R_free.T, X2, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pa_mpjpe_matches_spin_reference(seed):
    pred, gt = random_poses(B=16, J=14, seed=seed)
    # Include reflected and wildly wrong samples so the determinant fix is exercised.
    pred[3] = gt[3] * np.array([-1.0, 1.0, 1.0])
    pred[4] = np.random.default_rng(seed + 10).normal(size=(14, 3))
    ref = spin_reconstruction_error(pred, gt)
    np.testing.assert_allclose(M.pa_mpjpe(pred, gt).numpy(), ref, rtol=1e-9, atol=1e-12)
    scale, R, t = M.similarity_transform(pred, gt)
    aligned = M.procrustes_align(pred, gt)
    for i in range(len(pred)):
        a_ref, s_ref, R_ref, t_ref = spin_similarity_transform(pred[i], gt[i])
        assert scale[i].item() == pytest.approx(s_ref, rel=1e-9)
        np.testing.assert_allclose(R[i].numpy(), R_ref, atol=1e-9)
        np.testing.assert_allclose(t[i].numpy(), t_ref, atol=1e-9)
        np.testing.assert_allclose(aligned[i].numpy(), a_ref, atol=1e-9)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-9)


def test_pa_mpjpe_three_joints_matches_reference():
    pred, gt = random_poses(B=4, J=3, seed=5)
    np.testing.assert_allclose(M.pa_mpjpe(pred, gt).numpy(), spin_reconstruction_error(pred, gt), rtol=1e-9)


def test_pa_mpjpe_is_invariant_to_similarity_of_pred():
    pred, gt = random_poses(B=4, J=10, seed=3)
    moved = 0.3 * pred @ rot([0, 1, 1], 2.0).T + np.array([5.0, 0.0, -1.0])
    torch.testing.assert_close(M.pa_mpjpe(moved, gt), M.pa_mpjpe(pred, gt))


def test_pa_mpjpe_mask_equals_joint_subset():
    pred, gt = random_poses(B=6, J=14, seed=4)
    keep = np.array([0, 1, 2, 3, 5, 8, 9, 11, 13])
    mask = np.zeros(14, bool)
    mask[keep] = True
    sub = M.pa_mpjpe(pred[:, keep], gt[:, keep])
    torch.testing.assert_close(M.pa_mpjpe(pred, gt, mask=mask), sub)
    # Masked-out joints may hold anything, NaN included.
    junk_pred, junk_gt = pred.copy(), gt.copy()
    junk_pred[:, ~mask] = np.nan
    junk_gt[:, ~mask] = 1e6
    torch.testing.assert_close(M.pa_mpjpe(junk_pred, junk_gt, mask=mask), sub)
    s_sub, R_sub, t_sub = M.similarity_transform(pred[:, keep], gt[:, keep])
    s, R, t = M.similarity_transform(junk_pred, junk_gt, mask=mask)
    torch.testing.assert_close((s, R, t), (s_sub, R_sub, t_sub))
    # The transform fitted on the valid joints is applied to all joints.
    aligned = M.procrustes_align(pred, gt, mask=mask)
    torch.testing.assert_close(aligned[:, keep], M.procrustes_align(pred[:, keep], gt[:, keep]))
    assert torch.isfinite(aligned).all()


def test_pa_mpjpe_per_sample_mask():
    pred, gt = random_poses(B=3, J=8, seed=6)
    mask = np.ones((3, 8), bool)
    mask[0, :3] = False
    mask[2, 5:] = False
    got = M.pa_mpjpe(pred, gt, mask=mask)
    for i in range(3):
        torch.testing.assert_close(got[i], M.pa_mpjpe(pred[i][mask[i]], gt[i][mask[i]]))


def test_pa_mpjpe_float_weights_double_count():
    pred, gt = random_poses(B=2, J=5, seed=7)
    w = np.array([1.0, 2.0, 1.0, 1.0, 0.0])
    dup = [0, 1, 1, 2, 3]
    torch.testing.assert_close(M.pa_mpjpe(pred, gt, mask=w), M.pa_mpjpe(pred[:, dup], gt[:, dup]))


def test_coincident_prediction_gets_zero_scale():
    gt = torch.tensor(TETRA)[None]
    pred = torch.ones_like(gt)
    scale, _, t = M.similarity_transform(pred, gt)
    assert scale.item() == 0.0
    torch.testing.assert_close(t[0], gt[0].mean(0))
    expect = (gt[0] - gt[0].mean(0)).norm(dim=-1).mean()
    torch.testing.assert_close(M.pa_mpjpe(pred, gt)[0], expect)


def test_pa_mpjpe_gradient_is_finite():
    pred, gt = random_poses(B=4, J=14, seed=8)
    p = torch.tensor(pred, requires_grad=True)
    M.pa_mpjpe(p, torch.tensor(gt)).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- PCK and AUC
def test_pck_hand_case_strict_threshold():
    gt = torch.zeros(1, 4, 3, dtype=torch.float64)
    pred = gt.clone()
    pred[0, :, 0] = torch.tensor([0.05, 0.10, 0.20, 0.15])
    # 0.15 itself is not below 0.15 (the protocol counts error < threshold).
    assert M.pck(pred, gt).item() == pytest.approx(0.5)
    assert M.pck(pred, gt, threshold=0.151).item() == pytest.approx(0.75)
    assert M.pck(pred * 1000, gt, threshold=150).item() == pytest.approx(0.5)
    assert M.pck(pred, gt, mask=[True, False, True, True]).item() == pytest.approx(1 / 3)
    # Root-centred on joint 3: errors become 0.10, 0.05, 0.05, 0.
    assert M.pck(pred, gt, root_align=3).item() == pytest.approx(1.0)


def test_auc_hand_cases():
    gt = torch.zeros(3, 2, 3, dtype=torch.float64)
    pred = gt.clone()
    pred[1, :, 1] = 0.0725   # below the 16 thresholds 75..150 mm
    pred[2, 0, 2] = 0.2      # joint 0 never within; joint 1 exact
    # Exact joints miss only the 0 threshold (0 < 0 is false).
    expect = torch.tensor([30 / 31, 16 / 31, 15 / 31], dtype=torch.float64)
    torch.testing.assert_close(M.auc(pred, gt), expect)
    torch.testing.assert_close(M.auc(pred * 1000, gt, thresholds=M.MPI_INF_3DHP_AUC_THRESHOLDS_MM), expect)
    torch.testing.assert_close(M.auc(pred * 1000, gt, thresholds=torch.linspace(0, 150, 31)), expect)
    # AUC is the mean of PCK over the thresholds.
    ts = np.linspace(0, 0.15, 31)
    torch.testing.assert_close(M.auc(pred, gt, thresholds=ts),
                               torch.stack([M.pck(pred, gt, threshold=float(t)) for t in ts]).mean(0))
    assert M.auc(pred, gt, thresholds=[0.1]).tolist() == M.pck(pred, gt, threshold=0.1).tolist()


def test_pck_auc_random_against_numpy():
    pred, gt = random_poses(B=10, J=17, seed=9)
    d = np.linalg.norm(pred - gt, axis=-1)
    np.testing.assert_allclose(M.pck(pred, gt, threshold=0.08).numpy(), (d < 0.08).mean(-1))
    ts = np.linspace(0, 0.15, 31)
    np.testing.assert_allclose(M.auc(pred, gt).numpy(), (d[..., None] < ts).mean(-1).mean(-1), rtol=1e-12)


# --------------------------------------------------------------------- dtypes, devices, shapes, NaN
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_are_kept(dtype):
    pred, gt = random_poses(B=5, J=14, seed=10)
    p, g = torch.tensor(pred, dtype=dtype), torch.tensor(gt, dtype=dtype)
    ref = spin_reconstruction_error(pred, gt)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    out = {
        "mpjpe": M.mpjpe(p, g), "pa": M.pa_mpjpe(p, g), "pck": M.pck(p, g), "auc": M.auc(p, g),
        "pve": M.pve(p, g),
    }
    for name, v in out.items():
        assert v.dtype == dtype and v.shape == (5,), name
    np.testing.assert_allclose(out["pa"].numpy(), ref, rtol=tol, atol=tol)
    s, R, t = M.similarity_transform(p, g)
    assert s.dtype == R.dtype == t.dtype == dtype
    assert M.procrustes_align(p, g).dtype == dtype


def test_numpy_and_mixed_inputs():
    pred, gt = random_poses(B=4, J=6, seed=11)
    a = M.pa_mpjpe(pred, gt)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float64
    torch.testing.assert_close(M.pa_mpjpe(torch.tensor(pred), gt), a)
    torch.testing.assert_close(M.mpjpe(pred.astype(np.float32), gt.astype(np.float32)),
                               M.mpjpe(pred, gt).float())
    # float32 with float64 promotes; integers compute in the default dtype.
    assert M.mpjpe(pred.astype(np.float32), gt).dtype == torch.float64
    assert M.mpjpe(np.zeros((2, 3, 3), np.int64), np.ones((2, 3, 3), np.int64)).dtype == torch.float32
    assert M.pa_mpjpe(torch.tensor(pred, dtype=torch.float16), torch.tensor(gt, dtype=torch.float16)).dtype \
        == torch.float32


def test_leading_dimensions():
    pred, gt = random_poses(B=6, J=9, seed=12)
    flat = M.pa_mpjpe(pred, gt)
    torch.testing.assert_close(M.pa_mpjpe(pred.reshape(2, 3, 9, 3), gt.reshape(2, 3, 9, 3)), flat.reshape(2, 3))
    mask = np.random.default_rng(0).random((2, 3, 9)) > 0.3
    torch.testing.assert_close(M.pa_mpjpe(pred.reshape(2, 3, 9, 3), gt.reshape(2, 3, 9, 3), mask=mask),
                               M.pa_mpjpe(pred, gt, mask=mask.reshape(6, 9)).reshape(2, 3))
    s, R, t = M.similarity_transform(pred.reshape(2, 3, 9, 3), gt.reshape(2, 3, 9, 3))
    assert s.shape == (2, 3) and R.shape == (2, 3, 3, 3) and t.shape == (2, 3, 3)
    single = M.pa_mpjpe(pred[0], gt[0])
    assert single.shape == () and single.item() == pytest.approx(flat[0].item())
    assert M.mpjpe(pred[0], gt[0]).shape == ()


def test_two_dimensional_points():
    g = np.random.default_rng(13).normal(size=(3, 7, 2))
    a = 0.4
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    gt = 1.7 * g @ R.T + np.array([1.0, -2.0])
    s, R_hat, _ = M.similarity_transform(g, gt)
    np.testing.assert_allclose(s.numpy(), 1.7, rtol=1e-12)
    np.testing.assert_allclose(R_hat.numpy(), np.broadcast_to(R, (3, 2, 2)), atol=1e-12)
    np.testing.assert_allclose(M.pa_mpjpe(g, gt).numpy(), 0.0, atol=1e-12)


@pytest.mark.parametrize("fn", [M.mpjpe, M.pa_mpjpe, M.pck, M.auc, M.pve])
def test_empty_batch(fn):
    for dtype in (torch.float32, torch.float64):
        out = fn(torch.zeros(0, 14, 3, dtype=dtype), torch.zeros(0, 14, 3, dtype=dtype))
        assert out.shape == (0,) and out.dtype == dtype
    s, R, t = M.similarity_transform(torch.zeros(0, 14, 3), torch.zeros(0, 14, 3))
    assert s.shape == (0,) and R.shape == (0, 3, 3) and t.shape == (0, 3)


@pytest.mark.parametrize("fn", [M.mpjpe, M.pa_mpjpe, M.pck, M.auc, M.pve])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_only_affects_its_sample(fn, bad):
    pred, gt = random_poses(B=4, J=14, seed=14)
    clean = fn(pred, gt)
    pred[1, 5, 0] = bad
    gt[2, 7, 2] = bad
    out = fn(pred, gt)
    assert torch.isnan(out[[1, 2]]).all()
    torch.testing.assert_close(out[[0, 3]], clean[[0, 3]])
    if fn is M.pa_mpjpe:
        s, R, t = M.similarity_transform(pred, gt)
        assert torch.isnan(s[[1, 2]]).all() and torch.isnan(R[[1, 2]]).all() and torch.isnan(t[[1, 2]]).all()
        assert torch.isfinite(s[[0, 3]]).all() and torch.isfinite(R[[0, 3]]).all()


@pytest.mark.parametrize("fn", [M.mpjpe, M.pa_mpjpe, M.pck, M.auc])
def test_sample_without_valid_joints_is_nan(fn):
    pred, gt = random_poses(B=3, J=5, seed=15)
    mask = np.ones((3, 5), bool)
    mask[1] = False
    out = fn(pred, gt, mask=mask)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()
    torch.testing.assert_close(out[[0, 2]], fn(pred[[0, 2]], gt[[0, 2]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, gt = random_poses(B=64, J=14, seed=16)
    mask = np.random.default_rng(1).random((64, 14)) > 0.2
    for dtype in (torch.float32, torch.float64):
        p, g = torch.tensor(pred, dtype=dtype), torch.tensor(gt, dtype=dtype)
        for fn in (M.pa_mpjpe, M.mpjpe, M.pck, M.auc):
            cpu = fn(p, g, mask=mask)
            cuda = fn(p.cuda(), g.cuda(), mask=mask)
            assert cuda.device.type == "cuda"
            torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- errors
def test_shape_errors():
    a = torch.zeros(2, 14, 3)
    with pytest.raises(ValueError, match=r"expected \(2, 14, 3\), got \(2, 13, 3\)"):
        M.mpjpe(a, torch.zeros(2, 13, 3))
    with pytest.raises(ValueError, match=r"expected \(2, 14, 3\), got \(3, 14, 3\)"):
        M.pa_mpjpe(a, torch.zeros(3, 14, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., J, 3\), got \(2, 14, 4\)"):
        M.pck(torch.zeros(2, 14, 4), torch.zeros(2, 14, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., J, 3\), got \(3,\)"):
        M.mpjpe(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"mask must have shape \(14,\) or \(2, 14\), got \(13,\)"):
        M.pa_mpjpe(a, a, mask=torch.ones(13, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        M.mpjpe(a, a, mask=torch.ones(14, 2))
    with pytest.raises(ValueError, match="non-negative"):
        M.mpjpe(a, a, mask=[-1.0] + [1.0] * 13)
    with pytest.raises(ValueError, match="single number"):
        M.pck(a, a, threshold=[0.1, 0.2])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        M.auc(a, a, thresholds=[])
    with pytest.raises(TypeError, match="real"):
        M.mpjpe(a.bool(), a.bool())


def test_root_align_errors():
    a = torch.zeros(2, 14, 3)
    with pytest.raises(ValueError, match="index 14 is out of range for 14 joints"):
        M.mpjpe(a, a, root_align=14)
    with pytest.raises(ValueError, match="empty"):
        M.mpjpe(a, a, root_align=[])
    with pytest.raises(ValueError, match="convention="):
        M.mpjpe(a, a, root_align=M.SPIN_PELVIS)
    with pytest.raises(ValueError, match="has 17 keypoints but the points have 14"):
        M.mpjpe(a, a, root_align=M.SPIN_PELVIS, convention="h36m_17")
    with pytest.raises(ValueError, match="not in convention"):
        M.mpjpe(a, a, root_align="pelvis", convention="lsp_14")
    with pytest.raises(ValueError, match="unknown keypoint convention"):
        M.mpjpe(a, a, root_align="pelvis", convention="nope")
    with pytest.raises(TypeError):
        M.mpjpe(a, a, root_align=1.5)
    with pytest.raises(TypeError):
        M.mpjpe(a, a, root_align=torch.tensor([0.0, 1.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_mismatch_error():
    with pytest.raises(ValueError, match="different devices"):
        M.mpjpe(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, device="cuda"))


def test_root_align_by_a_landmark_name_of_another_definition():
    """'pelvis' aligns h36m_17 joints on their pelvis (named pelvis_mpii there)."""
    rng = np.random.default_rng(3)
    pred, gt = rng.normal(size=(2, 17, 3)), rng.normal(size=(2, 17, 3))
    a = M.mpjpe(pred, gt, root_align="pelvis", convention="h36m_17")
    b = M.mpjpe(pred, gt, root_align="pelvis_mpii", convention="h36m_17")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="not in convention"):
        M.mpjpe(pred, gt, root_align="left_big_toe", convention="h36m_17")
