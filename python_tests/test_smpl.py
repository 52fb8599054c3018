"""smplfast.SMPL against smplx.SMPL on the same model file, plus the layer's own features."""
import math
import warnings

import numpy as np
import pytest
import torch

import smplfast
from smplfast.body import random_model, save_model

smplx = pytest.importorskip("smplx")

TOL = {torch.float32: 1e-5, torch.float64: 1e-9}
DEVICES = ["cpu"] + (["cuda"] if smplfast.cuda_available() else [])


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    """A random model of SMPL's size (6890 vertices, 207 dense pose features, 10 betas)."""
    path = tmp_path_factory.mktemp("models") / "SMPL_NEUTRAL.pkl"
    save_model(float32_exact(random_model(num_vertices=6890, num_betas=10, seed=11)), str(path))
    return str(path)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "small.pkl"
    save_model(float32_exact(random_model(num_vertices=300, num_betas=10, seed=12)), str(path))
    return str(path)


def float32_exact(model):
    """smplx rounds every model array through float32 even when asked for float64 (smplfast keeps the
    file's precision); arrays that are exact in float32 make both load identical buffers."""
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor"):
        setattr(model, key, getattr(model, key).astype(np.float32).astype(np.float64))
    w = model.weights.astype(np.float32).astype(np.float64)
    model.weights = w
    return model


def load_both(path, dtype, device="cpu", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smplx.SMPL(model_path=path, dtype=dtype, **kwargs).to(device)
    ours = smplfast.SMPL(model_path=path, dtype=dtype, **kwargs).to(device)
    return ref, ours


def hard_poses(B, dtype, seed=0):
    """Random poses with large rotations, plus joints exactly at 0, near 0 and near pi."""
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(B, 24, 3, generator=gen, dtype=dtype)
    pose = pose / pose.norm(dim=-1, keepdim=True) * torch.rand(B, 24, 1, generator=gen, dtype=dtype) * math.pi
    pose[0] = 0.0
    pose[1, :, :] = 1e-7
    axis = torch.tensor([0.6, -0.8, 0.0], dtype=dtype)
    pose[2, ::2] = axis * (math.pi - 1e-5)
    pose[2, 1::2] = -axis * (math.pi - 1e-3)
    betas = 2 * torch.randn(B, 10, generator=gen, dtype=dtype)
    transl = torch.randn(B, 3, generator=gen, dtype=dtype)
    return pose[:, 0], pose[:, 1:].reshape(B, 69), betas, transl


def grads_of(model, go, bp, betas, transl, gv, gj, **kw):
    leaves = [t.detach().clone().requires_grad_(True) for t in (go, bp, betas, transl)]
    out = model(global_orient=leaves[0], body_pose=leaves[1], betas=leaves[2], transl=leaves[3], **kw)
    ((out.vertices * gv).sum() + (out.joints * gj).sum()).backward()
    return out, [t.grad for t in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_equal_smplx(smpl_file, dtype, device):
    ref, ours = load_both(smpl_file, dtype, device)
    B = 8
    go, bp, betas, transl = (t.to(device) for t in hard_poses(B, dtype))
    gen = torch.Generator().manual_seed(3)
    # Upstream gradients scaled so that parameter gradients are O(1).
    gv = (torch.randn(B, 6890, 3, generator=gen, dtype=dtype) / 6890**0.5).to(device)
    gj = torch.randn(B, 45, 3, generator=gen, dtype=dtype).to(device)
    out_ref, g_ref = grads_of(ref, go, bp, betas, transl, gv, gj)
    out, g = grads_of(ours, go, bp, betas, transl, gv, gj)
    assert out.vertices.shape == out_ref.vertices.shape == (B, 6890, 3)
    assert out.joints.shape == out_ref.joints.shape == (B, 45, 3)
    tol = TOL[dtype]
    assert (out.vertices - out_ref.vertices).abs().max().item() <= tol
    assert (out.joints - out_ref.joints).abs().max().item() <= tol
    for name, a, b in zip(("global_orient", "body_pose", "betas", "transl"), g, g_ref):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= tol * scale, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotation_matrix_input_equals_smplx(smpl_file, dtype):
    ref, ours = load_both(smpl_file, dtype)
    go, bp, betas, transl = hard_poses(4, dtype, seed=5)
    R = smplfast.ops.rodrigues_reference(torch.cat([go[:, None], bp.view(4, 23, 3)], dim=1))
    kw = dict(global_orient=R[:, :1], body_pose=R[:, 1:], betas=betas, transl=transl, pose2rot=False)
    out_ref, out = ref(**kw), ours(**kw)
    assert (out.vertices - out_ref.vertices).abs().max().item() <= TOL[dtype]
    assert (out.joints - out_ref.joints).abs().max().item() <= TOL[dtype]
    # Flattened matrices work as in smplx.
    out_flat = ours(global_orient=R[:, :1].reshape(4, 9), body_pose=R[:, 1:].reshape(4, 207), betas=betas,
                    transl=transl, pose2rot=False)
    torch.testing.assert_close(out_flat.vertices, out.vertices)


def test_output_fields_and_defaults_match_smplx(smpl_file):
    ref, ours = load_both(smpl_file, torch.float32, batch_size=3)
    out_ref, out = ref(return_full_pose=True), ours(return_full_pose=True)
    assert list(out.keys()) == list(out_ref.keys())
    for key in out.keys():
        a, b = out[key], out_ref[key]
        assert (a is None) == (b is None), key
        if a is not None:
            assert a.shape == b.shape, key
            assert (a - b).abs().max().item() <= 1e-5, key
    assert ours.num_betas == ref.num_betas == 10
    assert ours.get_num_verts() == ref.get_num_verts() and ours.get_num_faces() == ref.get_num_faces()
    assert np.array_equal(ours.faces, ref.faces)
    for name in ("shapedirs", "posedirs", "v_template", "J_regressor", "parents", "lbs_weights", "faces_tensor"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=name)
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in ref.named_parameters())


def test_joints_only_path_equals_full_forward(smpl_file):
    model = smplfast.SMPL(model_path=smpl_file, dtype=torch.float64)
    go, bp, betas, transl = hard_poses(6, torch.float64, seed=7)
    full = model(global_orient=go, body_pose=bp, betas=betas, transl=transl)
    fast = model(global_orient=go, body_pose=bp, betas=betas, transl=transl, joints_only=True)
    no_verts = model(global_orient=go, body_pose=bp, betas=betas, transl=transl, return_verts=False)
    assert fast.vertices is None and no_verts.vertices is None
    torch.testing.assert_close(fast.joints, full.joints, atol=1e-12, rtol=0)
    torch.testing.assert_close(no_verts.joints, full.joints, atol=1e-12, rtol=0)
    # Gradients through the joints-only path equal those of the full path.
    leaves = [t.clone().requires_grad_(True) for t in (go, bp, betas, transl)]
    fast_leaves = [t.clone().requires_grad_(True) for t in (go, bp, betas, transl)]
    g = torch.randn_like(full.joints)
    (model(*[], global_orient=leaves[0], body_pose=leaves[1], betas=leaves[2], transl=leaves[3]).joints * g).sum().backward()
    (model(global_orient=fast_leaves[0], body_pose=fast_leaves[1], betas=fast_leaves[2], transl=fast_leaves[3],
           joints_only=True).joints * g).sum().backward()
    for a, b in zip(leaves, fast_leaves):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)


