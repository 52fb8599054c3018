"""Tests for smplfast.fitting.camera: SPIN's translation estimate, the weak-perspective conversion
and SMPLify's similar-triangles initialisation."""


import numpy as np
import pytest
import torch

from smplfast.body.keypoints import keypoint_names
from smplfast.fitting.camera import (
    SPIN49_GT_TORSO,
    SPIN49_IGNORED_JOINTS,
    SPIN49_OPENPOSE_TORSO,
    default_translation,
    estimate_translation,
    similar_triangles_translation,
    weak_perspective_to_translation,
)


def spin_estimate_translation_np(S, joints_2d, joints_conf, focal_length=5000, img_size=224, center=None):
    """SPIN's estimate_translation_np for one sample, written out with its explicit matrices."""
    n = S.shape[0]
    f = np.array([focal_length, focal_length], dtype=np.float64)
    c = np.array([img_size / 2.0, img_size / 2.0]) if center is None else np.asarray(center, dtype=np.float64)
    Z = np.repeat(S[:, 2], 2)                      # z of each joint, once per coordinate
    XY = S[:, :2].reshape(-1)
    O = np.tile(c, n)
    F = np.tile(f, n)
    w = np.repeat(np.sqrt(joints_conf), 2)
    uv = joints_2d.reshape(-1)
    Q = np.stack([F * np.tile([1.0, 0.0], n), F * np.tile([0.0, 1.0], n), O - uv], axis=1)
    rhs = (uv - O) * Z - F * XY
    W = np.diag(w)
    Q, rhs = W @ Q, W @ rhs
    return np.linalg.solve(Q.T @ Q, Q.T @ rhs)


def project(X, t, f=5000.0, c=(112.0, 112.0)):
    P = X + t[:, None, :]
    return f * P[..., :2] / P[..., 2:3] + torch.as_tensor(c, dtype=X.dtype)


def random_body(B, N=49, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(B, N, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.6, 1.7, 0.4], dtype=dtype)
    t = torch.stack([(torch.rand(B, generator=g, dtype=dtype) - 0.5) * 0.4,
                     (torch.rand(B, generator=g, dtype=dtype) - 0.5) * 0.4,
                     40 + 20 * torch.rand(B, generator=g, dtype=dtype)], -1)
    return X, t, g


# --------------------------------------------------------------------------------------- constants
def test_spin49_index_constants():
    assert SPIN49_OPENPOSE_TORSO == (9, 12, 2, 5)
    assert SPIN49_GT_TORSO == (27, 28, 33, 34)
    assert SPIN49_IGNORED_JOINTS == (1, 9, 12, 27, 28)
    names = keypoint_names("spin_49")
    assert [names[i] for i in SPIN49_OPENPOSE_TORSO] == [
        "right_hip_openpose", "left_hip_openpose", "right_shoulder_openpose", "left_shoulder_openpose"]
    assert [names[i] for i in SPIN49_GT_TORSO] == ["right_hip_lsp", "left_hip_lsp", "right_shoulder", "left_shoulder"]


# ---------------------------------------------------------------------------- estimate_translation
def test_estimate_translation_matches_spin_numpy():
    B = 12
    X, t, g = random_body(B, seed=1)
    kp = torch.cat([project(X, t) + 3 * torch.randn(B, 49, 2, generator=g, dtype=torch.float64),
                    torch.rand(B, 49, 1, generator=g, dtype=torch.float64)], -1)
    kp[3, 25:30, 2] = 0.0  # some missing joints
    got = estimate_translation(X, kp)
    for i in range(B):
        ref = spin_estimate_translation_np(X[i, 25:].numpy(), kp[i, 25:, :2].numpy(), kp[i, 25:, 2].numpy())
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-9, atol=1e-9)
    # All joints, a per-sample focal length and centre.
    f = 4000 + 2000 * torch.rand(B, generator=g, dtype=torch.float64)
    c = 100 + 30 * torch.rand(B, 2, generator=g, dtype=torch.float64)
    got = estimate_translation(X, kp, focal_length=f, center=c, use_all_joints=True)
    for i in range(B):
        ref = spin_estimate_translation_np(X[i].numpy(), kp[i, :, :2].numpy(), kp[i, :, 2].numpy(),
                                           focal_length=f[i].item(), center=c[i].numpy())
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-9, atol=1e-9)


