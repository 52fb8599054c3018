"""HoloPose network components: cluster files, Euler orders, neighbourhoods, the MoE layer (Eq. 2),
soft-argmax, heatmap decoding, and the network's forward / backward at the cpu scale."""
import math

import numpy as np
import pytest
import torch

from smplfast.body.random_model import SMPL_JOINT_NAMES, SMPL_PARENTS
from smplfast_train.heads.holopose import (
    HoloPoseNet,
    build_holopose,
    decode_heatmaps,
    densepose_iuv,
    gaussian_heatmaps,
    pool_features,
    soft_argmax_3d,
)
from smplfast_train.heads.moe import (
    FACE_POINTS,
    HOLOPOSE_KEYPOINTS,
    PartMoERotation,
    build_neighbourhoods,
    masked_softmax,
)
from smplfast_train.moe_clusters import (
    ORDER_TABLE,
    cluster_path,
    load_clusters,
    sample_rom_poses,
    wrap_check,
)
from smplfast_train.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix_per_joint,
    matrix_to_euler_per_joint,
)

torch.set_num_threads(1)
J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope="module")
def clusters():
    return load_clusters(32)


@pytest.fixture(scope="module")
def rom_rotations():
    # A 4k-pose slice of the range-of-motion set (same seeds as the stored files: both halves).
    aa, _ = sample_rom_poses(4000)
    return axis_angle_to_matrix(aa)


# ----------------------------------------------------------------------------------- cluster files


@pytest.mark.parametrize("K", [8, 32, 128])
def test_cluster_files_load(K):
    cl = load_clusters(K)
    assert cl.centers.shape == (23, K, 3) and cl.K == K
    assert all(o in ORDER_TABLE for o in cl.orders)
    assert cl.wrap_ok.all(), "every joint should pass the wrap-around check with its chosen order"
    assert int(cl.meta["n_poses"]) == 100_000
    assert int(cl.meta["n_uniform"]) == int(cl.meta["n_families"]) == 50_000
    assert str(cl.meta["sklearn_version"])
    # centres lie inside the data's per-component range
    assert (cl.centers >= cl.meta["euler_min"][:, None] - 1e-9).all()
    assert (cl.centers <= cl.meta["euler_max"][:, None] + 1e-9).all()


