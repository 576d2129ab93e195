"""FlowMoConfig: the architecture of one FlowMo tokenizer, and the released presets.

This dataclass is also the schema of ``configs/tokenizer/*.yaml``. Training hyperparameters
live in the training config, not here: a config describes weights, nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from runkit.config import dataclass_from_dict

from .sampler import parse_schedule

BASE_HIDDEN = 192  # DiT-B width per unit of the muP width multiplier
BASE_HEAD_DIM = 16  # head_dim per unit of width at the released 12 heads
ROPE_AXES_FRACTIONS = (1 / 8, 7 / 16, 7 / 16)  # released [8, 28, 28] at head_dim 64

# Bumped whenever a change to the model code changes what a given state dict computes;
# saved into config.json so stale shipped weights are detected.
FORMAT_VERSION = 1


@dataclass
class DecodeDefaults:
    """How :meth:`FlowMo.decode` samples unless told otherwise (flowmo.md §5 for the release).

    Saved with the weights because the best setting is a property of the trained decoder: a
    small model post-trained through a 4-step sampler reconstructs best at 4 steps, not 25.
    """

    steps: int = 25
    cfg: float = 1.5
    schedule: str = "pow_0.25"
    cfg_interval: tuple[float, float] | None = (0.17, 1.02)  # EDM sigma; None: guide at every step

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid DecodeDefaults: {msg}")

        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps <= 0:
            raise bad(f"steps must be a positive integer, got {self.steps!r}")
        if isinstance(self.cfg, bool) or not isinstance(self.cfg, (int, float)) or self.cfg < 0:
            raise bad(f"cfg must be a number >= 0, got {self.cfg!r}")
        self.cfg = float(self.cfg)
        parse_schedule(self.schedule)
        if self.cfg_interval is not None:
            try:
                low, high = (float(v) for v in self.cfg_interval)
            except (TypeError, ValueError):
                raise bad(f"cfg_interval must be [low, high] in EDM sigma or null, got {self.cfg_interval!r}") from None
            if not 0 <= low <= high:
                raise bad(f"cfg_interval must have 0 <= low <= high, got {self.cfg_interval!r}")
            self.cfg_interval = (low, high)


@dataclass
class FlowMoConfig:
    image_size: int = 256
    patch_size: int = 4
    code_length: int = 256
    context_dim: int = 18
    lfq_bits: int = 9
    enc_width: float = 4
    dec_width: float = 6
    enc_depth: int = 8
    dec_depth: int = 16
    num_heads: int = 12
    mlp_ratio: float = 4.0
    rope_theta: float = 10_000.0
    decode: DecodeDefaults = field(default_factory=DecodeDefaults)  # sampler defaults, not architecture
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. training provenance)

    def __post_init__(self) -> None:
        if self.decode is None:
            self.decode = DecodeDefaults()
        elif isinstance(self.decode, Mapping):
            self.decode = dataclass_from_dict(DecodeDefaults, dict(self.decode))
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def enc_hidden(self) -> int:
        return _hidden(self.enc_width)

    @property
    def dec_hidden(self) -> int:
        return _hidden(self.dec_width)

    def head_dim(self, hidden: int) -> int:
        return hidden // self.num_heads

    def rope_axes(self, hidden: int) -> list[int]:
        """Per-axis RoPE channel counts (code index, row, col), summing to head_dim."""
        head_dim = self.head_dim(hidden)
        first = round(head_dim * ROPE_AXES_FRACTIONS[0])
        rest = (head_dim - first) // 2
        return [first, rest, head_dim - first - rest]

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return 3 * self.patch_size**2

    @property
    def subtokens_per_token(self) -> int:
        return self.context_dim // self.lfq_bits

    @property
    def num_indices(self) -> int:
        """Length of the index sequence of one image (what the generator models)."""
        return self.code_length * self.subtokens_per_token

    @property
    def vocab_size(self) -> int:
        return 2**self.lfq_bits

    @property
    def bits_per_image(self) -> int:
        return self.code_length * self.context_dim

    @property
    def bits_per_pixel(self) -> float:
        return self.bits_per_image / self.image_size**2

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid FlowMoConfig: {msg}")

        for name in ("image_size", "patch_size", "code_length", "context_dim", "lfq_bits",
                     "enc_depth", "dec_depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise bad(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.context_dim % self.lfq_bits:
            raise bad(f"context_dim {self.context_dim} is not a multiple of lfq_bits {self.lfq_bits}")
        if self.lfq_bits > 16:
            raise bad(f"lfq_bits {self.lfq_bits} > 16 would need a codebook of 2^{self.lfq_bits} entries")
        for name in ("enc_width", "dec_width"):
            width = getattr(self, name)
            hidden = BASE_HIDDEN * width
            if width <= 0 or abs(hidden - round(hidden)) > 1e-9:
                raise bad(f"{name}={width} must be positive with {BASE_HIDDEN}*{name} an integer")
            hidden = round(hidden)
            if hidden % self.num_heads:
                raise bad(f"hidden size {hidden} ({name}={width}) is not divisible by num_heads {self.num_heads}")
            axes = self.rope_axes(hidden)
            if any(a <= 0 or a % 2 for a in axes):
                raise bad(f"RoPE axis dims {axes} for head_dim {self.head_dim(hidden)} ({name}={width}) "
                          "must be positive and even; use fewer heads or a larger width")
        if self.mlp_ratio <= 0:
            raise bad(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FlowMoConfig":
        return dataclass_from_dict(cls, data)

    def architecture_hash(self) -> str:
        """Short hash of every field that shapes the weights, plus FORMAT_VERSION."""
        arch = {k: v for k, v in self.to_dict().items() if k not in ("decode", "extra")}
        arch["format_version"] = FORMAT_VERSION
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def preset(cls, name: str) -> "FlowMoConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown FlowMo preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])


def _hidden(width: float) -> int:
    return round(BASE_HIDDEN * width)


PRESETS: dict[str, dict[str, Any]] = {
    # The released checkpoints (flowmo_lo.pth / flowmo_hi.pth).
    "flowmo_lo": dict(image_size=256, patch_size=4, code_length=256, context_dim=18, lfq_bits=9,
                      enc_width=4, dec_width=6, enc_depth=8, dec_depth=16),
    "flowmo_hi": dict(image_size=256, patch_size=4, code_length=256, context_dim=56, lfq_bits=14,
                      enc_width=4, dec_width=6, enc_depth=8, dec_depth=16),
    # The reference-output size of official_state_dict/ (released code, tiny overrides).
    "tiny": dict(image_size=32, patch_size=4, code_length=16, context_dim=18, lfq_bits=9,
                 enc_width=2, dec_width=2, enc_depth=2, dec_depth=2),
}
