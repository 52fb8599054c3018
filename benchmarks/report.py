"""Turn a pytest-benchmark JSON file from benchmarks/test_skinning.py into the tables of RESULTS.md.

Usage: python benchmarks/report.py bench.json  (prints Markdown; paste it into benchmarks/RESULTS.md)
"""
import json
import sys
from collections import defaultdict


def main(path: str) -> str:
    data = json.load(open(path))
    machine = data["machine_info"]
    lines = [
        f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"{machine.get('cpu', {}).get('count', '?')} logical cores, torch {machine.get('torch')}, "
        f"{machine.get('torch_threads')} threads; {machine.get('gpu', 'no GPU')}. Date: {data['datetime'][:10]}.",
        "",
    ]
    times = defaultdict(dict)
    memory = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "peak_bytes" in info:
            memory[info["device"]][info["impl"]] = info["peak_bytes"]
            continue
        key = (info["device"], "forward+backward" if info["backward"] else "forward", info["batch"])
        times[key][info["impl"]] = b["stats"]["median"] * 1e3
    lines.append("| device | pass | batch | smplfast (ms) | joints-only (ms) | smplx (ms) | torch reference (ms) | smplx / smplfast | smplx / joints-only |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(times, key=lambda k: (k[0], k[1], k[2])):
        t = times[key]
        ours, jo, ref, torch_ref = t.get("smplfast"), t.get("smplfast-joints-only"), t.get("smplx"), t.get("reference")
        fmt = lambda x: "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")  # noqa: E731
        ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.1f}x"  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(ours)} | {fmt(jo)} | {fmt(ref)} | {fmt(torch_ref)} | "
                     f"{ratio(ref, ours)} | {ratio(ref, jo)} |")
    if memory:
        lines += ["", "Peak memory of one forward+backward at batch 1024 (fresh process each):", "",
                  "| device | smplfast (MB) | smplx (MB) | torch reference (MB) | smplfast / smplx |", "|---|---:|---:|---:|---:|"]
        for device, m in memory.items():
            mb = lambda k: "-" if k not in m else f"{m[k] / 2**20:.0f}"  # noqa: E731
            frac = "-" if "smplfast" not in m or "smplx" not in m else f"{m['smplfast'] / m['smplx']:.2f}"
            lines.append(f"| {device} | {mb('smplfast')} | {mb('smplx')} | {mb('reference')} | {frac} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1]))
