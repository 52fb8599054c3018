"""Synthetic training data: random people rendered with full annotations, in the formats of real data.

:func:`generate` (command: ``smplfast synth``) draws ``num`` people (poses from
:func:`smplfast.body.samplers.sample_poses`, shapes from :func:`~smplfast.body.samplers.sample_betas`,
genders from the bundled default model), places them in front of one random camera (``views=1``) or
inside a calibrated rig of ``views`` cameras (``views > 1``, as in Human3.6M), renders every view with
:class:`smplfast.render.BodyRenderer` (clothing textures, random light, procedural backgrounds,
pixel noise) and writes

* images (JPEG or PNG), silhouette masks, 24-part masks and DensePose IUV images (PNG);
* a SPIN npz (``views=1``) or an MV-SPIN npz (``views > 1``) with 2D/3D joints, SMPL parameters in
  each camera's frame, OpenPose-like detections and the calibration;
* a DensePose COCO-style json with point annotations sampled on the rendered surface, and a
  ``cameras.json``.

The files follow :mod:`smplfast.data.formats`, so the readers of real data read them too; the layout is
in docs/DATA.md. Work is split into shards of ``shard_size`` people, each generated from its own seed
``(seed, shard index)`` in a worker process and written atomically with a marker file; re-running the
command skips finished shards, and the dataset files are merged from the shards at the end. The same
settings give byte-identical arrays whatever the number of workers.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SynthSettings", "SynthSummary", "generate", "contact_sheet", "SETTINGS_FILE", "dataset_npz_name"]

SETTINGS_FILE = "synth.json"
FORMAT_VERSION = 1
#: Images rendered per renderer call (part of the settings: per-chunk random streams depend on it).
CHUNK = 16
IMAGE_FORMATS = ("jpg", "png")
_OUTPUT_DIRS = ("images", "masks", "parts", "iuv", "shards")
_OUTPUT_FILES = ("synth_spin.npz", "synth_mvspin.npz", "densepose.json", "cameras.json", SETTINGS_FILE)

# SPIN's box margin: scale = 1.2 x box side / 200.
BOX_MARGIN = 1.2


def dataset_npz_name(views: int) -> str:
    """File name of the dataset npz: ``synth_spin.npz`` (one view) or ``synth_mvspin.npz``."""
    return "synth_spin.npz" if views == 1 else "synth_mvspin.npz"


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines the generated data (the worker count does not)."""

    num: int
    views: int = 1
    size: int = 224
    seed: int = 0
    shard_size: int = 64
    densepose_points: int = 100
    image_format: str = "jpg"
    chunk: int = CHUNK
    format_version: int = FORMAT_VERSION

    def validate(self) -> "SynthSettings":
        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int; got {type(v).__name__} {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}; got {v}")

        integer("num", 1)
        integer("views", 1)
        integer("size", 32)
        integer("seed", 0)
        integer("shard_size", 1)
        integer("densepose_points", 0)
        integer("chunk", 1)
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}; got {self.image_format!r}")
        return self

    @property
    def num_shards(self) -> int:
        return -(-self.num // self.shard_size)

    def shard_range(self, index: int) -> Tuple[int, int]:
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.num)


@dataclass
class SynthSummary:
    """What :func:`generate` wrote: paths (absolute), counts and timings (seconds, summed over workers)."""

    out_dir: str
    npz: str
    densepose: str
    cameras: str
    num_people: int
    num_images: int
    shards_generated: int
    shards_skipped: int
    seconds: float
    stage_seconds: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ worker state
_STATE: Dict[str, object] = {}


