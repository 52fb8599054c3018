"""Multi-view SMPLify.

Two formulations:

* MV-SPIN's (``calibrated=False``): the views of a person share the body pose θ̃ (69) and the shape β;
  every view keeps its own global orientation ζ⁽ᵛ⁾ and camera translation T⁽ᵛ⁾ (the cameras are not
  known). θ̃ starts from the per-joint rotation mean of the per-view estimates (chordal mean, not an
  arithmetic mean of axis-angles), β from their mean, ζ⁽ᵛ⁾ and T⁽ᵛ⁾ from each view's,
  refined first by SPIN's camera stage in every view.
* Calibrated (``calibrated=True``): each view's extrinsics (R_c, T_c: X_cam = R_c X_world + T_c) and
  intrinsics are known, and one global orientation and one world translation are shared.

Objective: the sum over views of SPIN's reprojection term, plus SPIN's priors once per person.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor

from .. import ops
from ..geometry import matrix_to_axis_angle
from .lm import levenberg_marquardt
from .priors import angle_prior_residuals
from .smplify import (MAX_ABS_BETAS, MAX_ABS_PIXELS, MAX_ABS_POSE, MAX_ABS_TRANSLATION, ROTATION_TOLERANCE, SMPLify,
                      SMPLifyResult, _adam_plateaued, _gmm_buffers, _lm_kwargs)


def rotation_mean(R: Tensor) -> Tensor:
    """Chordal mean of rotations (..., V, 3, 3) -> (..., 3, 3): the mean matrix projected onto SO(3)."""
    M = R.mean(dim=-3)
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    S = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return U @ S @ Vh


class MultiViewSMPLify(SMPLify):
    """Fit one body to V views at once; the same arguments as :class:`SMPLify`, plus ``calibrated``.

    Call ``fit(init_pose (B, V, 72), init_betas (B, V, nb), init_cam_t (B, V, 3), camera_center (B, V, 2),
    keypoints_2d (B, V, Nk, 3))`` (uncalibrated), or with ``calibrated=True``
    ``fit(..., cam_rot=(B, V, 3, 3), cam_transl=(B, V, 3), focal_length=(B, V, 2) or None)``
    (X_cam = cam_rot X_world + cam_transl). Returns a :class:`SMPLifyResult` whose pose is (B, V, 72)
    (per-view global orientation, shared body pose), betas (B, nb) and camera_translation (B, V, 3).

    **Frames** (``frame``, calibrated fits; one frame in, the same frame out):

    * ``"camera"`` (default, as the uncalibrated fitter): ``init_pose[:, v, :3]`` is the orientation in
      view v's camera and ``init_cam_t[:, v]`` the body translation there (SMPL's ``transl``: the body
      rotates about its root joint J0); the result gives the same per view: orientation
      ``cam_rot[v] @ R_world`` and translation ``cam_rot[v] (J0 + T_world) + cam_transl[v] − J0``, with
      vertices and joints oriented per view (without translation, as SPIN's).
    * ``"world"``: ``init_pose[:, v, :3]`` are world orientations (their rotation mean starts the fit),
      ``init_cam_t[:, v]`` world translations (or None with ``init_transl``); the result holds the world
      orientation and translation repeated in every view.

    ``init_transl`` (B, 3) is always the world translation. A calibrated result also carries
    ``world_orient`` (B, 3) and ``world_transl`` (B, 3) in either frame.
    """

    def __init__(self, *args, calibrated: bool = False, **kwargs) -> None:
        kwargs.setdefault("mode", "spin")
        super().__init__(*args, **kwargs)
        if self.mode == "smplify4":
            raise ValueError("MultiViewSMPLify: mode='smplify4' is single-view only")
        self.calibrated = calibrated

    def __call__(self, *args, **kwargs):
        return self.fit(*args, **kwargs).as_tuple()

    def fit(self, init_pose: Tensor, init_betas: Tensor, init_cam_t: Optional[Tensor], camera_center: Tensor,
            keypoints_2d: Tensor, *, cam_rot: Optional[Tensor] = None, cam_transl: Optional[Tensor] = None,
            focal_length: Optional[Tensor] = None, init_transl: Optional[Tensor] = None, frame: str = "camera",
            record_history: bool = False) -> SMPLifyResult:
        self._check_frame(frame)
        if not torch.is_tensor(keypoints_2d) or keypoints_2d.dim() != 4:
            got = tuple(keypoints_2d.shape) if torch.is_tensor(keypoints_2d) else type(keypoints_2d).__name__
            raise ValueError(f"MultiViewSMPLify: keypoints_2d must be (B, V, {self.num_keypoints}, 3); got {got}")
        B, V = keypoints_2d.shape[:2]
        if V == 0:
            raise ValueError(f"MultiViewSMPLify: keypoints_2d has no views; got {tuple(keypoints_2d.shape)}")
        flat = lambda t, n, name, bound=None: None if t is None else self._check_views(t, B, V, n, name, bound)  # noqa: E731
        kp = self._check_keypoints(keypoints_2d.reshape(B * V, *keypoints_2d.shape[2:]))
        pose_v = flat(init_pose, (72,), "init_pose", MAX_ABS_POSE)
        betas_v = flat(init_betas, (self.num_betas,), "init_betas", MAX_ABS_BETAS)
        center_v = flat(camera_center, (2,), "camera_center", MAX_ABS_PIXELS)
        cam_t_v = flat(init_cam_t, (3,), "init_cam_t", MAX_ABS_TRANSLATION)
        if cam_t_v is not None and frame == "camera":
            self._check_depth("init_cam_t", cam_t_v)
        if self.calibrated:
            if cam_rot is None or cam_transl is None:
                raise ValueError("MultiViewSMPLify(calibrated=True).fit needs cam_rot (B, V, 3, 3) and cam_transl (B, V, 3)")
            rot, tc, focal = self._check_calibration(cam_rot, cam_transl, focal_length, B, V, kp)
        if init_transl is not None:
            if not torch.is_tensor(init_transl) or tuple(init_transl.shape) != (B, 3):
                got = tuple(init_transl.shape) if torch.is_tensor(init_transl) else type(init_transl).__name__
                raise ValueError(f"MultiViewSMPLify: init_transl must be ({B}, 3); got {got}")
            self._check_tensor("init_transl", init_transl)
            self._check_bound("init_transl", init_transl, MAX_ABS_TRANSLATION)
        if B == 0:
            return self._empty_result(V, kp)
        t0 = time.perf_counter()
        joints_2d, conf, conf_body, bad, vis_v = self._prepare_keypoints(kp)
        visible = vis_v.view(B, V).any(dim=1)

        # Shared body pose and shape: the mean of the per-view estimates (per joint the chordal mean of the
        # rotations: an arithmetic mean of axis-angles is not a rotation average, and fails near pi).
        body_R = ops.rodrigues(pose_v.view(B, V, 24, 3)[:, :, 1:].reshape(-1, 3)).view(B, V, 23, 3, 3)
        body = matrix_to_axis_angle(rotation_mean(body_R.transpose(1, 2))).reshape(B, 69)
        betas = betas_v.view(B, V, -1).mean(dim=1)
        iters = torch.zeros(B, dtype=torch.long, device=kp.device)
        if not self.calibrated:
            if cam_t_v is None:
                raise ValueError("MultiViewSMPLify: init_cam_t (B, V, 3) is required when calibrated=False")
            # SPIN's camera stage in every view, on the shared body.
            pose0 = torch.cat([pose_v[:, :3], body.repeat_interleave(V, 0)], dim=1)
            pose0, cam_t, it, _ = self._camera_stage(pose0, betas.repeat_interleave(V, 0), cam_t_v, cam_t_v, center_v,
                                                     joints_2d, conf, vis_v)
            iters += it.view(B, V).max(dim=1).values
            x0 = torch.cat([body, betas, pose0[:, :3].reshape(B, 3 * V), cam_t.reshape(B, 3 * V)], dim=1)
        else:
            Rv = ops.rodrigues(pose_v[:, :3]).view(B, V, 3, 3)
            Rc = rot.view(B, V, 3, 3)
            go = matrix_to_axis_angle(rotation_mean(Rv if frame == "world" else Rc.transpose(-1, -2) @ Rv))
            if init_transl is None:
                if cam_t_v is None:
                    raise ValueError("MultiViewSMPLify(calibrated=True): give init_transl (B, 3) or init_cam_t (B, V, 3)")
                if frame == "world":
                    tw = cam_t_v.view(B, V, 3)
                else:
                    # SMPL rotates about the root joint J0, so a per-view body translation t_v (orientation
                    # Rc R_w) is the world translation Rcᵀ (t_v + J0 - Tc) - J0.
                    j0 = self._root_joint(betas)[:, None, :]
                    tw = (Rc.transpose(-1, -2) @ (cam_t_v.view(B, V, 3) + j0 - tc.view(B, V, 3)).unsqueeze(-1)).squeeze(-1) - j0
                init_transl = tw.mean(dim=1)
            x0 = torch.cat([go, body, betas, init_transl.to(self.dtype)], dim=1)
        timings = {"camera": time.perf_counter() - t0}

        t0 = time.perf_counter()
        evaluate = self._evaluator(B, V, joints_2d, conf_body, center_v,
                                   (rot, tc, focal) if self.calibrated else None)
        opts = replace(self.lm_options, record_history=record_history)
        if self.fused and not record_history:
            x, it, converged = self._fused_fit(x0, B, V, joints_2d, conf_body, center_v,
                                               (rot, tc, focal) if self.calibrated else None, visible)
            history = []
        elif self.optimizer == "lm":
            res = levenberg_marquardt(evaluate, x0, opts, active=visible)
            x, it, converged, history = res.x, res.iterations, res.converged, res.history
        else:
            x, it, converged, history = self._adam(evaluate, x0, record_history)
        iters += it
        timings["body"] = time.perf_counter() - t0
        calib = (rot, tc, focal) if self.calibrated else None
        res = self._result(x, x0, B, V, joints_2d, conf_body, center_v, calib, evaluate, iters, converged & visible,
                           bad, timings, history)
        if self.calibrated:
            res.world_orient, res.world_transl = res.pose[:, 0, :3].clone(), res.camera_translation[:, 0].clone()
            if frame == "camera":
                res = self._to_camera_frame(res, rot.view(B, V, 3, 3), tc.view(B, V, 3), center_v, joints_2d, conf_body,
                                            focal)
        return res

    @staticmethod
    def _check_frame(frame: str) -> None:
        if frame not in ("camera", "world"):
            raise ValueError(f"MultiViewSMPLify: frame must be 'camera' or 'world'; got {frame!r}")

    def _to_camera_frame(self, res: SMPLifyResult, Rc: Tensor, Tc: Tensor, center, joints_2d, conf, focal) -> SMPLifyResult:
        """A calibrated (world) result seen from every camera: orientation Rc R_w, translation
        Rc (J0 + T_w) + Tc − J0, vertices, joints and reprojection losses of those parameters."""
        B, V = Rc.shape[:2]
        if B == 0:
            return res
        Rw = ops.rodrigues(res.world_orient.to(self.dtype))
        go = matrix_to_axis_angle(Rc.to(Rw.dtype) @ Rw[:, None])                          # (B, V, 3)
        j0 = self._root_joint(res.betas)[:, None, :]
        t = (Rc @ (j0 + res.world_transl[:, None]).unsqueeze(-1)).squeeze(-1) + Tc - j0
        pose = torch.cat([go.to(res.pose.dtype), res.pose[..., 3:]], -1)
        with torch.no_grad():
            out = self.smpl(global_orient=pose.reshape(B * V, 72)[:, :3], body_pose=pose.reshape(B * V, 72)[:, 3:],
                            betas=res.betas.repeat_interleave(V, 0))
        res.pose, res.camera_translation = pose, t.to(res.camera_translation.dtype)
        res.vertices = out.vertices.view(B, V, *out.vertices.shape[1:])
        res.joints = out.joints.view(B, V, *out.joints.shape[1:])
        eye, zero3, _ = self._camera_constants(B * V, joints_2d)
        with torch.no_grad():
            reproj = self._reprojection(pose.reshape(B * V, 72).to(self.dtype), res.betas.to(self.dtype).repeat_interleave(V, 0),
                                        res.camera_translation.reshape(B * V, 3).to(self.dtype), center, joints_2d, conf,
                                        (eye.to(self.dtype), zero3.to(self.dtype), focal))
        res.reprojection_loss = reproj.view(B, V, -1).to(res.reprojection_loss.dtype)
        return res

    def reprojection_loss(self, pose: Tensor, betas: Tensor, transl: Tensor, camera_center: Tensor,
                          keypoints_2d: Tensor, *, cam_rot: Optional[Tensor] = None, cam_transl: Optional[Tensor] = None,
                          focal_length: Optional[Tensor] = None, frame: str = "camera") -> Tensor:
        """The per-keypoint reprojection term of :meth:`fit` (conf² · GMoF, SPIN's ignored joints at 0)
        for given parameters: (B, V, Nk), the same values ``fit`` returns as ``reprojection_loss`` when
        given its own result. ``pose`` (B, V, 72) and ``transl`` (B, V, 3) are in ``frame`` as in
        :meth:`fit`: each view's camera (default), or (calibrated) the world orientation and translation
        in every view. ``betas`` (B, nb). Calibrated fitters need ``cam_rot`` / ``cam_transl`` (and
        ``focal_length``) as in :meth:`fit`."""
        self._check_frame(frame)
        if not torch.is_tensor(keypoints_2d) or keypoints_2d.dim() != 4:
            got = tuple(keypoints_2d.shape) if torch.is_tensor(keypoints_2d) else type(keypoints_2d).__name__
            raise ValueError(f"MultiViewSMPLify: keypoints_2d must be (B, V, {self.num_keypoints}, 3); got {got}")
        B, V = keypoints_2d.shape[:2]
        kp = self._check_keypoints(keypoints_2d.reshape(B * V, *keypoints_2d.shape[2:]))
        joints_2d, _, conf_body, _, _ = self._prepare_keypoints(kp)
        pose_v = self._check_views(pose, B, V, (72,), "pose", MAX_ABS_POSE)
        t_v = self._check_views(transl, B, V, (3,), "transl", MAX_ABS_TRANSLATION)
        center_v = self._check_views(camera_center, B, V, (2,), "camera_center", MAX_ABS_PIXELS)
        if not torch.is_tensor(betas) or tuple(betas.shape) != (B, self.num_betas):
            raise ValueError(f"MultiViewSMPLify: betas must be ({B}, {self.num_betas}); got "
                             f"{tuple(betas.shape) if torch.is_tensor(betas) else type(betas).__name__}")
        calib = None
        if self.calibrated:
            if cam_rot is None or cam_transl is None:
                raise ValueError("MultiViewSMPLify(calibrated=True).reprojection_loss needs cam_rot and cam_transl")
            calib = self._check_calibration(cam_rot, cam_transl, focal_length, B, V, kp)
            if frame == "camera":  # camera-frame bodies: identity extrinsics, the calibrated intrinsics
                eye, zero3, _ = self._camera_constants(B * V, kp)
                calib = (eye.to(self.dtype), zero3.to(self.dtype), calib[2])
        with torch.no_grad():
            out = self._reprojection(pose_v, betas.to(self.dtype).repeat_interleave(V, 0), t_v, center_v, joints_2d,
                                     conf_body, calib)
        return out.view(B, V, -1)

    # ---------------------------------------------------------------------------------------- parts
    def _root_joint(self, betas: Tensor) -> Tensor:
        """The rest-pose root joint J0 (B, 3) of the shaped body."""
        return self.smpl.rest_joints(betas.to(self.smpl.v_template.dtype))[:, 0].to(betas.dtype)

    def _check_views(self, t: Tensor, B: int, V: int, tail, name: str = "input", bound: Optional[float] = None) -> Tensor:
        if not torch.is_tensor(t):
            raise TypeError(f"MultiViewSMPLify: {name} must be a tensor of shape ({B}, {V}, {tail}); got {type(t).__name__}")
        if t.shape[:2] != (B, V) or tuple(t.shape[2:]) != tuple(tail):
            raise ValueError(f"MultiViewSMPLify: {name} must have shape ({B}, {V}, {', '.join(map(str, tail))}); "
                             f"got {tuple(t.shape)}")
        self._check_tensor(name, t)
        if not torch.isfinite(t).all():
            raise ValueError(f"MultiViewSMPLify: {name} contains NaN or Inf")
        if bound is not None:
            self._check_bound(name, t, bound)
        return t.reshape(B * V, *tail).to(self.dtype)

    def _check_calibration(self, cam_rot, cam_transl, focal_length, B, V, kp):
        """Calibrated cameras: rotations orthonormal with det +1, finite translations, focal lengths > 0."""
        rot = self._check_views(cam_rot, B, V, (3, 3), "cam_rot")
        if rot.numel():
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            dev = (rot.transpose(-1, -2) @ rot - eye).abs().amax(dim=(-1, -2))
            det = torch.linalg.det(rot)
            if bool((dev > ROTATION_TOLERANCE).any()) or bool((det <= 0).any()):
                raise ValueError(f"MultiViewSMPLify: cam_rot must be rotation matrices (|RᵀR − I| <= "
                                 f"{ROTATION_TOLERANCE:g}, det +1); got max |RᵀR − I| = {float(dev.max()):g}, "
                                 f"min det = {float(det.min()):g}")
        tc = self._check_views(cam_transl, B, V, (3,), "cam_transl", MAX_ABS_TRANSLATION)
        if focal_length is None:
            focal = kp.new_full((B * V, 2), self.focal_length).to(self.dtype)
        else:
            focal = self._check_views(focal_length, B, V, (2,), "focal_length")
            if bool((focal <= 0).any()):
                raise ValueError(f"MultiViewSMPLify: focal_length must be > 0 (px); got min {float(focal.min()):g}")
        return rot, tc, focal

    def _empty_result(self, V: int, kp: Tensor) -> SMPLifyResult:
        """The result of an empty batch (B = 0): empty tensors of the usual shapes."""
        nb, dt, dev = self.num_betas, self.dtype, kp.device
        Nk = kp.shape[1]
        nv = self.smpl.v_template.shape[0] if hasattr(self.smpl, "v_template") else 0
        z = lambda *s: torch.zeros(*s, dtype=dt, device=dev)  # noqa: E731
        return SMPLifyResult(z(0, V, nv, 3), z(0, V, Nk, 3), z(0, V, 72), z(0, nb), z(0, V, 3), z(0, V, Nk), z(0),
                             torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.bool, device=dev),
                             torch.zeros(0, dtype=torch.long, device=dev), {}, [])

    def _layout(self, V: int, nb: int):
        """Where each per-view Jacobian column (kernel order: pose 72, betas, transl 3) goes in x."""
        P = 72 + nb + 3
        if self.calibrated:  # x = [global orient 3, body 69, betas, transl 3]: the kernel's own order
            return torch.arange(P).expand(V, P), P
        n = 69 + nb + 6 * V   # x = [body 69, betas, ζ (3V), T (3V)]
        cols = torch.empty(V, P, dtype=torch.long)
        for v in range(V):
            cols[v, :3] = torch.arange(69 + nb + 3 * v, 69 + nb + 3 * v + 3)
            cols[v, 3:72] = torch.arange(69)
            cols[v, 72:72 + nb] = torch.arange(69, 69 + nb)
            cols[v, 72 + nb:] = torch.arange(69 + nb + 3 * V + 3 * v, 69 + nb + 3 * V + 3 * v + 3)
        return cols, n

    def _unpack(self, x: Tensor, V: int, nb: int):
        """x (b, n) -> per-view kernel inputs: pose (b·V, 72), betas (b·V, nb), transl (b·V, 3)."""
        b = x.shape[0]
        if self.calibrated:
            return (x[:, :72].repeat_interleave(V, 0), x[:, 72:72 + nb].repeat_interleave(V, 0),
                    x[:, 72 + nb:].repeat_interleave(V, 0))
        body, betas = x[:, :69], x[:, 69:69 + nb]
        go = x[:, 69 + nb:69 + nb + 3 * V].reshape(b * V, 3)
        t = x[:, 69 + nb + 3 * V:].reshape(b * V, 3)
        pose = torch.cat([go, body.repeat_interleave(V, 0)], dim=1)
        return pose, betas.repeat_interleave(V, 0), t

    def _evaluator(self, B, V, joints_2d, conf, center, calib):
        km = self._kp_model
        nb = self.num_betas
        cols, n = self._layout(V, nb)
        cols = cols.to(joints_2d.device)
        w = self.weights
        wp2, wa2, ws2 = w.pose_prior_weight ** 2, w.angle_prior_weight ** 2, w.shape_prior_weight ** 2
        body = slice(3, 72) if self.calibrated else slice(0, 69)
        shape = slice(72, 72 + nb) if self.calibrated else slice(69, 69 + nb)
        Nk = km.num_keypoints
        eye, zero3, focal0 = self._camera_constants(B * V, joints_2d)

        def view_rows(rows):
            return (rows[:, None] * V + torch.arange(V, device=rows.device)).flatten()

        def evaluate(x, rows, with_jacobian=True):
            b = x.shape[0]
            vr = view_rows(rows)
            pose, betas, t = self._unpack(x, V, nb)
            if calib is None:
                R, tc, f = eye[vr], zero3[vr], focal0[vr]
            else:
                R, tc, f = calib[0][vr], calib[1][vr], calib[2][vr]
            res, jac, _, _ = ops.project_keypoints(km, pose.view(-1, km.num_joints, 3), betas, t, R, tc, f, center[vr],
                                                   joints_2d[vr], conf[vr], w.sigma, compute_jacobian=with_jacobian)
            r = res.reshape(b, V * Nk * 2)
            f_val = (r * r).sum(1)
            xb = x[:, body]
            rp, Jp, _ = self.pose_prior.residuals(xb)
            ra, Ja = angle_prior_residuals(xb)
            beta = x[:, shape]
            f_val = f_val + wp2 * (rp * rp).sum(1) + wa2 * (ra * ra).sum(1) + ws2 * (beta * beta).sum(1)
            if not with_jacobian:
                return f_val, None, None
            Jv = jac.reshape(b, V, Nk * 2, -1)
            J = x.new_zeros(b, V, Nk * 2, n)
            J.scatter_(3, cols[None, :, None, :].expand(b, V, Nk * 2, cols.shape[1]), Jv)
            J = J.reshape(b, V * Nk * 2, n)
            H = J.transpose(1, 2) @ J
            g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
            H[:, body, body] += wp2 * (Jp.transpose(1, 2) @ Jp) + wa2 * (Ja.transpose(1, 2) @ Ja)
            g[:, body] += (wp2 * (Jp.transpose(1, 2) @ rp.unsqueeze(-1)) + wa2 * (Ja.transpose(1, 2) @ ra.unsqueeze(-1))).squeeze(-1)
            H[:, shape, shape] += ws2 * torch.eye(nb, dtype=x.dtype, device=x.device)
            g[:, shape] += ws2 * beta
            return f_val, H, g

        return evaluate

    def _fused_fit(self, x0, B, V, joints_2d, conf, center, calib, visible):
        """The body fit in one :func:`smplfast.ops.lm_fit` call: every view's kernel columns read x
        through :meth:`_layout` (nothing comes from ``base``), the priors act once on the shared body."""
        km = self._kp_model
        nb = self.num_betas
        P = km.num_params
        cols = self._columns(("multiview", self.calibrated, V, nb), x0.device, lambda: self._layout(V, nb)[0])
        if calib is None:
            eye, zero3, focal = self._camera_constants(B * V, joints_2d)
            R, tc, f = eye, zero3, focal
        else:
            R, tc, f = calib
        w = self.weights
        body_col, shape_col = (3, 72) if self.calibrated else (0, 69)
        x, _, it, conv = ops.lm_fit(
            km, x0, base=x0.new_zeros(B, V, P), cols=cols, cam_rot=R.reshape(B, V, 3, 3),
            cam_transl=tc.reshape(B, V, 3), focal=f.reshape(B, V, 2), center=center.reshape(B, V, 2),
            target=joints_2d.reshape(B, V, -1, 2), weight=conf.reshape(B, V, -1), sigma=w.sigma,
            gmm=_gmm_buffers(self.pose_prior, x0.dtype), pose_w2=w.pose_prior_weight ** 2,
            angle_w2=w.angle_prior_weight ** 2, body_col=body_col, shape_col=shape_col,
            shape_w2=w.shape_prior_weight ** 2, active=visible, **_lm_kwargs(self.lm_options))
        return x, it, conv

    def _adam(self, evaluate, x0, record_history):
        """MV-SPIN's solver: Adam on all parameters at once, ``num_iters`` steps of ``step_size``.
        The gradient is 2 Jᵀr from the same normal equations the LM solver uses."""
        B = x0.shape[0]
        rows = torch.arange(B, device=x0.device)
        x = x0.clone().requires_grad_(False)
        opt_state = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([opt_state], lr=self.step_size, betas=(0.9, 0.999))
        history = []
        trace = []
        t0 = time.perf_counter()
        for _ in range(self.num_iters):
            f, _, g = evaluate(opt_state.detach(), rows)
            trace.append(f.detach())
            if record_history:
                history.append((time.perf_counter() - t0, f.clone()))
            opt.zero_grad()
            opt_state.grad = 2 * g
            opt.step()
        n = torch.full((B,), self.num_iters, dtype=torch.long, device=x0.device)
        return opt_state.detach(), n, _adam_plateaued(trace, B, x0.device), history

    def _result(self, x, x0, B, V, joints_2d, conf, center, calib, evaluate, iters, converged, bad, timings, history):
        # Never return NaN / Inf: a person whose fit (or its outputs) is not finite keeps its
        # initialisation with converged=False.
        keep = torch.isfinite(x).all(dim=1)
        nb = self.num_betas
        for _ in range(2):
            x = torch.where(keep[:, None], x, x0)
            pose, betas, t = self._unpack(x, V, nb)
            with torch.no_grad():
                out = self.smpl(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
                loss, _, _ = evaluate(x, torch.arange(B, device=x.device), with_jacobian=False)
                reproj = self._reprojection(pose, betas, t, center, joints_2d, conf, calib)
            ok = (torch.isfinite(out.vertices.reshape(B, -1)).all(1) & torch.isfinite(out.joints.reshape(B, -1)).all(1)
                  & torch.isfinite(reproj.reshape(B, -1)).all(1) & torch.isfinite(loss))
            if bool((ok | ~keep).all()):
                break
            keep = keep & ok
        converged = converged & keep
        if not (torch.isfinite(out.vertices).all() and torch.isfinite(reproj).all() and torch.isfinite(loss).all()):
            raise FloatingPointError("MultiViewSMPLify: the initialisation itself gives non-finite outputs; check "
                                     "the input ranges (see smplfast.fitting.smplify.MAX_ABS_*)")
        vertices = out.vertices.view(B, V, *out.vertices.shape[1:])
        joints = out.joints.view(B, V, *out.joints.shape[1:])
        return SMPLifyResult(vertices, joints, pose.view(B, V, 72), betas.view(B, V, nb)[:, 0], t.view(B, V, 3),
                             reproj.view(B, V, -1), loss, iters, converged, bad.view(B, V, -1).sum(dim=(1, 2)),
                             timings, history)

    def _reprojection(self, pose, betas, t, center, joints_2d, conf, calib):
        """Per-keypoint conf² · GMoF in every view (B·V, Nk)."""
        km = self._kp_model
        eye, zero3, focal = self._camera_constants(pose.shape[0], pose)
        if calib is not None:
            eye, zero3, focal = calib
        res, _, _, _ = ops.project_keypoints(km, pose.view(-1, km.num_joints, 3), betas, t, eye, zero3, focal, center,
                                             joints_2d, conf, self.weights.sigma, compute_jacobian=False)
        return (res * res).sum(-1)
