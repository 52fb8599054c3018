"""Vertex ids of SMPL's 6890-vertex mesh used as extra joints (face, feet and finger-tip keypoints).

These are the ids smplx uses for SMPL/SMPL-H, so that a 6890-vertex model gives smplx's 45 joints in
smplx's order: 24 skeleton joints, nose, right/left eye, right/left ear, left big toe, small toe, heel,
right big toe, small toe, heel, then left and right thumb, index, middle, ring and pinky tips.
"""

SMPL_NUM_VERTICES = 6890

SMPLH_VERTEX_IDS = {
    "nose": 332,
    "reye": 6260,
    "leye": 2800,
    "rear": 4071,
    "lear": 583,
    "rthumb": 6191,
    "rindex": 5782,
    "rmiddle": 5905,
    "rring": 6016,
    "rpinky": 6133,
    "lthumb": 2746,
    "lindex": 2319,
    "lmiddle": 2445,
    "lring": 2556,
    "lpinky": 2673,
    "LBigToe": 3216,
    "LSmallToe": 3226,
    "LHeel": 3387,
    "RBigToe": 6617,
    "RSmallToe": 6624,
    "RHeel": 6787,
}

FACE_KEYPOINTS = ("nose", "reye", "leye", "rear", "lear")
FEET_KEYPOINTS = ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
TIP_NAMES = ("thumb", "index", "middle", "ring", "pinky")


def extra_joint_names(use_hands: bool = True, use_feet_keypoints: bool = True) -> list:
    """Names of the vertex-based extra joints, in output order."""
    names = list(FACE_KEYPOINTS)
    if use_feet_keypoints:
        names += list(FEET_KEYPOINTS)
    if use_hands:
        names += [side + tip for side in ("l", "r") for tip in TIP_NAMES]
    return names


def extra_joint_vertex_ids(vertex_ids: dict, use_hands: bool = True, use_feet_keypoints: bool = True) -> list:
    """The vertex id of each extra joint, in output order; a missing name raises a clear error."""
    ids = []
    for name in extra_joint_names(use_hands, use_feet_keypoints):
        if name not in vertex_ids:
            raise KeyError(f"vertex_ids has no entry '{name}' (needed for the extra joints; has {sorted(vertex_ids)})")
        ids.append(int(vertex_ids[name]))
    return ids
