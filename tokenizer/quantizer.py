"""Lookup-free quantization (LFQ) of FlowMo codes into sub-token indices.

A code token has ``context_dim`` channels; it is split into ``context_dim / bits`` sub-tokens of
``bits`` channels, sub-token j taking channels j, j + S, j + 2S, ... (S = context_dim / bits).
Bit i of a sub-token is channel i of its group; the index is little-endian.
"""

from __future__ import annotations

import torch
from torch import Tensor


def split_subtokens(code: Tensor, bits: int) -> Tensor:
    """(B, L, C) -> (B, L, S, bits) with S = C / bits; [..., j, i] = code[..., i*S + j]."""
    b, length, channels = code.shape
    groups = channels // bits
    return code.reshape(b, length, bits, groups).transpose(2, 3)


def merge_subtokens(groups: Tensor) -> Tensor:
    """Inverse of :func:`split_subtokens`: (B, L, S, bits) -> (B, L, S*bits)."""
    b, length, s, bits = groups.shape
    return groups.transpose(2, 3).reshape(b, length, s * bits)


def sign_quantize(code: Tensor) -> Tensor:
    """x > 0 -> +1 else -1, with a straight-through gradient. Any shape."""
    q = torch.where(code > 0, torch.ones_like(code), -torch.ones_like(code))
    return code + (q - code).detach()


def code_to_indices(quantized: Tensor, bits: int) -> Tensor:
    """Quantized code (B, L, C) in {-1, +1} -> int64 indices (B, L * C / bits), token-major."""
    groups = split_subtokens(quantized, bits) > 0
    weights = 2 ** torch.arange(bits, device=quantized.device, dtype=torch.int64)
    indices = (groups.long() * weights).sum(-1)
    return indices.reshape(indices.shape[0], -1)


def indices_to_code(indices: Tensor, bits: int, context_dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """int64 indices (B, N) -> quantized code (B, N * bits / context_dim, context_dim) in {-1, +1}."""
    if indices.dtype.is_floating_point:
        raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
    if indices.dim() != 2:
        raise ValueError(f"indices must be (B, N), got shape {tuple(indices.shape)}")
    groups_per_token = context_dim // bits
    if indices.shape[1] % groups_per_token:
        raise ValueError(f"{indices.shape[1]} indices do not form whole tokens of {groups_per_token} sub-tokens")
    if indices.numel() and (indices.min() < 0 or indices.max() >= 2**bits):
        raise ValueError(f"indices must lie in [0, {2**bits}), got range "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    b, n = indices.shape
    shifts = torch.arange(bits, device=indices.device, dtype=torch.int64)
    bit_values = (indices.long()[..., None] >> shifts) & 1  # (B, N, bits)
    signs = bit_values.to(dtype) * 2 - 1
    return merge_subtokens(signs.reshape(b, n // groups_per_token, groups_per_token, bits))


def codebook(bits: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """All 2^bits codes as rows in {-1, +1}: (2^bits, bits), row k is the code of index k."""
    k = torch.arange(2**bits, device=device, dtype=torch.int64)
    return (((k[:, None] >> torch.arange(bits, device=device)) & 1).to(dtype) * 2 - 1)


def commitment_loss(code: Tensor, quantized: Tensor) -> Tensor:
    """mean((x - q)^2) with q detached (the encoder is pulled towards its codes)."""
    return (code - quantized.detach()).pow(2).mean()


def entropy_loss(code: Tensor, bits: int, temperature: float = 0.1, chunk_size: int = 4096) -> Tensor:
    """LFQ entropy term: mean per-sub-token entropy minus the entropy of the mean distribution.

    Distribution over the 2^bits codes: softmax(2 * x . code^T / temperature). Minimising this
    makes each sub-token confident and the batch use the whole codebook.
    code: (B, L, C) continuous -> scalar.
    """
    x = split_subtokens(code.float(), bits).reshape(-1, bits)
    book = codebook(bits, device=code.device)
    per_sample_entropy = x.new_zeros(())
    mean_probs = x.new_zeros(book.shape[0])
    # Chunked over sub-tokens so the (N, 2^bits) probability table never exists whole.
    for chunk in x.split(chunk_size):
        logits = 2 * chunk @ book.T / temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        per_sample_entropy = per_sample_entropy - (probs * log_probs).sum()
        mean_probs = mean_probs + probs.sum(0)
    n = x.shape[0]
    per_sample_entropy = per_sample_entropy / n
    mean_probs = mean_probs / n
    codebook_entropy = -(mean_probs * torch.log(mean_probs.clamp_min(1e-12))).sum()
    return per_sample_entropy - codebook_entropy
