"""Crop cache: every sample of a SPIN / MV-SPIN npz cropped once and stored as a uint8 memmap.

Decoding and resampling a full image costs tens of milliseconds per item; reading a stored crop
costs a fraction of one. A crop cache holds, for every sample of a dataset's npz, SPIN's box crop
(the stored ``center`` and ``scale``; no rotation, no scale factor, no flip) at one resolution,
resampled exactly as the uncached dataset resamples it, so an item read from the cache without
augmentation equals the uncached item.

.. warning::
   Cached crops remove the rotation and scale augmentation: items read from a cache apply only the
   flip and the pixel gain (on the fly, drawn as usual), and report ``rot_angle`` 0 and the stored
   ``scale``. A model trained on cached crops is trained on a reduced recipe; such proxy runs must
   be labelled as such (``dataset.crop_cache_path`` is set) and not compared with full-recipe runs
   as if they were the same.

Layout (a directory, written atomically: built under a temporary name, then renamed):

``crops.npy``
    uint8 (N, res, res, 3) RGB, or (N, V, res, res, 3) for a multi-view file; every view of the
    file, whatever ``views`` a dataset later selects.
``labels.npz``
    ``orig_shape`` (N[, V], 2) int64 (H, W of the original image); ``keypoints`` (N[, V], 49, 3)
    [openpose25, part24] and ``smpl_joints_2d`` (N[, V], 24, 3) in crop pixels (x, y, confidence),
    the same crop (for readers that use the arrays directly; a dataset computes its labels from the
    npz); ``center`` (N[, V], 2), ``scale`` (N[, V]).
``meta.json``
    format version, ``res``, the sample shape, the source npz and a fingerprint of the npz arrays
    that determine the cache (``imgname``, ``center``, ``scale``, ``openpose``, ``part``,
    ``smpl_joints_2d``).

A cache is refused (:class:`CropCacheError`) when its resolution differs from the dataset's
``img_res``, its sample shape from the file's, or its fingerprint from the file's arrays (another
file, or the same file changed). Images are not fingerprinted: rebuild after changing image files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Dict, Optional, Tuple

import numpy as np

from .crop import crop_matrix, transform_points, warp_image

__all__ = ["CROP_CACHE_VERSION", "CropCacheError", "CropCache", "build_crop_cache", "load_crop_cache",
           "crop_cache_fingerprint"]

CROP_CACHE_VERSION = 1
_CROPS, _LABELS, _META = "crops.npy", "labels.npz", "meta.json"
_FINGERPRINT_KEYS = ("imgname", "center", "scale", "openpose", "part", "smpl_joints_2d")


class CropCacheError(ValueError):
    """A crop cache is missing, incomplete, or was made for other settings than the dataset's."""


