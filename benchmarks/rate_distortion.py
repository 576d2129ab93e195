"""Rate–distortion of a FlowMo tokenizer against classic codecs held to the same bits per image.

    python benchmarks/rate_distortion.py --checkpoint app/weights/tokenizer --data digits
    python benchmarks/rate_distortion.py --checkpoint app/weights/photo_tokenizer --data photo_corpus --split test_unseen
    python benchmarks/rate_distortion.py --checkpoint app/weights/emoji_tokenizer --data emoji --split test_style
    python benchmarks/rate_distortion.py --checkpoint runs/flowmo --data imagefolder --val-root ~/photos/val \
        --num-images 500 --lpips-weights ~/weights/alexnet-owt-7be5be79.pth

The tokenizer spends code_length x context_dim bits per image. On the held-out images it is
measured at its default decoder settings and over a sweep of sampler steps x guidance (PSNR,
SSIM, decode ms/image, decoder evaluations/image), and compared with a thumbnail codec, JPEG
and WebP at exactly those bits and at 1/4..4x of them (payload bits only: see the notes printed
with the table). ``--search-passes N`` adds the same tokenizer with its codes found by code search
(:func:`tokenizer.search_code`: the same bits and decoder, a costlier encoder). Writes results.json,
rate_distortion.png and comparison.png to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np
import torch
import torch.nn.functional as F

from evaluation.metrics import LPIPSMetric, psnr, ssim
from imagedata import build_dataset
from runkit.fileio import atomic_write
from runkit.images import make_grid_image, tensor_to_uint8, uint8_to_tensor
from tokenizer import FlowMo, load_flowmo, search_code
from tokenizer import classic_codecs as codecs
from tokenizer.eval import image_noise

from hardware import describe  # benchmarks/hardware.py, beside this script

DECODER_SWEEP = tuple((steps, cfg) for steps in (1, 2, 4, 8, 25) for cfg in (1.0, 1.5))
BUDGET_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
GRID_IMAGES = 16
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# --data -> its --split choices, the default first (photo_corpus: the unseen package, held-out files of the training
# packages, fixed crops of the training files; emoji: held-out emoji in the training styles, the held-out style,
# the training images without jitter).
SPLITS = {"photo_corpus": ("test_unseen", "val", "train"), "emoji": ("val", "test_style", "train")}
DEFAULT_ROOTS = {"photo_corpus": "data/photo_corpus", "emoji": "data/emoji"}


# ------------------------------------------------------------------------------------------ data
def load_held_out(args: argparse.Namespace, image_size: int) -> tuple[torch.Tensor, list[int], str]:
    """The held-out split as (images (N,3,S,S) in [-1,1], labels, a short name for it).

    digits: the fixed val split; imagefolder: every image of ``--val-root``; photo_corpus: the fixed
    multi-scale crops (``--eval-crops`` per photo) of split ``--split`` of the corpus at ``--root``;
    emoji: every image of split ``--split`` (val: held-out emoji in the training styles, test_style:
    the held-out OpenMoji style) of the dataset at ``--root``, centred, without the training jitter.
    """
    split, root = resolve_split(args), getattr(args, "root", None) or DEFAULT_ROOTS.get(args.data)
    if args.data == "digits":
        data_cfg: dict[str, Any] = {"name": "digits"}
        name = "digits"
    elif args.data == "photo_corpus":
        data_cfg = {"name": "photo_crops", "root": root, "val_split": split, "eval_crops": args.eval_crops}
        name = f"photo_corpus_{split}"
    elif args.data == "emoji":
        data_cfg = {"name": "emoji", "root": root, "val_split": split}
        name = f"emoji_{split}"
    else:
        if args.val_root is None:
            raise SystemExit("--data imagefolder needs --val-root PATH")
        data_cfg = {"name": "imagefolder", "val_root": args.val_root}
        name = Path(args.val_root).expanduser().resolve().name
    if args.num_images is not None:
        data_cfg["subsample"] = args.num_images  # evenly spaced, so every class is represented
    dataset = build_dataset(data_cfg, "val", image_size, train=False)
    samples = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in samples]), [label for _, label in samples], name


def resolve_split(args: argparse.Namespace) -> str | None:
    """``--split``, or the default split of ``--data`` (None where the data has no split choice)."""
    choices, requested = SPLITS.get(args.data), getattr(args, "split", None)  # other scripts' args may lack it
    if choices is None:
        if requested is not None:
            raise SystemExit(f"--split applies to --data {' / '.join(SPLITS)}, not {args.data}")
        return None
    split = requested or choices[0]
    if split not in choices:
        raise SystemExit(f"--data {args.data} has splits {', '.join(choices)}; got --split {split}")
    return split


def grid_indices(labels: Sequence[int], count: int) -> list[int]:
    """Positions of ``count`` images for the comparison grid, taking every class in turn.

    The first image of each class, then the second of each, ...; with more classes than
    cells, classes evenly spread over the sorted class list.
    """
    classes = sorted(set(labels))
    if len(classes) > count:
        classes = [classes[i] for i in np.linspace(0, len(classes) - 1, count).round().astype(int)]
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    rounds = max(len(m) for m in members.values())
    order = [members[c][r] for r in range(rounds) for c in classes if r < len(members[c])]
    return order[:count]


# --------------------------------------------------------------------------------------- metrics
def score(originals: torch.Tensor, recons: torch.Tensor, lpips: LPIPSMetric | None,
          batch_size: int) -> dict[str, float]:
    """Mean PSNR, SSIM (and LPIPS) over images; originals, recons (N,3,H,W) in [-1,1], both uint8-rounded."""
    per_image: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "lpips": []}
    for start in range(0, len(originals), batch_size):
        x, y = originals[start:start + batch_size], recons[start:start + batch_size]
        per_image["psnr"].append(psnr(x, y))
        per_image["ssim"].append(ssim(x, y))
        if lpips is not None:
            per_image["lpips"].append(lpips(x, y))
    return {name: float(torch.cat(values).double().mean()) for name, values in per_image.items() if values}


# ------------------------------------------------------------------------------------- tokenizer
def default_decode(model: FlowMo) -> tuple[dict[str, Any], int, float, str]:
    """(decode kwargs, steps, cfg, where they come from) for the tokenizer's default decoder settings:
    ``decode()`` without sampler arguments uses the settings saved with the weights."""
    saved = model.decode_settings()
    return {}, saved["steps"], float(saved["cfg"]), "default, saved with the weights"


@contextmanager
def count_decoder_rows(model: FlowMo) -> Iterator[list[int]]:
    """Count the rows the decoder network evaluates while inside (a one-element list).

    ``model.velocity_from_input`` is wrapped on the instance; with guidance active a step
    evaluates the conditional and unconditional rows in one call, so it counts 2 per image.
    """
    rows = [0]
    inner = model.velocity_from_input

    def counted(x_t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows[0] += x_t.shape[0]
        return inner(x_t, *args, **kwargs)

    model.velocity_from_input = counted
    try:
        yield rows
    finally:
        del model.velocity_from_input


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def decode_all(model: FlowMo, codes: torch.Tensor, noise: torch.Tensor, batch_size: int,
               decode_kwargs: dict[str, Any]) -> tuple[torch.Tensor, float, float]:
    """Decode every code in batches after one untimed warm-up batch.

    codes (N,L,C), noise (N,3,H,W) -> (recons (N,3,H,W) on the CPU, ms per image, decoder rows per image).
    """
    device = model.device

    def run(start: int) -> torch.Tensor:
        batch = slice(start, start + batch_size)
        return model.decode(codes[batch].to(device), noise=noise[batch].to(device), **decode_kwargs)

    run(0)
    recons = []
    with count_decoder_rows(model) as rows:
        synchronize(device)
        start_time = time.perf_counter()
        for start in range(0, len(codes), batch_size):
            recons.append(run(start))
        synchronize(device)
        elapsed = time.perf_counter() - start_time
    # Scored as the uint8 images a user would save, like the codecs' outputs.
    recons = uint8_to_tensor(tensor_to_uint8(torch.cat(recons)))
    return recons, 1000.0 * elapsed / len(codes), rows[0] / len(codes)


@torch.no_grad()
def encode_all(model: FlowMo, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """images (N,3,H,W) -> quantized codes (N,L,C): exactly the bits the tokenizer transmits."""
    device = model.device
    return torch.cat([model.quantize(model.encode(images[i:i + batch_size].to(device))).code.cpu()
                      for i in range(0, len(images), batch_size)])


def search_all(model: FlowMo, images: torch.Tensor, noise: torch.Tensor, passes: int, batch_size: int,
               decode_kwargs: dict[str, Any], codes: torch.Tensor | None = None,
               order_seed: int = 0) -> tuple[torch.Tensor, float]:
    """images, noise (N,3,H,W) -> (codes (N,L,C) found by ``passes`` of code search for the decoder noise and
    settings they will be decoded with, encode ms per image). ``codes``: where to start (default: the
    encoder's); ``order_seed``: as :func:`tokenizer.search_code` (pass ``p`` of a call with ``order_seed=0``
    visits the bits as a one-pass call with ``order_seed=p``)."""
    from tqdm import tqdm

    device, found_codes = model.device, []
    bits = model.config.bits_per_image
    with tqdm(total=len(images) * passes * bits, desc=f"code search ({passes} passes)", unit="decode",
              unit_scale=True) as bar:
        synchronize(device)
        start_time = time.perf_counter()
        for start in range(0, len(images), batch_size):
            batch = slice(start, start + batch_size)
            rows, last = len(images[batch]), [0]

            def advance(done: int, total: int, rows: int = rows, last: list[int] = last) -> None:
                bar.update((done - last[0]) * rows)
                last[0] = done

            start_code = None if codes is None else codes[batch].to(device)
            found = search_code(model, images[batch].to(device), passes=passes, code=start_code,
                                noise=noise[batch].to(device), order_seed=order_seed, progress=advance,
                                **decode_kwargs)
            found_codes.append(found.code.cpu())
        synchronize(device)
        elapsed = time.perf_counter() - start_time
    return torch.cat(found_codes), 1000.0 * elapsed / len(images)


# ---------------------------------------------------------------------------------------- codecs
def run_codecs(originals_u8: np.ndarray, budgets: Sequence[int], grey: bool,
               measure: Callable[[torch.Tensor], dict[str, float]]) -> tuple[list[dict[str, Any]], dict, dict]:
    """Every codec at every budget -> (table rows, reconstructions (N,H,W,3) uint8 and per-image
    "fits the budget" masks (N,) bool of JPEG/WebP, both keyed by (codec, budget))."""
    count = len(originals_u8)
    rows, recons, fits = [], {}, {}
    for budget in budgets:
        if codecs.thumbnail_candidates(budget, min(originals_u8.shape[1:3]), grey):
            recon, choice = codecs.best_thumbnail(originals_u8, budget, grey)
            recons["thumbnail", budget] = recon
            rows.append({"method": "thumbnail", "budget_bits": budget, "bits_mean": float(choice.total_bits),
                         "bits_max": choice.total_bits, "over_budget": 0,
                         "setting": f"{choice.size}x{choice.size} @ {choice.bits} bit",
                         **measure(uint8_to_tensor(recon))})
    searches = [("JPEG", codecs.jpeg_at_budgets)]
    if codecs.WEBP_AVAILABLE:
        searches.append(("WebP", codecs.webp_at_budgets))
    for name, search in searches:
        for budget, result in zip(budgets, search(originals_u8, budgets, grey)):
            recons[name, budget] = result.recon
            fits[name, budget] = result.fits
            q = result.qualities
            row = {"method": name, "budget_bits": budget, "bits_mean": float(result.bits.mean()),
                   "bits_max": int(result.bits.max()), "over_budget": int(count - result.fits.sum()),
                   "setting": f"quality {q.min()}" if q.min() == q.max()
                   else f"quality {q.min()}-{q.max()} (median {np.median(q):g})",
                   **measure(uint8_to_tensor(result.recon))}
            if name == "JPEG":
                row["header_bytes_median"] = float(np.median([
                    codecs.jpeg_header_bytes(codecs.to_pil(image, grey), int(quality))
                    for image, quality in zip(originals_u8, q)]))
            rows.append(row)
    return rows, recons, fits


# --------------------------------------------------------------------------------------- outputs
def plot_rate_distortion(codec_rows: list[dict[str, Any]], tokenizer_rows: list[dict[str, Any]], bits: int,
                         path: Path) -> None:
    """PSNR and SSIM against bits per image: codec curves over the budgets, tokenizer points at its bits.

    Codec points sit at the mean payload bits actually spent, so an image that no quality fits
    moves its point right of the budget rather than flattering the codec at it.
    """
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for axis, metric, label in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        for method, marker in (("thumbnail", "o"), ("JPEG", "s"), ("WebP", "^")):
            points = sorted((r["bits_mean"], r[metric]) for r in codec_rows if r["method"] == method)
            if points:
                axis.plot(*zip(*points), marker=marker, label=method)
        sweep = tokenizer_rows[1:]
        for row, colour in zip(sweep, plt.cm.viridis(np.linspace(0, 0.9, len(sweep)))):
            axis.scatter([bits], [row[metric]], color=colour, marker="x" if row["cfg"] == 1.0 else "+", s=60, zorder=3,
                         label=f"FlowMo {row['setting']}")
        axis.scatter([bits], [tokenizer_rows[0][metric]], marker="*", s=220, color="black", zorder=4,
                     label=f"FlowMo {tokenizer_rows[0]['setting']}")
        axis.axvline(bits, color="grey", linewidth=0.5, linestyle=":")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("bits per image (codecs: mean payload bits spent)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def save_comparison(rows: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """One grid row per (name, images (K,3,H,W) in [-1,1]), upscaled (nearest) to about 96 px a cell."""
    images = torch.cat([images for _, images in rows])
    scale = max(1, 96 // images.shape[-1])
    images = F.interpolate(images, scale_factor=scale, mode="nearest")
    count = len(rows[0][1])
    labels = [name if i == 0 else "" for name, _ in rows for i in range(count)]
    grid = make_grid_image(images, nrow=count, labels=labels)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def format_table(rows: list[dict[str, Any]], lpips: bool) -> list[str]:
    """Aligned markdown table of tokenizer and codec rows ('-' where a column does not apply)."""
    columns = [("method", "method", "{}"), ("budget bits", "budget_bits", "{}"),
               ("bits used (mean)", "bits_mean", "{:.0f}"), ("setting", "setting", "{}"), ("PSNR dB", "psnr", "{:.2f}"),
               ("SSIM", "ssim", "{:.4f}")]
    if lpips:
        columns.append(("LPIPS", "lpips", "{:.4f}"))
    columns += [("ms/image", "ms_per_image", "{:.2f}"), ("NFE/image", "nfe_per_image", "{:.1f}"),
                ("over budget", "over_budget", "{}")]
    cells = [[header for header, _, _ in columns]]
    cells += [[form.format(row[key]) if row.get(key) is not None else "-" for _, key, form in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    numeric = [i > 0 and i != 3 for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if right else v.ljust(w)
                                  for v, w, right in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if right else "-" * (w + 2) for w, right in zip(widths, numeric)) + "|"
    return [line(cells[0]), rule] + [line(values) for values in cells[1:]]


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="save_pretrained dir, training run dir or step dir")
    parser.add_argument("--data", required=True, choices=["digits", "imagefolder", "photo_corpus", "emoji"])
    parser.add_argument("--val-root", default=None, help="image folder of held-out images (--data imagefolder)")
    parser.add_argument("--root", default=None,
                        help="--data photo_corpus: corpus of python -m imagedata.prepare photos (default "
                             "data/photo_corpus); --data emoji: python -m imagedata.prepare emoji (default data/emoji)")
    parser.add_argument("--split", default=None, choices=sorted({s for splits in SPLITS.values() for s in splits}),
                        help="--data photo_corpus: test_unseen (default; the unseen package), val (held-out files of "
                             "the training packages) or train (fixed crops of the training files); --data emoji: val "
                             "(default; held-out emoji, training styles), test_style (the held-out OpenMoji style, "
                             "every emoji) or train")
    parser.add_argument("--eval-crops", type=int, default=4, help="--data photo_corpus: fixed crops per photo")
    parser.add_argument("--num-images", type=int, default=None, help="evenly spaced subset of the val split")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results/rd_<data>")
    parser.add_argument("--grey", default="auto", choices=["auto", "yes", "no"],
                        help="code one channel of grey data (auto: all channels equal on every image)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="per-image decoder noise seed (as tokenizer.eval)")
    parser.add_argument("--search-passes", type=int, default=0,
                        help="also score codes found by this many passes of code search (tokenizer.search_code) at "
                             "the default decoder settings; each pass costs one decode per bit per image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lpips-weights", default=None, help="torchvision alexnet/vgg .pth: adds an LPIPS column")
    parser.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, sweep: Sequence[tuple[int, float]] = DECODER_SWEEP) -> dict[str, Any]:
    """Run the benchmark (``sweep``: the (steps, cfg) settings decoded besides the default); returns results.json."""
    args = parse_args(argv)
    device = torch.device(args.device)
    model = load_flowmo(args.checkpoint).to(device).eval()
    config = model.config
    bits = config.bits_per_image
    images, labels, data_name = load_held_out(args, config.image_size)
    out_dir = Path(args.out_dir) if args.out_dir is not None else RESULTS_DIR / f"rd_{data_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    originals_u8 = tensor_to_uint8(images).numpy()
    grey = codecs.is_grey(originals_u8) if args.grey == "auto" else args.grey == "yes"
    originals = uint8_to_tensor(originals_u8)  # what every method is scored against
    lpips = (LPIPSMetric(args.lpips_net, backbone_weights=args.lpips_weights, device=device)
             if args.lpips_weights else None)

    def measure(recons: torch.Tensor) -> dict[str, float]:
        return score(originals, recons, lpips, args.batch_size)

    codes = encode_all(model, images, args.batch_size)
    noise = torch.stack([image_noise(i, args.seed, tuple(images.shape[1:])) for i in range(len(images))])
    default_kwargs, default_steps, default_cfg, source = default_decode(model)
    settings = [(default_kwargs, default_steps, default_cfg, f" ({source})")]
    settings += [({"steps": steps, "cfg": float(cfg)}, steps, float(cfg), "") for steps, cfg in sweep]
    tokenizer_rows, decoded = [], {}
    for kwargs, steps, cfg, suffix in settings:
        # The sweep entry equal to the default is the same call as decode() without arguments: reuse it.
        if (steps, cfg) not in decoded:
            decoded[steps, cfg] = decode_all(model, codes, noise, args.batch_size, kwargs)
        recons, ms, nfe = decoded[steps, cfg]
        tokenizer_rows.append({"method": "FlowMo", "budget_bits": bits, "bits_mean": float(bits), "bits_max": bits,
                               "over_budget": 0, "setting": f"steps {steps}, cfg {cfg}{suffix}", "steps": steps,
                               "cfg": cfg, "ms_per_image": ms, "nfe_per_image": nfe, **measure(recons)})
    default_recons = decoded[default_steps, default_cfg][0]
    searched_recons = None
    if args.search_passes:
        searched, encode_ms = search_all(model, images, noise, args.search_passes, args.batch_size, default_kwargs)
        searched_recons, ms, nfe = decode_all(model, searched, noise, args.batch_size, default_kwargs)
        tokenizer_rows.append({
            "method": "FlowMo + code search", "budget_bits": bits, "bits_mean": float(bits), "bits_max": bits,
            "over_budget": 0,
            "setting": f"steps {default_steps}, cfg {default_cfg}, {args.search_passes} search "
                       f"pass{'' if args.search_passes == 1 else 'es'}",
            "steps": default_steps, "cfg": default_cfg, "search_passes": args.search_passes,
            "encode_ms_per_image": encode_ms, "bits_changed_mean": float((searched != codes).flatten(1).sum(1)
                                                                          .double().mean()),
            "ms_per_image": ms, "nfe_per_image": nfe, **measure(searched_recons)})

    budgets = sorted({max(1, round(factor * bits)) for factor in BUDGET_FACTORS})
    codec_rows, codec_recons, codec_fits = run_codecs(originals_u8, budgets, grey, measure)
    codec_rows.sort(key=lambda row: (row["budget_bits"] != bits, row["budget_bits"]))
    eligible = [row for row in codec_rows if row["budget_bits"] == bits and row["over_budget"] == 0]
    best = max(eligible, key=lambda row: row["psnr"])

    pick = grid_indices(labels, GRID_IMAGES)
    best_recons = uint8_to_tensor(codec_recons[best["method"], bits][pick])
    search_grid = [("FlowMo + code search", searched_recons[pick])] if searched_recons is not None else []
    save_comparison([("original", originals[pick]), ("FlowMo", default_recons[pick]), *search_grid,
                     (f"{best['method']} {best['setting']}", best_recons)], out_dir / "comparison.png")
    plot_rate_distortion(codec_rows, tokenizer_rows, bits, out_dir / "rate_distortion.png")

    count = len(images)
    at_bits = {row["method"]: row for row in codec_rows if row["budget_bits"] == bits}
    verdicts = [f"FlowMo ({tokenizer_rows[0]['setting']}) - best codec ({best['method']}): "
                f"{tokenizer_rows[0]['psnr'] - best['psnr']:+.2f} dB PSNR, {tokenizer_rows[0]['ssim'] - best['ssim']:+.4f} SSIM"]
    searched_row = next((row for row in tokenizer_rows if row["method"] == "FlowMo + code search"), None)
    if searched_row is not None:
        verdicts.append(f"FlowMo + code search ({searched_row['setting']}) - best codec ({best['method']}): "
                        f"{searched_row['psnr'] - best['psnr']:+.2f} dB PSNR, "
                        f"{searched_row['ssim'] - best['ssim']:+.4f} SSIM")
    for name, row in at_bits.items():
        fits = codec_fits.get((name, bits))
        if fits is None or row["over_budget"] in (0, count):
            continue
        # A codec that fits only some images: compare both on exactly those images.
        subset = torch.from_numpy(np.flatnonzero(fits))
        ours = score(originals[subset], default_recons[subset], lpips, args.batch_size)
        theirs = score(originals[subset], uint8_to_tensor(codec_recons[name, bits][subset.numpy()]), lpips,
                       args.batch_size)
        row["on_fitting_images"] = {"count": len(subset), "codec": theirs, "flowmo": ours}
        verdict = (f"on the {len(subset)}/{count} images {name} fits at {bits} bits: {name} "
                   f"{theirs['psnr']:.2f} dB / SSIM {theirs['ssim']:.4f}, FlowMo {ours['psnr']:.2f} dB / "
                   f"SSIM {ours['ssim']:.4f}")
        if searched_recons is not None:
            with_search = score(originals[subset], searched_recons[subset], lpips, args.batch_size)
            row["on_fitting_images"]["flowmo_code_search"] = with_search
            verdict += f", FlowMo + code search {with_search['psnr']:.2f} dB / SSIM {with_search['ssim']:.4f}"
        verdicts.append(verdict)
    container = codecs.RIFF_HEADER_BYTES + codecs.CHUNK_HEADER_BYTES
    excluded = 8 * (container + codecs.VP8_FRAME_HEADER_BYTES)
    notes = [
        f"bits/image: FlowMo {config.code_length} x {config.context_dim} bits; thumbnail size^2 x bits x "
        f"{1 if grey else 3} channel(s); JPEG and WebP payload only (below), per image the highest quality that fits",
        f"JPEG: entropy-coded scan bytes only; headers and tables (~{at_bits['JPEG']['header_bytes_median']:.0f} "
        f"bytes for this size) excluded (Pillow, optimised Huffman tables, {'grey' if grey else '4:2:0'})",
        (f"WebP: VP8 bitstream only ('VP8 ' chunk payload minus its {codecs.VP8_FRAME_HEADER_BYTES}-byte frame "
         f"header); the RIFF and chunk headers ({container} bytes) and that frame header, {excluded} bits in all, "
         f"are excluded ({excluded / bits:.2f}x the {bits}-bit budget); lossy, method 6"
         if codecs.WEBP_AVAILABLE else "WebP: not available in this Pillow build"),
        f"At {bits} bits no JPEG scan fits for {at_bits['JPEG']['over_budget']}/{count} images"
        + (f", no WebP payload for {at_bits['WebP']['over_budget']}/{count}" if "WebP" in at_bits else "")
        + "; those are scored at the lowest quality (over budget), and such a codec cannot be 'best codec'",
        "thumbnail: size and bit depth picked for the best mean PSNR on this very set (an oracle choice: "
        "favours the baseline)",
        f"FlowMo ms/image: decode only, batch {args.batch_size}, after one warm-up batch; NFE/image: decoder rows "
        "per image (a guided step counts 2)",
        f"best codec at {bits} bits with every image within budget: {best['method']} {best['setting']} "
        f"(comparison.png, last row)",
    ]
    if searched_row is not None:
        notes.append(f"FlowMo + code search: the same {bits} bits and decoder; each code found by "
                     f"{args.search_passes} passes of greedy bit flips (tokenizer.search_code) for the decoder noise "
                     f"it is scored with; encoding {searched_row['encode_ms_per_image']:.0f} ms/image, "
                     f"{searched_row['bits_changed_mean']:.1f} of {bits} bits changed on average")
    params = sum(p.numel() for p in model.parameters())
    header = [
        f"FlowMo {args.checkpoint} ({params / 1e6:,.1f} M params, {config.image_size}px, {config.code_length} x "
        f"{config.context_dim} = {bits} bits/image, {config.bits_per_pixel:.4f} BPP) on {device} [{describe(device)}]",
        f"{data_name} val: {count} held-out images, {'grey' if grey else 'colour'}; decoder noise seed {args.seed}",
    ]
    print("\n".join(header + [f"- {note}" for note in notes] + [""] + format_table(tokenizer_rows + codec_rows,
                                                                                    lpips is not None)
                     + [""] + verdicts))
    results = {
        "checkpoint": str(args.checkpoint), "data": data_name, "num_images": count, "image_size": config.image_size,
        "grey": grey, "bits_per_image": bits, "bits_per_pixel": config.bits_per_pixel, "device": str(device),
        "hardware": describe(device), "batch_size": args.batch_size, "seed": args.seed, "header": header,
        "notes": notes, "verdicts": verdicts, "tokenizer": tokenizer_rows, "codecs": codec_rows, "best_codec_at_equal_bits": best,
        "files": {name: f"{name}.png" for name in ("rate_distortion", "comparison")},  # beside results.json
    }
    atomic_write(out_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    return results


if __name__ == "__main__":
    main()
