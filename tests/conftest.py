"""Fixtures shared across test files."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torchvision

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_module():
    """``benchmark_module(name)`` imports ``benchmarks/<name>.py`` (its folder joins sys.path only while
    importing, since the scripts import their siblings such as ``hardware``)."""

    def load(name: str):
        sys.path.insert(0, str(BENCHMARKS))
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(BENCHMARKS))

    return load


@pytest.fixture(scope="session")
def alexnet_file(tmp_path_factory):
    """torchvision's alexnet .pth layout with random weights (pretrained files cannot be downloaded here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path
