"""HoloPose's test-time refinement: DensePose + 2D/3D keypoints + shape bound, by Gauss-Newton with CG.

The objective of each sample (all terms optional except that one data term must be given)::

    E = w_dp * mean_i ||Pi(x_i) - xy_i||                       DensePose (Eq. 4), per point distance
      + w_2d * mean_k c_k ||Pi(J_k) - j_k||_1                  2D keypoints, L1
      + w_3d * mean_k c_k ||(J_k - J_root) - (j_k - j_root)||_1  3D keypoints (root-relative), L1
      + w_b  * sum_i max(0, |beta_i| - b)                      shape bound, b = 2

over ``[pose (72), betas (S), c (3)]`` where ``c`` is the body translation for a perspective camera
and SPIN's ``[s, tx, ty]`` for a weak-perspective one.  The DensePose points are looked up once in
the :class:`~smplfast.surface.uvgrid.UVGrid` (rest position, shape basis, skinning weights): only the
skinning depends on the parameters, so each iteration is a closed-form Jacobian plus one small
linear system per sample.

Non-squared terms (distances, L1, the bound) are linearised by iteratively reweighted least squares:
at the current point ``x0`` a term ``|e|`` is replaced by its quadratic majoriser
``e^2 / (2 max(|e0|, eps)) + |e0| / 2``, which touches it at ``x0`` with the same gradient.

The Jacobian is explicit and batched.  A point skinned as ``x = sum_j w_j (G_j (v - J_j) + p_j)``
moves under a small world-frame rotation ``omega`` at joint k by ``omega x (X_k - W_k p_k)``, where
``X_k`` sums the weighted per-joint positions of k's subtree and ``W_k`` their weights; the joint's
axis-angle enters through ``omega = G_parent(k) J_l(theta_k) d theta_k`` (``J_l`` the left Jacobian of
SO(3)).  Shape enters through the point's shape basis and the skeleton's dependence on beta
(``t_j = sum_{a in path(j)} (G_parent(a) - G_a) J_a``).  The pose-blend-shape term is kept in the
residual but left out of the Jacobian (a Gauss-Newton approximation; the bundled model has none).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import Tensor

from .. import ops
from ..ops.point_normal_equations import subtree_matrix
from ..fitting.lm import LMOptions, levenberg_marquardt
from ..fitting.priors import shape_bound, shape_bound_residuals
from ..geometry import MIN_DEPTH, Camera, PerspectiveCamera, WeakPerspectiveCamera
from .densepose import BodyParams, IUVPoints, _grid_points
from .uvgrid import UVGrid

__all__ = ["RefineOptions", "RefineResult", "RefineProblem", "refine"]


@dataclass
class RefineOptions:
    """Weights of the terms, the solver and its stopping rules.

    ``method``: ``"gn"`` (default, HoloPose's): Gauss-Newton steps solved by the conjugate-gradient op
    (``cg_iters`` <= 20 as in the paper) with a tiny Marquardt damping that grows only when a step
    does not lower the objective; ``"lm"``: :func:`smplfast.fitting.lm.levenberg_marquardt` (Cholesky
    or CG, ``linear_solver``).  ``irls_eps``: the floor on ``|e|`` in the IRLS weights, in each term's
    units (pixels or the weak-perspective units for 2D terms, metres for 3D; ``irls_eps_3d``).
    ``keypoints_3d_root``: index of the keypoint subtracted from model and target 3D keypoints (None:
    absolute model coordinates, with the translation for a perspective camera).
    """

    dp_weight: float = 1.0
    kp2d_weight: float = 1.0
    kp3d_weight: float = 1.0
    shape_bound_weight: float = 1.0
    shape_bound: float = 2.0
    squared_dp: bool = False
    keypoints_3d_root: Optional[int] = 0
    method: str = "gn"
    max_iters: int = 20
    cg_iters: int = 20
    linear_solver: str = "cg"
    ftol: float = 1e-6
    init_damping: float = 1e-6
    max_damping: float = 1e8
    irls_eps: float = 1e-3
    irls_eps_3d: float = 1e-5
    fused: bool = True  # the DensePose normal equations by smplfast.ops.point_normal_equations (False: explicit Jacobian)


@dataclass
class RefineResult:
    """params: refined :class:`BodyParams`; camera: the camera (weak-perspective: refined);
    loss (B,): final objective; loss_history (B, T + 1): objective at the start and after each
    iteration (held once a sample stops); terms: final per-term values (B,); iterations (B,);
    converged (B,) bool: stopped by a convergence test; fell_back (B,) bool: the sample kept its
    initialisation because its refinement became non-finite or it had no data."""

    params: BodyParams
    camera: Camera
    loss: Tensor
    loss_history: Tensor
    terms: Dict[str, Tensor]
    iterations: Tensor
    converged: Tensor
    fell_back: Tensor
    seconds: float = 0.0
    history_seconds: list = field(default_factory=list)


def _sel(t: Tensor, rows: Optional[Tensor]) -> Tensor:
    """Rows ``rows`` of a per-sample tensor (all of them, without a copy, for None)."""
    return t if rows is None else t[rows]


def _so3_left_jacobian(aa: Tensor) -> Tensor:
    """J_l(theta) (..., 3, 3): R(theta + d) = exp([J_l d]_x) R(theta) to first order."""
    t2 = (aa * aa).sum(-1)[..., None, None]
    t = t2.sqrt()
    small = t < 1e-4
    ts = torch.where(small, torch.ones_like(t), t)
    a = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(ts)) / (ts * ts))
    b = torch.where(small, 1.0 / 6 - t2 / 120, (ts - torch.sin(ts)) / (ts * ts * ts))
    K = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a * K + b * (K @ K)


def _skew(v: Tensor) -> Tensor:
    z = torch.zeros_like(v[..., 0])
    return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z],
                       -1).reshape(*v.shape[:-1], 3, 3)


class RefineProblem:
    """One batch of refinement problems: data, residuals with explicit Jacobians, normal equations.

    Built by :func:`refine`; exposed for tests and for custom solvers.  Parameter vectors are
    ``(B, 72 + S + 3)`` = [pose (global orientation first), betas, c] (c: body translation for a
    perspective camera, [s, tx, ty] for a weak-perspective camera).
    """

    def __init__(self, grid: UVGrid, camera: Camera, options: RefineOptions, B: int,
                 points: Optional[IUVPoints] = None, keypoints_2d: Optional[Tensor] = None,
                 keypoints_3d: Optional[Tensor] = None, keypoint_matrix: Optional[Tensor] = None,
                 fixed_transl: Optional[Tensor] = None) -> None:
        self.grid, self.camera, self.opt, self.B = grid, camera, options, B
        ref = grid.template
        self.dtype, self.device = ref.dtype, ref.device
        J, S = grid.num_joints, grid.num_betas
        self.J, self.S, self.n = J, S, 3 * J + S + 3
        self.weak = isinstance(camera, WeakPerspectiveCamera)
        parents = grid.parents.tolist()
        self.D = subtree_matrix(grid.parents, self.dtype)  # D[k, j] = 1 when j is in k's subtree
        self.parent_index = torch.tensor([max(p, 0) for p in parents], device=self.device)
        self.is_root = torch.tensor([p < 0 for p in parents], device=self.device)
        if not self.weak:
            self.focal, self.center, self.cam_R, self.cam_t = camera.resolved(B, ref, "refine")
        self.fixed_transl = fixed_transl  # the body translation under a weak-perspective camera
        self.points = None
        if points is not None:
            self.points = _grid_points(grid, points)  # (B, N, ...) rest-space data, looked up once
            self.xy = points.xy.to(self.dtype)
            m = points.mask.to(self.dtype)
            self.dp_mask = m
            self.dp_count = m.sum(1).clamp_min(1)
        self.K = None
        if keypoint_matrix is not None:
            self.K = keypoint_matrix.to(self.device, self.dtype)
        self.kp2d = keypoints_2d
        self.kp3d = keypoints_3d
        self.eye_points = torch.eye(J, dtype=self.dtype, device=self.device)

    # --------------------------------------------------------------------------------- kinematics
    def _state(self, x: Tensor):
        b, J, S = x.shape[0], self.J, self.S
        aa = x[:, :3 * J].reshape(b, J, 3)
        betas = x[:, 3 * J:3 * J + S]
        rot = ops.rodrigues(aa)
        rest = self.grid.joint_template[None] + torch.einsum("jcs,bs->bjc", self.grid.joint_shapedirs, betas)
        p, A = ops.kinematic_chain(rot, rest, self.grid.parents)
        G = A[..., :3]
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        Gp = torch.where(self.is_root[None, :, None, None], eye, G[:, self.parent_index])
        M = Gp @ _so3_left_jacobian(aa)  # d omega / d theta_k (world frame)
        # d t_j / d beta = sum over a on the path root..j of (G_parent(a) - G_a) Js_a.
        T = torch.einsum("bjcd,jds->bjcs", Gp - G, self.grid.joint_shapedirs)
        dT = torch.einsum("ja,bacs->bjcs", self.D.T, T)
        return dict(aa=aa, betas=betas, rot=rot, rest=rest, p=p, A=A, G=G, M=M, dT=dT)

    def _skin(self, st, v: Tensor, w: Tensor):
        """Posed points (b, N, 3) (no translation) and the weighted per-joint positions (b, N, 3, J)."""
        b, N = v.shape[:2]
        J = self.J
        # Every point moved rigidly by every joint, as one batched product: (b, N, 4) @ (b, 4, 3 J).
        At = st["A"].permute(0, 3, 2, 1).reshape(b, 4, 3 * J)
        y = torch.baddbmm(At[:, 3:4], v, At[:, :3]).view(b, N, 3, J)
        wy = y * w[:, :, None, :]
        return wy.sum(-1), wy

    def _skin_jacobian(self, st, wy: Tensor, w: Tensor, Sd: Tensor, P: Tensor):
        """Jacobians of a residual with d residual / d point = P (b, N, R, 3) w.r.t. pose (b, N, R, 3J)
        and betas (b, N, R, S), from :meth:`_skin`'s weighted positions."""
        b, N, R = P.shape[:3]
        J = self.J
        X = wy @ self.D.T                                   # (b, N, 3, J): subtree sums of k = 0..J-1
        W = w @ self.D.T                                    # (b, N, J): subtree weights
        a = X - W[:, :, None, :] * st["p"].transpose(1, 2)[:, None]  # lever arm of each joint's rotation
        a = a[:, :, None]                                   # (b, N, 1, 3, J)
        p = P[..., None]                                    # (b, N, R, 3, 1)
        # (a x p)_c for every joint, then contracted with M_k = d omega / d theta_k: (a x p)^T M_k.
        c0 = a[:, :, :, 1] * p[:, :, :, 2] - a[:, :, :, 2] * p[:, :, :, 1]
        c1 = a[:, :, :, 2] * p[:, :, :, 0] - a[:, :, :, 0] * p[:, :, :, 2]
        c2 = a[:, :, :, 0] * p[:, :, :, 1] - a[:, :, :, 1] * p[:, :, :, 0]   # each (b, N, R, J)
        M = st["M"][:, None, None]                          # (b, 1, 1, J, 3, 3)
        Jpose = (c0[..., None] * M[..., 0, :] + c1[..., None] * M[..., 1, :] + c2[..., None] * M[..., 2, :])
        Gw = (w @ st["G"].reshape(b, J, 9)).view(b, N, 3, 3)
        dxdb = Gw @ Sd + (w @ st["dT"].reshape(b, J, -1)).view(b, N, 3, -1)
        return Jpose.reshape(b, N, R, 3 * J), P @ dxdb

    def _project(self, x: Tensor, c: Tensor, rows: Tensor, jac: bool):
        """Image positions (b, N, 2) of posed points x (without translation) and, with jac, d proj / d x
        (b, N, 2, 3) and d proj / d c (b, N, 2, 3)."""
        if self.weak:
            s, tt = c[:, None, :1], c[:, None, 1:]
            xt = x[..., :2] + tt
            proj = s * xt
            if not jac:
                return proj, None, None
            b, N = x.shape[:2]
            P = x.new_zeros(b, N, 2, 3)
            P[..., 0, 0] = s[..., 0]
            P[..., 1, 1] = s[..., 0]
            Jc = torch.cat([xt[..., None], P[..., :2]], dim=-1)  # d/ds, d/dtx, d/dty
            return proj, P, Jc
        R, tc, f, ctr = _sel(self.cam_R, rows), _sel(self.cam_t, rows), _sel(self.focal, rows), _sel(self.center, rows)
        X = torch.einsum("bij,bnj->bni", R, x + c[:, None]) + tc[:, None]
        Z = X[..., 2:].clamp_min(MIN_DEPTH)
        proj = f[:, None] * X[..., :2] / Z + ctr[:, None]
        if not jac:
            return proj, None, None
        fz = f[:, None] / Z  # (b, N, 2)
        zero = torch.zeros_like(fz[..., 0])
        dX = torch.stack([torch.stack([fz[..., 0], zero, -fz[..., 0] * X[..., 0] / Z[..., 0]], -1),
                          torch.stack([zero, fz[..., 1], -fz[..., 1] * X[..., 1] / Z[..., 0]], -1)], -2)
        P = dX @ R[:, None]
        return proj, P, P

    # --------------------------------------------------------------------------------- residuals
    def _rest_points(self, st, rows: Optional[Tensor]) -> Tensor:
        """The DensePose points' rest positions (b, N, 3) at this shape (and pose, for pose blend shapes)."""
        d = self.points
        b = st["betas"].shape[0]
        v = _sel(d.template, rows) + torch.einsum("bncs,bs->bnc", _sel(d.shapedirs, rows), st["betas"])
        if d.posedirs is not None:
            eye = torch.eye(3, dtype=v.dtype, device=v.device)
            v = v + torch.einsum("bncf,bf->bnc", _sel(d.posedirs, rows), (st["rot"][:, 1:] - eye).reshape(b, -1))
        return v

    def densepose_normal_equations(self, x: Tensor, rows: Optional[Tensor] = None, st=None):
        """The DensePose term's value (b,) and its IRLS normal equations H (b, n, n), g (b, n) (weighted by
        ``dp_weight``), accumulated point by point by :func:`smplfast.ops.point_normal_equations`."""
        o = self.opt
        st = self._state(x) if st is None else st
        d = self.points
        c = x[:, 3 * self.J + self.S:]
        cam = (dict(fixed_transl=_sel(self.fixed_transl, rows)) if self.weak else
               dict(cam_R=_sel(self.cam_R, rows), cam_t=_sel(self.cam_t, rows), focal=_sel(self.focal, rows),
                    center=_sel(self.center, rows)))
        return ops.point_normal_equations(self.grid.parents, st["A"], st["p"], st["M"], st["dT"],
                                          self._rest_points(st, rows), _sel(d.shapedirs, rows), _sel(d.weights, rows),
                                          _sel(self.xy, rows), _sel(self.dp_mask, rows), _sel(self.dp_count, rows), c,
                                          weak=self.weak, squared=o.squared_dp, weight=o.dp_weight, eps=o.irls_eps,
                                          **cam)

    def residuals(self, x: Tensor, rows: Optional[Tensor] = None, jacobian: bool = True, densepose: bool = True,
                  st=None) -> Dict[str, tuple]:
        """Unweighted residuals and their Jacobians per term: ``{"dp": (e (b, N, 2), J (b, N, 2, n)),
        "kp2d": (e (b, K, 2), J), "kp3d": (e (b, K, 3), J)}`` for the terms present (``densepose=False``
        leaves the DensePose term out)."""
        J, S = self.J, self.S
        st = self._state(x) if st is None else st
        c = x[:, 3 * J + S:]
        out = {}
        if self.points is not None and densepose:
            d = self.points
            v = self._rest_points(st, rows)
            w = _sel(d.weights, rows)
            xb, wy = self._skin(st, v, w)
            if self.weak:
                xb = xb + _sel(self.fixed_transl, rows)[:, None]
            proj, P, Jc = self._project(xb, c, rows, jacobian)
            if jacobian:
                Jp, Jb = self._skin_jacobian(st, wy, w, _sel(d.shapedirs, rows), P)
            e = proj - _sel(self.xy, rows)
            out["dp"] = (e, torch.cat([Jp, Jb, Jc], -1) if jacobian else None)
        if self.kp2d is not None or self.kp3d is not None:
            out.update(self._keypoint_residuals(x, st, c, rows, jacobian))
        return out

    def _keypoints(self, st, P: Optional[Tensor]):
        """Keypoints (b, K, 3) (the skeleton joints, or keypoint_matrix @ joints) and, for
        P (b, K, R, 3), the Jacobians w.r.t. pose and betas (b, K, R, .)."""
        b = st["p"].shape[0]
        w = self.eye_points.expand(b, -1, -1)
        xj, wy = self._skin(st, st["rest"], w)  # a joint is a point skinned by its own joint alone
        Sd = self.grid.joint_shapedirs[None].expand(b, -1, -1, -1)
        if self.K is None:
            if P is None:
                return xj, None, None
            return (xj,) + self._skin_jacobian(st, wy, w, Sd, P)
        xk = torch.einsum("kj,bjc->bkc", self.K, xj)
        if P is None:
            return xk, None, None
        eye3 = torch.eye(3, dtype=P.dtype, device=P.device).expand(b, self.J, 3, 3)
        Jp, Jb = self._skin_jacobian(st, wy, w, Sd, eye3)
        Jp = torch.einsum("kj,bjcq->bkcq", self.K, Jp)
        Jb = torch.einsum("kj,bjcq->bkcq", self.K, Jb)
        return xk, P @ Jp, P @ Jb

    def _keypoint_residuals(self, x, st, c, rows, jacobian):
        out = {}
        b = x.shape[0]
        if self.kp2d is not None:
            tgt = _sel(self.kp2d, rows)
            xk, _, _ = self._keypoints(st, None)
            if self.weak:
                xk = xk + _sel(self.fixed_transl, rows)[:, None]
            proj, P, Jc = self._project(xk, c, rows, jacobian)
            J = None
            if jacobian:
                _, Jp, Jb = self._keypoints(st, P)
                J = torch.cat([Jp, Jb, Jc], -1)
            out["kp2d"] = (proj - tgt[..., :2], J)
        if self.kp3d is not None:
            tgt = _sel(self.kp3d, rows)[..., :3]
            nk = tgt.shape[1]
            eye3 = torch.eye(3, dtype=x.dtype, device=x.device).expand(b, nk, 3, 3)
            xk, Jp, Jb = self._keypoints(st, eye3 if jacobian else None)
            root = self.opt.keypoints_3d_root
            if root is None:
                if not self.weak:
                    xk = xk + c[:, None]
                e = xk - tgt
                if jacobian:
                    Jc = eye3 if not self.weak else torch.zeros_like(eye3)
                    J = torch.cat([Jp, Jb, Jc], -1)
            else:
                e = (xk - xk[:, root:root + 1]) - (tgt - tgt[:, root:root + 1])
                if jacobian:
                    J = torch.cat([Jp - Jp[:, root:root + 1], Jb - Jb[:, root:root + 1],
                                   torch.zeros_like(eye3)], -1)
            out["kp3d"] = (e, J if jacobian else None)
        return out

    # ------------------------------------------------------------------------- objective + normal eq.
    def evaluate(self, x: Tensor, rows: Optional[Tensor] = None, normal_equations: bool = True):
        """(objective (b,), H (b, n, n), g (b, n), per-term values) at x for samples ``rows`` (None: all)."""
        o = self.opt
        fused = normal_equations and o.fused and self.points is not None
        st = self._state(x)
        res = self.residuals(x, rows, jacobian=normal_equations, densepose=not fused, st=st)
        b, n = x.shape
        f = x.new_zeros(b)
        terms = {}
        H = x.new_zeros(b, n, n) if normal_equations else None
        g = x.new_zeros(b, n) if normal_equations else None
        if fused:
            val, H, g = self.densepose_normal_equations(x, rows, st)
            terms["densepose"] = val
            f = f + o.dp_weight * val

        def add(e, J, s2):
            # Rows weighted by s2 (b, m): H += J^T diag(s2) J, g += J^T diag(s2) e.
            nonlocal H, g
            if not normal_equations:
                return
            Jf = J.reshape(b, -1, n)
            Jw = Jf * s2.reshape(b, -1, 1)
            H = torch.baddbmm(H, Jw.transpose(1, 2), Jf)
            g = torch.baddbmm(g.unsqueeze(-1), Jw.transpose(1, 2), e.reshape(b, -1, 1)).squeeze(-1)

        if "dp" in res:
            e, J = res["dp"]
            m = _sel(self.dp_mask, rows)
            cnt = _sel(self.dp_count, rows)
            sq = (e * e).sum(-1)
            if o.squared_dp:
                val = (sq * m).sum(1) / cnt
                s2 = (o.dp_weight * m / cnt[:, None])[..., None].expand_as(e)
            else:
                dist = torch.where(sq > 0, sq, 1.0).sqrt() * (sq > 0)
                val = (dist * m).sum(1) / cnt
                s2 = (o.dp_weight * m / cnt[:, None] / (2 * dist.clamp_min(o.irls_eps)))[..., None].expand_as(e)
            terms["densepose"] = val
            f = f + o.dp_weight * val
            add(e, J, s2)
        for key, name, wgt, eps in (("kp2d", "keypoints_2d", o.kp2d_weight, o.irls_eps),
                                    ("kp3d", "keypoints_3d", o.kp3d_weight, o.irls_eps_3d)):
            if key in res:
                e, J = res[key]
                conf = _sel((self.kp2d if key == "kp2d" else self.kp3d), rows)[..., -1]
                nk = e.shape[1]
                val = (conf[..., None] * e.abs()).sum((1, 2)) / nk
                terms[name] = val
                f = f + wgt * val
                add(e, J, wgt * conf[..., None] / nk / (2 * e.abs().clamp_min(eps)))
        if o.shape_bound_weight:
            betas = x[:, 3 * self.J:3 * self.J + self.S]
            val = shape_bound(betas, o.shape_bound)
            terms["shape_bound"] = val
            f = f + o.shape_bound_weight * val
            if normal_equations:
                # priors' IRLS residual has r^2 = h at the linearisation point; halving it gives the
                # majoriser h^2 / (2 h0) + h0 / 2, whose gradient is the bound's own.
                r, Jb = shape_bound_residuals(betas, o.shape_bound, betas)
                sl = slice(3 * self.J, 3 * self.J + self.S)
                d = torch.diagonal(Jb, dim1=1, dim2=2)
                H[:, sl, sl] += torch.diag_embed(0.5 * o.shape_bound_weight * d * d)
                g[:, sl] += 0.5 * o.shape_bound_weight * d * r
        return f, H, g, terms


# ------------------------------------------------------------------------------------- the solver
def _check_keypoints(name: str, kp, B: int, K: int, dim: int, like: Tensor) -> Optional[Tensor]:
    """(B, K, dim) or (B, K, dim + 1) [..., confidence] -> (B, K, dim + 1); NaN rows become missing."""
    if kp is None:
        return None
    if not torch.is_tensor(kp):
        raise TypeError(f"refine: {name} must be a torch.Tensor; got {type(kp).__name__}")
    if kp.dim() != 3 or kp.shape[0] != B or kp.shape[1] != K or kp.shape[2] not in (dim, dim + 1):
        raise ValueError(f"refine: {name} must be ({B}, {K}, {dim}) or ({B}, {K}, {dim + 1}) with a confidence "
                         f"column; got {tuple(kp.shape)}")
    if kp.dtype != like.dtype or kp.device != like.device:
        raise TypeError(f"refine: {name} must be {like.dtype} on {like.device} (the grid's); got {kp.dtype} on "
                        f"{kp.device}")
    if kp.shape[2] == dim:
        kp = torch.cat([kp, torch.ones_like(kp[..., :1])], -1)
    bad = ~torch.isfinite(kp).all(-1)
    kp = torch.where(bad[..., None], torch.zeros_like(kp), kp)
    if bool((kp[..., -1] < 0).any()):
        raise ValueError(f"refine: {name} confidences must be >= 0")
    return kp


def refine(init_params: BodyParams, iuv_points: Optional[IUVPoints] = None, keypoints_2d: Optional[Tensor] = None,
           keypoints_3d: Optional[Tensor] = None, camera: Optional[Camera] = None, grid: Optional[UVGrid] = None,
           options: Optional[RefineOptions] = None, keypoint_matrix: Optional[Tensor] = None,
           **overrides) -> RefineResult:
    """HoloPose's test-time refinement of B bodies from a regressor-like initialisation.

    init_params: :class:`BodyParams` (the grid's dtype and device, finite).  iuv_points:
    :class:`IUVPoints` DensePose correspondences.  keypoints_2d: (B, K, 2) or (B, K, 3) with
    confidences (NaN rows are missing), in the camera's image units.  keypoints_3d: (B, K, 3) or
    (B, K, 4), metres, compared root-relative (``options.keypoints_3d_root``).  Keypoints are the
    grid's 24 skeleton joints (SMPL order), or ``keypoint_matrix (K, 24) @ joints``.  camera:
    :class:`PerspectiveCamera` (fixed; the body translation is refined) or
    :class:`WeakPerspectiveCamera` (refined with the body).  grid: the :class:`UVGrid` (default: the
    bundled model at R = 32, in the parameters' dtype).  options: :class:`RefineOptions`; keyword
    overrides such as ``max_iters=10`` are applied on top.

    Returns a :class:`RefineResult`.  Never NaN: a sample whose refinement is not finite keeps its
    initialisation (``fell_back``).
    """
    t_start = time.perf_counter()
    opt = options or RefineOptions()
    for k, v in overrides.items():
        if not hasattr(opt, k):
            raise TypeError(f"refine: unexpected argument {k!r}")
        opt = RefineOptions(**{**opt.__dict__, k: v})
    if opt.method not in ("gn", "lm"):
        raise ValueError(f"refine: method must be 'gn' or 'lm'; got {opt.method!r}")
    if not 1 <= int(opt.cg_iters) <= 1000:
        raise ValueError(f"refine: cg_iters must be in 1..1000; got {opt.cg_iters}")
    if opt.max_iters < 0:
        raise ValueError(f"refine: max_iters must be >= 0; got {opt.max_iters}")
    if not isinstance(init_params, BodyParams):
        raise TypeError(f"refine: init_params must be a BodyParams; got {type(init_params).__name__}")
    if grid is None:
        grid = UVGrid.from_model(None, resolution=32, dtype=init_params.betas.dtype).to(init_params.betas.device)
    if not isinstance(grid, UVGrid):
        raise TypeError(f"refine: grid must be a UVGrid; got {type(grid).__name__}")
    params = init_params.check("refine", grid.num_betas)
    ref = grid.template
    if params.betas.dtype != ref.dtype or params.betas.device != ref.device:
        raise TypeError(f"refine: init_params must be {ref.dtype} on {ref.device} (the grid's); got "
                        f"{params.betas.dtype} on {params.betas.device}")
    for name in ("betas", "body_pose", "global_orient", "transl"):
        if not bool(torch.isfinite(getattr(params, name)).all()):
            raise ValueError(f"refine: init_params.{name} contains NaN or Inf")
    if camera is None:
        raise ValueError("refine: camera is required (PerspectiveCamera or WeakPerspectiveCamera)")
    if not isinstance(camera, (PerspectiveCamera, WeakPerspectiveCamera)):
        raise TypeError(f"refine: camera must be a PerspectiveCamera or a WeakPerspectiveCamera; got "
                        f"{type(camera).__name__}")
    if iuv_points is None and keypoints_2d is None and keypoints_3d is None:
        raise ValueError("refine: give at least one of iuv_points, keypoints_2d, keypoints_3d")
    B = params.batch_size
    weak = isinstance(camera, WeakPerspectiveCamera)
    if weak:
        cam0 = camera.check(B, ref, "refine")
        if not bool(torch.isfinite(cam0).all()):
            raise ValueError("refine: camera params contain NaN or Inf")
    else:
        camera.resolved(B, ref, "refine")
    pts = None
    if iuv_points is not None:
        if not isinstance(iuv_points, IUVPoints):
            raise TypeError(f"refine: iuv_points must be an IUVPoints; got {type(iuv_points).__name__}")
        pts = iuv_points.check("refine")
        if pts.batch_size != B:
            raise ValueError(f"refine: iuv_points has {pts.batch_size} samples but init_params has {B}")
        if pts.uv.dtype != ref.dtype or pts.uv.device != ref.device:
            raise TypeError(f"refine: iuv_points must be {ref.dtype} on {ref.device}; got {pts.uv.dtype} on "
                            f"{pts.uv.device}")
    K = grid.num_joints
    if keypoint_matrix is not None:
        if not torch.is_tensor(keypoint_matrix) or keypoint_matrix.dim() != 2 or keypoint_matrix.shape[1] != K:
            got = tuple(keypoint_matrix.shape) if torch.is_tensor(keypoint_matrix) else type(keypoint_matrix).__name__
            raise ValueError(f"refine: keypoint_matrix must be (K, {K}); got {got}")
        sums = keypoint_matrix.sum(1)
        if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-5)):
            raise ValueError("refine: each row of keypoint_matrix must sum to 1 (a keypoint is an affine "
                             f"combination of joints); got row sums {sums.tolist()[:5]}...")
        K = keypoint_matrix.shape[0]
    kp2d = _check_keypoints("keypoints_2d", keypoints_2d, B, K, 2, ref)
    kp3d = _check_keypoints("keypoints_3d", keypoints_3d, B, K, 3, ref)
    root = opt.keypoints_3d_root
    if kp3d is not None and root is not None and not 0 <= int(root) < K:
        raise ValueError(f"refine: keypoints_3d_root must be in [0, {K}) or None; got {root}")

    problem = RefineProblem(grid, camera, opt, B, pts, kp2d, kp3d, keypoint_matrix,
                            fixed_transl=params.transl if weak else None)
    c0 = cam0 if weak else params.transl
    x0 = torch.cat([params.pose, params.betas, c0], 1).detach()
    has_data = torch.zeros(B, dtype=torch.bool, device=ref.device)
    if pts is not None:
        has_data |= pts.mask.any(1)
    for kp in (kp2d, kp3d):
        if kp is not None:
            has_data |= (kp[..., -1] > 0).any(1)

    with torch.no_grad():
        if opt.method == "lm":
            def evaluate(x, rows):
                f, H, g, _ = problem.evaluate(x, rows)
                return f, H, g

            res = levenberg_marquardt(evaluate, x0, LMOptions(max_iters=opt.max_iters, ftol=opt.ftol,
                                                              linear_solver=opt.linear_solver,
                                                              cg_iters=opt.cg_iters, max_damping=opt.max_damping,
                                                              record_history=True), active=has_data)
            x, iters, converged = res.x, res.iterations, res.converged
            hist = torch.stack([h for _, h in res.history], 1) if res.history else x0.new_zeros(B, 0)
            hist_t = [t for t, _ in res.history]
        else:
            x, hist, iters, converged, hist_t = _gauss_newton(problem, x0, opt, has_data)
        finite = torch.isfinite(x).all(1)
        keep = finite & has_data
        x = torch.where(keep[:, None], x, x0)
        f, _, _, terms = problem.evaluate(x, normal_equations=False)
        ok = torch.isfinite(f)
        if not bool(ok.all()):  # a finite x whose objective overflows: back to the start as well
            x = torch.where(ok[:, None], x, x0)
            keep = keep & ok
            f, _, _, terms = problem.evaluate(x, normal_equations=False)
        hist = torch.where(torch.isfinite(hist), hist, f[:, None]) if hist.numel() else hist
    J, S = grid.num_joints, grid.num_betas
    out = BodyParams(betas=x[:, 3 * J:3 * J + S].clone(), body_pose=x[:, 3:3 * J].clone(),
                     global_orient=x[:, :3].clone(),
                     transl=params.transl.clone() if weak else x[:, 3 * J + S:].clone())
    cam_out = WeakPerspectiveCamera(x[:, 3 * J + S:].clone()) if weak else camera
    return RefineResult(out, cam_out, f, hist, terms, iters, converged & keep, ~keep,
                        time.perf_counter() - t_start, hist_t)


