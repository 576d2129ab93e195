"""Scaled dot-product attention behind one backend switch (xformers on CUDA, PyTorch SDPA otherwise)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "xformers", "sdpa")


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    try:
        import xformers.ops as xops
    except ImportError:  # also covers a broken install (missing CUDA extension)
        return None
    return xops


def xformers_available() -> bool:
    return _xformers_ops() is not None


def resolve_backend(backend: str, q: Tensor) -> str:
    """The concrete backend ("xformers" or "sdpa") for ``backend`` and a query tensor."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is unknown; choose one of {list(BACKENDS)}")
    if backend == "auto":
        return "xformers" if q.is_cuda and xformers_available() else "sdpa"
    if backend == "xformers":
        if not xformers_available():
            raise RuntimeError("attention backend 'xformers' was requested but xformers is not installed "
                               "(pip install -e '.[cuda]'); use backend='sdpa' or 'auto'")
        if not q.is_cuda:
            raise RuntimeError(f"attention backend 'xformers' needs CUDA tensors, got device {q.device}; "
                               "use backend='sdpa' or 'auto'")
    return backend


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, backend: str = "auto") -> Tensor:
    """Softmax attention.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D) -> (B, H, Lq, D). With ``causal`` query i attends to
    keys 0..i, which requires Lq == Lk (KV-cached decoding of one query needs no mask).
    """
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[2]} and {k.shape[2]}")
    if resolve_backend(backend, q) == "xformers":
        xops = _xformers_ops()
        bias = xops.LowerTriangularMask() if causal else None
        # The one place where the layout changes: xformers wants (B, L, H, D).
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """Plain softmax(q k^T / sqrt(D)) v in float32; the ground truth the backends are tested against."""
    scores = q.float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        lq, lk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)
