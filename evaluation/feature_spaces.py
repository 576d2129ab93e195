"""Feature spaces for FID / IS / precision-recall, handed to torch-fidelity as modules already built.

torch-fidelity builds its own extractors and unpickles their weight files with
``weights_only=False``, so a crafted ``.pth`` would run code. Here every network is built and
its weights loaded by this project, through the one safe loader
(:func:`evaluation.perceptual.load_torchvision_state_dict`, ``weights_only=True``) or
safetensors; torch-fidelity only receives the finished module, through its own extension
mechanism (``register_feature_extractor``). Random Inception weights are drawn in memory: no
file is written or read for them.

Two kinds of space:
- ``inception``: torch-fidelity's Inception-v3 (the FID of papers; ImageNet-scale data);
- ``classifier``: a :class:`~evaluation.feature_classifier.FeatureClassifier` the project trained
  on its own data; its numbers are labelled "FID (<name> classifier features)".
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from runkit.cli import user_path
from runkit.pretrained import WEIGHTS_FILE

from .perceptual import load_torchvision_state_dict, resolve_weights

__all__ = ["FeatureSpace", "inception_feature_space", "classifier_feature_space", "resolve_feature_space",
           "metric_label", "feature_space_option", "FEATURE_OPTIONS", "INCEPTION_LABEL"]

INCEPTION_FEATURES = ("64", "192", "768", "2048", "logits_unbiased", "logits")
FEATURE_OPTIONS = ("auto", "inception", "classifier")
INCEPTION_LABEL = "Inception-v3"
_BUILD_LOCK = threading.Lock()
_NAMES = itertools.count()


@dataclass(eq=False)
class FeatureSpace:
    """A built feature network, registered with torch-fidelity under ``extractor``.

    ``label`` names the space in reports; ``calibrated`` is False for random weights (every
    number then reads UNCALIBRATED); ``tag`` identifies the weights in cache keys.
    """

    extractor: str
    label: str
    calibrated: bool
    tag: str
    fid_layer: str
    isc_layer: str
    prc_layer: str
    module: nn.Module = field(repr=False)

    def metric_name(self, metric: str) -> str:
        """"FID" for Inception features; "FID (digits classifier features)" for a classifier's."""
        return metric_label(metric, self.label)

    def fidelity_kwargs(self) -> dict[str, Any]:
        """The torch-fidelity options that select this space."""
        return {"feature_extractor": self.extractor, "feature_layer_fid": self.fid_layer,
                "feature_layer_isc": self.isc_layer, "feature_layer_prc": self.prc_layer,
                "feature_layer_kid": self.fid_layer}


def metric_label(metric: str, space_label: str) -> str:
    """A metric's name in a report: bare for Inception-v3, else with the feature space beside it."""
    return metric if space_label == INCEPTION_LABEL else f"{metric} ({space_label})"


def _register(network: nn.Module, provided: tuple[str, ...], label: str) -> str:
    """Register ``network`` (uint8 (B,3,H,W) -> tuple of tensors in ``provided`` order) with torch-fidelity."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    name = f"flowmo-{''.join(c if c.isalnum() else '-' for c in label)}-{next(_NAMES)}-{os.getpid()}"

    class BuiltExtractor(FeatureExtractorBase):
        def __init__(self, extractor_name: str, features_list: list[str], **_: Any):
            super().__init__(extractor_name, features_list)
            self.network = network

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return provided

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            raise ValueError(f"feature layer for {metric} must be given explicitly for {label}")

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            raise NotImplementedError

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            features = dict(zip(provided, self.network(images)))
            return tuple(features[n] for n in self.features_list)

    register_feature_extractor(name, BuiltExtractor)
    return name


# ---------------------------------------------------------------------------- Inception-v3
def _seeded_init_(module: nn.Module, generator: torch.Generator) -> None:
    """Variance-preserving random init so random Inception features neither vanish nor explode."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups
            with torch.no_grad():
                layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
        elif isinstance(layer, nn.Linear):
            with torch.no_grad():
                layer.weight.normal_(0.0, layer.in_features**-0.5, generator=generator)
                layer.bias.zero_()


