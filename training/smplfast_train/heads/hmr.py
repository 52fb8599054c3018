"""SPIN's HMR iterative regressor and the full HMR model (backbone + regressor).

The regressor (SPIN's ``hmr.py``): the input of ``fc1`` is ``[feat (F), pose6d (144), betas (10),
cam (3)]``; ``fc1`` (1024) → ``drop1`` (Dropout 0.5) → ``fc2`` (1024) → ``drop2`` (Dropout 0.5) →
``decpose`` (144), ``decshape`` (10), ``deccam`` (3), each added to its running estimate; 3
iterations starting from the mean parameters (buffers ``init_pose`` (1, 144), ``init_shape`` (1, 10),
``init_cam`` (1, 3)). There is no ReLU between the layers in SPIN's port (HMR's TensorFlow code had
one): ``relu=True`` adds it after fc1 and fc2 (no parameters, so checkpoints load either way). The
three heads are initialised ``xavier_uniform_(gain=0.01)``; fc1 / fc2 and all biases keep PyTorch's
default initialisation, as SPIN.

:class:`HMR` puts the backbone's layers (``conv1, bn1, layer1..layer4``) and the regressor's layers at
the top level of its state dict, exactly as SPIN's ``HMR``, so a SPIN checkpoint's ``model`` state
dict loads into ``HMR(resnet50(), ...)`` with ``strict=True``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import build_backbone
from ..mean_params import load_mean_params
from ..rotations import rot6d_to_matrix

__all__ = ["NPOSE", "HMROutput", "HMRRegressor", "HMR", "build_hmr"]

#: Size of the 6D pose vector: 24 joints × 6.
NPOSE = 24 * 6

_REGRESSOR_NAMES = ("fc1", "drop1", "fc2", "drop2", "decpose", "decshape", "deccam", "init_pose", "init_shape", "init_cam")


class HMROutput(NamedTuple):
    """Regressor output. ``rotmat`` (B, 24, 3, 3) from ``pose6d`` (B, 144) by Gram–Schmidt;
    ``betas`` (B, 10); ``cam`` (B, 3) weak perspective ``[s, tx, ty]``."""

    rotmat: Tensor
    betas: Tensor
    cam: Tensor
    pose6d: Tensor


class HMRRegressor(nn.Module):
    """SPIN's iterative error-feedback regressor on pooled features (B, ``feat_dim``).

    ``mean_params``: npz path, mapping with ``pose`` / ``shape`` / ``cam``, or None for the bundled
    model's :data:`smplfast_train.mean_params.DEFAULT_MEAN_PARAMS`.
    """

    def __init__(
        self,
        feat_dim: int,
        mean_params=None,
        n_iter: int = 3,
        relu: bool = False,
        hidden: int = 1024,
        dropout: float = 0.5,
    ):
        super().__init__()
        self._init_regressor(feat_dim, mean_params, n_iter, relu, hidden, dropout)

    def _init_regressor(self, feat_dim, mean_params, n_iter, relu, hidden, dropout) -> None:
        mp = load_mean_params(mean_params)
        nshape = mp["shape"].numel()
        self.feat_dim = int(feat_dim)
        self.n_iter = int(n_iter)
        self.use_relu = bool(relu)
        self.fc1 = nn.Linear(self.feat_dim + NPOSE + nshape + 3, hidden)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(dropout)
        self.decpose = nn.Linear(hidden, NPOSE)
        self.decshape = nn.Linear(hidden, nshape)
        self.deccam = nn.Linear(hidden, 3)
        for head in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(head.weight, gain=0.01)
        self.register_buffer("init_pose", mp["pose"].reshape(1, NPOSE).clone())
        self.register_buffer("init_shape", mp["shape"].reshape(1, nshape).clone())
        self.register_buffer("init_cam", mp["cam"].reshape(1, 3).clone())

    def regress(
        self,
        feat: Tensor,
        init_pose: Optional[Tensor] = None,
        init_shape: Optional[Tensor] = None,
        init_cam: Optional[Tensor] = None,
        n_iter: Optional[int] = None,
    ) -> HMROutput:
        """Iterate from the mean parameters (or from ``init_*``, (B, 144) / (B, 10) / (B, 3))."""
        b = feat.shape[0]
        pose = self.init_pose.expand(b, -1) if init_pose is None else init_pose
        shape = self.init_shape.expand(b, -1) if init_shape is None else init_shape
        cam = self.init_cam.expand(b, -1) if init_cam is None else init_cam
        for _ in range(self.n_iter if n_iter is None else int(n_iter)):
            xc = self.fc1(torch.cat([feat, pose, shape, cam], dim=1))
            if self.use_relu:
                xc = F.relu(xc)
            xc = self.fc2(self.drop1(xc))
            if self.use_relu:
                xc = F.relu(xc)
            xc = self.drop2(xc)
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        rotmat = rot6d_to_matrix(pose.reshape(b, 24, 6))
        return HMROutput(rotmat, shape, cam, pose)

    def forward(self, feat: Tensor, init_pose=None, init_shape=None, init_cam=None, n_iter=None) -> HMROutput:
        return self.regress(feat, init_pose, init_shape, init_cam, n_iter)

    def regressor_parameters(self):
        """Parameters of fc1, fc2 and the three heads."""
        for name in ("fc1", "fc2", "decpose", "decshape", "deccam"):
            yield from getattr(self, name).parameters()


class HMR(HMRRegressor):
    """Backbone + SPIN regressor with SPIN's flat state-dict names.

    The backbone's child layers are registered at the top level (``conv1``, ``bn1``, ``layer1`` …;
    their names must not collide with the regressor's), and the backbone object itself is kept as
    the unregistered :attr:`backbone`, which shares those layers and runs them. A classifier child
    ``fc`` of the backbone is not registered (SPIN's HMR has none; it is neither saved nor trained).
    ``forward(images)`` returns :class:`HMROutput`; ``forward(images, return_c5=True)`` returns
    ``(output, c5)``.
    """

    def __init__(self, backbone: Union[str, nn.Module], mean_params=None, n_iter: int = 3, relu: bool = False,
                 hidden: int = 1024, dropout: float = 0.5):
        nn.Module.__init__(self)
        if isinstance(backbone, str):
            backbone, _ = build_backbone(backbone)
        feat_dim = getattr(backbone, "feature_dim", None)
        if feat_dim is None:
            raise ValueError("HMR: the backbone must have a feature_dim attribute")
        object.__setattr__(self, "_backbone", backbone)
        for name, child in backbone.named_children():
            if name in _REGRESSOR_NAMES:
                raise ValueError(f"HMR: backbone layer name {name!r} collides with the regressor's")
            if name == "fc":
                continue  # a classifier, not part of SPIN's HMR
            self.add_module(name, child)
        self._init_regressor(feat_dim, mean_params, n_iter, relu, hidden, dropout)
        if next(backbone.parameters(recurse=False), None) is not None or next(backbone.buffers(recurse=False), None) is not None:
            raise ValueError("HMR: the backbone must keep its parameters and buffers in child modules")

    @property
    def backbone(self) -> nn.Module:
        return self._backbone

    def train(self, mode: bool = True):
        super().train(mode)
        self._backbone.train(mode)  # its layers are ours; keep its own flag consistent too
        return self

    def backbone_parameters(self):
        """Parameters of the backbone layers (those registered here; a classifier ``fc`` is not)."""
        for name, child in self._backbone.named_children():
            if name != "fc":
                yield from child.parameters()

    def forward(self, images: Tensor, init_pose=None, init_shape=None, init_cam=None, n_iter=None,
                return_c5: bool = False):
        if return_c5:
            feat, c5 = self._backbone(images, return_c5=True)
            return self.regress(feat, init_pose, init_shape, init_cam, n_iter), c5
        return self.regress(self._backbone(images), init_pose, init_shape, init_cam, n_iter)


def build_hmr(backbone: str = "resnet50", mean_params=None, relu: bool = False, n_iter: int = 3) -> HMR:
    """:class:`HMR` on the backbone called ``backbone`` (``resnet50``, ``resnet18``, ``tiny``)."""
    return HMR(backbone, mean_params=mean_params, n_iter=n_iter, relu=relu)
