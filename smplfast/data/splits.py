"""The standard synthetic splits of the training experiments, and the statistics that show their gaps.

The orderings that SPIN, MV-SPIN, HoloPose and Pavlakos et al. report come from *distribution gaps* in
real data: a lab set with 3D labels and narrow poses and viewpoints, an in-the-wild set with only noisy
2D labels and everything else, multi-camera rigs. :data:`SPLITS` builds those gaps with the synthetic
engine (``smplfast synth --split NAME``); every split is a set of :class:`~smplfast.data.synth.SynthSettings`
values plus a default size and seed, documented in docs/DATA.md:

============== ===== ======================== ======================================== ================================
split          views families                 cameras                                  labels
============== ===== ======================== ======================================== ================================
lab_train      1     standing, walking,       azimuth 45/135/225/315 +-10 deg (relative exact 2D, 3D (``S``), SMPL
                     t_pose, a_pose,          to the way the person faces), elevation
                     arms_raised              0 +-5 deg, level, 3-5 m
lab_test       1     as lab_train             as lab_train                             evaluation only
wild_train     1     all 9                    any azimuth, elevation -10..35 deg, roll  noisy 2D (sigma 1.5 % of the box,
                                              +-10 deg, 2.5-8 m; occluders up to 30 %  mislabelled hidden joints, L/R
                                              of the box; box jitter 5 %               swaps); 3D and SMPL hidden
wild_test      1     all 9                    as wild_train without occluders          as wild_train (evaluation only)
wild_test_occ  1     all 9                    as wild_test plus occluders (the same    as wild_train (evaluation only)
                                              people and cameras as wild_test)
rig_train      4     all 9                    a calibrated rig (as Human3.6M)          exact 2D, 3D; SMPL hidden
rig_test       4     all 9                    a calibrated rig                         evaluation only
============== ===== ======================== ======================================== ================================

"Hidden" labels stay in the file as ground truth for evaluation (``S``, ``pose``, ``shape``, ``part_gt``)
but are flagged as not to be used for training: ``has_smpl = 0`` and ``has_pose_3d = 0`` (SPIN's
convention); the readers in :mod:`smplfast.data` honour the flags.

:func:`split_statistics` measures what a generated folder actually holds (viewpoint, pose family,
person size, annotation error, occlusion), which is how docs/DATA.md's gap table is made.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np

__all__ = ["LAB_FAMILIES", "SPLITS", "split_statistics"]

#: The pose families of the "lab" splits (narrow, upright activities, as in a motion-capture studio).
LAB_FAMILIES = ("standing", "walking", "t_pose", "a_pose", "arms_raised")

_LAB_CAMERAS = dict(azimuths=(45.0, 135.0, 225.0, 315.0), azimuth_jitter=10.0, elevation=(-5.0, 5.0),
                    roll=(0.0, 0.0), distance=(3.0, 5.0))
_WILD = dict(elevation=(-10.0, 35.0), roll=(-10.0, 10.0), keypoint_noise=0.015, mislabel_prob=0.2,
             swap_prob=0.02, bbox_jitter=0.05, hide_3d=True, hide_smpl=True)

#: Split name -> settings (keys of :class:`~smplfast.data.synth.SynthSettings`), including the
#: default ``num`` (the ``cpu``-tier size; scale it with ``--num``) and ``seed``. Test splits have seeds
#: of their own, so no test person is a training person; ``wild_test_occ`` shares ``wild_test``'s seed:
#: the same people and cameras, with occluders added (occluders draw from a stream of their own).
SPLITS: Dict[str, dict] = {
    "lab_train": dict(num=6000, seed=1001, views=1, families=LAB_FAMILIES, **_LAB_CAMERAS),
    "lab_test": dict(num=1000, seed=1002, views=1, families=LAB_FAMILIES, **_LAB_CAMERAS),
    "wild_train": dict(num=6000, seed=1003, views=1, occluders=0.3, **_WILD),
    "wild_test": dict(num=1000, seed=1004, views=1, **_WILD),
    "wild_test_occ": dict(num=1000, seed=1004, views=1, occluders=0.3, **_WILD),
    "rig_train": dict(num=1500, seed=1005, views=4, hide_smpl=True),
    "rig_test": dict(num=300, seed=1006, views=4),
}


def _hist(values: np.ndarray, edges) -> list:
    h, _ = np.histogram(values, bins=edges)
    return (h / max(len(values), 1)).round(4).tolist()


def split_statistics(folder) -> dict:
    """Measured distribution of a generated folder (single- or multi-view): per image the camera azimuth
    relative to the way the person faces, the camera elevation and roll (degrees, from the stored
    extrinsics), the pose families, the person's size in the image, the annotation error of ``part``
    against ``part_gt`` (fraction of the box), the share of joints hidden by occluders, and the label
    flags. Returns a JSON-able dict of summaries and histograms."""
    from ..body.samplers import POSE_FAMILIES
    from ..geometry import axis_angle_to_matrix
    from .cameras import facing_azimuth, view_angles
    from .synth import SETTINGS_FILE, dataset_npz_name

    import torch

    folder = Path(folder)
    settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
    V = settings["views"]
    with np.load(folder / dataset_npz_name(V), allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    n = len(d["world_orient"])
    Rg = axis_angle_to_matrix(torch.from_numpy(d["world_orient"]).double()).numpy()
    facing = facing_azimuth(Rg)
    # The subject point of the cameras: the pelvis (root joint) in the world, i.e. in the camera frame
    # mapped back: X = R^T (X_cam - t); the root joint is SMPL joint 0 of the skeleton keys.
    rot = d["cam_rot"].reshape(n, V, 3, 3)
    tr = d["cam_transl"].reshape(n, V, 3)
    root_cam = d["smpl_joints_3d"].reshape(n, V, 24, 3)[:, :, 0]
    root_world = np.einsum("nvji,nvj->nvi", rot, root_cam - tr)
    az, el, roll = view_angles(rot, tr, root_world, np.repeat(facing[:, None], V, 1))
    box = d["bbox"].reshape(n * V, 4)
    size = settings["size"]
    fam = d["pose_family"]
    part, gt = d["part"].reshape(n * V, 24, 3), d["part_gt"].reshape(n * V, 24, 3)
    lab = gt[..., 2] > 0
    err = np.linalg.norm(part[..., :2] - gt[..., :2], axis=-1) / np.maximum(box[:, 2:].max(1), 1.0)[:, None]
    occ = d.get("occluded", np.zeros((n * V, 24))).reshape(n * V, 24)
    return {
        "folder": str(folder), "split": settings.get("split"), "people": int(n), "views": int(V),
        # Sectors of 45 degrees centred on 0 (front), 45, ..., 315 (front-right), and the share of the
        # 36 sectors of 10 degrees that hold at least 0.5 % of the images.
        "azimuth_deg": {"sector_centres": list(range(0, 360, 45)),
                        "fraction": _hist(np.round(az.ravel() / 45.0) % 8, np.arange(9) - 0.5),
                        "coverage_10deg": float(np.mean(np.histogram(az.ravel() % 360, bins=36, range=(0, 360))[0]
                                                        >= 0.005 * az.size))},
        "elevation_deg": {"min": float(el.min()), "max": float(el.max()), "mean": float(el.mean()),
                          "edges": [-30, -10, 0, 10, 20, 35, 60],
                          "fraction": _hist(el.ravel(), [-30, -10, 0, 10, 20, 35, 60])},
        "roll_deg": {"min": float(roll.min()), "max": float(roll.max()), "std": float(roll.std())},
        "families": {name: round(float(np.mean(fam == i)), 4) for i, name in enumerate(POSE_FAMILIES)},
        "person_fraction_of_image": {"mean": float((box[:, 2:].max(1) / size).mean()),
                                     "p5": float(np.percentile(box[:, 2:].max(1) / size, 5)),
                                     "p95": float(np.percentile(box[:, 2:].max(1) / size, 95))},
        "part_error_fraction_of_box": {"median": float(np.median(err[lab])) if lab.any() else 0.0,
                                       "p95": float(np.percentile(err[lab], 95)) if lab.any() else 0.0},
        "joints_occluded": float(occ[lab].mean()) if lab.any() else 0.0,
        "has_smpl": float(d["has_smpl"].mean()), "has_pose_3d": float(d["has_pose_3d"].mean()),
    }
