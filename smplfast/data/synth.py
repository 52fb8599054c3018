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
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._io import atomic_write, atomic_write_bytes

__all__ = ["SynthSettings", "SynthSummary", "generate", "resolve_settings", "contact_sheet", "SETTINGS_FILE", "dataset_npz_name"]

SETTINGS_FILE = "synth.json"
# 2: skeleton joints, exact 2D under *_gt, pose_family, has_pose_3d and occlusion per joint in every npz.
FORMAT_VERSION = 2
#: Images rendered per renderer call (part of the settings: per-chunk random streams depend on it).
CHUNK = 16
IMAGE_FORMATS = ("jpg", "png")
_OUTPUT_DIRS = ("images", "masks", "parts", "iuv", "shards")
_OUTPUT_FILES = ("synth_spin.npz", "synth_mvspin.npz", "densepose.json", "cameras.json", SETTINGS_FILE)

# Random streams of the optional features (their own, so turning one on leaves the other draws as they were).
_OCCLUDER_STREAM, _ANNOTATION_STREAM, _BOX_STREAM = 1_000_000, 2_000_000, 3_000_000

# SPIN's box margin: scale = 1.2 x box side / 200.
BOX_MARGIN = 1.2


def dataset_npz_name(views: int) -> str:
    """File name of the dataset npz: ``synth_spin.npz`` (one view) or ``synth_mvspin.npz``."""
    return "synth_spin.npz" if views == 1 else "synth_mvspin.npz"


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines the generated data (the worker count does not).

    Beyond size and seed: the people (``families``: a subset of
    :data:`smplfast.body.samplers.POSE_FAMILIES`, None = all), the viewpoint (see
    :func:`smplfast.data.cameras.single_view_cameras`: ``azimuths`` degrees relative to the way the
    person faces with ``azimuth_jitter``, ``elevation`` and ``roll`` ranges in degrees, camera
    ``distance`` range in metres, ``fill`` the person's size as a fraction of the image side; None =
    the engine's original ranges), annotation noise on the annotated 2D keypoints (``keypoint_noise``
    sigma as a fraction of the box side, ``mislabel_prob`` for hidden joints, ``swap_prob`` for a
    left/right confusion; see :func:`smplfast.data.detections.annotation_noise`), occluders covering up
    to ``occluders`` of the box, ``bbox_jitter`` of the stored box, and whether 3D joints / SMPL
    parameters are marked as not for training (``hide_3d``, ``hide_smpl``). ``split`` records the name
    of a standard split (:data:`smplfast.data.splits.SPLITS`) the settings came from.
    """

    num: int
    views: int = 1
    size: int = 224
    seed: int = 0
    shard_size: int = 64
    densepose_points: int = 100
    image_format: str = "jpg"
    chunk: int = CHUNK
    format_version: int = FORMAT_VERSION
    families: Optional[Tuple[str, ...]] = None
    azimuths: Optional[Tuple[float, ...]] = None  # None (or "all"): any azimuth
    azimuth_jitter: float = 10.0
    elevation: Optional[Tuple[float, float]] = None
    roll: Optional[Tuple[float, float]] = None
    distance: Optional[Tuple[float, float]] = None
    fill: Optional[Tuple[float, float]] = None
    keypoint_noise: float = 0.0
    mislabel_prob: float = 0.0
    swap_prob: float = 0.0
    occluders: float = 0.0
    bbox_jitter: float = 0.0
    hide_3d: bool = False
    hide_smpl: bool = False
    split: Optional[str] = None

    def validate(self) -> "SynthSettings":
        """Check every setting (errors name the option, its command-line flag and the allowed values) and
        return the settings with ranges and lists as tuples of floats."""
        def flag(name):
            return f"{name} (--{name.replace('_', '-')})"

        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{flag(name)} must be an int; got {type(v).__name__} {v!r}")
            if v < lo:
                raise ValueError(f"{flag(name)} must be >= {lo}; got {v}")

        def number(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not lo <= v <= hi:
                raise ValueError(f"{flag(name)} must be a number in [{lo}, {hi}]; got {v!r}")
            return float(v)

        def span(name, lo, hi, strict_lo=False):
            v = getattr(self, name)
            if v is None:
                return None
            try:
                a, b = (float(x) for x in v)
            except (TypeError, ValueError):
                raise ValueError(f"{flag(name)} must be a range (lo, hi); got {v!r}") from None
            ok = (lo < a if strict_lo else lo <= a) and a <= b <= hi
            if not ok:
                raise ValueError(f"{flag(name)} must be (lo, hi) with {lo} {'<' if strict_lo else '<='} lo <= hi <= {hi}; got {v!r}")
            return (a, b)

        integer("num", 1)
        integer("views", 1)
        integer("size", 32)
        integer("seed", 0)
        integer("shard_size", 1)
        integer("densepose_points", 0)
        integer("chunk", 1)
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"{flag('image_format')} must be one of {IMAGE_FORMATS}; got {self.image_format!r}")
        from ..body.samplers import POSE_FAMILIES
        from .splits import SPLITS

        fixed = {}
        if self.families is not None:
            fams = (self.families,) if isinstance(self.families, str) else tuple(self.families)
            bad = [f for f in fams if f not in POSE_FAMILIES]
            if not fams or bad or len(set(fams)) != len(fams):
                raise ValueError(f"{flag('families')} must be distinct names from {', '.join(POSE_FAMILIES)}; got {self.families!r}")
            fixed["families"] = tuple(str(f) for f in fams)
        if isinstance(self.azimuths, str) and self.azimuths == "all":  # explicit "any azimuth" (over a split)
            fixed["azimuths"] = None
        elif self.azimuths is not None:
            try:
                az = tuple(float(a) for a in self.azimuths)
            except (TypeError, ValueError):
                az = ()
            if not az or not all(np.isfinite(az)):
                raise ValueError(f"{flag('azimuths')} must be a non-empty list of angles in degrees (relative to the way "
                                 f"the person faces), or None for any azimuth; got {self.azimuths!r}")
            fixed["azimuths"] = az
        fixed["azimuth_jitter"] = number("azimuth_jitter", 0.0, 180.0)
        fixed["elevation"] = span("elevation", -90.0, 90.0)
        fixed["roll"] = span("roll", -180.0, 180.0)
        fixed["distance"] = span("distance", 0.0, 1000.0, strict_lo=True)
        fixed["fill"] = span("fill", 0.0, 1.0, strict_lo=True)
        fixed["keypoint_noise"] = number("keypoint_noise", 0.0, 1.0)
        fixed["mislabel_prob"] = number("mislabel_prob", 0.0, 1.0)
        fixed["swap_prob"] = number("swap_prob", 0.0, 1.0)
        fixed["occluders"] = number("occluders", 0.0, 1.0)
        fixed["bbox_jitter"] = number("bbox_jitter", 0.0, 0.5)
        for name in ("hide_3d", "hide_smpl"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{flag(name)} must be a bool; got {getattr(self, name)!r}")
            fixed[name] = bool(getattr(self, name))
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"{flag('split')} must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.views > 1:
            for name in ("azimuths", "elevation", "roll"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{flag(name)} applies to single-view data (views=1); a rig (views={self.views}) "
                                     "places its cameras around the room (distance and fill still apply)")
        return replace(self, **fixed)

    def to_dict(self) -> dict:
        """The settings as JSON values (tuples become lists), as stored in ``synth.json``."""
        return json.loads(json.dumps(asdict(self)))

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
    # SPIN's 49 keypoints, then the SMPL skeleton joints that are not among them (the skeleton keys).
    spin49, smpl24 = keypoint_names("spin_49"), keypoint_names("smpl_24")
    names = list(spin49) + [j for j in smpl24 if j not in spin49]
    models = {g[0]: SMPL(gender=g, keypoints=names) for g in genders} if len(genders) == 2 \
        else {"n": SMPL(keypoints=names)}
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
        flip_spin24=np.asarray(flip_permutation("spin_24")),
        flip_smpl24=np.asarray(flip_permutation("smpl_24")),
        smpl24=np.asarray([names.index(j) for j in smpl24]),
        swap_groups=[arm, leg],
        pelvis=op_names.index("mid_hip_openpose"),  # SPIN fits mid_hip with SMPL's pelvis joint
    )
    return _STATE


# ------------------------------------------------------------------------------------------ shards
def _shard_paths(out_dir: Path, index: int) -> Dict[str, Path]:
    base = out_dir / "shards" / f"{index:05d}"
    return {"npz": base.with_suffix(".npz"), "json": base.with_suffix(".json"), "done": base.with_suffix(".done")}


def _labelled_2d(uv: np.ndarray, z: np.ndarray, size: int) -> np.ndarray:
    """Exact 2D labels (..., K, 3) = (x, y, visible) of projections ``uv`` (..., K, 2) with camera depths
    ``z``: visible = in front of the camera and inside the ``size`` x ``size`` image; NaN becomes 0."""
    inside = np.isfinite(uv).all(-1) & (uv >= 0).all(-1) & (uv < size).all(-1) & (z > 0)
    return np.concatenate([np.nan_to_num(uv), inside[..., None].astype(np.float64)], -1)


def _atomic_savez(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


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
    from ..body.samplers import sample_betas, sample_poses
    from ..geometry import axis_angle_to_matrix, matrix_to_axis_angle
    from ..render import iuv_to_uint8
    from .backgrounds import random_backgrounds, random_lights, random_part_textures
    from .cameras import facing_azimuth, rig_cameras, single_view_cameras
    from .detections import annotation_noise, occlusion, random_occluders, simulate_detections

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
        poses, family = sample_poses(n, family=settings.families, seed=rng, return_family=True)
        betas = sample_betas(n, 10, seed=rng)
        verts = np.zeros((n, st["renderer"].num_vertices, 3), np.float32)
        joints = np.zeros((n, 49, 3), np.float64)
        skeleton = np.zeros((n, 24, 3), np.float64)
        with torch.no_grad():
            for g, model in st["models"].items():
                idx = np.flatnonzero(genders == g)
                if len(idx):
                    o = model(global_orient=poses[idx, :3], body_pose=poses[idx, 3:], betas=betas[idx])
                    verts[idx] = o.vertices.numpy()
                    joints[idx] = o.joints[:, :49].double().numpy()
                    skeleton[idx] = o.joints[:, st["smpl24"]].double().numpy()
        lap("pose")

        # Placement in the world and cameras.
        pelvis = joints[:, st["pelvis"]].copy()  # = the root joint J0, which the global rotation keeps fixed
        vmin, vmax = verts.min(1).astype(np.float64), verts.max(1).astype(np.float64)
        extent = (vmax - vmin).max(1)
        Rg = axis_angle_to_matrix(poses[:, :3].double()).numpy()
        ranges = {k: v for k, v in (("distance" if V == 1 else "radius", settings.distance),
                                    ("fraction", settings.fill)) if v is not None}
        if V == 1:
            transl = -pelvis
            if settings.roll is not None:
                ranges["roll_deg"] = settings.roll
            cams = single_view_cameras(rng, pelvis + transl, extent, S, azimuths_deg=settings.azimuths,
                                       azimuth_jitter_deg=settings.azimuth_jitter, facing=facing_azimuth(Rg),
                                       elevation_deg=settings.elevation, **ranges).reshape(n, 1)
        else:
            where = rng.uniform(-1.0, 1.0, (n, 2))
            transl = np.stack([where[:, 0] - pelvis[:, 0], -vmin[:, 1], where[:, 1] - pelvis[:, 2]], -1)
            cams = rig_cameras(rng, pelvis + transl, extent, S, V, **ranges)
        textures = random_part_textures(rng, n)
        # One camera: light from its side of the person; a rig: anywhere (some views are backlit).
        eye = -np.einsum("nji,nj->ni", cams.rotation[:, 0], cams.translation[:, 0]) - (pelvis + transl)
        light_world, ambient = random_lights(rng, n, towards=eye if V == 1 else None)
        verts += transl[:, None, :].astype(np.float32)
        joints_world = joints + transl[:, None, :]
        joints_cam = cams.to_camera(joints_world[:, None].repeat(V, 1))  # (n, V, 49, 3)
        skeleton_cam = cams.to_camera((skeleton + transl[:, None, :])[:, None].repeat(V, 1))  # (n, V, 24, 3)

        # SMPL parameters in each camera's frame: orientation R_c R_g; translation keeping J0 in place.
        Rc = cams.rotation
        orient_cam = matrix_to_axis_angle(torch.from_numpy(Rc @ Rg[:, None])).numpy()
        pose_cam = np.concatenate([orient_cam, np.repeat(poses[:, None, 3:].double().numpy(), V, 1)], -1)
        transl_cam = np.einsum("nvij,nj->nvi", Rc, pelvis + transl) + cams.translation - pelvis[:, None]
        lap("cameras")

        # Per image arrays (flattened b = person * V + view).
        B = n * V
        uv_all = cams.project(joints_cam).reshape(B, 49, 2)
        z_all = joints_cam[..., 2].reshape(B, 49)
        uv_skel = cams.project(skeleton_cam).reshape(B, 24, 2)
        z_skel = skeleton_cam[..., 2].reshape(B, 24)
        skel_occ = np.zeros((B, 24))
        flat = cams.reshape(B)
        stems = [s for row in _image_names(settings, start, stop) for s in row]
        ext = settings.image_format
        bbox = np.zeros((B, 4))
        box_size = np.zeros(B)
        openpose = np.zeros((B, 25, 3))
        coco_vis = np.zeros((B, 24))
        dp_points: List[Optional[dict]] = [None] * B

        for c0 in range(0, B, settings.chunk):
            c1 = min(c0 + settings.chunk, B)
            crng = np.random.default_rng([settings.seed, index, 1 + c0 // settings.chunk])
            person = np.arange(c0, c1) // V
            cam = flat[c0:c1].to_perspective(dtype=torch.float32)
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
            # Person boxes from the silhouettes (from the projected joints when nobody is visible).
            bb = _bboxes(sil)
            empty = bb[:, 2] == 0
            if empty.any():
                uv = np.nan_to_num(uv_all[c0:c1][empty]).clip(0, S)
                lo, hi = uv.min(1), uv.max(1)
                bb[empty] = np.concatenate([lo, np.maximum(hi - lo, 1.0)], -1)
            bg, _ = random_backgrounds(crng, k, S, S)
            gain = crng.uniform(0.85, 1.15, (k, 1, 1, 3)).astype(np.float32)  # exposure and colour cast
            sigma = crng.uniform(0.0, 0.04, (k, 1, 1, 1)).astype(np.float32)
            noise = crng.standard_normal((k, S, S, 3), dtype=np.float32)
            img = np.where(sil[..., None], rgb, bg)
            seen_depth = depth  # what hides a joint: the body, and occluders in front of everything
            occluder = np.zeros(sil.shape, bool)
            if settings.occluders > 0:  # own stream: the same people and cameras with or without occluders
                orng = np.random.default_rng([settings.seed, index, _OCCLUDER_STREAM + c0 // settings.chunk])
                occluder = random_occluders(orng, bb, (S, S), settings.occluders)
                texture, _ = random_backgrounds(orng, k, S, S)
                img = np.where(occluder[..., None], texture, img)
                seen_depth = np.where(occluder, np.float32(1e-3), depth)
            img = img * gain + noise * sigma
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

            # Detections, occlusion of the joints, the stored (annotated) box, DensePose points.
            person_size = bb[:, 2:].max(1)
            box_size[c0:c1] = person_size
            openpose[c0:c1] = simulate_detections(crng, uv_all[c0:c1, :25], z_all[c0:c1, :25], seen_depth, person_size,
                                                  st["flip_openpose"], swap_groups=st["swap_groups"])
            coco_vis[c0:c1] = occlusion(np.nan_to_num(uv_all[c0:c1, 25:]), z_all[c0:c1, 25:], seen_depth, 0.1, 0.2)
            skel_occ[c0:c1] = occlusion(np.nan_to_num(uv_skel[c0:c1]), z_skel[c0:c1], seen_depth, 0.1, 0.2)
            if settings.bbox_jitter > 0:  # a detector's box: centre and side off by N(0, jitter) of the side
                jrng = np.random.default_rng([settings.seed, index, _BOX_STREAM + c0 // settings.chunk])
                side = bb[:, 2:].max(1, keepdims=True)
                centre = bb[:, :2] + bb[:, 2:] / 2 + jrng.standard_normal((k, 2)) * settings.bbox_jitter * side
                wh = bb[:, 2:] * np.exp(jrng.standard_normal((k, 1)) * settings.bbox_jitter)
                bb = np.concatenate([centre - wh / 2, wh], -1)
            bbox[c0:c1] = bb
            P = settings.densepose_points
            for j in range(k):
                fg = np.flatnonzero(sil[j] & ~occluder[j])  # annotators mark only the visible body
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
        kp49 = _labelled_2d(uv_all, z_all, S)
        inside = kp49[..., 2] > 0
        part, openpose_gt = kp49[:, 25:], kp49[:, :25]
        S3 = np.concatenate([joints_cam.reshape(B, 49, 3)[:, 25:], np.ones((B, 24, 1))], -1)
        skel_2d = _labelled_2d(uv_skel, z_skel, S)
        skel_3d = skeleton_cam.reshape(B, 24, 3)
        # Annotated 2D: the exact projections, or what a human annotator would have clicked.
        part_ann, skel_2d_ann = part, skel_2d
        if settings.keypoint_noise > 0 or settings.mislabel_prob > 0 or settings.swap_prob > 0:
            arng = np.random.default_rng([settings.seed, index, _ANNOTATION_STREAM])
            noise_kw = dict(sigma=settings.keypoint_noise, swap_prob=settings.swap_prob, mislabel_prob=settings.mislabel_prob)
            part_ann = annotation_noise(arng, part, coco_vis > 0.5, box_size, st["flip_spin24"], **noise_kw)
            skel_2d_ann = annotation_noise(arng, skel_2d, skel_occ > 0.5, box_size, st["flip_smpl24"], **noise_kw)
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
            "part": views(part_ann),
            "part_gt": views(part),
            "S": views(S3),
            "openpose": views(openpose),
            "openpose_gt": views(openpose_gt),
            "pose": views(pose_cam.reshape(B, 72)),
            "shape": per_view(betas.double().numpy()),
            "transl": views(transl_cam.reshape(B, 3)),
            "has_smpl": per_view(np.zeros(n) if settings.hide_smpl else np.ones(n)),
            "has_pose_3d": per_view(np.zeros(n) if settings.hide_3d else np.ones(n)),
            "smpl_joints_2d": views(skel_2d_ann),
            "smpl_joints_2d_gt": views(skel_2d),
            "smpl_joints_3d": views(skel_3d),
            "occluded": views(coco_vis),
            "gender": per_view(genders),
            "cam_rot": views(flat.rotation),
            "cam_transl": views(flat.translation),
            "cam_focal": views(flat.focal),
            "cam_center": views(flat.center),
            "world_transl": transl,
            "world_orient": poses[:, :3].double().numpy(),
            "pose_family": family.numpy().astype(np.int64),
        }
        # COCO keypoints (x, y, v): v = 2 visible, 1 inside the image but hidden, 0 outside.
        coco_xy = convert(part_ann[..., :2], "spin_24", "coco_17")
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
        atomic_write_bytes(paths["json"], json.dumps(records, separators=(",", ":")).encode())
        atomic_write_bytes(paths["done"], json.dumps({"settings": settings.to_dict(), "index": index}).encode())
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
    wanted = {"settings": settings.to_dict()}
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
        # No synth.json: nothing proves the folder's files are ours, so nothing is deleted; overwrite only
        # lets generate write into it (replacing files of the names it writes).
        if not overwrite:
            raise ValueError(f"{str(out)!r} is not empty and holds no {SETTINGS_FILE}; choose an empty or new folder, "
                             "or pass overwrite=True (--overwrite) to write into it (no existing file is deleted; "
                             "files with the names it writes are replaced)")
    for d in _OUTPUT_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(meta, json.dumps(wanted, indent=2).encode())


_SHARD_FILE = re.compile(r"\d{5}\.(npz|json|done)")


def _written_files(out: Path) -> List[Path]:
    """The files a previous :func:`generate` run wrote in ``out``, as its shard records list them: the
    shard files, every image / mask / parts / IUV file named in a shard's json, and the merged outputs.
    Files nobody listed (a user's own files in the same folders) are not included."""
    files = [out / f for f in _OUTPUT_FILES]
    shards = out / "shards"
    if shards.is_dir():
        for p in sorted(shards.iterdir()):
            if not _SHARD_FILE.fullmatch(p.name):
                continue
            files.append(p)
            if p.suffix != ".json":
                continue
            try:
                records = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # unreadable: its images stay (they are replaced by name when regenerated)
            for rec in records if isinstance(records, list) else []:
                if not isinstance(rec, dict) or not isinstance(rec.get("file_name"), str):
                    continue
                stem = Path(rec["file_name"]).stem
                files += [out / rec["file_name"], out / "masks" / f"{stem}.png", out / "parts" / f"{stem}.png"]
                if isinstance(rec.get("iuv_file_name"), str):
                    files.append(out / rec["iuv_file_name"])
    return files


def _remove_outputs(out: Path) -> None:
    """Delete what a previous :func:`generate` run wrote (as listed by :func:`_written_files`) and
    nothing else: a file of the user's in ``images/`` etc. survives; emptied output folders go."""
    root = out.resolve()
    allowed = {root / d for d in _OUTPUT_DIRS} | {root}
    for f in _written_files(out):
        r = f.resolve()
        if r.parent in allowed and r.is_file():  # never outside the output folders (a crafted record)
            r.unlink()
    for d in _OUTPUT_DIRS:
        try:
            (out / d).rmdir()   # only when empty
        except OSError:
            pass


def _shard_done(out: Path, settings: SynthSettings, index: int) -> bool:
    p = _shard_paths(out, index)
    if not (p["done"].is_file() and p["npz"].is_file() and p["json"].is_file()):
        return False
    try:
        mark = json.loads(p["done"].read_text())
    except json.JSONDecodeError:
        return False
    return mark.get("settings") == settings.to_dict() and mark.get("index") == index


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
    dp = {"info": {"description": "smplfast synthetic people", "settings": settings.to_dict()},
          "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": coco_names}],
          "images": images, "annotations": annotations}
    dp_path = out / "densepose.json"
    atomic_write_bytes(dp_path, json.dumps(dp, separators=(",", ":")).encode())
    cam_path = out / "cameras.json"
    cam_doc = {"convention": "X_cam = R X + t; u = f_x X/Z + c_x, v = f_y Y/Z + c_y (pixels); world: y up, metres",
               "views": settings.views, "image_size": [settings.size, settings.size], "cameras": cameras}
    atomic_write_bytes(cam_path, json.dumps(cam_doc, separators=(",", ":")).encode())
    return npz, dp_path, cam_path


