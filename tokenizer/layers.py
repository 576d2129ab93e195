"""Building blocks of the FlowMo MMDiT (Flux lineage): embedders, RoPE, QK-norm attention,
adaLN modulation, the double-stream block and the output layer.

Module and parameter names follow the released checkpoint so its state dict loads as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_EPS = 1e-6


# ---------------------------------------------------------------------------- pure functions
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0, time_factor: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of ``time_factor * t``, cosines first. t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (time_factor * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_frequencies(positions: Tensor, dim: int, theta: float) -> Tensor:
    """2x2 rotation matrices for one position axis.

    positions: (B, L) -> (B, L, dim/2, 2, 2), float32.
    """
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim
    omega = 1.0 / (theta**scale)
    angles = positions.double()[..., None] * omega
    cos, sin = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1)
    return rot.reshape(*rot.shape[:-1], 2, 2).float()


def rope_embedding(position_ids: Tensor, axes_dim: list[int], theta: float) -> Tensor:
    """RoPE rotations for multi-axis positions.

    position_ids: (B, L, n_axes) -> (B, 1, L, head_dim/2, 2, 2), broadcast over heads.
    """
    parts = [rope_frequencies(position_ids[..., i], d, theta) for i, d in enumerate(axes_dim)]
    return torch.cat(parts, dim=-3).unsqueeze(1)


def apply_rope(x: Tensor, rope: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Rotate consecutive channel pairs (in fp32). x: (B, H, L, D), rope: (B, 1, L, D/2, 2, 2) -> x's
    shape, in ``dtype`` (default: x's)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = rope[..., 0] * pairs[..., 0] + rope[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).to(dtype or x.dtype)


def joint_attention(q: Tensor, k: Tensor, v: Tensor, rope: Tensor, scale: float) -> Tensor:
    """RoPE + scaled dot-product attention. q, k, v: (B, H, L, D) -> (B, L, H*D) in v's dtype.

    On a CPU the attention itself runs in fp32 even under bf16 autocast: the CPU flash kernel is
    faster in fp32 than in bf16 at these head sizes (benchmarks/train_speed.md: the 44 M small64
    step 11 % faster), and more exact. CUDA keeps the autocast dtype.
    """
    if q.device.type != "cpu":
        out = F.scaled_dot_product_attention(apply_rope(q, rope), apply_rope(k, rope), v, scale=scale)
    else:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(apply_rope(q, rope, torch.float32), apply_rope(k, rope, torch.float32),
                                                 v.float(), scale=scale).to(v.dtype)
    b, h, l, d = out.shape
    return out.transpose(1, 2).reshape(b, l, h * d)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, (H/p)*(W/p), p*p*C), patch entries ordered (row, col, channel)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, p*p*C) -> (B, C, H, W)."""
    b, _, dim = patches.shape
    p = patch_size
    c = dim // (p * p)
    x = patches.reshape(b, height // p, width // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, height, width)


def image_position_ids(batch: int, grid_h: int, grid_w: int, device: torch.device) -> Tensor:
    """Patch (r, c) -> (0, r, c). Returns (B, grid_h*grid_w, 3)."""
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1)
    return ids.unsqueeze(0).expand(batch, -1, -1)


def code_position_ids(batch: int, length: int, device: torch.device) -> Tensor:
    """Code token k -> (k, k, k). Returns (B, length, 3)."""
    k = torch.arange(length, device=device)
    return torch.stack([k, k, k], dim=-1).unsqueeze(0).expand(batch, -1, -1)


# ---------------------------------------------------------------------------- modules
class MLPEmbedder(nn.Module):
    """Linear - SiLU - Linear (the time embedding MLP)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS norm in float32 with a learned scale (the released ``scale`` parameter)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS)
        return x.to(dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """The qkv / QK-norm / projection weights of one stream (attention itself is joint)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, dim) -> q, k, v each (B, H, L, D), q and k RMS-normalised."""
        b, l, _ = x.shape
        qkv = self.qkv(x).reshape(b, l, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = self.norm(q, k, v)
        return q, k, v


@dataclass
class ModulationOut:
    shift: Tensor | float
    scale: Tensor | float
    gate: Tensor | float

    def modulate(self, x: Tensor) -> Tensor:
        return (1 + self.scale) * x + self.shift


IDENTITY_MODULATION = ModulationOut(shift=0.0, scale=0.0, gate=1.0)


class Modulation(nn.Module):
    """adaLN: SiLU(vec) -> Linear -> (shift, scale, gate) x 2."""

    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(dim, 6 * dim, bias=True)

    def forward(self, vec: Tensor | None) -> tuple[ModulationOut, ModulationOut]:
        if vec is None:  # the encoder has no time input: identity modulation
            return IDENTITY_MODULATION, IDENTITY_MODULATION
        chunks = self.lin(F.silu(vec))[:, None, :].chunk(6, dim=-1)
        return ModulationOut(*chunks[:3]), ModulationOut(*chunks[3:])


class DoubleStreamBlock(nn.Module):
    """Two streams (code "txt", image "img") with separate weights and one joint attention."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, attn_scale: float):
        super().__init__()
        mlp_hidden = int(hidden * mlp_ratio)
        self.attn_scale = attn_scale
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(hidden))
            setattr(self, f"{stream}_norm1", nn.LayerNorm(hidden, elementwise_affine=False, eps=NORM_EPS))
            setattr(self, f"{stream}_attn", SelfAttention(hidden, num_heads))
            setattr(self, f"{stream}_norm2", nn.LayerNorm(hidden, elementwise_affine=False, eps=NORM_EPS))
            setattr(self, f"{stream}_mlp", nn.Sequential(
                nn.Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden)))

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor | None, rope: Tensor) -> tuple[Tensor, Tensor]:
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)

        img_q, img_k, img_v = self.img_attn.qkv_heads(img_mod1.modulate(self.img_norm1(img)))
        txt_q, txt_k, txt_v = self.txt_attn.qkv_heads(txt_mod1.modulate(self.txt_norm1(txt)))
        attn = joint_attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                               torch.cat((txt_v, img_v), dim=2), rope, self.attn_scale)
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]

        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp(img_mod2.modulate(self.img_norm2(img)))
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp(txt_mod2.modulate(self.txt_norm2(txt)))
        return img, txt


class LastLayer(nn.Module):
    """LayerNorm -> (adaLN shift/scale, then the same LayerNorm again, as released) -> Linear."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=NORM_EPS)
        self.linear = nn.Linear(hidden, out_dim, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: Tensor, vec: Tensor | None) -> Tensor:
        x = self.norm_final(x)
        if vec is not None:
            shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
            x = (1 + scale[:, None, :]) * x + shift[:, None, :]
            x = self.norm_final(x)
        return self.linear(x)
