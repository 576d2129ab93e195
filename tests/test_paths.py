"""User paths and run folders outside and inside Hydra."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from tokenizer.paths import output_directory, user_path

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def test_outside_hydra_paths_are_taken_as_given_and_the_folder_is_required(tmp_path):
    assert user_path("runs/x") == Path("runs/x")
    assert output_directory(tmp_path / "run", "run_dir") == tmp_path / "run"
    with pytest.raises(ValueError, match="pass run_dir=<folder>"):
        output_directory(None, "run_dir")


def test_inside_hydra_relative_paths_resolve_against_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("tokenizer_train", return_hydra_config=True,
                      overrides=[f"hydra.runtime.output_dir={tmp_path / 'hydra_out'}"])
        HydraConfig.instance().set_config(cfg)
        try:
            assert user_path("data/images") == tmp_path / "data" / "images"
            assert output_directory(None, "run_dir") == tmp_path / "hydra_out"
        finally:
            HydraConfig.instance().cfg = None
