"""One picture of what a few-step decoder gives up or gains: held-out images, then one row per decoder.

    python benchmarks/decoder_comparison.py --data digits --teacher app/weights/tokenizer \
        --student app/weights/tokenizer_distilled --out benchmarks/results/few_step_digits.png
    python benchmarks/decoder_comparison.py --data photos --teacher app/weights/photo_tokenizer \
        --student app/weights/photo_tokenizer_distilled --out benchmarks/results/few_step_photos.png

Rows: the originals; the teacher with the release's sampler (25 steps, cfg 1.5); the teacher at its
saved default; the student at its saved default. Every decoder starts from the same noise per
image (``tokenizer.eval.image_noise``, as the evaluation uses), so rows differ only by the decoder.
Each row is labelled with its decoder evaluations per image and its PSNR over the shown images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from evaluation.metrics import psnr
from runkit.images import make_grid_image
from tokenizer import build_dataset, load_flowmo
from tokenizer.data.subsets import evenly_spaced
from tokenizer.eval import image_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="a config in configs/data/ (its val split is used)")
    parser.add_argument("--teacher", default="app/weights/tokenizer")
    parser.add_argument("--student", default="app/weights/tokenizer_distilled")
    parser.add_argument("--count", type=int, default=10, help="held-out images shown")
    parser.add_argument("--out", default="decoder_comparison.png")
    parser.add_argument("--zoom", type=int, default=3, help="nearest-neighbour upscaling of each cell")
    args = parser.parse_args()

    teacher, student = load_flowmo(args.teacher).eval(), load_flowmo(args.student).eval()
    data_cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "data"
                                                     / f"{args.data}.yaml"), resolve=True)
    dataset = build_dataset(data_cfg, "val", teacher.config.image_size, train=False)
    ids = evenly_spaced(len(dataset), args.count)
    images = torch.stack([dataset[i][0] for i in ids])
    size = teacher.config.image_size
    noise = torch.stack([image_noise(i, 0, (3, size, size)) for i in ids])
    rows, labels = [images], ["original"] + [""] * (len(ids) - 1)
    decoders = [("teacher", teacher, 25, 1.5), ("teacher", teacher, None, None), ("student", student, None, None)]
    with torch.no_grad():
        for name, model, steps, cfg in decoders:
            recon = model.reconstruct(images, steps=steps, cfg=cfg, noise=noise)
            settings = model.decode_settings(steps, cfg)
            row_psnr = psnr(images, recon).mean().item()
            print(f"{name} {settings['steps']} steps cfg {settings['cfg']:g}: "
                  f"{model.decode_evaluations(steps, cfg)} evaluations/image, PSNR {row_psnr:.2f} dB on these images")
            rows.append(recon)
            count = model.decode_evaluations(steps, cfg)
            labels += [f"{name}, {count} evaluation{'' if count == 1 else 's'}"] + [""] * (len(ids) - 1)
    # Nearest-neighbour upscaling so 32-px cells stay readable; the pixels themselves are unchanged.
    cells = torch.nn.functional.interpolate(torch.cat(rows), scale_factor=args.zoom, mode="nearest")
    grid = make_grid_image(cells, nrow=len(ids), labels=labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