def test_cluster_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_moe_clusters"):
        load_clusters(tmp_path / "moe_clusters_K7.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_clusters(bad)
    with np.load(cluster_path(8)) as f:
        arrays = {k: f[k] for k in f.files}
    for key, value, msg in [
        ("centers", None, "missing key"),
        ("centers", np.full((23, 8, 3), np.nan), "finite"),
        ("centers", np.zeros((22, 8, 3)), r"\(23, K, 3\)"),
        ("orders", np.asarray(["XYZ"] * 22 + ["XXY"]), "unknown Euler orders"),
    ]:
        a = dict(arrays)
        if value is None:
            a.pop(key)
        else:
            a[key] = value
        p = tmp_path / f"bad_{key}.npz"
        np.savez(p, **a)
        with pytest.raises(ValueError, match=msg):
            load_clusters(p)


def test_euler_orders_on_cluster_data(clusters, rom_rotations):
    R = rom_rotations.to(torch.float64)
    e = matrix_to_euler_per_joint(R, clusters.orders)
    back = euler_to_matrix_per_joint(e, clusters.orders)
    assert (back - R).abs().max() < 1e-5
    mid = e[..., 1].abs().amax(0).rad2deg()
    assert (mid < 80).all(), dict(zip(SMPL_JOINT_NAMES[1:], mid.tolist()))
    # the centres themselves round-trip too
    C = torch.as_tensor(clusters.centers).permute(1, 0, 2)  # (K, 23, 3)
    assert (matrix_to_euler_per_joint(euler_to_matrix_per_joint(C, clusters.orders), clusters.orders) - C).abs().max() < 1e-6
    # the file's own check, on all 100k poses of the set
    stored = clusters.meta["max_middle_deg"][np.arange(23), clusters.meta["order_index"]]
    assert (stored < 80).all()
    for j in range(23):
        assert wrap_check(e[:, j].numpy())


def test_wrap_check_detects_crossing():
    t = np.linspace(-0.5, 0.5, 1001)
    ok = np.stack([t, t, t], 1)
    assert wrap_check(ok)
    crossing = ok.copy()
    crossing[:, 0] = np.angle(np.exp(1j * (math.pi + t)))  # an arc around ±π
    assert not wrap_check(crossing)


def test_euler_per_joint_matches_single_order():
    g = torch.Generator().manual_seed(0)
    ang = (torch.rand(5, 4, 3, generator=g, dtype=torch.float64) - 0.5) * 2
    orders = ["XYZ", "ZXY", "YZX", "XYZ"]
    R = euler_to_matrix_per_joint(ang, orders)
    from smplfast_train.rotations import euler_to_matrix

    for j, o in enumerate(orders):
        assert torch.allclose(R[:, j], euler_to_matrix(ang[:, j], o))
    assert torch.allclose(matrix_to_euler_per_joint(R, orders), ang)


# -------------------------------------------------------------------------------- neighbourhoods


def test_neighbourhoods_from_parents():
    nb = build_neighbourhoods(SMPL_PARENTS)
    body = {SMPL_JOINT_NAMES[i]: set(n) for i, n in enumerate(nb.body, start=1)}
    face = set(FACE_POINTS)
    assert HOLOPOSE_KEYPOINTS[24:] == ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
    for side in ("left", "right"):
        assert body[f"{side}_knee"] == {J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]}
        assert body[f"{side}_hand"] == {J[f"{side}_wrist"], J[f"{side}_hand"]}
        assert body[f"{side}_elbow"] == {J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"]}
    assert body["neck"] == {J["spine3"], J["neck"], J["head"]} | face
    assert body["head"] == {J["neck"], J["head"]} | face
    assert body["spine3"] == {J["spine2"], J["spine3"], J["neck"], J["left_collar"], J["right_collar"]}
    assert set(nb.root) == {J["pelvis"], J["left_hip"], J["right_hip"], J["spine1"], J["spine2"]}
    # generic rule, checked against the parents for every non-face joint
    for i in range(1, 24):
        expect = {int(SMPL_PARENTS[i]), i} | {c for c in range(24) if SMPL_PARENTS[c] == i}
        got = set(nb.body[i - 1]) - (face if SMPL_JOINT_NAMES[i] in ("neck", "head") else set())
        assert got == expect
        assert i in nb.body[i - 1]
    # every one of the 29 keypoints is used by some neighbourhood
    used = set(nb.root).union(*nb.body)
    assert used == set(range(29))
    assert nb.num_pairs == 76


# ------------------------------------------------------------------------------------- MoE layer


def _moe(clusters, D=8, seed=0, mode="moe"):
    torch.manual_seed(seed)
    m = PartMoERotation(D, clusters=clusters, mode=mode)
    with torch.no_grad():  # larger weights than the gain-0.01 initialisation: non-trivial mixtures
        for name, p in m.named_parameters():
            if name.endswith("weight"):
                p.normal_(0, 1.0)
    return m


def test_moe_inside_convex_hull(clusters):
    m = _moe(clusters)
    g = torch.Generator().manual_seed(1)
    f = torch.randn(64, 29, 8, generator=g)
    vis = torch.rand(64, 29, generator=g) < 0.6
    out = m(f, vis)
    lo = torch.as_tensor(clusters.centers.min(axis=1), dtype=torch.float32)
    hi = torch.as_tensor(clusters.centers.max(axis=1), dtype=torch.float32)
    e = out.euler
    seen = out.any_visible
    assert seen.any() and (~seen).any()
    assert ((e >= lo - 1e-5) & (e <= hi + 1e-5))[seen].all()
    assert (e[~seen] == 0).all()
    # the rotation is the Euler angles' matrix in the joint's order, root from the votes
    assert torch.allclose(out.rotmat[:, 1:], euler_to_matrix_per_joint(e, clusters.orders), atol=1e-6)
    eye = torch.eye(3)
    assert torch.allclose(out.rotmat @ out.rotmat.transpose(-1, -2), eye.expand_as(out.rotmat), atol=1e-5)
    # the logged mixture-of-experts reading reproduces theta
    recon = (out.expert_weights[..., None] * out.expert_euler).sum(2)
    assert torch.allclose(recon[seen], e[seen], atol=1e-5)


def test_moe_all_missing_is_identity_with_finite_gradients(clusters):
    for mode in ("moe", "direct6d", "direct_euler"):
        m = _moe(clusters, mode=mode)
        f = torch.randn(3, 29, 8, requires_grad=True)
        vis = torch.zeros(3, 29, dtype=torch.bool)
        vis[0] = True  # sample 0 fully visible, the others nothing
        vis[1, J["left_knee"]] = True  # sample 1: only the left knee's keypoint
        out = m(f, vis)
        eye = torch.eye(3).expand(23, 3, 3)
        assert torch.allclose(out.rotmat[2, 1:], eye, atol=1e-6)
        # sample 1: joints whose neighbourhood holds the left knee are regressed, the rest are identity
        holds = torch.tensor([J["left_knee"] in n for n in m.neighbourhoods.body])
        assert (out.any_visible[1] == holds).all()
        assert torch.allclose(out.rotmat[1, 1:][~holds], eye[~holds], atol=1e-6)
        assert not torch.allclose(out.rotmat[0, 1:], eye, atol=1e-3)
        # root: all missing -> the fallback (finite)
        assert not out.root_any_visible[1:].any()
        assert torch.allclose(out.rotmat[2, 0], out.rotmat[1, 0])
        loss = (out.rotmat * torch.randn(out.rotmat.shape, generator=torch.Generator().manual_seed(2))).sum()
        loss.backward()
        assert torch.isfinite(f.grad).all()
        assert (f.grad[2] == 0).all()  # nothing visible: no gradient reaches the features
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        assert m.root_fallback.grad is not None and m.root_fallback.grad.abs().sum() > 0


def test_masked_softmax_equals_dense_formula():
    """Eq. 2 on a tiny example, against explicit loops over (j, k)."""
    nb = build_neighbourhoods()
    K, D = 3, 2
    C = np.random.default_rng(0).uniform(-1, 1, size=(23, K, 3)).astype(np.float32).astype(np.float64)
    from smplfast_train.moe_clusters import MoEClusters

    cl = MoEClusters(C, ("XYZ",) * 23, np.ones(23, bool), {})
    torch.manual_seed(0)
    m = PartMoERotation(D, clusters=cl, mode="moe").double()
    with torch.no_grad():
        m.moe_weight.normal_()
        m.moe_bias.normal_()
    f = torch.randn(2, 29, D, dtype=torch.float64)
    vis = torch.rand(2, 29) < 0.5
    vis[:, J["left_knee"]] = True
    out = m(f, vis)
    W, b = m.moe_weight.detach(), m.moe_bias.detach()
    p = 0
    for i, n in enumerate(nb.body):
        for bi in range(2):
            num, den = np.zeros(3), 0.0
            for jj, kp in enumerate(n):
                w = (f[bi, kp] @ W[p + jj] + b[p + jj]).numpy()
                for k in range(K):
                    e = math.exp(w[k]) * float(vis[bi, kp])
                    num += e * C[i, k]
                    den += e
            expect = num / den if den > 0 else np.zeros(3)
            np.testing.assert_allclose(out.euler[bi, i].detach().numpy(), expect, atol=1e-10)
        p += len(n)
    # the helper itself
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    w, any_vis = masked_softmax(logits, mask)
    e = torch.exp(torch.tensor([0.5, 2.0]))
    assert torch.allclose(w[0], torch.stack([e[0], torch.tensor(0.0), e[1]]) / e.sum())
    assert (w[1] == 0).all() and any_vis.tolist() == [True, False]


# ---------------------------------------------------------------------------- dense-head utilities


def test_soft_argmax_of_delta_volume():
    D, H, W = 8, 6, 10
    vol = torch.zeros(2, 3, D, H, W)
    locs = [(1, 2, 3), (7, 0, 9), (4, 5, 0)]
    for j, (d, h, w) in enumerate(locs):
        vol[:, j, d, h, w] = 60.0
    xyz = soft_argmax_3d(vol, range_m=1.0)
    for j, (d, h, w) in enumerate(locs):
        expect = torch.tensor([(w + 0.5) / W * 2 - 1, (h + 0.5) / H * 2 - 1, (d + 0.5) / D * 2 - 1])
        assert torch.allclose(xyz[0, j], expect, atol=1e-5)
    assert torch.allclose(soft_argmax_3d(torch.zeros(1, 1, D, H, W)), torch.zeros(1, 1, 3), atol=1e-6)


def test_heatmap_peak_one_and_visibility_threshold():
    size = 32
    # keypoints on pixel centres, one on a quarter-pixel offset
    px = torch.tensor([[[10.5, 7.5], [20.5, 25.5], [5.75, 12.5]]])
    kp = px / size * 2 - 1
    hm = gaussian_heatmaps(kp, size, sigma=1.0)
    assert torch.allclose(hm.amax(dim=(-1, -2))[0, :2], torch.ones(2))
    xy, conf, vis = decode_heatmaps(hm)
    assert vis.all()
    assert torch.allclose(xy[0, :2], kp[0, :2], atol=1e-6)
    # the quarter-pixel shift toward the higher neighbour: 5.75 is decoded at 5.5 + 0.25
    assert torch.allclose(xy[0, 2], kp[0, 2], atol=1e-6)
    # threshold 0.4 on the maximum
    _, _, v = decode_heatmaps(hm * torch.tensor([0.39, 0.41, 1.0])[None, :, None, None])
    assert v.tolist() == [[False, True, True]]
    # invisible / outside the crop: zero maps, never visible
    hm2 = gaussian_heatmaps(torch.tensor([[[0.0, 0.0], [1.5, 0.0]]]), size, 1.0, visible=torch.tensor([[False, True]]))
    assert hm2.abs().max() == 0
    assert not decode_heatmaps(hm2)[2].any()
    # pooling at a decoded point samples that point: a linear ramp feature returns the x coordinate
    ramp = ((torch.arange(size) + 0.5) / size * 2 - 1).expand(1, 1, size, size).contiguous()
    assert torch.allclose(pool_features(ramp, xy)[0, :, 0], xy[0, :, 0], atol=1e-6)


def test_densepose_iuv():
    logits = torch.full((1, 25, 2, 2), -10.0)
    logits[0, 0, 0, 0] = 10.0  # background
    logits[0, 5, 0, 1] = 10.0
    logits[0, 24, 1, :] = 10.0
    uv = torch.rand(1, 24, 2, 2, 2)
    iuv = densepose_iuv(logits, uv)
    assert iuv[0, 0].tolist() == [[0, 5], [24, 24]]
    assert torch.allclose(iuv[0, 1:, 0, 1], uv[0, 4, :, 0, 1])
    assert (iuv[0, 1:, 0, 0] == 0).all()


# ------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("regressor", ["moe", "direct6d", "direct_euler", "global"])
def test_network_forward_backward_cpu_scale(regressor):
    torch.manual_seed(0)
    net = build_holopose("cpu", regressor=regressor)
    net.train()
    x = torch.randn(2, 3, 128, 128)
    gt = torch.zeros(2, 29, 3)
    gt[..., :2] = torch.rand(2, 29, 2) * 1.6 - 0.8
    gt[..., 2] = 1.0
    gt[1, :12, 2] = 0.0
    out = net(x, keypoints_gt=gt, pool_at="gt" if regressor != "global" else None)
    assert out.rotmat.shape == (2, 24, 3, 3)
    assert out.betas.shape == (2, 10) and out.cam.shape == (2, 3)
    assert out.heatmaps.shape == (2, 29, 32, 32)
    assert out.kp2d.shape == (2, 29, 2) and out.vis.shape == (2, 29) and out.vis.dtype == torch.bool
    assert out.volume.shape == (2, 24, 32, 32, 32) and out.joints3d.shape == (2, 24, 3)
    assert out.dp_logits.shape == (2, 25, 32, 32) and out.dp_uv.shape == (2, 24, 2, 32, 32)
    if regressor != "global":
        assert out.part_features.shape == (2, 29, 64)
        assert torch.equal(out.pool_vis, gt[..., 2] > 0)
    loss = (out.rotmat.sum() + out.betas.sum() + out.cam.sum() + out.heatmaps.square().mean()
            + out.joints3d.abs().mean() + out.dp_logits.mean() + out.dp_uv.mean())
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.backbone.conv1.weight.grad.abs().sum() > 0
    if regressor != "global":
        assert net.part_head.out.weight.grad.abs().sum() > 0  # pooled features reach the part head
        assert net.rotation_head.root_weight.grad.abs().sum() > 0


def test_network_initial_camera_and_pred_pooling():
    torch.manual_seed(0)
    # part-based: gain-0.01 output layers with zero biases; global: SPIN's HMR regressor, whose heads
    # keep PyTorch's default biases over 3 iterations (within 0.2, as in test_train_hmr.py)
    for regressor, tol in (("moe", 0.01), ("direct6d", 0.01), ("global", 0.2)):
        net = build_holopose("cpu", regressor=regressor).eval()
        with torch.no_grad():
            out = net(torch.randn(2, 3, 128, 128))
        assert torch.allclose(out.cam, torch.tensor([0.9, 0.0, 0.0]).expand(2, 3), atol=tol), out.cam
        assert out.betas.abs().max() < tol
        assert torch.isfinite(out.rotmat).all()
    # at initialisation the heatmaps are ~0: no joint visible, so the MoE gives the rest pose and the
    # root its (mean-parameter) fallback
    net = build_holopose("cpu", regressor="moe").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 128, 128))
    assert not out.vis.any() and not out.pool_vis.any()
    assert torch.allclose(out.rotmat[0, 1:], torch.eye(3).expand(23, 3, 3), atol=1e-6)
    with pytest.raises(ValueError, match="keypoints_gt"):
        net(torch.randn(1, 3, 128, 128), pool_at="gt")


