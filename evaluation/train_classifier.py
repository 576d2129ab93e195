"""``python -m evaluation.train_classifier``: train the metric classifier of a dataset.

    python -m evaluation.train_classifier data=digits out=app/weights/digits_classifier
    python -m evaluation.train_classifier data=photos name=photos out=app/weights/photo_classifier

The classifier (:mod:`evaluation.feature_classifier`) learns the dataset's classes from its
training split with light geometric augmentation; its held-out (val split) accuracy is printed
and saved in its ``config.json``. Its features then serve FID / precision / recall / IS on that
dataset (:mod:`evaluation.feature_spaces`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from runkit.cli import command_line, user_path
from imagedata import background_of, random_affine, stack_dataset

from .feature_classifier import ClassifierConfig, FeatureClassifier


@torch.no_grad()
def accuracy(model: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    return correct / max(1, len(labels))


def train_classifier(train_images: Tensor, train_labels: Tensor, config: ClassifierConfig, *, steps: int,
                     batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 0.05, hflip: bool = False,
                     seed: int = 0, background: float = -1.0, show_progress: bool = True) -> tuple[FeatureClassifier, list[float]]:
    """AdamW with a cosine schedule on augmented batches; returns the model and its loss per step."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = FeatureClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not show_progress):
        picks = torch.randint(len(train_labels), (batch_size,), generator=generator)
        images = random_affine(train_images[picks], generator, hflip=hflip, fill=background)
        loss = F.cross_entropy(model(images), train_labels[picks], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def run(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from imagedata import build_dataset

    data_cfg = dict(cfg["data"])
    data_cfg["subsample"] = None  # the held-out accuracy is measured on the whole val split
    train_set = build_dataset(data_cfg, "train", cfg["image_size"], train=False)
    val_set = build_dataset(data_cfg, "val", cfg["image_size"], train=False)
    train_images, train_labels = stack_dataset(train_set)
    val_images, val_labels = stack_dataset(val_set)
    config = ClassifierConfig(name=cfg["name"] or str(data_cfg["name"]), image_size=cfg["image_size"],
                              channels=list(cfg["channels"]), feature_dim=cfg["feature_dim"],
                              num_classes=len(train_set.class_names), class_names=list(train_set.class_names))
    model, losses = train_classifier(train_images, train_labels, config, steps=cfg["steps"],
                                     batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                     hflip=bool(data_cfg.get("hflip")), seed=cfg["seed"],
                                     background=background_of(train_set))
    result = {"train_accuracy": accuracy(model, train_images, train_labels),
              "val_accuracy": accuracy(model, val_images, val_labels),
              "train_images": len(train_labels), "val_images": len(val_labels),
              "final_loss": sum(losses[-50:]) / len(losses[-50:])}
    model.config.extra = {"data": data_cfg, "steps": cfg["steps"], "seed": cfg["seed"],
                          "command": command_line("evaluation.train_classifier"), **result}
    model.save_pretrained(user_path(cfg["out"]))
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_classifier")
def main(cfg: DictConfig) -> None:
    result = run(OmegaConf.to_container(cfg, resolve=True))
    print(f"held-out accuracy {result['val_accuracy']:.4f} on {result['val_images']} val images "
          f"(train {result['train_accuracy']:.4f}); saved to {user_path(cfg.out)}")


if __name__ == "__main__":
    main()
