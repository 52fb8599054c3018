"""The main job (``smplfast demo``): it runs end to end, and every body's fit converges."""
import json

import torch

from smplfast.body import SMPL
from smplfast.body.samplers import sample_betas, sample_poses
from smplfast.demo import fit_to_joints, run_demo


def test_fit_to_joints_converges_for_every_body():
    """Per-body LM from the torso-aligned rest pose (plus restarts) reaches every plausible body: no
    batch-wide optimiser stalling on the hardest body."""
    torch.manual_seed(0)
    model = SMPL()
    B = 12
    pose, betas = sample_poses(B, seed=5), sample_betas(B, num_betas=10, seed=5)
    with torch.no_grad():
        target = model(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas, transl=0.1 * torch.randn(B, 3))
    params, history = fit_to_joints(model, target.joints, iterations=50)
    with torch.no_grad():
        fit = model(**params)
    per_body = (fit.joints - target.joints).norm(dim=-1).mean(1)
    assert float(per_body.max()) < 5e-3, per_body
    assert history[-1] <= history[0] and history[-1] < 2e-3


def test_run_demo_end_to_end(tmp_path):
    res = run_demo(out_dir=str(tmp_path), batch=4, seed=1)
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    assert saved["fit_worst_body_joint_error_mm"] < 5.0
    assert saved["threads"] == torch.get_num_threads()
    assert (tmp_path / "demo.png").is_file() and (tmp_path / "smplify.png").is_file()
    assert res["forward"][0]["max_abs_diff_m"] < 1e-5


def test_draw_mesh_front_and_side(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from smplfast.body.plot import draw_mesh

    model = SMPL()
    v = model().vertices[0].detach().numpy()
    fig, axes = plt.subplots(1, 2)
    for ax, view in zip(axes, ("front", "side")):
        draw_mesh(ax, v, np.asarray(model.faces, dtype=np.int64), (0.5, 0.6, 0.8), view)
        assert len(ax.collections) == 1
    fig.savefig(tmp_path / "mesh.png")
    plt.close(fig)
