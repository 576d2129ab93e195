"""Are generated digits recognisable? Classify generator samples with a classifier trained on real digits.

    python benchmarks/digits_class_accuracy.py --generator outputs/generator/digits_maskgit/<run> \
        --tokenizer app/weights/tokenizer [--per-class 50 --cfg 2.0 --steps 8]

A logistic regression on 8x8 images (scikit-learn's digits train split, checked on its val
split) classifies K samples per class, decoded by the tokenizer and downsampled to 8x8.
Prints per-class and overall accuracy.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from generator import load_generator
from tokenizer import load_flowmo
from tokenizer.data import DigitsDataset


def to_8x8(images: torch.Tensor) -> np.ndarray:
    """Images (B,3,H,W) in [-1,1] -> (B, 64) grey features on the 0..16 scale of the digits data."""
    grey = images.float().mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(8, 8), mode="area")
    return ((small.clamp(-1, 1) + 1) * 8).flatten(1).numpy()


def dataset_features(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    data = DigitsDataset(split, image_size, train=False)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = np.array([data[i][1] for i in range(len(data))])
    return to_8x8(images), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True, help="generator save_pretrained dir or training run dir")
    parser.add_argument("--tokenizer", required=True, help="digits FlowMo dir or training run dir")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=None, help="MaskGIT steps (AR ignores it)")
    parser.add_argument("--decode-steps", type=int, default=None, help="default: the tokenizer's saved setting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = load_flowmo(args.tokenizer).eval()
    model = load_generator(args.generator)
    model.check_tokenizer(tokenizer.config)
    size = tokenizer.config.image_size

    x_train, y_train = dataset_features("train", size)
    x_val, y_val = dataset_features("val", size)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    val_accuracy = classifier.score(x_val, y_val)

    class_ids = [c for c in range(model.num_classes) for _ in range(args.per_class)]
    generator = torch.Generator().manual_seed(args.seed)
    images = []
    with torch.no_grad():
        for start in range(0, len(class_ids), 100):
            chunk = class_ids[start:start + 100]
            indices = model.generate(chunk, num_steps=args.steps, cfg_scale=args.cfg, temperature=args.temperature,
                                     generator=generator)
            images.append(tokenizer.decode(indices, steps=args.decode_steps, generator=generator))
    predicted = classifier.predict(to_8x8(torch.cat(images)))
    truth = np.array(class_ids)

    print(f"\n{model.config.model} from {args.generator}; cfg {args.cfg}, temperature {args.temperature}, "
          f"steps {args.steps}, {args.per_class} samples/class; classifier val accuracy {val_accuracy:.3f}\n")
    print("| class | accuracy |")
    print("|---|---:|")
    for c in range(model.num_classes):
        print(f"| {model.class_names[c]} | {np.mean(predicted[truth == c] == c):.3f} |")
    print(f"| **overall** | **{np.mean(predicted == truth):.3f}** |")


if __name__ == "__main__":
    main()
