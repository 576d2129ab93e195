"""Every RNG a training step draws from, captured and restored, so a resumed run continues the same streams."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain lists.

    The result survives ``torch.save`` / ``torch.load(weights_only=True)``: the numpy state is
    stored as a uint32 tensor plus plain ints, python's as a list.
    """
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored when both sides have CUDA."""
    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    keys = np.asarray(torch.as_tensor(np_state["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state((np_state["kind"], keys, int(np_state["pos"]), int(np_state["has_gauss"]),
                         float(np_state["gauss"])))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            raise ValueError(f"checkpoint holds RNG states for {len(cuda_states)} CUDA devices, this process sees "
                             f"{torch.cuda.device_count()}: resume with the same visible devices")
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda_states])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value