def test_paper_tier_sizes():
    net = HoloPoseNet(backbone="tiny", head_channels=256, part_channels=256, depth_bins=64, clusters=32)
    assert net.rotation_head.moe_weight.shape == (76, 256, 32)
    from smplfast_train.heads.holopose import TIERS

    assert TIERS["paper"]["backbone"] == "resnet50" and TIERS["paper"]["img_res"] == 256
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 256, 256))
    assert out.heatmaps.shape[-2:] == (64, 64) and out.volume.shape == (1, 24, 64, 64, 64)


def test_wrap_failure_falls_back_to_votes_and_orders_are_checked(clusters):
    from smplfast_train.moe_clusters import MoEClusters

    ok = clusters.wrap_ok.copy()
    ok[[J["left_shoulder"] - 1, J["right_shoulder"] - 1]] = False
    cl = MoEClusters(clusters.centers, clusters.orders, ok, {})
    m = PartMoERotation(8, clusters=cl)
    assert m.vote_joints == (J["left_shoulder"] - 1, J["right_shoulder"] - 1)
    assert m.moe_weight.shape[0] == 76 - 6
    f = torch.randn(2, 29, 8)
    vis = torch.ones(2, 29, dtype=torch.bool)
    vis[1] = False
    out = m(f, vis)
    assert out.rotmat.shape == (2, 24, 3, 3) and out.expert_euler.shape[:2] == (2, 23)
    assert torch.allclose(out.rotmat[1, 1:], torch.eye(3).expand(23, 3, 3), atol=1e-6)
    assert (out.euler[:, J["left_shoulder"] - 1] == 0).all()
    # a state dict saved with other Euler orders is refused
    sd = PartMoERotation(8, clusters=clusters).state_dict()
    other = list(clusters.orders)
    other[0] = "XYZ" if other[0] != "XYZ" else "ZYX"
    m2 = PartMoERotation(8, clusters=MoEClusters(clusters.centers, tuple(other), clusters.wrap_ok, {}))
    with pytest.raises(ValueError, match="Euler orders"):
        m2.load_state_dict(sd)
    PartMoERotation(8, clusters=clusters).load_state_dict(sd)


