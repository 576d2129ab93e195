"""The MMDiT used twice by FlowMo: once as encoder (no time input), once as decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import (
    DoubleStreamBlock,
    LastLayer,
    MLPEmbedder,
    code_position_ids,
    image_position_ids,
    rope_embedding,
    timestep_embedding,
)

TIME_EMBED_DIM = 256
MUP_ATTENTION_NUMERATOR = 8.0  # released attention scale 8 / head_dim


class MMDiT(nn.Module):
    """Double-stream transformer over [code tokens; image patches].

    Image stream: patches (B, N, patch_dim) -> (B, N, patch_dim).
    Code stream: tokens (B, L, code_in) -> (B, L, code_out).
    """

    def __init__(self, *, hidden: int, depth: int, num_heads: int, mlp_ratio: float, patch_dim: int,
                 code_in: int, code_out: int, rope_axes: list[int], rope_theta: float):
        super().__init__()
        self.hidden = hidden
        self.rope_axes = list(rope_axes)
        self.rope_theta = rope_theta
        head_dim = hidden // num_heads
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, hidden)
        self.img_in = nn.Linear(patch_dim, hidden)
        self.txt_in = nn.Linear(code_in, hidden)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(hidden, num_heads, mlp_ratio, MUP_ATTENTION_NUMERATOR / head_dim)
            for _ in range(depth))
        self.final_layer_img = LastLayer(hidden, patch_dim)
        self.final_layer_txt = LastLayer(hidden, code_out)
        self.gradient_checkpointing = False

    def forward(self, patches: Tensor, code: Tensor, grid: tuple[int, int], t: Tensor | None) -> tuple[Tensor, Tensor]:
        """patches (B, N, patch_dim), code (B, L, code_in), t (B,) or None -> (img_out, code_out)."""
        b, length = code.shape[:2]
        img = self.img_in(patches)
        txt = self.txt_in(code)
        vec = None if t is None else self.time_in(timestep_embedding(t, TIME_EMBED_DIM).to(img.dtype))
        ids = torch.cat((code_position_ids(b, length, code.device), image_position_ids(b, *grid, code.device)), dim=1)
        rope = rope_embedding(ids, self.rope_axes, self.rope_theta)
        for block in self.double_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                img, txt = torch.utils.checkpoint.checkpoint(block, img, txt, vec, rope, use_reentrant=False)
            else:
                img, txt = block(img, txt, vec, rope)
        return self.final_layer_img(img, vec), self.final_layer_txt(txt, vec)

    def block_linears(self) -> list[nn.Linear]:
        """The Linear layers inside the transformer blocks (the ones Stage 1A norm-fixes)."""
        return [m for m in self.double_blocks.modules() if isinstance(m, nn.Linear)]