def test_joint_mapper_and_v_template_like_smplx(smpl_file):
    class Mapper(torch.nn.Module):
        def forward(self, joints):
            return 0.5 * joints[:, [16, 17, 30, 0]]  # not translation-equivariant on purpose

    template = random_model(num_vertices=6890, num_betas=10, seed=99).v_template.astype(np.float32).astype(np.float64)
    ref, ours = load_both(smpl_file, torch.float64, joint_mapper=Mapper(), v_template=template)
    go, bp, betas, transl = hard_poses(3, torch.float64, seed=8)
    kw = dict(global_orient=go, body_pose=bp, betas=betas, transl=transl)
    out_ref, out = ref(**kw), ours(**kw)
    assert out.joints.shape == (3, 4, 3)
    assert (out.joints - out_ref.joints).abs().max().item() <= 1e-9
    assert (out.vertices - out_ref.vertices).abs().max().item() <= 1e-9


def test_feet_and_hands_flags(smpl_file):
    ref, ours = load_both(smpl_file, torch.float64, use_hands=False, use_feet_keypoints=True)
    assert ours().joints.shape == ref().joints.shape == (1, 35, 3)
    ref, ours = load_both(smpl_file, torch.float64, use_hands=False, use_feet_keypoints=False)
    assert ours().joints.shape == ref().joints.shape == (1, 29, 3)


def test_other_vertex_counts_have_skeleton_joints_only(small_file):
    model = smplfast.SMPL(model_path=small_file)
    out = model(body_pose=torch.randn(2, 69) * 0.3)
    assert out.vertices.shape == (2, 300, 3) and out.joints.shape == (2, 24, 3)


