"""Tests for smplfast.body.samplers: shape and pose samplers, joint limits, capsule self-intersection."""
import math
import re

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body import random_model
from smplfast.body import samplers as S
from smplfast.body.random_model import SMPL_JOINT_NAMES, SMPL_REST_JOINTS

J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
F64 = torch.float64


@pytest.fixture(scope="module")
def layer():
    return smplfast.SMPL(data_struct=random_model(6890, seed=0), dtype=F64)


def fk(layer, poses):
    """First 24 joints of (N, 72) poses with zero betas."""
    poses = poses.to(F64)
    with torch.no_grad():
        out = layer(betas=torch.zeros(len(poses), 10, dtype=F64), global_orient=poses[:, :3],
                    body_pose=poses[:, 3:], joints_only=True)
    return out.joints[:, :24]


def pose(**joints_deg):
    """(1, 72) pose from swing-twist components in degrees per named joint."""
    p = torch.zeros(24, 3, dtype=F64)
    for name, comps in joints_deg.items():
        p[J[name]] = S.swing_twist_to_axis_angle(torch.deg2rad(torch.tensor(comps, dtype=F64)), S.TWIST_AXIS[name])
    return p.reshape(1, 72)


# ------------------------------------------------------------------------------------------- betas


def test_betas_deterministic():
    a = S.sample_betas(100, seed=3)
    assert a.shape == (100, 10) and a.dtype == torch.float32
    assert torch.equal(a, S.sample_betas(100, seed=3))
    assert not torch.equal(a, S.sample_betas(100, seed=4))
    assert torch.equal(S.sample_betas(5, seed=torch.Generator().manual_seed(9)),
                       S.sample_betas(5, seed=torch.Generator().manual_seed(9)))
    assert torch.equal(S.sample_betas(5, seed=np.random.default_rng(1)), S.sample_betas(5, seed=np.random.default_rng(1)))
    b = S.sample_betas(7, 16, seed=3, dtype=F64, scale=2.0)
    assert b.shape == (7, 16) and b.dtype == F64
    assert S.sample_betas(0).shape == (0, 10)


@pytest.mark.parametrize("trunc", [3.0, 1.0])
def test_betas_truncated_normal(trunc):
    b = S.sample_betas(20000, seed=0, truncation=trunc, dtype=F64)
    assert b.abs().max() <= trunc
    # Variance of N(0, 1) truncated at +-t: 1 - 2 t phi(t) / (2 Phi(t) - 1). Clipping would give more.
    phi = math.exp(-trunc**2 / 2) / math.sqrt(2 * math.pi)
    std = math.sqrt(1 - 2 * trunc * phi / math.erf(trunc / math.sqrt(2)))
    assert abs(b.mean().item()) < 0.02
    assert abs(b.std().item() - std) < 0.015
    assert (b.abs() == trunc).sum() == 0
    untruncated = S.sample_betas(20000, seed=0, truncation=None, dtype=F64)
    assert abs(untruncated.std().item() - 1.0) < 0.015 and untruncated.abs().max() > 3.0


def test_betas_bad_inputs():
    with pytest.raises(ValueError, match="n must be >= 0"):
        S.sample_betas(-1)
    with pytest.raises(ValueError, match="truncation"):
        S.sample_betas(3, truncation=0.0)
    with pytest.raises(TypeError, match="seed"):
        S.sample_betas(3, seed="x")


# -------------------------------------------------------------------------------------- rotations


