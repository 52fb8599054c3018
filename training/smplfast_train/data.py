"""Training data: the splits of a data folder as smplfast Datasets, mixed by ratio, and a resumable sampler.

A data folder holds one subfolder per split, made by ``smplfast synth --split NAME --out DATA/NAME``
(or any SPIN-format npz folder with a ``synth_spin.npz``). :func:`build_train_set` reads the splits of
``train_splits`` with SPIN's crop and augmentation at ``img_res``, flags their labels as the files say
(``has_smpl`` / ``has_pose_3d``; everything 2D-only when ``unpaired``) and mixes them by ratio; for
``trainer: holopose`` every split also gives its DensePose IUV crop (``load_iuv``; flips off); for
``trainer: mvspin`` the splits are rigs (``synth_mvspin.npz``) read as
:class:`smplfast.data.MultiViewDataset` (items with a view axis; one flip per subject).
:class:`ResumableSampler` draws a seeded permutation per epoch, split across distributed ranks, and
records its position so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from smplfast.data import MixedDataset, MultiViewDataset, SPINDataset
from smplfast.data.augment import NO_AUGMENTATION, SPIN_AUGMENTATION

__all__ = ["split_npz", "TrainSet", "build_train_set", "ResumableSampler", "BatchStream", "collate"]


def split_npz(data_dir, split: str, multiview: bool = False) -> Tuple[Path, Path]:
    """``(npz, image root)`` of a split folder (``synth_mvspin.npz`` with ``multiview``), with a clear
    error when it is missing."""
    folder = Path(data_dir) / split
    if multiview:
        npz = folder / "synth_mvspin.npz"
        if not npz.is_file():
            single = (folder / "synth_spin.npz").is_file()
            raise FileNotFoundError(
                f"split {split!r}: {npz} not found; a multi-view preset needs rig data with V >= 2 views per person "
                + ("(this split is single-view: its folder holds synth_spin.npz); " if single else "")
                + f"make it with `smplfast synth --split rig_train --out {folder}` or `smplfast synth --views 4 ...`")
        return npz, folder
    npz = folder / "synth_spin.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"split {split!r}: {npz} not found; make it with "
                                f"`smplfast synth --split {split} --out {folder}` (or point --data at a folder "
                                f"holding {split}/synth_spin.npz)")
    return npz, folder


@dataclasses.dataclass
class TrainSet:
    """The mixed training set and the names of its member datasets (``mixed_source`` indexes them)."""

    dataset: MixedDataset
    names: List[str]
    members: List[SPINDataset]

    def __len__(self) -> int:
        return len(self.dataset)


def build_train_set(cfg) -> TrainSet:
    """The ``train_splits`` of ``cfg.data`` at ``cfg.img_res`` with SPIN's augmentation (``cfg.augment``),
    mixed by their ratios; seeded by ``cfg.seed``. The length is the largest split's. For
    ``trainer: pavlakos_priors`` the training set is the synthetic-instance bank instead (no images;
    :func:`smplfast_train.pavlakos.build_prior_train_set`); for ``pavlakos_e2e`` simulated detections of
    one image split (:func:`smplfast_train.pavlakos.build_e2e_train_set`)."""
    if cfg.trainer == "pavlakos_priors":
        from .pavlakos import build_prior_train_set

        return build_prior_train_set(cfg)
    if cfg.trainer == "pavlakos_e2e":
        from .pavlakos import build_e2e_train_set

        return build_e2e_train_set(cfg)
    names = [n for n, r in cfg.train_splits.items() if r > 0]
    members = []
    aug = SPIN_AUGMENTATION if cfg.augment else NO_AUGMENTATION
    multiview = cfg.trainer == "mvspin"
    # HoloPose reads DensePose IUV crops (every split, so batches collate; the trainer masks the labels of
    # splits outside iuv_splits). The charts have no mirror map, so flips are off (TRAINING_SPEC §8 H9).
    load_iuv = cfg.trainer == "holopose"
    if load_iuv:
        aug = dataclasses.replace(aug, flip_prob=0.0)
    # Human2D learns the silhouette: the masks, warped with the same crop as the image and keypoints.
    load_masks = cfg.trainer == "pavlakos_human2d"
    for i, name in enumerate(names):
        npz, root = split_npz(cfg.data, name, multiview)
        common = dict(is_train=True, augmentation=aug, img_res=cfg.img_res, seed=cfg.seed * 1000 + i,
                      ignore_3d=cfg.unpaired, dataset_name=name)
        if not multiview:
            members.append(SPINDataset(npz, root, load_iuv=load_iuv, load_masks=load_masks, **common))
            continue
        with np.load(npz, allow_pickle=False) as z:
            nv = int(z["imgname"].shape[1]) if z["imgname"].ndim == 2 else 1
        want = cfg.num_views or nv
        if nv < 2 or want > nv:
            raise ValueError(f"split {name!r} has {nv} view(s) per person; preset {cfg.preset!r} needs "
                             f"{'at least 2' if not cfg.num_views else cfg.num_views} (num_views)")
        members.append(MultiViewDataset(npz, root, views=list(range(want)), independent_views=cfg.independent_views,
                                        **common))
    if multiview and len({m.num_views for m in members}) > 1:
        raise ValueError(f"the multi-view splits {names} have different numbers of views "
                         f"{[m.num_views for m in members]}; set num_views to use the same number from each")
    ratios = [cfg.train_splits[n] for n in names]
    mixed = MixedDataset(members, ratios, seed=cfg.seed)
    return TrainSet(mixed, names, members)


class ResumableSampler:
    """Batches of a seeded permutation per epoch, this rank's share, from a recorded position.

    Each epoch draws ``permutation(seed, epoch)`` of ``length`` indices, pads it to a multiple of
    ``world_size * batch_size`` by wrapping (every rank gets the same number of full batches), and gives
    rank r the entries ``r, r + world, ...``. The state is ``(epoch, position)`` (position in this rank's
    share, a multiple of the batch size); :meth:`batches` yields ``(epoch, [indices])`` from a state,
    forever, so a resumed run continues with exactly the next batch."""

    def __init__(self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if length <= 0:
            raise ValueError(f"ResumableSampler: the dataset is empty (length {length})")
        if batch_size <= 0:
            raise ValueError(f"ResumableSampler: batch_size must be >= 1; got {batch_size}")
        self.length, self.batch_size, self.seed = int(length), int(batch_size), int(seed)
        self.rank, self.world = int(rank), int(world_size)

    def per_rank(self) -> int:
        """Indices per rank and epoch (a multiple of the batch size)."""
        chunk = self.world * self.batch_size
        return math.ceil(self.length / chunk) * self.batch_size

    def epoch_indices(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch, 0x5A3]).permutation(self.length)
        return np.resize(perm, self.per_rank() * self.world)[self.rank::self.world]

    def advance(self, state: Dict[str, int], batches: int) -> Dict[str, int]:
        """The state ``batches`` batches after ``state``."""
        total = int(state["position"]) + batches * self.batch_size
        return {"epoch": int(state["epoch"]) + total // self.per_rank(), "position": total % self.per_rank()}

    def batches(self, state: Optional[Dict[str, int]] = None) -> Iterator[Tuple[int, List[int]]]:
        epoch, pos = (0, 0) if state is None else (int(state["epoch"]), int(state["position"]))
        if pos % self.batch_size or not 0 <= pos < self.per_rank():
            raise ValueError(f"ResumableSampler: position {pos} is not a batch boundary of an epoch of "
                             f"{self.per_rank()} (batch {self.batch_size}); the checkpoint belongs to another setting")
        while True:
            idx = self.epoch_indices(epoch)
            for p in range(pos, len(idx), self.batch_size):
                yield epoch, [int(i) for i in idx[p:p + self.batch_size]]
            epoch, pos = epoch + 1, 0


def collate(items: List[dict]) -> dict:
    """Stack tensors, keep everything else (strings) as lists."""
    out = {}
    for k in items[0]:
        v = items[0][k]
        out[k] = torch.stack([it[k] for it in items]) if isinstance(v, torch.Tensor) else [it[k] for it in items]
    return out


class _EpochItems(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]``: the item of ``index`` with the augmentation draws of ``epoch``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class BatchStream:
    """Collated batches in sampler order from a state, loaded in this process (``num_workers = 0``) or by
    a DataLoader's worker processes. Batches are a function of (seed, epoch, index) only, whichever way
    they are loaded; :meth:`state_dict` is the state after the batches handed out so far."""

    def __init__(self, dataset, sampler: ResumableSampler, state: Optional[Dict[str, int]] = None,
                 num_workers: int = 0):
        self.items = _EpochItems(dataset)
        self.sampler = sampler
        self.start = dict(state or {"epoch": 0, "position": 0})
        self.consumed = 0
        keys = (((e, i) for i in idx) for e, idx in sampler.batches(self.start))
        batch_keys = ([*b] for b in keys)
        if num_workers > 0:
            loader = torch.utils.data.DataLoader(self.items, batch_sampler=_Listed(batch_keys), num_workers=num_workers,
                                                 collate_fn=collate, persistent_workers=False)
            self._it = iter(loader)
        else:
            self._it = (collate([self.items[k] for k in b]) for b in batch_keys)

    def next_batch(self) -> dict:
        batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        return self.sampler.advance(self.start, self.consumed)


class _Listed:
    """An iterable of index lists, as a DataLoader batch_sampler."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)
