"""torch Datasets over the SPIN / MV-SPIN / DensePose file formats, with SPIN's crop and augmentation.

* :class:`SPINDataset` - one SPIN npz + an image root, items as SPIN's ``BaseDataset`` returns them.
* :class:`MultiViewDataset` - one MV-SPIN npz: every view of a person in one item, with the camera
  calibration carried into the crops.
* :class:`DensePoseDataset` - a DensePose COCO-style json: person crops with their (x, y, I, U, V)
  points, optionally the IUV images.
* :class:`MixedDataset` - several datasets sampled by ratio (SPIN's mix as a preset).

Augmentation is random per item; with a ``seed`` it is a function of (seed, epoch, index) only
(:meth:`set_epoch`), so any worker split of a DataLoader gives the same batches. Formats:
:mod:`smplfast.data.formats`; crop maths: :mod:`smplfast.data.crop`; augmentation:
:mod:`smplfast.data.augment`; pre-cropped images: :mod:`smplfast.data.crop_cache`; usage:
docs/DATASETS.md.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..body.keypoints import convert, flip_permutation
from .augment import (
    IDENTITY_AUGMENTATION,
    SPIN_AUGMENTATION,
    AugmentationConfig,
    AugmentationParams,
    augment_joints_3d,
    augment_smpl_pose,
    image_to_tensor,
    make_rng,
    sample_augmentation,
)
from .crop import bbox_to_center_scale, crop_matrix, normalize_points, rotation_z, transform_points, warp_image
from .crop_cache import CropCache, load_crop_cache
from .formats import (
    DENSEPOSE_COORD_RANGE,
    GENDER_CODES,
    densepose_iuv_name,
    load_densepose_json,
    load_spin_npz,
)

__all__ = ["SPINDataset", "MultiViewDataset", "DensePoseDataset", "MixedDataset", "SPIN_ITEM_KEYS"]

_FLIP_49 = np.asarray(flip_permutation("spin_49"))
_FLIP_SMPL_24 = np.asarray(flip_permutation("smpl_24"))
_MIRROR_X = np.diag([-1.0, 1.0, 1.0])

#: Keys of a :class:`SPINDataset` item (``mask`` is added with ``load_masks=True``, ``iuv`` with
#: ``load_iuv=True``); a :class:`MultiViewDataset` item has the same keys.
SPIN_ITEM_KEYS: Tuple[str, ...] = (
    "img", "pose", "betas", "keypoints", "keypoints_gt", "has_keypoints_gt", "smpl_joints_2d", "has_smpl_joints_2d",
    "smpl_joints_2d_gt", "has_smpl_joints_2d_gt", "smpl_joints_3d", "has_smpl_joints_3d", "pose_3d", "has_smpl",
    "has_pose_3d", "scale", "center", "orig_shape", "is_flipped", "rot_angle", "gender", "pose_family",
    "sample_index", "dataset_name", "imgname", "maskname", "partname", "iuvname",
    "cam_K", "cam_rot", "cam_transl", "has_calibration",
)


def _check_img_dir(img_dir, what: str) -> str:
    img_dir = os.fspath(img_dir)
    if not os.path.isdir(img_dir):
        raise FileNotFoundError(f"{what}: image directory not found: {img_dir!r}")
    return img_dir


def _open_image(path: str, index: int, dataset_name: str, mode: str = "RGB") -> Image.Image:
    """Open an image, naming the dataset, path and sample index on failure."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dataset_name}: image file not found: {path!r} (sample index {index})")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if im.mode != mode else im.copy()
    except (UnidentifiedImageError, OSError) as e:
        raise OSError(f"{dataset_name}: cannot read image {path!r} (sample index {index}): {e}") from None


def _load_mask(path: str, M: np.ndarray, res: int, index: int, dataset_name: str) -> torch.Tensor:
    """Silhouette PNG warped into the crop (nearest); foreground = non-zero for 0/1 masks, > 127 for 0..255 ones."""
    m = _open_image(path, index, dataset_name, mode="L")
    thr = 127 if np.asarray(m).max() > 1 else 0
    out = np.asarray(warp_image(m, M, res, resample="nearest", fill=0))
    return torch.from_numpy(out > thr)


