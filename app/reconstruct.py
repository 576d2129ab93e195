"""The Reconstruct tab: an image -> tokens -> reconstruction, with PSNR, LPIPS, bits per pixel and decode time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor

from generator.pipeline import Pipeline
from tokenizer import search_evaluations

from .checks import check_decode, check_seed, image_tensor
from .decoding import ProgressFn, within
from .limits import DemoLimits, check_int
from .models import LoadedModels, evaluations_text, tokenizer_domain
from .settings import DemoSettings
from .visualize import for_display, token_map


@dataclass
class ReconstructionResult:
    """What one Reconstruct request returns."""

    original: Tensor  # (1, 3, H, W) the resized, centre-cropped input
    reconstruction: Tensor  # (1, 3, H, W)
    indices: Tensor  # (1, N)
    psnr: float
    lpips: float | None  # None: no LPIPS backbone configured
    lpips_calibrated: bool
    bits_per_pixel: float
    bits: int  # bits in the token sequence of one image
    comparison: Image.Image  # original | reconstruction
    token_map: Image.Image
    tokenizer: str  # the label of the tokenizer used
    decode_steps: int
    decode_cfg: float
    decode_ms: float  # wall time of the decoder alone
    decode_evaluations: int  # decoder network calls per image: the decode cost
    search_passes: int = 0  # passes of token search (0: the encoder's tokens)
    encode_ms: float = 0.0  # wall time of finding the tokens (encoder, and search when asked)
    bits_changed: int = 0  # bits that search changed from the encoder's tokens
    notes: list[str] = field(default_factory=list)  # what was done to the input (e.g. transparency flattened)

    def metrics_rows(self) -> list[list[str]]:
        """[metric, value] rows for a table; LPIPS says why it is missing or that it is uncalibrated."""
        from evaluation.metrics import UNCALIBRATED_NOTE

        if self.lpips is None:
            lpips = "unavailable (set lpips.weights=/path/to/backbone.pth, or lpips.allow_random=true)"
        elif self.lpips_calibrated:
            lpips = f"{self.lpips:.4f}"
        else:
            lpips = f"{self.lpips:.4f}{UNCALIBRATED_NOTE}"
        steps = f"{self.decode_steps} step{'' if self.decode_steps == 1 else 's'}"
        return [["PSNR (dB)", f"{self.psnr:.2f}"], ["LPIPS", lpips],
                ["BPP", f"{self.bits_per_pixel:.4f}"], ["bits used", str(self.bits)],
                ["tokenizer", self.tokenizer],
                ["decoder", f"{steps}, CFG {self.decode_cfg:g}, {evaluations_text(self.decode_evaluations)}"],
                ["token search", f"{self.search_passes} pass{'' if self.search_passes == 1 else 'es'}, "
                                 f"{self.bits_changed} of {self.bits} bits changed" if self.search_passes
                 else "off (the encoder's tokens)"],
                ["encode time (ms)", f"{self.encode_ms:.0f}"],
                ["decode time (ms)", f"{self.decode_ms:.0f}"]] + [["note", note] for note in self.notes]


def build_lpips_metric(settings: DemoSettings, device: torch.device) -> Any:
    """The configured LPIPS metric, or None when no backbone weights are configured."""
    if settings.lpips_weights is None and not settings.allow_random_lpips:
        return None
    from evaluation.metrics import LPIPSMetric

    return LPIPSMetric(net=settings.lpips_net, backbone_weights=settings.lpips_weights,
                       allow_random=settings.allow_random_lpips, device=device, option="lpips.weights")


def reconstruct(models: LoadedModels, limits: DemoLimits, lpips_metric: Callable[[], Any], image: Any,
                decode_steps: int | None = None, decode_cfg: float | None = None, seed: int = 0,
                tokenizer: str | None = None, progress: ProgressFn | None = None,
                search_passes: int = 0) -> ReconstructionResult:
    """Image (path, bytes or PIL) -> tokens -> reconstruction, with PSNR, LPIPS, BPP and decode time.

    ``tokenizer``: a loaded tokenizer's API name or label ("photos", "Photo tokenizer"); None: the main one.
    ``search_passes`` > 0: the tokens are found by code search for this decoder and seed (the same bits,
    a closer reconstruction; each pass costs one decode per bit).
    ``lpips_metric()`` gives the LPIPS metric or None; it is asked for after decoding, so bad input never
    costs loading its backbone.
    """
    from runkit.images import make_grid_image
    from evaluation.metrics import psnr

    name = models.resolve_tokenizer(tokenizer)
    flowmo = models.tokenizers[name]
    pipe = Pipeline(None, flowmo)
    decode_steps, decode_cfg = check_decode(limits, flowmo, decode_steps, decode_cfg)
    seed = check_seed(seed)
    search_passes = check_int("token search passes", search_passes, 0, limits.max_search_passes)
    cost = search_evaluations(flowmo, search_passes, steps=decode_steps, cfg=decode_cfg)
    if cost > limits.max_search_evaluations:
        raise ValueError(f"token search of {search_passes} pass(es) would take {cost:,} decoder evaluations "
                         f"({flowmo.config.bits_per_image} bits x "
                         f"{flowmo.decode_evaluations(decode_steps, decode_cfg)} per decode, each pass); this demo "
                         f"allows {limits.max_search_evaluations:,} (limits.max_search_evaluations): use fewer "
                         "passes or decoder steps, or 0 passes")
    notes: list[str] = []
    original = image_tensor(limits, flowmo, image, "image", notes)
    if progress is not None:
        progress(0.0, "encoding")
    start = time.perf_counter()
    bits_changed = 0
    if search_passes:
        found = pipe.search_tokens(original, passes=search_passes, seed=seed, steps=decode_steps, cfg=decode_cfg,
                                   progress=within(progress, 0.0, 0.9))
        indices, bits_changed = found.indices, int(found.flips.sum())
    else:
        indices = pipe.tokenize(original)
    encode_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    recon = pipe.decode(indices, seed=seed, steps=decode_steps, cfg=decode_cfg,
                        progress=within(progress, 0.9 if search_passes else 0.1, 0.95))
    decode_ms = (time.perf_counter() - start) * 1000  # decode ends with a copy to the CPU, so CUDA is done
    original = original.float().cpu()
    metric = lpips_metric()
    lpips_value, calibrated = None, False
    if metric is not None:
        with torch.inference_mode():
            lpips_value = float(metric(original, recon).mean())
        calibrated = bool(metric.calibrated)
    tok = flowmo.config
    return ReconstructionResult(
        original=original, reconstruction=recon, indices=indices,
        psnr=float(psnr(original, recon).mean()), lpips=lpips_value, lpips_calibrated=calibrated,
        bits_per_pixel=tok.bits_per_pixel, bits=tok.bits_per_image,
        comparison=make_grid_image(for_display(torch.cat([original, recon])), nrow=2,
                                   labels=["original", "reconstruction"]),
        token_map=token_map(flowmo, indices, 1, ["tokens"]),
        tokenizer=tokenizer_domain(name).label, decode_steps=decode_steps, decode_cfg=decode_cfg,
        decode_ms=decode_ms, decode_evaluations=flowmo.decode_evaluations(decode_steps, decode_cfg),
        search_passes=search_passes, encode_ms=encode_ms, bits_changed=bits_changed, notes=notes)
