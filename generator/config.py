"""GeneratorConfig: the architecture of one class-conditional token generator.

This dataclass is also the schema of ``configs/generator/*.yaml`` (plus the data-derived
fields ``seq_len``, ``vocab_size``, ``num_classes`` and ``class_names`` that training fills in
from the token cache manifest). Training hyperparameters live in the training config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from runkit.config import dataclass_from_dict

from .attention import BACKENDS
from .sampling import GUIDANCE_SCHEDULES

# Bumped whenever a code change alters what a given state dict computes.
FORMAT_VERSION = 1

MODEL_TYPES = ("maskgit", "ar")
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")
MLPS = ("swiglu", "gelu")
TOKEN_LAYOUTS = ("flat",)  # one position per LFQ sub-token; a factorised head would add "factorized"


@dataclass
class SamplingDefaults:
    """How ``generate`` samples unless told otherwise; saved with the weights, since the setting that
    keeps samples both recognisable and diverse is a property of the trained model."""

    num_steps: int | None = None  # MaskGIT decoding steps; None: the model's default_num_steps (AR: always N)
    cfg_scale: float = 1.0
    temperature: float = 1.0
    guidance_schedule: str = "constant"  # MaskGIT: constant | linear | cosine (rising from 1 to cfg_scale)
    choice_temperature: float = 4.5  # MaskGIT: Gumbel noise on confidences, annealed to 0
    top_k: int | None = None  # AR
    top_p: float | None = None  # AR
    # Sample from the distribution the model learned before its training's label smoothing (the eps/V floor
    # on every token is a regulariser, not a prediction: benchmarks/generator_quality.md); false: the smoothed one.
    remove_smoothing_floor: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid SamplingDefaults: {msg}")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

        if self.num_steps is not None and (not isinstance(self.num_steps, int) or self.num_steps < 1):
            raise bad(f"num_steps must be a positive integer or null, got {self.num_steps!r}")
        for name in ("cfg_scale", "temperature", "choice_temperature"):
            if not number(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
            setattr(self, name, float(getattr(self, name)))
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise bad(f"guidance_schedule={self.guidance_schedule!r}; choose one of {list(GUIDANCE_SCHEDULES)}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise bad(f"top_k must be a positive integer or null, got {self.top_k!r}")
        if self.top_p is not None and (not number(self.top_p) or not 0 < self.top_p <= 1):
            raise bad(f"top_p must be in (0, 1] or null, got {self.top_p!r}")
        if not isinstance(self.remove_smoothing_floor, bool):
            raise bad(f"remove_smoothing_floor must be true or false, got {self.remove_smoothing_floor!r}")


@dataclass
class GeneratorConfig:
    model: str = "maskgit"
    seq_len: int = 512  # indices per image (tokenizer num_indices)
    vocab_size: int = 512  # 2**lfq_bits
    num_classes: int = 1000
    class_names: list[str] = field(default_factory=list)  # empty -> "class 0", "class 1", ...
    width: int = 768
    depth: int = 24
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp: str = "gelu"
    mlp_multiple_of: int = 64  # SwiGLU hidden size is rounded up to a multiple of this
    norm: str = "layernorm"
    positions: str = "learned"
    rope_theta: float = 10_000.0
    dropout: float = 0.0  # on residual branches and embeddings
    label_dropout: float = 0.1  # training: class replaced by NULL (classifier-free guidance)
    label_smoothing: float = 0.0
    token_layout: str = "flat"
    tokenizer_hash: str | None = None  # FlowMoConfig.architecture_hash() of the tokenizer the tokens came from
    # generator.tokens.encoder_fingerprint of that tokenizer: its trained weights, not just its shape
    # (None in generators trained before it was recorded, or on a cache that lacks it)
    tokenizer_fingerprint: str | None = None
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)  # generate() defaults, not architecture
    # The attention backend asked for (auto | xformers | sdpa): a runtime choice, not architecture, saved so a
    # loaded model runs as it was set (set_attention_backend); configs written before it existed read "auto".
    attention_backend: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (training provenance)

    def __post_init__(self) -> None:
        self.class_names = list(self.class_names)
        if self.sampling is None:
            self.sampling = SamplingDefaults()
        elif isinstance(self.sampling, Mapping):
            self.sampling = dataclass_from_dict(SamplingDefaults, dict(self.sampling))
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        hidden = int(self.width * self.mlp_ratio)
        if self.mlp == "swiglu":  # same parameter count as a GELU MLP of mlp_ratio (Llama)
            hidden = int(2 * hidden / 3)
            hidden = -(-hidden // self.mlp_multiple_of) * self.mlp_multiple_of
        return hidden

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if self.class_names else f"class {class_id}"

    def validate(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid GeneratorConfig: {msg}")

        for name, allowed in (("model", MODEL_TYPES), ("norm", NORMS), ("positions", POSITIONS), ("mlp", MLPS),
                              ("token_layout", TOKEN_LAYOUTS), ("attention_backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise bad(f"{name}={getattr(self, name)!r}; choose one of {list(allowed)}")
        for name in ("seq_len", "vocab_size", "num_classes", "width", "depth", "num_heads", "mlp_multiple_of"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{name} must be a positive integer, got {value!r}")
        if self.width % self.num_heads:
            raise bad(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.positions == "rope" and self.head_dim % 2:
            raise bad(f"RoPE needs an even head_dim, got width/num_heads = {self.head_dim}")
        if self.mlp_ratio <= 0:
            raise bad(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("dropout", "label_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise bad(f"{len(self.class_names)} class_names given for num_classes={self.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        return dataclass_from_dict(cls, data)
