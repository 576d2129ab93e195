"""Pretrained perceptual networks (LPIPS, ResNet-50 logits) loaded from local weight files.

Nothing here downloads. A missing weight file raises :class:`MissingWeightsError` naming the
file and the option to set; ``allow_random=True`` builds the same network with random
backbone weights for smoke runs, and every such module reports ``calibrated = False`` so its
numbers are never mistaken for real ones.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MissingWeightsError",
    "resolve_weights",
    "load_torchvision_state_dict",
    "build_lpips",
    "LPIPSLoss",
    "ResNet50LogitLoss",
    "PixelMSELoss",
    "build_perceptual_loss",
    "TORCHVISION_FILES",
]

# The file names torchvision publishes, quoted in error messages so users know what to fetch.
TORCHVISION_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "inception": "pt_inception-2015-12-05-6726825d.pth",
}
_DESCRIPTIONS = {
    "vgg": "LPIPS VGG backbone weights",
    "alex": "LPIPS AlexNet backbone weights",
    "resnet50": "ResNet-50 weights",
    "inception": "Inception-v3 FID weights",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not available locally (nothing is ever downloaded)."""


def missing_weights_message(kind: str, path: str | os.PathLike | None, option: str) -> str:
    source = "torch-fidelity's file" if kind == "inception" else "torchvision's file"
    return (
        f"{_DESCRIPTIONS[kind]} not found: {path if path else 'not set'}. "
        f"Set {option}=/path/to/{TORCHVISION_FILES[kind]} ({source}) "
        "or pass allow_random_weights=true for an UNCALIBRATED smoke run."
    )


def resolve_weights(
    kind: str, path: str | os.PathLike | None, allow_random: bool, option: str
) -> Path | None:
    """The weight file to load, or None for random weights.

    A path that is set but missing is always an error (a typo must not silently turn into
    an uncalibrated run); an unset path is allowed only with ``allow_random``.
    """
    if path not in (None, ""):
        resolved = Path(path).expanduser()
        if resolved.is_file():
            return resolved
        raise MissingWeightsError(missing_weights_message(kind, resolved, option))
    if allow_random:
        return None
    raise MissingWeightsError(missing_weights_message(kind, None, option))


def load_torchvision_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision ``.pth`` (a plain state dict) loaded safely onto the CPU.

    The one loader for weight files the project hands to a network it did not train itself
    (LPIPS backbones, ResNet-50, Inception-v3): ``weights_only=True``, so a file that would run
    code when unpickled is refused.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"{path} is not a plain state dict of tensors and was not loaded: unpickling it could run "
                         f"code ({reason}). Use the original weight file.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def _load_lpips_backbone(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into lpips' ``net.slice<k>.<i>.*`` layers."""
    backbone = model.net
    loaded = 0
    for slice_index in range(1, backbone.N_slices + 1):
        for layer_name, layer in getattr(backbone, f"slice{slice_index}").named_children():
            for param_name, tensor in layer.state_dict().items():
                key = f"features.{layer_name}.{param_name}"
                if key not in state:
                    raise ValueError(f"{path}: missing tensor {key!r}; is this torchvision's file?")
                if state[key].shape != tensor.shape:
                    raise ValueError(
                        f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
                    )
                tensor.copy_(state[key])
                loaded += 1
    if loaded == 0:
        raise ValueError(f"{path}: no backbone tensors were loaded")


def build_lpips(
    net: str = "vgg",
    backbone_weights: str | os.PathLike | None = None,
    allow_random: bool = False,
    option: str = "lpips_weights",
) -> tuple[nn.Module, bool]:
    """An ``lpips.LPIPS`` module (input in [-1, 1]) and whether it is calibrated.

    The learned linear heads ship inside the ``lpips`` package; the VGG16 / AlexNet
    backbone comes from torchvision's released file at ``backbone_weights``. ``option``
    is the setting named in the error when the file is missing.
    """
    import lpips

    if net not in ("vgg", "alex"):
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
    path = resolve_weights(net, backbone_weights, allow_random, option)
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` argument; it builds random weights.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    if path is not None:
        with torch.no_grad():
            _load_lpips_backbone(model, load_torchvision_state_dict(path), path)
    return _freeze(model), path is not None


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance between two batches in [-1, 1] (frozen network, gradients to inputs)."""

    def __init__(
        self,
        net: str = "vgg",
        backbone_weights: str | os.PathLike | None = None,
        allow_random: bool = False,
        option: str = "lpips_weights",
    ):
        super().__init__()
        self.lpips, self.calibrated = build_lpips(net, backbone_weights, allow_random, option)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B,3,H,W) in [-1,1] -> scalar."""
        return self.lpips(x.float(), y.float()).mean()


class ResNet50LogitLoss(nn.Module):
    """MSE between torchvision ResNet-50 logits of two image batches (Stage-1B loss of the release).

    Images in [-1, 1] are resized to 224 px (bilinear, antialiased) and normalised with the
    ImageNet mean / std before the network.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        allow_random: bool = False,
        option: str = "resnet50_weights",
    ):
        super().__init__()
        from torchvision.models import resnet50

        path = resolve_weights("resnet50", weights_path, allow_random, option)
        self.network = resnet50(weights=None)
        if path is not None:
            self.network.load_state_dict(load_torchvision_state_dict(path))
        _freeze(self.network)
        self.calibrated = path is not None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ResNet50LogitLoss":
        super().train(mode)
        self.network.eval()
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,1000)."""
        images = (images.float() + 1.0) / 2.0
        images = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.network((images - self.mean) / self.std)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B,3,H,W) in [-1,1] -> scalar mean squared logit difference."""
        return F.mse_loss(self.logits(x), self.logits(y))


class PixelMSELoss(nn.Module):
    """Plain pixel MSE: a weight-free stand-in for offline runs (e.g. the digits default)."""

    calibrated = True

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x.float(), y.float())


def build_perceptual_loss(
    kind: str,
    weights_path: str | os.PathLike | None = None,
    allow_random: bool = False,
    option: str | None = None,
) -> nn.Module | None:
    """The perceptual loss ``kind``: "lpips" (VGG), "resnet50", "mse" or "none" (returns None).

    Each returned module maps (x, y) in [-1,1] to a scalar and has ``.calibrated``.
    """
    if kind == "lpips":
        return LPIPSLoss("vgg", weights_path, allow_random, option or "lpips_weights")
    if kind == "resnet50":
        return ResNet50LogitLoss(weights_path, allow_random, option or "resnet50_weights")
    if kind == "mse":
        return PixelMSELoss()
    if kind == "none":
        return None
    raise ValueError(f"unknown perceptual loss {kind!r}: expected 'lpips', 'resnet50', 'mse' or 'none'")
