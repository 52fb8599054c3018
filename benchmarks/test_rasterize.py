"""rasterize (OpenMP CPU / CUDA kernel) on posed default-model bodies, against its pure-PyTorch
reference.

Scene: the bundled default body model (12411 vertices, 24818 faces) in 64 random poses from
``sample_poses``, centred and placed 2.5-3 m in front of the camera, focal 300 px, so a body is
about 190 px tall in a 256 x 256 image (about 8% of the pixels). Sizes: 256 x 256 at batch 1 and 64
(the benchmark case) and 224 x 224 at batch 64 (the synthetic-data case), float32. The reference
loops over chunks of faces for every pixel; at 256 x 256 one body takes minutes, so it runs at
64 x 64, batch 1, next to the kernel at the same size.

Run: ``pytest benchmarks/test_rasterize.py``.
"""
import pytest
import torch

import smplfast
from bench_common import posed_bodies
from smplfast.ops import rasterize, rasterize_reference

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
FOCAL_256 = 300.0


@pytest.fixture(scope="module")
def bodies():
    return posed_bodies(64)


CASES = [  # (impl, batch, image side)
    ("kernel", 1, 256),
    ("kernel", 64, 256),
    ("kernel", 64, 224),
    ("kernel", 1, 64),
    ("reference", 1, 64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl,batch,side", CASES)
def test_rasterize_bodies(benchmark, bodies, impl, batch, side, device):
    if impl == "reference" and device != "cpu":
        pytest.skip("the reference is timed on the CPU only")
    verts, faces = bodies
    verts, faces = verts[:batch].to(device), faces.to(device)
    focal = FOCAL_256 * side / 256
    fn = rasterize if impl == "kernel" else rasterize_reference

    def run():
        out = fn(verts, faces, focal, (side / 2, side / 2), (side, side))
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    face_index = run()[0]
    benchmark.group = f"{device} {side}x{side} batch {batch}"
    benchmark.extra_info.update(impl=impl, batch=batch, size=side, device=device, faces=int(faces.shape[0]),
                                vertices=int(verts.shape[1]),
                                covered_fraction=float((face_index >= 0).float().mean()))
    if impl == "reference":
        rounds = 1
    elif device == "cuda":
        rounds = 50
    else:
        rounds = 20 if batch == 1 else 5
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
