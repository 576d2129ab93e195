"""Perceptual backbones from local files: LPIPS (vs the lpips package itself), ResNet-50 logits, errors."""

import os

import lpips
import pytest
import torch
import torch.nn.functional as F
import torchvision

from evaluation.perceptual import (
    LPIPSLoss,
    MissingWeightsError,
    PixelMSELoss,
    ResNet50LogitLoss,
    build_lpips,
    build_perceptual_loss,
)



@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """The ``features.*`` tensors of torchvision's vgg16 layout (the classifier is not needed)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    features = make_layers(cfgs["D"])
    path = tmp_path_factory.mktemp("weights") / "vgg16-features-random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def _images(seed, batch=2, size=32):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def _lpips_built_by_the_package(net, weights_path, monkeypatch):
    """lpips.LPIPS constructing its own torchvision backbone, patched to read our local file."""
    factory = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}[net]
    state = torch.load(weights_path, weights_only=True)

    def local_backbone(*args, **kwargs):
        model = factory(weights=None)
        model.load_state_dict(state, strict=False)
        return model

    monkeypatch.setattr(lpips.pretrained_networks.tv, {"alex": "alexnet", "vgg": "vgg16"}[net], local_backbone)
    return lpips.LPIPS(pretrained=True, net=net, pnet_rand=False, verbose=False).eval()


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def test_lpips_matches_the_package_with_the_same_backbone(net, alexnet_file, vgg_features_file, monkeypatch):
    weights = alexnet_file if net == "alex" else vgg_features_file
    model, calibrated = build_lpips(net, weights, allow_random=False)
    assert calibrated and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    reference = _lpips_built_by_the_package(net, weights, monkeypatch)
    x, y = _images(0), _images(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x, y), reference(x, y), rtol=1e-5, atol=1e-6)
    # The calibrated linear heads are the ones shipped in the package.
    shipped = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth"), map_location="cpu")
    torch.testing.assert_close(model.lin0.model[1].weight, shipped["lin0.model.1.weight"])


def test_missing_weights_error_names_the_option_and_file(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        build_lpips("vgg", None, allow_random=False, option="loss.perceptual_weights")
    message = str(info.value)
    assert "LPIPS VGG backbone weights not found: not set" in message
    assert "loss.perceptual_weights=/path/to/vgg16-397923af.pth" in message
    assert "allow_random_weights=true" in message and "UNCALIBRATED" in message
    assert isinstance(info.value, FileNotFoundError)
    missing = tmp_path / "nope.pth"
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        build_lpips("alex", missing, allow_random=True)  # a set-but-missing path is never ignored
    with pytest.raises(ValueError, match="'squeeze'"):
        build_lpips("squeeze", None, allow_random=True)


def test_lpips_random_backbone_is_flagged_uncalibrated():
    model, calibrated = build_lpips("alex", None, allow_random=True)
    assert calibrated is False
    with torch.no_grad():
        assert model(_images(0), _images(0)).abs().max() < 1e-6


def test_lpips_loss_gives_gradients_to_inputs_only(alexnet_file):
    loss_fn = LPIPSLoss("alex", alexnet_file)
    loss_fn.train()
    assert not loss_fn.lpips.training
    x = _images(0).requires_grad_(True)
    loss = loss_fn(x, _images(1))
    assert loss.dim() == 0 and loss > 0
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


@pytest.mark.slow
def test_resnet50_logit_loss_matches_manual_computation(resnet_file):
    loss_fn = ResNet50LogitLoss(resnet_file)
    loss_fn.train()
    assert loss_fn.calibrated and not loss_fn.network.training
    reference = torchvision.models.resnet50()
    reference.load_state_dict(torch.load(resnet_file, weights_only=True))
    reference.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def logits(images):
        images = F.interpolate((images + 1) / 2, size=224, mode="bilinear", antialias=True, align_corners=False)
        return reference((images - mean) / std)

    x, y = _images(3, batch=1, size=40), _images(4, batch=1, size=40)
    with torch.no_grad():
        expected = F.mse_loss(logits(x), logits(y))
        torch.testing.assert_close(loss_fn(x, y), expected, rtol=1e-4, atol=1e-6)
        assert loss_fn(x, x) == 0
    with pytest.raises(MissingWeightsError, match="resnet50_weights=/path/to/resnet50-0676ba61.pth"):
        ResNet50LogitLoss(None)


def test_build_perceptual_loss_dispatch(alexnet_file):
    mse = build_perceptual_loss("mse")
    assert isinstance(mse, PixelMSELoss) and mse.calibrated
    x, y = _images(0), _images(1)
    torch.testing.assert_close(mse(x, y), ((x - y) ** 2).mean())
    assert build_perceptual_loss("none") is None
    assert build_perceptual_loss("resnet50", None, allow_random=True).calibrated is False
    with pytest.raises(MissingWeightsError, match="loss.perceptual_weights="):
        build_perceptual_loss("lpips", None, option="loss.perceptual_weights")
    with pytest.raises(ValueError, match="unknown perceptual loss 'vgg'"):
        build_perceptual_loss("vgg")
