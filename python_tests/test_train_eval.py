"""Tests for smplfast_train.eval (metrics, runner) and training/evaluate.py."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from smplfast.body.keypoints import CONVENTIONS
from smplfast.render import DENSEPOSE_TO_LSP6, BodyRenderer, PerspectiveCamera
from smplfast_train.eval import metrics as EM
from smplfast_train.eval.metrics import (
    H36M_TO_J14,
    H36M_TO_J17,
    J14_NAMES,
    MESH_METRICS,
    claim,
    fb_confusion,
    gt_body,
    joint_metrics,
    keypoint_2d_pck,
    load_eval_models,
    mesh_metrics,
    paired_difference,
    parts6_from_densepose,
    parts_confusion,
    pred_body,
    segmentation_metrics,
    segmentation_scores,
)
from smplfast_train.rotations import axis_angle_to_matrix

torch.set_num_threads(1)

TRAINING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training")
EVALUATE = os.path.join(TRAINING, "evaluate.py")

def _load_cli():
    """training/evaluate.py as a module (loaded from its path: the name 'evaluate' may be taken)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("smplfast_train_evaluate_cli", EVALUATE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


evaluate_cli = _load_cli()


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models():
    return load_eval_models()


@pytest.fixture(scope="module")
def renderer():
    return BodyRenderer.from_model()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from smplfast.data import generate

    out = tmp_path_factory.mktemp("tiny_eval") / "split"
    generate(out, num=4, size=96, workers=1, progress=False, densepose_points=0)
    return out


def random_pose(n, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    pose = scale * torch.randn(n, 72, generator=g, dtype=torch.float64)
    pose[:, :3] = torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64)  # upright in the camera frame
    betas = torch.randn(n, 10, generator=g, dtype=torch.float64)
    return pose, betas


# ------------------------------------------------------------------------------------- J14, pelvis
def test_j14_selection_is_spins():
    assert H36M_TO_J17 == (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
    assert H36M_TO_J14 == H36M_TO_J17[:14]
    # LSP's 14 joints, with the H36M head in place of LSP's head top (as in SPIN's evaluation).
    lsp = list(CONVENTIONS["lsp_14"])
    assert list(J14_NAMES[:13]) == lsp[:13]
    assert J14_NAMES[13] == "head_h36m" and lsp[13] == "head_top_lsp"
    assert CONVENTIONS["h36m_17"][0] == "pelvis_mpii"
    assert EM.H36M_PELVIS not in H36M_TO_J14


def test_joint_metrics_match_hand_computation():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 17, 3, generator=g, dtype=torch.float64) * 0.3
    gt = torch.randn(3, 17, 3, generator=g, dtype=torch.float64) * 0.3
    out = joint_metrics(pred, gt)
    p, q = pred.numpy(), gt.numpy()
    j14 = list(H36M_TO_J14)
    # The pelvis is regressor joint 0, taken before the 14 joints are selected.
    pc = p[:, j14] - p[:, [0]]
    qc = q[:, j14] - q[:, [0]]
    hand = np.linalg.norm(pc - qc, axis=-1).mean(axis=1) * 1000.0
    np.testing.assert_allclose(out["mpjpe"].numpy(), hand, rtol=1e-12)
    # Not the mid-point of the hips: that would give another number.
    hips = np.linalg.norm((p[:, j14] - p[:, [1, 4]].mean(1, keepdims=True))
                          - (q[:, j14] - q[:, [1, 4]].mean(1, keepdims=True)), axis=-1).mean(1) * 1000
    assert np.all(np.abs(hips - hand) > 1e-3)
    # Moving only the pelvis joint of the prediction by d moves all 14 centred joints by -d.
    d = torch.tensor([0.03, -0.04, 0.0], dtype=torch.float64)          # |d| = 50 mm
    moved = gt.clone()
    moved[:, 0] += d
    np.testing.assert_allclose(joint_metrics(moved, gt)["mpjpe"].numpy(), 50.0, rtol=1e-9)
    # A global translation and a similarity transform leave mpjpe / pa_mpjpe unchanged.
    R = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    sim = 1.3 * gt @ R.T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert float(joint_metrics(gt + 5.0, gt)["mpjpe"].abs().max()) < 1e-9
    assert float(joint_metrics(sim, gt)["pa_mpjpe"].abs().max()) < 1e-9
    assert float(joint_metrics(sim, gt)["pa_mpjpe_j17"].abs().max()) < 1e-9
    # PCK / AUC on J17 (pelvis-centred, MPI thresholds 0..150 mm in 5 mm steps), in %.
    j17 = list(H36M_TO_J17)
    d17 = np.linalg.norm((p[:, j17] - p[:, [0]]) - (q[:, j17] - q[:, [0]]), axis=-1) * 1000.0
    np.testing.assert_allclose(out["pck150"].numpy(), (d17 < 150).mean(1) * 100, rtol=1e-12)
    thr = np.linspace(0, 150, 31)
    np.testing.assert_allclose(out["auc"].numpy(), (d17[..., None] < thr).mean((1, 2)) * 100, rtol=1e-12)


# ---------------------------------------------------------------------------------- mesh metrics
def test_mesh_metrics_zero_for_ground_truth(models):
    pose, betas = random_pose(3)
    R = axis_angle_to_matrix(pose.reshape(3, 24, 3))
    out = mesh_metrics(R, betas, pose, betas, torch.full((3,), -1), models)
    assert set(out) == set(MESH_METRICS)
    for k in ("mpjpe", "pa_mpjpe", "pve", "pa_pve", "mpjpe_j17", "pa_mpjpe_j17"):
        assert float(out[k].abs().max()) < 1e-3, k            # mm
    assert float(out["rot_err"].abs().max()) < 1e-4
    for k in ("pck150", "pa_pck150"):
        assert torch.all(out[k] == 100.0)
    # AUC includes the 0 mm threshold, which no joint passes: 30/31 at best.
    np.testing.assert_allclose(out["auc"].numpy(), 100 * 30 / 31, rtol=1e-9)


def test_rot_err_equals_known_offset(models):
    pose, betas = random_pose(2, seed=3)
    R = axis_angle_to_matrix(pose.reshape(2, 24, 3))
    angle = 0.4
    axis = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64) / 3.0
    Q = axis_angle_to_matrix(angle * axis)
    all_off = R.clone()
    all_off[:, 1:] = R[:, 1:] @ Q
    out = mesh_metrics(all_off, betas, pose, betas, ["n", "n"], models)
    np.testing.assert_allclose(out["rot_err"].numpy(), math.degrees(angle), rtol=1e-9)
    one_off = R.clone()
    one_off[:, 5] = Q @ R[:, 5]
    out = mesh_metrics(one_off, betas, pose, betas, ["n", "n"], models)
    np.testing.assert_allclose(out["rot_err"].numpy(), math.degrees(angle) / 23, rtol=1e-9)
    # The global orientation is not part of rot_err.
    glob = R.clone()
    glob[:, 0] = Q @ R[:, 0]
    assert float(mesh_metrics(glob, betas, pose, betas, ["n", "n"], models)["rot_err"].abs().max()) < 1e-6