def _gauss_newton(problem: RefineProblem, x0: Tensor, opt: RefineOptions, active: Tensor):
    """Gauss-Newton with CG-solved steps (HoloPose's layer), per-sample acceptance and a damping that
    only grows after a rejected step.  Returns x, loss history (B, T + 1), iterations, converged."""
    B, n = x0.shape
    device, dtype = x0.device, x0.dtype
    x = x0.clone()
    f, H, g, _ = problem.evaluate(x)
    lam = torch.full((B,), opt.init_damping, dtype=dtype, device=device)
    live = active.clone() & torch.isfinite(f)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    iters = torch.zeros(B, dtype=torch.long, device=device)
    history = [torch.where(active, f, f.new_zeros(()))]
    times = [0.0]
    t0 = time.perf_counter()
    for _ in range(opt.max_iters):
        if not bool(live.any()):
            break
        diag = torch.diagonal(H, dim1=1, dim2=2)
        Dg = torch.maximum(diag, 1e-6 * diag.mean(1, keepdim=True).clamp_min(1e-12))
        step, _, _ = ops.conjugate_gradient_solve(H, -g, lam, Dg, max_iters=int(opt.cg_iters), active=live)
        x_new = x + step
        f_new, H_new, g_new, _ = problem.evaluate(x_new)
        iters += live.long()
        accept = live & torch.isfinite(f_new) & (f_new <= f) & torch.isfinite(x_new).all(1)
        small = accept & ((f - f_new) <= opt.ftol * f.abs())
        # A rejected step jumps to at least Levenberg-Marquardt's usual damping (1e-3) rather than
        # creeping up from the near-zero Gauss-Newton value one decade per wasted iteration.
        lam = torch.where(accept, (lam * 0.1).clamp_min(opt.init_damping), (lam * 10).clamp_min(1e-3))
        x = torch.where(accept[:, None], x_new, x)
        f = torch.where(accept, f_new, f)
        H = torch.where(accept[:, None, None], H_new, H)
        g = torch.where(accept[:, None], g_new, g)
        stalled = live & (lam > opt.max_damping)
        converged |= small | stalled
        live &= ~(small | stalled)
        history.append(torch.where(active, f, f.new_zeros(())))
        times.append(time.perf_counter() - t0)
    return x, torch.stack(history, 1), iters, converged, times