def _worker_state():
    """Body models (per gender), renderer and keypoint tables, built once per process."""
    if _STATE:
        return _STATE
    import torch  # noqa: F401

    from ..body import SMPL
    from ..body.default_model import default_model_path
    from ..body.keypoints import flip_permutation, keypoint_names
    from ..render import BodyRenderer

    genders = []
    for g in ("female", "male"):
        try:
            default_model_path(g)
            genders.append(g)
        except FileNotFoundError:
            pass
    models = {g[0]: SMPL(gender=g, keypoints="spin_49") for g in genders} if len(genders) == 2 \
        else {"n": SMPL(keypoints="spin_49")}
    for m in models.values():
        m.eval()
    first = next(iter(models.values()))
    faces = first.faces
    for k, m in models.items():
        if not np.array_equal(m.faces, faces):
            raise ValueError(f"default body models of different genders have different meshes ({k})")
    op_names = keypoint_names("openpose_25")
    # Keypoints that swap together when a detector confuses sides: an arm, a leg with its foot.
    arm = [op_names.index(f"left_{j}_openpose") for j in ("shoulder", "elbow", "wrist")]
    leg = [op_names.index(f"left_{j}_openpose") for j in ("hip", "knee", "ankle", "big_toe", "small_toe", "heel")]
    _STATE.update(
        models=models,
        renderer=BodyRenderer.from_model(first),
        flip_openpose=np.asarray(flip_permutation("openpose_25")),
        swap_groups=[arm, leg],
        pelvis=op_names.index("mid_hip_openpose"),  # SPIN fits mid_hip with SMPL's pelvis joint
    )
    return _STATE