def build_inception(weights: Path | None, seed: int = 0) -> nn.Module:
    """torch-fidelity's Inception-v3 with every feature, weights from ``weights`` (safe load) or random.

    The constructor would download or unpickle; it is given an empty state dict instead and the
    weights are copied in afterwards.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as inception_module

    class DeferredLoad(inception_module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # the constructor's load: skipped
            return None

    with _BUILD_LOCK, mock.patch.object(inception_module, "load_state_dict_from_url", lambda *a, **k: {}):
        network = DeferredLoad("inception-v3-compat", list(INCEPTION_FEATURES))
    if weights is None:
        _seeded_init_(network, torch.Generator().manual_seed(seed))
    else:
        state = load_torchvision_state_dict(weights)
        missing, unexpected = nn.Module.load_state_dict(network, state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights} is not torch-fidelity's Inception-v3 state dict: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return network.eval().requires_grad_(False)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


_INCEPTION_CACHE: dict[tuple[str, int], FeatureSpace] = {}


def inception_feature_space(weights: str | os.PathLike | None, allow_random: bool, seed: int = 0,
                            option: str = "inception_weights") -> FeatureSpace:
    """Inception-v3 pool features (FID / PRC: "2048", IS: "logits_unbiased").

    ``weights`` unset needs ``allow_random`` (random weights drawn in memory from ``seed``, every
    number UNCALIBRATED); a set but missing path is an error naming ``option``.
    """
    path = resolve_weights("inception", weights, allow_random, option)
    tag = f"inception-{_file_digest(path)}" if path is not None else f"random-inception-seed{seed}"
    key = (tag, seed)
    with _BUILD_LOCK:
        cached = _INCEPTION_CACHE.get(key)
    if cached is not None:
        return cached
    network = build_inception(path, seed)
    space = FeatureSpace(
        extractor=_register(network, INCEPTION_FEATURES, "inception"), label=INCEPTION_LABEL,
        calibrated=path is not None, tag=tag, fid_layer="2048", isc_layer="logits_unbiased", prc_layer="2048",
        module=network)
    with _BUILD_LOCK:
        return _INCEPTION_CACHE.setdefault(key, space)


# ---------------------------------------------------------------------------- project classifiers
class _ClassifierOnUint8(nn.Module):
    """uint8 (B,3,H,W) -> (features, logits) of a FeatureClassifier (what torch-fidelity feeds)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (B,3,H,W) images, got {images.dtype} {tuple(images.shape)}")
        return self.classifier.features_and_logits(images.float() / 127.5 - 1.0)


_CLASSIFIER_CACHE: dict[str, FeatureSpace] = {}


def classifier_feature_space(directory: str | os.PathLike) -> FeatureSpace:
    """The features and logits of a project-trained classifier saved in ``directory``."""
    from .feature_classifier import FeatureClassifier

    directory = Path(directory)
    classifier = FeatureClassifier.from_pretrained(directory)
    tag = f"classifier-{classifier.config.name}-{_file_digest(directory / WEIGHTS_FILE)}"
    with _BUILD_LOCK:
        cached = _CLASSIFIER_CACHE.get(tag)
    if cached is not None:
        return cached
    network = _ClassifierOnUint8(classifier).eval().requires_grad_(False)
    label = classifier.config.feature_label
    space = FeatureSpace(extractor=_register(network, ("features", "logits"), label), label=label,
                         calibrated=True, tag=tag, fid_layer="features", isc_layer="logits",
                         prc_layer="features", module=network)
    with _BUILD_LOCK:
        return _CLASSIFIER_CACHE.setdefault(tag, space)


def resolve_feature_space(features: str, *, classifier: str | os.PathLike | None,
                          inception_weights: str | os.PathLike | None, allow_random: bool,
                          seed: int = 0) -> FeatureSpace:
    """The space an entry point's ``features=`` option names.

    ``auto``: the project classifier when one is given (the digits and photo data configs name
    theirs), else Inception-v3; ``inception`` / ``classifier`` force one.
    """
    if features not in FEATURE_OPTIONS:
        raise ValueError(f"features={features!r}; choose one of {list(FEATURE_OPTIONS)}")
    if features == "classifier" or (features == "auto" and classifier):
        if not classifier:
            raise ValueError("features=classifier needs a classifier directory (feature_classifier=<dir>; train "
                             "one with python -m evaluation.train_classifier)")
        return classifier_feature_space(classifier)
    return inception_feature_space(inception_weights, allow_random, seed)


def feature_space_option(cfg: Any) -> FeatureSpace:
    """The :class:`FeatureSpace` an entry point's options name: ``features``
    (auto | inception | classifier), ``feature_classifier`` (a classifier directory; the digits and
    photos data configs name theirs), ``inception_weights`` and ``allow_random_weights``."""
    classifier, inception = cfg.get("feature_classifier"), cfg.get("inception_weights")
    return resolve_feature_space(str(cfg.get("features", "auto")),
                                 classifier=user_path(classifier) if classifier else None,
                                 inception_weights=user_path(inception) if inception else None,
                                 allow_random=bool(cfg.get("allow_random_weights", False)))
