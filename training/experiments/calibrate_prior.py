"""Calibrate hmr2d_prior's weight: the pose-prior term at about 10 % of SPIN's 2D term at a checkpoint.

    python training/experiments/calibrate_prior.py --ckpt runs/spin_pretrain_lab/ckpt/last.pt \
        --data data/synth --pose-prior data/synth/gmm_lab.npz

On ``--batches`` unaugmented batches of the wild split it measures, for the checkpoint's predictions,
SPIN's 2D loss L_2d and the prior term P = mean over samples of (4.78^2 GMM + 15.2^2 angle), and prints
``w_prior = fraction * w_2d * L_2d / P`` (TRAINING_SPEC §2.5), the value to record in
training/configs/hmr2d_prior.yaml for the tier and pass to the arm.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def calibrate(ckpt_path, data, split="wild_train", pose_prior=None, batches=8, batch_size=64, fraction=0.1,
              device="cpu") -> dict:
    import torch

    import smplfast
    from smplfast.data import SPINDataset
    from smplfast.fitting import MaxMixturePrior, weak_perspective_to_translation
    from smplfast.fitting.smplify import perspective_projection
    from smplfast_train.config import config_from_dict
    from smplfast_train.data import collate, split_npz
    from smplfast_train.heads.hmr import build_hmr
    from smplfast_train.loop import load_checkpoint
    from smplfast_train.losses import keypoint_2d_loss, prior_loss
    from smplfast_train.rotations import matrix_to_axis_angle

    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_dict(ckpt["config"])
    model = build_hmr(cfg.backbone, relu=cfg.hmr_relu, n_iter=cfg.hmr_iters)
    model.load_state_dict(ckpt["model"])
    model.eval()
    npz, root = split_npz(data, split)
    ds = SPINDataset(npz, root, is_train=False, img_res=cfg.img_res)
    smpl = smplfast.SMPL(keypoints="spin_49")
    prior = MaxMixturePrior(pose_prior)
    l2d, lp = [], []
    with torch.no_grad():
        for b in range(batches):
            items = [ds[i] for i in range(b * batch_size, min((b + 1) * batch_size, len(ds)))]
            if not items:
                break
            batch = collate(items)
            out = model(batch["img"])
            B = out.cam.shape[0]
            j = smpl(global_orient=out.rotmat[:, :1], body_pose=out.rotmat[:, 1:], betas=out.betas, pose2rot=False,
                     joints_only=True).joints
            t = weak_perspective_to_translation(out.cam, cfg.focal_length, cfg.img_res)
            kp = perspective_projection(j, torch.eye(3).expand(B, 3, 3), t, cfg.focal_length, torch.zeros(B, 2))
            l2d.append(float(keypoint_2d_loss(kp / (cfg.img_res / 2), batch["keypoints"])))
            aa = matrix_to_axis_angle(out.rotmat).reshape(B, 72)
            lp.append(float(prior_loss(aa, prior, torch.ones(B, dtype=torch.bool))))
    L2d, P = sum(l2d) / len(l2d), sum(lp) / len(lp)
    w = fraction * cfg.w_2d * L2d / P
    return {"checkpoint": str(ckpt_path), "split": split, "batches": len(l2d), "L_2d": L2d, "prior_term": P,
            "fraction": fraction, "w_prior": w}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="wild_train")
    ap.add_argument("--pose-prior", default=None, help="GMM file (default: the shipped prior)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--fraction", type=float, default=0.1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    r = calibrate(args.ckpt, args.data, args.split, args.pose_prior, args.batches, fraction=args.fraction)
    print(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