# ------------------------------------------------------------------------------------------ shards
def _shard_paths(out_dir: Path, index: int) -> Dict[str, Path]:
    base = out_dir / "shards" / f"{index:05d}"
    return {"npz": base.with_suffix(".npz"), "json": base.with_suffix(".json"), "done": base.with_suffix(".done")}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _atomic_savez(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _image_names(settings: SynthSettings, start: int, stop: int) -> List[List[str]]:
    """Per person, per view: the file stem (``000012`` or ``000012_3``)."""
    if settings.views == 1:
        return [[f"{i:06d}"] for i in range(start, stop)]
    return [[f"{i:06d}_{v}" for v in range(settings.views)] for i in range(start, stop)]


def _bboxes(sil: np.ndarray) -> np.ndarray:
    """Pixel-covering boxes (B, 4) ``[x, y, w, h]`` of silhouettes (B, H, W); w = h = 0 when empty."""
    B = sil.shape[0]
    rows, cols = sil.any(2), sil.any(1)
    out = np.zeros((B, 4))
    for b in range(B):
        r, c = np.flatnonzero(rows[b]), np.flatnonzero(cols[b])
        if len(r):
            out[b] = [c[0], r[0], c[-1] + 1 - c[0], r[-1] + 1 - r[0]]
    return out


def _save_png(path: Path, array: np.ndarray) -> None:
    """uint8 (H, W) -> greyscale PNG, (H, W, 3) -> RGB PNG; light compression (fast to write)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=1)


def _generate_shard(settings: SynthSettings, out_dir: str, index: int) -> Dict[str, float]:
    """Generate, write and mark one shard; returns per-stage seconds."""
    import torch
    from PIL import Image

    from ..body.keypoints import convert
    from ..body.samplers import axis_angle_to_matrix, matrix_to_axis_angle, sample_betas, sample_poses
    from ..render import PerspectiveCamera, iuv_to_uint8
    from .backgrounds import random_backgrounds, random_lights, random_part_textures
    from .cameras import rig_cameras, single_view_cameras
    from .detections import occlusion, simulate_detections

    out = Path(out_dir)
    paths = _shard_paths(out, index)
    times: Dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(stage):
        now = time.perf_counter()
        times[stage] = times.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per shard: parallelism comes from the processes, results stay exact
    try:
        st = _worker_state()
        lap("setup")
        S, V = settings.size, settings.views
        start, stop = settings.shard_range(index)
        n = stop - start
        rng = np.random.default_rng([settings.seed, index, 0])

        # People: gender, pose, shape.
        genders = np.array(sorted(st["models"]))[rng.integers(0, len(st["models"]), n)]
        poses = sample_poses(n, seed=rng)
        betas = sample_betas(n, 10, seed=rng)
        verts = np.zeros((n, st["renderer"].num_vertices, 3), np.float32)
        joints = np.zeros((n, 49, 3), np.float64)
        with torch.no_grad():
            for g, model in st["models"].items():
                idx = np.flatnonzero(genders == g)
                if len(idx):
                    o = model(global_orient=poses[idx, :3], body_pose=poses[idx, 3:], betas=betas[idx])
                    verts[idx] = o.vertices.numpy()
                    joints[idx] = o.joints.double().numpy()
        lap("pose")

        # Placement in the world and cameras.
        pelvis = joints[:, st["pelvis"]].copy()  # = the root joint J0, which the global rotation keeps fixed
        vmin, vmax = verts.min(1).astype(np.float64), verts.max(1).astype(np.float64)
        extent = (vmax - vmin).max(1)
        if V == 1:
            transl = -pelvis
            cams = single_view_cameras(rng, pelvis + transl, extent, S).reshape(n, 1)
        else:
            where = rng.uniform(-1.0, 1.0, (n, 2))
            transl = np.stack([where[:, 0] - pelvis[:, 0], -vmin[:, 1], where[:, 1] - pelvis[:, 2]], -1)
            cams = rig_cameras(rng, pelvis + transl, extent, S, V)
        textures = random_part_textures(rng, n)
        # One camera: light from its side of the person; a rig: anywhere (some views are backlit).
        eye = -np.einsum("nji,nj->ni", cams.rotation[:, 0], cams.translation[:, 0]) - (pelvis + transl)
        light_world, ambient = random_lights(rng, n, towards=eye if V == 1 else None)
        verts += transl[:, None, :].astype(np.float32)
        joints_world = joints + transl[:, None, :]
        joints_cam = cams.to_camera(joints_world[:, None].repeat(V, 1))  # (n, V, 49, 3)

        # SMPL parameters in each camera's frame: orientation R_c R_g; translation keeping J0 in place.
        Rg = axis_angle_to_matrix(poses[:, :3].double()).numpy()
        Rc = cams.rotation
        orient_cam = matrix_to_axis_angle(torch.from_numpy(Rc @ Rg[:, None])).numpy()
        pose_cam = np.concatenate([orient_cam, np.repeat(poses[:, None, 3:].double().numpy(), V, 1)], -1)
        transl_cam = np.einsum("nvij,nj->nvi", Rc, pelvis + transl) + cams.translation - pelvis[:, None]
        lap("cameras")

        # Per image arrays (flattened b = person * V + view).
        B = n * V
        uv_all = cams.project(joints_cam).reshape(B, 49, 2)
        z_all = joints_cam[..., 2].reshape(B, 49)
        flat = cams.reshape(B)
        stems = [s for row in _image_names(settings, start, stop) for s in row]
        ext = settings.image_format
        bbox = np.zeros((B, 4))
        openpose = np.zeros((B, 25, 3))
        coco_vis = np.zeros((B, 24))
        dp_points: List[Optional[dict]] = [None] * B

        for c0 in range(0, B, settings.chunk):
            c1 = min(c0 + settings.chunk, B)
            crng = np.random.default_rng([settings.seed, index, 1 + c0 // settings.chunk])
            person = np.arange(c0, c1) // V
            cam = PerspectiveCamera(rotation=torch.from_numpy(flat.rotation[c0:c1]).float(),
                                    translation=torch.from_numpy(flat.translation[c0:c1]).float(),
                                    focal=torch.from_numpy(flat.focal[c0:c1]), center=torch.from_numpy(flat.center[c0:c1]))
            light = np.einsum("bij,bj->bi", flat.rotation[c0:c1], light_world[person])
            with torch.no_grad():
                maps = st["renderer"].render(torch.from_numpy(verts[person]), cam, (S, S),
                                             maps=("silhouette", "parts", "iuv", "depth", "rgb"),
                                             texture=torch.from_numpy(textures[person]),
                                             light_dir=torch.from_numpy(light).float(),
                                             # one ambient level per renderer call: the chunk's first person's
                                             ambient=float(ambient[person[0]]))
            sil = maps["silhouette"].numpy()
            parts = maps["parts"].numpy().astype(np.uint8)
            iuv = maps["iuv"].numpy()
            depth = maps["depth"].numpy()
            rgb = maps["rgb"].numpy()
            lap("render")

            k = c1 - c0
            bg, _ = random_backgrounds(crng, k, S, S)
            gain = crng.uniform(0.85, 1.15, (k, 1, 1, 3)).astype(np.float32)  # exposure and colour cast
            sigma = crng.uniform(0.0, 0.04, (k, 1, 1, 1)).astype(np.float32)
            noise = crng.standard_normal((k, S, S, 3), dtype=np.float32)
            img = np.where(sil[..., None], rgb, bg) * gain + noise * sigma
            img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            lap("composite")

            iuv8 = iuv_to_uint8(iuv)
            for j in range(k):
                stem = stems[c0 + j]
                pil = Image.fromarray(img[j])
                if ext == "jpg":
                    pil.save(out / "images" / f"{stem}.jpg", quality=92)
                else:
                    pil.save(out / "images" / f"{stem}.png", compress_level=1)
                _save_png(out / "masks" / f"{stem}.png", sil[j].astype(np.uint8) * 255)
                _save_png(out / "parts" / f"{stem}.png", parts[j])
                _save_png(out / "iuv" / f"{stem}.png", iuv8[j])
            lap("write")

            # Boxes, detections, DensePose points.
            bb = _bboxes(sil)
            empty = bb[:, 2] == 0
            if empty.any():  # nobody visible: fall back to the projected joints (clipped to the image)
                uv = np.nan_to_num(uv_all[c0:c1][empty]).clip(0, S)
                lo, hi = uv.min(1), uv.max(1)
                bb[empty] = np.concatenate([lo, np.maximum(hi - lo, 1.0)], -1)
            bbox[c0:c1] = bb
            person_size = bb[:, 2:].max(1)
            openpose[c0:c1] = simulate_detections(crng, uv_all[c0:c1, :25], z_all[c0:c1, :25], depth, person_size,
                                                  st["flip_openpose"], swap_groups=st["swap_groups"])
            coco_vis[c0:c1] = occlusion(np.nan_to_num(uv_all[c0:c1, 25:]), z_all[c0:c1, 25:], depth, 0.1, 0.2)
            P = settings.densepose_points
            for j in range(k):
                fg = np.flatnonzero(sil[j])
                if P == 0 or len(fg) == 0:
                    continue
                pick = np.sort(crng.choice(len(fg), size=P, replace=len(fg) < P))
                r, c = np.divmod(fg[pick], S)
                x0, y0, w, h = bb[j]
                val = iuv[j, r, c]
                dp_points[c0 + j] = {
                    "dp_x": np.round((c + 0.5 - x0) / w * 256.0, 3).tolist(),
                    "dp_y": np.round((r + 0.5 - y0) / h * 256.0, 3).tolist(),
                    "dp_I": val[:, 0].round().astype(int).tolist(),
                    "dp_U": np.round(val[:, 1].astype(np.float64), 5).tolist(),
                    "dp_V": np.round(val[:, 2].astype(np.float64), 5).tolist(),
                }
            lap("annotate")

        # Keypoint arrays.
        inside = np.isfinite(uv_all).all(-1) & (uv_all >= 0).all(-1) & (uv_all < S).all(-1) & (z_all > 0)
        vis = inside.astype(np.float64)
        uv0 = np.nan_to_num(uv_all)
        part = np.concatenate([uv0[:, 25:], vis[:, 25:, None]], -1)
        openpose_gt = np.concatenate([uv0[:, :25], vis[:, :25, None]], -1)
        S3 = np.concatenate([joints_cam.reshape(B, 49, 3)[:, 25:], np.ones((B, 24, 1))], -1)
        center = bbox[:, :2] + bbox[:, 2:] / 2
        scale = BOX_MARGIN * bbox[:, 2:].max(1) / 200.0

        def views(a):  # (B, ...) -> (n, V, ...), or (n, ...) for one view
            a = np.asarray(a)
            return a.reshape(n, *a.shape[1:]) if V == 1 else a.reshape(n, V, *a.shape[1:])

        def per_view(a):  # (n, ...) person arrays -> one copy per view
            a = np.asarray(a)
            return a if V == 1 else np.repeat(a[:, None], V, 1)

        names = np.array(stems)
        arrays = {
            "imgname": views(np.char.add(np.char.add("images/", names), "." + ext)),
            "maskname": views(np.char.add(np.char.add("masks/", names), ".png")),
            "partname": views(np.char.add(np.char.add("parts/", names), ".png")),
            "iuvname": views(np.char.add(np.char.add("iuv/", names), ".png")),
            "center": views(center),
            "scale": views(scale),
            "bbox": views(bbox),
            "part": views(part),
            "S": views(S3),
            "openpose": views(openpose),
            "openpose_gt": views(openpose_gt),
            "pose": views(pose_cam.reshape(B, 72)),
            "shape": per_view(betas.double().numpy()),
            "transl": views(transl_cam.reshape(B, 3)),
            "has_smpl": per_view(np.ones(n)),
            "gender": per_view(genders),
            "cam_rot": views(flat.rotation),
            "cam_transl": views(flat.translation),
            "cam_focal": views(flat.focal),
            "cam_center": views(flat.center),
            "world_transl": transl,
            "world_orient": poses[:, :3].double().numpy(),
        }
        # COCO keypoints (x, y, v): v = 2 visible, 1 inside the image but hidden, 0 outside.
        coco_xy = convert(part[..., :2], "spin_24", "coco_17")
        coco_v = convert(np.where(inside[:, 25:], np.where(coco_vis > 0.5, 1.0, 2.0), 0.0)[..., None], "spin_24", "coco_17")
        coco = np.concatenate([np.where(coco_v > 0, coco_xy, 0.0), coco_v], -1)
        records = []
        for b in range(B):
            rec = {"file_name": str(arrays["imgname"].reshape(-1)[b]), "iuv_file_name": f"iuv/{stems[b]}.png",
                   "bbox": [float(x) for x in bbox[b]],
                   "keypoints": [round(float(x), 3) for x in coco[b].reshape(-1)],
                   "num_keypoints": int((coco[b, :, 2] > 0).sum()),
                   "camera": {"rotation": flat.rotation[b].tolist(), "translation": flat.translation[b].tolist(),
                              "focal": flat.focal[b].tolist(), "center": flat.center[b].tolist()}}
            if dp_points[b] is not None:
                rec.update(dp_points[b])
            records.append(rec)
        lap("annotate")

        _atomic_savez(paths["npz"], arrays)
        _atomic_write_bytes(paths["json"], json.dumps(records, separators=(",", ":")).encode())
        _atomic_write_bytes(paths["done"], json.dumps({"settings": asdict(settings), "index": index}).encode())
        lap("write")
    finally:
        torch.set_num_threads(threads)
    return times


def _shard_task(args):
    settings, out_dir, index = args
    return index, settings.shard_range(index), _generate_shard(settings, out_dir, index)


# ------------------------------------------------------------------------------------------ output
def _prepare_dir(out: Path, settings: SynthSettings, overwrite: bool) -> None:
    meta = out / SETTINGS_FILE
    wanted = {"settings": asdict(settings)}
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    if meta.is_file():
        try:
            old = json.loads(meta.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("settings") != wanted["settings"]:
            if not overwrite:
                diff = {k: (old.get("settings", {}).get(k), v) for k, v in wanted["settings"].items()
                        if old.get("settings", {}).get(k) != v}
                raise ValueError(f"{str(out)!r} holds synthetic data made with other settings "
                                 f"(setting: (existing, requested) = {diff}); pass overwrite=True (--overwrite) to replace it, "
                                 "or choose another folder")
            _remove_outputs(out)
    elif out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{str(out)!r} is not empty and holds no {SETTINGS_FILE}; choose an empty or new folder, "
                             "or pass overwrite=True (--overwrite) to write into it")
        _remove_outputs(out)
    for d in _OUTPUT_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(meta, json.dumps(wanted, indent=2).encode())


def _remove_outputs(out: Path) -> None:
    """Delete what :func:`generate` writes (and nothing else) from ``out``."""
    for d in _OUTPUT_DIRS:
        if (out / d).is_dir():
            shutil.rmtree(out / d)
    for f in _OUTPUT_FILES:
        if (out / f).is_file():
            (out / f).unlink()


def _shard_done(out: Path, settings: SynthSettings, index: int) -> bool:
    p = _shard_paths(out, index)
    if not (p["done"].is_file() and p["npz"].is_file() and p["json"].is_file()):
        return False
    try:
        mark = json.loads(p["done"].read_text())
    except json.JSONDecodeError:
        return False
    return mark.get("settings") == asdict(settings) and mark.get("index") == index


def _merge(out: Path, settings: SynthSettings) -> Tuple[Path, Path, Path]:
    """Concatenate the shards into the dataset npz, the DensePose json and cameras.json."""
    parts: Dict[str, list] = {}
    images, annotations, cameras = [], [], []
    for k in range(settings.num_shards):
        p = _shard_paths(out, k)
        with np.load(p["npz"], allow_pickle=False) as z:
            for key in z.files:
                parts.setdefault(key, []).append(z[key])
        for rec in json.loads(p["json"].read_text()):
            i = len(images)
            images.append({"id": i, "file_name": rec["file_name"], "iuv_file_name": rec["iuv_file_name"],
                           "width": settings.size, "height": settings.size})
            ann = {"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": rec["bbox"],
                   "area": rec["bbox"][2] * rec["bbox"][3], "keypoints": rec["keypoints"],
                   "num_keypoints": rec["num_keypoints"]}
            for key in ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V"):
                if key in rec:
                    ann[key] = rec[key]
            annotations.append(ann)
            cameras.append({"file_name": rec["file_name"], **rec["camera"]})
    arrays = {k: np.concatenate(v, 0) for k, v in parts.items()}
    npz = out / dataset_npz_name(settings.views)
    _atomic_savez(npz, arrays)
    from ..body.keypoints import keypoint_names

    coco_names = [n.replace("_lsp", "") for n in keypoint_names("coco_17")]
    dp = {"info": {"description": "smplfast synthetic people", "settings": asdict(settings)},
          "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": coco_names}],
          "images": images, "annotations": annotations}
    dp_path = out / "densepose.json"
    _atomic_write_bytes(dp_path, json.dumps(dp, separators=(",", ":")).encode())
    cam_path = out / "cameras.json"
    cam_doc = {"convention": "X_cam = R X + t; u = f_x X/Z + c_x, v = f_y Y/Z + c_y (pixels); world: y up, metres",
               "views": settings.views, "image_size": [settings.size, settings.size], "cameras": cameras}
    _atomic_write_bytes(cam_path, json.dumps(cam_doc, separators=(",", ":")).encode())
    return npz, dp_path, cam_path


def generate(out_dir, num: int, views: int = 1, size: int = 224, seed: int = 0, workers: int = 2, *,
             shard_size: int = 64, densepose_points: int = 100, image_format: str = "jpg",
             overwrite: bool = False, progress: bool = True) -> SynthSummary:
    """Generate ``num`` synthetic people seen by ``views`` cameras into ``out_dir``.

    Args:
        out_dir: output folder (created); the layout is described in docs/DATA.md.
        num: number of people (samples), >= 1.
        views: 1 (one random camera per person) or V > 1 (a rig of V calibrated cameras around each
            person, at 3-6 m from the rig centre and 1-2 m high, all aimed at the person).
        size: square image side in pixels, >= 32.
        seed: >= 0; the same settings give the same data (byte-identical arrays) for any ``workers``.
        workers: processes to use (1 = in this process).
        shard_size: people per shard (the unit of parallel work and of resuming).
        densepose_points: DensePose points per person and image (0 = none).
        image_format: ``"jpg"`` (quality 92) or ``"png"`` for the colour images.
        overwrite: replace data in ``out_dir`` written with other settings (otherwise a ValueError).
        progress: show a tqdm progress bar.

    Re-running with the same settings skips the shards already finished. Returns a
    :class:`SynthSummary`.
    """
    settings = SynthSettings(num=num, views=views, size=size, seed=seed, shard_size=shard_size,
                             densepose_points=densepose_points, image_format=image_format).validate()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an int >= 1; got {workers!r}")
    out = Path(out_dir).resolve()
    t0 = time.perf_counter()
    _prepare_dir(out, settings, overwrite)
    todo = [k for k in range(settings.num_shards) if not _shard_done(out, settings, k)]
    skipped = settings.num_shards - len(todo)
    stage: Dict[str, float] = {}

    from tqdm import tqdm

    remaining = sum(b - a for a, b in map(settings.shard_range, todo))
    bar = tqdm(total=settings.num, initial=settings.num - remaining, unit="person", desc="synth", disable=not progress)
    try:
        tasks = [(settings, str(out), k) for k in todo]
        if workers == 1 or len(todo) <= 1:
            results = map(_shard_task, tasks)
            pool = None
        else:
            import multiprocessing as mp

            # spawn: workers start clean (no inherited OpenMP/torch thread state).
            pool = mp.get_context("spawn").Pool(min(workers, len(todo)))
            results = pool.imap_unordered(_shard_task, tasks)
        try:
            for _, (a, b), times in results:
                for k, v in times.items():
                    stage[k] = stage.get(k, 0.0) + v
                bar.update(b - a)
        except BaseException:
            if pool is not None:  # a failed shard stops the others (finished shards stay marked)
                pool.terminate()
                pool.join()
                pool = None
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    finally:
        bar.close()
    t1 = time.perf_counter()
    npz, dp_path, cam_path = _merge(out, settings)
    stage["merge"] = time.perf_counter() - t1
    return SynthSummary(out_dir=str(out), npz=str(npz), densepose=str(dp_path), cameras=str(cam_path),
                        num_people=settings.num, num_images=settings.num * settings.views,
                        shards_generated=len(todo), shards_skipped=skipped,
                        seconds=time.perf_counter() - t0, stage_seconds=stage)


# ----------------------------------------------------------------------------------- contact sheet
_LIMBS = (
    ("right_ankle", "right_knee"), ("right_knee", "right_hip_lsp"), ("left_ankle", "left_knee"),
    ("left_knee", "left_hip_lsp"), ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"),
    ("left_wrist", "left_elbow"), ("left_elbow", "left_shoulder"), ("right_shoulder", "neck_lsp"),
    ("left_shoulder", "neck_lsp"), ("neck_lsp", "head_top_lsp"), ("right_hip_lsp", "pelvis_mpii"),
    ("left_hip_lsp", "pelvis_mpii"), ("pelvis_mpii", "spine_h36m"), ("spine_h36m", "thorax_mpii"),
    ("thorax_mpii", "neck_lsp"),
)


def _draw_keypoints(img, part: np.ndarray, openpose: np.ndarray, scale: float):
    """Draw SPIN's 24 GT joints as a skeleton (left blue, right red, centre green) and the simulated
    OpenPose detections as yellow dots sized by confidence, on a PIL image scaled by ``scale``."""
    from PIL import ImageDraw

    from ..body.keypoints import keypoint_names

    names = keypoint_names("spin_24")
    d = ImageDraw.Draw(img)
    colour = lambda n: (60, 120, 255) if n.startswith("left") else (255, 60, 60) if n.startswith("right") else (40, 220, 80)  # noqa: E731
    for a, b in _LIMBS:
        i, j = names.index(a), names.index(b)
        if part[i, 2] > 0 and part[j, 2] > 0:
            d.line([tuple(part[i, :2] * scale), tuple(part[j, :2] * scale)], fill=colour(a if a != "neck_lsp" else b), width=1)
    for k in range(len(openpose)):
        if openpose[k, 2] > 0:
            x, y = openpose[k, :2] * scale
            r = 0.5 + 1.5 * openpose[k, 2]
            d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 220, 0), outline=(0, 0, 0))
    return img


def contact_sheet(dataset_dirs: Sequence, path, *, people: int = 4, cell: int = 192) -> Path:
    """A picture of generated samples: per image the RGB with the GT skeleton (``part``) and the simulated
    OpenPose detections, and the IUV image next to it. A single-view folder gives a row of ``people``
    samples, a multi-view folder one row per person with all views. Writes ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    rows = []
    for folder in dataset_dirs:
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
        V = settings["views"]
        with np.load(folder / dataset_npz_name(V), allow_pickle=False) as z:
            data = {k: z[k] for k in ("imgname", "iuvname", "part", "openpose")}
        if V == 1:
            data = {k: v[:, None] for k, v in data.items()}
        groups = [list(range(min(people, len(data["imgname"]))))] if V == 1 else [[p] for p in range(min(people, len(data["imgname"])))]
        for group in groups:
            tiles = []
            for p in group:
                for v in range(data["imgname"].shape[1]):
                    rgb = Image.open(folder / str(data["imgname"][p, v])).convert("RGB")
                    s = cell / rgb.width
                    rgb = _draw_keypoints(rgb.resize((cell, cell), Image.NEAREST), data["part"][p, v], data["openpose"][p, v], s)
                    iuv = Image.open(folder / str(data["iuvname"][p, v])).convert("RGB").resize((cell, cell), Image.NEAREST)
                    iuv_arr = np.asarray(iuv).copy()
                    # Show I as a colour ramp so the parts stand out next to the U, V gradients.
                    iuv_arr[..., 0] = (iuv_arr[..., 0].astype(np.int32) * 10).clip(0, 255).astype(np.uint8)
                    tiles.append(np.concatenate([np.asarray(rgb), iuv_arr], 1))
            rows.append(np.concatenate(tiles, 1))
    width = max(r.shape[1] for r in rows)
    gap = 6
    sheet = np.full((sum(r.shape[0] + gap for r in rows) - gap, width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        sheet[y:y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)
    return path
