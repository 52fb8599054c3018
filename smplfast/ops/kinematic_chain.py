"""Forward kinematics over a kinematic tree, as a custom op with analytic backward."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .._backend import _C, check_float, check_same, dtype_code, target
from ._value_checks import check_once
from ._grad_checks import check_grad, check_saved

OP = "smplfast.kinematic_chain"
MAX_JOINTS = int(_C.build_info()["max_joints"])


def kinematic_chain_reference(rot_mats: Tensor, rest_joints: Tensor, parents: Tensor) -> Tuple[Tensor, Tensor]:
    """Pure-PyTorch specification.

    rot_mats (B, J, 3, 3) are rotations relative to the parent, rest_joints (B, J, 3) the joints of the
    shaped rest mesh, parents (J,) with parents[0] = -1 and parents[j] < j. Returns the posed joints
    (B, J, 3) and transforms (B, J, 3, 4) = [Rw_j | t_j - Rw_j rest_j], which move a rest-pose point
    rigidly with joint j."""
    B, J = rot_mats.shape[:2]
    world_R, world_t = [], []
    for j in range(J):
        p = int(parents[j])
        if p < 0:
            world_R.append(rot_mats[:, j])
            world_t.append(rest_joints[:, j])
        else:
            world_R.append(world_R[p] @ rot_mats[:, j])
            world_t.append(world_t[p] + (world_R[p] @ (rest_joints[:, j] - rest_joints[:, p]).unsqueeze(-1))[..., 0])
    Rw = torch.stack(world_R, dim=1)
    t = torch.stack(world_t, dim=1)
    offset = t - (Rw @ rest_joints.unsqueeze(-1))[..., 0]
    return t, torch.cat([Rw, offset.unsqueeze(-1)], dim=-1)


def _check(rot_mats: Tensor, rest_joints: Tensor, parents: Tensor) -> None:
    check_float(OP, "rot_mats", rot_mats, [None, None, 3, 3])
    B, J = rot_mats.shape[:2]
    check_float(OP, "rest_joints", rest_joints, [B, J, 3])
    check_same(OP, "rot_mats", rot_mats, [("rest_joints", rest_joints), ("parents", parents)])
    if parents.dtype != torch.int64 or parents.shape != (J,):
        raise ValueError(f"{OP}: parents must be an int64 tensor of shape ({J},); got {parents.dtype} {tuple(parents.shape)}")
    if J > MAX_JOINTS:
        raise ValueError(f"{OP}: at most {MAX_JOINTS} joints are supported; got {J}")


def check_parents(parents: Tensor) -> None:
    """parents must describe a tree rooted at joint 0 with every parent before its child, so one pass
    in joint order visits parents first (the kernels rely on it)."""
    p = parents.tolist()
    bad = [j for j in range(1, len(p)) if not 0 <= p[j] < j]
    if len(p) and p[0] != -1 or bad:
        j = bad[0] if bad else 0
        raise ValueError(f"{OP}: parents must have parents[0] == -1 and 0 <= parents[j] < j; joint {j} has parent {p[j]}")


@torch.library.custom_op("smplfast::kinematic_chain", mutates_args=())
def _kinematic_chain(rot_mats: Tensor, rest_joints: Tensor, parents: Tensor) -> Tuple[Tensor, Tensor]:
    _check(rot_mats, rest_joints, parents)
    check_once(OP + ":parents", (parents,), lambda: check_parents(parents))  # a model constant: once per tensor
    B, J = rot_mats.shape[:2]
    # Keep every contiguous copy alive in a local until the kernel has returned.
    R, rest, par = rot_mats.contiguous(), rest_joints.contiguous(), parents.contiguous()
    posed = rest.new_empty((B, J, 3))
    transforms = rest.new_empty((B, J, 3, 4))
    _C.chain_forward(target(R), dtype_code(R), B, J, par.data_ptr(), R.data_ptr(), rest.data_ptr(),
                     posed.data_ptr(), transforms.data_ptr())
    return posed, transforms


@_kinematic_chain.register_fake
def _(rot_mats, rest_joints, parents):
    _check(rot_mats, rest_joints, parents)
    B, J = rot_mats.shape[:2]
    return rest_joints.new_empty((B, J, 3)), rest_joints.new_empty((B, J, 3, 4))


def _check_backward(grad_posed, grad_transforms, rot_mats, rest_joints, parents, transforms) -> None:
    _check(rot_mats, rest_joints, parents)
    B, J = rot_mats.shape[:2]
    name = OP + "_backward"
    check_saved(name, "transforms", transforms, [B, J, 3, 4], rot_mats)
    check_grad(name, "grad_posed", grad_posed, (B, J, 3), rot_mats)
    check_grad(name, "grad_transforms", grad_transforms, (B, J, 3, 4), rot_mats)


@torch.library.custom_op("smplfast::kinematic_chain_backward", mutates_args=())
def _kinematic_chain_backward(grad_posed: Tensor, grad_transforms: Tensor, rot_mats: Tensor, rest_joints: Tensor,
                              parents: Tensor, transforms: Tensor) -> Tuple[Tensor, Tensor]:
    _check_backward(grad_posed, grad_transforms, rot_mats, rest_joints, parents, transforms)
    check_once(OP + ":parents", (parents,), lambda: check_parents(parents))  # the kernel walks the tree
    B, J = rot_mats.shape[:2]
    R, rest, par = rot_mats.contiguous(), rest_joints.contiguous(), parents.contiguous()
    A = transforms.contiguous()
    gP, gA = grad_posed.contiguous(), grad_transforms.contiguous()
    gR = R.new_empty((B, J, 3, 3))
    grest = rest.new_empty((B, J, 3))
    _C.chain_backward(target(R), dtype_code(R), B, J, par.data_ptr(), R.data_ptr(), rest.data_ptr(),
                      A.data_ptr(), gP.data_ptr(), gA.data_ptr(), gR.data_ptr(), grest.data_ptr())
    return gR, grest


@_kinematic_chain_backward.register_fake
def _(grad_posed, grad_transforms, rot_mats, rest_joints, parents, transforms):
    _check_backward(grad_posed, grad_transforms, rot_mats, rest_joints, parents, transforms)
    B, J = rot_mats.shape[:2]
    return rot_mats.new_empty((B, J, 3, 3)), rest_joints.new_empty((B, J, 3))


def _setup(ctx, inputs, output):
    rot_mats, rest_joints, parents = inputs
    _, transforms = output
    ctx.save_for_backward(rot_mats, rest_joints, parents, transforms)


def _backward(ctx, grad_posed, grad_transforms):
    rot_mats, rest_joints, parents, transforms = ctx.saved_tensors
    # Autograd hands None for an unused output; the kernel wants dense gradients.
    if grad_posed is None:
        grad_posed = torch.zeros_like(rest_joints)
    if grad_transforms is None:
        grad_transforms = torch.zeros_like(transforms)
    gR, grest = _kinematic_chain_backward(grad_posed, grad_transforms, rot_mats, rest_joints, parents, transforms)
    return gR, grest, None


_kinematic_chain.register_autograd(_backward, setup_context=_setup)


def kinematic_chain(rot_mats: Tensor, rest_joints: Tensor, parents: Tensor) -> Tuple[Tensor, Tensor]:
    """Posed joints ``(B, J, 3)`` and rest->posed transforms ``(B, J, 3, 4)`` from relative rotations
    ``(B, J, 3, 3)`` and rest joints ``(B, J, 3)`` on the tree ``parents`` (int64 ``(J,)``, root -1,
    parents before children). Same maths as smplx's ``batch_rigid_transform``; differentiable."""
    return _kinematic_chain(rot_mats, rest_joints, parents)
