"""FlowMo: a transformer diffusion autoencoder with LFQ tokens (arXiv 2503.11056).

encode -> quantize -> indices; indices -> indices_to_code -> decode (rectified-flow sampler
over the decoder's velocity). The model only answers "code" and "velocity"; the sampling loop
lives in :mod:`tokenizer.sampler`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import Tensor, nn

from runkit.pretrained import Pretrained

from . import quantizer as lfq
from .config import FORMAT_VERSION, FlowMoConfig
from .layers import patchify, unpatchify
from .mmdit import MMDiT
from .sampler import euler_sample, network_evaluations, time_grid

class Quantized(NamedTuple):
    code: Tensor  # (B, L, C) in {-1, +1}, straight-through gradient to the continuous code
    indices: Tensor  # (B, N) int64


class FlowMo(Pretrained, nn.Module):
    format_version = FORMAT_VERSION
    pretrained_kind = "FlowMo tokenizer"
    cpu_training_compile_gain = True  # benchmarks/train_speed.md: 1.2x on a 2-core CPU (digits, small64)

    def __init__(self, config: FlowMoConfig):
        super().__init__()
        self.config = config
        c = config
        common = dict(num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, patch_dim=c.patch_dim, rope_theta=c.rope_theta)
        self.encoder = MMDiT(hidden=c.enc_hidden, depth=c.enc_depth, code_in=c.context_dim, code_out=c.context_dim,
                             rope_axes=c.rope_axes(c.enc_hidden), **common)
        # Decoder code input carries one extra "mask" channel (ones; zeros for the unconditional branch).
        self.decoder = MMDiT(hidden=c.dec_hidden, depth=c.dec_depth, code_in=c.context_dim + 1,
                             code_out=c.context_dim + 1, rope_axes=c.rope_axes(c.dec_hidden), **common)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def bits_per_pixel(self) -> float:
        return self.config.bits_per_pixel

    @property
    def transformer_width(self) -> int:
        """The wider of encoder and decoder (what :mod:`runkit.acceleration`'s CPU precision rule reads)."""
        return max(self.config.enc_hidden, self.config.dec_hidden)

    # ------------------------------------------------------------------ input checks
    def _check_images(self, images: Tensor, name: str = "images") -> None:
        size = self.config.image_size
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{name} must be a float tensor B x 3 x H x W in [-1, 1], got {shape}")
        if images.shape[-2:] != (size, size):
            raise ValueError(f"{name} must be {size}x{size} for this tokenizer, got "
                             f"{images.shape[-2]}x{images.shape[-1]} (resize or crop first)")
        if not images.dtype.is_floating_point:
            raise ValueError(f"{name} must be floating point in [-1, 1], got {images.dtype}")

    def _check_code(self, code: Tensor) -> None:
        expected = (self.config.code_length, self.config.context_dim)
        if code.dim() != 3 or tuple(code.shape[1:]) != expected:
            raise ValueError(f"code must be B x {expected[0]} x {expected[1]}, got {tuple(code.shape)}")

    # ------------------------------------------------------------------ encoder side
    def encode(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) in [-1, 1] -> continuous code (B, code_length, context_dim)."""
        self._check_images(images)
        b = images.shape[0]
        grid = self.config.image_size // self.config.patch_size
        patches = patchify(images, self.config.patch_size)
        # The encoder's code stream starts from zeros, i.e. from the learned bias of txt_in.
        code_in = patches.new_zeros(b, self.config.code_length, self.config.context_dim)
        _, code = self.encoder(patches, code_in, (grid, grid), t=None)
        return code

    def quantize(self, code: Tensor) -> Quantized:
        """Continuous code -> (sign-quantized code with straight-through gradient, indices (B, N))."""
        self._check_code(code)
        quantized = lfq.sign_quantize(code)
        return Quantized(quantized, lfq.code_to_indices(quantized.detach(), self.config.lfq_bits))

    def indices_to_code(self, indices: Tensor) -> Tensor:
        """Indices (B, N) -> quantized code (B, code_length, context_dim); exact inverse of quantize."""
        if indices.dim() == 2 and indices.shape[1] != self.config.num_indices:
            raise ValueError(f"expected {self.config.num_indices} indices per image for this tokenizer, "
                             f"got {indices.shape[1]}")
        return lfq.indices_to_code(indices, self.config.lfq_bits, self.config.context_dim,
                                   dtype=next(self.parameters()).dtype)

    def tokenize(self, images: Tensor) -> Tensor:
        """images -> indices (B, N), no gradient bookkeeping."""
        return self.quantize(self.encode(images)).indices

    # ------------------------------------------------------------------ decoder side
    @staticmethod
    def decoder_code_input(code: Tensor | None, keep: Tensor | None = None, like: Tensor | None = None) -> Tensor:
        """Quantized code (B, L, C) -> decoder input (B, L, C+1) with a ones mask channel.

        ``keep`` (B,) bool zeroes the whole input (mask channel too) where False: the
        unconditional branch for classifier-free guidance.
        """
        if code is None:
            raise ValueError("decoder_code_input needs a code; use velocity(..., code=None) for unconditional")
        full = torch.cat([code, torch.ones_like(code[..., :1])], dim=-1)
        if keep is not None:
            full = full * keep.to(full.dtype)[:, None, None]
        return full

    def velocity(self, x_t: Tensor, code: Tensor | None, t: Tensor) -> Tensor:
        """Decoder velocity v ~ eps - x at time t (B,) for x_t (B, 3, H, W).

        code: quantized code (B, L, C), the mask channel is appended here; None gives the
        unconditional branch (all-zero code input).
        """
        if code is None:
            b = x_t.shape[0]
            code_in = x_t.new_zeros(b, self.config.code_length, self.config.context_dim + 1)
        else:
            code_in = self.decoder_code_input(code)
        return self.velocity_from_input(x_t, code_in, t)

    def velocity_from_input(self, x_t: Tensor, code_in: Tensor, t: Tensor) -> Tensor:
        """Decoder velocity from an explicit (B, L, C+1) code input (mask channel included)."""
        self._check_images(x_t, "x_t")
        size, p = self.config.image_size, self.config.patch_size
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        v, _ = self.decoder(patchify(x_t, p), code_in.to(x_t.dtype), (size // p, size // p), t.to(x_t.device))
        return unpatchify(v, p, size, size)

    def decode(self, indices_or_code: Tensor, steps: int | None = None, cfg: float | None = None,
               schedule: str | None = None, cfg_interval: tuple[float, float] | None | str = "default",
               noise: Tensor | None = None, generator: torch.Generator | None = None,
               progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Indices (B, N) int64 or quantized code (B, L, C) -> images (B, 3, H, W) in [-1, 1].

        Sampler settings left unset come from ``config.decode`` (saved with the weights).
        Stochastic through the initial noise: pass ``noise`` or a seeded ``generator`` for
        repeatable output. ``cfg_interval`` is in EDM sigma (None: guide at every step).
        """
        settings = self.decode_settings(steps, cfg, schedule, cfg_interval)
        steps, cfg, schedule, cfg_interval = (settings[k] for k in ("steps", "cfg", "schedule", "cfg_interval"))
        code = self.indices_to_code(indices_or_code) if not indices_or_code.dtype.is_floating_point \
            else indices_or_code
        self._check_code(code)
        b, size = code.shape[0], self.config.image_size
        dtype = next(self.parameters()).dtype
        if noise is None:
            noise = torch.randn(b, 3, size, size, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else self.device)
        noise = noise.to(device=self.device, dtype=dtype)
        code_in = self.decoder_code_input(code.to(device=self.device, dtype=dtype))
        z = euler_sample(self.velocity_from_input, code_in, noise, time_grid(steps, schedule, self.device),
                         cfg=cfg, cfg_interval=cfg_interval, progress=progress)
        return z.clamp(-1, 1)

    def decode_settings(self, steps: int | None = None, cfg: float | None = None, schedule: str | None = None,
                        cfg_interval: tuple[float, float] | None | str = "default") -> dict[str, Any]:
        """The sampler settings :meth:`decode` uses for these arguments (unset ones from ``config.decode``)."""
        defaults = self.config.decode
        return {"steps": defaults.steps if steps is None else steps,
                "cfg": defaults.cfg if cfg is None else cfg,
                "schedule": defaults.schedule if schedule is None else schedule,
                "cfg_interval": defaults.cfg_interval if isinstance(cfg_interval, str) and cfg_interval == "default"
                else cfg_interval}

    def decode_evaluations(self, steps: int | None = None, cfg: float | None = None, schedule: str | None = None,
                           cfg_interval: tuple[float, float] | None | str = "default") -> int:
        """Decoder network evaluations per image of :meth:`decode` with these settings (the decode cost)."""
        settings = self.decode_settings(steps, cfg, schedule, cfg_interval)
        return network_evaluations(time_grid(settings["steps"], settings["schedule"]), settings["cfg"],
                                   settings["cfg_interval"])

    def reconstruct(self, images: Tensor, **decode_kwargs: Any) -> Tensor:
        """images -> encode -> quantize -> decode."""
        return self.decode(self.quantize(self.encode(images)).code, **decode_kwargs)

    # ------------------------------------------------------------------ training helpers
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.encoder.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ persistence
    def pretrained_record(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "architecture_hash": self.config.architecture_hash()}

    @classmethod
    def from_record(cls, record: dict[str, Any], directory: Path) -> "FlowMo":
        return cls(FlowMoConfig.from_dict(record["config"]))

    def card_fields(self) -> dict[str, str]:
        c = self.config
        bits = c.bits_per_image
        return {"title": "FlowMo image tokenizer",
                "summary": (f"A {c.image_size}×{c.image_size} px image becomes {c.num_indices} discrete tokens of "
                            f"vocabulary {c.vocab_size} ({bits} bits, {c.bits_per_pixel:.4f} bits per pixel) and is "
                            f"decoded back by a rectified-flow sampler. Encoder {c.enc_hidden} wide × {c.enc_depth} "
                            f"blocks, decoder {c.dec_hidden} wide × {c.dec_depth} blocks; decodes by default in "
                            f"{c.decode.steps} steps with guidance {c.decode.cfg:g} "
                            f"({self.decode_evaluations()} network evaluations per image). Architecture hash "
                            f"`{c.architecture_hash()}`."),
                "usage": ("from tokenizer import FlowMo\n\n"
                          "model = FlowMo.from_pretrained(\"path/or/repo-id\").eval()\n"
                          f"indices = model.tokenize(images)   # B×3×{c.image_size}×{c.image_size} in [-1, 1] "
                          f"-> B×{c.num_indices} int64\n"
                          "images = model.decode(indices)")}

    def check_pretrained_state(self, state: Mapping[str, Tensor], source: str) -> None:
        from .official import check_state_dict

        check_state_dict(self, state, source=source)

    @classmethod
    def from_official(cls, path_or_state_dict: str | os.PathLike | dict, config: FlowMoConfig | str,
                      weights: str = "ema", map_location: str | torch.device = "cpu") -> "FlowMo":
        """Load the authors' released checkpoint (see :mod:`tokenizer.official`)."""
        from .official import load_official_state_dict

        if isinstance(config, str):
            config = FlowMoConfig.preset(config)
        if isinstance(path_or_state_dict, (str, os.PathLike)) and not Path(path_or_state_dict).is_file():
            raise FileNotFoundError(f"FlowMo checkpoint {path_or_state_dict} not found. Download the released "
                                    "flowmo_lo.pth / flowmo_hi.pth and pass its local path.")
        model = cls(config)
        model.load_state_dict(load_official_state_dict(path_or_state_dict, model, weights=weights,
                                                       map_location=map_location))
        return model

