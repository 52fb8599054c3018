"""Random SMPL shapes and plausible SMPL poses, with a coarse capsule self-intersection test.

Frames and conventions
----------------------
The body model's frame is SMPL's: y up, the body facing +z, the model's left side on +x, metres.
Every joint's rest frame is aligned with these axes, and a pose vector holds, per joint, the
axis-angle rotation of that joint relative to its parent (SMPL's ``full_pose``: 3 values of global
orientation for the pelvis, then 69 for the 23 body joints in :data:`SMPL_JOINT_NAMES` order).
A camera that looks along -z at a body with zero global orientation sees the body's front.

Joint limits: swing-twist components
------------------------------------
Each body joint has a *twist axis*, the local axis along the bone it moves (``y`` for legs and
spine, ``x`` for collars and arms, ``z`` for the foot joints). A joint rotation is split as
``R = R_swing @ R_twist``: first a twist about the twist axis, then a swing whose rotation vector
is perpendicular to it (so the swing alone says where the bone points). The three limited
components of a joint are, per local axis x, y, z, the twist angle on the twist axis and the two
components of the swing rotation vector on the other two axes. For a hinge the swing component is
exactly the hinge angle. The table :data:`POSE_LIMITS_DEG` gives (min, max) in degrees per
component; right-side limits mirror the left ones (mirroring negates the y and z components).

Sign conventions (left side; the right side negates y and z; checked by forward kinematics in
the tests):

========  =====================================================================================
hip       x < 0 flexes (thigh forward), left z > 0 abducts, left y > 0 turns the toes out
knee      x > 0 flexes (ankle moves backwards, -z); hinge, tiny y and z
ankle     x > 0 plantar-flexes (toes down); left z < 0 inverts (sole inward)
foot      x < 0 lifts the toes
spine     spine1/2/3, neck, head: x > 0 bends forward, z lateral bend, y twist
collar    left z > 0 shrugs (shoulder up), left y < 0 protracts (shoulder forward)
shoulder  left z > 0 raises the arm (-90: hanging), left y < 0 brings it forward, x > 0 inwards
elbow     left y < 0 flexes (hinge), right y > 0; from the T-pose the wrist moves to +z
wrist     left z < 0 flexes (hand towards the palm, downwards in the T-pose), y deviation
hand      left z < 0 curls the fingers downwards in the T-pose
========  =====================================================================================

Ranges (degrees, left side; the right side mirrors y and z; twist axis in brackets):

==============  =============  =============  =============
joint           x              y              z
==============  =============  =============  =============
hip [y]         -120 .. 20     -40 .. 40      -20 .. 45
knee [y]        0 .. 150       -10 .. 10      -5 .. 5
ankle [z]       -25 .. 45      -20 .. 20      -30 .. 20
foot [z]        -30 .. 20      -5 .. 5        -5 .. 5
spine1 [y]      -20 .. 30      -20 .. 20      -15 .. 15
spine2 [y]      -15 .. 25      -15 .. 15      -15 .. 15
spine3 [y]      -15 .. 25      -15 .. 15      -15 .. 15
neck [y]        -35 .. 40      -40 .. 40      -25 .. 25
head [y]        -25 .. 25      -30 .. 30      -20 .. 20
collar [x]      -10 .. 10      -20 .. 15      -10 .. 30
shoulder [x]    -70 .. 70      -130 .. 50     -100 .. 100
elbow [x]       -40 .. 40      -150 .. 5      -10 .. 10
wrist [x]       -40 .. 40      -20 .. 35      -70 .. 60
hand [x]        -10 .. 10      -15 .. 15      -45 .. 15
==============  =============  =============  =============

Pose families
-------------
:data:`POSE_FAMILIES` are parametrised templates with random variation: ``standing``,
``walking`` and ``running`` (a gait phase drives opposite arm and leg swing and the swing leg's
knee bend), ``sitting``, ``crouching``, ``reaching`` (one or both arms towards a random
direction, torso turning with them), ``arms_raised``, and the neutral ``t_pose`` and ``a_pose``.
Every sample gets a little extra noise and is then clipped into the joint limits.

Global orientation: ``R = R_y(yaw) @ R_x(pitch) @ R_z(roll)``: the body stays upright in the
model's frame, turned by a yaw drawn uniformly from ``yaw_range`` (all directions by default) and
tilted by pitch and roll drawn uniformly from +-``max_tilt_deg`` (15 degrees by default).

Self-intersection
-----------------
:func:`self_intersecting` models the body as capsules (:data:`CAPSULES`: one per bone of the
24-joint skeleton plus head, finger and toe tips) and reports a sample when two capsules that are
not neighbours overlap. Neighbours are exempt: capsules whose end joints are at most one bone
apart in the skeleton (sharing a joint, parent and grandparent bones, siblings), torso capsules
among themselves, and the attachments thighs - belly and upper arms - chest and upper chest.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

# The rotation conversions live in smplfast.geometry; they stay importable from here.
from ..geometry import (axis_angle_to_euler, axis_angle_to_matrix, axis_angle_to_swing_twist, euler_to_axis_angle,
                        matrix_to_axis_angle, swing_twist_to_axis_angle)
from .random_model import SMPL_JOINT_NAMES, SMPL_PARENTS, SMPL_REST_JOINTS

__all__ = [
    "sample_betas",
    "sample_poses",
    "POSE_FAMILIES",
    "POSE_LIMITS_DEG",
    "TWIST_AXIS",
    "pose_limits",
    "pose_limit_violation",
    "check_pose_limits",
    "euler_to_axis_angle",
    "axis_angle_to_euler",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "swing_twist_to_axis_angle",
    "axis_angle_to_swing_twist",
    "CAPSULES",
    "CAPSULE_NAMES",
    "limb_capsules",
    "segment_distance",
    "self_intersecting",
]

SeedLike = Union[None, int, torch.Generator, np.random.Generator]

# ---------------------------------------------------------------------------------------- joint limits

#: Twist axis (0 = x, 1 = y, 2 = z) of each of the 23 body joints, by name.
TWIST_AXIS: Dict[str, int] = {
    name: (2 if name.endswith(("ankle", "foot")) else 0 if name.endswith(("collar", "shoulder", "elbow", "wrist", "hand")) else 1)
    for name in SMPL_JOINT_NAMES[1:]
}

#: Per body joint: ((x_min, x_max), (y_min, y_max), (z_min, z_max)) in degrees, limits on the
#: swing-twist components described in the module docstring.
POSE_LIMITS_DEG: Dict[str, Tuple[Tuple[float, float], ...]] = {
    "left_hip": ((-120, 20), (-40, 40), (-20, 45)),
    "right_hip": ((-120, 20), (-40, 40), (-45, 20)),
    "spine1": ((-20, 30), (-20, 20), (-15, 15)),
    "left_knee": ((0, 150), (-10, 10), (-5, 5)),
    "right_knee": ((0, 150), (-10, 10), (-5, 5)),
    "spine2": ((-15, 25), (-15, 15), (-15, 15)),
    "left_ankle": ((-25, 45), (-20, 20), (-30, 20)),
    "right_ankle": ((-25, 45), (-20, 20), (-20, 30)),
    "spine3": ((-15, 25), (-15, 15), (-15, 15)),
    "left_foot": ((-30, 20), (-5, 5), (-5, 5)),
    "right_foot": ((-30, 20), (-5, 5), (-5, 5)),
    "neck": ((-35, 40), (-40, 40), (-25, 25)),
    "left_collar": ((-10, 10), (-20, 15), (-10, 30)),
    "right_collar": ((-10, 10), (-15, 20), (-30, 10)),
    "head": ((-25, 25), (-30, 30), (-20, 20)),
    "left_shoulder": ((-70, 70), (-130, 50), (-100, 100)),
    "right_shoulder": ((-70, 70), (-50, 130), (-100, 100)),
    "left_elbow": ((-40, 40), (-150, 5), (-10, 10)),
    "right_elbow": ((-40, 40), (-5, 150), (-10, 10)),
    "left_wrist": ((-40, 40), (-20, 35), (-70, 60)),
    "right_wrist": ((-40, 40), (-35, 20), (-60, 70)),
    "left_hand": ((-10, 10), (-15, 15), (-45, 15)),
    "right_hand": ((-10, 10), (-15, 15), (-15, 45)),
}

_BODY = SMPL_JOINT_NAMES[1:]
_TWIST = torch.tensor([TWIST_AXIS[n] for n in _BODY])
_LIMITS = torch.tensor([POSE_LIMITS_DEG[n] for n in _BODY], dtype=torch.float64)  # (23, 3, 2)
# Left-to-right mirroring of swing-twist components (and of axis-angle vectors): negate y and z.
_MIRROR = torch.tensor(
    [[1.0, -1.0, -1.0] if n.startswith("right") else [1.0, 1.0, 1.0] for n in SMPL_JOINT_NAMES], dtype=torch.float64
)


def pose_limits(dtype=torch.float32, device=None) -> Tuple[Tensor, Tensor]:
    """(lower, upper), each (23, 3) in radians: :data:`POSE_LIMITS_DEG` in body-joint order."""
    lim = torch.deg2rad(_LIMITS).to(dtype=dtype, device=device)
    return lim[..., 0], lim[..., 1]


def _body_pose(poses: Tensor) -> Tensor:
    if not torch.is_tensor(poses):
        poses = torch.as_tensor(poses)
    if poses.dim() == 2 and poses.shape[1] in (69, 72):
        poses = poses.reshape(poses.shape[0], -1, 3)
    if poses.dim() != 3 or poses.shape[1:] not in ((23, 3), (24, 3)):
        raise ValueError(f"poses must be (N, 72), (N, 69), (N, 24, 3) or (N, 23, 3); got {tuple(poses.shape)}")
    return poses[:, -23:].to(torch.float64)


def pose_limit_violation(poses: Tensor) -> Tensor:
    """Per body joint, by how many degrees its swing-twist components leave their limits: (N, 23),
    0 inside. ``poses``: (N, 72) full poses, (N, 69) body poses, or (N, 24|23, 3)."""
    body = _body_pose(poses)
    comps = torch.rad2deg(axis_angle_to_swing_twist(body, _TWIST.to(body.device)))
    lim = _LIMITS.to(body.device)
    out = torch.maximum(lim[..., 0] - comps, comps - lim[..., 1]).clamp_min(0.0)
    return out.amax(-1)


def check_pose_limits(poses: Tensor, tol_deg: float = 0.1) -> Tensor:
    """Bool (N,): True where every body joint is within :data:`POSE_LIMITS_DEG` (+- ``tol_deg``)."""
    return (pose_limit_violation(poses) <= tol_deg).all(-1)


# ---------------------------------------------------------------------------------------- randomness


def _generator(seed: SeedLike) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError("seed: pass a CPU torch.Generator (samples are drawn on the CPU, then moved)")
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    elif isinstance(seed, np.random.Generator):
        g.manual_seed(int(seed.integers(0, 2**63 - 1)))
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        g.manual_seed(int(seed) % 2**64)
    else:
        raise TypeError(f"seed must be None, an int, a torch.Generator or a numpy Generator; got {type(seed).__name__}")
    return g


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int; got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return int(n)


def sample_betas(
    n: int,
    num_betas: int = 10,
    *,
    seed: SeedLike = None,
    truncation: Optional[float] = 3.0,
    scale: float = 1.0,
    dtype=torch.float32,
    device=None,
) -> Tensor:
    """(n, num_betas) shape coefficients ``scale * z``, z ~ N(0, I) truncated at +-``truncation``.

    Values beyond the truncation are redrawn (not clipped), so each coefficient follows the
    truncated normal exactly; ``truncation=None`` disables it. The same ``seed`` gives the same
    values on any machine (drawn on the CPU in float64, then cast and moved).
    """
    n = _check_n(n)
    if isinstance(num_betas, bool) or not isinstance(num_betas, (int, np.integer)) or num_betas < 0:
        raise ValueError(f"num_betas must be an int >= 0; got {num_betas!r}")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0 or None; got {truncation}")
    g = _generator(seed)
    z = torch.randn(n, int(num_betas), generator=g, dtype=torch.float64)
    if truncation is not None:
        bad = z.abs() > truncation
        while bool(bad.any()):
            z[bad] = torch.randn(int(bad.sum()), generator=g, dtype=torch.float64)
            bad = z.abs() > truncation
    return (scale * z).to(dtype=dtype, device=device)


# -------------------------------------------------------------------------------------- pose families

#: Names accepted by :func:`sample_poses` ``family``; ``return_family`` indexes this tuple.
POSE_FAMILIES: Tuple[str, ...] = (
    "standing", "walking", "running", "sitting", "crouching", "reaching", "arms_raised", "t_pose", "a_pose",
)

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
_SIDES = ("left", "right")


class _Draw:
    """Uniform draws from one generator, in a fixed order (float64, CPU)."""

    def __init__(self, k: int, g: torch.Generator):
        self.k, self.g = k, g

    def __call__(self, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(self.k, generator=self.g, dtype=torch.float64)

    def normal(self, *shape) -> Tensor:
        return torch.randn(self.k, *shape, generator=self.g, dtype=torch.float64)


# Templates write swing-twist components in degrees into P (k, 24, 3) in the *left* convention
# for both sides; the right side is mirrored afterwards.


def _leg(P, side, flex, abd, twist, knee, ankle):
    P[:, _J[f"{side}_hip"]] = torch.stack([-flex, twist, abd], -1)
    P[:, _J[f"{side}_knee"], 0] = knee
    P[:, _J[f"{side}_ankle"], 0] = ankle


def _arm_dir(P, side, d, twist, elbow):
    """Shoulder swing that points the upper arm along ``d`` (k, 3) (left convention, parent frame)."""
    d = d / d.norm(dim=-1, keepdim=True)
    angle = torch.rad2deg(torch.acos(d[:, 0].clamp(-1.0, 1.0)))
    axis = torch.stack([torch.zeros_like(angle), -d[:, 2], d[:, 1]], -1)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    P[:, _J[f"{side}_shoulder"]] = angle[:, None] * axis + torch.stack(
        [twist, torch.zeros_like(twist), torch.zeros_like(twist)], -1
    )
    P[:, _J[f"{side}_elbow"], 1] = -elbow


def _arm(P, side, abd, flex, twist, elbow):
    """Arm from hanging: abduct ``abd`` degrees in the frontal plane, then flex ``flex`` forwards."""
    a, f = torch.deg2rad(abd), torch.deg2rad(flex)
    d = torch.stack([torch.sin(a), -torch.cos(a) * torch.cos(f), torch.cos(a) * torch.sin(f)], -1)
    _arm_dir(P, side, d, twist, elbow)


def _spine(P, flex, lateral, twist):
    for name, w in (("spine1", 0.4), ("spine2", 0.3), ("spine3", 0.3)):
        P[:, _J[name]] = w * torch.stack([flex, twist, lateral], -1)


def _head(P, flex, lateral, twist):
    for name, w in (("neck", 0.6), ("head", 0.4)):
        P[:, _J[name]] = w * torch.stack([flex, twist, lateral], -1)


def _extremities(P, u):
    """Relaxed wrists, hands, feet and collars (added to what the template set)."""
    for side in _SIDES:
        P[:, _J[f"{side}_wrist"]] += torch.stack([u(-20, 20), u(-10, 15), u(-10, 25)], -1)
        P[:, _J[f"{side}_hand"], 2] += u(-20, 5)
        P[:, _J[f"{side}_foot"], 0] += u(-10, 10)
        P[:, _J[f"{side}_ankle"]] += torch.stack([torch.zeros(u.k, dtype=torch.float64), u(-8, 8), u(-8, 8)], -1)
        P[:, _J[f"{side}_collar"]] += torch.stack([torch.zeros(u.k, dtype=torch.float64), u(-5, 5), u(-5, 8)], -1)


def _relaxed_legs(P, u, flex=(-5, 10), knee=(0, 12)):
    for side in _SIDES:
        _leg(P, side, u(*flex), u(0, 8), u(-10, 15), u(*knee), u(-5, 8))


def _standing(P, u):
    _relaxed_legs(P, u)
    for side in _SIDES:
        _arm(P, side, u(10, 25), u(-15, 20), u(-25, 10), u(0, 30))
    _spine(P, u(-5, 10), u(-5, 5), u(-8, 8))
    _head(P, u(-10, 15), u(-8, 8), u(-25, 25))


def _gait(P, u, run: bool):
    phase, amp = u(0, 2 * math.pi), u(0.7, 1.2) if run else u(0.6, 1.2)
    for side, ph in (("left", phase), ("right", phase + math.pi)):
        s, c = torch.sin(ph), torch.cos(ph)
        if run:
            hip, knee = 15 + 40 * amp * s, 20 + 85 * amp * c.clamp_min(0) ** 1.5 + u(0, 10)
            arm_flex, elbow, abd = -35 * amp * s + u(-5, 5), u(70, 105), u(10, 25)
        else:
            hip, knee = 5 + 25 * amp * s, 5 + 55 * amp * c.clamp_min(0) ** 2 + u(0, 8)
            arm_flex, elbow, abd = -22 * amp * s + u(-5, 5), 10 + 25 * amp * (-s).clamp_min(0) + u(0, 10), u(10, 22)
        _leg(P, side, hip, u(0, 6), u(-5, 10), knee, 10 * amp * torch.sin(ph - 0.5))
        _arm(P, side, abd, arm_flex, u(-20, 5), elbow)
    _spine(P, u(5, 15) if run else u(0, 8), u(-4, 4), -8 * amp * torch.sin(phase))
    _head(P, u(-15, 5) if run else u(-10, 10), u(-5, 5), u(-10, 10))


def _walking(P, u):
    _gait(P, u, run=False)


def _running(P, u):
    _gait(P, u, run=True)


def _sitting(P, u):
    for side in _SIDES:
        _leg(P, side, u(70, 100), u(0, 20), u(-15, 15), u(65, 115), u(-15, 20))
        _arm(P, side, u(15, 35), u(0, 35), u(-25, 5), u(50, 100))
    _spine(P, u(-5, 20), u(-5, 5), u(-10, 10))
    _head(P, u(-10, 20), u(-8, 8), u(-25, 25))


def _crouching(P, u):
    for side in _SIDES:
        _leg(P, side, u(85, 115), u(10, 35), u(-10, 20), u(110, 145), u(-25, -5))
        _arm(P, side, u(20, 40), u(50, 90), u(-25, 5), u(0, 30))
    _spine(P, u(10, 35), u(-5, 5), u(-8, 8))
    _head(P, u(-25, 0), u(-5, 5), u(-15, 15))


def _reaching(P, u):
    _relaxed_legs(P, u, flex=(-5, 20), knee=(0, 25))
    which = u(0, 1)  # < 0.4: left arm, < 0.8: right arm, else both
    twist = torch.zeros(u.k, dtype=torch.float64)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        reach = (which < 0.4) if side == "left" else (which >= 0.4) & (which < 0.8)
        reach = reach | (which >= 0.8)
        # Target direction: azimuth 0 = sideways, 90 = straight ahead, 110 = across the body.
        az, el = torch.deg2rad(u(-20, 110)), torch.deg2rad(u(-40, 70))
        d_reach = torch.stack([torch.cos(el) * torch.cos(az), torch.sin(el), torch.cos(el) * torch.sin(az)], -1)
        a, f = torch.deg2rad(u(10, 25)), torch.deg2rad(u(-15, 20))
        d_rest = torch.stack([torch.sin(a), -torch.cos(a) * torch.cos(f), torch.cos(a) * torch.sin(f)], -1)
        _arm_dir(P, side, torch.where(reach[:, None], d_reach, d_rest), u(-30, 30),
                 torch.where(reach, u(0, 35), u(0, 30)))
        twist = twist + torch.where(reach & (which < 0.8), sign * u(0, 20), torch.zeros_like(twist))
    _spine(P, u(0, 25), u(-10, 10), twist)
    _head(P, u(-15, 15), u(-8, 8), twist)


def _arms_raised(P, u):
    _relaxed_legs(P, u)
    for side in _SIDES:
        _arm(P, side, u(130, 160), u(-20, 10), u(-30, 20), u(0, 40))
        P[:, _J[f"{side}_collar"], 2] = u(10, 20)
    _spine(P, u(-10, 5), u(-5, 5), u(-8, 8))
    _head(P, u(-20, 10), u(-5, 5), u(-15, 15))


def _t_pose(P, u):
    for side in _SIDES:
        _leg(P, side, u(-3, 3), u(0, 5), u(-5, 5), u(0, 5), u(-3, 3))
        _arm(P, side, u(85, 95), u(-5, 5), u(-10, 10), u(0, 10))


def _a_pose(P, u):
    for side in _SIDES:
        _leg(P, side, u(-3, 3), u(0, 8), u(-5, 5), u(0, 5), u(-3, 3))
        _arm(P, side, u(35, 55), u(-5, 10), u(-10, 10), u(0, 15))


_TEMPLATES = {
    "standing": _standing, "walking": _walking, "running": _running, "sitting": _sitting,
    "crouching": _crouching, "reaching": _reaching, "arms_raised": _arms_raised,
    "t_pose": _t_pose, "a_pose": _a_pose,
}
_NOISE_DEG = 2.0
_REDRAW_MARGIN = 0.01  # metres of extra clearance asked of redrawn samples (skeletons differ a little)
_MAX_REDRAWS = 100


def _body_from_template(name: str, k: int, g: torch.Generator) -> Tensor:
    """(k, 23, 3) axis-angle body poses of one family, within the limits (float64)."""
    u = _Draw(k, g)
    P = torch.zeros(k, 24, 3, dtype=torch.float64)
    _TEMPLATES[name](P, u)
    if name not in ("t_pose", "a_pose"):
        _extremities(P, u)
    P = P + _NOISE_DEG * u.normal(24, 3)
    for side in _SIDES:  # hips only abduct: adduction from noise alone would cross the thighs
        P[:, _J[f"{side}_hip"], 2] = P[:, _J[f"{side}_hip"], 2].clamp_min(0.0)
    comps = (P * _MIRROR)[:, 1:]
    comps = torch.maximum(torch.minimum(comps, _LIMITS[..., 1]), _LIMITS[..., 0])
    return swing_twist_to_axis_angle(torch.deg2rad(comps), _TWIST)


def _forward_kinematics(body: Tensor, rest: Tensor) -> Tensor:
    """Joints (k, 24, 3) of body poses (k, 23, 3) on the rest skeleton ``rest`` (24, 3), root fixed."""
    rot = axis_angle_to_matrix(body)
    glob = [torch.eye(3, dtype=body.dtype).expand(body.shape[0], 3, 3)]
    pos = [rest[0].expand(body.shape[0], 3)]
    for j in range(1, 24):
        p = int(SMPL_PARENTS[j])
        pos.append(pos[p] + glob[p] @ (rest[j] - rest[p]))
        glob.append(glob[p] @ rot[:, j - 1])
    return torch.stack(pos, 1)


def _sample_family(name: str, k: int, g: torch.Generator, rest: Optional[Tensor]) -> Tensor:
    """(k, 23, 3) body poses of one family; with a rest skeleton, intersecting draws are redrawn."""
    body = _body_from_template(name, k, g)
    for _ in range(_MAX_REDRAWS if rest is not None else 0):
        bad = torch.nonzero(self_intersecting(_forward_kinematics(body, rest), margin=_REDRAW_MARGIN)).flatten()
        if len(bad) == 0:
            break
        body[bad] = _body_from_template(name, len(bad), g)
    return body


def _family_list(family) -> Tuple[str, ...]:
    if family is None:
        return POSE_FAMILIES
    names = (family,) if isinstance(family, str) else tuple(family)
    if not names:
        raise ValueError("family: give at least one family name")
    for name in names:
        if name not in _TEMPLATES:
            raise ValueError(f"unknown pose family {name!r}; choose from {POSE_FAMILIES}")
    return names


@functools.lru_cache(maxsize=1)
def _default_rest_joints() -> np.ndarray:
    """Rest joints of the bundled default model's mean shape (SMPL's rough skeleton if it is missing)."""
    from .default_model import load_default_model

    try:
        m = load_default_model()
    except FileNotFoundError:
        return SMPL_REST_JOINTS
    return m.J_regressor @ m.v_template


def sample_poses(
    n: int,
    *,
    family: Union[None, str, Sequence[str]] = None,
    seed: SeedLike = None,
    yaw_range: Tuple[float, float] = (-math.pi, math.pi),
    max_tilt_deg: float = 15.0,
    avoid_self_intersection: bool = True,
    rest_joints: Optional[Tensor] = None,
    dtype=torch.float32,
    device=None,
    return_family: bool = False,
):
    """(n, 72) plausible SMPL poses in axis-angle: global orientation (3) then body pose (69).

    ``family``: one of :data:`POSE_FAMILIES`, a sequence of them (each sample picks one uniformly),
    or None for all. Body poses respect :data:`POSE_LIMITS_DEG`. The global orientation is
    ``R_y(yaw) @ R_x(pitch) @ R_z(roll)``: yaw uniform in ``yaw_range`` (radians, [lo, hi)), pitch
    and roll uniform in +-``max_tilt_deg``. The same ``seed`` gives the same poses on any machine.

    With ``avoid_self_intersection`` (default), a draw whose limbs intersect (:func:`self_intersecting`
    with 1 cm of extra clearance) on the rest skeleton ``rest_joints`` (24, 3) (default: the
    bundled default model's mean shape; pass a model's own rest joints to match it) is redrawn, at most
    100 times per sample. With ``return_family=True`` also returns (n,) int64 indices into
    :data:`POSE_FAMILIES`.
    """
    n = _check_n(n)
    names = _family_list(family)
    lo, hi = (float(v) for v in yaw_range)
    if not hi >= lo:
        raise ValueError(f"yaw_range must be (lo, hi) with lo <= hi; got {yaw_range}")
    if not 0 <= max_tilt_deg <= 90:
        raise ValueError(f"max_tilt_deg must be in [0, 90]; got {max_tilt_deg}")
    rest = None
    if avoid_self_intersection:
        rest = torch.as_tensor(_default_rest_joints() if rest_joints is None else rest_joints).detach().cpu().to(torch.float64)
        if rest.shape != (24, 3):
            raise ValueError(f"rest_joints must be (24, 3); got {tuple(rest.shape)}")
    g = _generator(seed)
    choice = torch.randint(len(names), (n,), generator=g)
    body = torch.zeros(n, 23, 3, dtype=torch.float64)
    fam = torch.zeros(n, dtype=torch.long)
    for i, name in enumerate(names):
        idx = torch.nonzero(choice == i).flatten()
        fam[idx] = POSE_FAMILIES.index(name)
        if len(idx):
            body[idx] = _sample_family(name, len(idx), g, rest)
    u = _Draw(n, g)
    tilt = math.radians(max_tilt_deg)
    ypr = torch.stack([u(lo, hi), u(-tilt, tilt), u(-tilt, tilt)], -1)
    glob = euler_to_axis_angle(ypr, "YXZ")
    poses = torch.cat([glob, body.reshape(n, 69)], dim=1).to(dtype=dtype, device=device)
    return (poses, fam.to(device)) if return_family else poses


# ---------------------------------------------------------------------------------- self-intersection

# Points 24..29 extrapolate beyond head, hands and toes: j + s * (j - parent(j)), as (j, s).
_TIPS = {24: (15, 0.5), 25: (15, 1.3), 26: (22, 1.0), 27: (23, 1.0), 28: (10, 0.5), 29: (11, 0.5)}

#: (name, start point, end point, radius in metres). Points 0..23 are SMPL's joints; 24..29 are
#: extrapolated as ``j + s * (j - parent(j))``: the head capsule runs from s = 0.5 to s = 1.3
#: beyond the head joint, fingers reach s = 1 beyond the hand joints, toes s = 0.5 beyond the feet.
CAPSULES: Tuple[Tuple[str, int, int, float], ...] = (
    ("left_pelvis", 0, 1, 0.08), ("right_pelvis", 0, 2, 0.08), ("lower_back", 0, 3, 0.10),
    ("left_thigh", 1, 4, 0.055), ("right_thigh", 2, 5, 0.055), ("belly", 3, 6, 0.11),
    ("left_shin", 4, 7, 0.05), ("right_shin", 5, 8, 0.05), ("chest", 6, 9, 0.12),
    ("left_foot", 7, 10, 0.04), ("right_foot", 8, 11, 0.04), ("upper_chest", 9, 12, 0.10),
    ("left_clavicle", 9, 13, 0.06), ("right_clavicle", 9, 14, 0.06), ("neck", 12, 15, 0.05),
    ("left_shoulder", 13, 16, 0.05), ("right_shoulder", 14, 17, 0.05),
    ("left_upper_arm", 16, 18, 0.045), ("right_upper_arm", 17, 19, 0.045),
    ("left_forearm", 18, 20, 0.04), ("right_forearm", 19, 21, 0.04),
    ("left_palm", 20, 22, 0.035), ("right_palm", 21, 23, 0.035),
    ("head", 24, 25, 0.09), ("left_fingers", 22, 26, 0.03), ("right_fingers", 23, 27, 0.03),
    ("left_toes", 10, 28, 0.03), ("right_toes", 11, 29, 0.03),
)
CAPSULE_NAMES: Tuple[str, ...] = tuple(c[0] for c in CAPSULES)
_TORSO = {
    "left_pelvis", "right_pelvis", "lower_back", "belly", "chest", "upper_chest", "neck",
    "left_clavicle", "right_clavicle", "left_shoulder", "right_shoulder",
}
_ATTACHED = {
    frozenset(p) for side in _SIDES
    for p in ((f"{side}_thigh", "belly"), (f"{side}_upper_arm", "chest"), (f"{side}_upper_arm", "upper_chest"))
}


def _checked_pairs() -> Tuple[Tensor, Tensor]:
    hops = np.full((24, 24), 24, dtype=np.int64)
    np.fill_diagonal(hops, 0)
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            hops[j, p] = hops[p, j] = 1
    for k in range(24):  # all-pairs shortest paths on the skeleton
        hops = np.minimum(hops, hops[:, k:k + 1] + hops[k:k + 1, :])
    base = list(range(24)) + [_TIPS[t][0] for t in sorted(_TIPS)]  # an extrapolated point counts as its joint
    pairs = []
    for i, (name_i, *ends_i, _) in enumerate(CAPSULES):
        for j in range(i + 1, len(CAPSULES)):
            name_j, *ends_j, _ = CAPSULES[j]
            near = min(hops[base[x], base[y]] for x in ends_i for y in ends_j) <= 1
            if near or (name_i in _TORSO and name_j in _TORSO) or frozenset((name_i, name_j)) in _ATTACHED:
                continue
            pairs.append((i, j))
    idx = torch.tensor(pairs, dtype=torch.long)
    return idx[:, 0], idx[:, 1]


_PAIR_I, _PAIR_J = _checked_pairs()


def limb_capsules(joints: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Capsule axes of :data:`CAPSULES` for joints (B, >=24, 3) (the first 24 are SMPL's skeleton).

    Returns (starts (B, S, 3), ends (B, S, 3), default radii (S,)).
    """
    if not torch.is_tensor(joints) or joints.dim() != 3 or joints.shape[1] < 24 or joints.shape[2] != 3:
        raise ValueError(f"joints must be a (B, >=24, 3) tensor; got {getattr(joints, 'shape', type(joints))}")
    j = joints[:, :24]
    tips = [j[:, k] + s * (j[:, k] - j[:, int(SMPL_PARENTS[k])]) for k, s in (_TIPS[t] for t in sorted(_TIPS))]
    j = torch.cat([j, torch.stack(tips, 1)], 1)
    a = torch.tensor([c[1] for c in CAPSULES], device=joints.device)
    b = torch.tensor([c[2] for c in CAPSULES], device=joints.device)
    radii = torch.tensor([c[3] for c in CAPSULES], dtype=joints.dtype, device=joints.device)
    return j[:, a], j[:, b], radii


