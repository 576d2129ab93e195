"""Code search against the encoder: PSNR / SSIM after each pass, beside JPEG's scan bytes at the same bits.

    python benchmarks/code_search.py --checkpoint app/weights/photo_tokenizer --split test_unseen --passes 4
    python benchmarks/code_search.py --checkpoint app/weights/photo_tokenizer_distilled --split val --passes 4

A tokenizer's encoder predicts a code in one pass; :func:`tokenizer.search_code` improves it by greedy bit
flips through the decoder (the same bits and decoder). This measures what each pass buys on fixed crops of
the photo corpus (``--data photo_corpus``), held-out emoji (``--data emoji``) or digits: on every image, and on
the images where JPEG's entropy-coded scan bytes fit the same bits (the codec compared with on those alone).

The search runs with each image's fixed decoder noise (seed 0, as ``rate_distortion.py``); every pass is
also decoded from another noise draw (seed 1), which shows whether the searched code is better for the
decoder or only for that one noise. Writes results.json and code_search.png to --out-dir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hardware import describe  # noqa: E402  (benchmarks/hardware.py, beside this script)
from rate_distortion import SPLITS, decode_all, encode_all, load_held_out, score, search_all  # noqa: E402

from runkit.fileio import atomic_write  # noqa: E402
from runkit.images import tensor_to_uint8, uint8_to_tensor  # noqa: E402
from tokenizer import load_flowmo  # noqa: E402
from tokenizer import classic_codecs as codecs  # noqa: E402
from tokenizer.eval import image_noise  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def plot(results: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against passes: all images, JPEG's images, and JPEG on those."""
    rows, jpeg = results["passes"], results["jpeg_on_fitting_images"]
    x = [row["pass"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        ax.plot(x, [row["all"][metric] for row in rows], "o-", label=f"FlowMo, all {results['num_images']} images")
        ax.plot(x, [row["other_noise"][metric] for row in rows], "x--", color="C0", alpha=0.6,
                label="the same codes, other decoder noise")
        if jpeg["count"]:
            ax.plot(x, [row["fitting"][metric] for row in rows], "s-", color="C1",
                    label=f"FlowMo, the {jpeg['count']} images JPEG fits")
            ax.axhline(jpeg[metric], color="C1", ls=":", label=f"JPEG scan bytes on those ({jpeg[metric]:.3g})")
        ax.set_xlabel("passes of code search (0: the encoder's code)")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{results['checkpoint']} on {results['data']}, {results['bits_per_image']} bits per image",
                 fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="save_pretrained dir, training run dir or step dir")
    parser.add_argument("--data", default="photo_corpus", choices=["digits", *sorted(SPLITS)])
    parser.add_argument("--split", default=None, help="as rate_distortion.py (default: the data's first split)")
    parser.add_argument("--root", default=None)
    parser.add_argument("--eval-crops", type=int, default=4, help="--data photo_corpus: fixed crops per photo")
    parser.add_argument("--num-images", type=int, default=None, help="evenly spaced subset")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: benchmarks/results/code_search_<data>")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.val_root = None
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_flowmo(args.checkpoint).to(device).eval()
    bits = model.config.bits_per_image
    images, _, name = load_held_out(args, model.config.image_size)
    out_dir = args.out_dir or RESULTS_DIR / f"code_search_{name}_{Path(args.checkpoint).name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    originals_u8 = tensor_to_uint8(images).numpy()
    originals = uint8_to_tensor(originals_u8)
    jpeg = codecs.jpeg_at_budget(originals_u8, bits, grey=codecs.is_grey(originals_u8))
    fits = torch.from_numpy(np.flatnonzero(jpeg.fits))
    shape = tuple(images.shape[1:])
    noise = torch.stack([image_noise(i, 0, shape) for i in range(len(images))])
    other_noise = torch.stack([image_noise(i, 1, shape) for i in range(len(images))])

    def scored(codes: torch.Tensor) -> dict[str, dict[str, float]]:
        recons = decode_all(model, codes, noise, args.batch_size, {})[0]
        others = decode_all(model, codes, other_noise, args.batch_size, {})[0]
        return {"all": score(originals, recons, None, args.batch_size),
                "fitting": score(originals[fits], recons[fits], None, args.batch_size) if len(fits) else None,
                "other_noise": score(originals, others, None, args.batch_size)}

    codes = encode_all(model, images, args.batch_size)
    rows = [{"pass": 0, "bits_flipped": 0, "seconds": 0.0, **scored(codes)}]
    print(f"{name}: {len(images)} images, JPEG fits {len(fits)}; encoder: PSNR {rows[0]['all']['psnr']:.2f}",
          flush=True)
    for pass_index in range(args.passes):
        # One pass at a time from the last codes: the same codes as one call of all passes, scored after each.
        searched, ms_per_image = search_all(model, images, noise, 1, args.batch_size, {}, codes=codes,
                                            order_seed=pass_index)
        flipped, codes = int((searched != codes).sum()), searched
        rows.append({"pass": pass_index + 1, "bits_flipped": flipped, "seconds": ms_per_image * len(images) / 1000,
                     **scored(codes)})
        row = rows[-1]
        on_fitting = (f", on JPEG's {len(fits)}: {row['fitting']['psnr']:.2f} / SSIM {row['fitting']['ssim']:.4f}"
                      if row["fitting"] else "")
        print(f"pass {row['pass']}: {flipped} bits flipped in {row['seconds']:.0f} s; PSNR {row['all']['psnr']:.2f} "
              f"(other noise {row['other_noise']['psnr']:.2f}){on_fitting}", flush=True)
    jpeg_scores = (score(originals[fits], uint8_to_tensor(jpeg.recon[fits.numpy()]), None, args.batch_size)
                   if len(fits) else {})
    results = {"checkpoint": str(args.checkpoint), "data": name, "num_images": len(images), "bits_per_image": bits,
               "decode": model.decode_settings(), "hardware": describe(device),
               "threads": torch.get_num_threads(), "passes": rows,
               "jpeg_on_fitting_images": {"count": len(fits), **jpeg_scores}}
    print(f"JPEG scan bytes on those {len(fits)}: PSNR {jpeg_scores['psnr']:.2f} / SSIM {jpeg_scores['ssim']:.4f}"
          if jpeg_scores else f"JPEG's scan bytes fit none of the images at {bits} bits")
    atomic_write(out_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    plot(results, out_dir / "code_search.png")
    return results


if __name__ == "__main__":
    main()
