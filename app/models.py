"""The demo's model set: where the weights live, loading one consistent set, and naming what is loaded.

The embedded models in ``app/weights/`` load by default, one set per domain (:mod:`app.domains`:
digits, emoji), or any checkpoint a user points at. An extra photo tokenizer
(``app/weights/photo_tokenizer/`` when it is there) is offered for reconstruction only: no
generator was trained on its tokens. Where an embedded tokenizer has a
distilled few-step version beside it (``<name>_distilled/``: same encoder, same tokens, a decoder
trained to sample in 1-2 network evaluations), the demo loads that one. A set may also hold a generation
tokenizer (the same encoder and tokens, a decoder trained toward its teacher's samples rather than the
image): generated tokens decode through it, images the user gives through the tokenizer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from imagedata import DIGIT_NAMES

from .domains import DomainSpec, domain_unavailable_message, embedded_tokenizer_dir
from .settings import DemoSettings

APP_DIR = Path(__file__).resolve().parent
DEFAULT_WEIGHTS_DIR = APP_DIR / "weights"
PHOTO_TOKENIZER_DIR = "photo_tokenizer"  # the embedded photo tokenizer, under the weights dir
DIGITS_CLASSIFIER_DIR = "digits_classifier"  # the metric classifier of the digits data, under the weights dir
EXAMPLES_DIR = APP_DIR / "examples"

GENERATOR_LABELS = {"maskgit": "MaskGIT", "ar": "AR"}  # config.model -> name shown in the UI


@dataclass(frozen=True)
class TokenizerDomain:
    """What a tokenizer was trained on, as the Reconstruct tab presents it."""

    label: str  # the tokenizer's name in the UI
    examples: str  # glob in EXAMPLES_DIR: images this tokenizer can represent
    hint: str  # what to upload; {size} is the tokenizer's resolution


# The API name of a loaded tokenizer is its domain: "digits" / "emoji" (an embedded domain's tokenizer,
# app.domains), "photos" (the extra photo tokenizer) or "images" (a main tokenizer loaded from a checkpoint).
TOKENIZER_DOMAINS = {
    "digits": TokenizerDomain("Digits tokenizer", "digit_*.png",
                              "A handwritten digit, light on dark like scikit-learn's digits; it is centre-cropped "
                              "and shrunk to {size}×{size} px. This tokenizer cannot represent photos."),
    "emoji": TokenizerDomain("Emoji tokenizer", "emoji_*.png",
                             "One emoji on a white (or transparent) background, drawn in any style; it is "
                             "centre-cropped and shrunk to {size}×{size} px. The examples are emoji and styles the "
                             "tokenizer never trained on (held-out emoji of Noto and Twemoji, and OpenMoji)."),
    "photos": TokenizerDomain("Photo tokenizer", "photo_*.png",
                              "A colour photo; it is centre-cropped and shrunk to {size}×{size} px, so one object "
                              "or a detail works best, like the examples: cuts from photographs of a source the "
                              "tokenizer never trained on (OpenCV's sample pictures)."),
    "images": TokenizerDomain("Loaded tokenizer", "photo_*.png",
                              "Any image; it is centre-cropped and resized to {size}×{size} px."),
}


def tokenizer_domain(name: str) -> TokenizerDomain:
    """How the UI presents a tokenizer of this API name (a configured domain not listed: generic texts)."""
    if name in TOKENIZER_DOMAINS:
        return TOKENIZER_DOMAINS[name]
    return TokenizerDomain(f"{name.capitalize()} tokenizer", f"{name}_*.png",
                           "An image like the ones it was trained on; it is centre-cropped and resized to "
                           "{size}×{size} px.")


@dataclass(frozen=True)
class LoadedModels:
    """One consistent set of models; requests take a snapshot so a reload never mixes sets."""

    tokenizer: Any  # tokenizer.FlowMo: the generators' tokenizer; Reconstruct and Tokens decode through it
    tokenizer_source: str
    generators: dict[str, Any]  # "maskgit" / "ar" -> generator model
    generator_sources: dict[str, str]
    class_names: list[str]
    tokenizer_name: str = "images"  # the main tokenizer's key in TOKENIZER_DOMAINS
    extra_tokenizers: dict[str, Any] = field(default_factory=dict)  # "photos" -> FlowMo, reconstruction only
    extra_tokenizer_sources: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # shown in the status line: e.g. a generator trained on another tokenizer
    domain: str | None = None  # the embedded domain this set is (app.domains); None: loaded from checkpoints
    weights_dir: str | None = None  # where an embedded set came from (the other domains load from there too)
    generation_tokenizer: Any = None  # FlowMo with the tokenizer's encoder and a sampling decoder; None: tokenizer
    generation_tokenizer_source: str | None = None

    @property
    def generation_decoder(self) -> Any:
        """The FlowMo that generated tokens decode through (Generate, Evaluate): the generation tokenizer when
        the set has one, else the tokenizer."""
        return self.tokenizer if self.generation_tokenizer is None else self.generation_tokenizer

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizers(self) -> dict[str, Any]:
        """Every loaded tokenizer by API name, the main one first."""
        return {self.tokenizer_name: self.tokenizer, **self.extra_tokenizers}

    def resolve_generator(self, name: str) -> str:
        """The slot ("maskgit" / "ar") of a loaded generator named by label or slot, any case."""
        by_label = {label.lower(): slot for slot, label in GENERATOR_LABELS.items()}
        slot = by_label.get(str(name).strip().lower(), str(name).strip().lower())
        if not self.generators:
            raise ValueError("no generator is loaded: load a MaskGIT or AR checkpoint to generate")
        if slot not in self.generators:
            loaded = ", ".join(GENERATOR_LABELS[s] for s in self.generators)
            raise ValueError(f"generator {name!r} is not loaded; loaded: {loaded}")
        return slot

    def resolve_tokenizer(self, tokenizer: str | None) -> str:
        """The API name of a loaded tokenizer named by API name or label; None or empty: the main one."""
        if tokenizer in (None, ""):
            return self.tokenizer_name
        key = str(tokenizer).strip().lower()
        for name in self.tokenizers:
            if key in (name, tokenizer_domain(name).label.lower()):
                return name
        loaded = ", ".join(f"{name!r} ({tokenizer_domain(name).label})" for name in self.tokenizers)
        raise ValueError(f"tokenizer {tokenizer!r} is not loaded; loaded: {loaded}")

    def generator_defaults(self, generator: str) -> tuple[int, float, float]:
        """(steps, cfg, temperature) a generator samples with unless told otherwise: its saved defaults."""
        settings = self.generators[self.resolve_generator(generator)].sampling_settings()
        return settings["num_steps"], settings["cfg_scale"], settings["temperature"]


@dataclass(frozen=True)
class TokenizerChoice:
    """One loaded tokenizer as the Reconstruct tab offers it."""

    name: str  # API name: reconstruct(..., tokenizer=name)
    label: str
    hint: str
    examples: list[str]  # image paths in its domain
    decode_steps: int  # its saved sampler defaults (config.decode)
    decode_cfg: float
    num_indices: int = 0  # tokens per image (the Tokens tab's span range)
    search_cost: int = 0  # decoder evaluations per image for one pass of token search at its saved decoder


def tokenizer_choice(models: LoadedModels, tokenizer: str | None = None) -> TokenizerChoice:
    """A loaded tokenizer (API name or label; None: the main one) with its examples and decoder defaults."""
    from tokenizer import search_evaluations

    name = models.resolve_tokenizer(tokenizer)
    model = models.tokenizers[name]
    domain = tokenizer_domain(name)
    defaults = model.config.decode
    return TokenizerChoice(name=name, label=domain.label, hint=domain.hint.format(size=model.config.image_size),
                           examples=sorted(str(p) for p in EXAMPLES_DIR.glob(domain.examples)),
                           decode_steps=defaults.steps, decode_cfg=defaults.cfg,
                           num_indices=model.config.num_indices,
                           search_cost=search_evaluations(model, 1))


def generation_decoder_choice(models: LoadedModels) -> TokenizerChoice:
    """The decoder generated tokens go through, as the Generate and Evaluate tabs show it: the main
    tokenizer's choice, with the generation tokenizer's decoder defaults when the set has one."""
    choice = tokenizer_choice(models)
    if models.generation_tokenizer is None:
        return choice
    defaults = models.generation_tokenizer.config.decode
    return replace(choice, decode_steps=defaults.steps, decode_cfg=defaults.cfg)


def evaluations_text(count: int) -> str:
    """'1 network evaluation' / '4 network evaluations': a decode's cost in words."""
    return f"{count} network evaluation{'' if count == 1 else 's'}"