def resolve_settings(split: Optional[str] = None, config=None, **options) -> SynthSettings:
    """The :class:`SynthSettings` of a standard split (:data:`smplfast.data.splits.SPLITS`), updated by a
    config (a mapping, or a ``.json`` / ``.yaml`` file of settings, which may itself name a ``split``),
    updated by ``options`` whose value is not None; validated. ``num`` is required unless a split gives it."""
    from .splits import SPLITS

    names = {f.name for f in fields(SynthSettings)}
    if config is not None and not isinstance(config, dict):
        path = Path(config)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"config (--config): cannot read {str(path)!r}: {e}") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                config = yaml.safe_load(text)
            else:
                config = json.loads(text)
        except Exception as e:  # noqa: BLE001 - any parse error is the file's fault
            raise ValueError(f"config (--config): {str(path)!r} is not valid {path.suffix[1:] or 'json'}: {e}") from None
        if not isinstance(config, dict):
            raise ValueError(f"config (--config): {str(path)!r} must hold a mapping of settings; got {type(config).__name__}")
    config = dict(config or {})
    split = options.pop("split", None) or split or config.get("split")
    values: Dict[str, object] = {}
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split (--split) must be one of {', '.join(SPLITS)}; got {split!r}")
        values.update(SPLITS[split], split=split)
    for source, what in ((config, "config"), ({k: v for k, v in options.items() if v is not None}, "option")):
        unknown = sorted(set(source) - names)
        if unknown:
            raise ValueError(f"unknown synth {what} key(s) {unknown}; known: {sorted(names - {'format_version', 'chunk'})}")
        values.update(source)
    if "num" not in values:
        raise ValueError("num (--num) is required unless a split (--split) gives the number of people")
    return SynthSettings(**values).validate()