def _load_iuv(path: str, M: np.ndarray, res: int, index: int, dataset_name: str,
              image_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """IUV PNG warped into the crop with nearest sampling: float32 (3, res, res) = I (0 = background,
    1..24), U, V in [0, 1]. ``image_size`` (W, H), when given, must be the IUV image's size."""
    iuv_img = _open_image(path, index, dataset_name + " (IUV)")
    if image_size is not None and iuv_img.size != tuple(image_size):
        raise ValueError(f"{dataset_name}: IUV image {path!r} (sample index {index}) is "
                         f"{iuv_img.width}x{iuv_img.height}; the image is {image_size[0]}x{image_size[1]}")
    iuv = np.asarray(warp_image(iuv_img, M, res, resample="nearest", fill=0)).astype(np.float32)
    iuv[..., 1:] /= 255.0
    return torch.from_numpy(np.ascontiguousarray(iuv.transpose(2, 0, 1)))


def _iuv_flip_error(dataset_name: str, flip_prob: float) -> ValueError:
    return ValueError(
        f"{dataset_name}: load_iuv=True cannot be combined with flip augmentation (flip_prob={flip_prob}): mirroring "
        "an IUV image needs a chart symmetry map taking each (I, U, V) to the mirrored surface point, which the "
        "bundled DensePose charts do not have. Turn flips off with "
        "augmentation=dataclasses.replace(augmentation, flip_prob=0.0), or use is_train=False")


def _crop_points(points: np.ndarray, M: np.ndarray, res: int, perm: Optional[np.ndarray]) -> np.ndarray:
    """Original-image (x, y, conf) points -> normalised crop coordinates, relabelled by ``perm`` (flip)."""
    q = transform_points(np.asarray(points, dtype=np.float64), M)
    if perm is not None:
        q = q[perm]
    return normalize_points(q, res)


def _crop_calibration(M: np.ndarray, aug: AugmentationParams, cam: Optional[Dict[str, np.ndarray]]):
    """The camera of one view expressed for the augmented crop.

    Returns (K_crop, R', t') with crop pixel ~ K_crop (R' X' + t') for a world point X' of the
    augmented world (X' = diag(-1, 1, 1) X when flipped, X otherwise), and R' X' + t' equal to the
    augmented camera-frame 3D joints (rotated by Rz(-rot), x negated when flipped).
    """
    if cam is None:
        return np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(3)
    K = np.array([[cam["cam_focal"][0], 0.0, cam["cam_center"][0]],
                  [0.0, cam["cam_focal"][1], cam["cam_center"][1]],
                  [0.0, 0.0, 1.0]])
    Rz = rotation_z(-aug.rot)
    mir = _MIRROR_X if aug.flip else np.eye(3)
    K_crop = M @ K @ Rz.T @ mir
    R_new = mir @ Rz @ cam["cam_rot"] @ mir
    t_new = mir @ Rz @ cam["cam_transl"]
    return K_crop, R_new, t_new


def _crop_view(ds: "_AugmentedDataset", idx: tuple, aug: AugmentationParams, *, index: int,
               load_masks: bool) -> dict:
    """Crop one view (``idx`` = (n,) or (n, v) into the arrays of ``ds.data``) and transform all of its labels."""
    data, present, res, name = ds.data, ds.present, ds.img_res, ds.dataset_name
    center = data["center"][idx].astype(np.float64)
    scale = float(data["scale"][idx]) * aug.scale
    M = crop_matrix(center, scale, res, aug.rot, aug.flip)

    imgname = os.path.join(ds.img_dir, str(data["imgname"][idx]))
    cache: Optional[CropCache] = ds.crop_cache
    if cache is not None:
        if aug.rot != 0.0 or aug.scale != 1.0:
            raise ValueError(f"{name}: a crop-cache item cannot be rotated or rescaled (sample index {index}: "
                             f"rot={aug.rot}, scale={aug.scale})")
        crop = cache.image(idx)
        if aug.flip:  # the flipped crop matrix maps pixel column j to column res - 1 - j
            crop = crop[:, ::-1]
        orig_shape = tuple(int(x) for x in cache.orig_shape[idx])
    else:
        image = _open_image(imgname, index, name)
        orig_shape = (image.height, image.width)
        crop = np.asarray(warp_image(image, M, res))
    img = image_to_tensor(crop, aug.pixel_noise)

    perm49 = _FLIP_49 if aug.flip else None
    perm24 = _FLIP_SMPL_24 if aug.flip else None
    kps = _crop_points(np.concatenate([data["openpose"][idx], data["part"][idx]], axis=0), M, res, perm49)
    # Ground-truth keypoints: rows of an absent key stay exactly zero.
    gt_rows = np.repeat(["openpose_gt" in present, "part_gt" in present], [25, 24])
    kps_gt = _crop_points(np.concatenate([data["openpose_gt"][idx], data["part_gt"][idx]], axis=0), M, res, perm49)
    kps_gt[~(gt_rows if perm49 is None else gt_rows[perm49])] = 0.0
    sj2d, sj2d_gt = (_crop_points(data[k][idx], M, res, perm24) if k in present else np.zeros((24, 3))
                     for k in ("smpl_joints_2d", "smpl_joints_2d_gt"))

    pose = data["pose"][idx].astype(np.float64)
    if "pose" in present:  # an absent pose stays all zeros
        pose = augment_smpl_pose(pose, aug.rot, aug.flip)
    pose_3d = augment_joints_3d(data["S"][idx].astype(np.float64), aug.rot, aug.flip, "spin_24")
    sj3d = augment_joints_3d(data["smpl_joints_3d"][idx].astype(np.float64), aug.rot, aug.flip, "smpl_24")
    has_smpl = float(data["has_smpl"][idx]) > 0 and not ds.ignore_3d
    has_pose_3d = float(data["has_pose_3d"][idx]) > 0 and not ds.ignore_3d
    # The file's has_pose_3d also marks whether the skeleton's 3D joints may be trained on.
    usable_3d = (float(data["has_pose_3d"][idx]) > 0 if "has_pose_3d" in present else True) and not ds.ignore_3d

    cam = ({k: data[k][idx] for k in ("cam_rot", "cam_transl", "cam_focal", "cam_center")}
           if ds.has_calibration else None)
    K_crop, R_new, t_new = _crop_calibration(M, aug, cam)

    maskname, partname, iuvname = (str(data[k][idx]) for k in ("maskname", "partname", "iuvname"))

    def f32(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float32))

    item = {
        "img": img,
        "pose": f32(pose),
        "betas": f32(data["shape"][idx]),
        "keypoints": f32(kps),
        "keypoints_gt": f32(kps_gt),
        "has_keypoints_gt": torch.tensor(bool(gt_rows.any())),
        "smpl_joints_2d": f32(sj2d),
        "has_smpl_joints_2d": torch.tensor("smpl_joints_2d" in present),
        "smpl_joints_2d_gt": f32(sj2d_gt),
        "has_smpl_joints_2d_gt": torch.tensor("smpl_joints_2d_gt" in present),
        "smpl_joints_3d": f32(sj3d),
        "has_smpl_joints_3d": torch.tensor("smpl_joints_3d" in present and usable_3d),
        "pose_3d": f32(pose_3d),
        "has_smpl": torch.tensor(has_smpl),
        "has_pose_3d": torch.tensor(has_pose_3d),
        "scale": torch.tensor(scale, dtype=torch.float32),
        "center": f32(center),
        "orig_shape": torch.tensor(orig_shape, dtype=torch.int64),
        "rot_angle": torch.tensor(aug.rot, dtype=torch.float32),
        "gender": torch.tensor(GENDER_CODES.get(str(data["gender"][idx]).lower(), -1), dtype=torch.int64),
        "imgname": imgname,
        "maskname": os.path.join(ds.img_dir, maskname) if maskname else "",
        "partname": os.path.join(ds.img_dir, partname) if partname else "",
        "iuvname": os.path.join(ds.img_dir, iuvname) if iuvname else "",
        "cam_K": f32(K_crop),
        "cam_rot": f32(R_new),
        "cam_transl": f32(t_new),
    }
    if load_masks:
        if not maskname:
            raise ValueError(f"{name}: load_masks=True but sample index {index} has no maskname")
        item["mask"] = _load_mask(item["maskname"], M, res, index, name)
    if ds.load_iuv:
        if aug.flip:
            raise _iuv_flip_error(name, ds.augmentation.flip_prob)
        if not iuvname:
            raise ValueError(f"{name}: load_iuv=True but sample index {index} has no iuvname")
        item["iuv"] = _load_iuv(item["iuvname"], M, res, index, name, (orig_shape[1], orig_shape[0]))
    return item


