"""Build the range-of-motion cluster files of HoloPose's mixture-of-experts rotation prior
(TRAINING_SPEC §4.3): ``training/data/moe_clusters_K{K}.npz`` for K in {8, 32, 128}.

    python training/experiments/build_moe_clusters.py                      # defaults: 100k poses, K 8 32 128
    python training/experiments/build_moe_clusters.py --K 32 --fit-samples 20000 --out-dir /tmp/clusters

100k body poses (half uniform in the swing-twist joint limits, half ``sample_poses`` of every family
with seed 1000), the per-joint Euler order with the smallest max |middle angle| that passes the
wrap-around check (on all poses), then scikit-learn KMeans (n_init 4, random_state 0) per joint on
the Euler angles (all poses by default, or a fixed subsample with ``--fit-samples``). Single thread.
The file layout is in ``smplfast_train/moe_clusters.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    from smplfast_train.moe_clusters import DATA_DIR, build_cluster_files, cluster_path, load_clusters, save_clusters

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--K", type=int, nargs="+", default=[8, 32, 128], help="numbers of clusters")
    p.add_argument("--n", type=int, default=100_000, help="poses in the range-of-motion set")
    p.add_argument("--uniform-fraction", type=float, default=0.5)
    p.add_argument("--family-seed", type=int, default=1000)
    p.add_argument("--uniform-seed", type=int, default=1100)
    p.add_argument("--margin-deg", type=float, default=20.0, help="wrap-around check: empty arc around ±180°")
    p.add_argument("--fit-samples", type=int, default=0, help="KMeans on a fixed subsample of this many poses (0: all)")
    p.add_argument("--fit-seed", type=int, default=0)
    p.add_argument("--n-init", type=int, default=4)
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=DATA_DIR)
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    files = build_cluster_files(
        a.K, a.n, a.uniform_fraction, a.family_seed, a.uniform_seed, a.margin_deg, a.n_init, a.random_state,
        a.fit_samples or None, a.fit_seed,
    )
    for K, arrays in files.items():
        path = save_clusters(cluster_path(K, a.out_dir), arrays)
        cl = load_clusters(path)  # validates what was written
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): centers {cl.centers.shape}, "
              f"wrap_ok {int(cl.wrap_ok.sum())}/23")
    first = next(iter(files.values()))
    summary = {
        "orders": [str(o) for o in first["orders"]],
        "max_middle_deg": [round(float(first["max_middle_deg"][j, first["order_index"][j]]), 2) for j in range(23)],
        "wrap_ok": [bool(v) for v in first["wrap_ok"]],
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
