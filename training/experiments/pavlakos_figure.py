"""Picture of Pavlakos et al.'s whole network on ``wild_test`` crops: docs/images/pavlakos_fits.jpg.

    python training/experiments/pavlakos_figure.py --data data/synth --runs runs/pavlakos \\
        --out docs/images/pavlakos_fits.jpg

Rows, for people at chosen quantiles of the fine-tuned network's ``pve_model`` (so the picture shows a
typical and a hard case, not the best): the crop with Human2D's keypoints (argmax of the last stack) and
its silhouette (body probability > 0.5, tinted); the body of the network before fine-tuning
(``pipeline``: Human2D + the ``rotvert`` / ``shape`` priors) and after (``e2e_full``); the ground truth.
Each body is drawn with the camera the fine-tuning uses: the weak-perspective (s, t) fitted by least
squares to the network's own keypoints (the ground truth's: to the annotated keypoints), rendered as a distant perspective camera (focal 5000 px,
depth 2·5000 / (s·res)). Numbers: per-person ``pve_model`` (mm, no alignment) of the two networks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TILE = 128
QUANTILES = (0.25, 0.5, 0.75, 0.9)
FAR_FOCAL = 5000.0


def _pipeline(run: Path):
    from smplfast_train.config import config_from_dict
    from smplfast_train.loop import load_checkpoint
    from smplfast_train.pavlakos import PavlakosPipeline
    from smplfast_train.trainers.pavlakos_human2d import human2d_net

    ckpt = load_checkpoint(run / "ckpt" / "last.pt")
    cfg = config_from_dict(ckpt["config"])
    net = PavlakosPipeline(human2d_net(cfg), width=cfg.prior_width, kp_extract=cfg.e2e_kp_extract)
    net.load_state_dict(ckpt["model"])
    return net.eval(), cfg


def _eval(run: Path) -> dict:
    ev = sorted((run / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return json.loads(ev[-1].read_text())["results"]["wild_test"]


def draw(data: Path, runs: Path, out: Path, quantiles=QUANTILES, tile: int = TILE) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from smplfast_train.pavlakos import annotated_keypoints, weak_perspective_fit

    from smplfast.data import SPINDataset
    from smplfast.data.augment import tensor_to_image
    from smplfast.render import PerspectiveCamera, overlay

    torch.set_num_threads(1)
    nets = {name: _pipeline(runs / f"{name}_matched_s0") for name in ("pipeline", "e2e_full")}
    res = nets["e2e_full"][1].hg_in_res
    err = {name: np.asarray(_eval(runs / f"{name}_matched_s0")["per_sample"]["pve_model"]) for name in nets}
    order = np.argsort(err["e2e_full"])
    people = [int(order[min(len(order) - 1, int(q * len(order)))]) for q in quantiles]
    ds = SPINDataset(data / "wild_test" / "synth_spin.npz", data / "wild_test", is_train=False, img_res=res)
    import smplfast

    smpl_kp = smplfast.SMPL(keypoints="lsp_14", create_betas=False, create_global_orient=False,
                            create_body_pose=False, create_transl=False)
    faces = smpl_kp.faces
    colors = {"pipeline": (0.90, 0.55, 0.45), "e2e_full": (0.50, 0.65, 0.92), "GT": (0.55, 0.80, 0.55)}
    rows = ("human2d", "pipeline", "e2e_full", "GT")
    titles = {"human2d": "Human2D\nkeypoints,\nsilhouette", "pipeline": "before\nfine-tuning",
              "e2e_full": "after\nfine-tuning", "GT": "ground\ntruth"}
    def far_camera(joints, kp):
        """The weak-perspective (s, t) of the joints fitted to ``kp``, as a distant perspective camera."""
        s, t, _ = weak_perspective_fit(joints[..., :2], kp[..., :2], kp[..., 2])
        s = float(s[0])
        return PerspectiveCamera(translation=torch.tensor([float(t[0, 0]) / s, float(t[0, 1]) / s,
                                                           2 * FAR_FOCAL / (s * res)], dtype=torch.float64),
                                 focal=FAR_FOCAL, center=torch.tensor([res / 2.0, res / 2.0], dtype=torch.float64))

    tiles = []
    with torch.no_grad():
        for i in people:
            item = ds[i]
            img = item["img"][None]
            crop = tensor_to_image(item["img"]).copy()
            col = {}
            for name, (net, _) in nets.items():
                pose, betas, aux = net(images=img)
                body = smpl_kp(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
                kp = aux["keypoints"]
                col[name] = overlay(crop, body.vertices[0].double(), faces, far_camera(body.joints, kp), color=colors[name])
                if name == "e2e_full":
                    sil = torch.nn.functional.interpolate(aux["silhouette"], size=(res, res), mode="bilinear")[0, 0]
                    h2d = crop.astype(np.float64)
                    h2d[sil.numpy() > 0.5] = 0.6 * h2d[sil.numpy() > 0.5] + 0.4 * np.array([90.0, 160.0, 230.0])
                    col["human2d"] = (h2d.astype(np.uint8), kp[0].numpy())
            gt = smpl_kp(global_orient=item["pose"][None, :3], body_pose=item["pose"][None, 3:], betas=item["betas"][None])
            ann = annotated_keypoints(item["keypoints"][None])
            col["GT"] = overlay(crop, gt.vertices[0].double(), faces, far_camera(gt.joints, ann), color=colors["GT"])
            tiles.append(col)

    left, head, gap, dpi = 84, 30, 8, 100
    W = left + len(people) * (tile + gap)
    H = head + len(rows) * tile + 8
    fig = plt.figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    for r, row in enumerate(rows):
        fig.text(4 / W, 1 - (head + (r + 0.5) * tile) / H, titles[row], ha="left", va="center", fontsize=8,
                 weight="bold", color=tuple(0.75 * c for c in colors.get(row, (0, 0, 0))))
    for p, (i, col) in enumerate(zip(people, tiles)):
        x0 = left + p * (tile + gap)
        fig.text((x0 + tile / 2) / W, 1 - 4 / H, f"#{i}: {err['pipeline'][i]:.0f} → {err['e2e_full'][i]:.0f} mm",
                 ha="center", va="top", fontsize=8)
        for r, row in enumerate(rows):
            ax = fig.add_axes([x0 / W, 1 - (head + (r + 1) * tile) / H, tile / W, tile / H])
            ax.set_axis_off()
            if row == "human2d":
                im, kp = col[row]
                ax.imshow(im, extent=(0, res, res, 0))
                vis = kp[:, 2] > 0
                ax.scatter((kp[vis, 0] + 1) * res / 2, (kp[vis, 1] + 1) * res / 2, s=6, c="yellow", edgecolors="black",
                           linewidths=0.3)
                ax.set_xlim(0, res)
                ax.set_ylim(res, 0)
            else:
                ax.imshow(col[row], extent=(0, res, res, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, pil_kwargs={"quality": 88} if out.suffix == ".jpg" else None)
    plt.close(fig)
    return people


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synth", type=Path)
    ap.add_argument("--runs", default="runs/pavlakos", type=Path)
    ap.add_argument("--out", default="docs/images/pavlakos_fits.jpg", type=Path)
    args = ap.parse_args(argv)
    print(draw(args.data, args.runs, args.out))


if __name__ == "__main__":
    main()
