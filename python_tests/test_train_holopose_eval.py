"""Tests for smplfast_train.eval.holopose: evaluate_holopose on a tiny synthetic split with an untrained
HoloPose network and with an "oracle" module whose outputs are the ground truth (which checks the
units and frames of every branch and of the refinement inputs), non-finite outputs, clamping and
missing files."""
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from smplfast_train.eval.holopose import (
    CONFIGS,
    HoloPoseEvalSet,
    dp_branch_errors,
    evaluate_holopose,
    network_refine_inputs,
)
from smplfast_train.heads.holopose import HoloPoseOutput, build_holopose, decode_heatmaps, gaussian_heatmaps
from smplfast_train.rotations import axis_angle_to_matrix

torch.set_num_threads(1)

NUM = 5
RES = 128   # network input
HM = 32     # heatmap / DensePose map side (RES / 4)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from smplfast.data import generate

    out = tmp_path_factory.mktemp("holopose_eval") / "split"
    generate(out, num=NUM, size=128, workers=1, progress=False, densepose_points=100)
    return out


@pytest.fixture(scope="module")
def eval_set(split):
    return HoloPoseEvalSet(split, NUM, verbose=False)


@pytest.fixture(scope="module")
def untrained(split, eval_set):
    torch.manual_seed(0)
    net = build_holopose("cpu")
    # num larger than the split: clamped to its 5 people.
    return evaluate_holopose(net, split, num=50, img_res=RES, eval_set=eval_set, configs=("base", "kps3d_dp"),
                             batch_size=3)