def test_extra_joint_regressor(small_file):
    gen = torch.Generator().manual_seed(0)
    R = torch.zeros(3, 300, dtype=torch.float64)
    R[0, [5, 9, 100]] = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    R[1, 42] = 1.0
    R[2, [7, 250]] = 0.5
    model = smplfast.SMPL(model_path=small_file, dtype=torch.float64, extra_joint_regressor=R)
    bp = torch.randn(2, 69, generator=gen, dtype=torch.float64) * 0.5
    out = model(body_pose=bp.clone(), betas=torch.randn(2, 10, dtype=torch.float64))
    assert out.joints.shape == (2, 27, 3)
    torch.testing.assert_close(out.joints[:, 24:], torch.einsum("ev,bvc->bec", R, out.vertices))
    fast = model(body_pose=bp, betas=out.betas, joints_only=True)
    torch.testing.assert_close(fast.joints, out.joints, atol=1e-12, rtol=0)


def test_batch_broadcast_and_empty_batch(small_file):
    model = smplfast.SMPL(model_path=small_file, dtype=torch.float64)
    bp = torch.randn(5, 69, dtype=torch.float64) * 0.3
    betas = torch.randn(1, 10, dtype=torch.float64)
    out = model(body_pose=bp, betas=betas)  # betas, global_orient and transl broadcast from batch 1
    each = model(body_pose=bp[3:4], betas=betas)
    torch.testing.assert_close(out.vertices[3:4], each.vertices)
    empty = model(body_pose=bp[:0], betas=torch.zeros(0, 10, dtype=torch.float64),
                  global_orient=torch.zeros(0, 3, dtype=torch.float64), transl=torch.zeros(0, 3, dtype=torch.float64))
    assert empty.vertices.shape == (0, 300, 3) and empty.joints.shape == (0, 24, 3)


def test_smpl_layer_requires_no_parameters(small_file):
    layer = smplfast.body.SMPLLayer(model_path=small_file)
    assert len(list(layer.parameters())) == 0
    out = layer(body_pose=torch.zeros(4, 69), pose2rot=True)
    assert out.vertices.shape == (4, 300, 3)
    rot = layer(body_pose=torch.eye(3).expand(4, 23, 3, 3))
    torch.testing.assert_close(rot.vertices, out.vertices)


def test_smpl_layer_takes_rotation_matrices_by_default_as_smplx(small_file):
    """smplx.SMPLLayer's forward takes rotation matrices (pose2rot=False); so does smplfast's."""
    import inspect

    from smplfast.body.samplers import axis_angle_to_matrix

    layer = smplfast.body.SMPLLayer(model_path=small_file)
    model = smplfast.SMPL(model_path=small_file)
    g = torch.Generator().manual_seed(0)
    aa = 0.4 * torch.randn(3, 24, 3, generator=g)
    R = axis_angle_to_matrix(aa)
    betas = torch.randn(3, 10, generator=g)
    got = layer(betas=betas, global_orient=R[:, 0], body_pose=R[:, 1:])  # (B, 3, 3) and (B, 23, 3, 3), as smplx
    want = model(betas=betas, global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(3, 69))
    torch.testing.assert_close(got.vertices, want.vertices, atol=1e-5, rtol=1e-5)
    # smplx's layer takes matrices whatever pose2rot says (its default is True); so does this one
    torch.testing.assert_close(layer(betas=betas, global_orient=R[:, :1], body_pose=R[:, 1:].reshape(3, 207)).vertices,
                               want.vertices, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(betas=betas, global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(3, 69)).vertices,
                               want.vertices, atol=1e-5, rtol=1e-5)  # axis-angle is read from its shape
    smplx = pytest.importorskip("smplx")
    assert "pose2rot" in inspect.signature(smplx.SMPLLayer.forward).parameters


def test_compile_fullgraph(small_file):
    model = smplfast.SMPL(model_path=small_file)

    def fn(body_pose, betas):
        out = model(body_pose=body_pose, betas=betas)
        return out.vertices, out.joints

    bp, betas = torch.randn(3, 69) * 0.3, torch.randn(3, 10)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(bp, betas), fn(bp, betas)):
        torch.testing.assert_close(a, b)


def test_bad_inputs_give_clear_errors(small_file):
    model = smplfast.SMPL(model_path=small_file)
    with pytest.raises(ValueError, match=r"body_pose must be \(B, 69\) with B = 2 \(or 1\); got \(2, 66\)"):
        model(body_pose=torch.zeros(2, 66), global_orient=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"betas must be \(B, 10\)"):
        model(betas=torch.zeros(1, 11))
    with pytest.raises(ValueError, match="different batch sizes.*'global_orient': 3, 'body_pose': 2"):
        model(body_pose=torch.zeros(2, 69), global_orient=torch.zeros(3, 3))
    with pytest.raises(TypeError, match="model's dtype torch.float32; got torch.float64"):
        model(body_pose=torch.zeros(1, 69, dtype=torch.float64))
    bad = torch.zeros(2, 69)
    bad[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"body_pose contains NaN or Inf \(first at index \(1, 4\)"):
        model(body_pose=bad)
    with pytest.raises(ValueError, match="transl contains NaN"):
        model(transl=torch.tensor([[0.0, float("inf"), 0.0]]))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model(body_pose=np.zeros((1, 69), dtype=np.float32))
    with pytest.raises(ValueError, match="gender must be one of"):
        smplfast.SMPL(gender="child")  # no model_path: the bundled model has no such gender
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        smplfast.SMPL(model_path=small_file, dtype=torch.float16)


