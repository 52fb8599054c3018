"""Tests for smplfast_train.mean_params and the bundled training/data/mean_params_default.npz."""
import math

import numpy as np
import torch

from smplfast_train.mean_params import (
    DEFAULT_MEAN_PARAMS,
    LAB_FAMILIES,
    compute_mean_params,
    load_mean_params,
    main,
)
from smplfast_train.rotations import matrix_to_rot6d, rot6d_to_matrix

torch.set_num_threads(1)


def test_default_file_layout():
    assert DEFAULT_MEAN_PARAMS.is_file()
    with np.load(DEFAULT_MEAN_PARAMS) as f:
        assert f["pose"].shape == (144,) and f["shape"].shape == (10,) and f["cam"].shape == (3,)
        assert f["pose"].dtype == np.float32
        np.testing.assert_array_equal(f["shape"], 0.0)
        np.testing.assert_allclose(f["cam"], [0.9, 0.0, 0.0], atol=1e-7)
        assert tuple(f["families"]) == LAB_FAMILIES and int(f["n_samples"]) == 20000 and int(f["seed"]) == 0


def test_default_rotations_valid():
    mp = load_mean_params()
    R = rot6d_to_matrix(mp["pose"].double().reshape(24, 6))
    eye = torch.eye(3, dtype=torch.float64)
    assert ((R.transpose(-1, -2) @ R - eye).abs().max()) < 1e-6
    assert ((torch.det(R) - 1).abs().max()) < 1e-6
    # The stored 6D are exact rotation columns (decode(encode) is the identity on them).
    torch.testing.assert_close(matrix_to_rot6d(R).reshape(144).float(), mp["pose"], atol=1e-6, rtol=0)
    # Root: axis-angle [π, 0, 0] = diag(1, -1, -1).
    torch.testing.assert_close(R[0], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)), atol=1e-7, rtol=0)
    # Body joints: a mean of lab poses, so moderate rotations (no joint near a flip).
    angles = torch.arccos(((R[1:].diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert angles.max() < math.radians(90)


def test_default_file_matches_recomputation():
    fresh = compute_mean_params(n=1500, seed=1)
    mp = load_mean_params()
    R_file = rot6d_to_matrix(mp["pose"].double().reshape(24, 6))
    R_new = rot6d_to_matrix(torch.as_tensor(fresh["pose"]).double().reshape(24, 6))
    rel = R_file.transpose(-1, -2) @ R_new
    angle = torch.arccos(((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert angle.max() < math.radians(3), torch.rad2deg(angle)
    np.testing.assert_array_equal(fresh["shape"], mp["shape"].numpy())
    np.testing.assert_allclose(fresh["cam"], mp["cam"].numpy())


def test_cli_writes_npz(tmp_path, capsys):
    out = tmp_path / "sub" / "mp.npz"
    main(["--out", str(out), "--n", "200", "--families", "t_pose,a_pose", "--seed", "3"])
    assert out.is_file() and "wrote" in capsys.readouterr().out
    mp = load_mean_params(out)
    assert mp["pose"].shape == (144,)
    with np.load(out) as f:
        assert tuple(f["families"]) == ("t_pose", "a_pose") and int(f["n_samples"]) == 200
    # Deterministic for a seed.
    again = compute_mean_params(n=200, families=("t_pose", "a_pose"), seed=3)
    np.testing.assert_array_equal(again["pose"], mp["pose"].numpy())
