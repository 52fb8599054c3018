"""soft_silhouette (OpenMP CPU / CUDA kernel) on posed default-model bodies, against its pure-PyTorch
reference and against the hard z-buffer rasterizer (rasterize, not differentiable).

Scene: the bundled default body model (12411 vertices, 24818 faces) in random poses from
``sample_poses`` as in benchmarks/test_rasterize.py (2.5-3 m in front of the camera, focal
300 px x side / 256), projected to pixels once (float32). sigma is SoftRas's default 1e-4 in
normalised [-1, 1] units, i.e. ``1e-4 (side / 2)^2`` px^2 (0.10 at 64^2, 0.41 at 128^2), cutoff
1e-4. Passes: forward, and forward + backward of the silhouette loss
``((A - mask) ** 2).sum()`` against the hard silhouette. Sizes: batch 16 at 64^2 and 128^2 (the
kernel and rasterize); batch 1 at 64^2 for the reference (dense over faces x pixels: about 3 s per
image) next to the kernel at the same size.

Run: ``pytest benchmarks/test_soft_silhouette.py``.
"""
import pytest
import torch

import smplfast
from bench_common import posed_bodies
from smplfast.ops import rasterize, soft_silhouette, soft_silhouette_reference

DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])
FOCAL_256 = 300.0


@pytest.fixture(scope="module")
def bodies():
    v, faces = posed_bodies(64)
    return v[:16].contiguous(), faces


def scene(bodies, side, batch, device):
    verts, faces = bodies
    verts, faces = verts[:batch].to(device), faces.to(device)
    focal, c = FOCAL_256 * side / 256, side / 2
    uv = (focal * verts[..., :2] / verts[..., 2:] + c).contiguous()
    mask = (rasterize(verts, faces, focal, (c, c), (side, side))[0] >= 0).to(uv.dtype)
    return verts, faces, uv, mask, focal


CASES = [  # (impl, pass, batch, image side)
    ("kernel", "forward", 16, 64),
    ("kernel", "forward+backward", 16, 64),
    ("rasterize", "forward", 16, 64),
    ("kernel", "forward", 16, 128),
    ("kernel", "forward+backward", 16, 128),
    ("rasterize", "forward", 16, 128),
    ("kernel", "forward", 1, 64),
    ("kernel", "forward+backward", 1, 64),
    ("reference", "forward", 1, 64),
    ("reference", "forward+backward", 1, 64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl,pass_,batch,side", CASES)
def test_soft_silhouette_bodies(benchmark, bodies, impl, pass_, batch, side, device):
    if impl == "reference" and device != "cpu":
        pytest.skip("the reference is timed on the CPU only")
    verts, faces, uv, mask, focal = scene(bodies, side, batch, device)
    sigma = 1e-4 * (side / 2) ** 2
    backward = pass_ == "forward+backward"

    if impl == "rasterize":
        def run():
            out = rasterize(verts, faces, focal, (side / 2, side / 2), (side, side))
            if device == "cuda":
                torch.cuda.synchronize()
            return out[0] >= 0
    else:
        fn = soft_silhouette if impl == "kernel" else soft_silhouette_reference

        def run():
            x = uv.detach().requires_grad_(backward)
            if backward:
                A = fn(x, faces, (side, side), sigma)
                ((A - mask) ** 2).sum().backward()
            else:
                with torch.no_grad():
                    A = fn(x, faces, (side, side), sigma)
            if device == "cuda":
                torch.cuda.synchronize()
            return A.detach() > 0.5

    covered = run()
    benchmark.group = f"{device} {side}x{side} batch {batch}"
    benchmark.extra_info.update(impl=impl, pass_=pass_, batch=batch, size=side, device=device, sigma=sigma,
                                faces=int(faces.shape[0]), vertices=int(uv.shape[1]),
                                covered_fraction=float(covered.float().mean()))
    if impl == "reference":
        rounds = 1
    elif device == "cuda":
        rounds = 50
    else:
        rounds = 20 if batch == 1 else 7
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0 if impl == "reference" else 1)
