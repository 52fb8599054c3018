"""Tests for smplfast_train.backbones: torchvision-compatible ResNet names and shapes, SPIN init."""
import math

import pytest
import torch

from smplfast_train.backbones import BACKBONES, build_backbone, resnet18, resnet50, tiny

torch.set_num_threads(1)


def torchvision_resnet_layout(block, layers, widths=(64, 128, 256, 512), stem=64):
    """{name: shape} of torchvision's ResNet state dict without fc, written out from its definition."""
    out = {}

    def bn(prefix, c):
        out.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                    f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    out["conv1.weight"] = (stem, 3, 7, 7)
    bn("bn1", stem)
    expansion = 4 if block == "bottleneck" else 1
    cin = stem
    for s, (n, w) in enumerate(zip(layers, widths), start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            stride = 2 if (s > 1 and b == 0) else 1
            if block == "bottleneck":
                out[f"{p}.conv1.weight"] = (w, cin, 1, 1)
                bn(f"{p}.bn1", w)
                out[f"{p}.conv2.weight"] = (w, w, 3, 3)
                bn(f"{p}.bn2", w)
                out[f"{p}.conv3.weight"] = (w * 4, w, 1, 1)
                bn(f"{p}.bn3", w * 4)
            else:
                out[f"{p}.conv1.weight"] = (w, cin, 3, 3)
                bn(f"{p}.bn1", w)
                out[f"{p}.conv2.weight"] = (w, w, 3, 3)
                bn(f"{p}.bn2", w)
            if b == 0 and (stride != 1 or cin != w * expansion):
                out[f"{p}.downsample.0.weight"] = (w * expansion, cin, 1, 1)
                bn(f"{p}.downsample.1", w * expansion)
            cin = w * expansion
    return out


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def r50():
    return resnet50()


def test_resnet50_matches_torchvision_layout(r50):
    expected = torchvision_resnet_layout("bottleneck", (3, 4, 6, 3))
    sd = r50.state_dict()
    assert list(sd) == list(expected)  # same names, same order as torchvision (fc excluded)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert len(sd) == 318 and len(list(r50.parameters())) == 159
    assert n_params(r50) == 23_508_032  # torchvision's 25,557,032 minus fc's 2,049,000
    assert r50.feature_dim == 2048 and not hasattr(r50, "fc")
    # Downsampling stride is on the 3x3 conv (torchvision / SPIN).
    assert r50.layer2[0].conv2.stride == (2, 2) and r50.layer2[0].conv1.stride == (1, 1)


def test_resnet50_loads_torchvision_state_dict_strict(r50):
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randint(0, 100, v.shape, generator=g) if k.endswith("num_batches_tracked") else
              torch.randn(v.shape, generator=g)) for k, v in r50.state_dict().items()}
    m = resnet50()
    assert not m.load_state_dict(sd, strict=True).missing_keys
    assert torch.equal(m.layer4[2].bn3.running_var, sd["layer4.2.bn3.running_var"])
    # With the optional classifier, a full torchvision state dict (fc included) loads too.
    full = resnet50(num_classes=1000)
    sd.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    full.load_state_dict(sd, strict=True)
    assert n_params(full) == 25_557_032


def test_resnet50_forward_small(r50):
    r50.eval()
    with torch.no_grad():
        feat, c5 = r50(torch.randn(1, 3, 64, 64), return_c5=True)
    assert feat.shape == (1, 2048) and c5.shape == (1, 2048, 2, 2)
    torch.testing.assert_close(feat, c5.mean(dim=(2, 3)))


def test_resnet18_layout():
    m = resnet18()
    expected = torchvision_resnet_layout("basic", (2, 2, 2, 2))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    assert n_params(m) == 11_176_512  # torchvision's 11,689,512 minus fc's 513,000
    assert m.feature_dim == 512


def test_tiny_layout_and_forward():
    m = tiny()
    expected = torchvision_resnet_layout("basic", (1, 1, 1, 1), widths=(32, 64, 128, 256), stem=32)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    assert m.conv1.kernel_size == (7, 7) and m.conv1.stride == (2, 2) and m.feature_dim == 256
    x = torch.randn(2, 3, 128, 128)
    feat, c5 = m(x, return_c5=True)
    assert feat.shape == (2, 256) and c5.shape == (2, 256, 4, 4)
    feat.sum().backward()
    assert m.conv1.weight.grad is not None and m.conv1.weight.grad.abs().sum() > 0


def test_build_backbone():
    for name, dim in (("tiny", 256), ("resnet18", 512)):
        m, d = build_backbone(name)
        assert d == dim == m.feature_dim
    assert set(BACKBONES) >= {"resnet50", "resnet18", "tiny"}
    with pytest.raises(ValueError):
        build_backbone("vgg16")


def test_spin_initialisation():
    torch.manual_seed(0)
    m = resnet18()
    conv = m.layer4[1].conv2  # 512 x 512 x 3 x 3
    n = 3 * 3 * conv.out_channels
    assert abs(conv.weight.std().item() / math.sqrt(2.0 / n) - 1) < 0.01
    assert abs(conv.weight.mean().item()) < 1e-3
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