def crop_cache_fingerprint(data: Dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays a crop cache depends on, from :func:`~smplfast.data.formats.load_spin_npz`'s dict."""
    h = hashlib.sha256()
    for key in _FINGERPRINT_KEYS:
        a = np.asarray(data[key])
        h.update(f"{key}{a.shape}".encode())
        if a.dtype.kind in "USO":
            h.update("\0".join(str(x) for x in a.reshape(-1)).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


def plain_crop_matrix(data: Dict[str, np.ndarray], idx: tuple, res: int, rot: float = 0.0, scale: float = 1.0,
                      flip: bool = False) -> np.ndarray:
    """The crop matrix of sample ``idx`` as the datasets compute it (box from the file, times ``scale``)."""
    center = data["center"][idx].astype(np.float64)
    return crop_matrix(center, float(data["scale"][idx]) * scale, res, rot, flip)


class CropCache:
    """An opened crop cache (see the module docstring). ``crops`` is memory-mapped on first use."""

    def __init__(self, path: str, meta: dict, labels: Dict[str, np.ndarray]):
        self.path = path
        self.meta = meta
        self.res = int(meta["res"])
        self.shape: Tuple[int, ...] = tuple(int(s) for s in meta["shape"])
        self.orig_shape = labels["orig_shape"]
        self.keypoints = labels["keypoints"]
        self.smpl_joints_2d = labels["smpl_joints_2d"]
        self.center = labels["center"]
        self.scale = labels["scale"]
        self._crops: Optional[np.ndarray] = None

    @property
    def crops(self) -> np.ndarray:
        """uint8 (N[, V], res, res, 3), read-only memmap."""
        if self._crops is None:
            self._crops = np.load(os.path.join(self.path, _CROPS), mmap_mode="r")
        return self._crops

    def image(self, idx: tuple) -> np.ndarray:
        """The stored crop of sample ``idx`` ((n,) or (n, v)) as a (res, res, 3) uint8 array."""
        return np.array(self.crops[idx])

    def __getstate__(self):  # DataLoader workers re-open the memmap instead of pickling the crops
        state = dict(self.__dict__)
        state["_crops"] = None
        return state

    def check(self, data: Dict[str, np.ndarray], res: int, source: str = "dataset") -> None:
        """Raise :class:`CropCacheError` unless this cache was made from ``data`` at ``res``."""
        rebuild = "rebuild it with build_crop_cache(dataset, path, res, overwrite=True)"
        if self.res != int(res):
            raise CropCacheError(f"{source}: crop cache {self.path!r} was made at res {self.res}, the dataset "
                                 f"crops at img_res {int(res)}; pass img_res={self.res} or {rebuild}")
        shape = tuple(data["imgname"].shape)
        if self.shape != shape:
            raise CropCacheError(f"{source}: crop cache {self.path!r} holds samples of shape {self.shape} (from "
                                 f"{self.meta.get('npz')!r}), the dataset's file has {shape}; {rebuild}")
        if self.meta["fingerprint"] != crop_cache_fingerprint(data):
            raise CropCacheError(f"{source}: crop cache {self.path!r} was made from other data "
                                 f"({self.meta.get('npz')!r}: imgname / center / scale / keypoints differ from the "
                                 f"dataset's file); {rebuild}")


def load_crop_cache(path, data: Optional[Dict[str, np.ndarray]] = None, *, res: Optional[int] = None,
                    source: str = "dataset") -> CropCache:
    """Open the crop cache at ``path``; with ``data`` (and ``res``) also check it was made for them."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CropCacheError(f"{source}: crop cache not found: {path!r} (make one with build_crop_cache)")
    missing = [f for f in (_CROPS, _LABELS, _META) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CropCacheError(f"{source}: {path!r} is not a complete crop cache (missing {missing})")
    with open(os.path.join(path, _META), "r", encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("version") != CROP_CACHE_VERSION:
        raise CropCacheError(f"{source}: crop cache {path!r} has format version {meta.get('version')!r}; this "
                             f"code reads version {CROP_CACHE_VERSION}; rebuild it")
    with np.load(os.path.join(path, _LABELS), allow_pickle=False) as z:
        labels = {k: z[k] for k in z.files}
    cache = CropCache(path, meta, labels)
    want = cache.shape + (cache.res, cache.res, 3)
    if cache.crops.shape != want or cache.crops.dtype != np.uint8:
        raise CropCacheError(f"{source}: crop cache {path!r}: {_CROPS} is {cache.crops.dtype} {cache.crops.shape}, "
                             f"meta.json says uint8 {want}; rebuild it")
    if data is not None:
        cache.check(data, cache.res if res is None else res, source)
    return cache


def build_crop_cache(dataset, path, res: Optional[int] = None, *, overwrite: bool = False) -> CropCache:
    """Crop every sample of ``dataset`` (a :class:`~smplfast.data.datasets.SPINDataset` or
    :class:`~smplfast.data.datasets.MultiViewDataset`; its npz, image root and, by default, its
    ``img_res``) once and store the crops at ``path`` (a directory); returns the opened cache.

    An existing cache at ``path`` made for the same data and ``res`` is returned as it is; one made
    for other settings is an error unless ``overwrite``. The cache is written under a temporary name
    next to ``path`` and renamed into place when complete, so a reader never sees a partial cache.
    Single process; about the cost of reading every item once without augmentation.
    """
    from .datasets import _open_image  # the datasets module imports this one

    path = os.path.abspath(os.fspath(path))
    data = dataset.data
    res = int(dataset.img_res if res is None else res)
    if res <= 0:
        raise ValueError(f"build_crop_cache: res must be > 0; got {res}")
    name = getattr(dataset, "dataset_name", "dataset")
    if os.path.exists(path):
        if not overwrite:
            try:
                return load_crop_cache(path, data, res=res, source=name)
            except CropCacheError as e:
                raise CropCacheError(f"{e} (or pass overwrite=True)") from None
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        shape = tuple(data["imgname"].shape)
        crops = np.lib.format.open_memmap(os.path.join(tmp, _CROPS), mode="w+", dtype=np.uint8,
                                          shape=shape + (res, res, 3))
        orig = np.zeros(shape + (2,), dtype=np.int64)
        kps = np.zeros(shape + (49, 3), dtype=np.float32)
        sj = np.zeros(shape + (24, 3), dtype=np.float32)
        for idx in np.ndindex(*shape):
            M = plain_crop_matrix(data, idx, res)
            image = _open_image(os.path.join(dataset.img_dir, str(data["imgname"][idx])), idx[0], name)
            orig[idx] = (image.height, image.width)
            crops[idx] = np.asarray(warp_image(image, M, res))
            kps[idx] = transform_points(np.concatenate([data["openpose"][idx], data["part"][idx]], 0), M)
            sj[idx] = transform_points(data["smpl_joints_2d"][idx], M)
        crops.flush()
        del crops
        np.savez(os.path.join(tmp, _LABELS), orig_shape=orig, keypoints=kps, smpl_joints_2d=sj,
                 center=np.asarray(data["center"]), scale=np.asarray(data["scale"]))
        meta = {"version": CROP_CACHE_VERSION, "res": res, "shape": list(shape),
                "fingerprint": crop_cache_fingerprint(data), "npz": getattr(dataset, "npz_path", None),
                "dataset_name": name, "crop": "SPIN box crop (center, scale), no rotation / scale / flip"}
        with open(os.path.join(tmp, _META), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        old = None
        if os.path.exists(path):
            old = f"{path}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_crop_cache(path, data, res=res, source=name)
