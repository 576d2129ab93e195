"""MaskGIT (Chang et al. 2022): a bidirectional transformer that fills in masked token indices."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GeneratorModel, LossOutput, register_generator
from .config import GeneratorConfig
from .sampling import (RandomSource, apply_guidance, guidance_scale, masked_after_step, sample_from_logits,
                       select_to_remask, training_mask)
from .transformer import ClassEmbedding, Transformer, drop_labels, init_weights

DEFAULT_STEPS = 12


@register_generator
class MaskGIT(GeneratorModel):
    """[class] + N token embeddings (MASK id = vocab_size) -> logits over the vocabulary at every position."""

    model_type = "maskgit"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size + 1, config.width)
        self.class_embedding = ClassEmbedding(config.num_classes, config.width)
        self.transformer = Transformer(config, causal=False, max_positions=config.seq_len + 1)
        self.head = nn.Linear(config.width, config.vocab_size)
        self.register_buffer("positions", torch.arange(config.seq_len + 1), persistent=False)
        init_weights(self)

    @property
    def default_num_steps(self) -> int:
        return DEFAULT_STEPS

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def forward(self, tokens: Tensor, class_ids: Tensor) -> Tensor:
        """tokens (B, N) in [0, vocab] (vocab = MASK), class_ids (B,) in [0, num_classes] -> logits (B, N, V)."""
        x = torch.cat([self.class_embedding(class_ids)[:, None], self.token_embedding(tokens)], dim=1)
        return self.head(self.transformer(x, self.positions[: x.shape[1]])[:, 1:])

    def training_loss(self, indices: Tensor, class_ids: Tensor, forward: Callable[..., Tensor] | None = None,
                      generator: torch.Generator | None = None) -> LossOutput:
        """Mask ceil(cos(pi r/2) N) positions (r ~ U(0,1)); cross-entropy on the masked positions only.

        ``forward`` is the callable that computes logits (the DDP-wrapped model in training).
        """
        self.check_indices(indices)
        forward = forward or self
        mask = training_mask(indices.shape[0], self.seq_len, indices.device, generator)
        labels = drop_labels(class_ids, self.null_class, self.config.label_dropout if self.training else 0.0,
                             generator)
        logits = forward(indices.masked_fill(mask, self.mask_id), labels)
        targets = indices[mask]
        masked_logits = logits[mask].float()
        loss = F.cross_entropy(masked_logits, targets, label_smoothing=self.config.label_smoothing)
        accuracy = (masked_logits.argmax(dim=-1) == targets).float().mean()
        return LossOutput(loss, accuracy)

    def guided_logits(self, tokens: Tensor, class_ids: Tensor, scale: float) -> Tensor:
        """Logits (B, N, V) with classifier-free guidance; conditional and NULL rows run as one batch."""
        if scale == 1.0:
            return self(tokens, class_ids)
        null = torch.full_like(class_ids, self.null_class)
        cond, uncond = self(tokens.repeat(2, 1), torch.cat([class_ids, null])).chunk(2)
        return apply_guidance(cond, uncond, scale)

    @torch.no_grad()
    def generate(self, class_ids: Sequence[int] | Tensor, num_steps: int | None = None,
                 cfg_scale: float | None = None, temperature: float | None = None, generator: RandomSource = None,
                 *, guidance_schedule: str | None = None, choice_temperature: float | None = None,
                 remove_smoothing_floor: bool | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Iterative parallel decoding -> token indices (B, N) int64.

        Each of ``num_steps`` steps samples every masked position at ``temperature`` from the
        distribution without the training's label-smoothing floor (:meth:`drawable_logits`; with it
        where ``remove_smoothing_floor`` is false), then
        masks again the least confident ones (log p + annealed ``choice_temperature`` x Gumbel) so
        that the masked count follows the cosine schedule. Guidance scale per step follows
        ``guidance_schedule`` (constant | linear | cosine, rising from 1 to ``cfg_scale``). Unset
        options come from ``config.sampling`` (steps: DEFAULT_STEPS when that is unset too).
        ``progress(step, num_steps)`` is called after each step.
        """
        settings = self.sampling_settings(num_steps=num_steps, cfg_scale=cfg_scale, temperature=temperature,
                                          guidance_schedule=guidance_schedule, choice_temperature=choice_temperature,
                                          remove_smoothing_floor=remove_smoothing_floor)
        num_steps = settings["num_steps"]
        cfg_scale, temperature = settings["cfg_scale"], settings["temperature"]
        guidance_schedule, choice_temperature = settings["guidance_schedule"], settings["choice_temperature"]
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        ids = self.class_id_tensor(class_ids)
        tokens = torch.full((ids.shape[0], self.seq_len), self.mask_id, dtype=torch.long, device=ids.device)
        masked = torch.ones_like(tokens, dtype=torch.bool)
        for step in range(num_steps):
            scale = guidance_scale(step, num_steps, cfg_scale, guidance_schedule)
            logits = self.drawable_logits(self.guided_logits(tokens, ids, scale).float(), settings)
            sampled = torch.where(masked, sample_from_logits(logits, temperature, generator), tokens)
            log_probs = (logits / temperature if temperature > 0 else logits).log_softmax(dim=-1)
            log_confidence = log_probs.gather(-1, sampled[..., None])[..., 0]
            still_masked = int(masked[0].sum())
            num_to_mask = max(0, min(masked_after_step(step, num_steps, self.seq_len), still_masked - 1))
            annealed = choice_temperature * (1.0 - (step + 1) / num_steps)
            masked = select_to_remask(log_confidence, masked, num_to_mask, annealed, generator)
            tokens = sampled.masked_fill(masked, self.mask_id)
            if progress is not None:
                progress(step + 1, num_steps)
            if num_to_mask == 0:
                break
        return tokens