class _AugmentedDataset(Dataset):
    """Seed / epoch bookkeeping shared by the datasets."""

    seed: Optional[int]
    epoch: int

    def _setup_npz(self, npz_path, img_dir, multiview: bool, is_train: bool, dataset_name: Optional[str],
                   augmentation: AugmentationConfig, img_res: int, seed: Optional[int], ignore_3d: bool) -> None:
        """Load and check an npz (SPIN or multi-view) and the options the npz datasets share."""
        self.npz_path = os.fspath(npz_path)
        self.dataset_name = dataset_name or os.path.splitext(os.path.basename(self.npz_path))[0]
        self.data = load_spin_npz(self.npz_path, multiview=multiview)
        self.img_dir = _check_img_dir(img_dir, self.dataset_name)
        if not isinstance(augmentation, AugmentationConfig):
            raise TypeError(f"augmentation must be an AugmentationConfig; got {type(augmentation).__name__}")
        if int(img_res) <= 0:
            raise ValueError(f"img_res must be > 0; got {img_res}")
        self.is_train = bool(is_train)
        self.augmentation = augmentation
        self.img_res = int(img_res)
        self.seed = seed
        self.epoch = 0
        self.ignore_3d = bool(ignore_3d)
        self.has_calibration = "cam_rot" in self.data
        self.present = frozenset(str(k) for k in self.data["present"])
        self.load_iuv = False
        self.crop_cache: Optional[CropCache] = None

    def _setup_iuv_and_cache(self, load_iuv: bool, crop_cache) -> None:
        """Check and store the ``load_iuv`` / ``crop_cache`` options of the npz datasets."""
        self.load_iuv = bool(load_iuv)
        if self.load_iuv:
            if "iuvname" not in self.present:
                raise ValueError(f"{self.dataset_name}: load_iuv=True but {self.npz_path} has no 'iuvname' key")
            if self.is_train and self.augmentation.flip_prob > 0:
                raise _iuv_flip_error(self.dataset_name, self.augmentation.flip_prob)
        if crop_cache is not None:
            self.crop_cache = load_crop_cache(crop_cache, self.data, res=self.img_res, source=self.dataset_name)

    @property
    def crop_cache_path(self) -> Optional[str]:
        """The crop cache items are read from (None: full images, the complete augmentation)."""
        return None if self.crop_cache is None else self.crop_cache.path

    def _draw(self, rng: np.random.Generator) -> AugmentationParams:
        """One augmentation draw; with a crop cache only its flip and pixel gain are kept."""
        a = sample_augmentation(rng, self.augmentation)
        if self.crop_cache is not None:
            a = dataclasses.replace(a, rot=0.0, scale=1.0)
        return a

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws :meth:`__getitem__` makes (with a seed)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return make_rng(self.seed, self.epoch, index)

    def _index(self, index) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.dataset_name}: index {index} out of range for {n} samples")
        return i