def segment_distance(p0: Tensor, p1: Tensor, q0: Tensor, q1: Tensor) -> Tensor:
    """Exact closest distance between segments [p0, p1] and [q0, q1] (broadcasting (..., 3) inputs).

    Minimises |p0 + s u - q0 - t v| over s, t in [0, 1]: the unconstrained line solution for s is
    clamped, t follows from s and is clamped, and s is then recomputed from the clamped t; this
    visits the optimum of the convex problem, parallel and zero-length segments included.
    """
    u, v, w = p1 - p0, q1 - q0, p0 - q0
    a, b, c = (u * u).sum(-1), (u * v).sum(-1), (v * v).sum(-1)
    d, e = (u * w).sum(-1), (v * w).sum(-1)
    tiny = 1e-12
    den = a * c - b * b
    s = torch.where(den > tiny * a * c + tiny, (b * e - c * d) / den.clamp_min(tiny), torch.zeros_like(den))
    s = torch.where(a > tiny, s.clamp(0, 1), torch.zeros_like(s))
    t = torch.where(c > tiny, ((b * s + e) / c.clamp_min(tiny)).clamp(0, 1), torch.zeros_like(s))
    s = torch.where(a > tiny, ((b * t - d) / a.clamp_min(tiny)).clamp(0, 1), torch.zeros_like(s))
    return (w + s[..., None] * u - t[..., None] * v).norm(dim=-1)


