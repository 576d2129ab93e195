"""The pre-norm transformer block stack shared by MaskGIT and the AR model, and the class embedding."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention, check_backend, resolve_backend
from .config import GeneratorConfig


class LayerCache(Protocol):
    """What a block needs from a KV cache (the AR model owns the implementation)."""

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, L, D) after the cached ones of ``layer``; return all keys and values so far."""
        ...

    def length(self, layer: int) -> int:
        ...


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin tables (L, head_dim/2) for 1D rotary embeddings at integer ``positions`` (L,)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + D/2) of x (B, H, L, D) by the angles of cos/sin (L, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def make_norm(kind: str, dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=1e-6) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=1e-6)


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``backend`` is what was asked for, ``kernel`` what runs on the weights' device."""

    def __init__(self, config: GeneratorConfig, layer: int):
        super().__init__()
        self.num_heads = config.num_heads
        self.layer = layer
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)
        self.set_backend(config.attention_backend)

    def set_backend(self, backend: str) -> None:
        """Ask for "auto" | "xformers" | "sdpa"; the kernel is chosen now and again whenever the module moves."""
        self.backend = check_backend(backend)
        self._choose_kernel()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "SelfAttention":
        # .to / .cuda / .cpu / .half all end here: "auto" follows the weights to their new device.
        module = super()._apply(fn, recurse)
        self._choose_kernel()
        return module

    def _choose_kernel(self) -> None:
        self.kernel = resolve_backend(self.backend, self.qkv.weight.device)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, causal: bool,
                cache: LayerCache | None = None) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            if length > 1 and cache.length(self.layer) > 0:
                raise ValueError("a KV cache accepts a multi-position prefill only while it is empty")
            k, v = cache.append(self.layer, k, v)
        out = attention(q, k, v, causal=causal and length > 1, backend=self.kernel)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.gated = config.mlp == "swiglu"
        hidden = config.mlp_hidden
        self.fc_in = nn.Linear(config.width, 2 * hidden if self.gated else hidden, bias=not self.gated)
        self.fc_out = nn.Linear(hidden, config.width, bias=not self.gated)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc_in(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.fc_out(h)


class Block(nn.Module):
    def __init__(self, config: GeneratorConfig, layer: int):
        super().__init__()
        self.norm1 = make_norm(config.norm, config.width)
        self.attn = SelfAttention(config, layer)
        self.norm2 = make_norm(config.norm, config.width)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, causal: bool,
                cache: LayerCache | None = None) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), rope, causal, cache))
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """Embedded sequence (B, L, W) at ``positions`` (L,) -> normalised hidden states (B, L, W).

    Positions are added here (learned table) or applied inside attention (RoPE), so the two
    models only build token/class embeddings and read out logits.
    """

    def __init__(self, config: GeneratorConfig, causal: bool, max_positions: int):
        super().__init__()
        self.config = config
        self.causal = causal
        self.position_table = (nn.Parameter(torch.zeros(max_positions, config.width))
                               if config.positions == "learned" else None)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.depth))
        self.final_norm = make_norm(config.norm, config.width)
        self.gradient_checkpointing = False

    def set_attention_backend(self, backend: str) -> None:
        for block in self.blocks:
            block.attn.set_backend(backend)

    def forward(self, x: Tensor, positions: Tensor, cache: LayerCache | None = None) -> Tensor:
        rope = None
        if self.position_table is not None:
            x = x + self.position_table[positions].to(x.dtype)
        else:
            rope = rope_tables(positions, self.config.head_dim, self.config.rope_theta)
        x = self.embed_dropout(x)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, rope, self.causal, use_reentrant=False)
            else:
                x = block(x, rope, self.causal, cache)
        return self.final_norm(x)


class ClassEmbedding(nn.Module):
    """num_classes learned class vectors plus one NULL class (id ``num_classes``) for guidance."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, width)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def forward(self, class_ids: Tensor) -> Tensor:
        return self.table(class_ids)


def drop_labels(class_ids: Tensor, null_id: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label (B,) by ``null_id`` with probability p (classifier-free guidance training)."""
    if p <= 0:
        return class_ids
    drop = torch.rand(class_ids.shape, device=class_ids.device, generator=generator) < p
    return torch.where(drop, torch.full_like(class_ids, null_id), class_ids)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-style init: N(0, std) linear/embedding weights, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, Transformer) and m.position_table is not None:
            nn.init.normal_(m.position_table, std=std)