class SPINDataset(_AugmentedDataset):
    """A SPIN npz (one dataset split) and its image root as SPIN's training / evaluation items.

    Args:
        npz_path: the npz (format: :mod:`smplfast.data.formats`).
        img_dir: the directory ``imgname`` (and ``maskname`` / ``partname``) are relative to.
        is_train: draw SPIN's augmentation; False gives the plain crop (no flip, gain, rotation, scale).
        dataset_name: the ``dataset_name`` item (default: the npz file name without extension).
        augmentation: the distribution of the draws (default SPIN's, :data:`SPIN_AUGMENTATION`).
        img_res: crop side in pixels (224).
        seed: with a seed the draws depend only on (seed, epoch, index).
        ignore_3d: report ``has_smpl``, ``has_pose_3d`` and ``has_smpl_joints_3d`` as False (SPIN's
            option for data whose 3D labels must not be used).
        load_masks: also return the silhouette (``mask``, bool (res, res)) warped into the crop.
        load_iuv: also return the DensePose IUV image of ``iuvname`` warped into the crop with the
            image's affine and nearest sampling: ``iuv`` float32 (3, res, res) = I (0 background,
            1..24), U, V in [0, 1] (the layout of :class:`DensePoseDataset`). Flips are refused
            (mirroring U, V needs a chart symmetry map the bundled charts do not have): with
            ``is_train`` the ``augmentation`` must have ``flip_prob=0``.
        crop_cache: a directory made by :func:`smplfast.data.crop_cache.build_crop_cache` for this
            file at ``img_res``: images are read pre-cropped from it. **Cached crops remove the
            rotation and scale augmentation** (only the flip and the pixel gain are drawn, on the
            fly; ``rot_angle`` is 0, ``scale`` the stored one): runs trained this way are proxies and
            must be labelled so (:attr:`crop_cache_path`). A cache made for another file, sample
            count or resolution is refused (:class:`~smplfast.data.crop_cache.CropCacheError`).

    Items (torch tensors unless noted; 2D points normalised as 2k/res - 1, (x, y, confidence or
    visibility), mirrored and relabelled when flipped; 3D joints rotated by Rz(-rot), x negated and
    relabelled when flipped):
        ``img`` (3, res, res) float32 normalised with ImageNet mean/std; ``pose`` (72) (global
        orientation rotated and flipped with the crop); ``betas`` (10); ``keypoints`` (49, 3) =
        the annotated [openpose, part] in the crop (what a model trains on); ``keypoints_gt``
        (49, 3) = the exact [openpose_gt, part_gt] (evaluation; rows of an absent key are zero) with
        ``has_keypoints_gt`` (the file has either); ``smpl_joints_2d`` (24, 3) / ``smpl_joints_2d_gt``
        (24, 3), the annotated / exact SMPL skeleton joints (``smpl_24``, flip permutation of
        ``smpl_24``) with ``has_smpl_joints_2d`` / ``has_smpl_joints_2d_gt``; ``smpl_joints_3d``
        (24, 3) camera frame, metres, with ``has_smpl_joints_3d`` (the file has the key, its
        ``has_pose_3d`` allows 3D training, and not ``ignore_3d``); ``pose_3d`` (24, 4) (confidence
        kept); ``has_smpl``, ``has_pose_3d`` (the file's ``has_pose_3d``, else 1 where ``S`` is
        present; AND not ``ignore_3d``), ``is_flipped`` bool; ``scale`` (box scale times the drawn
        scale factor), ``center`` (2), ``orig_shape`` (H, W) int64; ``rot_angle`` (radians, positive
        = content turned counterclockwise); ``gender`` int64 (0 m, 1 f, -1 other); ``pose_family``
        int64 (index into :data:`smplfast.body.samplers.POSE_FAMILIES`, -1 unknown);
        ``sample_index`` int64; ``dataset_name``, ``imgname``, ``maskname``, ``partname``,
        ``iuvname`` str (full paths, '' when absent); ``cam_K`` (3, 3) intrinsics of the crop,
        ``cam_rot`` (3, 3), ``cam_transl`` (3) (see :class:`MultiViewDataset`), ``has_calibration``
        bool (zeros when the file has no calibration). Absent label keys give zeros with a False flag.
    """

    def __init__(self, npz_path, img_dir, is_train: bool = True, *, dataset_name: Optional[str] = None,
                 augmentation: AugmentationConfig = SPIN_AUGMENTATION, img_res: int = 224,
                 seed: Optional[int] = None, ignore_3d: bool = False, load_masks: bool = False,
                 load_iuv: bool = False, crop_cache=None):
        self._setup_npz(npz_path, img_dir, False, is_train, dataset_name, augmentation, img_res, seed, ignore_3d)
        self.load_masks = bool(load_masks)
        if self.load_masks and "maskname" not in self.present:
            raise ValueError(f"{self.dataset_name}: load_masks=True but {self.npz_path} has no 'maskname' key")
        self._setup_iuv_and_cache(load_iuv, crop_cache)

    def __len__(self) -> int:
        return int(self.data["imgname"].shape[0])

    @property
    def item_keys(self) -> Tuple[str, ...]:
        """The keys of every item."""
        return SPIN_ITEM_KEYS + (("mask",) if self.load_masks else ()) + (("iuv",) if self.load_iuv else ())

    def augmentation_params(self, index: int) -> AugmentationParams:
        """The draw item ``index`` uses (for the current epoch; random each call without a seed);
        with a crop cache, rotation 0 and scale 1."""
        if not self.is_train:
            return IDENTITY_AUGMENTATION
        return self._draw(self._rng(self._index(index)))

    def missing_files(self) -> List[Tuple[int, str]]:
        """(index, path) of every image (and mask / part image) that does not exist; checks the whole
        file list once, e.g. right after pointing the dataset at a new directory."""
        out = []
        for key in ("imgname", "maskname", "partname", "iuvname"):
            for i, name in enumerate(self.data[key]):
                if name and not os.path.isfile(os.path.join(self.img_dir, str(name))):
                    out.append((i, os.path.join(self.img_dir, str(name))))
        return out

    def __getitem__(self, index):
        i = self._index(index)
        aug = self.augmentation_params(i)
        item = _crop_view(self, (i,), aug, index=i, load_masks=self.load_masks)
        item["pose_family"] = torch.tensor(int(self.data["pose_family"][i]), dtype=torch.int64)
        item["is_flipped"] = torch.tensor(aug.flip)
        item["sample_index"] = torch.tensor(i, dtype=torch.int64)
        item["dataset_name"] = self.dataset_name
        item["has_calibration"] = torch.tensor(self.has_calibration)
        return item


