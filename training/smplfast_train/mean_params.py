"""Mean SMPL parameters for the HMR regressor's starting point, in SPIN's npz layout.

SPIN's ``smpl_mean_params.npz`` belongs to the real SMPL model; for the bundled model the file is
recomputed here (training/data/mean_params_<model>.npz):

* body joints 1..23: the chordal mean (mean rotation matrix projected to SO(3) by SVD) of body poses
  sampled from the lab pose families with :func:`smplfast.body.samplers.sample_poses`;
* global orientation (joint 0): axis-angle [π, 0, 0] (upright and facing a y-down camera, as HMR);
* shape: zeros (10); camera: [0.9, 0, 0] (weak perspective [s, tx, ty]).

Keys: ``pose`` (144,) float32, 24 SPIN-layout 6D blocks; ``shape`` (10,); ``cam`` (3,). Provenance is
stored alongside (``families``, ``n_samples``, ``seed``); SPIN-style loaders ignore it.

    python -m smplfast_train.mean_params --out training/data/mean_params_default.npz
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .rotations import axis_angle_to_matrix, chordal_mean, matrix_to_rot6d

__all__ = ["LAB_FAMILIES", "DEFAULT_MEAN_PARAMS", "compute_mean_params", "save_mean_params", "load_mean_params"]

#: Pose families of the lab split (TRAINING_SPEC §1.5, ``lab_train``).
LAB_FAMILIES = ("standing", "walking", "t_pose", "a_pose", "arms_raised")

#: Mean parameters of the bundled default model, kept in the repository.
DEFAULT_MEAN_PARAMS = Path(__file__).resolve().parents[1] / "data" / "mean_params_default.npz"

PathLike = Union[str, Path]


def compute_mean_params(
    n: int = 20000,
    families: Sequence[str] = LAB_FAMILIES,
    seed: int = 0,
    global_orient: Sequence[float] = (math.pi, 0.0, 0.0),
    cam: Sequence[float] = (0.9, 0.0, 0.0),
    num_betas: int = 10,
) -> Dict[str, np.ndarray]:
    """Mean parameters as numpy arrays: ``pose`` (144,) 6D, ``shape`` (num_betas,), ``cam`` (3,),
    plus provenance ``families``, ``n_samples``, ``seed``. Deterministic for a given seed."""
    from smplfast.body.samplers import sample_poses

    poses = sample_poses(int(n), family=list(families), seed=seed, dtype=torch.float64)  # (n, 72)
    body = axis_angle_to_matrix(poses[:, 3:].reshape(-1, 23, 3))  # (n, 23, 3, 3)
    mean_body = chordal_mean(body, dim=0)  # (23, 3, 3)
    root = axis_angle_to_matrix(torch.tensor(global_orient, dtype=torch.float64))[None]
    rot = torch.cat([root, mean_body], dim=0)  # (24, 3, 3)
    return {
        "pose": matrix_to_rot6d(rot).reshape(144).numpy().astype(np.float32),
        "shape": np.zeros(int(num_betas), dtype=np.float32),
        "cam": np.asarray(cam, dtype=np.float32),
        "families": np.asarray(list(families)),
        "n_samples": np.asarray(int(n)),
        "seed": np.asarray(int(seed)),
    }


def save_mean_params(path: PathLike, params: Mapping[str, np.ndarray]) -> Path:
    """Write ``params`` to an uncompressed npz at ``path`` (folders created; written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in params.items()})
    tmp.replace(path)
    return path


def load_mean_params(
    source: Union[None, PathLike, Mapping[str, object]] = None, dtype=torch.float32
) -> Dict[str, torch.Tensor]:
    """``{"pose": (144,), "shape": (10,), "cam": (3,)}`` tensors from an npz in SPIN's layout (ours
    or SPIN's ``smpl_mean_params.npz``), from a mapping with those keys, or, with ``None``, from
    :data:`DEFAULT_MEAN_PARAMS`."""
    if source is None:
        source = DEFAULT_MEAN_PARAMS
    if isinstance(source, (str, Path)):
        with np.load(source) as f:
            source = {k: f[k] for k in ("pose", "shape", "cam")}
    out = {}
    for key, size in (("pose", 144), ("shape", None), ("cam", 3)):
        if key not in source:
            raise KeyError(f"mean parameters need the key {key!r}")
        v = torch.as_tensor(np.asarray(source[key]) if not torch.is_tensor(source[key]) else source[key])
        v = v.detach().to(dtype).reshape(-1)
        if size is not None and v.numel() != size:
            raise ValueError(f"mean parameter {key!r} must have {size} values; got {v.numel()}")
        out[key] = v
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_MEAN_PARAMS)
    p.add_argument("--n", type=int, default=20000, help="number of sampled poses")
    p.add_argument("--families", default=",".join(LAB_FAMILIES), help="comma-separated pose families")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    params = compute_mean_params(a.n, [f for f in a.families.split(",") if f], a.seed)
    path = save_mean_params(a.out, params)
    print(f"wrote {path}: pose {params['pose'].shape}, shape {params['shape'].shape}, cam {params['cam'].tolist()}")


if __name__ == "__main__":
    main()
