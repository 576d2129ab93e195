"""One picture of what a few-step decoder gives up or gains: held-out images, then one row per decoder.

    python benchmarks/decoder_comparison.py --data digits --teacher app/weights/tokenizer \
        --student app/weights/tokenizer_distilled --out benchmarks/results/few_step_digits.png
    python benchmarks/decoder_comparison.py --data imagefolder --val-root data/photos/val \
        --teacher app/weights/photo_tokenizer --student app/weights/photo_tokenizer_distilled \
        --out benchmarks/results/few_step_photos.png

Rows: the originals; the teacher with the release's sampler (25 steps, cfg 1.5); the teacher at its
saved default; the student at its saved default. Every decoder starts from the same noise per
image (``tokenizer.eval.image_noise``, as the evaluation uses), so rows differ only by the decoder.
Held-out images and the picture come from ``rate_distortion.py``'s helpers, beside this file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluation.metrics import psnr  # noqa: E402
from rate_distortion import grid_indices, load_held_out, save_comparison  # noqa: E402
from tokenizer import load_flowmo  # noqa: E402
from tokenizer.eval import image_noise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", choices=["digits", "imagefolder"])
    parser.add_argument("--val-root", default=None, help="image folder of held-out images (--data imagefolder)")
    parser.add_argument("--num-images", type=int, default=None, help="evenly spaced subset of the val split")
    parser.add_argument("--teacher", default="app/weights/tokenizer")
    parser.add_argument("--student", default="app/weights/tokenizer_distilled")
    parser.add_argument("--count", type=int, default=10, help="held-out images shown")
    parser.add_argument("--out", default="decoder_comparison.png")
    args = parser.parse_args()

    teacher, student = load_flowmo(args.teacher).eval(), load_flowmo(args.student).eval()
    images, labels, _ = load_held_out(args, teacher.config.image_size)
    ids = grid_indices(labels, args.count)
    images = images[ids]
    noise = torch.stack([image_noise(i, 0, tuple(images.shape[1:])) for i in ids])
    rows = [("original", images)]
    with torch.no_grad():
        for name, model, steps, cfg in (("teacher", teacher, 25, 1.5), ("teacher", teacher, None, None),
                                        ("student", student, None, None)):
            recon = model.reconstruct(images, steps=steps, cfg=cfg, noise=noise)
            count = model.decode_evaluations(steps, cfg)
            print(f"{name} {model.decode_settings(steps, cfg)['steps']} steps: {count} evaluations/image, "
                  f"PSNR {psnr(images, recon).mean().item():.2f} dB on these images")
            rows.append((f"{name}, {count} evaluation{'' if count == 1 else 's'}", recon))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_comparison(rows, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