class MultiViewDataset(_AugmentedDataset):
    """An MV-SPIN multi-view npz: all V views of a person per item.

    Augmentation across views: one flip decision for the whole item (MV-SMPLify shares the body pose
    across views, and a body pose is left/right-consistent only if every view is mirrored or none);
    rotation, scale and pixel gain are drawn per view when ``independent_views`` (the default: an
    in-plane rotation is a rotation of that camera about its optical axis and a rescale changes only
    its intrinsics, so the views stay one calibrated rig), else one draw is shared by all views.

    Calibration (when the file has ``cam_*``): ``cam_K`` (V, 3, 3) maps camera-frame points to crop
    pixels, ``cam_rot`` (V, 3, 3) and ``cam_transl`` (V, 3) are world -> camera for the augmented
    item, such that ``cam_rot @ X' + cam_transl`` equals each view's augmented ``pose_3d`` and
    ``K @ (...)`` divided by its z lands on the crop keypoints, where X' is the world point mirrored
    by diag(-1, 1, 1) when ``is_flipped`` (the flipped item is the mirror image of the whole scene).

    Items: ``img`` (V, 3, res, res), ``keypoints`` (V, 49, 3), ``pose`` (V, 72), ``betas`` (V, 10),
    ``pose_3d`` (V, 24, 4), ``has_smpl``, ``has_pose_3d`` (V,) bool, ``scale``, ``rot_angle`` (V,),
    ``center`` (V, 2), ``orig_shape`` (V, 2), ``gender`` (V,), ``cam_K``, ``cam_rot``, ``cam_transl``,
    ``has_calibration``, ``is_flipped`` (one bool), ``sample_index``, ``dataset_name``, and
    ``imgname`` / ``maskname`` / ``partname`` / ``iuvname`` as lists of V strings; the other keys
    of :class:`SPINDataset` with a view axis (``keypoints_gt`` (V, 49, 3), ``smpl_joints_2d`` (V, 24, 3),
    ``smpl_joints_3d`` (V, 24, 3), their ``has_*`` flags (V,), ...), except the per-person
    ``pose_family`` (one int64). ``views`` selects and orders a subset of the file's view axis.
    ``load_iuv`` and ``crop_cache`` work as in :class:`SPINDataset` (``iuv`` (V, 3, res, res); a
    cache holds every view of the file).
    """

    def __init__(self, npz_path, img_dir, is_train: bool = True, *, dataset_name: Optional[str] = None,
                 augmentation: AugmentationConfig = SPIN_AUGMENTATION, img_res: int = 224,
                 seed: Optional[int] = None, ignore_3d: bool = False, views: Optional[Sequence[int]] = None,
                 independent_views: bool = True, load_iuv: bool = False, crop_cache=None):
        self._setup_npz(npz_path, img_dir, True, is_train, dataset_name, augmentation, img_res, seed, ignore_3d)
        self._setup_iuv_and_cache(load_iuv, crop_cache)
        nv = self.data["imgname"].shape[1]
        self.views = list(range(nv)) if views is None else [int(v) for v in views]
        bad = [v for v in self.views if not 0 <= v < nv]
        if bad or not self.views:
            raise ValueError(f"{self.dataset_name}: views must be non-empty indices into the file's {nv} views; got {views}")
        self.independent_views = bool(independent_views)

    def __len__(self) -> int:
        return int(self.data["imgname"].shape[0])

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def item_keys(self) -> Tuple[str, ...]:
        return SPIN_ITEM_KEYS + (("iuv",) if self.load_iuv else ())

    def augmentation_params(self, index: int) -> List[AugmentationParams]:
        """The per-view draws of item ``index`` (one flip for all views; with a crop cache, rotation 0
        and scale 1)."""
        V = self.num_views
        if not self.is_train:
            return [IDENTITY_AUGMENTATION] * V
        rng = self._rng(self._index(index))
        first = self._draw(rng)
        if not self.independent_views:
            return [first] * V
        draws = [first] + [self._draw(rng) for _ in range(V - 1)]
        return [AugmentationParams(flip=first.flip, pixel_noise=d.pixel_noise, rot=d.rot, scale=d.scale) for d in draws]

    def __getitem__(self, index):
        i = self._index(index)
        augs = self.augmentation_params(i)
        per_view = [
            _crop_view(self, (i, v), a, index=i, load_masks=False)
            for v, a in zip(self.views, augs)
        ]
        item = {}
        for k in per_view[0]:
            vals = [p[k] for p in per_view]
            item[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
        item["pose_family"] = torch.tensor(int(self.data["pose_family"][i]), dtype=torch.int64)
        item["is_flipped"] = torch.tensor(augs[0].flip)
        item["sample_index"] = torch.tensor(i, dtype=torch.int64)
        item["dataset_name"] = self.dataset_name
        item["has_calibration"] = torch.tensor(self.has_calibration)
        return item


class DensePoseDataset(_AugmentedDataset):
    """DensePose COCO-style annotations: one item per person annotation.

    The crop is SPIN's: a square of ``max(w, h) * bbox_rescale`` around the box centre, with
    rotation / scale / pixel-gain augmentation. Mirroring is not offered: a mirrored DensePose point
    needs the left/right surface correspondence of U, V inside each part, which the annotation
    format does not carry, so an ``augmentation`` with ``flip_prob > 0`` is refused.

    Items: ``img`` (3, res, res); ``dp_points`` (max_points, 5) = x, y (normalised 2k/res - 1 like
    SPIN's keypoints), I (1..24), U, V, zero-padded; ``dp_mask`` (max_points,) bool (real points);
    ``dp_inside`` (max_points,) bool (real points that lie inside the crop after augmentation);
    ``num_points``; ``has_densepose`` (the annotation has dp_* data); ``keypoints`` (49, 3) (COCO
    keypoints in SPIN's 24 ground-truth slots, confidence 1 where COCO's v > 0) and ``has_keypoints``;
    ``center``, ``scale``, ``rot_angle``, ``is_flipped`` (always False), ``orig_shape``, ``image_id``,
    ``annotation_id``, ``sample_index``, ``dataset_name``, ``imgname``; with ``iuv_dir`` also ``iuv``
    (3, res, res) float32: I (0 = background) and U, V in [0, 1], warped with nearest sampling.

    ``only_with_points`` keeps only annotations that carry dp_* points (``num_without_points`` says
    how many were left out); by default every annotation is an item.
    """

    def __init__(self, json_path, img_dir, iuv_dir=None, is_train: bool = True, *,
                 dataset_name: Optional[str] = None, augmentation: Optional[AugmentationConfig] = None,
                 img_res: int = 224, max_points: int = 256, bbox_rescale: float = 1.2, seed: Optional[int] = None,
                 only_with_points: bool = False):
        self.json_path = os.fspath(json_path)
        self.dataset_name = dataset_name or os.path.splitext(os.path.basename(self.json_path))[0]
        data = load_densepose_json(self.json_path)
        self.img_dir = _check_img_dir(img_dir, self.dataset_name)
        self.iuv_dir = None if iuv_dir is None else _check_img_dir(iuv_dir, self.dataset_name + " (IUV)")
        if augmentation is None:
            augmentation = AugmentationConfig(flip_prob=0.0)
        if not isinstance(augmentation, AugmentationConfig):
            raise TypeError(f"augmentation must be an AugmentationConfig; got {type(augmentation).__name__}")
        if augmentation.flip_prob > 0:
            raise ValueError("DensePoseDataset: flip augmentation is not supported (mirroring U, V needs the "
                             f"surface's left/right correspondence); got flip_prob={augmentation.flip_prob}")
        if not bbox_rescale > 0:
            raise ValueError(f"bbox_rescale must be > 0; got {bbox_rescale}")
        self.images = {im["id"]: im for im in data["images"]}
        anns = list(data["annotations"])
        if only_with_points:
            keep = [a for a in anns if "dp_x" in a and len(a["dp_x"]) > 0]
            self.num_without_points = len(anns) - len(keep)
            anns = keep
        else:
            self.num_without_points = 0
        if not anns:
            raise ValueError(f"{self.json_path}: no annotations to serve")
        too_many = [(a["id"], len(a["dp_x"])) for a in anns if "dp_x" in a and len(a["dp_x"]) > max_points]
        if too_many:
            raise ValueError(f"{self.json_path}: annotation(s) with more than max_points={max_points} DensePose "
                             f"points (id, count): {too_many[:5]}; raise max_points")
        self.annotations = anns
        self.is_train = bool(is_train)
        self.augmentation = augmentation
        self.img_res = int(img_res)
        self.max_points = int(max_points)
        self.bbox_rescale = float(bbox_rescale)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def item_keys(self) -> Tuple[str, ...]:
        keys = ("img", "dp_points", "dp_mask", "dp_inside", "num_points", "has_densepose", "keypoints",
                "has_keypoints", "center", "scale", "rot_angle", "is_flipped", "orig_shape", "image_id",
                "annotation_id", "sample_index", "dataset_name", "imgname")
        return keys + (("iuv",) if self.iuv_dir is not None else ())

    def augmentation_params(self, index: int) -> AugmentationParams:
        if not self.is_train:
            return IDENTITY_AUGMENTATION
        return sample_augmentation(self._rng(self._index(index)), self.augmentation)

    def __getitem__(self, index):
        i = self._index(index)
        ann = self.annotations[i]
        entry = self.images[ann["image_id"]]
        aug = self.augmentation_params(i)
        res = self.img_res
        center, scale = bbox_to_center_scale(ann["bbox"], self.bbox_rescale)
        scale *= aug.scale
        M = crop_matrix(center, scale, res, aug.rot, False)

        imgname = os.path.join(self.img_dir, str(entry["file_name"]))
        image = _open_image(imgname, i, self.dataset_name)
        if (image.width, image.height) != (int(entry["width"]), int(entry["height"])):
            raise ValueError(f"{self.dataset_name}: image {imgname!r} (sample index {i}) is {image.width}x{image.height}; "
                             f"the json says {entry['width']}x{entry['height']}")
        img = image_to_tensor(np.asarray(warp_image(image, M, res)), aug.pixel_noise)

        P = self.max_points
        points = np.zeros((P, 5), dtype=np.float32)
        mask = np.zeros(P, dtype=bool)
        inside = np.zeros(P, dtype=bool)
        has_dp = "dp_x" in ann
        n = len(ann["dp_x"]) if has_dp else 0
        if n:
            x, y, w, h = (float(v) for v in ann["bbox"])
            xy = np.stack([x + np.asarray(ann["dp_x"], np.float64) / DENSEPOSE_COORD_RANGE * w,
                           y + np.asarray(ann["dp_y"], np.float64) / DENSEPOSE_COORD_RANGE * h], axis=1)
            q = transform_points(xy, M)
            inside[:n] = ((q >= 0) & (q <= res)).all(axis=1)
            points[:n, :2] = normalize_points(q, res)
            points[:n, 2] = np.asarray(ann["dp_I"], np.float64)
            points[:n, 3] = np.asarray(ann["dp_U"], np.float64)
            points[:n, 4] = np.asarray(ann["dp_V"], np.float64)
            mask[:n] = True

        kps49 = np.zeros((49, 3))
        has_kps = "keypoints" in ann
        if has_kps:
            coco = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            coco[:, 2] = coco[:, 2] > 0
            coco[:, :2] = transform_points(coco[:, :2], M)
            kps49 = normalize_points(convert(coco, "coco_17", "spin_49"), res)

        item = {
            "img": img,
            "dp_points": torch.from_numpy(points),
            "dp_mask": torch.from_numpy(mask),
            "dp_inside": torch.from_numpy(inside),
            "num_points": torch.tensor(n, dtype=torch.int64),
            "has_densepose": torch.tensor(has_dp),
            "keypoints": torch.from_numpy(kps49.astype(np.float32)),
            "has_keypoints": torch.tensor(has_kps),
            "center": torch.from_numpy(center.astype(np.float32)),
            "scale": torch.tensor(scale, dtype=torch.float32),
            "rot_angle": torch.tensor(aug.rot, dtype=torch.float32),
            "is_flipped": torch.tensor(False),
            "orig_shape": torch.tensor((image.height, image.width), dtype=torch.int64),
            "image_id": torch.tensor(int(ann["image_id"]), dtype=torch.int64),
            "annotation_id": torch.tensor(int(ann["id"]), dtype=torch.int64),
            "sample_index": torch.tensor(i, dtype=torch.int64),
            "dataset_name": self.dataset_name,
            "imgname": imgname,
        }
        if self.iuv_dir is not None:
            iuv_path = os.path.join(self.iuv_dir, densepose_iuv_name(entry))
            item["iuv"] = _load_iuv(iuv_path, M, res, i, self.dataset_name, image.size)
        return item


class MixedDataset(Dataset):
    """Several datasets sampled by ratio, as SPIN's ``MixedDataset``.

    Item ``index`` picks dataset k with probability ``ratios[k]`` and returns its item
    ``index % len(dataset_k)``, plus ``mixed_source`` (k). The length is the longest dataset's
    (``length`` overrides it). With a ``seed`` the choice depends only on (seed, epoch, index);
    :meth:`set_epoch` is passed on to the member datasets. All members must return the same item
    keys (so a DataLoader can collate mixed batches).
    """

    def __init__(self, datasets: Sequence[Dataset], ratios: Sequence[float], *, length: Optional[int] = None,
                 seed: Optional[int] = None):
        self.datasets = list(datasets)
        r = np.asarray(ratios, dtype=np.float64)
        if len(self.datasets) == 0:
            raise ValueError("MixedDataset needs at least one dataset")
        if r.shape != (len(self.datasets),):
            raise ValueError(f"MixedDataset: ratios must have one entry per dataset ({len(self.datasets)}); got {r.shape}")
        if not np.isfinite(r).all() or (r < 0).any() or abs(r.sum() - 1.0) > 1e-6:
            raise ValueError(f"MixedDataset: ratios must be >= 0 and sum to 1; got {r.tolist()} (sum {r.sum():g})")
        for k, (d, p) in enumerate(zip(self.datasets, r)):
            if p > 0 and len(d) == 0:
                raise ValueError(f"MixedDataset: dataset {k} is empty but has ratio {p:g}")
        keys = [tuple(getattr(d, "item_keys", ())) for d in self.datasets]
        known = [set(k) for k in keys if k]
        if known and any(s != known[0] for s in known):
            diff = [sorted(s ^ known[0]) for s in known]
            raise ValueError(f"MixedDataset: the datasets return different item keys (differences to the first: "
                             f"{diff}); a batch could not be collated")
        self.ratios = r
        self._cum = np.cumsum(r)
        self.length = max(len(d) for d in self.datasets) if length is None else int(length)
        if self.length <= 0:
            raise ValueError(f"MixedDataset: length must be > 0; got {self.length}")
        self.seed = seed
        self.epoch = 0

    # SPIN's partition: Human3.6M 0.3, the in-the-wild sets 0.6 shared by size, MPI-INF-3DHP 0.1.
    @classmethod
    def spin(cls, h36m: Dataset, in_the_wild: Sequence[Dataset], mpi_inf_3dhp: Dataset, **kwargs) -> "MixedDataset":
        """SPIN's mix: ``h36m`` 0.3, ``in_the_wild`` (LSP, MPII, LSP-extended, COCO, ...) 0.6 split in
        proportion to their lengths, ``mpi_inf_3dhp`` 0.1."""
        itw = list(in_the_wild)
        total = sum(len(d) for d in itw)
        if not itw or total == 0:
            raise ValueError("MixedDataset.spin: in_the_wild must hold at least one non-empty dataset")
        ratios = [0.3] + [0.6 * len(d) / total for d in itw] + [0.1]
        return cls([h36m, *itw, mpi_inf_3dhp], ratios, **kwargs)

    @classmethod
    def mv_spin(cls, h36m: Dataset, mpi_inf_3dhp: Dataset, **kwargs) -> "MixedDataset":
        """MV-SPIN's mix: ``h36m`` 0.9, ``mpi_inf_3dhp`` 0.1 (both :class:`MultiViewDataset`)."""
        return cls([h36m, mpi_inf_3dhp], [0.9, 0.1], **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    @property
    def item_keys(self) -> Tuple[str, ...]:
        return tuple(getattr(self.datasets[0], "item_keys", ())) + ("mixed_source",)

    def source_of(self, index: int) -> int:
        """Which dataset item ``index`` comes from (for the current epoch; random without a seed)."""
        u = make_rng(self.seed, self.epoch, int(index), 0x6D6978).uniform()
        k = int(np.searchsorted(self._cum, u, side="right"))
        k = min(k, len(self.datasets) - 1)
        while self.ratios[k] == 0:  # u landed on the cumulative edge of an empty slot (rounding)
            k -= 1
        return k

    def __getitem__(self, index):
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"MixedDataset: index {index} out of range for length {self.length}")
        k = self.source_of(i)
        d = self.datasets[k]
        item = d[i % len(d)]
        item["mixed_source"] = torch.tensor(k, dtype=torch.int64)
        return item
