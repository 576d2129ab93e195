"""Scaled dot-product attention behind one backend switch (xformers on CUDA, PyTorch SDPA otherwise).

A model asks for a backend (``BACKENDS``); :func:`resolve_backend` turns it into the kernel that
attention calls run (``KERNELS``) once, when the model is built, moved to a device or switched.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "xformers", "sdpa")  # what a model is asked to use (GeneratorConfig.attention_backend)
KERNELS = ("xformers", "sdpa")  # what an attention call runs


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    try:
        import xformers.ops as xops
    except ImportError:  # also covers a broken install (missing CUDA extension)
        return None
    return xops


def xformers_available() -> bool:
    return _xformers_ops() is not None


def check_backend(backend: str) -> str:
    """``backend`` if it is one of BACKENDS, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is unknown; choose one of {list(BACKENDS)}")
    return backend


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The kernel ("xformers" or "sdpa") that ``backend`` stands for on ``device``.

    "auto" is xformers on a CUDA device when it is installed, SDPA otherwise. An explicit name is
    kept even where it cannot run (a GPU-trained model loaded on a CPU), so building, loading and
    moving a model never fail; :func:`check_kernel` says why when it is used.
    """
    if check_backend(backend) == "auto":
        return "xformers" if torch.device(device).type == "cuda" and xformers_available() else "sdpa"
    return backend


def check_kernel(kernel: str, device: torch.device | str) -> None:
    """Raise RuntimeError when ``kernel`` cannot run on ``device`` (xformers: not installed, or not CUDA)."""
    if kernel != "xformers":
        return
    if not xformers_available():
        raise RuntimeError("attention backend 'xformers' was requested but xformers is not installed "
                           "(pip install -e '.[cuda]'); use backend='sdpa' or 'auto'")
    if torch.device(device).type != "cuda":
        raise RuntimeError(f"attention backend 'xformers' needs CUDA tensors, got device {device}; "
                           "use backend='sdpa' or 'auto'")


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, backend: str = "sdpa") -> Tensor:
    """Softmax attention with the kernel ``backend`` ("xformers" | "sdpa": :func:`resolve_backend` turns
    "auto" into one once, where the model is built or moved, not here on every call).

    q: (B, H, Lq, D); k, v: (B, H, Lk, D) -> (B, H, Lq, D). With ``causal`` query i attends to
    keys 0..i, which requires Lq == Lk (KV-cached decoding of one query needs no mask).
    """
    if backend not in KERNELS:
        raise ValueError(f"attention kernel {backend!r} is unknown; choose one of {list(KERNELS)} "
                         "(resolve_backend turns 'auto' into one)")
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[2]} and {k.shape[2]}")
    if backend == "xformers":
        check_kernel(backend, q.device)
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
