"""Static fits for SPIN's fits dictionary: ``{dataset}_static_fits.npz`` for one SPIN npz folder.

    python training/make_static_fits.py --data DATA/wild_train --out runs/spin_static --init mean
    python training/make_static_fits.py --data DATA/wild_train --out FITS_DIR --init gt          # oracle
    python training/make_static_fits.py --data DATA/wild_train --out FITS_DIR --init network --init-npz preds.npz

Every sample is fitted in SMPLify's virtual 224-px crop of its box (SPIN's centre/scale crop, no
augmentation: the fits are stored in the canonical frame), f = 5000, principal point (112, 112), on
SPIN's 49 keypoints = the simulated OpenPose detections (with their confidences) then the annotated
``part`` joints (confidence = visibility).

``--init``:
  * ``mean``: ``SMPLify(mode="smplify4")`` from the pose prior's mean body pose, zero shape and a
    similar-triangles camera, tried facing the camera and facing away (the lower loss is kept);
  * ``gt``: the file's own ``pose`` / ``shape`` (oracle; read even where ``has_smpl`` = 0), with the loss
    of a translation-only robust refit;
  * ``network``: ``SMPLify(mode="spin")`` from an initialisation in ``--init-npz`` (keys ``pose``
    (N, 72) canonical frame, ``betas`` (N, 10), and ``cam_t`` (N, 3) in the virtual crop's camera or
    ``cam`` (N, 3) weak-perspective [s, tx, ty]); e.g. a network's predictions on the un-augmented crops.

The dictionary's quality against the hidden ground truth (PA-MPJPE on J14, PVE, mm) and the time
taken are printed and stored in the file's ``meta``. ``--out`` is a folder; when it is a run directory
(it has ``config.yaml`` or a ``fits/`` folder) the file goes to its ``fits/``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_TRAINING = str(Path(__file__).resolve().parent)
if _TRAINING not in sys.path:  # run as a script: make the training package importable
    sys.path.insert(0, _TRAINING)

import numpy as np
import torch

GENDER_MODELS = {"m": "male", "f": "female", "n": "neutral", "male": "male", "female": "female", "neutral": "neutral"}


def find_npz(data: Path) -> Path:
    """The single-view SPIN npz of a folder (``synth_spin.npz``, else the only ``*.npz``), or ``data`` itself."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise SystemExit(f"make_static_fits: --data {str(data)!r} is neither a folder nor an npz file")
    if (data / "synth_spin.npz").is_file():
        return data / "synth_spin.npz"
    if (data / "synth_mvspin.npz").is_file():
        raise SystemExit(f"make_static_fits: {str(data)!r} holds multi-view data (synth_mvspin.npz); static fits are "
                         "single-view (SPIN)")
    found = sorted(data.glob("*.npz"))
    if len(found) != 1:
        raise SystemExit(f"make_static_fits: expected synth_spin.npz or exactly one .npz in {str(data)!r}; found "
                         f"{[p.name for p in found]}")
    return found[0]


def output_dir(out: Path) -> Path:
    if (out / "config.yaml").is_file() or (out / "fits").is_dir():
        return out / "fits"
    return out


def load_init_npz(path: Path, N: int):
    from smplfast.fitting import weak_perspective_to_translation

    from smplfast_train.fits import FIT_FOCAL, FIT_RES

    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    missing = [k for k in ("pose", "betas") if k not in data]
    if missing or ("cam_t" not in data and "cam" not in data):
        raise SystemExit(f"make_static_fits: --init-npz {str(path)!r} needs pose (N, 72), betas (N, 10) and cam_t (N, 3) "
                         f"or cam (N, 3); it has {sorted(data)}")
    if "cam_t" in data:
        cam_t = torch.as_tensor(np.asarray(data["cam_t"], dtype=np.float32))
    else:
        cam = torch.as_tensor(np.asarray(data["cam"], dtype=np.float32))
        if cam.shape != (N, 3):
            raise SystemExit(f"make_static_fits: --init-npz cam must be ({N}, 3); got {tuple(cam.shape)}")
        cam_t = weak_perspective_to_translation(cam, FIT_FOCAL, FIT_RES)
    pose = np.asarray(data["pose"], dtype=np.float32)
    betas = np.asarray(data["betas"], dtype=np.float32)
    for name, a, w in (("pose", pose, 72), ("betas", betas, 10), ("cam_t", cam_t, 3)):
        if tuple(a.shape) != (N, w):
            raise SystemExit(f"make_static_fits: --init-npz {name} must be ({N}, {w}) for this dataset; got {tuple(a.shape)}")
    return pose, betas, cam_t.numpy()


