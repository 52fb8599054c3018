"""Measure the gaps between the standard synthetic splits and draw them (docs/DATA.md, docs/images/splits.png).

    python benchmarks/synth_splits_report.py --out /tmp/splits --num 600 --rig-num 150

Generates every split of smplfast.data.splits.SPLITS at a reduced size (the distribution does not depend
on the image size or the number of people), measures each with split_statistics, prints a markdown table
(viewpoint, elevation, families, person size, annotation error, occlusion, label flags), writes the
statistics as JSON next to the data, and draws a contact sheet (lab vs wild vs occluded vs rig).
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the generated splits")
    ap.add_argument("--num", type=int, default=600, help="people per single-view split")
    ap.add_argument("--rig-num", type=int, default=150, help="people per rig split")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sheet", default=None, help="contact sheet path (default: OUT/splits.png)")
    args = ap.parse_args(argv)

    from smplfast.body.samplers import POSE_FAMILIES
    from smplfast.data.splits import SPLITS, split_statistics
    from smplfast.data.synth import contact_sheet, generate

    out = Path(args.out)
    stats = {}
    for name, spec in SPLITS.items():
        num = args.rig_num if spec["views"] > 1 else args.num
        generate(out / name, num, size=args.size, split=name, workers=args.workers, progress=False,
                 densepose_points=0)
        stats[name] = split_statistics(out / name)
    (out / "split_statistics.json").write_text(json.dumps(stats, indent=1))

    def pct(x):
        return f"{100 * x:.0f}"

    print("| split | images | azimuth relative to the person: share per 45° sector centred on 0 (front), 45 (left-front), ... 315 (%) | "
          "10° sectors covered (%) | elevation (°) min / mean / max | "
          "roll std (°) | families (%) | person / image side, mean | `part` error / box side, median | joints hidden (%) | has_smpl / has_pose_3d |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, st in stats.items():
        fam = " ".join(f"{k[:4]} {pct(v)}" for k, v in st["families"].items() if v > 0)
        az = " ".join(pct(v) for v in st["azimuth_deg"]["fraction"])
        el = st["elevation_deg"]
        print(f"| {name} | {st['people'] * st['views']} | {az} | {pct(st['azimuth_deg']['coverage_10deg'])} | {el['min']:.1f} / {el['mean']:.1f} / {el['max']:.1f} | "
              f"{st['roll_deg']['std']:.1f} | {fam} | {st['person_fraction_of_image']['mean']:.2f} | "
              f"{st['part_error_fraction_of_box']['median']:.3f} | {pct(st['joints_occluded'])} | "
              f"{st['has_smpl']:.0f} / {st['has_pose_3d']:.0f} |")
    print(f"\nfamilies: {', '.join(POSE_FAMILIES)} (first four letters)")

    sheet = Path(args.sheet) if args.sheet else out / "splits.png"
    contact_sheet([out / "lab_train", out / "wild_train", out / "wild_test", out / "wild_test_occ", out / "rig_train"],
                  sheet, people=8, cell=128, show_iuv=False,
                  labels=["lab_train", "wild_train", "wild_test", "wild_test_occ", "rig_train"])
    print(f"\nwrote {sheet}", file=sys.stderr)
    return stats


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    np.set_printoptions(precision=3)
    main()