def test_estimate_translation_float32_like_spin():
    X, t, g = random_body(6, seed=2, dtype=torch.float32)
    kp = torch.cat([project(X, t), torch.ones(6, 49, 1)], -1)
    got = estimate_translation(X, kp, img_size=224.0)
    assert got.dtype == torch.float32
    for i in range(6):
        ref = spin_estimate_translation_np(X[i, 25:].double().numpy(), kp[i, 25:, :2].double().numpy(),
                                           kp[i, 25:, 2].double().numpy())
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-5)


def test_estimate_translation_exact_recovery():
    X, t, g = random_body(8, seed=3)
    kp = torch.cat([project(X, t), torch.rand(8, 49, 1, generator=g, dtype=torch.float64) + 0.1], -1)
    est, valid = estimate_translation(X, kp, return_valid=True)
    assert valid.all()
    assert torch.allclose(est, t, atol=1e-9)
    # A known rotation of the joints, principal point off centre.
    R = torch.linalg.qr(torch.randn(8, 3, 3, generator=g, dtype=torch.float64)).Q
    R = R * torch.sign(torch.linalg.det(R))[:, None, None]
    c = torch.tensor([150.0, 90.0], dtype=torch.float64)
    kp_r = torch.cat([project(torch.einsum("bij,bnj->bni", R, X), t, c=c), kp[..., 2:]], -1)
    assert torch.allclose(estimate_translation(X, kp_r, center=c, rotation=R), t, atol=1e-9)
    # Two joints suffice (4 equations, 3 unknowns).
    kp2 = kp.clone()
    kp2[:, 27:, 2] = 0.0
    est, valid = estimate_translation(X, kp2, return_valid=True)
    assert valid.all() and torch.allclose(est, t, atol=1e-8)


def test_estimate_translation_degenerate_samples_no_nan():
    X, t, g = random_body(6, seed=4)
    kp = torch.cat([project(X, t), torch.ones(6, 49, 1, dtype=torch.float64)], -1)
    kp[0, 25:, 2] = 0.0          # no GT joints; OpenPose torso confident: similar triangles
    kp[1, :, 2] = 0.0            # nothing at all: SPIN's mean camera
    kp[2, 26:, 2] = 0.0          # one joint only
    kp[3, 25:, :2] = 112.0       # every joint at the same pixel: singular
    kp[4, 25:35, :2] = float("nan")  # non-finite joints are ignored
    kp[5, 25:, 2] = -1.0         # negative confidence counts as 0
    est, valid = estimate_translation(X, kp, return_valid=True)
    assert torch.isfinite(est).all()
    assert valid.tolist() == [False, False, False, False, True, False]
    st = similar_triangles_translation(X, kp)
    assert torch.allclose(est[0], st[0]) and torch.allclose(est[5], st[5])
    assert torch.allclose(est[1], torch.tensor([0.0, 0.0, 2 * 5000 / (224 * 0.9)], dtype=torch.float64))
    ok = kp[4, 35:]
    ref = spin_estimate_translation_np(X[4, 35:].numpy(), ok[:, :2].numpy(), ok[:, 2].numpy())
    np.testing.assert_allclose(est[4].numpy(), ref, rtol=1e-9)
    # An explicit fallback wins for every invalid sample.
    fb = torch.arange(18, dtype=torch.float64).reshape(6, 3)
    est2 = estimate_translation(X, kp, fallback=fb)
    assert torch.equal(est2[~valid], fb[~valid]) and torch.equal(est2[valid], est[valid])
    # Other joint counts: the mean camera.
    est3, v3 = estimate_translation(X[:, :10], torch.zeros(6, 10, 3, dtype=torch.float64), use_all_joints=True,
                                    return_valid=True, img_size=200.0)
    assert not v3.any() and torch.allclose(est3[:, 2], torch.full((6,), 2 * 5000 / (200 * 0.9), dtype=torch.float64))


