"""The part of a body model that the fitter's keypoints depend on, packed for the Jacobian kernel.

SMPLify only ever looks at keypoints: the 24 skeleton joints plus a few points regressed from mesh
vertices (SPIN's extra joints, OpenPose's feet and face points, ...). ``KeypointModel.from_smpl`` keeps
just those: the joint regressor folded into the shape space, the few *support* vertices that the
extra keypoints read (their template, blend shapes and skinning weights), and each output keypoint as
a sparse row over [skeleton joints; support vertices].
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor


@dataclass
class KeypointModel:
    """Shapes: J joints, S support vertices, K skinning influences, nb shape coefficients, Nk keypoints.

    parents (J,) int64, parents[0] = -1.
    joint_template (J, 3), joint_shapedirs (J, 3, nb): rest joints = joint_template + joint_shapedirs @ betas.
    vertex_template (S, 3), vertex_shapedirs (S, 3, nb), vertex_posedirs (S, 3, 9 (J - 1)) (zero columns
    when the model has no pose blend shapes; see ``has_pose_blend``): rest support vertices =
    template + shapedirs @ betas + posedirs @ vec(R_i - I for i = 1..J-1), each R_i - I flattened row-major.
    lbs_idx (S, K) int32 and lbs_weights (S, K): the support vertices' skinning weights.
    regressor_ptr (Nk + 1,) int32, regressor_col (nnz,) int32, regressor_val (nnz,): keypoint k is
    sum over e in [ptr[k], ptr[k+1]) of val[e] * point[col[e]], where point[c] is posed joint c for
    c < J and posed support vertex c - J otherwise (both without translation).
    """

    parents: Tensor
    joint_template: Tensor
    joint_shapedirs: Tensor
    vertex_template: Tensor
    vertex_shapedirs: Tensor
    vertex_posedirs: Tensor
    lbs_idx: Tensor
    lbs_weights: Tensor
    regressor_ptr: Tensor
    regressor_col: Tensor
    regressor_val: Tensor
    has_pose_blend: bool = False

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.joint_shapedirs.shape[-1])

    @property
    def num_support(self) -> int:
        return int(self.vertex_template.shape[0])

    @property
    def num_keypoints(self) -> int:
        return int(self.regressor_ptr.shape[0]) - 1

    @property
    def num_params(self) -> int:
        """Columns of the kernel's Jacobian: 3 J pose, nb shape, 3 translation."""
        return 3 * self.num_joints + self.num_betas + 3

    def dense_regressor(self) -> Tensor:
        """The keypoint rows as a dense (Nk, J + S) matrix (for references and tests)."""
        R = self.regressor_val.new_zeros(self.num_keypoints, self.num_joints + self.num_support)
        rows = torch.repeat_interleave(
            torch.arange(self.num_keypoints, device=R.device), (self.regressor_ptr[1:] - self.regressor_ptr[:-1]).long()
        )
        R.index_put_((rows, self.regressor_col.long()), self.regressor_val, accumulate=True)
        return R

    def to(self, device=None, dtype=None) -> "KeypointModel":
        """A copy on `device` with the float tensors in `dtype` (index tensors keep their type)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if torch.is_tensor(v):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() and dtype is not None else v.dtype)
            out[f.name] = v
        return KeypointModel(**out)

    @classmethod
    def from_smpl(cls, smpl, dtype: Optional[torch.dtype] = None) -> "KeypointModel":
        """Pack the keypoints an ``smplfast.SMPL`` module outputs as ``output.joints`` (same order)."""
        if getattr(smpl, "joint_mapper", None) is not None:
            raise ValueError("KeypointModel.from_smpl: models with a joint_mapper are not supported; "
                             "choose the output joints with SMPL(keypoints=...) instead")
        dtype = dtype or smpl.shapedirs.dtype
        J = smpl._num_joints_skeleton
        nb = smpl.num_betas
        support = smpl._extra_support
        S = int(support.shape[0])
        jshape = smpl._J_shapedirs.reshape(nb, J, 3).permute(1, 2, 0)
        vshape = smpl._extra_shape_basis.reshape(nb, S, 3).permute(1, 2, 0)
        num_pose = smpl.posedirs.shape[0]
        if smpl._has_pose_blend:
            vpose = smpl._extra_posedirs.reshape(num_pose, S, 3).permute(1, 2, 0)
        else:
            vpose = smpl.posedirs.new_zeros(S, 3, num_pose)
        # Rows over [joints; support vertices]: the skeleton, the extra rows, then the keypoint selection.
        E = smpl.num_extra_joints
        rows = smpl.posedirs.new_zeros(J + E, J + S, dtype=torch.float64)
        rows[:J, :J] = torch.eye(J, dtype=torch.float64)
        if E:
            rows[J:, J:] = smpl._extra_matrix.to(torch.float64)
        if smpl._keypoint_index is not None:
            rows = rows[smpl._keypoint_index]
        nz = rows != 0
        ptr = torch.zeros(rows.shape[0] + 1, dtype=torch.int32)
        ptr[1:] = torch.cumsum(nz.sum(1), 0).to(torch.int32)
        r_idx, c_idx = nz.nonzero(as_tuple=True)  # row-major order, so grouped by keypoint
        device = smpl.shapedirs.device
        return cls(
            parents=smpl.parents.clone(),
            joint_template=smpl._J_template.reshape(J, 3).to(dtype).clone(),
            joint_shapedirs=jshape.to(dtype).contiguous(),
            vertex_template=smpl._extra_template.reshape(S, 3).to(dtype).clone(),
            vertex_shapedirs=vshape.to(dtype).contiguous(),
            vertex_posedirs=vpose.to(dtype).contiguous(),
            lbs_idx=smpl._extra_lbs_idx.clone(),
            lbs_weights=smpl._extra_lbs_w.to(dtype).clone(),
            regressor_ptr=ptr.to(device),
            regressor_col=c_idx.to(torch.int32).to(device),
            regressor_val=rows[r_idx, c_idx].to(dtype).to(device),
            has_pose_blend=bool(smpl._has_pose_blend),
        )
