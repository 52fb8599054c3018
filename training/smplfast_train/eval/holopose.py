"""HoloPose evaluation on a single-view split (TRAINING_SPEC §6.2 H1 / H2, §4.5, §4.7): the evaluation set
of the refinement study (:class:`HoloPoseEvalSet`), the refinement configurations of HoloPose's Table 3
(:data:`CONFIGS`, :func:`run_refine`), and the evaluation of a trained :class:`HoloPoseNet` with its
branches and its test-time refinement (:func:`evaluate_holopose`).

**Units.** Everything 2D is in *normalised crop units*: SPIN's crop (``center``, ``200 scale`` pixels
wide) mapped to [-1, 1], i.e. ``(pixel − center) / (100 scale)`` (:meth:`HoloPoseEvalSet.to_crop`);
this equals the network's ``2 q / img_res − 1`` of a crop pixel q. Bodies are seen by
:class:`smplfast.surface.WeakPerspectiveCamera` ``[s, tx, ty]``: a point X projects to
``s (X_xy + t)``. 3D joints are metres in the camera axes; 3D errors are reported in mm.

**Metrics of a body** (:meth:`HoloPoseEvalSet.evaluate`, per person): ``pa_mpjpe`` / ``mpjpe`` (mm, J14
of the ``h36m_17`` regressor, the body against the ground-truth mesh, both in the person's gender
model), ``pa_mpjpe24`` (mm, the 24 skeleton joints against the file's ``smpl_joints_3d``) and the
DensePose RCP at the annotated points of ``densepose.json``: the body is rendered with its weak camera
(a perspective camera :data:`Z_FAR` away with the focal length that gives the same scale), the surface
point under each annotated pixel (face and barycentrics) is compared with the ground-truth (I, U, V)
point by the geodesic distance on the rest template (:mod:`smplfast_train.eval.densepose_rcp`); a pixel
the mesh does not cover is a failure. ``fr10`` = % of points with error >= 10 cm (lower is better),
``auc10`` / ``auc30`` in 0-1, ``fr10_euclid`` the FR10 of straight-line distances on the template,
``coverage`` the fraction of points the mesh covers.

**Network evaluation** (:func:`evaluate_holopose`): the model's reprojection as above; the 3D keypoint
branch (PA-MPJPE of ``joints3d`` on the 24 skeleton joints: HoloPose Table 2's analogue); the DensePose
branch (RCP of the FCN's own correspondences at the annotated points: each point is mapped into the
crop, the heatmap pixel that contains it (the nearest pixel centre) gives the part (the most likely
of 24 where P(foreground) > 0.5, else no prediction: infinite error) and that part's U, V; a point
outside the crop has no prediction either); the 2D branch (PCK@0.05 of the decoded 24 skeleton joints
against their exact projections, visible joints); and the refinement configurations fed by the
network's outputs (:func:`network_refine_inputs`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CONFIGS",
    "PAPER",
    "GENDERS",
    "Z_FAR",
    "HoloPoseEvalSet",
    "part_neighbours",
    "run_refine",
    "dp_branch_errors",
    "network_refine_inputs",
    "evaluate_holopose",
]

#: Refinement configurations of HoloPose's Table 3: name -> (DensePose, 2D keypoints, 3D keypoints).
CONFIGS = {
    "base": (False, False, False),
    "kps2d": (False, True, False),
    "kps3d": (False, False, True),
    "dp": (True, False, False),
    "kps2d_dp": (True, True, False),
    "kps3d_dp": (True, False, True),
}
#: HoloPose Table 3: name -> (FR10 in %, PA-MPJPE in mm).
PAPER = {
    "base": (51.1, 50.56), "kps2d": (45.8, 52.32), "kps3d": (52.3, 46.78), "dp": (43.3, 56.87),
    "kps2d_dp": (43.1, 51.20), "kps3d_dp": (44.6, 46.52),
}
#: The split files' gender letters -> model genders.
GENDERS = {"m": "male", "f": "female", "n": "neutral"}
#: Depth (m) of the perspective camera that renders a weak-perspective one.
Z_FAR = 1000.0


# ----------------------------------------------------------------------------------- evaluation set
class HoloPoseEvalSet:
    """Data, gendered models, ground truth and DensePose evaluation points of the first ``num`` people
    of a single-view split folder ``data`` (``synth_spin.npz``, ``synth.json``, ``densepose.json``,
    ``iuv/``; ``num`` is clamped to the split's size).

    Attributes (n = people, float64 unless noted): ``pose`` (n, 72) / ``betas`` (n, 10) / ``transl``
    (n, 3) ground-truth SMPL in the camera frame; ``gender`` (n,) model names; ``center`` (n, 2) and
    ``half`` (n,) (= 100 scale, half the crop side) in pixels; ``focal`` / ``cam_center`` (n, 2) the
    perspective camera (pixels); ``j2d_px`` (n, 24, 3) exact projections of the 24 skeleton joints
    (pixels, visibility); ``j3d`` (n, 24, 3) skeleton joints (camera frame, metres); ``image_size``
    (H, W); ``smpl`` / ``smpl_h36m`` / ``grid`` per gender (SMPL float64, SMPL with the ``h36m_17``
    regressor, :class:`smplfast.surface.UVGrid` R = 32); ``groups`` gender -> person indices;
    ``faces`` (F, 3) int64 (shared by every gender); ``triangles`` (the charts' triangles);
    ``renderer``; ``part_neighbours`` (:func:`part_neighbours`); ``geodesics``
    (:class:`~smplfast_train.eval.densepose_rcp.GeodesicTable`, ``geodesic_landmarks`` landmarks,
    cached in ``cache_dir``); ``gt_verts`` (n, V, 3) and ``gt_j17`` (n, 17, 3) ground-truth mesh and
    joints (no translation); ``gt_cam`` (n, 3) the ground truth's weak camera
    (:meth:`fit_weak_camera`); ``iuv`` (n, H, W, 3) uint8 ground-truth IUV images; the M evaluation
    points: ``eval_px`` (M, 2) pixel positions, ``eval_part`` (M,) 1..24, ``eval_uv`` (M, 2),
    ``eval_owner`` (M,) person index, ``eval_gt`` their surface points, ``eval_rc`` (rows, cols) the
    pixels holding them; ``seconds`` the set-up time.

    Raises FileNotFoundError when ``densepose.json`` is missing and ValueError when it holds no
    points (both are written by ``smplfast synth``; ``--densepose-points N``, N > 0, default 100)."""

    def __init__(self, data, num, geodesic_landmarks=2048, cache_dir=None, verbose=True):
        from PIL import Image

        import smplfast
        from smplfast.body.model_file import load_model
        from smplfast.render import BodyRenderer
        from smplfast.surface import ChartTriangles, SurfaceCharts, UVGrid
        from smplfast_train.eval.densepose_rcp import GeodesicTable, surface_points_from_iuv

        t0 = time.perf_counter()
        self.data = Path(data)
        for name in ("synth_spin.npz", "densepose.json", "synth.json"):
            if not (self.data / name).is_file():
                hint = (" (the DensePose evaluation points: `smplfast synth ... --densepose-points N` with N > 0 "
                        "writes it, default 100 per person)" if name == "densepose.json" else
                        " (a single-view split folder made by `smplfast synth`)")
                raise FileNotFoundError(f"HoloPose evaluation needs {self.data / name}{hint}")
        z = np.load(self.data / "synth_spin.npz")
        n = min(int(num), len(z["imgname"]))
        self.n = n
        self.pose = torch.from_numpy(z["pose"][:n]).double()
        self.betas = torch.from_numpy(z["shape"][:n]).double()
        self.transl = torch.from_numpy(z["transl"][:n]).double()
        self.gender = [GENDERS[str(g)] for g in z["gender"][:n]]
        self.center = torch.from_numpy(z["center"][:n]).double()
        self.half = torch.from_numpy(100.0 * z["scale"][:n]).double()       # half the crop side, px
        self.focal = torch.from_numpy(z["cam_focal"][:n]).double()
        self.cam_center = torch.from_numpy(z["cam_center"][:n]).double()
        self.j2d_px = torch.from_numpy(z["smpl_joints_2d_gt"][:n]).double()  # (n, 24, 3) exact, visible
        self.j3d = torch.from_numpy(z["smpl_joints_3d"][:n]).double()
        self.iuv_files = [str(s) for s in z["iuvname"][:n]]
        size = json.loads((self.data / "synth.json").read_text())["settings"]["size"]
        self.image_size = (int(size), int(size))

        # Models of each gender: SMPL (mesh + h36m_17 joints), the UV grid for refine.
        kw = dict(create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False)
        self.smpl, self.smpl_h36m, self.grid = {}, {}, {}
        for g in sorted(set(self.gender)):
            self.smpl[g] = smplfast.SMPL(gender=g, dtype=torch.float64, **kw).eval()
            self.smpl_h36m[g] = smplfast.SMPL(gender=g, keypoints="h36m_17", dtype=torch.float64, **kw).eval()
            self.grid[g] = UVGrid.from_model(self.smpl[g], resolution=32)
        self.groups = {g: torch.tensor([i for i, x in enumerate(self.gender) if x == g]) for g in self.grid}
        neutral = smplfast.SMPL(**kw)
        self.faces = np.asarray(neutral.faces, dtype=np.int64)
        for g, m in self.smpl.items():
            if not np.array_equal(np.asarray(m.faces, dtype=np.int64), self.faces):
                raise ValueError(f"the {g} model's faces differ from the neutral model's: one template cannot serve")
        charts = SurfaceCharts.from_npz_dict(load_model(neutral.model_source).extras)
        self.triangles = ChartTriangles(charts)
        self.renderer = BodyRenderer.from_model(neutral)
        self.part_neighbours = part_neighbours(self.renderer.face_parts.numpy(), self.faces)
        self.geodesics = GeodesicTable.cached(neutral.v_template.detach().double().numpy(), self.faces,
                                              geodesic_landmarks, cache_dir=cache_dir, verbose=verbose)

        # Ground truth: meshes (no translation; camera frame), joints, the weak-perspective camera.
        with torch.no_grad():
            self.gt_verts = self.body(self.pose, self.betas)
            self.gt_j17 = self.joints17(self.pose, self.betas)
        self.gt_cam = self.fit_weak_camera()

        # Ground-truth IUV images (the H1 FCN simulation reads them) and evaluation points.
        self.iuv = np.stack([np.asarray(Image.open(self.data / f)) for f in self.iuv_files])  # (n, H, W, 3) uint8
        dp = json.loads((self.data / "densepose.json").read_text())
        ann = {a["image_id"]: a for a in dp["annotations"]}
        img_ids = {im["file_name"]: im["id"] for im in dp["images"]}
        names = [str(s) for s in z["imgname"][:n]]
        px, part, uv, owner = [], [], [], []
        for i, name in enumerate(names):
            a = ann[img_ids[name]]
            x0, y0, w, h = a["bbox"]
            x = x0 + np.asarray(a["dp_x"]) / 256.0 * w
            y = y0 + np.asarray(a["dp_y"]) / 256.0 * h
            px.append(np.stack([x, y], 1))
            part.append(np.asarray(a["dp_I"], dtype=np.int64))
            uv.append(np.stack([a["dp_U"], a["dp_V"]], 1))
            owner.append(np.full(len(x), i))
        self.eval_px = np.concatenate(px)                 # (M, 2) pixel positions (pixel centres)
        if len(self.eval_px) == 0:
            raise ValueError(f"{self.data / 'densepose.json'} holds no DensePose points for these people (a split "
                             "made with `--densepose-points 0`); regenerate it with `smplfast synth ... "
                             "--densepose-points N`, N > 0")
        self.eval_part = np.concatenate(part)
        self.eval_uv = np.concatenate(uv)
        self.eval_owner = np.concatenate(owner)           # person of each point
        self.eval_gt = surface_points_from_iuv(self.eval_part, self.eval_uv, self.triangles)
        rows = np.clip(np.floor(self.eval_px[:, 1]).astype(int), 0, self.image_size[0] - 1)
        cols = np.clip(np.floor(self.eval_px[:, 0]).astype(int), 0, self.image_size[1] - 1)
        self.eval_rc = (rows, cols)
        self.seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------------------------- bodies
    def _by_gender(self, fn, pose, betas):
        """fn(gender, pose, betas) applied to each gender's people, reassembled in the split's order."""
        out = None
        for g, idx in self.groups.items():
            r = fn(g, pose[idx], betas[idx])
            if out is None:
                out = torch.empty((self.n,) + tuple(r.shape[1:]), dtype=r.dtype)
            out[idx] = r
        return out

    def body(self, pose, betas):
        """Vertices (n, V, 3) of axis-angle poses (n, 72) and betas (n, 10), metres, no translation."""
        def fn(g, p, b):
            return self.smpl[g](betas=b, global_orient=p[:, :3], body_pose=p[:, 3:]).vertices
        return self._by_gender(fn, pose, betas)

    def joints17(self, pose, betas):
        """The ``h36m_17`` joints (n, 17, 3), metres, no translation."""
        def fn(g, p, b):
            return self.smpl_h36m[g](betas=b, global_orient=p[:, :3], body_pose=p[:, 3:], joints_only=True).joints
        return self._by_gender(fn, pose, betas)

    def joints24(self, pose, betas):
        """The 24 skeleton joints (n, 24, 3) of the grids' skeleton (metres, no translation)."""
        def fn(g, p, b):
            return self.grid[g].joints(b.float(), p[:, 3:].float(), p[:, :3].float())[0].double()
        return self._by_gender(fn, pose, betas)

    def to_crop(self, px):
        """Pixels (n, K, 2) -> normalised crop units."""
        return (px - self.center[:, None]) / self.half[:, None, None]

    def fit_weak_camera(self):
        """[s, tx, ty] (n, 3): least squares of the exact perspective projections of all GT vertices."""
        X = self.gt_verts + self.transl[:, None]
        uv = self.focal[:, None] * X[..., :2] / X[..., 2:] + self.cam_center[:, None]
        y = self.to_crop(uv)                                      # (n, V, 2)
        v = self.gt_verts[..., :2]
        # y = s v + b: solve for s and b = s t in closed form.
        vm, ym = v.mean(1, keepdim=True), y.mean(1, keepdim=True)
        s = ((v - vm) * (y - ym)).sum((1, 2)) / ((v - vm) ** 2).sum((1, 2))
        b = ym[:, 0] - s[:, None] * vm[:, 0]
        return torch.cat([s[:, None], b / s[:, None]], 1)

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, pose, betas, cam):
        """Per-person metrics of bodies: axis-angle poses (n, 72), betas (n, 10), weak cameras (n, 3).

        Returns ``(per, err)``: ``per`` maps ``pa_mpjpe``, ``mpjpe``, ``pa_mpjpe24`` (mm), ``fr10``,
        ``fr10_euclid`` (%), ``auc10``, ``auc30``, ``coverage`` (0-1) to arrays (n,) (module docstring);
        ``err`` (M,) the geodesic error (metres; inf where the mesh misses the pixel) of every
        evaluation point."""
        from smplfast import metrics as M
        from smplfast import ops
        from smplfast_train.eval.densepose_rcp import per_sample_rcp, point_errors, surface_points_from_raster
        from smplfast_train.eval.metrics import joint_metrics

        pose, betas, cam = pose.double(), betas.double(), cam.double()
        with torch.no_grad():
            verts = self.body(pose, betas)
            j17 = self.joints17(pose, betas)
            j24 = self.joints24(pose, betas)
        jm = joint_metrics(j17, self.gt_j17)
        gt24 = self.j3d - self.j3d[:, :1]
        out = {"pa_mpjpe": jm["pa_mpjpe"].numpy(), "mpjpe": jm["mpjpe"].numpy(),
               "pa_mpjpe24": M.pa_mpjpe((j24 - j24[:, :1]) * 1000, gt24 * 1000).numpy()}
        # Render the weak-perspective projection: a far perspective camera with the matching focal length.
        s, t = cam[:, 0], cam[:, 1:]
        # A scale <= 0 (a mirrored or degenerate projection) or a non-finite body cannot be drawn: its
        # points count as not covered (infinite error), as for a body that misses them.
        drawable = torch.isfinite(s) & (s > 0) & torch.isfinite(t).all(1) & torch.isfinite(verts).flatten(1).all(1)
        s = torch.where(drawable, s, torch.ones_like(s))
        t = torch.where(drawable[:, None], t, torch.zeros_like(t))
        verts = torch.where(drawable[:, None, None], verts, torch.zeros_like(verts))
        Xc = torch.cat([verts[..., :2] + t[:, None], verts[..., 2:] + Z_FAR], -1)
        f = (s * self.half * Z_FAR)[:, None].repeat(1, 2)
        faces = torch.as_tensor(self.faces)
        rows, cols = self.eval_rc
        fi = np.empty(len(rows), dtype=np.int64)
        bary = np.empty((len(rows), 3))
        chunk = 32
        for a in range(0, self.n, chunk):
            sl = slice(a, min(self.n, a + chunk))
            face_index, bc, _ = ops.rasterize(Xc[sl].contiguous(), faces, f[sl].contiguous(),
                                              self.center[sl].contiguous(), self.image_size)
            k = (self.eval_owner >= sl.start) & (self.eval_owner < sl.stop)
            o = self.eval_owner[k] - sl.start
            fi[k] = face_index[o, rows[k], cols[k]].numpy()
            bary[k] = bc[o, rows[k], cols[k]].numpy()
        fi[~drawable.numpy()[self.eval_owner]] = -1
        pred = surface_points_from_raster(fi, bary, self.faces)
        err = point_errors(self.geodesics, self.eval_gt, pred).numpy()
        err_eu = point_errors(self.geodesics, self.eval_gt, pred, kind="euclid").numpy()
        per = per_sample_rcp(err, self.eval_owner, self.n)
        out.update(per)
        out["fr10_euclid"] = per_sample_rcp(err_eu, self.eval_owner, self.n)["fr10"]
        out["coverage"] = np.bincount(self.eval_owner, weights=(fi >= 0).astype(float), minlength=self.n) / \
            np.bincount(self.eval_owner, minlength=self.n)
        out["camera_ok"] = drawable.numpy().astype(float)
        return out, err


def part_neighbours(face_parts, faces):
    """For each DensePose part 1..24, the parts (int64 array) whose faces share a mesh vertex with it;
    ``face_parts`` (F,) the part of every face (0 = none), ``faces`` (F, 3)."""
    V = int(faces.max()) + 1
    nb = {}
    vert_parts = [set() for _ in range(V)]
    for fp, f in zip(face_parts.tolist(), faces.tolist()):
        if fp > 0:
            for v in f:
                vert_parts[v].add(fp)
    for p in range(1, 25):
        nb[p] = set()
    for ps in vert_parts:
        for p in ps:
            nb[p] |= ps - {p}
    return {p: np.array(sorted(s), dtype=np.int64) for p, s in nb.items()}


# ------------------------------------------------------------------------------------ refinement
def run_refine(setup, inputs, config, dp_weight=1.0, kp3d_weight=1.0, kp2d_weight=1.0, max_iters=20,
               cg_iters=20, batch=16):
    """Refined bodies of every person of the evaluation set ``setup`` (:class:`HoloPoseEvalSet`) for
    one configuration ``config`` (a key of :data:`CONFIGS`): :func:`smplfast.surface.refine`
    (Gauss-Newton, ``max_iters`` iterations, ``cg_iters`` CG steps, the given term weights) in each
    person's gender grid with a weak-perspective camera, ``batch`` people per call.

    ``inputs``: ``pose`` (n, 72) axis-angle, ``betas`` (n, 10), ``cam`` (n, 3) ``[s, tx, ty]`` (the
    initialisation); ``kp2d`` (n, 24, 3) skeleton joints in normalised crop units with confidences;
    ``kp3d`` (n, 24, 4) skeleton joints in metres (camera axes; compared root-relative) with
    confidences; ``iuv`` an :class:`smplfast.surface.IUVPoints` (n, N) whose ``xy`` are normalised
    crop units (its ``mask`` is honoured). Only the inputs of the configuration are read.

    Returns ``pose``, ``betas``, ``cam`` (float64), ``seconds`` (``RefineResult.seconds`` summed),
    ``person_iters`` (people × iterations), ``iterations`` (n,), ``fell_back`` (count). ``base``
    returns the initialisation. A batch with no data of the configuration keeps its initialisation."""
    from smplfast.surface import BodyParams, IUVPoints, RefineOptions, WeakPerspectiveCamera, refine

    use_dp, use_2d, use_3d = CONFIGS[config]
    n = setup.n
    if not (use_dp or use_2d or use_3d):
        return dict(pose=inputs["pose"], betas=inputs["betas"], cam=inputs["cam"], seconds=0.0, person_iters=0,
                    iterations=np.zeros(n), fell_back=0)
    opt = RefineOptions(dp_weight=dp_weight, kp2d_weight=kp2d_weight, kp3d_weight=kp3d_weight, method="gn",
                        max_iters=max_iters, cg_iters=cg_iters)
    pose = inputs["pose"].clone()
    betas = inputs["betas"].clone()
    cam = inputs["cam"].clone()
    iters = np.zeros(n)
    secs, person_iters, fell = 0.0, 0, 0
    pts = inputs["iuv"] if use_dp else None
    for g, idx_all in setup.groups.items():
        grid = setup.grid[g]
        for a in range(0, len(idx_all), batch):
            idx = idx_all[a:a + batch]
            b = len(idx)
            p = BodyParams.from_pose(inputs["betas"][idx].float(), inputs["pose"][idx].float(), torch.zeros(b, 3))
            kw = {}
            if use_dp:
                mask = None if pts.mask is None else pts.mask[idx]
                if mask is None or bool(mask.any()):
                    kw["iuv_points"] = IUVPoints(pts.part[idx], pts.uv[idx], pts.xy[idx], mask)
            if use_2d:
                kw["keypoints_2d"] = inputs["kp2d"][idx].float()
            if use_3d:
                kw["keypoints_3d"] = inputs["kp3d"][idx].float()
            if not kw:
                continue  # no correspondences at all in this batch: the initialisation stays
            r = refine(p, camera=WeakPerspectiveCamera(inputs["cam"][idx].float()), grid=grid, options=opt, **kw)
            secs += r.seconds
            person_iters += b * (len(r.history_seconds) - 1)
            fell += int(r.fell_back.sum())
            pose[idx] = r.params.pose.double()
            betas[idx] = r.params.betas.double()
            cam[idx] = r.camera.params.double()
            iters[idx.numpy()] = r.iterations.numpy()
    return dict(pose=pose, betas=betas, cam=cam, seconds=secs, person_iters=person_iters, iterations=iters,
                fell_back=fell)


# ---------------------------------------------------------------------------- network evaluation
def dp_branch_errors(eval_set: HoloPoseEvalSet, iuv: Tensor) -> np.ndarray:
    """Geodesic errors (M,) (metres) of a DensePose head's correspondences at the evaluation points.

    ``iuv`` (n, 3, h, w): the head's IUV images on the crop (:func:`~smplfast_train.heads.holopose.
    densepose_iuv`: I in 0..24, 0 = background, U, V in [0, 1]); heatmap pixel (i, j) covers the crop
    square [j, j + 1) × [i, i + 1) of a w × h grid over [-1, 1]². Each evaluation point (a pixel
    position of the original image) is mapped to crop units and read at the heatmap pixel that
    contains it (nearest pixel centre, no interpolation). A point on background or outside the crop
    has no prediction (inf)."""
    from smplfast_train.eval.densepose_rcp import SurfacePoints, point_errors, surface_points_from_iuv

    iuv = iuv.detach().cpu().double()
    n, _, h, w = iuv.shape
    if n != eval_set.n:
        raise ValueError(f"iuv has {n} images; the evaluation set has {eval_set.n} people")
    owner = torch.from_numpy(eval_set.eval_owner)
    px = torch.from_numpy(eval_set.eval_px).double()
    u = (px - eval_set.center[owner]) / eval_set.half[owner, None]            # (M, 2) crop units
    col = torch.floor((u[:, 0] + 1) * (w / 2)).long()
    row = torch.floor((u[:, 1] + 1) * (h / 2)).long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    vals = iuv[owner, :, row.clamp(0, h - 1), col.clamp(0, w - 1)]            # (M, 3)
    part = vals[:, 0].round().long()
    has = inside & (part >= 1) & (part <= 24) & torch.isfinite(vals).all(1)
    M = len(owner)
    vid = torch.zeros(M, 3, dtype=torch.long)
    bary = torch.full((M, 3), 1.0 / 3, dtype=torch.float64)
    valid = torch.zeros(M, dtype=torch.bool)
    if bool(has.any()):
        sp = surface_points_from_iuv(part[has], vals[has, 1:].clamp(0, 1), eval_set.triangles)
        vid[has], bary[has], valid[has] = sp.vid, sp.bary, sp.valid
    return point_errors(eval_set.geodesics, eval_set.eval_gt, SurfacePoints(vid, bary, valid)).numpy()


def network_refine_inputs(pose: Tensor, betas: Tensor, cam: Tensor, kp2d: Tensor, kp_conf: Tensor,
                          joints3d: Tensor, iuv: Tensor, *, kp_threshold: float = 0.4, dp_points: int = 2000,
                          generator: Optional[torch.Generator] = None) -> Dict[str, object]:
    """:func:`run_refine` inputs from a network's outputs (n people).

    ``pose`` (n, 72) axis-angle, ``betas`` (n, 10), ``cam`` (n, 3) the initialisation; ``kp2d`` (n, 24, 2)
    decoded skeleton joints (normalised crop units) with ``kp_conf`` (n, 24) the heatmap maxima: the
    2D keypoints' confidence is the maximum, 0 below ``kp_threshold``; ``joints3d`` (n, 24, 3) metres,
    root-relative camera axes: 3D keypoints with confidence 1; ``iuv`` (n, 3, h, w) the DensePose
    head's IUV images: at most ``dp_points`` foreground pixels per image
    (:meth:`smplfast.surface.IUVPoints.from_iuv_image` with ``generator``), their pixel centres
    converted from heatmap pixels to normalised crop units (``2 x / w − 1``)."""
    from smplfast.surface import IUVPoints

    n = pose.shape[0]
    conf = torch.where(kp_conf >= kp_threshold, kp_conf, torch.zeros_like(kp_conf)).double()
    kp2 = torch.cat([kp2d.double(), conf[..., None]], -1)
    j3 = joints3d.double() - joints3d.double()[:, :1]
    kp3 = torch.cat([j3, torch.ones(n, j3.shape[1], 1, dtype=torch.float64)], -1)
    h, w = iuv.shape[-2:]
    pts = IUVPoints.from_iuv_image(iuv.float(), max_points=dp_points, generator=generator)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=pts.xy.dtype)
    pts = IUVPoints(pts.part, pts.uv, pts.xy * scale - 1.0, pts.mask)
    return dict(pose=pose.double(), betas=betas.double(), cam=cam.double(), kp2d=kp2, kp3d=kp3, iuv=pts)


