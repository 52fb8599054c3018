"""The fitting problems shared by benchmarks/test_smplify.py and benchmarks/smplify_convergence.py."""
import math

import torch

import smplfast
from smplfast.body import samplers
from smplfast.body.default_model import default_model_path
from smplfast.demo import smplify_problem
from smplfast.fitting import KeypointModel, MultiViewSMPLify, SMPLify

F = 5000.0
CENTER = 112.0
SPIN_STYLE_ITERS = 100


def fitter_model():
    return smplfast.SMPL(keypoints="spin_49", create_betas=False, create_global_orient=False, create_body_pose=False,
                         create_transl=False)


class SmplxSpinModel(torch.nn.Module):
    """SPIN's model on smplx: the full smplx SMPL forward, then the 49 keypoints as a regressor over
    [24 joints; all vertices] (SPIN's J_regressor_extra step), so Adam pays what SPIN pays."""

    def __init__(self, device):
        super().__init__()
        import smplx
        self.smplx = smplx.SMPL(model_path=default_model_path("neutral"), create_betas=False,
                                create_global_orient=False, create_body_pose=False, create_transl=False).to(device)
        ref = fitter_model()
        km = KeypointModel.from_smpl(ref)
        J, V = 24, ref.get_num_verts()
        dense = km.dense_regressor()
        full = torch.zeros(dense.shape[0], J + V, dtype=dense.dtype)
        full[:, :J] = dense[:, :J]
        full[:, J + ref._extra_support] = dense[:, J:]
        self.register_buffer("regressor", full.to(device))
        self.num_betas = 10

    def forward(self, global_orient, body_pose, betas, **kwargs):
        out = self.smplx(global_orient=global_orient, body_pose=body_pose, betas=betas)
        pts = torch.cat([out.joints[:, :24], out.vertices], dim=1)
        out.joints = torch.matmul(self.regressor, pts)
        return out


def bodies(model, n, seed, device="cpu"):
    args, joints, _ = smplify_problem(model, n, seed)
    return [x.to(device) for x in args], joints


def make_problem(batch, device, solver, record_history=False):
    model = fitter_model()
    args, _ = bodies(model, batch, seed=1, device=device)
    if solver == "adam-smplx":
        fitter = SMPLify(model=SmplxSpinModel(device), optimizer="adam", device=device, num_iters=SPIN_STYLE_ITERS)
    elif solver == "adam":
        fitter = SMPLify(model=model, optimizer="adam", device=device, num_iters=SPIN_STYLE_ITERS)
    else:  # "lm" (the fused kernel), "lm-cg", "lm-unfused" (the LM loop driven from Python)
        fitter = SMPLify(model=model, optimizer="lm", device=device, fused=solver != "lm-unfused",
                         linear_solver="cg" if solver == "lm-cg" else "cholesky")
    return fitter, args


def make_multiview_problem(people, views, device, solver):
    model = fitter_model()
    g = torch.Generator().manual_seed(3)
    pose = samplers.sample_poses(people, seed=2)
    betas = samplers.sample_betas(people, num_betas=10, seed=2) * 0.7
    flip = samplers.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    inits, bs, ts, kps = [], [], [], []
    for v in range(views):
        yaw = samplers.axis_angle_to_matrix(torch.tensor([0.0, 2 * math.pi * v / views, 0.0]))
        go = samplers.matrix_to_axis_angle(flip @ yaw @ samplers.axis_angle_to_matrix(pose[:, :3]))
        full = torch.cat([go, pose[:, 3:]], 1)
        cam_t = torch.tensor([0.0, 0.1, 50.0]).expand(people, 3)
        with torch.no_grad():
            j = model(global_orient=go, body_pose=pose[:, 3:], betas=betas, joints_only=True).joints + cam_t[:, None]
        kp2d = F * j[..., :2] / j[..., 2:] + CENTER + torch.randn(j[..., :2].shape, generator=g)
        kps.append(torch.cat([kp2d, torch.ones_like(kp2d[..., :1])], -1))
        inits.append(full + 0.15 * torch.randn(full.shape, generator=g))
        bs.append(betas + 0.5 * torch.randn(betas.shape, generator=g))
        ts.append(cam_t * 1.05)
    args = [torch.stack(x, 1).to(device) for x in (inits, bs, ts)]
    args.append(torch.full((people, views, 2), CENTER, device=device))
    args.append(torch.stack(kps, 1).to(device))
    fitter = MultiViewSMPLify(model=model, optimizer="lm" if solver.startswith("lm") else solver, device=device,
                              num_iters=SPIN_STYLE_ITERS, fused=solver != "lm-unfused")
    return fitter, args
