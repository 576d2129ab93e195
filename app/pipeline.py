"""DemoPipeline: everything the demo does, as plain Python the tests call directly.

Load a FlowMo tokenizer and class-conditional generators (the embedded digits models in
``app/weights/`` by default, or any checkpoint a user points at), then generate, reconstruct,
edit tokens and evaluate. An extra photo tokenizer (``app/weights/photo_tokenizer/`` when it is
there) is offered for reconstruction only: no generator was trained on its tokens. No Gradio
here: ``app/ui.py`` only wires these functions to widgets.

Every user-facing input is checked against :class:`~app.limits.DemoLimits`; bad input raises
``ValueError`` (or a subclass) with a message meant for the person at the browser.
Long work reports through ``progress(fraction, message)`` callbacks.
"""

from __future__ import annotations

import gc
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from tokenizer.cli import resolve_device

from .limits import DemoLimits, check_float, check_int
from .visualize import metrics_bar_plot

APP_DIR = Path(__file__).resolve().parent
DEFAULT_WEIGHTS_DIR = APP_DIR / "weights"
PHOTO_TOKENIZER_DIR = "photo_tokenizer"  # the embedded photo tokenizer, under the weights dir
DIGITS_CLASSIFIER_DIR = "digits_classifier"  # the metric classifier of the digits data, under the weights dir
EXAMPLES_DIR = APP_DIR / "examples"

GENERATOR_LABELS = {"maskgit": "MaskGIT", "ar": "AR"}  # config.model -> name shown in the UI
TOKEN_OPERATIONS = ("swap", "randomize", "mix")
DISPLAY_MIN_SIZE = 128  # grids show digits-sized images at least this large
GRID_MAX_COLUMNS = 10  # a single row of generated images wraps after this many (all ten digits fit)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ProgressFn = Callable[[float, str], None]
MIN_EVAL_SAMPLES = 10  # Inception Score uses 10 splits
DIGIT_CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass(frozen=True)
class TokenizerDomain:
    """What a tokenizer was trained on, as the Reconstruct tab presents it."""

    label: str  # the tokenizer's name in the UI
    examples: str  # glob in EXAMPLES_DIR: images this tokenizer can represent
    hint: str  # what to upload; {size} is the tokenizer's resolution


# The API name of a loaded tokenizer is its domain: "digits" (the embedded main tokenizer),
# "photos" (the extra photo tokenizer) or "images" (a main tokenizer loaded from a checkpoint).
TOKENIZER_DOMAINS = {
    "digits": TokenizerDomain("Digits tokenizer", "digit_*.png",
                              "A handwritten digit, light on dark like scikit-learn's digits; it is centre-cropped "
                              "and shrunk to {size}×{size} px. This tokenizer cannot represent photos."),
    "photos": TokenizerDomain("Photo tokenizer", "photo_*.png",
                              "A colour photo; it is centre-cropped and shrunk to {size}×{size} px, so a small "
                              "detail works best, like the examples: 100–160 px cuts from the photos' held-out "
                              "bands."),
    "images": TokenizerDomain("Loaded tokenizer", "photo_*.png",
                              "Any image; it is centre-cropped and resized to {size}×{size} px."),
}


