"""Pavlakos P2 / P3 experiment (training/experiments/pavlakos_smplify.py) on a tiny wild_test split with
untrained priors: result structure, finite values, the report, and that a very large anchor weight keeps
the fit at the PosePrior's initialisation."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from smplfast_train.pavlakos import PavlakosPriors

from smplfast.data import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training" / "experiments"))
import pavlakos_smplify as E

torch.set_num_threads(1)
BIG = 1000.0  # anchor weight: the anchor's curvature (w² per rad²) dwarfs the reprojection term's


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("pav_smplify")
    generate(root / "wild_test", 4, size=96, split="wild_test", workers=1, progress=False)
    torch.manual_seed(0)
    net = PavlakosPriors(width=64).eval()
    people = E.load_people(root / "wild_test", 4)
    res = E.run_experiment(people, net, optimizers=("lm",), anchor_weights=(0.0, E.P3_ANCHOR, BIG), batch=3,
                           keep_fits=True)
    return people, res


def test_structure_and_finite(result):
    people, res = result
    assert people["n"] == 4 and people["kp"]["annotated"].shape == (4, 14, 3)
    # OpenPose has no LSP neck / head top: those rows of the detections are missing.
    assert (people["kp"]["detected"][:, 12:, 2] == 0).all()
    ann, det = res["arms"]["annotated"], res["arms"]["detected"]
    assert set(ann) == {"direct", "smplify4_lm", "anchored_w0_lm", f"anchored_w{E.P3_ANCHOR:g}_lm",
                        f"anchored_w{BIG:g}_lm", "single_mean_lm"}
    assert set(det) == {"direct", "smplify4_lm", f"anchored_w{E.P3_ANCHOR:g}_lm"}
    assert set(res["arms"]["simulated"]) == set(det)
    for arms in res["arms"].values():
        for name, a in arms.items():
            keys = {"pa_mpjpe", "pve", "pve_model", "pve_model_gt_shape", "orient_err", "fb_acc", "parts_acc"}
            if name != "direct":
                keys |= {"iterations", "converged"}
            assert keys <= set(a["per_sample"]), name
            for k in keys:
                v = np.asarray(a["per_sample"][k])
                assert v.shape == (4,) and np.isfinite(v).all(), (name, k)
            assert a["n"] == 4 and a["s_per_person"] >= 0
            assert 0 <= a["segmentation"]["fb_acc"] <= 100 and 0 <= a["segmentation"]["parts_f1"] <= 1
    assert all(v >= 1 for v in ann["smplify4_lm"]["per_sample"]["iterations"])


def test_large_anchor_stays_at_initialisation(result):
    _, res = result
    init = res["init_pose"]["annotated"]
    ann = res["arms"]["annotated"]
    assert torch.equal(ann["direct"]["pose"], init)
    moved_big = (ann[f"anchored_w{BIG:g}_lm"]["pose"] - init).abs().amax()
    moved_free = (ann["anchored_w0_lm"]["pose"] - init).abs().amax()
    assert moved_big < 0.02, float(moved_big)
    assert moved_free > 5 * moved_big, (float(moved_free), float(moved_big))


def test_claims_speed_report(result):
    _, res = result
    weights = (0.0, E.P3_ANCHOR, BIG)
    cl = E.claims(res, ("lm",), weights, n_boot=200)
    ids = {c["id"] for c in cl}
    assert ids == {"P2", "P3", "X1"}
    for c in cl:
        d = c["diff"]
        assert np.isfinite([d["mean"], d["ci_low"], d["ci_high"]]).all() and d["ci_low"] <= d["ci_high"]
        assert c["verdict"] in ("reproduced (1 seed)", "reversed (1 seed)", "not resolved")
    sp = E.speed(res, ("lm",))
    assert {r["anchor_weight"] for r in sp} == set(weights)
    assert all(r["time_ratio"] > 0 and r["iteration_ratio"] > 0 for r in sp)
    out = {"num": 4, "seed": 0, "checkpoint": "untrained", "focal": E.FOCAL, "pose_prior": None, "batch": 3,
           "adam_num": 4, "result": res, "speed": sp, "claims": cl, "total_s": 1.0}
    md = E.markdown(out)
    assert "## P2 speed" in md and "anchored_w4.78_lm" in md and "| P3 |" in md


def test_verdict_rule():
    assert E._verdict({"ci_low": -2.0, "ci_high": -0.5}, -1) == "reproduced (1 seed)"
    assert E._verdict({"ci_low": 0.5, "ci_high": 2.0}, -1) == "reversed (1 seed)"
    assert E._verdict({"ci_low": -0.5, "ci_high": 2.0}, -1) == "not resolved"
    assert E._verdict({"ci_low": 0.5, "ci_high": 2.0}, 1) == "reproduced (1 seed)"