def test_rotation_helpers_round_trip():
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(500, 3, generator=g, dtype=F64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(500, 1, generator=g, dtype=F64) * 3.1
    aa[0] = 0.0
    R = S.axis_angle_to_matrix(aa)
    for order in ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"):
        e = S.axis_angle_to_euler(aa, order)
        assert e[:, 1].abs().max() <= math.pi / 2 + 1e-12
        assert torch.allclose(S.axis_angle_to_matrix(S.euler_to_axis_angle(e, order)), R, atol=1e-12)
    # Intrinsic order: R = R_y(a) R_x(b) R_z(c).
    def rot(axis, t):
        v = torch.zeros(3, dtype=F64)
        v[axis] = t
        return S.axis_angle_to_matrix(v)
    e = torch.tensor([0.3, -0.5, 0.9], dtype=F64)
    assert torch.allclose(S.axis_angle_to_matrix(S.euler_to_axis_angle(e, "YXZ")), rot(1, 0.3) @ rot(0, -0.5) @ rot(2, 0.9))
    for axis in range(3):
        st = S.axis_angle_to_swing_twist(aa, axis)
        assert torch.allclose(S.axis_angle_to_matrix(S.swing_twist_to_axis_angle(st, axis)), R, atol=1e-12)
        # The swing alone carries the twist axis to where the full rotation does.
        swing = st.clone()
        swing[:, axis] = 0
        assert torch.allclose(S.axis_angle_to_matrix(swing)[:, :, axis], R[:, :, axis], atol=1e-12)
    with pytest.raises(ValueError, match="Euler order"):
        S.euler_to_axis_angle(e, "XXZ")


# ------------------------------------------------------------------------------------- joint limits


def test_limits_table_mirrored_and_documented():
    assert set(S.POSE_LIMITS_DEG) == set(SMPL_JOINT_NAMES[1:])
    for name, lim in S.POSE_LIMITS_DEG.items():
        assert all(lo < hi for lo, hi in lim), name
        if name.startswith("left"):
            (x, y, z), (rx, ry, rz) = lim, S.POSE_LIMITS_DEG[name.replace("left", "right")]
            assert rx == x and ry == (-y[1], -y[0]) and rz == (-z[1], -z[0]), name
    # The module docstring's table lists the same numbers.
    rows = re.findall(r"^(\w+) \[([xyz])\]\s+(\S+) \.\. (\S+)\s+(\S+) \.\. (\S+)\s+(\S+) \.\. (\S+)\s*$", S.__doc__, re.M)
    assert len(rows) == 14
    for base, axis, *vals in rows:
        name = base if base in S.POSE_LIMITS_DEG else f"left_{base}"
        assert "xyz"[S.TWIST_AXIS[name]] == axis
        assert S.POSE_LIMITS_DEG[name] == tuple(zip(map(int, vals[::2]), map(int, vals[1::2]))), name
    lo, hi = S.pose_limits(dtype=F64)
    assert lo.shape == hi.shape == (23, 3) and torch.all(lo < hi)


def test_sign_conventions_by_forward_kinematics(layer):
    rest = fk(layer, torch.zeros(1, 72, dtype=F64))[0]

    def moved(joint, **p):
        full = pose(**p)
        return fk(layer, full)[0, J[joint]] - rest[J[joint]], bool(S.check_pose_limits(full))

    # Knee flexion (+x) moves the ankle backwards and up; a knee bent the other way is out of limits.
    d, ok = moved("left_ankle", left_knee=(90, 0, 0))
    assert ok and d[2] < -0.3 and d[1] > 0.3
    d, ok = moved("right_ankle", right_knee=(60, 0, 0))
    assert ok and d[2] < -0.2
    assert not moved("left_ankle", left_knee=(-30, 0, 0))[1]
    # Elbow flexion (left -y, right +y) brings the wrist to the front.
    for side, sign in (("left", -1), ("right", 1)):
        d, ok = moved(f"{side}_wrist", **{f"{side}_elbow": (0, 90 * sign, 0)})
        assert ok and d[2] > 0.2 and abs(d[1]) < 0.02
        assert not moved(f"{side}_wrist", **{f"{side}_elbow": (0, -60 * sign, 0)})[1]
    # Hip flexion (-x) brings the knee forwards; abduction (left +z, right -z) outwards.
    d, ok = moved("left_knee", left_hip=(-90, 0, 0))
    assert ok and d[2] > 0.3
    assert not moved("left_knee", left_hip=(60, 0, 0))[1]
    for side, sign in (("left", 1), ("right", -1)):
        d, ok = moved(f"{side}_knee", **{f"{side}_hip": (0, 0, 30 * sign)})
        assert ok and d[0] * sign > 0.15
    # Shoulder: left +z / right -z raises the arm, left -y / right +y brings it forwards.
    for side, sign in (("left", 1), ("right", -1)):
        d, ok = moved(f"{side}_elbow", **{f"{side}_shoulder": (0, 0, 60 * sign)})
        assert ok and d[1] > 0.15
        d, ok = moved(f"{side}_elbow", **{f"{side}_shoulder": (0, -60 * sign, 0)})
        assert ok and d[2] > 0.15
        d, ok = moved(f"{side}_elbow", **{f"{side}_shoulder": (0, 0, -90 * sign)})
        assert ok and d[1] < -0.2
    # Spine flexion (+x) bends forwards.
    d, ok = moved("neck", spine1=(30, 0, 0))
    assert ok and d[2] > 0.1


def test_check_pose_limits_shapes_and_violation():
    p = torch.cat([pose(left_knee=(40, 0, 0)), pose(left_knee=(-20, 0, 0)), pose(left_elbow=(0, 30, 0))])
    assert S.check_pose_limits(p).tolist() == [True, False, False]
    assert S.check_pose_limits(p[:, 3:]).tolist() == [True, False, False]
    assert S.check_pose_limits(p.reshape(3, 24, 3)).tolist() == [True, False, False]
    v = S.pose_limit_violation(p)
    assert v.shape == (3, 23)
    assert v[1, J["left_knee"] - 1] == pytest.approx(20, abs=1e-6)
    assert v[2, J["left_elbow"] - 1] == pytest.approx(25, abs=1e-6)
    assert v[0].max() == 0 and (v[1] > 0).sum() == 1
    assert S.check_pose_limits(p, tol_deg=25.5)[2]
    with pytest.raises(ValueError, match="poses must be"):
        S.check_pose_limits(torch.zeros(3, 70))


# ------------------------------------------------------------------------------------------ poses


def test_poses_deterministic_and_shapes():
    a, fam = S.sample_poses(64, seed=5, return_family=True)
    assert a.shape == (64, 72) and a.dtype == torch.float32 and fam.shape == (64,) and fam.dtype == torch.long
    b, fam_b = S.sample_poses(64, seed=5, return_family=True)
    assert torch.equal(a, b) and torch.equal(fam, fam_b)
    assert not torch.equal(a, S.sample_poses(64, seed=6))
    assert S.sample_poses(4, seed=5, dtype=F64).dtype == F64
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(S.sample_poses(8, seed=g1), S.sample_poses(8, seed=g2))
    empty = S.sample_poses(0, seed=1)
    assert empty.shape == (0, 72) and empty.dtype == torch.float32


def test_poses_bad_inputs():
    with pytest.raises(ValueError, match="n must be >= 0"):
        S.sample_poses(-3)
    with pytest.raises(TypeError, match="n must be an int"):
        S.sample_poses(2.5)
    with pytest.raises(ValueError, match="unknown pose family 'dancing'"):
        S.sample_poses(3, family="dancing")
    with pytest.raises(ValueError, match="unknown pose family"):
        S.sample_poses(3, family=["walking", "flying"])
    with pytest.raises(ValueError, match="at least one"):
        S.sample_poses(3, family=[])
    with pytest.raises(ValueError, match="yaw_range"):
        S.sample_poses(3, yaw_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="max_tilt_deg"):
        S.sample_poses(3, max_tilt_deg=-1)


def test_family_mixture():
    _, fam = S.sample_poses(900, seed=0, return_family=True)
    counts = torch.bincount(fam, minlength=len(S.POSE_FAMILIES))
    assert counts.min() > 60  # uniform mixture: 100 expected each
    _, fam = S.sample_poses(200, family=("walking", "running"), seed=0, return_family=True)
    assert set(fam.tolist()) == {S.POSE_FAMILIES.index("walking"), S.POSE_FAMILIES.index("running")}
    _, fam = S.sample_poses(10, family="sitting", seed=0, return_family=True)
    assert set(fam.tolist()) == {S.POSE_FAMILIES.index("sitting")}


@pytest.mark.parametrize("family", S.POSE_FAMILIES)
def test_family_within_limits_and_no_self_intersection(layer, family):
    p = S.sample_poses(500, family=family, seed=11, rest_joints=SMPL_REST_JOINTS)  # the layer's skeleton
    assert torch.isfinite(p).all()
    assert bool(S.check_pose_limits(p).all()), S.pose_limit_violation(p).max()
    upright = p.to(F64).clone()
    upright[:, :3] = 0
    hits = S.self_intersecting(fk(layer, upright))
    assert not hits.any(), f"{int(hits.sum())} self-intersecting {family} samples"


def test_yaw_covers_circle_and_bodies_stay_upright():
    p = S.sample_poses(2000, seed=1, dtype=F64)
    R = S.axis_angle_to_matrix(p[:, :3])
    facing, up = R[:, :, 2], R[:, :, 1]
    yaw = torch.atan2(facing[:, 0], facing[:, 2])
    hist = torch.histc(yaw, bins=8, min=-math.pi, max=math.pi)
    assert hist.min() > 150  # 250 expected per 45-degree bin
    assert up[:, 1].min() >= math.cos(math.radians(15)) ** 2 - 1e-9
    assert up[:, 1].min() < math.cos(math.radians(10))  # tilted at all
    fixed = S.sample_poses(50, seed=1, yaw_range=(0.0, 0.0), max_tilt_deg=0.0, dtype=F64)
    assert fixed[:, :3].abs().max() < 1e-12


def test_gait_swings_opposite_arm_and_leg():
    p = S.sample_poses(400, family="walking", seed=2, dtype=F64, avoid_self_intersection=False)
    body = p[:, 3:].reshape(-1, 23, 3)
    st = S.axis_angle_to_swing_twist(body, torch.tensor([S.TWIST_AXIS[n] for n in SMPL_JOINT_NAMES[1:]]))
    hip_flex = -st[:, J["left_hip"] - 1, 0]
    arm_forward = -st[:, J["left_shoulder"] - 1, 1]
    other_hip = -st[:, J["right_hip"] - 1, 0]
    assert torch.corrcoef(torch.stack([hip_flex, arm_forward]))[0, 1] < -0.7
    assert torch.corrcoef(torch.stack([hip_flex, other_hip]))[0, 1] < -0.7


def test_sitting_knees_in_front_of_hips(layer):
    p = S.sample_poses(200, family="sitting", seed=3, yaw_range=(0.0, 0.0), max_tilt_deg=0.0)
    j = fk(layer, p)
    for side in ("left", "right"):
        assert (j[:, J[f"{side}_knee"], 2] - j[:, J[f"{side}_hip"], 2] > 0.2).all()
        assert (j[:, J[f"{side}_knee"], 1] - j[:, J[f"{side}_hip"], 1] > -0.15).all()  # thighs roughly level


def test_arms_raised_wrists_above_head(layer):
    p = S.sample_poses(200, family="arms_raised", seed=4, yaw_range=(0.0, 0.0), max_tilt_deg=0.0)
    j = fk(layer, p)
    head = j[:, J["head"], 1]
    assert (j[:, J["left_wrist"], 1] > head + 0.1).all() and (j[:, J["right_wrist"], 1] > head + 0.1).all()


def test_rest_joints_option(layer):
    rest = fk(layer, torch.zeros(1, 72, dtype=F64))[0]
    a = S.sample_poses(50, family="crouching", seed=7, rest_joints=rest)
    assert a.shape == (50, 72)
    with pytest.raises(ValueError, match="rest_joints"):
        S.sample_poses(5, rest_joints=torch.zeros(23, 3))


# ---------------------------------------------------------------------------------- self-intersection


def test_segment_distance_exact():
    g = torch.Generator().manual_seed(0)
    p0, p1, q0, q1 = torch.randn(4, 1500, 3, generator=g, dtype=F64)
    q1[:100] = q0[:100] + 0.7 * (p1[:100] - p0[:100])  # parallel
    q1[100:150] = q0[100:150] - 0.5 * (p1[100:150] - p0[100:150])  # anti-parallel
    p1[150:200] = p0[150:200]  # a point against a segment
    q1[200:250] = q0[200:250]
    p1[250:260], q1[250:260] = p0[250:260], q0[250:260]  # two points
    d = S.segment_distance(p0, p1, q0, q1)
    t = torch.linspace(0, 1, 801, dtype=F64)
    P = p0[:, None] + t[None, :, None] * (p1 - p0)[:, None]
    Q = q0[:, None] + t[None, :, None] * (q1 - q0)[:, None]
    # in chunks: all 1500 pairs at once would hold 1500 x 801 x 801 distances (7.7 GB)
    brute = torch.cat([torch.cdist(P[i:i + 50], Q[i:i + 50]).amin((-1, -2)) for i in range(0, P.shape[0], 50)])
    assert (d <= brute + 1e-12).all() and (brute - d).max() < 2e-3
    # Closed forms: crossing segments, collinear disjoint ones, parallel offset ones.
    e = lambda *v: torch.tensor(v, dtype=F64)
    assert S.segment_distance(e(-1, 0, 0), e(1, 0, 0), e(0, -1, 0.3), e(0, 1, 0.3)).item() == pytest.approx(0.3)
    assert S.segment_distance(e(0, 0, 0), e(1, 0, 0), e(3, 0, 0), e(5, 0, 0)).item() == pytest.approx(2.0)
    assert S.segment_distance(e(0, 0, 0), e(1, 0, 0), e(0.5, 2, 0), e(4, 2, 0)).item() == pytest.approx(2.0)


def test_capsules_and_rest_pose():
    joints = torch.tensor(SMPL_REST_JOINTS)[None]
    a, b, r = S.limb_capsules(joints)
    assert a.shape == b.shape == (1, len(S.CAPSULES), 3) and r.shape == (len(S.CAPSULES),)
    assert not S.self_intersecting(joints).any()
    hit, clearance, pairs = S.self_intersecting(joints, return_clearance=True)
    assert clearance.shape == (1, len(pairs)) and clearance.min() > 0.01
    names = {(S.CAPSULE_NAMES[i], S.CAPSULE_NAMES[j]) for i, j in pairs.tolist()}
    assert ("left_thigh", "right_thigh") in names and ("belly", "left_forearm") in names
    assert ("left_thigh", "left_shin") not in names and ("left_forearm", "left_palm") not in names
    # Fat enough capsules make the T-pose intersect; extra joints beyond 24 are ignored.
    assert S.self_intersecting(joints, radii={"left_thigh": 0.09, "right_thigh": 0.09}).all()
    assert S.self_intersecting(joints, radii=[0.3] * len(S.CAPSULES)).all()
    assert not S.self_intersecting(torch.cat([joints, torch.zeros(1, 21, 3, dtype=joints.dtype)], 1)).any()
    assert S.self_intersecting(joints, margin=0.05).all()
    with pytest.raises(ValueError, match="unknown capsule"):
        S.self_intersecting(joints, radii={"tail": 0.1})
    with pytest.raises(ValueError, match="joints must be"):
        S.limb_capsules(joints[:, :20])


def test_constructed_self_intersections_detected(layer):
    # Left arm hanging, turned inwards and flexed: the forearm goes through the belly.
    hand_in_torso = pose(left_shoulder=(90, 0, -90), left_elbow=(0, -100, 0))
    # Thighs crossed by adducting both hips.
    crossed = pose(left_hip=(0, 0, -40), right_hip=(0, 0, 40))
    fine = pose(left_knee=(30, 0, 0))
    j = fk(layer, torch.cat([hand_in_torso, crossed, fine]))
    assert S.self_intersecting(j).tolist() == [True, True, False]
    _, clearance, pairs = S.self_intersecting(j, return_clearance=True)
    worst = [tuple(S.CAPSULE_NAMES[k] for k in pairs[i]) for i in clearance.argmin(-1).tolist()]
    assert worst[0] in {("belly", "left_forearm"), ("chest", "left_forearm")}
    assert worst[1] == ("left_thigh", "right_thigh")


@pytest.mark.parametrize("family", ["walking", "sitting", "crouching", "reaching"])
def test_default_samples_clear_on_the_default_model(family):
    """Without rest_joints the sampler avoids self-intersection on the bundled model's skeleton."""
    model = smplfast.SMPL(dtype=F64)
    p = S.sample_poses(200, family=family, seed=5, dtype=F64)
    p[:, :3] = 0
    with torch.no_grad():
        joints = model(global_orient=p[:, :3], body_pose=p[:, 3:], joints_only=True).joints[:, :24]
    assert not S.self_intersecting(joints).any()