# ---------------------------------------------------------------------------- settings and models
@dataclass(frozen=True)
class DemoSettings:
    """Everything about the demo that is not a model: devices, limits, metric backbones."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16 (CUDA only)
    limits: DemoLimits = field(default_factory=DemoLimits)
    lpips_net: str = "alex"  # alex | vgg
    lpips_weights: str | None = None  # torchvision backbone .pth for LPIPS; None: LPIPS unavailable
    allow_random_lpips: bool = False  # random backbone: LPIPS shown, marked UNCALIBRATED
    inception_weights: str | None = None  # torch-fidelity Inception .pth for gFID
    allow_random_inception: bool = True  # without a classifier or weights: random Inception, numbers UNCALIBRATED
    # Evaluate's feature space (auto | inception | classifier) and classifier directory; auto with no
    # directory: the embedded digits classifier when digits models are loaded, else Inception-v3
    features: str = "auto"
    feature_classifier: str | None = None
    eval_reference: str | None = None  # folder of real images or reference-statistics .npz; None: digits
    eval_reference_split: str = "val"  # split of a dataset reference (the digits default)
    eval_max_reference_images: int | None = None
    work_dir: str | None = None  # evaluation outputs, prompt vocabularies; None: a temporary directory
    model_dirs: tuple[str, ...] = ()  # the only places DemoPipeline.reload (the model picker) loads from

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.dtype == "float16" and self.torch_device().type != "cuda":
            raise ValueError("dtype=float16 needs a CUDA device; use float32 or bfloat16 on CPU")
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class LoadedModels:
    """One consistent set of models; requests take a snapshot so a reload never mixes sets."""

    tokenizer: Any  # tokenizer.FlowMo: the generators' tokenizer
    tokenizer_source: str
    generators: dict[str, Any]  # "maskgit" / "ar" -> generator model
    generator_sources: dict[str, str]
    class_names: list[str]
    tokenizer_name: str = "images"  # the main tokenizer's key in TOKENIZER_DOMAINS
    extra_tokenizers: dict[str, Any] = field(default_factory=dict)  # "photos" -> FlowMo, reconstruction only
    extra_tokenizer_sources: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # shown in the status line: e.g. a generator trained on another tokenizer

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizers(self) -> dict[str, Any]:
        """Every loaded tokenizer by API name, the main one first."""
        return {self.tokenizer_name: self.tokenizer, **self.extra_tokenizers}


@dataclass(frozen=True)
class TokenizerChoice:
    """One loaded tokenizer as the Reconstruct tab offers it."""

    name: str  # API name: reconstruct(..., tokenizer=name)
    label: str
    hint: str
    examples: list[str]  # image paths in its domain
    decode_steps: int  # its saved sampler defaults (config.decode)
    decode_cfg: float


def for_display(images: Tensor, min_size: int = DISPLAY_MIN_SIZE) -> Tensor:
    """Upscale small images (B, 3, H, W) by an integer factor (nearest) so pixels stay visible."""
    factor = -(-min_size // images.shape[-1])
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def generation_columns(num_classes: int, per_class: int) -> int:
    """Images per grid row: one row per class; with one image per class (or one class) a single
    row, wrapped after GRID_MAX_COLUMNS, rather than one tall column."""
    if num_classes > 1 and per_class > 1:
        return per_class
    return min(num_classes * per_class, GRID_MAX_COLUMNS)


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def load_models(tokenizer: str | Path | None = None, tokenizer_preset: str | None = None,
                maskgit: str | Path | None = None, ar: str | Path | None = None, *,
                photo_tokenizer: str | Path | bool | None = None, weights_dir: str | Path = DEFAULT_WEIGHTS_DIR,
                settings: DemoSettings | None = None) -> LoadedModels:
    """Load a tokenizer, up to two generators and the extra photo tokenizer.

    With no tokenizer path, everything comes from ``weights_dir`` (the embedded digits
    models: ``tokenizer/``, ``maskgit/``, ``ar/``). With a tokenizer path, only the generators
    given are loaded; none is fine (Reconstruct and Tokens still work). ``photo_tokenizer``:
    None loads ``weights_dir/photo_tokenizer`` when it exists, a path loads that, False none.
    """
    settings = settings or DemoSettings()
    device, dtype = settings.torch_device(), settings.torch_dtype()
    weights_dir = Path(weights_dir)
    sources: dict[str, str | Path] = {}
    embedded = tokenizer in (None, "")
    if embedded:
        tokenizer = weights_dir / "tokenizer"
        if not tokenizer.is_dir():
            raise FileNotFoundError(f"embedded demo weights not found: {tokenizer} is missing. Point the demo at "
                                    "your models (tokenizer.checkpoint=... generator.maskgit=... generator.ar=...)")
        if maskgit in (None, "") and ar in (None, ""):
            sources = {slot: weights_dir / slot for slot in GENERATOR_LABELS if (weights_dir / slot).is_dir()}
    for slot, path in (("maskgit", maskgit), ("ar", ar)):
        if path not in (None, ""):
            sources[slot] = path
    flowmo = _load_tokenizer(tokenizer, tokenizer_preset, device, dtype)
    generators = {slot: _load_generator(path, slot, flowmo, device, dtype) for slot, path in sources.items()}
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
        extra_sources["photos"] = weights_dir / PHOTO_TOKENIZER_DIR
    elif photo_tokenizer not in (None, False, ""):
        extra_sources["photos"] = photo_tokenizer
    extras = {name: _load_tokenizer(path, None, device, dtype, option="tokenizer.photo_checkpoint=<dir> or false")
              for name, path in extra_sources.items()}
    # Digit generators were trained on a digits tokenizer's tokens, so theirs is one too.
    name = "digits" if embedded or class_names == DIGIT_CLASS_NAMES else "images"
    return LoadedModels(tokenizer=flowmo, tokenizer_source=str(tokenizer), generators=generators,
                        generator_sources={slot: str(path) for slot, path in sources.items()},
                        class_names=class_names, tokenizer_name=name, extra_tokenizers=extras,
                        extra_tokenizer_sources={name: str(path) for name, path in extra_sources.items()},
                        warnings=tuple(mismatches))


# ---------------------------------------------------------------------------- results
@dataclass
class GenerationResult:
    images: Tensor  # (B, 3, H, W) in [-1, 1]
    indices: Tensor  # (B, N) int64
    class_ids: list[int]
    labels: list[str]
    grid: Image.Image  # labelled image grid
    token_map: Image.Image  # indices as heatmaps, same layout
    seconds: float
    files: list[str] = field(default_factory=list)  # downloads: samples.png (own size), indices.safetensors


@dataclass
class ReconstructionResult:
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
    notes: list[str] = field(default_factory=list)  # what was done to the input (e.g. transparency flattened)

    def metrics_rows(self) -> list[list[str]]:
        """[metric, value] rows for a table; LPIPS says why it is missing or that it is uncalibrated."""
        if self.lpips is None:
            lpips = "unavailable (set lpips.weights=/path/to/backbone.pth, or lpips.allow_random=true)"
        elif self.lpips_calibrated:
            lpips = f"{self.lpips:.4f}"
        else:
            lpips = f"{self.lpips:.4f} UNCALIBRATED (random backbone weights)"
        return [["PSNR (dB)", f"{self.psnr:.2f}"], ["LPIPS", lpips],
                ["BPP", f"{self.bits_per_pixel:.4f}"], ["bits used", str(self.bits)],
                ["tokenizer", self.tokenizer], ["decoder", f"{self.decode_steps} steps, CFG {self.decode_cfg:g}"],
                ["decode time (ms)", f"{self.decode_ms:.0f}"]] + [["note", note] for note in self.notes]


@dataclass
class TokenEditResult:
    images: Tensor  # (K, 3, H, W)
    indices: Tensor  # (K, N)
    labels: list[str]
    grid: Image.Image
    token_map: Image.Image


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    calibrated: bool
    num_samples: int
    seconds: float
    rows: list[list[str]]  # [metric, value] with UNCALIBRATED marks
    plot: Image.Image
    grid: Image.Image | None
    out_dir: str
    summary: str


# ---------------------------------------------------------------------------- the pipeline
class DemoPipeline:
    """The demo's operations over one set of models (swappable at run time with :meth:`reload`)."""

    def __init__(self, models: LoadedModels, settings: DemoSettings | None = None):
        self.settings = settings or DemoSettings()
        self.limits = self.settings.limits
        self._models = models
        self._lock = threading.Lock()
        self._vocabulary: Any = None
        self._lpips: Any = None
        self._work_dir: Path | None = Path(self.settings.work_dir) if self.settings.work_dir else None

    @classmethod
    def load(cls, tokenizer: str | None = None, tokenizer_preset: str | None = None, maskgit: str | None = None,
             ar: str | None = None, *, photo_tokenizer: str | bool | None = None,
             weights_dir: str | Path = DEFAULT_WEIGHTS_DIR, settings: DemoSettings | None = None) -> "DemoPipeline":
        settings = settings or DemoSettings()
        return cls(load_models(tokenizer, tokenizer_preset, maskgit, ar, photo_tokenizer=photo_tokenizer,
                               weights_dir=weights_dir, settings=settings), settings)

    # ------------------------------------------------------------------ model set
    @property
    def models(self) -> LoadedModels:
        return self._models

    def reload(self, tokenizer: str | None = None, tokenizer_preset: str | None = None,
               maskgit: str | None = None, ar: str | None = None,
               weights_dir: str | Path = DEFAULT_WEIGHTS_DIR) -> str:
        """Load another model set for EVERY user of this server (the UI's model picker, off unless
        ``model_picker=true``); requests in flight finish on the old one. Empty paths: the embedded models.

        Client-typed paths must lie under ``settings.model_dirs``, checked before anything is built;
        a refused path gets one message whether it exists or not. A failed load keeps the old set
        and frees what it built. The extra tokenizers stay as they are: they do not depend on the main set.
        """
        paths = [self._model_dir_path(value, option) for value, option in
                 ((tokenizer, "FlowMo checkpoint"), (maskgit, "MaskGIT checkpoint"), (ar, "AR checkpoint"))]
        failure = None
        try:
            models = load_models(paths[0], tokenizer_preset, paths[1], paths[2], photo_tokenizer=False,
                                 weights_dir=weights_dir, settings=self.settings)
        except Exception as error:  # noqa: BLE001 - re-raised below, without the frames that hold the models
            failure = error
        if failure is not None:
            # The traceback's frames reference the half-loaded models (GBs for FlowMo-Lo): drop them.
            failure.__traceback__ = failure.__context__ = failure.__cause__ = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise failure
        with self._lock:
            self._models = replace(models, extra_tokenizers=self._models.extra_tokenizers,
                                   extra_tokenizer_sources=self._models.extra_tokenizer_sources)
            self._vocabulary = None
        return self.status()

    def _model_dir_path(self, value: str | None, option: str) -> Path | None:
        """A picker path confined to ``settings.model_dirs`` (relative: to the first of them); None when empty."""
        if value in (None, "") or not str(value).strip():
            return None
        roots = [Path(d).expanduser().resolve() for d in self.settings.model_dirs]
        refusal = ValueError(f"{option}: the model picker only loads checkpoints under "
                             + (", ".join(map(str, roots)) if roots else "no directory (model_dirs is empty)"))
        if not roots:
            raise refusal
        try:
            path = (roots[0] / str(value).strip()).resolve()  # an absolute value replaces roots[0]
        except (OSError, RuntimeError):  # e.g. a symlink loop: refused like any outside path
            raise refusal from None
        if not any(path.is_relative_to(root) for root in roots):
            raise refusal
        return path

    @property
    def class_names(self) -> list[str]:
        return list(self._models.class_names)

    @property
    def generator_names(self) -> list[str]:
        """Loaded generators as shown in the UI ("MaskGIT", "AR")."""
        return [GENERATOR_LABELS[slot] for slot in self._models.generators]

    def generator_defaults(self, generator: str) -> tuple[int, float, float]:
        """(steps, cfg, temperature) a generator samples with unless told otherwise: its saved defaults."""
        models = self._models
        model = models.generators[self._generator_slot(models, generator)]
        settings = model.sampling_settings()
        return settings["num_steps"], settings["cfg_scale"], settings["temperature"]

    def tokenizer_choices(self) -> list[TokenizerChoice]:
        """Every loaded tokenizer, the main one first."""
        return [self.tokenizer_choice(name) for name in self._models.tokenizers]

    def tokenizer_choice(self, tokenizer: str | None = None) -> TokenizerChoice:
        """A loaded tokenizer (API name or label; None: the main one) with its examples and decoder defaults."""
        models = self._models
        name = self._tokenizer_name(models, tokenizer)
        model = models.tokenizers[name]
        domain = TOKENIZER_DOMAINS[name]
        defaults = model.config.decode
        return TokenizerChoice(name=name, label=domain.label, hint=domain.hint.format(size=model.config.image_size),
                               examples=sorted(str(p) for p in EXAMPLES_DIR.glob(domain.examples)),
                               decode_steps=defaults.steps, decode_cfg=defaults.cfg)

    def status(self) -> str:
        models = self._models
        sources = {models.tokenizer_name: models.tokenizer_source, **models.extra_tokenizer_sources}
        parts = [f"device {self.settings.torch_device()} · {self.settings.dtype}"]
        for name, model in models.tokenizers.items():
            tok = model.config
            parts.append(f"{TOKENIZER_DOMAINS[name].label} {_count_parameters(model) / 1e6:.2f}M params "
                         f"({sources[name]}): {tok.image_size}px, {tok.num_indices} tokens × vocab {tok.vocab_size}, "
                         f"{tok.bits_per_pixel:.4f} BPP")
        for slot, model in models.generators.items():
            parts.append(f"{GENERATOR_LABELS[slot]} {_count_parameters(model) / 1e6:.2f}M params")
        parts.append(f"{models.num_classes} classes" if models.generators else "no generator loaded")
        parts += [f"⚠ {warning}" for warning in models.warnings]
        return " · ".join(parts)

    def work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="flowmo-demo-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    # ------------------------------------------------------------------ input checks
    def _generator_slot(self, models: LoadedModels, name: str) -> str:
        by_label = {label.lower(): slot for slot, label in GENERATOR_LABELS.items()}
        slot = by_label.get(str(name).strip().lower(), str(name).strip().lower())
        if not models.generators:
            raise ValueError("no generator is loaded: load a MaskGIT or AR checkpoint to generate")
        if slot not in models.generators:
            loaded = ", ".join(GENERATOR_LABELS[s] for s in models.generators)
            raise ValueError(f"generator {name!r} is not loaded; loaded: {loaded}")
        return slot

    def resolve_classes(self, classes: Sequence[int | str] | None) -> list[int]:
        """Class ids from ids or names (the UI's multi-select sends names), checked against the model."""
        names = self._models.class_names
        if not self._models.generators:
            raise ValueError("no generator is loaded: load a MaskGIT or AR checkpoint to generate")
        if isinstance(classes, (str, int)):
            classes = [classes]
        if not classes:
            raise ValueError("select at least one class (or type a prompt and press Match)")
        ids = []
        for item in classes:
            if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
                if item not in names:
                    raise ValueError(f"unknown class {item!r}; this model has {len(names)} classes, "
                                     f"e.g. {', '.join(names[:5])}")
                ids.append(names.index(item))
            else:
                ids.append(check_int("class id", item, 0, len(names) - 1))
        return ids

    def _tokenizer_name(self, models: LoadedModels, tokenizer: str | None) -> str:
        if tokenizer in (None, ""):
            return models.tokenizer_name
        key = str(tokenizer).strip().lower()
        for name in models.tokenizers:
            if key in (name, TOKENIZER_DOMAINS[name].label.lower()):
                return name
        loaded = ", ".join(f"{name!r} ({TOKENIZER_DOMAINS[name].label})" for name in models.tokenizers)
        raise ValueError(f"tokenizer {tokenizer!r} is not loaded; loaded: {loaded}")

    def _check_generate(self, generator: str, steps: Any, cfg: Any, temperature: Any) -> tuple[int, float, float]:
        """Generator steps, CFG and temperature, unset ones (None) from the generator's saved defaults."""
        steps, cfg, temperature = (saved if value is None else value for value, saved in
                                   zip((steps, cfg, temperature), self.generator_defaults(generator)))
        return (check_int("generator steps", steps, 1, self.limits.max_generator_steps),
                check_float("generator CFG", cfg, 0.0, self.limits.max_cfg),
                check_float("temperature", temperature, 0.0, self.limits.max_temperature, low_inclusive=False))

    def _check_decode(self, tokenizer: Any, steps: Any, cfg: Any) -> tuple[int, float]:
        """Decoder steps and CFG, unset ones (None) from the tokenizer's saved defaults."""
        settings = tokenizer.decode_settings(steps, cfg)
        return (check_int("decoder steps", settings["steps"], 1, self.limits.max_decode_steps),
                check_float("decoder CFG", settings["cfg"], 0.0, self.limits.max_cfg))

    def _image_tensor(self, tokenizer: Any, image: Any, name: str, notes: list[str] | None = None) -> Tensor:
        """A path / bytes / PIL image -> (1, 3, S, S) in [-1, 1] on the tokenizer's device; what was done
        to the picture on the way (transparency flattened on white) is appended to ``notes``."""
        from tokenizer.images import FLATTENED_ON_WHITE, load_image, pil_to_tensor

        if image is None or (isinstance(image, str) and not image.strip()):
            raise ValueError(f"{name}: upload an image or pick an example")
        # Messages name the file, not where the server keeps its uploads.
        label = f"{name} ({Path(image).name})" if isinstance(image, (str, Path)) else name
        picture = load_image(image, max_pixels=self.limits.max_image_pixels, exif_transpose=True, name=label)
        if notes is not None and picture.info.get(FLATTENED_ON_WHITE):
            notes.append(f"{name} has transparent areas: they were flattened on white")
        tensor = pil_to_tensor(picture, tokenizer.config.image_size, train=False)
        return tensor[None].to(device=tokenizer.device, dtype=next(tokenizer.parameters()).dtype)

    # ------------------------------------------------------------------ decoding helper
    def _decode(self, tokenizer: Any, indices: Tensor, steps: int, cfg: float, seed: int,
                progress: ProgressFn | None, span: tuple[float, float], shared_noise: bool = False) -> Tensor:
        size = tokenizer.config.image_size
        cpu = torch.Generator().manual_seed(seed)
        rows = 1 if shared_noise else indices.shape[0]
        noise = torch.randn(rows, 3, size, size, generator=cpu).expand(indices.shape[0], -1, -1, -1)

        def report(step: int, total: int) -> None:
            if progress is not None:
                progress(span[0] + (span[1] - span[0]) * step / total, f"decoding: step {step}/{total}")

        with torch.inference_mode():
            images = tokenizer.decode(indices.to(tokenizer.device), steps=steps, cfg=cfg, noise=noise,
                                      progress=report)
        return images.float().cpu()

    # ------------------------------------------------------------------ Generate
    def generate(self, classes: Sequence[int | str], generator: str = "MaskGIT", samples_per_class: int = 1,
                 steps: int | None = None, cfg: float | None = None, temperature: float | None = None, seed: int = 0,
                 decode_steps: int | None = None, decode_cfg: float | None = None,
                 progress: ProgressFn | None = None) -> GenerationResult:
        """Class ids or names -> generated images (class by class, samples_per_class each).

        Generator and decoder settings left None come from the models' saved defaults (as everywhere here).
        """
        from tokenizer.images import make_grid_image

        start = time.perf_counter()
        models = self._models
        slot = self._generator_slot(models, generator)
        class_ids = self.resolve_classes(classes)
        per_class = check_int("samples per class", samples_per_class, 1, self.limits.max_batch)
        if len(class_ids) * per_class > self.limits.max_batch:
            raise ValueError(f"{len(class_ids)} classes × {per_class} samples = {len(class_ids) * per_class} "
                             f"images; at most {self.limits.max_batch} per request (limits.max_batch)")
        steps, cfg, temperature = self._check_generate(generator, steps, cfg, temperature)
        seed = check_int("seed", seed, 0, 2**63 - 1)
        decode_steps, decode_cfg = self._check_decode(models.tokenizer, decode_steps, decode_cfg)

        model = models.generators[slot]
        ids = torch.tensor([c for c in class_ids for _ in range(per_class)], dtype=torch.long,
                           device=models.tokenizer.device)
        if progress is not None:
            progress(0.0, f"sampling {ids.numel()} token sequences with {GENERATOR_LABELS[slot]}")
        rng = torch.Generator(device=ids.device).manual_seed(seed)

        def report(step: int, total: int) -> None:
            if progress is not None:
                progress(0.3 * step / total, f"sampling tokens: step {step}/{total}")

        with torch.inference_mode():
            indices = model.generate(ids, num_steps=steps, cfg_scale=cfg, temperature=temperature, generator=rng,
                                     progress=report)
        images = self._decode(models.tokenizer, indices, decode_steps, decode_cfg, seed, progress, (0.3, 1.0))
        labels = [models.class_names[c] for c in ids.tolist()]
        nrow = generation_columns(len(class_ids), per_class)
        files = self._save_generation(images, indices.cpu(), ids.tolist(), labels, nrow)
        return GenerationResult(
            images=images, indices=indices.cpu(), class_ids=ids.tolist(), labels=labels,
            grid=make_grid_image(for_display(images), nrow=nrow, labels=labels),
            token_map=self._token_map(models.tokenizer, indices.cpu(), nrow, labels),
            seconds=time.perf_counter() - start, files=files)

    def _save_generation(self, images: Tensor, indices: Tensor, class_ids: list[int], labels: list[str],
                         nrow: int) -> list[str]:
        """The downloads of one request, in a folder of its own: the images at their own size (the grid
        ``generator.sample out=`` writes) and their token indices with class ids (its ``save_indices=``)."""
        from generator.sample import save_indices
        from tokenizer.images import save_image_grid

        root = self.work_dir() / "generate"
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=root))
        return [str(save_image_grid(images, folder / "samples.png", nrow=nrow, labels=labels)),
                str(save_indices(folder / "indices.safetensors", indices, class_ids))]

    def _token_map(self, tokenizer: Any, indices: Tensor, nrow: int, labels: list[str]) -> Image.Image:
        from tokenizer.images import make_grid_image

        from .visualize import grid_shape, token_heatmaps

        _, cols = grid_shape(indices.shape[1])
        cell = max(2, -(-DISPLAY_MIN_SIZE // cols))
        return make_grid_image(token_heatmaps(indices, tokenizer.config.vocab_size, cell=cell),
                               nrow=nrow, labels=labels)

    # ------------------------------------------------------------------ prompts
    def vocabulary(self):
        """The prompt vocabulary of the loaded classes: a shipped one when the classes are digits or
        ImageNet, else trained once on the class names and cached in the work directory."""
        from generator.prompts import ClassVocabulary

        with self._lock:
            if self._vocabulary is None:
                names = self._models.class_names
                if not names:
                    raise ValueError("no generator is loaded, so there are no classes to match prompts against")
                self._vocabulary = ClassVocabulary.for_class_names(names, cache_dir=self.work_dir() / "vocab")
            return self._vocabulary

    def classes_for_prompt(self, prompt: str) -> list[int]:
        """Every class a prompt names, in order ("a seven and a three" -> [7, 3]): the matcher
        ``generator.sample prompt=...`` uses (NoMatchError / PromptError on bad text)."""
        return self.vocabulary().classes_for_prompt(prompt)

    def example_prompt(self) -> str | None:
        """A prompt naming loaded classes, for hints ("a seven and a three"); None without a generator."""
        return self.vocabulary().example_prompt if self._models.class_names else None

    def match_prompt(self, prompt: str, top_k: int = 5) -> list[tuple[int, str, float]]:
        """Free text -> [(class_id, name, score)] best first (NoMatchError / PromptError on bad text)."""
        top_k = check_int("top_k", top_k, 1, self.limits.max_prompt_matches)
        return [(m.class_id, m.name, float(m.score)) for m in self.vocabulary().match(prompt, top_k=top_k)]

    # ------------------------------------------------------------------ Reconstruct
    def lpips_metric(self):
        """The configured LPIPS metric, or None when no backbone weights are configured."""
        settings = self.settings
        if settings.lpips_weights is None and not settings.allow_random_lpips:
            return None
        with self._lock:
            if self._lpips is None:
                from tokenizer.metrics import LPIPSMetric

                self._lpips = LPIPSMetric(net=settings.lpips_net, backbone_weights=settings.lpips_weights,
                                          allow_random=settings.allow_random_lpips,
                                          device=self._models.tokenizer.device, option="lpips.weights")
            return self._lpips

    def reconstruct(self, image: Any, decode_steps: int | None = None, decode_cfg: float | None = None,
                    seed: int = 0, tokenizer: str | None = None,
                    progress: ProgressFn | None = None) -> ReconstructionResult:
        """Image (path, bytes or PIL) -> tokens -> reconstruction, with PSNR, LPIPS, BPP and decode time.

        ``tokenizer``: a loaded tokenizer's API name or label ("photos", "Photo tokenizer"); None: the main one.
        """
        from tokenizer.images import make_grid_image
        from tokenizer.metrics import psnr

        models = self._models
        name = self._tokenizer_name(models, tokenizer)
        flowmo = models.tokenizers[name]
        decode_steps, decode_cfg = self._check_decode(flowmo, decode_steps, decode_cfg)
        seed = check_int("seed", seed, 0, 2**63 - 1)
        notes: list[str] = []
        original = self._image_tensor(flowmo, image, "image", notes)
        if progress is not None:
            progress(0.0, "encoding")
        with torch.inference_mode():
            indices = flowmo.tokenize(original)
        start = time.perf_counter()
        recon = self._decode(flowmo, indices, decode_steps, decode_cfg, seed, progress, (0.1, 0.95))
        decode_ms = (time.perf_counter() - start) * 1000  # _decode ends with a copy to the CPU, so CUDA is done
        original = original.float().cpu()
        metric = self.lpips_metric()
        lpips_value, calibrated = None, False
        if metric is not None:
            with torch.inference_mode():
                lpips_value = float(metric(original, recon).mean())
            calibrated = bool(metric.calibrated)
        tok = flowmo.config
        return ReconstructionResult(
            original=original, reconstruction=recon, indices=indices.cpu(),
            psnr=float(psnr(original, recon).mean()), lpips=lpips_value, lpips_calibrated=calibrated,
            bits_per_pixel=tok.bits_per_pixel, bits=tok.code_length * tok.context_dim,
            comparison=make_grid_image(for_display(torch.cat([original, recon])), nrow=2,
                                       labels=["original", "reconstruction"]),
            token_map=self._token_map(flowmo, indices.cpu(), 1, ["tokens"]),
            tokenizer=TOKENIZER_DOMAINS[name].label, decode_steps=decode_steps, decode_cfg=decode_cfg,
            decode_ms=decode_ms, notes=notes)

    # ------------------------------------------------------------------ Tokens
    def edit_tokens(self, image_a: Any, image_b: Any = None, operation: str = "swap", start: int = 0,
                    end: int | None = None, fraction: float = 0.25, alpha: float = 0.5, seed: int = 0,
                    decode_steps: int | None = None, decode_cfg: float | None = None,
                    progress: ProgressFn | None = None) -> TokenEditResult:
        """Tokenize A (and B), edit the token sequences, decode everything with the same noise.

        swap: A and B exchange positions [start, end); randomize: ``fraction`` of A's positions get
        random indices; mix: each position from B with probability ``alpha``, else from A.
        """
        from tokenizer.images import make_grid_image

        from . import token_edits

        models = self._models
        tok = models.tokenizer.config
        if operation not in TOKEN_OPERATIONS:
            raise ValueError(f"operation {operation!r}; choose one of {list(TOKEN_OPERATIONS)}")
        decode_steps, decode_cfg = self._check_decode(models.tokenizer, decode_steps, decode_cfg)
        seed = check_int("seed", seed, 0, 2**63 - 1)
        rng = torch.Generator().manual_seed(seed)
        needs_b = operation in ("swap", "mix")
        images = [self._image_tensor(models.tokenizer, image_a, "image A")]
        if needs_b:
            images.append(self._image_tensor(models.tokenizer, image_b, "image B"))
        with torch.inference_mode():
            tokens = models.tokenizer.tokenize(torch.cat(images)).cpu()
        if operation == "swap":
            start = check_int("span start", start, 0, tok.num_indices - 1)
            end = check_int("span end", tok.num_indices if end in (None, "") else end, start + 1, tok.num_indices)
            a_edit, b_edit = token_edits.swap_span(tokens[:1], tokens[1:], start, end)
            edited = torch.cat([tokens, a_edit, b_edit])
            labels = ["A", "B", f"A + B[{start}:{end}]", f"B + A[{start}:{end}]"]
        elif operation == "randomize":
            fraction = check_float("fraction", fraction, 0.0, 1.0)
            edited = torch.cat([tokens, token_edits.randomize(tokens, fraction, tok.vocab_size, rng)])
            labels = ["A", f"A, {fraction:.0%} random"]
        else:
            alpha = check_float("alpha", alpha, 0.0, 1.0)
            edited = torch.cat([tokens[:1], token_edits.mix(tokens[:1], tokens[1:], alpha, rng), tokens[1:]])
            labels = ["A", f"mix alpha={alpha:.2f}", "B"]
        decoded = self._decode(models.tokenizer, edited, decode_steps, decode_cfg, seed, progress, (0.05, 1.0),
                               shared_noise=True)
        return TokenEditResult(images=decoded, indices=edited, labels=labels,
                               grid=make_grid_image(for_display(decoded), nrow=len(labels), labels=labels),
                               token_map=self._token_map(models.tokenizer, edited, len(labels), labels))

    # ------------------------------------------------------------------ Evaluate
    def evaluate(self, num_samples: int = 50, generator: str = "MaskGIT", steps: int | None = None,
                 cfg: float | None = None, temperature: float | None = None, decode_steps: int | None = None,
                 decode_cfg: float | None = None,
                 seed: int = 0, progress: ProgressFn | None = None) -> EvaluationResult:
        """A small gFID run (FID, IS, precision/recall) through the project's harness.

        Samples go to ``work_dir/eval/<hash of every setting>``: asking again with the same
        settings reuses the finished shards (the harness resumes), so a repeat is instant.
        """
        import hashlib
        import json

        from generator.gfid import make_sample_fn, run_gfid

        models = self._models
        slot = self._generator_slot(models, generator)
        num_samples = check_int("number of samples", num_samples, MIN_EVAL_SAMPLES, self.limits.max_eval_samples)
        steps, cfg, temperature = self._check_generate(generator, steps, cfg, temperature)
        seed = check_int("seed", seed, 0, 2**63 - 1)
        decode_steps, decode_cfg = self._check_decode(models.tokenizer, decode_steps, decode_cfg)
        reference = self._eval_reference(models)
        features = self._eval_features(models)
        gen_kwargs = {"num_steps": steps, "cfg_scale": cfg, "temperature": temperature}
        dec_kwargs = {"steps": decode_steps, "cfg": decode_cfg}
        run_settings = {"generator": models.generator_sources[slot], "tokenizer": models.tokenizer_source,
                        "generate": gen_kwargs, "decode": dec_kwargs, "dtype": self.settings.dtype,
                        "reference": reference if isinstance(reference, dict) else str(reference),
                        "features": features.tag}
        key = hashlib.sha256(json.dumps([run_settings, num_samples, seed], sort_keys=True).encode()).hexdigest()[:16]
        out_dir = self.work_dir() / "eval" / f"{slot}-n{num_samples}-{key}"
        sample_fn = make_sample_fn(models.generators[slot], models.tokenizer, gen_kwargs, dec_kwargs)

        def sample(class_ids: Tensor, seeds: Tensor) -> tuple[Tensor, Tensor]:
            with torch.inference_mode():
                return sample_fn(class_ids, seeds)

        def real_sets(image_size: int) -> Any:
            from generator.memorization import load_real_sets

            return load_real_sets(reference, image_size, tokenizer=models.tokenizer)

        report = run_gfid(
            sample, num_samples=num_samples, num_classes=models.num_classes, out_dir=out_dir, reference=reference,
            features=features, memorization=real_sets if isinstance(reference, dict) else None,
            shard_size=max(self.limits.max_batch, 1), batch_size=self.limits.max_batch, seed=seed,
            class_names=models.class_names, settings=run_settings, reference_split=self.settings.eval_reference_split,
            max_reference_images=self.settings.eval_max_reference_images, cache_dir=self.work_dir() / "gfid-cache",
            write_npz=False, progress=progress, verbose=False)
        from generator.gfid import UNCALIBRATED

        from generator.gfid import METRIC_LABELS
        from generator.memorization import MEMORIZATION_LABELS
        from tokenizer.feature_spaces import metric_label

        shown = {key: metric_label(label, report.feature_space) for key, label in METRIC_LABELS.items()
                 if key in report.metrics}
        mark = "" if report.calibrated else f" {UNCALIBRATED}"
        rows = [[label, f"{report.metrics[key]:.4g}{mark}"] for key, label in shown.items()]
        for key, (label, real_key) in MEMORIZATION_LABELS.items():
            if key in report.memorization:
                real = f" (real data {report.memorization[real_key]:.4g})" if real_key else ""
                rows.append([label, f"{report.memorization[key]:.4g}{real}"])
        rows.append(["samples", str(report.num_samples)])
        rows.append(["reference", report.reference])
        rows.append(["wall time (s)", f"{report.wall_seconds:.1f}"])
        plot = metrics_bar_plot({label: report.metrics[key] for key, label in shown.items()},
                                f"{GENERATOR_LABELS[slot]}: {report.num_samples} samples", report.calibrated)
        grid_path = report.files.get("grid")
        return EvaluationResult(metrics=dict(report.metrics), calibrated=report.calibrated,
                                num_samples=report.num_samples, seconds=report.wall_seconds, rows=rows, plot=plot,
                                grid=Image.open(grid_path).convert("RGB") if grid_path else None,
                                out_dir=str(out_dir), summary=report.summary())

    def _eval_features(self, models: LoadedModels) -> Any:
        """The configured classifier, the embedded digits classifier for digits models, else Inception-v3."""
        from tokenizer.feature_spaces import resolve_feature_space

        classifier = self.settings.feature_classifier
        if classifier is None and models.class_names == DIGIT_CLASS_NAMES:
            classifier = str(DEFAULT_WEIGHTS_DIR / DIGITS_CLASSIFIER_DIR)
        return resolve_feature_space(self.settings.features, classifier=classifier,
                                     inception_weights=self.settings.inception_weights,
                                     allow_random=self.settings.allow_random_inception)

    def _eval_reference(self, models: LoadedModels) -> str | dict[str, Any]:
        """The configured reference, or the digits dataset when the loaded classes are the digits."""
        reference = self.settings.eval_reference
        if reference not in (None, ""):
            return reference
        if models.class_names == DIGIT_CLASS_NAMES:
            return {"name": "digits"}
        raise ValueError("no gFID reference configured for these classes: set evaluate.reference=<folder of "
                         "real images or an .npz with mu/sigma, e.g. the ADM ImageNet reference batch>")