def test_gt_mesh_uses_gt_gender(models):
    if "female" not in models or "male" not in models:
        pytest.skip("the installation has no gendered default models")
    pose, betas = random_pose(3, seed=5)
    gv, gj = gt_body(pose, betas, torch.tensor([1, 0, -1]), models)
    for i, key in enumerate(("female", "male", "neutral")):
        o = models[key](betas=betas[i:i + 1], global_orient=pose[i:i + 1, :3], body_pose=pose[i:i + 1, 3:])
        torch.testing.assert_close(gv[i], o.vertices[0])
        torch.testing.assert_close(gj[i], o.joints[0])
    # Strings work too.
    gv2, _ = gt_body(pose, betas, ["f", "male", "n"], models)
    torch.testing.assert_close(gv2, gv)
    # The prediction (neutral) with the GT parameters differs from a female GT only by the model.
    R = axis_angle_to_matrix(pose.reshape(3, 24, 3))
    out = mesh_metrics(R, betas, pose, betas, torch.tensor([1, 1, 1]), models, return_bodies=True)
    pv, pj = pred_body(R, betas, models)
    fem = models["female"](betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
    hand = ((pv - pj[:, :1]) - (fem.vertices - fem.joints[:, :1])).norm(dim=-1).mean(1) * 1000
    torch.testing.assert_close(out["pve"], hand)
    assert float(out["pve"].min()) > 1.0                     # mm: the female body is not the neutral one
    assert float(out["rot_err"].abs().max()) < 1e-4
    # A gender without its model is an error, never a silent neutral substitute.
    only_neutral = {"neutral": models["neutral"]}
    with pytest.raises(ValueError, match="female"):
        gt_body(pose, betas, [1, 1, 1], only_neutral)


def test_non_finite_prediction_gives_nan(models):
    pose, betas = random_pose(2, seed=7)
    R = axis_angle_to_matrix(pose.reshape(2, 24, 3))
    R[1, 3, 0, 0] = float("nan")
    out = mesh_metrics(R, betas, pose, betas, [-1, -1], models)
    for k in MESH_METRICS:
        assert math.isfinite(float(out[k][0])), k
        assert math.isnan(float(out[k][1])), k


# ---------------------------------------------------------------------------------- segmentation
def test_segmentation_on_toy_masks():
    gt = torch.tensor([[[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    pred = torch.tensor([[[1, 0, 0], [1, 0, 0]]], dtype=torch.bool)
    c = fb_confusion(pred, gt)
    assert c.tolist() == [[[3, 1], [1, 1]]]                  # [gt, pred]
    s = segmentation_scores(c)
    assert s["acc"] == pytest.approx(100 * 4 / 6)
    # F1 = 2TP / (2TP + FP + FN): bg 6/8, fg 2/4.
    assert s["f1_per_class"] == pytest.approx([0.75, 0.5])
    assert s["f1"] == pytest.approx(0.625)
    # Dataset accumulation: F1 of the summed counts, not the mean of per-sample F1.
    gt2 = torch.tensor([[[1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    pred2 = torch.tensor([[[1, 1, 1], [1, 1, 0]]], dtype=torch.bool)
    cc = torch.cat([c, fb_confusion(pred2, gt2)])
    tot = segmentation_scores(cc)
    # Summed: bg tp 3, fp 1 + 1, fn 1; fg tp 1 + 5, fp 1, fn 1 + 1.
    assert tot["acc"] == pytest.approx(100 * 9 / 12)
    assert tot["f1_per_class"] == pytest.approx([6 / 9, 12 / 15])
    per_sample_f1_bg = [0.75, 0.0]                            # sample 2 has no bg pixel correct
    assert tot["f1_per_class"][0] != pytest.approx(np.mean(per_sample_f1_bg))
    # Parts: 7 classes.
    gp = torch.tensor([[[0, 1, 2, 3], [4, 5, 6, 6]]])
    pp = torch.tensor([[[0, 1, 2, 3], [4, 5, 5, 0]]])
    pc = parts_confusion(pp, gp)
    assert pc.shape == (1, 7, 7) and int(pc.sum()) == 8
    ps = segmentation_scores(pc)
    assert ps["acc"] == pytest.approx(100 * 6 / 8)
    # class 0: tp 1 fp 1 -> 2/3; 5: tp 1 fp 1 -> 2/3; 6: tp 0 fn 2 -> 0; others 1.
    assert ps["f1_per_class"] == pytest.approx([2 / 3, 1, 1, 1, 1, 2 / 3, 0])
    assert ps["f1"] == pytest.approx((2 / 3 + 4 + 2 / 3) / 7)
    with pytest.raises(ValueError):
        parts_confusion(pp + 2, gp)                           # label 7 is not a class


def test_parts6_is_the_renderers_map(renderer, models):
    assert parts6_from_densepose(torch.arange(25)).tolist() == DENSEPOSE_TO_LSP6.tolist()
    pose, betas = random_pose(1, seed=2)
    v, _ = gt_body(pose, betas, [-1], models)
    cam = PerspectiveCamera.crop_camera(torch.tensor([[0.0, 0.2, 30.0]], dtype=torch.float64), 5000.0, 64)
    maps = renderer.render(v, cam, 64, maps=("parts", "parts6"))
    assert int((maps["parts"] > 0).sum()) > 100
    torch.testing.assert_close(parts6_from_densepose(maps["parts"]), maps["parts6"])


def _gt_render_inputs(tiny_set, models, res=96):
    from smplfast.data import SPINDataset
    from smplfast_train.eval.runner import load_crop_parts24

    npz = os.path.join(tiny_set, "synth_spin.npz")
    ds = SPINDataset(npz, str(tiny_set), is_train=False, img_res=res, load_masks=True)
    items = [ds[i] for i in range(len(ds))]
    pose = torch.stack([it["pose"] for it in items]).double()
    betas = torch.stack([it["betas"] for it in items]).double()
    gender = torch.stack([it["gender"] for it in items])
    transl = torch.from_numpy(np.load(npz)["transl"]).double()
    K = torch.stack([it["cam_K"] for it in items]).double()
    verts, _ = gt_body(pose, betas, gender, models)
    verts = verts + transl[:, None]
    cam = PerspectiveCamera(focal=torch.stack([K[:, 0, 0], K[:, 1, 1]], 1), center=K[:, :2, 2])
    mask = torch.stack([it["mask"] for it in items])
    parts = torch.from_numpy(np.stack([load_crop_parts24(ds, i) for i in range(len(ds))]))
    return verts, cam, mask, parts


def test_rendering_gt_parameters_matches_gt_segmentation(tiny_set, models, renderer):
    verts, cam, mask, parts = _gt_render_inputs(tiny_set, models)
    out = segmentation_metrics(verts, cam, mask, parts, renderer)
    fb, ps = segmentation_scores(out["fb_confusion"]), segmentation_scores(out["parts_confusion"])
    # Only boundary pixels differ (the ground truth is warped into the crop with nearest sampling).
    assert fb["acc"] > 97.0 and fb["f1"] > 0.95
    assert ps["acc"] > 96.0 and ps["f1"] > 0.8
    assert torch.all(out["fb_acc"] > 96.0)
    # The per-sample accuracies are the per-sample confusions' (equal pixel counts: their mean is SPIN's).
    assert float(out["fb_acc"].mean()) == pytest.approx(fb["acc"])
    # A wrong camera scores clearly worse.
    shifted = PerspectiveCamera(focal=cam.focal, center=cam.center + 15.0)
    worse = segmentation_scores(segmentation_metrics(verts, shifted, mask, parts, renderer)["parts_confusion"])
    assert worse["acc"] < ps["acc"] - 3.0
    # Broken rows predict background and do not stop the others.
    bad = verts.clone()
    bad[0, 0, 0] = float("nan")
    out2 = segmentation_metrics(bad, cam, mask, parts, renderer)
    assert int(out2["fb_confusion"][0, :, 1].sum()) == 0
    torch.testing.assert_close(out2["fb_confusion"][1:], out["fb_confusion"][1:])


def test_keypoint_2d_pck():
    gt = torch.zeros(2, 4, 3)
    gt[..., 2] = 1.0
    gt[1, 3, 2] = 0.0                                         # invisible: not counted
    pred = torch.zeros(2, 4, 2)
    pred[0, 0, 0] = 0.049
    pred[0, 1, 0] = 0.051
    pred[1, 3, 1] = 1.0
    out = keypoint_2d_pck(pred, gt)
    assert out.tolist() == pytest.approx([75.0, 100.0])
    assert keypoint_2d_pck(pred, gt, threshold=0.06)[0] == pytest.approx(100.0)
    gt[1, :, 2] = 0.0
    assert math.isnan(float(keypoint_2d_pck(pred, gt)[1]))


# ---------------------------------------------------------------------------------- paired stats
def test_paired_difference_and_claim():
    rng = np.random.default_rng(0)
    n = 400
    b = rng.normal(50.0, 10.0, n)
    a = b - 2.0 + rng.normal(0.0, 1.0, n)                     # A better than B by 2
    d = paired_difference(a, b, n_boot=1000, seed=0)
    assert d.n == n and d.mean == pytest.approx(float((a - b).mean()))
    assert d.ci_low < d.mean < d.ci_high and d.ci_high < 0 and d.excludes_zero
    assert paired_difference(a, b, n_boot=1000, seed=0) == d  # deterministic
    assert json.loads(json.dumps(d)) == d.to_dict()           # a plain dict for reports
    # The CI of a null difference contains 0.
    z = paired_difference(rng.normal(0.0, 1.0, n), n_boot=1000, seed=1)
    assert z.ci_low < 0 < z.ci_high and not z.excludes_zero
    # NaN pairs are dropped.
    a2 = a.copy()
    a2[:10] = np.nan
    assert paired_difference(a2, b, n_boot=100).n == n - 10
    with pytest.raises(ValueError):
        paired_difference(a, b[:-1])

    seeds = [rng.normal(-1.0, 1.0, n) for _ in range(3)]
    c = claim(*seeds, n_boot=500)
    assert c["verdict"] == "reproduced" and c["sign"] == -1 and len(c["per_seed"]) == 3
    json.dumps(c)
    assert claim(seeds, n_boot=500)["verdict"] == "reproduced"        # a list of arrays works too
    assert claim(*seeds, n_boot=500, expected_sign=-1)["verdict"] == "reproduced"
    assert claim(*seeds, n_boot=500, expected_sign=1)["verdict"] == "not resolved"
    # One seed with the opposite sign: not resolved, whatever the pooled CI says.
    mixed = seeds[:2] + [rng.normal(0.5, 1.0, n)]
    c = claim(*mixed, n_boot=500)
    assert c["verdict"] == "not resolved" and c["sign"] == 0
    # Same sign everywhere but a pooled CI that contains 0: not resolved.
    weak = [np.array([-0.01, 1.0, -1.0, 0.0] * 5) for _ in range(2)]
    c = claim(*weak, n_boot=500)
    assert c["sign"] == -1 and c["pooled"]["ci_low"] < 0 < c["pooled"]["ci_high"]
    assert c["verdict"] == "not resolved"


# ---------------------------------------------------------------------------------- runner and CLI
EXPECTED_MEANS = set(MESH_METRICS) | {"pck2d", "fb_acc", "fb_f1", "parts_acc", "parts_f1"}


def test_evaluate_model_tiny_hmr(tiny_set, models, renderer):
    from smplfast_train.eval.runner import evaluate_model, format_table
    from smplfast_train.heads.hmr import build_hmr

    torch.manual_seed(0)
    model = build_hmr("tiny")
    model.train()
    res = evaluate_model(model, tiny_set, img_res=96, batch_size=3, models=models, renderer=renderer)
    assert model.training                                     # mode restored
    assert res["num"] == 4 and res["sample_index"] == [0, 1, 2, 3]
    assert res["split"] == os.path.basename(str(tiny_set))
    assert set(res["mean"]) == EXPECTED_MEANS
    assert set(res["per_sample"]) == set(MESH_METRICS) | {"pck2d", "fb_acc", "parts_acc"}
    for k, v in res["per_sample"].items():
        assert len(v) == 4 and all(math.isfinite(x) for x in v), k
    for k, v in res["mean"].items():
        assert math.isfinite(v), k
    assert np.array(res["confusion"]["fb"]).shape == (4, 2, 2)
    assert np.array(res["confusion"]["parts"]).shape == (4, 7, 7)
    assert np.array(res["confusion"]["parts"]).sum() == 4 * 96 * 96
    table = format_table({"tiny": res})
    assert "pa_mpjpe (mm)" in table and "| tiny | 4 |" in table
    # Without segmentation, and on a prefix of the split.
    r2 = evaluate_model(model, tiny_set, img_res=96, max_samples=2, segmentation=False, models=models)
    assert r2["num"] == 2 and "fb_acc" not in r2["mean"] and "confusion" not in r2
    assert r2["per_sample"]["pa_mpjpe"] == pytest.approx(res["per_sample"]["pa_mpjpe"][:2])


def test_evaluate_model_bad_split(tmp_path):
    from smplfast_train.eval.runner import evaluate_model
    from smplfast_train.heads.hmr import build_hmr

    with pytest.raises(FileNotFoundError, match="synth_spin.npz"):
        evaluate_model(build_hmr("tiny"), tmp_path, img_res=64)


def _save_ckpt(path, **extra):
    from smplfast_train.heads.hmr import build_hmr

    torch.manual_seed(1)
    m = build_hmr("tiny", relu=True, n_iter=2)
    cfg = {"backbone": "tiny", "img_res": 96, "hmr_relu": True, "hmr_iters": 2, "preset": "spin", "tier": "cpu"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg, "model": m.state_dict(), "step": 3, **extra}, path)
    return m


def test_evaluate_cli_end_to_end(tiny_set, tmp_path):
    ckpt = tmp_path / "run" / "ckpt" / "last.pt"
    _save_ckpt(ckpt, optimizer={"state": {}}, rng=np.random.get_state())
    out = tmp_path / "res.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, EVALUATE, "--ckpt", str(ckpt), "--split", str(tiny_set),
                           "--split", str(tiny_set), "--max-samples", "3", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pa_mpjpe (mm)" in proc.stdout and "parts_f1" in proc.stdout
    doc = json.loads(out.read_text())
    name = os.path.basename(str(tiny_set))
    assert set(doc["results"]) == {name, name + "_2"}
    r = doc["results"][name]
    assert r["num"] == 3 and len(r["per_sample"]["pa_mpjpe"]) == 3 and set(r["mean"]) == EXPECTED_MEANS
    assert doc["config"]["hmr_iters"] == 2 and doc["step"] == 3
    # Default output: RUN_DIR/eval/<ckpt name>.json; --no-seg drops the segmentation scores.
    assert evaluate_cli.main(["--ckpt", str(ckpt), "--split", str(tiny_set), "--max-samples", "2", "--no-seg"]) == 0
    doc2 = json.loads((tmp_path / "run" / "eval" / "last.json").read_text())
    assert "fb_acc" not in doc2["results"][name]["mean"]


def test_evaluate_cli_bad_inputs(tiny_set, tmp_path, capsys):
    def err(argv):
        assert evaluate_cli.main(argv) == 2
        return capsys.readouterr().err

    ok = tmp_path / "ok.pt"
    _save_ckpt(ok)
    assert "checkpoint not found" in err(["--ckpt", str(tmp_path / "none.pt"), "--split", str(tiny_set)])
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in err(["--ckpt", str(bad), "--split", str(tiny_set)])
    no_model = tmp_path / "no_model.pt"
    torch.save({"config": {"backbone": "tiny", "img_res": 96}}, no_model)
    assert "'model'" in err(["--ckpt", str(no_model), "--split", str(tiny_set)])
    no_cfg = tmp_path / "no_cfg.pt"
    torch.save({"model": {}}, no_cfg)
    assert "'config'" in err(["--ckpt", str(no_cfg), "--split", str(tiny_set)])
    not_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_dict)
    assert "expected a dict" in err(["--ckpt", str(not_dict), "--split", str(tiny_set)])
    wrong = tmp_path / "wrong.pt"
    torch.save({"config": {"backbone": "resnet18", "img_res": 96}, "model": torch.load(ok)["model"]}, wrong)
    assert "does not fit" in err(["--ckpt", str(wrong), "--split", str(tiny_set)])
    empty = tmp_path / "empty_split"
    empty.mkdir()
    assert "synth_spin.npz" in err(["--ckpt", str(ok), "--split", str(empty)])