def test_estimate_translation_refuses_a_body_behind_the_camera():
    X, t, g = random_body(2, seed=5)
    behind = t.clone()
    behind[1, 2] = -t[1, 2]  # the pixels of body 1 placed 40-60 m behind the camera: exactly solvable, depth < 0
    kp = torch.cat([project(X, behind), torch.ones(2, 49, 1, dtype=torch.float64)], -1)
    fb = torch.full((2, 3), 7.0, dtype=torch.float64)
    est, valid = estimate_translation(X, kp, return_valid=True, fallback=fb)
    assert valid.tolist() == [True, False]
    assert torch.allclose(est[0], t[0], atol=1e-9) and torch.equal(est[1], fb[1])


def test_estimate_translation_input_errors():
    X = torch.zeros(2, 24, 3)
    with pytest.raises(ValueError, match="use_all_joints"):
        estimate_translation(X, torch.zeros(2, 24, 3))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        estimate_translation(X, torch.zeros(2, 24, 2), use_all_joints=True)
    with pytest.raises(ValueError, match="center"):
        estimate_translation(X, torch.zeros(2, 24, 3), use_all_joints=True, center=torch.zeros(3, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_estimate_translation_cuda():
    X, t, _ = random_body(5, seed=5)
    kp = torch.cat([project(X, t), torch.ones(5, 49, 1, dtype=torch.float64)], -1)
    kp[1, :, 2] = 0
    est, valid = estimate_translation(X.cuda(), kp.cuda(), return_valid=True)
    assert est.device.type == "cuda" and valid.device.type == "cuda"
    ref, vref = estimate_translation(X, kp, return_valid=True)
    assert torch.allclose(est.cpu(), ref) and torch.equal(valid.cpu(), vref)


# --------------------------------------------------------------------------------- weak perspective
def test_weak_perspective_to_translation():
    cam = torch.tensor([[0.9, 0.1, -0.2], [2.0, 0.0, 0.0]])
    t = weak_perspective_to_translation(cam)
    assert torch.allclose(t[0], torch.tensor([0.1, -0.2, 10000 / (224 * 0.9 + 1e-9)]))
    assert t[1, 2].item() == pytest.approx(10000 / 448)
    t2 = weak_perspective_to_translation(cam.double(), focal_length=1000.0, img_res=256)
    assert t2.dtype == torch.float64 and t2[1, 2].item() == pytest.approx(2000 / 512)
    assert torch.allclose(default_translation(2), torch.tensor([[0, 0, 10000 / 201.6]] * 2))


# -------------------------------------------------------------------------------- similar triangles
def torso_body(B, seed=0):
    """Bodies whose torso joints (shoulders, hips; OpenPose and GT) lie in one plane z = const."""
    X, t, g = random_body(B, seed=seed)
    z = (torch.rand(B, 1, generator=g, dtype=torch.float64) - 0.5) * 0.2
    for i in SPIN49_OPENPOSE_TORSO + SPIN49_GT_TORSO:
        X[:, i, 2] = z[:, 0]
    return X, t, g


def test_similar_triangles_exact_for_frontoparallel_torso():
    X, t, g = torso_body(7, seed=6)
    kp = torch.cat([project(X, t), torch.ones(7, 49, 1, dtype=torch.float64)], -1)
    est, valid = similar_triangles_translation(X, kp, return_valid=True)
    assert valid.all() and torch.allclose(est, t, atol=1e-9)
    # With only the GT torso available; and with a custom single candidate.
    kp_gt = kp.clone()
    kp_gt[:, 2, 2] = 0.0
    assert torch.allclose(similar_triangles_translation(X, kp_gt), t, atol=1e-9)
    assert torch.allclose(similar_triangles_translation(X, kp, torso_pairs=[(33, 27), (34, 28)]), t, atol=1e-9)


def test_similar_triangles_hand_case_and_selection():
    # Shoulders 0.4 m apart, 0.5 m above the hips; 2D torso 2x smaller per metre than f / 10 m.
    X = torch.zeros(1, 49, 3, dtype=torch.float64)
    kp = torch.zeros(1, 49, 3, dtype=torch.float64)
    for (sh, hip), sx in (((2, 9), -0.2), ((5, 12), 0.2)):
        X[0, sh] = torch.tensor([sx, 0.5, 0.0])
        X[0, hip] = torch.tensor([sx, 0.0, 0.0])
        kp[0, sh] = torch.tensor([112 + sx * 250, 112 - 0.5 * 250 + 10, 1.0])
        kp[0, hip] = torch.tensor([112 + sx * 250, 112 + 10, 1.0])
    # 3D length 0.5 m, 2D length 125 px: depth 5000 * 0.5 / 125 = 20 m; 2D centre (112, 59.5) -> y offset.
    est, valid = similar_triangles_translation(X, kp, return_valid=True)
    assert valid.item()
    expected_ty = (59.5 - 112) * 20 / 5000 - 0.25
    assert torch.allclose(est[0], torch.tensor([0.0, expected_ty, 20.0], dtype=torch.float64))
    # The GT torso says something else; OpenPose wins while all four are confident...
    kp[0, [33, 34, 27, 28], :] = torch.tensor([[100, 100, 1], [110, 100, 1], [100, 110, 1], [110, 110, 1]], dtype=torch.float64)
    X[0, [33, 34, 27, 28]] = X[0, [2, 5, 9, 12]]
    assert torch.allclose(similar_triangles_translation(X, kp)[0, 2], torch.tensor(20.0, dtype=torch.float64))
    # ... and the complete GT set wins over an incomplete OpenPose one (2D length 10 px: 250 m).
    kp[0, 12, 2] = 0.0
    assert similar_triangles_translation(X, kp)[0, 2].item() == pytest.approx(250.0)
    # Nothing complete: the first candidate's usable pair.
    kp[0, 27, 2] = 0.0
    assert similar_triangles_translation(X, kp)[0, 2].item() == pytest.approx(20.0)
    # Nothing usable: fallback and valid False.
    kp[0, :, 2] = 0.0
    est, valid = similar_triangles_translation(X, kp, return_valid=True, focal_length=1000.0)
    assert not valid.item() and torch.allclose(est[0], torch.tensor([0, 0, 2000 / (224 * 0.9)], dtype=torch.float64))


def test_similar_triangles_degenerate_no_nan_and_float32():
    X, t, g = torso_body(4, seed=8)
    kp = torch.cat([project(X, t), torch.ones(4, 49, 1, dtype=torch.float64)], -1)
    kp[0, :, :2] = 50.0                # zero 2D torso
    X[1] = 0.0                         # zero 3D torso
    kp[2, [2, 5, 9, 12, 27, 28, 33, 34], 0] = float("inf")
    est, valid = similar_triangles_translation(X, kp, return_valid=True)
    assert torch.isfinite(est).all() and valid.tolist() == [False, False, False, True]
    est32 = similar_triangles_translation(X.float(), kp.float())
    assert est32.dtype == torch.float32 and torch.allclose(est32[3].double(), t[3], rtol=1e-5)
    with pytest.raises(ValueError, match="torso_pairs"):
        similar_triangles_translation(X[:, :24], kp[:, :24])
    with pytest.raises(ValueError, match="indices"):
        similar_triangles_translation(X, kp, torso_pairs=[(0, 60)])