def _load_tokenizer(path: str | Path, preset: str | None, device: torch.device, dtype: torch.dtype,
                    option: str = "tokenizer.checkpoint=<dir or .pth>"):
    from tokenizer import load_flowmo

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"tokenizer checkpoint {path} not found (set {option})")
    return load_flowmo(path, config=preset or None).to(device=device, dtype=dtype).eval().requires_grad_(False)


def _load_generator(path: str | Path, slot: str, tokenizer, device: torch.device, dtype: torch.dtype):
    from generator import load_generator

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{GENERATOR_LABELS[slot]} checkpoint {path} not found "
                                f"(set generator.{slot}=<dir> or leave it empty)")
    model = load_generator(path)
    config = model.config
    if config.model != slot:
        raise ValueError(f"{path} holds a {GENERATOR_LABELS.get(config.model, config.model)} generator, "
                         f"not {GENERATOR_LABELS[slot]}: pass it as generator.{config.model}=...")
    try:
        model.check_tokenizer(tokenizer.config)
    except ValueError as error:
        raise ValueError(f"{GENERATOR_LABELS[slot]} generator {path} does not fit the loaded tokenizer "
                         f"({error}): load the tokenizer it was trained with") from None
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _load_generation_tokenizer(path: str | Path, flowmo, tokenizer_path: str | Path, device: torch.device,
                               dtype: torch.dtype):
    """The generation tokenizer at ``path``, checked to make the loaded tokenizer's tokens (same architecture
    and encoder weights), so the generators' tokens mean the same to its decoder."""
    from generator.tokens import encoder_fingerprint

    sampler = _load_tokenizer(path, None, device, dtype, option="tokenizer.generation_checkpoint=<dir>")
    same = (sampler.config.architecture_hash() == flowmo.config.architecture_hash()
            and encoder_fingerprint(sampler) == encoder_fingerprint(flowmo))
    if not same:
        raise ValueError(f"generation tokenizer {path} does not share the encoder of tokenizer {tokenizer_path}, so "
                         "its decoder reads the tokens differently: give one distilled from that tokenizer "
                         "(stage=distill keeps the encoder) or none")
    return sampler


