"""One on-disk form for every trained network: ``config.json`` + ``model.safetensors``.

The tokenizer, the generators and the metric classifier all save and load through
:class:`Pretrained`; each says only what its config record holds and how to build itself from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .fileio import atomic_write

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class Pretrained:
    """Mixin for an ``nn.Module``: ``save_pretrained`` / ``from_pretrained`` in one directory.

    Subclasses set :attr:`format_version` (bumped when a state dict's meaning changes, so stale
    weights are refused), :attr:`pretrained_kind` (named in errors) and implement
    :meth:`pretrained_record` and :meth:`from_record`.
    """

    format_version: int = 1
    pretrained_kind: str = "model"
    pretrained_hint: str = ""  # appended to the "not found" error: how to make one

    def pretrained_record(self) -> dict[str, Any]:
        """What ``config.json`` holds besides ``format_version`` (JSON types only)."""
        raise NotImplementedError

    @classmethod
    def from_record(cls, record: dict[str, Any], directory: Path) -> "Pretrained":
        """A freshly initialised model for a ``config.json`` record (``format_version`` removed)."""
        raise NotImplementedError

    def check_pretrained_state(self, state: Mapping[str, Tensor], source: str) -> None:
        """Raise ValueError unless ``state`` has exactly this model's tensor names and shapes."""
        expected = self.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(f"{source} does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors, each atomically (weights only; no optimizer state)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = {"format_version": self.format_version, **self.pretrained_record()}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
        """Load a directory written by :meth:`save_pretrained`, checked against its config."""
        from safetensors.torch import load_file

        directory = Path(directory)
        model = cls.from_record(read_record(directory, cls), directory)
        weights_path = directory / WEIGHTS_FILE
        state = load_file(str(weights_path), device=str(map_location))
        model.check_pretrained_state(state, str(weights_path))
        model.load_state_dict(state)
        return model.to(map_location)


def read_record(directory: Path, cls: type[Pretrained]) -> dict[str, Any]:
    """The ``config.json`` record of a saved model, its ``format_version`` checked and removed."""
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not a {cls.pretrained_kind}: {path} not found (a saved one has "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE}){cls.pretrained_hint}")
    record = json.loads(config_path.read_text())
    version = record.pop("format_version", None)
    if version != cls.format_version:
        raise ValueError(f"{config_path} has format_version {version}, this code reads {cls.format_version}: "
                         "re-export the weights with the current code")
    return record
