"""Shared fixtures for the benchmarks: models of SMPL's size written once per session."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def smpl_size_model_file(tmp_path_factory):
    """A random model with SMPL's sizes: 6890 vertices, 13776 faces, 10 betas, 207 dense pose features."""
    from smplfast.body import random_model, save_model

    path = tmp_path_factory.mktemp("bench_models") / "SMPL_NEUTRAL.pkl"
    save_model(random_model(num_vertices=6890, num_betas=10, seed=0), str(path))
    return str(path)


def pytest_benchmark_update_machine_info(config, machine_info):
    import smplfast

    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["smplfast_build"] = smplfast.build_info()
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