def test_zero_pose_blend_shapes_are_skipped_and_still_equal_smplx(tmp_path):
    model = float32_exact(random_model(num_vertices=6890, num_betas=10, seed=21))
    model.posedirs = np.zeros_like(model.posedirs)
    path = str(tmp_path / "no_posedirs.pkl")
    save_model(model, path)
    ref, ours = load_both(path, torch.float64)
    assert not ours._has_pose_blend
    go, bp, betas, transl = hard_poses(4, torch.float64, seed=4)
    gv = torch.randn(4, 6890, 3, dtype=torch.float64) / 6890**0.5
    gj = torch.randn(4, 45, 3, dtype=torch.float64)
    out_ref, g_ref = grads_of(ref, go, bp, betas, transl, gv, gj)
    out, g = grads_of(ours, go, bp, betas, transl, gv, gj)
    assert (out.vertices - out_ref.vertices).abs().max().item() <= 1e-9
    assert (out.joints - out_ref.joints).abs().max().item() <= 1e-9
    for a, b in zip(g, g_ref):
        assert (a - b).abs().max().item() <= 1e-9 * max(1.0, b.abs().max().item())
    # Shared shape (betas of batch 1): one rest mesh broadcast to every sample.
    one = ours(body_pose=bp, betas=betas[:1], global_orient=go, transl=transl)
    each = ours(body_pose=bp, betas=betas[:1].expand(4, -1).contiguous(), global_orient=go, transl=transl)
    torch.testing.assert_close(one.vertices, each.vertices, atol=1e-12, rtol=0)


def test_data_struct_and_npz_and_folder_loading(tmp_path, small_file):
    from smplfast.body import load_model

    data = load_model(small_file)
    npz = tmp_path / "SMPL_FEMALE.npz"
    save_model(data, str(npz))
    a = smplfast.SMPL(data_struct=data)
    b = smplfast.SMPL(model_path=str(tmp_path), gender="female", ext="npz")
    c = smplfast.SMPL(model_path=small_file)
    bp = torch.randn(2, 69) * 0.4
    for m in (b, c):
        torch.testing.assert_close(m(body_pose=bp).vertices, a(body_pose=bp).vertices)
    with pytest.raises(FileNotFoundError, match="SMPL_MALE.npz"):
        smplfast.SMPL(model_path=str(tmp_path), gender="male", ext="npz")


def test_non_finite_template_regressor_and_negative_num_betas_are_rejected():
    base = smplfast.SMPL()
    tpl = base.v_template.clone()
    tpl[3, 1] = float("nan")
    with pytest.raises(ValueError, match="v_template contains NaN or Inf"):
        smplfast.SMPL(v_template=tpl)
    reg = torch.zeros(2, tpl.shape[0])
    reg[1, 0] = float("inf")
    with pytest.raises(ValueError, match="extra_joint_regressor contains NaN or Inf .*row 1"):
        smplfast.SMPL(extra_joint_regressor=reg)
    with pytest.raises(ValueError, match="num_betas must be an integer >= 0"):
        smplfast.SMPL(num_betas=-5)


@pytest.mark.parametrize("gender", ["neutral", "female", "male"])
def test_smplx_loads_the_default_model_with_its_vertex_ids(gender):
    """smplx.SMPL on the bundled files with smplx_vertex_ids(gender) gives smplfast's 45 joints; without
    the table its 21 vertex joints land on unrelated vertices."""
    smplx = pytest.importorskip("smplx")
    from smplfast.body import default_model_dir, smplx_vertex_ids

    g = torch.Generator().manual_seed(1)
    bp, go, betas = 0.3 * torch.randn(3, 69, generator=g), 0.3 * torch.randn(3, 3, generator=g), torch.randn(3, 10, generator=g)
    ours = smplfast.SMPL(gender=gender)(body_pose=bp, global_orient=go, betas=betas).joints
    assert ours.shape == (3, 45, 3)
    theirs = smplx.SMPL(str(default_model_dir()), gender=gender, vertex_ids=smplx_vertex_ids(gender))
    torch.testing.assert_close(theirs(body_pose=bp, global_orient=go, betas=betas).joints, ours, atol=1e-5, rtol=0)
    plain = smplx.SMPL(str(default_model_dir()), gender=gender)(body_pose=bp, global_orient=go, betas=betas).joints
    assert float((plain[:, 24:] - ours[:, 24:]).norm(dim=-1).max()) > 0.3