def generate(out_dir, num: Optional[int] = None, views: Optional[int] = None, size: Optional[int] = None,
             seed: Optional[int] = None, workers: int = 2, *, split: Optional[str] = None, config=None,
             overwrite: bool = False, progress: bool = True, **options) -> SynthSummary:
    """Generate ``num`` synthetic people seen by ``views`` cameras into ``out_dir``.

    Args:
        out_dir: output folder (created); the layout is described in docs/DATA.md.
        num: number of people (samples), >= 1 (a ``split`` gives a default).
        views: 1 (one random camera per person, the default) or V > 1 (a rig of V calibrated cameras
            around each person, at 3-6 m from the rig centre and 1-2 m high, all aimed at the person).
        size: square image side in pixels, >= 32 (default 224).
        seed: >= 0 (default 0, or the split's); the same settings give the same data (byte-identical
            arrays) for any ``workers``.
        workers: processes to use (1 = in this process).
        split: a standard split of :data:`smplfast.data.splits.SPLITS` (``lab_train``, ``wild_train``,
            ``wild_test``, ``wild_test_occ``, ``lab_test``, ``rig_train``, ``rig_test``): its settings are the
            defaults that ``config`` and the other arguments override.
        config: a mapping or a ``.json`` / ``.yaml`` file of settings.
        overwrite: replace data in ``out_dir`` written with other settings (otherwise a ValueError).
        progress: show a tqdm progress bar.
        options: any other field of :class:`SynthSettings`: ``shard_size`` (people per shard, the unit of
            parallel work and of resuming; 64), ``densepose_points`` (per person and image; 100),
            ``image_format`` (``"jpg"`` quality 92, or ``"png"``), ``families``, ``azimuths``,
            ``azimuth_jitter``, ``elevation``, ``roll``, ``distance``, ``fill``, ``keypoint_noise``,
            ``mislabel_prob``, ``swap_prob``, ``occluders``, ``bbox_jitter``, ``hide_3d``, ``hide_smpl``.

    Re-running with the same settings skips the shards already finished. Returns a
    :class:`SynthSummary`.
    """
    settings = resolve_settings(split=split, config=config, num=num, views=views, size=size, seed=seed, **options)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an int >= 1; got {workers!r}")
    out = Path(out_dir).resolve()
    t0 = time.perf_counter()
    try:
        _prepare_dir(out, settings, overwrite)
    except OSError as e:  # e.g. a read-only folder: name it
        raise type(e)(e.errno, f"synth: cannot write into {str(out)!r} ({e.filename or ''}): {e.strerror or e}") from e
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


