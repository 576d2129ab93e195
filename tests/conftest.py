"""Fixtures shared across test files."""

import pytest
import torch
import torchvision


@pytest.fixture(scope="session")
def alexnet_file(tmp_path_factory):
    """torchvision's alexnet .pth layout with random weights (pretrained files cannot be downloaded here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path