def test_pool_at_mix_and_eval_default():
    torch.manual_seed(0)
    net = build_holopose("cpu", regressor="moe", pool_at="mix", mix_prob=1.0)
    gt = torch.zeros(2, 29, 3)
    gt[..., :2] = 0.25
    gt[..., 2] = 1.0
    gt[0, 3, 2] = 0.0
    gt[1, 4, 0] = 1.5  # outside the crop: not visible
    net.train()
    out = net(torch.randn(2, 3, 128, 128), keypoints_gt=gt)
    assert torch.equal(out.pool_xy, gt[..., :2].where(gt[..., :2].abs() <= 1, out.pool_xy))
    assert out.pool_vis.sum() == 2 * 29 - 2 and not out.pool_vis[0, 3] and not out.pool_vis[1, 4]
    net.mix_prob = 0.0
    out = net(torch.randn(2, 3, 128, 128), keypoints_gt=gt)
    assert torch.equal(out.pool_xy, out.kp2d) and torch.equal(out.pool_vis, out.vis)
    net.eval()  # eval mode pools at the predictions unless told otherwise
    net.mix_prob = 1.0
    with torch.no_grad():
        out = net(torch.randn(2, 3, 128, 128), keypoints_gt=gt)
    assert torch.equal(out.pool_xy, out.kp2d)