def diagnostics_models(genders):
    """(neutral h36m_17 model, {gender: model} for the file's genders or None)."""
    import smplfast

    neutral = smplfast.SMPL(keypoints="h36m_17")
    if genders is None:
        return neutral, None
    models = {}
    for g in sorted(set(np.asarray(genders).astype(str))):
        if g not in GENDER_MODELS:
            return neutral, None
        models[g] = neutral if GENDER_MODELS[g] == "neutral" else smplfast.SMPL(keypoints="h36m_17", gender=GENDER_MODELS[g])
    return neutral, models


def make_static_fits(data, out, init: str = "mean", name=None, init_npz=None, checkpoint=None, pose_prior=None,
                     batch: int = 256, verbose: bool = True) -> dict:
    """Fit one dataset and write ``{name}_static_fits.npz``; returns a summary dict (path, timings,
    diagnostics). See the module docstring for the modes."""
    from smplfast.data.formats import load_spin_npz
    from smplfast.fitting import SMPLify

    from smplfast_train import fits as F

    if init not in ("mean", "gt", "network"):
        raise SystemExit(f"make_static_fits: --init must be mean, gt or network; got {init!r}")
    npz = find_npz(Path(data))
    name = name or (npz.parent.name if npz.name == "synth_spin.npz" or Path(data).is_dir() else npz.stem)
    d = load_spin_npz(str(npz))
    for key in ("openpose", "part", "center", "scale"):
        if key not in d:
            raise SystemExit(f"make_static_fits: {str(npz)!r} has no {key!r}")
    N = int(d["part"].shape[0])
    t_start = time.perf_counter()
    kp = F.fit_keypoints_px(d["openpose"], d["part"], d["center"], d["scale"])
    present = set(np.asarray(d["present"]).astype(str))
    has_gt = {"pose", "shape"} <= present and bool(np.isfinite(d["pose"]).all() and np.isfinite(d["shape"]).all())

    settings = {}
    if init == "gt":
        if not has_gt:
            raise SystemExit(f"make_static_fits: --init gt needs the file's pose / shape; {str(npz)!r} has none")
        fitter = SMPLify(pose_prior=pose_prior)
        res = F.static_fits_gt(d["pose"], d["shape"], kp, fitter, batch=max(int(batch), 1))
        provenance = f"oracle: ground-truth pose/shape of {npz.name} (has_smpl ignored); loss from a translation-only robust refit"
    elif init == "mean":
        fitter = SMPLify(mode="smplify4", pose_prior=pose_prior)
        res = F.static_fits_mean(kp, smplify=fitter, batch=batch)
        provenance = "SMPLify smplify4 (LM) from the pose prior's mean pose, facing / away from the camera, best kept"
        settings = {"orientations": [list(o) for o in F.MEAN_ORIENTATIONS]}
    else:
        if init_npz is None:
            if checkpoint is not None:
                raise SystemExit("make_static_fits: initialising from a network checkpoint is not available in this script; "
                                 "export the network's predictions on the un-augmented crops (pose (N, 72) canonical, "
                                 "betas (N, 10), cam_t (N, 3) or cam (N, 3)) to an npz and pass --init-npz, or call "
                                 "smplfast_train.fits.static_fits_from_init from the training code")
            raise SystemExit("make_static_fits: --init network needs --init-npz FILE (pose, betas, cam_t or cam)")
        pose0, betas0, cam0 = load_init_npz(Path(init_npz), N)
        fitter = SMPLify(mode="spin", pose_prior=pose_prior)
        res = F.static_fits_from_init(pose0, betas0, cam0, kp, smplify=fitter, batch=batch)
        provenance = f"SMPLify spin (LM) from the initialisation in {Path(init_npz).name}"
        settings = {"init_npz": str(Path(init_npz).resolve())}
    fit_seconds = res.seconds

    loss = res.loss.double().numpy()
    meta = {"dataset": name, "mode": init, "npz": str(npz.resolve()), "num": N, "fit_res": F.FIT_RES,
            "focal": F.FIT_FOCAL, "sigma": F.SMPLIFY_SIGMA, "pose_prior": str(pose_prior) if pose_prior else "default",
            "smplify_mode": fitter.mode, "lm_iters": fitter.lm_options.max_iters, "fit_seconds": fit_seconds,
            "ms_per_sample": 1000.0 * fit_seconds / max(N, 1), "threads": torch.get_num_threads(),
            "mean_loss": float(np.mean(loss[np.isfinite(loss)])) if np.isfinite(loss).any() else float("nan"),
            "acceptance": float(np.mean(loss < F.SMPLIFY_THRESHOLD)), "created_unix": time.time(), **settings}
    if has_gt:
        fd = F.FitsDict.from_arrays({name: (res.pose.numpy(), res.betas.numpy(), loss)})
        neutral, gendered = diagnostics_models(d.get("gender"))
        t0 = time.perf_counter()
        meta["diagnostics_neutral_gt"] = fd.diagnostics(name, d["pose"], d["shape"], neutral, batch=batch)
        if gendered is not None:
            meta["diagnostics"] = fd.diagnostics(name, d["pose"], d["shape"], neutral, batch=batch, gt_model=gendered,
                                                 gt_gender=np.asarray(d["gender"]).astype(str))
        else:
            meta["diagnostics"] = meta["diagnostics_neutral_gt"]
        meta["diagnostics_seconds"] = time.perf_counter() - t0
    meta["total_seconds"] = time.perf_counter() - t_start
    path = F.write_static_fits(F.static_fits_path(output_dir(Path(out)), name), res.pose.numpy(), res.betas.numpy(), loss,
                               provenance, meta)
    meta["path"] = str(path)
    if verbose:
        print(f"{name}: {N} samples, --init {init}: fitted in {fit_seconds:.1f} s ({meta['ms_per_sample']:.2f} ms/sample, "
              f"{meta['threads']} thread(s)); mean loss {meta['mean_loss']:.1f}, {100 * meta['acceptance']:.1f} % below "
              f"{F.SMPLIFY_THRESHOLD:g}")
        if has_gt:
            for key, label in (("diagnostics", "GT-gender models"), ("diagnostics_neutral_gt", "neutral GT model")):
                dg = meta[key]
                print(f"  vs hidden GT ({label}): PA-MPJPE {dg['pa_mpjpe']:.1f} mm ({dg['joints']}), PVE {dg['pve']:.1f} mm")
        print(f"  wrote {path}")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="SPIN npz folder (made by `smplfast synth`) or the npz itself")
    p.add_argument("--out", required=True, help="output folder, or a run directory (then its fits/)")
    p.add_argument("--init", required=True, choices=("mean", "gt", "network"))
    p.add_argument("--name", help="dataset name used by the training data (default: the data folder's name)")
    p.add_argument("--init-npz", help="--init network: npz with pose (N, 72), betas (N, 10), cam_t or cam (N, 3)")
    p.add_argument("--checkpoint", help="--init network: a network checkpoint (not supported here; use --init-npz)")
    p.add_argument("--pose-prior", help="GMM pose prior (.npz or gmm_08.pkl) for SMPLify (default: the shipped one)")
    p.add_argument("--batch", type=int, default=256, help="samples per SMPLify call (default 256)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    if a.batch < 1 or a.threads < 1:
        p.error("--batch and --threads must be >= 1")
    torch.set_num_threads(a.threads)
    make_static_fits(a.data, a.out, a.init, name=a.name, init_npz=a.init_npz, checkpoint=a.checkpoint,
                     pose_prior=a.pose_prior, batch=a.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
