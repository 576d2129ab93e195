"""The exponential moving average of a model's weights that training exports."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's floating-point parameters; buffers are copied.

    With ``update_every = n`` the average is refreshed every n-th step with decay ``decay**n``,
    which approximates a per-step EMA of ``decay`` at 1/n of the cost (FlowMo: 0.9999, n = 10).
    The shadow tensors are fp32 on the model's device whatever the model's compute dtype.
    """

    def __init__(self, model: nn.Module, decay: float, update_every: int = 1) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        self.decay = float(decay)
        self.update_every = int(update_every)
        model = _unwrap(model)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters()}
        self.buffers: dict[str, torch.Tensor] = {
            name: b.detach().clone() for name, b in model.named_buffers()}

    @property
    def effective_decay(self) -> float:
        return self.decay ** self.update_every

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend the model's current weights into the average; a no-op unless ``step % update_every == 0``."""
        if step % self.update_every:
            return
        model = _unwrap(model)
        decay = self.effective_decay
        for name, param in model.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        for name, buf in model.named_buffers():
            self.buffers[name].copy_(buf)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (same architecture)."""
        model = _unwrap(model)
        params = dict(model.named_parameters())
        missing = sorted(set(self.shadow) - set(params)) + sorted(set(params) - set(self.shadow))
        if missing:
            raise ValueError(f"EMA and model parameters differ: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for name, param in params.items():
            param.copy_(self.shadow[name].to(param.dtype))
        for name, buf in model.named_buffers():
            if name in self.buffers:
                buf.copy_(self.buffers[name])

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` carrying the EMA weights, in eval mode with no gradients."""
        averaged = copy.deepcopy(_unwrap(model))
        self.copy_to(averaged)
        averaged.eval().requires_grad_(False)
        return averaged

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "update_every": self.update_every,
                "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            diff = sorted(set(state["shadow"]) ^ set(self.shadow))
            raise ValueError(f"EMA state does not match the model: differing parameters {diff[:5]}")
        self.decay = float(state["decay"])
        self.update_every = int(state["update_every"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        for name, value in state.get("buffers", {}).items():
            if name in self.buffers:
                self.buffers[name].copy_(value)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers, so parameter names stay stable."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