def load_models(tokenizer: str | Path | None = None, tokenizer_preset: str | None = None,
                maskgit: str | Path | None = None, ar: str | Path | None = None, *,
                photo_tokenizer: str | Path | bool | None = None, weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
                settings: DemoSettings | None = None, domain: str | None = None,
                domains: Mapping[str, DomainSpec] | None = None,
                generation_tokenizer: str | Path | None = None) -> LoadedModels:
    """Load a tokenizer, up to two generators, a generation tokenizer and the extra photo tokenizer.

    With no tokenizer path, everything comes from ``weights_dir``: the embedded models of ``domain``
    (default ``settings.domain``, "digits": ``tokenizer/``, ``maskgit/``, ``ar/``; "emoji":
    ``emoji_tokenizer/``, ``emoji_tokenizer_sampling/``, ...; :mod:`app.domains`). With a tokenizer
    path, only the generators given are loaded; none is fine (Reconstruct and Tokens still work).
    ``generation_tokenizer``: a FlowMo with the tokenizer's encoder whose decoder generated tokens go
    through (None: the domain's when it names one and it is there, else the tokenizer itself).
    ``photo_tokenizer``: None loads ``weights_dir/photo_tokenizer`` when it exists, a path loads that,
    False none.
    """
    settings = settings or DemoSettings()
    domains = settings.domains if domains is None else domains
    device, dtype = settings.torch_device(), settings.torch_dtype()
    weights_dir = Path(weights_dir)
    sources: dict[str, str | Path] = {}
    embedded = tokenizer in (None, "")
    domain = (domain or settings.domain) if embedded else None
    if embedded:
        if domain not in domains:
            raise ValueError(domain_unavailable_message(domain, weights_dir, domains))
        spec = domains[domain]
        tokenizer = spec.tokenizer_dir(weights_dir)
        if not tokenizer.is_dir():
            raise FileNotFoundError(f"embedded demo weights not found: {tokenizer} is missing "
                                    f"({domain_unavailable_message(domain, weights_dir, domains)}). Point the demo "
                                    "at your models (tokenizer.checkpoint=... generator.maskgit=... generator.ar=...)")
        if maskgit in (None, "") and ar in (None, ""):
            sources = {slot: weights_dir / folder for slot, folder in spec.generators.items()
                       if (weights_dir / folder).is_dir()}
            if generation_tokenizer in (None, ""):
                generation_tokenizer = spec.generation_tokenizer_dir(weights_dir)
    for slot, path in (("maskgit", maskgit), ("ar", ar)):
        if path not in (None, ""):
            sources[slot] = path
    flowmo = _load_tokenizer(tokenizer, tokenizer_preset, device, dtype)
    generators = {slot: _load_generator(path, slot, flowmo, device, dtype) for slot, path in sources.items()}
    sampler = None
    if generation_tokenizer not in (None, "") and not generators:
        warnings.warn(f"generation tokenizer {generation_tokenizer} not loaded: no generator is loaded whose "
                      "tokens it would decode", stacklevel=2)
    elif generation_tokenizer not in (None, ""):
        sampler = _load_generation_tokenizer(generation_tokenizer, flowmo, tokenizer, device, dtype)
    mismatches = []
    for slot, model in generators.items():
        message = model.other_tokenizer_warning(flowmo)
        if message:
            mismatches.append(f"{GENERATOR_LABELS[slot]}: {message}")
            warnings.warn(mismatches[-1], stacklevel=2)
    class_lists = {slot: [model.config.class_name(i) for i in range(model.config.num_classes)]
                   for slot, model in generators.items()}
    if len({tuple(names) for names in class_lists.values()}) > 1:
        raise ValueError("the generators disagree on their classes: "
                         + "; ".join(f"{GENERATOR_LABELS[s]}: {len(n)} classes" for s, n in class_lists.items()))
    class_names = next(iter(class_lists.values()), [])
    extra_sources: dict[str, str | Path] = {}
    if photo_tokenizer is None and (weights_dir / PHOTO_TOKENIZER_DIR).is_dir():
        extra_sources["photos"] = embedded_tokenizer_dir(weights_dir, PHOTO_TOKENIZER_DIR)
    elif photo_tokenizer not in (None, False, ""):
        extra_sources["photos"] = photo_tokenizer
    extras = {name: _load_tokenizer(path, None, device, dtype, option="tokenizer.photo_checkpoint=<dir> or false")
              for name, path in extra_sources.items()}
    # An embedded set's tokenizer is named after its domain; digit generators were trained on a digits
    # tokenizer's tokens, so theirs is one too.
    name = domain if embedded else "digits" if class_names == DIGIT_NAMES else "images"
    # A set is a domain's only when every model is the domain's own: with generators given by path it stands alone.
    whole = embedded and maskgit in (None, "") and ar in (None, "")
    return LoadedModels(tokenizer=flowmo, tokenizer_source=str(tokenizer), generators=generators,
                        generator_sources={slot: str(path) for slot, path in sources.items()},
                        class_names=class_names, tokenizer_name=name, extra_tokenizers=extras,
                        extra_tokenizer_sources={name: str(path) for name, path in extra_sources.items()},
                        warnings=tuple(mismatches), domain=domain if whole else None,
                        weights_dir=str(weights_dir) if whole else None, generation_tokenizer=sampler,
                        generation_tokenizer_source=None if sampler is None else str(generation_tokenizer))


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def status_line(models: LoadedModels, settings: DemoSettings) -> str:
    """One line on what is loaded where: device, each tokenizer's size and rate, generators, warnings."""
    sources = {models.tokenizer_name: models.tokenizer_source, **models.extra_tokenizer_sources}
    parts = [f"device {settings.torch_device()} · {settings.dtype}"]
    for name, model in models.tokenizers.items():
        tok = model.config
        parts.append(f"{tokenizer_domain(name).label} {_count_parameters(model) / 1e6:.2f}M params "
                     f"({sources[name]}): {tok.image_size}px, {tok.num_indices} tokens × vocab {tok.vocab_size}, "
                     f"{tok.bits_per_pixel:.4f} BPP, decodes in {evaluations_text(model.decode_evaluations())}")
    if models.generation_tokenizer is not None:
        parts.append(f"generated tokens decode through {models.generation_tokenizer_source} (sampling decoder, "
                     f"{evaluations_text(models.generation_tokenizer.decode_evaluations())})")
    for slot, model in models.generators.items():
        parts.append(f"{GENERATOR_LABELS[slot]} {_count_parameters(model) / 1e6:.2f}M params")
    parts.append(f"{models.num_classes} classes" if models.generators else "no generator loaded")
    parts += [f"⚠ {warning}" for warning in models.warnings]
    return " · ".join(parts)
