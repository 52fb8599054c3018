"""Image backbones: ResNet-50 / ResNet-18 with torchvision's parameter names, and a small ResNet
("tiny") for the cpu tier.

Parameter and buffer names are torchvision's (``conv1, bn1, layer1..layer4``; blocks
``conv1/bn1/conv2/bn2[/conv3/bn3]/downsample.0/downsample.1``), so a torchvision ResNet state dict
(without ``fc``) loads with ``strict=True``, and :class:`smplfast_train.heads.hmr.HMR` can expose
the same names at its top level, as SPIN's checkpoints do. The stride of a downsampling Bottleneck
is on its 3×3 ``conv2`` (torchvision's "v1.5", as SPIN's ``hmr.py``).

Initialisation follows SPIN: every convolution ``normal(0, sqrt(2 / n))`` with
``n = k_h · k_w · out_channels``; every BatchNorm weight 1 and bias 0.

Pooling is adaptive average pooling to 1×1, identical to SPIN's ``AvgPool2d(7)`` on 224² inputs and
also valid at other resolutions (128² on the cpu tier).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "init_spin_", "resnet50", "resnet18", "tiny", "build_backbone", "BACKBONES"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand (×4), with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """ResNet trunk: 7×7 stride-2 stem, 3×3 stride-2 max pool, four stages, global average pool.

    ``forward(x)`` returns pooled features (B, ``feature_dim``); ``forward(x, return_c5=True)``
    returns ``(features, c5)`` with the last stage's maps c5 (B, ``feature_dim``, H/32, W/32).
    ``num_classes`` adds a linear ``fc`` classifier (absent by default; not applied in ``forward``).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: Optional[int] = None,
        num_classes: Optional[int] = None,
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("ResNet: layers and widths must have 4 entries")
        stem_width = int(widths[0] if stem_width is None else stem_width)
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = int(widths[3]) * block.expansion
        if num_classes is not None:
            self.fc = nn.Linear(self.feature_dim, int(num_classes))
        init_spin_(self)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def c5(self, x: Tensor) -> Tensor:
        """Last-stage feature maps (B, feature_dim, H/32, W/32) of images (B, 3, H, W)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor, return_c5: bool = False):
        c5 = self.c5(x)
        feat = torch.flatten(self.avgpool(c5), 1)
        return (feat, c5) if return_c5 else feat


def init_spin_(module: nn.Module) -> nn.Module:
    """SPIN's initialisation, in place: conv weights ``normal(0, sqrt(2/n))``, n = k·k·out_channels;
    BatchNorm weight 1, bias 0. Linear layers keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def resnet50(num_classes: Optional[int] = None) -> ResNet:
    """ResNet-50 (Bottleneck [3, 4, 6, 3], widths 64..512 ×4): 2048 features, 23,508,032 parameters
    without ``fc``; torchvision's names and shapes."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes)


def resnet18(num_classes: Optional[int] = None) -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2], widths 64..512): 512 features; torchvision's names."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes)


def tiny(num_classes: Optional[int] = None) -> ResNet:
    """A ResNet-10 (BasicBlock [1, 1, 1, 1], widths 32/64/128/256, 32-channel 7×7 stride-2 stem +
    max pool): 256 features; the cpu tier's backbone."""
    return ResNet(BasicBlock, (1, 1, 1, 1), widths=(32, 64, 128, 256), num_classes=num_classes)


BACKBONES = {"resnet50": resnet50, "resnet18": resnet18, "tiny": tiny}


def build_backbone(name: str, **kwargs) -> Tuple[ResNet, int]:
    """``(module, feature_dim)`` of the backbone called ``name`` (one of :data:`BACKBONES`)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    module = BACKBONES[name](**kwargs)
    return module, module.feature_dim
