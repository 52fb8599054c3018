"""Tests for smplfast_train.rotations: SPIN's 6D layout, robust matrix <-> axis-angle, Euler angles."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from smplfast_train import rotations as R6
from smplfast_train.rotations import (
    EULER_ORDERS,
    axis_angle_to_matrix,
    chordal_mean,
    euler_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_rot6d,
    project_to_so3,
    rot6d_to_matrix,
)

F32, F64 = torch.float32, torch.float64
TOL = {F32: 2e-6, F64: 1e-12}


def random_rotvecs(n, seed=0):
    return Rotation.random(n, random_state=seed).as_rotvec()


def special_rotvecs():
    """(name, axis-angle) pairs at the awkward points: 0, tiny, exactly π about several axes, π − 1e-6."""
    axes = {
        "x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0],
        "xyz": [1.0, 1.0, 1.0], "y-z": [0.0, 1.0, -1.0], "-x2y": [-1.0, 2.0, 0.5],
    }
    out = [("zero", np.zeros(3))]
    for name, a in axes.items():
        a = np.asarray(a) / np.linalg.norm(a)
        out += [(f"1e-8 {name}", 1e-8 * a), (f"pi {name}", math.pi * a), (f"pi-1e-6 {name}", (math.pi - 1e-6) * a)]
    return out


def is_rotation(R, tol):
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    return bool(((R.transpose(-1, -2) @ R - eye).abs().max() < tol) and ((torch.det(R) - 1).abs().max() < tol))


# ---------------------------------------------------------------------------------------------- 6D


def test_identity_6d_is_spin_layout():
    six = matrix_to_rot6d(torch.eye(3))
    assert six.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert list(R6.IDENTITY_6D) == six.tolist()
    assert torch.equal(rot6d_to_matrix(torch.tensor(R6.IDENTITY_6D)), torch.eye(3))


def test_rot6d_layout_matches_reference_gram_schmidt():
    """x.view(3, 2): a1 = (x0, x2, x4), a2 = (x1, x3, x5); b1, b2 by Gram-Schmidt, b3 = b1 x b2; R = [b1 b2 b3]."""
    x = torch.randn(50, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    got = rot6d_to_matrix(x).numpy()
    for xi, Ri in zip(x.numpy(), got):
        a1, a2 = xi[[0, 2, 4]], xi[[1, 3, 5]]
        b1 = a1 / np.linalg.norm(a1)
        b2 = a2 - b1.dot(a2) * b1
        b2 /= np.linalg.norm(b2)
        np.testing.assert_allclose(Ri, np.stack([b1, b2, np.cross(b1, b2)], axis=1), atol=1e-12)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_rot6d_round_trip(dtype):
    R = torch.as_tensor(Rotation.random(500, random_state=2).as_matrix(), dtype=dtype)
    six = matrix_to_rot6d(R)
    assert six.shape == (500, 6)
    torch.testing.assert_close(six, R[:, :, :2].reshape(500, 6))
    torch.testing.assert_close(rot6d_to_matrix(six), R, atol=10 * TOL[dtype], rtol=0)
    # Any 6D decodes to a rotation, and decoding is idempotent through encode.
    x = torch.randn(200, 6, dtype=dtype, generator=torch.Generator().manual_seed(3))
    Rx = rot6d_to_matrix(x)
    assert is_rotation(Rx, 10 * TOL[dtype])
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(Rx)), Rx, atol=10 * TOL[dtype], rtol=0)


def test_rot6d_leading_dims_and_shape_errors():
    x = torch.randn(2, 5, 24, 6)
    assert rot6d_to_matrix(x).shape == (2, 5, 24, 3, 3)
    assert matrix_to_rot6d(rot6d_to_matrix(x)).shape == (2, 5, 24, 6)
    with pytest.raises(ValueError):
        rot6d_to_matrix(torch.randn(4, 144))
    with pytest.raises(ValueError):
        matrix_to_rot6d(torch.randn(4, 3, 2))


def test_rot6d_gradient_finite():
    x = torch.randn(64, 6, dtype=F64, requires_grad=True)
    rot6d_to_matrix(x).square().mul(torch.randn(64, 3, 3, dtype=F64)).sum().backward()
    assert torch.isfinite(x.grad).all()


# -------------------------------------------------------------------------------------- axis-angle


@pytest.mark.parametrize("dtype", [F32, F64])
def test_axis_angle_to_matrix_matches_scipy(dtype):
    rv = np.concatenate([random_rotvecs(300), np.stack([v for _, v in special_rotvecs()])])
    got = axis_angle_to_matrix(torch.as_tensor(rv, dtype=dtype)).to(F64).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(rv).as_matrix(), atol=10 * TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name,rv", special_rotvecs(), ids=[n for n, _ in special_rotvecs()])
def test_matrix_to_axis_angle_special_points(dtype, name, rv):
    Rm = torch.as_tensor(Rotation.from_rotvec(rv).as_matrix(), dtype=dtype)
    aa = matrix_to_axis_angle(Rm)
    assert aa.dtype == dtype and torch.isfinite(aa).all()
    aa64 = aa.to(F64).numpy()
    angle = np.linalg.norm(rv)
    if name.startswith("pi "):
        # Exactly π: the axis is defined up to sign; the angle is π and the matrix comes back.
        assert abs(np.linalg.norm(aa64) - math.pi) < 10 * TOL[dtype]
        assert min(np.abs(aa64 - rv).max(), np.abs(aa64 + rv).max()) < 10 * TOL[dtype] * math.pi
    elif dtype == F64 or angle < 3.0:
        np.testing.assert_allclose(aa64, rv, atol=10 * TOL[dtype] * max(1.0, angle), rtol=1e-7 if dtype == F64 else 1e-5)
    # The tiny angle must not be flushed to zero.
    if name.startswith("1e-8"):
        np.testing.assert_allclose(np.linalg.norm(aa64), 1e-8, rtol=1e-5)
    back = axis_angle_to_matrix(aa)
    torch.testing.assert_close(back, Rm, atol=10 * TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_matrix_to_axis_angle_random_against_scipy(dtype):
    rot = Rotation.random(2000, random_state=4)
    ref = rot.as_rotvec()  # float64 reference, angle in [0, π]
    aa = matrix_to_axis_angle(torch.as_tensor(rot.as_matrix(), dtype=dtype)).to(F64).numpy()
    np.testing.assert_allclose(aa, ref, atol=1e-11 if dtype == F64 else 2e-5, rtol=0)


def test_matrix_to_axis_angle_leading_dims():
    rv = torch.as_tensor(random_rotvecs(60, seed=5), dtype=F64).reshape(3, 4, 5, 3)
    R = axis_angle_to_matrix(rv)
    assert R.shape == (3, 4, 5, 3, 3)
    out = matrix_to_axis_angle(R)
    assert out.shape == (3, 4, 5, 3)
    torch.testing.assert_close(out, rv, atol=1e-11, rtol=0)
    with pytest.raises(ValueError):
        matrix_to_axis_angle(torch.zeros(4, 9))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_matrix_to_axis_angle_gradients_never_nan(dtype):
    rv = np.concatenate([np.stack([v for _, v in special_rotvecs()]), random_rotvecs(50, seed=6)])
    Rm = torch.as_tensor(Rotation.from_rotvec(rv).as_matrix(), dtype=dtype).requires_grad_()
    w = torch.randn(len(rv), 3, dtype=dtype)
    (matrix_to_axis_angle(Rm) * w).sum().backward()
    assert torch.isfinite(Rm.grad).all()
    aa = torch.as_tensor(rv, dtype=dtype).requires_grad_()
    (matrix_to_axis_angle(axis_angle_to_matrix(aa)) * w).sum().backward()
    assert torch.isfinite(aa.grad).all()


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-3, 1.0, 2.5, math.pi - 1e-3])
def test_axis_angle_round_trip_jacobian_is_identity(angle):
    """aa -> R -> aa is the identity for angles < π, so its Jacobian must be I (float64), at 0 too."""
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=F64)
    aa = angle * axis / axis.norm()
    J = torch.autograd.functional.jacobian(lambda v: matrix_to_axis_angle(axis_angle_to_matrix(v)), aa)
    torch.testing.assert_close(J, torch.eye(3, dtype=F64), atol=1e-7, rtol=0)


def test_matrix_to_axis_angle_gradcheck_random():
    R = torch.as_tensor(Rotation.random(8, random_state=7).as_matrix(), dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (R,), eps=1e-7, atol=1e-6)


def test_geodesic_angle():
    a, b = Rotation.random(100, random_state=8), Rotation.random(100, random_state=9)
    got = geodesic_angle(torch.as_tensor(a.as_matrix()), torch.as_tensor(b.as_matrix())).numpy()
    np.testing.assert_allclose(got, (a.inv() * b).magnitude(), atol=1e-10)
    eye = torch.eye(3, dtype=F64).expand(2, 3, 3)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64)).expand(2, 3, 3)
    np.testing.assert_allclose(geodesic_angle(eye, eye).numpy(), 0.0)
    np.testing.assert_allclose(geodesic_angle(eye, flip).numpy(), math.pi)


def test_project_to_so3_and_chordal_mean():
    R = torch.as_tensor(Rotation.random(20, random_state=10).as_matrix(), dtype=F64)
    torch.testing.assert_close(project_to_so3(R), R, atol=1e-12, rtol=0)
    noisy = R + 0.05 * torch.randn(20, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert is_rotation(project_to_so3(noisy), 1e-12)
    reflection = -torch.eye(3, dtype=F64)
    assert is_rotation(project_to_so3(reflection + 0.01 * R[0]), 1e-12)
    # The chordal mean of a tight cluster is close to the cluster's rotation; of copies, it is exact.
    torch.testing.assert_close(chordal_mean(R[:1].expand(7, 3, 3)), R[0], atol=1e-12, rtol=0)
    spread = torch.as_tensor((Rotation.from_matrix(R[0].numpy()) * Rotation.from_rotvec(
        0.05 * random_rotvecs(50, seed=11) / math.pi)).as_matrix())
    assert geodesic_angle(chordal_mean(spread), R[0]) < 0.02
    assert chordal_mean(R.reshape(4, 5, 3, 3), dim=1).shape == (4, 3, 3)
    with pytest.raises(ValueError):
        chordal_mean(R, dim=-1)


# ------------------------------------------------------------------------------------------- Euler


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_to_matrix_matches_scipy_intrinsic(order):
    g = np.random.default_rng(12)
    ang = g.uniform(-math.pi, math.pi, (200, 3))
    got = euler_to_matrix(torch.as_tensor(ang), order).numpy()
    np.testing.assert_allclose(got, Rotation.from_euler(order, ang).as_matrix(), atol=1e-12)
    # Intrinsic order: R = R_first(a0) @ R_second(a1) @ R_third(a2), each about a fixed coordinate axis.
    prod = np.eye(3)
    for n, axis in enumerate(order):
        prod = prod @ Rotation.from_rotvec(np.eye(3)["XYZ".index(axis)] * ang[0, n]).as_matrix()
    np.testing.assert_allclose(got[0], prod, atol=1e-12)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_round_trips(order, dtype):
    g = np.random.default_rng(13)
    n = 500
    ang = np.stack([g.uniform(-math.pi, math.pi, n), g.uniform(-math.pi / 2, math.pi / 2, n) * 0.999,
                    g.uniform(-math.pi, math.pi, n)], axis=1)
    ang_t = torch.as_tensor(ang, dtype=dtype)
    back = matrix_to_euler(euler_to_matrix(ang_t, order), order)
    tol = 1e-9 if dtype == F64 else 2e-3  # angles near gimbal lock are ill-conditioned in float32
    np.testing.assert_allclose(back.to(F64).numpy(), ang, atol=tol)
    np.testing.assert_allclose(back[:, 1].to(F64).numpy(), Rotation.from_euler(order, ang).as_euler(order)[:, 1],
                               atol=tol)
    # Matrix -> Euler -> matrix is exact to rounding everywhere, including gimbal lock.
    rots = Rotation.random(n, random_state=14).as_matrix()
    lock = Rotation.from_euler(order, np.stack([g.uniform(-3, 3, 50), np.repeat([math.pi / 2, -math.pi / 2], 25),
                                                g.uniform(-3, 3, 50)], axis=1)).as_matrix()
    near = Rotation.from_euler(order, np.stack([g.uniform(-3, 3, 50), math.pi / 2 - 10.0 ** -g.uniform(3, 8, 50),
                                                g.uniform(-3, 3, 50)], axis=1)).as_matrix()
    Rm = torch.as_tensor(np.concatenate([rots, lock, near]), dtype=dtype)
    e = matrix_to_euler(Rm, order)
    assert torch.isfinite(e).all()
    assert (e[:, 1].abs() <= math.pi / 2 + 1e-6).all() and (e.abs() <= math.pi + 1e-6).all()
    torch.testing.assert_close(euler_to_matrix(e, order), Rm, atol=5e-6 if dtype == F32 else 1e-12, rtol=0)


def test_euler_bad_order():
    with pytest.raises(ValueError):
        euler_to_matrix(torch.zeros(3), "XYX")
    with pytest.raises(ValueError):
        matrix_to_euler(torch.eye(3), "xyz!")
