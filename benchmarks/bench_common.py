"""Inputs and callables shared by the skinning benchmarks and the memory probe."""
import warnings

import torch


def make_inputs(batch: int, device: str = "cpu", requires_grad: bool = False, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(
        global_orient=torch.randn(batch, 3, generator=gen) * 0.5,
        body_pose=torch.randn(batch, 69, generator=gen) * 0.5,
        betas=torch.randn(batch, 10, generator=gen),
        transl=torch.randn(batch, 3, generator=gen) * 0.1,
    )
    return {k: v.to(device).requires_grad_(requires_grad) for k, v in inputs.items()}


def make_runner(impl: str, model_path: str, device: str = "cpu", backward: bool = False, joints_only: bool = False):
    """A function inputs -> None running one forward (and backward of sum of outputs) of `impl`."""
    import smplfast
    from smplfast.body.reference import smpl_reference_forward

    if impl == "smplx":
        import smplx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = smplx.SMPL(model_path=model_path).to(device)

        def forward(p):
            out = model(**p)
            return out.vertices, out.joints
    elif impl == "smplfast":
        model = smplfast.SMPL(model_path=model_path).to(device)

        def forward(p):
            out = model(**p, joints_only=joints_only)
            return out.vertices, out.joints
    elif impl == "reference":
        model = smplfast.SMPL(model_path=model_path).to(device)

        def forward(p):
            return smpl_reference_forward(model, p["betas"], p["body_pose"], p["global_orient"], p["transl"])
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    for prm in model.parameters():
        prm.requires_grad_(False)

    def run(p):
        if backward:
            verts, joints = forward(p)
            loss = joints.sum() if verts is None else verts.sum() + joints.sum()
            loss.backward()
        else:
            with torch.no_grad():
                forward(p)
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def posed_bodies(n: int = 64, seed: int = 0):
    """The rasterizer benchmarks' scene: ``n`` default-model bodies in ``sample_poses`` poses, centred and
    placed 2.5-3 m in front of the camera. Returns vertices (n, V, 3) float32 and faces (F, 3) int64."""
    import numpy as np

    import smplfast
    from smplfast.body.samplers import sample_poses

    model = smplfast.SMPL()
    pose = sample_poses(n, seed=seed)
    with torch.no_grad():
        v = model(global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices
    g = torch.Generator().manual_seed(seed)
    v = v - v.mean(1, keepdim=True)
    v[..., 2] += 2.5 + 0.5 * torch.rand(n, 1, generator=g)
    return v.contiguous(), torch.as_tensor(model.faces.astype(np.int64))
