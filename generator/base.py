"""What every generator shares: sizes, class-id checks, attention backend, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from runkit.pretrained import CONFIG_FILE, Pretrained

from .attention import check_kernel, resolve_backend
from .config import FORMAT_VERSION, GeneratorConfig
from .sampling import RandomSource, remove_label_smoothing


class LossOutput(NamedTuple):
    loss: Tensor  # scalar
    accuracy: Tensor  # scalar, top-1 on the positions the loss counts


class GeneratorModel(Pretrained, nn.Module):
    """Base class of :class:`MaskGIT` and :class:`ARTransformer` (not used directly)."""

    model_type: str = ""
    eager_sampling_reason: str | None = None  # why generate() is never compiled (None: it compiles well)
    # benchmarks/train_speed.md: the 128- and 384-wide generators' training steps were no faster compiled
    # on a 2-core CPU (0.87-1.01x), so compile=auto trains them eagerly there.
    cpu_training_compile_gain = False
    format_version = FORMAT_VERSION
    pretrained_kind = "generator"

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        if config.model != self.model_type:
            raise ValueError(f"{type(self).__name__} needs a config with model={self.model_type!r}, "
                             f"got model={config.model!r}")
        self.config = config

    # ------------------------------------------------------------------ sizes
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def class_names(self) -> list[str]:
        return [self.config.class_name(i) for i in range(self.num_classes)]

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def transformer_width(self) -> int:
        """The block stack's width (what :mod:`runkit.acceleration`'s CPU precision rule reads)."""
        return self.config.width

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ runtime switches
    def set_attention_backend(self, backend: str) -> None:
        """"auto" | "xformers" | "sdpa" for every attention layer, kept in ``config.attention_backend`` (so it
        is saved); an unknown name, or xformers where it cannot run on the model's device, raises here."""
        check_kernel(resolve_backend(backend, self.device), self.device)
        self.config.attention_backend = backend
        self.transformer.set_attention_backend(backend)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.transformer.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ input checks
    def class_id_tensor(self, class_ids: Sequence[int] | Tensor) -> Tensor:
        """Validated int64 class ids (B,) on the model's device; out-of-range ids raise ValueError."""
        ids = torch.as_tensor(class_ids).to(self.device)
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"class_ids must be a non-empty 1-D sequence of ints, got shape {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"class_ids must be integers, got dtype {ids.dtype}")
        ids = ids.long()
        bad = ids[(ids < 0) | (ids >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"class id {int(bad[0])} is out of range: this generator knows classes "
                             f"0..{self.num_classes - 1}")
        return ids

    def check_indices(self, indices: Tensor) -> None:
        if indices.dim() != 2 or indices.shape[1] != self.seq_len:
            raise ValueError(f"token indices must be B x {self.seq_len}, got {tuple(indices.shape)}")

    def check_tokenizer(self, tokenizer_config: Any) -> None:
        """Raise if ``tokenizer_config`` (a FlowMoConfig) does not produce this generator's tokens."""
        if tokenizer_config.num_indices != self.seq_len or tokenizer_config.vocab_size != self.vocab_size:
            raise ValueError(f"tokenizer gives {tokenizer_config.num_indices} indices of vocab "
                             f"{tokenizer_config.vocab_size}, this generator models {self.seq_len} of "
                             f"vocab {self.vocab_size}")
        expected = self.config.tokenizer_hash
        if expected is not None and tokenizer_config.architecture_hash() != expected:
            raise ValueError(f"tokenizer architecture_hash {tokenizer_config.architecture_hash()} differs from "
                             f"{expected}, the one this generator was trained on")

    def other_tokenizer_warning(self, tokenizer: Any) -> str | None:
        """A warning when ``tokenizer`` (a FlowMo) is not the one whose tokens this generator learnt.

        Same architecture but other weights passes :meth:`check_tokenizer` and decodes noise, so the
        encoder fingerprint recorded at training time is compared too. None when it matches or when
        nothing was recorded (generators trained before the fingerprint existed).
        """
        from .tokens import encoder_fingerprint

        expected = self.config.tokenizer_fingerprint
        if expected is None:
            return None
        actual = encoder_fingerprint(tokenizer)
        if actual == expected:
            return None
        return (f"WARNING: this generator was trained on the tokens of another tokenizer (encoder fingerprint "
                f"{expected}, the loaded one has {actual}): its images will be noise. Load the tokenizer it "
                "was trained with (or its Stage-1B run, which keeps the encoder)")

    # ------------------------------------------------------------------ generation (subclasses)
    @property
    def default_num_steps(self) -> int:
        """Generation steps when neither the caller nor ``config.sampling`` sets them."""
        raise NotImplementedError

    def sampling_settings(self, **overrides: Any) -> dict[str, Any]:
        """The sampling options ``generate`` uses: each given value, else the saved ``config.sampling``
        (``num_steps`` falling back to :attr:`default_num_steps`)."""
        defaults = dataclasses.asdict(self.config.sampling)
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"unknown sampling option(s) {unknown}; known: {sorted(defaults)}")
        settings = {key: defaults[key] if overrides.get(key) is None else overrides[key] for key in defaults}
        if settings["num_steps"] is None:
            settings["num_steps"] = self.default_num_steps
        return settings

    def drawable_logits(self, logits: Tensor, settings: dict[str, Any]) -> Tensor:
        """Logits (..., V) to sample from: without the training's label-smoothing floor
        (``remove_label_smoothing``) unless ``settings["remove_smoothing_floor"]`` is false."""
        if not settings["remove_smoothing_floor"]:
            return logits
        return remove_label_smoothing(logits, self.config.label_smoothing)

    def generate(self, class_ids: Sequence[int] | Tensor, num_steps: int | None = None,
                 cfg_scale: float | None = None, temperature: float | None = None, generator: RandomSource = None,
                 **extra: Any) -> Tensor:
        """Class ids (B,) -> token indices (B, N) int64. Unset options come from ``config.sampling``.
        ``generator``: None, one torch.Generator, or one per class id (each sample then depends on its
        own generator only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ persistence
    def pretrained_record(self) -> dict[str, Any]:
        """config.json: model type, sizes, classes, tokenizer hash."""
        return {"model_type": self.model_type, "config": self.config.to_dict()}

    def card_fields(self) -> dict[str, str]:
        c = self.config
        names = ", ".join(self.class_names[:10]) + (", ..." if self.num_classes > 10 else "")
        kind = {"maskgit": "MaskGIT (iterative parallel decoding)", "ar": "autoregressive"}.get(c.model, c.model)
        return {"title": f"{type(self).__name__}: class-conditional generator of FlowMo tokens",
                "summary": (f"A {kind} transformer, {c.width} wide × {c.depth} blocks, that samples {c.seq_len} "
                            f"FlowMo token indices of vocabulary {c.vocab_size} for one of {self.num_classes} "
                            f"classes ({names}). It needs the FlowMo tokenizer whose tokens it learnt "
                            f"(architecture hash `{c.tokenizer_hash}`) to turn them into images."),
                "usage": ("from generator import Pipeline\n\n"
                          "pipe = Pipeline.from_pretrained(\"path/or/repo-id\", \"its/tokenizer\")\n"
                          f"images = pipe({self.class_names[0]!r}, num_images=4, seed=0)   # list of PIL images")}

    @classmethod
    def from_record(cls, record: dict[str, Any], directory: Path) -> "GeneratorModel":
        """The base class picks MaskGIT or AR from the record; a subclass loads only its own kind."""
        if "model_type" not in record or "config" not in record:
            raise ValueError(f"{directory / CONFIG_FILE} is not a generator config (no 'model_type'/'config' keys)")
        model_cls = model_class(record["model_type"])
        if cls is not GeneratorModel and model_cls is not cls:
            raise ValueError(f"{directory} holds a {record['model_type']!r} generator, not a {cls.model_type!r} one; "
                             "use generator.load_generator to load either")
        return model_cls(GeneratorConfig.from_dict(record["config"]))


# model_type -> class, filled by @register_generator on MaskGIT and ARTransformer. The generator package
# imports both, so the registry is complete whenever any generator module has been imported.
_MODEL_CLASSES: dict[str, type[GeneratorModel]] = {}


def register_generator(cls: type[GeneratorModel]) -> type[GeneratorModel]:
    """Class decorator: ``from_pretrained`` and ``build_generator`` find ``cls`` by its ``model_type``."""
    _MODEL_CLASSES[cls.model_type] = cls
    return cls


def model_class(model_type: str) -> type[GeneratorModel]:
    if model_type not in _MODEL_CLASSES:
        raise ValueError(f"unknown generator model type {model_type!r}; choose one of {sorted(_MODEL_CLASSES)}")
    return _MODEL_CLASSES[model_type]


def build_generator(config: GeneratorConfig) -> GeneratorModel:
    """A freshly initialised MaskGIT or ARTransformer, as ``config.model`` says."""
    return model_class(config.model)(config)