def self_intersecting(
    joints: Tensor,
    radii: Union[None, Mapping[str, float], Sequence[float], Tensor] = None,
    *,
    margin: float = 0.0,
    return_clearance: bool = False,
):
    """Bool (B,): True where two non-neighbouring :data:`CAPSULES` overlap.

    ``joints`` (B, >=24, 3) posed joints (e.g. a layer's ``output.joints``; the first 24 are used).
    ``radii``: None for the defaults in :data:`CAPSULES`, a mapping name -> radius overriding
    some, or S radii in :data:`CAPSULE_NAMES` order. Two capsules overlap when the distance of their
    axes is below the sum of their radii plus ``margin``. With ``return_clearance=True`` also
    returns (B, P) clearances (distance minus radii) and the (P, 2) capsule index pairs checked.
    """
    starts, ends, r = limb_capsules(joints)
    if radii is not None:
        if isinstance(radii, Mapping):
            r = r.clone()
            for name, value in radii.items():
                if name not in CAPSULE_NAMES:
                    raise ValueError(f"unknown capsule {name!r}; choose from {CAPSULE_NAMES}")
                r[CAPSULE_NAMES.index(name)] = float(value)
        else:
            r = torch.as_tensor(radii, dtype=joints.dtype, device=joints.device).reshape(-1)
            if r.numel() != len(CAPSULES):
                raise ValueError(f"radii: expected {len(CAPSULES)} values; got {r.numel()}")
    i, j = _PAIR_I.to(joints.device), _PAIR_J.to(joints.device)
    dist = segment_distance(starts[:, i], ends[:, i], starts[:, j], ends[:, j])
    clearance = dist - r[i] - r[j]
    hit = (clearance < margin).any(-1)
    return (hit, clearance, torch.stack([i, j], -1)) if return_clearance else hit
