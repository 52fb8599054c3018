"""A pure-PyTorch SMPL forward (no custom ops, dense skinning weights): the specification the fast
layer is tested against and the baseline it is benchmarked against."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..ops import kinematic_chain_reference, rodrigues_reference


def smpl_reference_forward(model, betas: Tensor, body_pose: Tensor, global_orient: Tensor,
                           transl: Tensor) -> Tuple[Tensor, Tensor]:
    """Vertices (B, V, 3) and joints (B, 24 + extra, 3) of ``model`` (an ``smplfast.SMPL``) computed
    from its buffers with plain torch operations; axis-angle inputs, batch sizes all equal."""
    B = body_pose.shape[0]
    J = model.J_regressor.shape[0]
    pose = torch.cat([global_orient, body_pose], dim=1).reshape(B, J, 3)
    rot = rodrigues_reference(pose)
    v_shaped = model.v_template + torch.einsum("bl,vcl->bvc", betas, model.shapedirs)
    rest_joints = torch.einsum("jv,bvc->bjc", model.J_regressor, v_shaped)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    pose_feature = (rot[:, 1:] - eye).reshape(B, -1)
    v_posed = v_shaped + (pose_feature @ model.posedirs).view(B, -1, 3)
    posed_joints, transforms = kinematic_chain_reference(rot, rest_joints, model.parents)
    T = torch.einsum("vj,bjrc->bvrc", model.lbs_weights, transforms)
    verts = (T[..., :3] @ v_posed.unsqueeze(-1))[..., 0] + T[..., 3] + transl[:, None]
    joints = posed_joints + transl[:, None]
    if model.num_extra_joints:
        extra = torch.matmul(model._extra_matrix, verts.index_select(1, model._extra_support))
        joints = torch.cat([joints, extra], dim=1)
    return verts, joints
