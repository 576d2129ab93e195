"""LlamaGen-style autoregressive generator: a causal transformer over [class] + token indices."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GeneratorModel, LossOutput, register_generator
from .config import GeneratorConfig
from .sampling import RandomSource, apply_guidance, sample_top_k_top_p
from .transformer import ClassEmbedding, Transformer, drop_labels, init_weights


class KVCache:
    """Keys and values of every layer for B rows, filled one prefill then one position at a time."""

    def __init__(self, depth: int, max_len: int):
        self.max_len = max_len
        self.keys: list[Tensor | None] = [None] * depth
        self.values: list[Tensor | None] = [None] * depth
        self.lengths = [0] * depth

    def length(self, layer: int) -> int:
        return self.lengths[layer]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v (B, H, L, D) -> all cached keys and values of ``layer`` (B, H, n + L, D)."""
        start, end = self.lengths[layer], self.lengths[layer] + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot append up to {end}")
        if self.keys[layer] is None:  # allocated on first use to match the activations' dtype and device
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.keys[layer] = k.new_empty(shape)
            self.values[layer] = v.new_empty(shape)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.lengths[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


@register_generator
class ARTransformer(GeneratorModel):
    """Decoder-only transformer: position 0 holds the class embedding, position i+1 token i."""

    model_type = "ar"
    # Measured: compiled blocks recompile at every cached position (the cache length is a new int each
    # step) until dynamo's recompile limit, slower than eager; training (teacher forcing) compiles fine.
    eager_sampling_reason = "its KV-cache decoding changes shapes at every position"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.class_embedding = ClassEmbedding(config.num_classes, config.width)
        self.transformer = Transformer(config, causal=True, max_positions=config.seq_len)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.register_buffer("positions", torch.arange(config.seq_len), persistent=False)
        init_weights(self)

    def forward(self, indices: Tensor, class_ids: Tensor) -> Tensor:
        """Teacher forcing: indices (B, n <= N), class_ids (B,) -> logits (B, n, V); logits[:, i] predicts
        indices[:, i] from the class and indices[:, :i]."""
        x = torch.cat([self.class_embedding(class_ids)[:, None], self.token_embedding(indices[:, :-1])], dim=1)
        return self.head(self.transformer(x, self.positions[: x.shape[1]]))

    def training_loss(self, indices: Tensor, class_ids: Tensor, forward: Callable[..., Tensor] | None = None,
                      generator: torch.Generator | None = None) -> LossOutput:
        """Next-token cross-entropy over all N positions (class dropped to NULL with label_dropout)."""
        self.check_indices(indices)
        forward = forward or self
        labels = drop_labels(class_ids, self.null_class, self.config.label_dropout if self.training else 0.0,
                             generator)
        logits = forward(indices, labels).float()
        loss = F.cross_entropy(logits.flatten(0, 1), indices.flatten(), label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == indices).float().mean()
        return LossOutput(loss, accuracy)

    @property
    def default_num_steps(self) -> int:
        return self.seq_len  # one step per token, always

    # ------------------------------------------------------------------ incremental decoding
    def new_cache(self) -> KVCache:
        return KVCache(self.config.depth, self.seq_len)

    def prefill(self, class_ids: Tensor, cache: KVCache) -> Tensor:
        """Start a cached sequence: class_ids (B,) in [0, num_classes] -> logits (B, V) for token 0."""
        x = self.class_embedding(class_ids)[:, None]
        return self.head(self.transformer(x, self.positions[:1], cache)[:, -1])

    def decode_step(self, tokens: Tensor, position: int, cache: KVCache) -> Tensor:
        """Feed token ``position`` (B,) after the cached prefix -> logits (B, V) for token ``position + 1``."""
        x = self.token_embedding(tokens)[:, None]
        return self.head(self.transformer(x, self.positions[position + 1: position + 2], cache)[:, -1])

    @torch.no_grad()
    def generate(self, class_ids: Sequence[int] | Tensor, num_steps: int | None = None,
                 cfg_scale: float | None = None, temperature: float | None = None, generator: RandomSource = None,
                 *, top_k: int | None = None, top_p: float | None = None,
                 remove_smoothing_floor: bool | None = None, use_kv_cache: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Sample N tokens one at a time -> indices (B, N) int64.

        ``num_steps`` is ignored (an AR model always takes N steps; the argument exists so both
        generators share one signature). With ``cfg_scale`` != 1 the conditional and NULL-class
        rows run stacked in one batch and logits mix as u + s (c - u); then the training's
        label-smoothing floor is removed (:meth:`drawable_logits`, unless ``remove_smoothing_floor``
        is false), then ``top_k`` / ``top_p``
        filtering and sampling at ``temperature``. Unset options come from ``config.sampling``;
        ``top_k=0`` / ``top_p=1`` switch a saved filter off. ``progress(i, N)`` is called after each token.
        """
        settings = self.sampling_settings(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                          remove_smoothing_floor=remove_smoothing_floor)
        cfg_scale, temperature = settings["cfg_scale"], settings["temperature"]
        top_k, top_p = settings["top_k"], settings["top_p"]
        ids = self.class_id_tensor(class_ids)
        batch = ids.shape[0]
        guided = cfg_scale != 1.0
        rows = torch.cat([ids, torch.full_like(ids, self.null_class)]) if guided else ids
        copies = 2 if guided else 1
        tokens = torch.empty(batch, 0, dtype=torch.long, device=ids.device)
        cache = self.new_cache() if use_kv_cache else None
        for position in range(self.seq_len):
            if cache is None:
                # Teacher forcing drops the last input, so one placeholder makes the last logits predict `position`.
                logits = self(F.pad(tokens, (0, 1)).repeat(copies, 1), rows)[:, -1]
            elif position == 0:
                logits = self.prefill(rows, cache)
            else:
                logits = self.decode_step(tokens[:, -1].repeat(copies), position - 1, cache)
            logits = logits.float()
            if guided:
                logits = apply_guidance(*logits.chunk(2), cfg_scale)
            logits = self.drawable_logits(logits, settings)
            sampled = sample_top_k_top_p(logits, temperature, top_k, top_p, generator)
            tokens = torch.cat([tokens, sampled[:, None]], dim=1)
            if progress is not None:
                progress(position + 1, self.seq_len)
        return tokens
