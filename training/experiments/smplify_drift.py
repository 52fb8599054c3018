"""How far SMPLify drifts from the ground truth in SPIN's virtual crop (TRAINING_SPEC §6.3 step 4, §8 D4).

    python training/experiments/smplify_drift.py --data data/synth/wild_train --num 500 --pose-prior data/synth/gmm_lab.npz

Synthetic cameras frame people with focal lengths of a few hundred pixels; SPIN's fitter assumes
f = 5000 px in a 224-px crop. Started from the ground truth (pose, betas, and the translation that best
explains the exact 2D joints), SMPLify (mode "spin", LM) runs on the exact ``part_gt`` joints (and,
in a second row, on the annotated ``part`` + simulated OpenPose, what the training loop sees). The
PA-MPJPE / PVE of the result against the ground truth measure the drift; the goal is < 15 mm on exact
joints, otherwise the crop's perspective is too strong for f = 5000.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def drift(data, num=500, pose_prior=None, batch=250) -> dict:
    import numpy as np
    import torch

    import smplfast
    from smplfast.fitting import estimate_translation
    from smplfast_train.eval.metrics import load_eval_models, mesh_metrics
    from smplfast_train.fits import fit_keypoints_px

    z = dict(np.load(Path(data) / "synth_spin.npz"))
    n = min(num, len(z["imgname"]))
    pose = torch.from_numpy(z["pose"][:n]).float()
    betas = torch.from_numpy(z["shape"][:n]).float()
    gender = [str(g) for g in z["gender"][:n]]
    smplify = smplfast.SMPLify(pose_prior=pose_prior)
    smpl = smplfast.SMPL(keypoints="spin_49")
    models = load_eval_models()
    rows = {}
    for name, part, openpose in (("exact part_gt", z["part_gt"], np.zeros_like(z["openpose"])),
                                 ("annotated part + OpenPose", z["part"], z["openpose"])):
        kp = torch.from_numpy(fit_keypoints_px(openpose[:n], part[:n], z["center"][:n], z["scale"][:n])).float()
        out_pose, out_betas, secs = [], [], 0.0
        for s in range(0, n, batch):
            sl = slice(s, s + batch)
            with torch.no_grad():
                j = smpl(global_orient=pose[sl, :3], body_pose=pose[sl, 3:], betas=betas[sl], joints_only=True).joints
            t = estimate_translation(j, kp[sl], 5000.0, img_size=224.0)
            t0 = time.perf_counter()
            r = smplify.fit(pose[sl], betas[sl], t, torch.full((len(j), 2), 112.0), kp[sl])
            secs += time.perf_counter() - t0
            out_pose.append(r.pose)
            out_betas.append(r.betas)
        P = torch.cat(out_pose)
        from smplfast_train.rotations import axis_angle_to_matrix

        m = mesh_metrics(axis_angle_to_matrix(P.reshape(n, 24, 3)), torch.cat(out_betas), pose, betas, gender, models)
        rows[name] = {"pa_mpjpe": float(m["pa_mpjpe"].mean()), "pve": float(m["pve"].mean()),
                      "rot_err": float(m["rot_err"].mean()), "ms_per_sample": 1000 * secs / n}
    return {"data": str(data), "num": n, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--pose-prior", default=None)
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    r = drift(args.data, args.num, args.pose_prior)
    print(json.dumps(r, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
