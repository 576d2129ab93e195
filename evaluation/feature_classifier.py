"""A small image classifier the project trains on its own data, used as a metric feature space.

FID / precision / recall need a network whose features describe images; the usual one
(Inception-v3 on ImageNet) cannot be downloaded here and says little about 32-px digits. This
classifier, trained by ``python -m evaluation.train_classifier`` on the training split of a
dataset, gives a real feature space for that dataset: its penultimate activations are the
features, its logits give the Inception-Score analogue. Numbers measured with it are named for
it ("FID (digits classifier features)") and are not comparable with ImageNet FIDs.

A convolutional network is fine here: it is an evaluation instrument, not part of FlowMo.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from runkit.config import dataclass_from_dict
from runkit.pretrained import Pretrained


@dataclass
class ClassifierConfig:
    name: str = "classifier"  # what the feature space is called: "digits" -> "digits classifier features"
    image_size: int = 16  # inputs are resized to this square size
    channels: list[int] = field(default_factory=lambda: [32, 64])  # one stage (2 convs + pool) each
    feature_dim: int = 64  # the feature space's dimension (penultimate layer)
    num_classes: int = 10
    class_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: data, steps, held-out accuracy

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        self.class_names = list(self.class_names)
        for key in ("image_size", "feature_dim", "num_classes"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"invalid ClassifierConfig: {key} must be a positive integer, got {value!r}")
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"invalid ClassifierConfig: channels must be positive, got {self.channels}")
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"invalid ClassifierConfig: image_size {self.image_size} is not divisible by "
                             f"2**{len(self.channels)} (one 2x pooling per stage)")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"invalid ClassifierConfig: {len(self.class_names)} class_names for "
                             f"num_classes={self.num_classes}")

    @property
    def feature_label(self) -> str:
        return f"{self.name} classifier features"


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.GELU(),
        nn.AvgPool2d(2),
    )


class FeatureClassifier(Pretrained, nn.Module):
    """(B,3,H,W) images in [-1,1] -> features (B, feature_dim) and class logits (B, num_classes)."""

    pretrained_kind = "feature classifier"
    pretrained_hint = "; train one with python -m evaluation.train_classifier"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        widths = [3, *config.channels]
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.to_features = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1], config.feature_dim), nn.GELU())
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def _resize(self, images: Tensor) -> Tensor:
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B,3,H,W) images, got shape {tuple(images.shape)}")
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def features(self, images: Tensor) -> Tensor:
        """images (B,3,H,W) in [-1,1] -> (B, feature_dim): global-average-pooled conv features, projected."""
        x = self.stages(self._resize(images.float()))
        return self.to_features(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, images: Tensor) -> Tensor:
        """images (B,3,H,W) in [-1,1] -> logits (B, num_classes)."""
        return self.head(self.features(images))

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(images)
        return features, self.head(features)

    # ------------------------------------------------------------------ save / load
    def pretrained_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @classmethod
    def from_record(cls, record: dict[str, Any], directory: Path) -> "FeatureClassifier":
        return cls(dataclass_from_dict(ClassifierConfig, record))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, map_location: str = "cpu",
                        **hub_kwargs: Any) -> "FeatureClassifier":
        """The saved classifier (a folder or a Hub repo id), ready to measure (eval mode)."""
        return super().from_pretrained(directory, map_location=map_location, **hub_kwargs).eval()

    def card_fields(self) -> dict[str, str]:
        c = self.config
        return {"title": f"Metric classifier: {c.feature_label}",
                "summary": (f"A small convolutional classifier of {c.image_size}×{c.image_size} px images into "
                            f"{c.num_classes} classes, trained on one dataset's training split. Its "
                            f"{c.feature_dim}-d penultimate features are the feature space of FID, precision and "
                            "recall on that dataset, its logits give the Inception-Score analogue; numbers measured "
                            f"with it are named \"{c.feature_label}\" and are not comparable with ImageNet FIDs."),
                "usage": ("from evaluation.feature_classifier import FeatureClassifier\n\n"
                          "classifier = FeatureClassifier.from_pretrained(\"path/or/repo-id\")\n"
                          "features, logits = classifier.features_and_logits(images)   # B×3×H×W in [-1, 1]")}

    def training_record(self) -> dict[str, Any]:
        """``python -m evaluation.train_classifier`` records its data, steps and accuracies in ``config.extra``."""
        extra = self.config.extra
        quality = {key: extra[key] for key in ("train_accuracy", "val_accuracy", "train_images", "val_images",
                                               "final_loss") if key in extra}
        return {"data": extra.get("data"), "command": extra.get("command"), "quality": quality,
                "step": extra.get("steps")}
