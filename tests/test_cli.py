"""User paths and run folders outside and inside Hydra."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from runkit.cli import output_directory, user_path

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def test_outside_hydra_paths_are_taken_as_given_and_the_folder_is_required(tmp_path):
    assert user_path("runs/x") == Path("runs/x")
    assert output_directory(tmp_path / "run", "run_dir") == tmp_path / "run"
    with pytest.raises(ValueError, match="pass run_dir=<folder>"):
        output_directory(None, "run_dir")


def test_inside_hydra_relative_paths_resolve_against_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_train", return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            assert user_path("data/images") == tmp_path / "data" / "images"
            assert output_directory("runs/x", "run_dir") == tmp_path / "runs" / "x"
            # Hydra's own folder is the working directory (it writes nothing): never a run folder.
            with pytest.raises(ValueError, match="pass run_dir=<folder>"):
                output_directory(None, "run_dir")
        finally:
            HydraConfig.instance().cfg = None


def test_resolve_device_checks_names():
    import torch

    from runkit.cli import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
