"""Tests for smplfast_train.heads.hmr: SPIN's HMR regressor, its key names and initialisation."""
import copy

import numpy as np
import pytest
import torch

from smplfast_train.backbones import resnet50, tiny
from smplfast_train.heads.hmr import HMR, HMROutput, HMRRegressor, build_hmr
from smplfast_train.mean_params import load_mean_params
from smplfast_train.rotations import rot6d_to_matrix

torch.set_num_threads(1)


# SPIN's regressor keys (models/hmr.py) and their shapes for feature size F.
def spin_regressor_layout(F):
    return {
        "init_pose": (1, 144), "init_shape": (1, 10), "init_cam": (1, 3),
        "fc1.weight": (1024, F + 157), "fc1.bias": (1024,), "fc2.weight": (1024, 1024), "fc2.bias": (1024,),
        "decpose.weight": (144, 1024), "decpose.bias": (144,), "decshape.weight": (10, 1024),
        "decshape.bias": (10,), "deccam.weight": (3, 1024), "deccam.bias": (3,),
    }


def random_state_dict(layout, seed=0):
    """Random tensors of the given shapes (positive BN variances, so that a forward stays finite)."""
    g = torch.Generator().manual_seed(seed)

    def draw(k, shape):
        if k.endswith("num_batches_tracked"):
            return torch.tensor(7)
        if k.endswith("running_var"):
            return 0.5 + torch.rand(shape, generator=g)
        return 0.05 * torch.randn(shape, generator=g)

    return {k: draw(k, shape) for k, shape in layout.items()}


def spin_resnet50_layout():
    from test_train_backbones import torchvision_resnet_layout

    return {**torchvision_resnet_layout("bottleneck", (3, 4, 6, 3)), **spin_regressor_layout(2048)}


def test_spin_checkpoint_loads_strict_resnet50():
    model = HMR(resnet50())
    layout = spin_resnet50_layout()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    sd = random_state_dict(layout)
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.layer3[5].conv2.weight, sd["layer3.5.conv2.weight"])
    assert torch.equal(model.backbone.layer3[5].conv2.weight, sd["layer3.5.conv2.weight"])  # shared layers
    assert torch.equal(model.init_pose, sd["init_pose"]) and torch.equal(model.decpose.bias, sd["decpose.bias"])
    # The regressor's parameters and the backbone's are disjoint and together are all of them.
    ids = {id(p) for p in model.parameters()}
    reg, bb = {id(p) for p in model.regressor_parameters()}, {id(p) for p in model.backbone_parameters()}
    assert reg | bb == ids and not reg & bb
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.rotmat.shape == (1, 24, 3, 3) and torch.isfinite(out.rotmat).all()


def test_regressor_keys_and_shapes():
    reg = HMRRegressor(256)
    assert {k: tuple(v.shape) for k, v in reg.state_dict().items()} == spin_regressor_layout(256)
    model = HMR(tiny())
    keys = set(model.state_dict())
    assert set(spin_regressor_layout(256)) <= keys and {"conv1.weight", "layer4.0.bn2.running_mean"} <= keys
    assert not any(k.startswith(("backbone.", "_backbone.", "regressor.")) for k in keys)


def test_init_is_near_mean_params_and_valid():
    torch.manual_seed(0)
    model = HMR(tiny()).eval()
    mp = load_mean_params()
    x = torch.randn(4, 3, 128, 128)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, HMROutput)
    assert out.rotmat.shape == (4, 24, 3, 3) and out.betas.shape == (4, 10) and out.cam.shape == (4, 3)
    assert out.pose6d.shape == (4, 144)
    # gain-0.01 heads: after 3 iterations the output stays close to the mean parameters (what is
    # left, <= 0.1, comes mostly from the heads' default-initialised biases, as in SPIN).
    assert (out.pose6d - mp["pose"]).abs().max() < 0.2
    assert (out.betas - mp["shape"]).abs().max() < 0.2
    assert (out.cam - mp["cam"]).abs().max() < 0.2
    mean_rot = rot6d_to_matrix(mp["pose"].reshape(24, 6))
    assert (out.rotmat - mean_rot).abs().max() < 0.2
    torch.testing.assert_close(out.rotmat, rot6d_to_matrix(out.pose6d.reshape(4, 24, 6)))
    # Zero iterations return the mean parameters exactly; init_* overrides the starting point.
    with torch.no_grad():
        out0 = model(x, n_iter=0)
        start = torch.randn(4, 144)
        out1 = model(x, init_pose=start, n_iter=0)
    torch.testing.assert_close(out0.pose6d, mp["pose"].expand(4, -1))
    torch.testing.assert_close(out0.cam, mp["cam"].expand(4, -1))
    torch.testing.assert_close(out1.pose6d, start)
    # The heads are the only layers initialised with the small gain.
    assert model.decpose.weight.abs().max() < 0.01 * (6 / (1024 + 144)) ** 0.5 + 1e-9
    assert model.fc1.weight.abs().max() > 0.01
    # Heads with unit gain move far away from the mean: the small gain is what keeps the start.
    for head in (model.decpose, model.decshape, model.deccam):
        torch.nn.init.xavier_uniform_(head.weight, gain=1.0)
    with torch.no_grad():
        assert (model(x).pose6d - mp["pose"]).abs().max() > 1.0


def test_relu_flag_changes_outputs_not_keys():
    torch.manual_seed(1)
    a = HMR(tiny()).eval()
    b = HMR(tiny(), relu=True).eval()
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert not torch.allclose(oa.pose6d, ob.pose6d)
    assert build_hmr("tiny", relu=True).use_relu and not build_hmr("tiny").use_relu


def test_gradients_flow_and_train_mode():
    torch.manual_seed(2)
    model = HMR(tiny()).train()
    assert model.backbone.training and model.layer1.training and model.drop1.training
    out, c5 = model(torch.randn(2, 3, 64, 64), return_c5=True)
    assert c5.shape == (2, 256, 2, 2)
    loss = out.rotmat.square().sum() + out.betas.square().sum() + out.cam.square().sum()
    loss.backward()
    for name in ("conv1.weight", "layer4.0.conv2.weight", "fc1.weight", "fc2.weight", "decpose.weight",
                 "decshape.weight", "deccam.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    model.eval()
    assert not model.backbone.training and not model.layer1.training and not model.drop2.training
    # Dropout active in train mode only.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        e1, e2 = model(x).pose6d, model(x).pose6d
    torch.testing.assert_close(e1, e2)


def test_deepcopy_keeps_shared_layers():
    model = HMR(tiny())
    clone = copy.deepcopy(model)
    assert clone.layer1 is clone.backbone.layer1 and clone.layer1 is not model.layer1
    with torch.no_grad():
        clone.conv1.weight.zero_()
    assert clone.backbone.conv1.weight.abs().sum() == 0 and model.conv1.weight.abs().sum() > 0


def test_mean_params_sources(tmp_path):
    pose = np.tile(np.array([1, 0, 0, 1, 0, 0], np.float32), 24)
    src = {"pose": pose, "shape": np.ones(10), "cam": np.array([0.5, 0.1, -0.1])}
    path = tmp_path / "mp.npz"
    np.savez(path, **src)
    for s in (src, str(path), path):
        reg = HMRRegressor(8, mean_params=s)
        assert reg.init_pose.dtype == torch.float32
        torch.testing.assert_close(reg.init_cam, torch.tensor([[0.5, 0.1, -0.1]]))
    with pytest.raises(ValueError):
        HMRRegressor(8, mean_params={**src, "pose": pose[:100]})