def contact_sheet(dataset_dirs: Sequence, path, *, people: int = 4, cell: int = 192, show_iuv: bool = True,
                  labels: Optional[Sequence[str]] = None) -> Path:
    """A picture of generated samples: per image the RGB with the annotated skeleton (``part``) and the
    simulated OpenPose detections, and (``show_iuv``) the IUV image next to it. A single-view folder gives
    a row of ``people`` samples, a multi-view folder a row of ``people // views`` subjects with all their
    views. ``labels`` (one per folder) are written at the left of the rows. Writes ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    if labels is not None and len(labels) != len(dataset_dirs):
        raise ValueError(f"contact_sheet: labels must be one per folder ({len(dataset_dirs)}); got {len(labels)}")
    rows, row_labels = [], []
    for which, folder in enumerate(dataset_dirs):
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
        V = settings["views"]
        with np.load(folder / dataset_npz_name(V), allow_pickle=False) as z:
            data = {k: z[k] for k in ("imgname", "iuvname", "part", "openpose")}
        if V == 1:
            data = {k: v[:, None] for k, v in data.items()}
        # One row per folder: ``people`` images, or as many rig subjects (all their views) as fit in it.
        groups = [list(range(min(max(1, people // V), len(data["imgname"]))))]
        for g, group in enumerate(groups):  # noqa: B007
            tiles = []
            for p in group:
                for v in range(data["imgname"].shape[1]):
                    rgb = Image.open(folder / str(data["imgname"][p, v])).convert("RGB")
                    s = cell / rgb.width
                    rgb = _draw_keypoints(rgb.resize((cell, cell), Image.NEAREST), data["part"][p, v], data["openpose"][p, v], s)
                    tile = [np.asarray(rgb)]
                    if show_iuv:
                        iuv = Image.open(folder / str(data["iuvname"][p, v])).convert("RGB").resize((cell, cell), Image.NEAREST)
                        iuv_arr = np.asarray(iuv).copy()
                        # Show I as a colour ramp so the parts stand out next to the U, V gradients.
                        iuv_arr[..., 0] = (iuv_arr[..., 0].astype(np.int32) * 10).clip(0, 255).astype(np.uint8)
                        tile.append(iuv_arr)
                    tiles.append(np.concatenate(tile, 1))
            rows.append(np.concatenate(tiles, 1))
            row_labels.append(labels[which] if labels is not None and g == 0 else None)
    margin = 0 if labels is None else 120
    width = max(r.shape[1] for r in rows) + margin
    gap = 6
    sheet = np.full((sum(r.shape[0] + gap for r in rows) - gap, width, 3), 255, np.uint8)
    y, tops = 0, []
    for r in rows:
        sheet[y:y + r.shape[0], margin: margin + r.shape[1]] = r
        tops.append(y)
        y += r.shape[0] + gap
    img = Image.fromarray(sheet)
    if labels is not None:
        draw = ImageDraw.Draw(img)
        for top, text in zip(tops, row_labels):
            if text:
                draw.multiline_text((6, top + 6), text.replace(" ", "\n", 2), fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path