class OracleNet(nn.Module):
    """Returns the ground truth of the split's first n people as a HoloPoseOutput, in order, B at a
    time (the images are ignored): GT rotations and betas, the evaluation set's fitted weak camera,
    root-relative skeleton joints, Gaussian heatmaps of the exact 2D skeleton joints, DensePose logits
    and U, V from the ground-truth IUV crop read at the heatmap pixel centres. ``nan_index``: a person
    whose betas are NaN."""

    def __init__(self, eval_set, split, nan_index=None):
        super().__init__()
        from smplfast.data.datasets import SPINDataset

        n = eval_set.n
        self.n, self.ptr = n, 0
        self.rotmat = axis_angle_to_matrix(eval_set.pose.reshape(n, 24, 3)).float()
        self.betas = eval_set.betas.float().clone()
        if nan_index is not None:
            self.betas[nan_index] = float("nan")
        self.cam = eval_set.gt_cam.float()
        self.joints3d = (eval_set.j3d - eval_set.j3d[:, :1]).float()
        kp = torch.zeros(n, 29, 2, dtype=torch.float64)
        vis = torch.zeros(n, 29, dtype=torch.bool)
        kp[:, :24] = eval_set.to_crop(eval_set.j2d_px[..., :2])
        vis[:, :24] = eval_set.j2d_px[..., 2] > 0
        self.heatmaps = gaussian_heatmaps(kp, HM, sigma=1.0, visible=vis).float()
        ds = SPINDataset(os.path.join(split, "synth_spin.npz"), str(split), is_train=False, img_res=RES,
                         load_iuv=True)
        centre = torch.arange(HM) * (RES // HM) + (RES // HM) // 2        # crop pixel under each map pixel centre
        iuv = torch.stack([ds[i]["iuv"][:, centre][:, :, centre] for i in range(n)])  # (n, 3, HM, HM)
        part = iuv[:, 0].round().long()
        self.dp_logits = 30.0 * nn.functional.one_hot(part, 25).permute(0, 3, 1, 2).float()
        uv = torch.zeros(n, 24, 2, HM, HM)
        fg = part > 0
        b, r, c = fg.nonzero(as_tuple=True)
        uv[b, part[b, r, c] - 1, :, r, c] = iuv[b, 1:, r, c]
        self.dp_uv = uv

    def forward(self, images):
        B = images.shape[0]
        sl = slice(self.ptr, self.ptr + B)
        self.ptr = (self.ptr + B) % self.n
        kp2d, conf, vis = decode_heatmaps(self.heatmaps[sl])
        return HoloPoseOutput(rotmat=self.rotmat[sl], betas=self.betas[sl], cam=self.cam[sl],
                              heatmaps=self.heatmaps[sl], kp2d=kp2d, kp_conf=conf, vis=vis,
                              volume=torch.zeros(B, 24, 1, 1, 1), joints3d=self.joints3d[sl],
                              dp_logits=self.dp_logits[sl], dp_uv=self.dp_uv[sl])


@pytest.fixture(scope="module")
def oracle(split, eval_set):
    return evaluate_holopose(OracleNet(eval_set, split), split, num=NUM, img_res=RES, eval_set=eval_set,
                             configs=("base", "kps3d_dp", "dp"), batch_size=2, seed=1)


GROUPS = {
    "model": ("pa_mpjpe", "mpjpe", "pa_mpjpe24", "fr10", "auc10", "auc30"),
    "branch3d": ("pa_mpjpe24", "mpjpe24"),
    "branch_dp": ("dp_branch_fr10", "dp_branch_auc10", "dp_branch_auc30"),
    "branch2d": ("pck",),
}


# ------------------------------------------------------------------------------------------- tests
def test_untrained_network_runs(untrained):
    r = untrained
    assert r["num"] == NUM  # clamped
    for group, keys in GROUPS.items():
        for k in keys:
            v = np.asarray(r[group][k])
            assert v.shape == (NUM,), (group, k)
            assert np.isfinite(v).all(), (group, k, v)
            assert np.isfinite(r["mean"][f"{group}/{k}"])
    assert set(r["refine"]) == {"base", "kps3d_dp"}
    for c in r["refine"]:
        for k in ("pa_mpjpe", "fr10", "iterations"):
            assert len(r["refine"][c][k]) == NUM
    # base = no refinement = the model's own numbers.
    np.testing.assert_array_equal(r["refine"]["base"]["pa_mpjpe"], r["model"]["pa_mpjpe"])
    assert r["nonfinite"] == []
    assert r["time_s"]["refine_per_person_iter"]["base"] is None
    assert r["time_s"]["refine_per_person_iter"]["kps3d_dp"] > 0
    json.loads(json.dumps(r))  # serialisable
    # An untrained network is far from the ground truth.
    assert r["mean"]["model/pa_mpjpe"] > 50 and r["mean"]["branch_dp/dp_branch_fr10"] > 50


def test_oracle_recovers_ground_truth(oracle, untrained, eval_set):
    m = oracle["mean"]
    assert m["model/pa_mpjpe"] < 1.0 and m["model/pa_mpjpe24"] < 1.0
    assert m["branch3d/pa_mpjpe24"] < 1.0 and m["branch3d/mpjpe24"] < 1.0
    # The model's reprojection with the fitted GT camera is the floor of the RCP metric.
    floor, _ = eval_set.evaluate(eval_set.pose, eval_set.betas, eval_set.gt_cam)
    assert m["model/fr10"] == pytest.approx(float(np.mean(floor["fr10"])), abs=0.5)
    # DensePose branch: the ground-truth IUV at heatmap resolution (32² over the crop) is much better than
    # an untrained head; its errors are the quantisation to map pixels.
    assert m["branch_dp/dp_branch_fr10"] < 30.0
    assert m["branch_dp/dp_branch_fr10"] < untrained["mean"]["branch_dp/dp_branch_fr10"] - 40
    assert m["branch_dp/dp_branch_auc10"] > 0.5
    # 2D branch: Gaussian heatmaps of the exact joints decode to within a quarter map pixel.
    assert m["branch2d/pck"] > 95.0
    # Refining from the ground truth with exact 3D keypoints and oracle DensePose stays close to it.
    assert m["refine/kps3d_dp/pa_mpjpe"] < 10.0
    assert m["refine/dp/pa_mpjpe"] < 25.0
    assert m["refine/kps3d_dp/fr10"] < m["model/fr10"] + 10.0


def test_nonfinite_output_gives_nan_for_that_person(split, eval_set):
    r = evaluate_holopose(OracleNet(eval_set, split, nan_index=1), split, num=NUM, img_res=RES, eval_set=eval_set,
                          configs=("kps3d",), batch_size=4)
    assert r["nonfinite"] == [1]
    ok = [0, 2, 3, 4]
    for group, keys in GROUPS.items():
        for k in keys:
            v = np.asarray(r[group][k])
            assert math.isnan(v[1]), (group, k)
            assert np.isfinite(v[ok]).all(), (group, k)
    v = np.asarray(r["refine"]["kps3d"]["pa_mpjpe"])
    assert math.isnan(v[1]) and np.isfinite(v[ok]).all() and v[ok].max() < 10.0
    assert np.isfinite(r["mean"]["model/pa_mpjpe"])


def test_dp_branch_reads_the_map_pixel_holding_each_point(eval_set):
    # A map that is background everywhere gives no prediction at any point.
    n = eval_set.n
    iuv = torch.zeros(n, 3, 8, 8)
    assert np.isinf(dp_branch_errors(eval_set, iuv)).all()
    # The GT (I, U, V) of one evaluation point written into the map pixel holding it: that point is exact.
    k = 7
    i = int(eval_set.eval_owner[k])
    u = (torch.from_numpy(eval_set.eval_px[k]) - eval_set.center[i]) / eval_set.half[i]
    col, row = int((u[0] + 1) * 4), int((u[1] + 1) * 4)
    iuv[i, 0, row, col] = float(eval_set.eval_part[k])
    iuv[i, 1:, row, col] = torch.from_numpy(eval_set.eval_uv[k]).float()
    err = dp_branch_errors(eval_set, iuv)
    assert err[k] < 1e-3
    with pytest.raises(ValueError):
        dp_branch_errors(eval_set, iuv[:2])


def test_network_refine_inputs_units():
    n = 2
    iuv = torch.zeros(n, 3, 4, 8)
    iuv[0, 0, 0, 0] = 3  # row 0, column 0 of a 4 x 8 map
    iuv[0, 1:, 0, 0] = torch.tensor([0.25, 0.75])
    iuv[1, 0, 3, 7] = 24
    kp_conf = torch.tensor([[0.9] * 12 + [0.3] * 12, [0.5] * 24])
    j3 = torch.randn(n, 24, 3, dtype=torch.float64) + 5.0
    out = network_refine_inputs(torch.zeros(n, 72), torch.zeros(n, 10), torch.ones(n, 3), torch.zeros(n, 24, 2),
                                kp_conf, j3, iuv, kp_threshold=0.4, dp_points=10,
                                generator=torch.Generator().manual_seed(0))
    pts = out["iuv"]
    assert pts.mask.sum(1).tolist() == [1, 1]
    xy0 = pts.xy[0][pts.mask[0]][0]
    xy1 = pts.xy[1][pts.mask[1]][0]
    torch.testing.assert_close(xy0, torch.tensor([0.5 / 8 * 2 - 1, 0.5 / 4 * 2 - 1]))
    torch.testing.assert_close(xy1, torch.tensor([7.5 / 8 * 2 - 1, 3.5 / 4 * 2 - 1]))
    assert pts.part[0][pts.mask[0]].tolist() == [3]
    assert out["kp2d"].shape == (n, 24, 3) and out["kp3d"].shape == (n, 24, 4)
    assert out["kp2d"][0, :12, 2].tolist() == pytest.approx([0.9] * 12)
    assert out["kp2d"][0, 12:, 2].tolist() == [0.0] * 12
    torch.testing.assert_close(out["kp3d"][..., :3], j3 - j3[:, :1])
    assert (out["kp3d"][..., 3] == 1).all()


def test_bad_inputs(split, eval_set, tmp_path):
    net = OracleNet(eval_set, split)
    # A split without densepose.json: a clear error naming the file and the synth option.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in os.listdir(split):
        if name != "densepose.json":
            os.symlink(os.path.join(split, name), bare / name)
    with pytest.raises(FileNotFoundError, match=r"densepose\.json.*--densepose-points"):
        evaluate_holopose(net, bare, num=NUM, img_res=RES)
    with pytest.raises(FileNotFoundError, match=r"densepose\.json"):
        HoloPoseEvalSet(bare, NUM)
    # An evaluation set of other people, or an unknown configuration.
    with pytest.raises(ValueError, match="eval_set"):
        evaluate_holopose(net, split, num=3, img_res=RES, eval_set=eval_set)
    with pytest.raises(ValueError, match="configurations"):
        evaluate_holopose(net, split, num=NUM, img_res=RES, eval_set=eval_set, configs=("nope",))
    assert set(CONFIGS) == {"base", "kps2d", "kps3d", "dp", "kps2d_dp", "kps3d_dp"}


def test_a_camera_with_non_positive_scale_covers_nothing(eval_set):
    """A predicted weak camera with scale <= 0 (a mirrored projection) cannot be rendered: that person's
    points are uncovered (FR10 100 %), the others are scored as usual, nothing raises."""
    cam = eval_set.gt_cam.clone()
    cam[1, 0] = -cam[1, 0]
    cam[2, 0] = 0.0
    ref, _ = eval_set.evaluate(eval_set.pose, eval_set.betas, eval_set.gt_cam)
    per, _ = eval_set.evaluate(eval_set.pose, eval_set.betas, cam)
    assert per["camera_ok"].tolist()[:3] == [1.0, 0.0, 0.0]
    assert per["fr10"][1] == 100.0 and per["fr10"][2] == 100.0 and per["coverage"][1] == 0.0
    np.testing.assert_allclose(per["fr10"][[0, 3, 4]], ref["fr10"][[0, 3, 4]])
    np.testing.assert_allclose(per["pa_mpjpe"], ref["pa_mpjpe"])  # the 3D metrics do not use the camera