def _nanmean(x) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if (~np.isnan(a)).any() else float("nan")


def _lists(d: Dict[str, np.ndarray]) -> Dict[str, list]:
    return {k: [float(v) for v in np.asarray(a, dtype=np.float64)] for k, a in d.items()}


def evaluate_holopose(net: torch.nn.Module, split_dir, *, num: int, img_res: int,
                      configs: Sequence[str] = ("base", "kps3d_dp"), device: Union[str, torch.device] = "cpu",
                      batch_size: int = 16, max_iters: int = 20, cg_iters: int = 20,
                      eval_set: Optional[HoloPoseEvalSet] = None, refine_batch: int = 16,
                      kp_threshold: float = 0.4, dp_points: int = 2000, dp_fg_threshold: float = 0.5,
                      pck_threshold: float = 0.05, seed: int = 0, geodesic_landmarks: int = 2048,
                      cache_dir=None, log=None) -> Dict[str, object]:
    """Evaluate a HoloPose network (:class:`~smplfast_train.heads.holopose.HoloPoseNet`, or any module
    whose ``forward(img)`` returns a :class:`~smplfast_train.heads.holopose.HoloPoseOutput`) on the
    first ``num`` people of the single-view split folder ``split_dir`` (module docstring).

    Args:
        net: run in eval mode without gradients on ``SPINDataset(..., is_train=False, img_res=img_res)``
            crops, in order, ``batch_size`` at a time, on ``device``; its mode is restored afterwards.
        split_dir: ``synth_spin.npz``, ``synth.json``, ``densepose.json`` (FileNotFoundError otherwise)
            and the images / IUV images they name.
        num: people (clamped to the split's size).
        img_res: crop side the network expects.
        configs: refinement configurations (keys of :data:`CONFIGS`) fed by the network's outputs
            (:func:`network_refine_inputs` with ``kp_threshold``, ``dp_points`` and a generator seeded
            with ``seed``); ``max_iters``, ``cg_iters``, ``refine_batch`` as :func:`run_refine`.
        eval_set: a :class:`HoloPoseEvalSet` of this split and these ``num`` people to reuse (built
            with ``geodesic_landmarks`` / ``cache_dir`` when None).
        dp_fg_threshold: the DensePose head's foreground threshold on P(foreground).
        pck_threshold: the 2D branch's PCK threshold (normalised crop units).
        log: a callable taking one line per stage (None: silent).

    Returns a JSON-serialisable dict (``json.dumps`` writes NaN as ``NaN``): ``num``, ``split``; ``model``
    (the network's body: every metric of :meth:`HoloPoseEvalSet.evaluate`), ``branch3d`` (``pa_mpjpe24``,
    ``mpjpe24``: mm, root-relative ``joints3d`` against the skeleton joints), ``branch_dp``
    (``dp_branch_fr10`` (%), ``dp_branch_auc10``, ``dp_branch_auc30``, ``dp_branch_coverage``: the fraction
    of points with a prediction), ``branch2d`` (``pck`` (%) of the visible joints, ``err``: their mean
    distance in normalised crop units, ``visible``: the fraction of joints the heatmaps call visible): each
    a dict of per-person lists (length ``num``, NaN where undefined); ``refine``: configuration -> the
    :meth:`HoloPoseEvalSet.evaluate` metrics of the refined bodies and their ``iterations``; ``mean``:
    ``"group/metric"`` (``"refine/<config>/<metric>"``) -> NaN-ignoring mean; ``nonfinite``: the indices of
    the people whose network output had NaN or Inf (their metrics are NaN everywhere); ``time_s``:
    ``eval_set`` (its set-up, 0 when given), ``network``, ``evaluate``, ``refine`` (configuration ->
    seconds), ``refine_per_person_iter`` (configuration -> seconds per person-iteration, None for
    ``base``)."""
    from torch.utils.data import DataLoader, Subset

    from smplfast import metrics as M
    from smplfast.data.datasets import SPINDataset
    from smplfast_train.eval.densepose_rcp import per_sample_rcp
    from smplfast_train.eval.metrics import keypoint_2d_pck
    from smplfast_train.heads.holopose import densepose_iuv
    from smplfast_train.rotations import matrix_to_axis_angle

    say = log or (lambda msg: None)
    configs = list(configs)
    bad_cfg = [c for c in configs if c not in CONFIGS]
    if bad_cfg:
        raise ValueError(f"unknown refinement configurations {bad_cfg}; choose from {list(CONFIGS)}")
    if int(num) < 1:
        raise ValueError(f"num must be >= 1; got {num}")
    split = Path(split_dir)
    npz = split / "synth_spin.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"HoloPose evaluation needs {npz} (a single-view split folder made by "
                                "`smplfast synth`)")
    if not (split / "densepose.json").is_file():
        raise FileNotFoundError(f"HoloPose evaluation needs {split / 'densepose.json'} (the DensePose evaluation "
                                "points: `smplfast synth ... --densepose-points N` with N > 0 writes it, default "
                                "100 per person)")
    ds = SPINDataset(str(npz), str(split), is_train=False, img_res=int(img_res))
    n = min(int(num), len(ds))
    t_set = 0.0
    if eval_set is None:
        eval_set = HoloPoseEvalSet(split, n, geodesic_landmarks, cache_dir, verbose=log is not None)
        t_set = eval_set.seconds
    elif eval_set.data.resolve() != split.resolve() or eval_set.n != n:
        raise ValueError(f"eval_set holds {eval_set.n} people of {eval_set.data}; this evaluation needs the first {n} "
                         f"of {split}")
    say(f"evaluation set: {n} people of {split} ({t_set:.1f} s)")

    # ---- the network
    t0 = time.perf_counter()
    loader = DataLoader(Subset(ds, range(n)), batch_size=int(batch_size), shuffle=False, num_workers=0)
    keep = {k: [] for k in ("rotmat", "betas", "cam", "kp2d", "kp_conf", "joints3d", "iuv")}
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                out = net(batch["img"].to(device))
                B = batch["img"].shape[0]
                shapes = {"rotmat": (B, 24, 3, 3), "betas": (B, 10), "cam": (B, 3), "joints3d": (B, 24, 3)}
                for k, s in shapes.items():
                    if tuple(getattr(out, k).shape) != s:
                        raise ValueError(f"the network's {k} must be {s}; got {tuple(getattr(out, k).shape)}")
                if out.kp2d.dim() != 3 or out.kp2d.shape[0] != B or out.kp2d.shape[1] < 24:
                    raise ValueError(f"the network's kp2d must be (B, K >= 24, 2); got {tuple(out.kp2d.shape)}")
                keep["rotmat"].append(out.rotmat.detach().double().cpu())
                keep["betas"].append(out.betas.detach().double().cpu())
                keep["cam"].append(out.cam.detach().double().cpu())
                keep["kp2d"].append(out.kp2d[:, :24].detach().double().cpu())
                keep["kp_conf"].append(out.kp_conf[:, :24].detach().double().cpu())
                keep["joints3d"].append(out.joints3d.detach().double().cpu())
                keep["iuv"].append(densepose_iuv(out.dp_logits.float(), out.dp_uv.float(), dp_fg_threshold).cpu())
    finally:
        net.train(was_training)
    o = {k: torch.cat(v) for k, v in keep.items()}
    t_net = time.perf_counter() - t0
    say(f"network: {n} people in {t_net:.1f} s")

    # ---- non-finite outputs: those people get safe stand-ins for the computations, NaN metrics.
    finite = torch.ones(n, dtype=torch.bool)
    for k, v in o.items():
        finite &= torch.isfinite(v.reshape(n, -1)).all(1)
    bad = (~finite).nonzero().flatten()
    if len(bad):
        o["rotmat"][bad] = torch.eye(3, dtype=torch.float64)
        o["betas"][bad] = 0.0
        o["cam"][bad] = torch.tensor([0.9, 0.0, 0.0], dtype=torch.float64)
        o["kp2d"][bad] = 0.0
        o["kp_conf"][bad] = 0.0
        o["joints3d"][bad] = 0.0
        o["iuv"][bad] = 0.0
        say(f"{len(bad)} people with non-finite network outputs: their metrics are NaN")
    bad_np = bad.numpy()

    def nan_bad(d):
        for k in d:
            d[k] = np.asarray(d[k], dtype=np.float64).copy()
            d[k][bad_np] = np.nan
        return d

    pose = matrix_to_axis_angle(o["rotmat"]).reshape(n, 72)

    # ---- the model and the branches
    t0 = time.perf_counter()
    model, _ = eval_set.evaluate(pose, o["betas"], o["cam"])
    model = nan_bad(dict(model))
    gt24 = (eval_set.j3d - eval_set.j3d[:, :1]) * 1000
    j3 = (o["joints3d"] - o["joints3d"][:, :1]) * 1000
    branch3d = nan_bad({"pa_mpjpe24": M.pa_mpjpe(j3, gt24).numpy(),
                        "mpjpe24": (j3 - gt24).norm(dim=-1).mean(-1).numpy()})
    err = dp_branch_errors(eval_set, o["iuv"])
    err[np.isin(eval_set.eval_owner, bad_np)] = np.nan
    rcp = per_sample_rcp(err, eval_set.eval_owner, n)
    cov = np.bincount(eval_set.eval_owner, weights=np.isfinite(err).astype(float), minlength=n) / \
        np.bincount(eval_set.eval_owner, minlength=n)
    branch_dp = nan_bad({"dp_branch_fr10": rcp["fr10"], "dp_branch_auc10": rcp["auc10"],
                         "dp_branch_auc30": rcp["auc30"], "dp_branch_coverage": cov})
    gt2 = torch.cat([eval_set.to_crop(eval_set.j2d_px[..., :2]), eval_set.j2d_px[..., 2:]], -1)
    vis = gt2[..., 2] > 0
    d2 = (o["kp2d"] - gt2[..., :2]).norm(dim=-1)
    with np.errstate(invalid="ignore"):
        err2d = ((d2 * vis).sum(1) / vis.sum(1)).numpy()
    branch2d = nan_bad({"pck": keypoint_2d_pck(o["kp2d"], gt2, threshold=pck_threshold).numpy(), "err": err2d,
                        "visible": (o["kp_conf"] >= kp_threshold).double().mean(1).numpy()})
    t_eval = time.perf_counter() - t0
    say(f"model: PA-MPJPE {_nanmean(model['pa_mpjpe']):.1f} mm, FR10 {_nanmean(model['fr10']):.1f} %; 3D branch "
        f"PA-MPJPE-24 {_nanmean(branch3d['pa_mpjpe24']):.1f} mm; DP branch FR10 "
        f"{_nanmean(branch_dp['dp_branch_fr10']):.1f} %; 2D PCK {_nanmean(branch2d['pck']):.1f} %")

    # ---- refinement from the network's outputs
    gen = torch.Generator().manual_seed(int(seed))
    inputs = network_refine_inputs(pose, o["betas"], o["cam"], o["kp2d"], o["kp_conf"], o["joints3d"], o["iuv"],
                                   kp_threshold=kp_threshold, dp_points=dp_points, generator=gen)
    if len(bad):
        inputs["kp3d"][bad, :, 3] = 0.0
        if inputs["iuv"].mask is not None:
            inputs["iuv"].mask[bad] = False
    refined, t_ref, t_pit = {}, {}, {}
    for c in configs:
        if not any(CONFIGS[c]):  # no refinement term: the network's own body, already scored above
            refined[c] = {**model, "iterations": np.zeros(n)}
            t_ref[c], t_pit[c] = 0.0, None
            continue
        r = run_refine(eval_set, inputs, c, max_iters=max_iters, cg_iters=cg_iters, batch=refine_batch)
        t1 = time.perf_counter()
        per, _ = eval_set.evaluate(r["pose"], r["betas"], r["cam"])
        t_eval += time.perf_counter() - t1
        per = dict(per)
        per["iterations"] = np.asarray(r["iterations"], dtype=np.float64)
        refined[c] = nan_bad(per)
        t_ref[c] = float(r["seconds"])
        t_pit[c] = float(r["seconds"]) / r["person_iters"] if r["person_iters"] else None
        say(f"refine {c:9s}: PA-MPJPE {_nanmean(per['pa_mpjpe']):.1f} mm, FR10 {_nanmean(per['fr10']):.1f} %, "
            f"{r['seconds']:.1f} s, iterations {np.mean(r['iterations']):.1f}, fell back {r['fell_back']}")

    groups = {"model": model, "branch3d": branch3d, "branch_dp": branch_dp, "branch2d": branch2d}
    mean = {f"{g}/{k}": _nanmean(v) for g, d in groups.items() for k, v in d.items()}
    for c, d in refined.items():
        mean.update({f"refine/{c}/{k}": _nanmean(v) for k, v in d.items()})
    return {
        "num": n,
        "split": str(split),
        **{g: _lists(d) for g, d in groups.items()},
        "refine": {c: _lists(d) for c, d in refined.items()},
        "mean": mean,
        "nonfinite": [int(i) for i in bad_np],
        "time_s": {"eval_set": t_set, "network": t_net, "evaluate": t_eval, "refine": t_ref,
                   "refine_per_person_iter": t_pit},
    }
