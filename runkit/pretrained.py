"""One form for every trained network: ``config.json`` + ``model.safetensors`` + a model card (``README.md``).

The tokenizer, the generators and the metric classifier save and load through :class:`Pretrained`, which
is huggingface_hub's ``ModelHubMixin``: ``save_pretrained(dir)``, ``from_pretrained(dir or repo id)`` and
``push_to_hub(repo id)``. Each model says only what its config record holds, how to build itself from
it and what its card says. Weights are read with safetensors only (no pickle), and every record's
``format_version`` is checked before a tensor is loaded.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from torch import Tensor

from .fileio import atomic_write

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"  # the model card: what ModelHubMixin writes and the Hub shows
LIBRARY_NAME = "flowmo-reference"
PAPER_URL = "https://arxiv.org/abs/2503.11056"
NOT_RECORDED = "not recorded with these weights"

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

Part of the FlowMo reference implementation (package `flowmo-reference`): the FlowMo tokenizer
(["Flow to the Mode"]({{ paper_url }})) and class-conditional generators on its tokens.

## Use

```python
{{ usage }}
```

`from_pretrained` takes this folder or a Hub repo id; with `HF_HUB_OFFLINE=1` only local folders and
the local Hub cache are read.

## Training data

{{ data }}

## Training command

{{ command }}

## Measured quality

{{ quality }}

## Files

`config.json` (architecture and format version, checked on load) and `model.safetensors` (weights).
"""


class Pretrained(ModelHubMixin, library_name=LIBRARY_NAME, paper_url=PAPER_URL, tags=["flowmo"],
                 model_card_template=CARD_TEMPLATE):
    """Mixin for an ``nn.Module``: huggingface_hub's ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

    Subclasses set :attr:`format_version` (bumped when a state dict's meaning changes, so stale
    weights are refused), :attr:`pretrained_kind` (named in errors) and implement
    :meth:`pretrained_record`, :meth:`from_record` and :meth:`card_fields`.
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

    def card_fields(self) -> dict[str, str]:
        """The model card's ``title``, ``summary`` (what the model is, in numbers) and ``usage`` (Python)."""
        raise NotImplementedError

    def training_record(self) -> Mapping[str, Any]:
        """How the weights were made (``data``, ``command``, ``quality``, ``step``): what the trainers record
        in ``config.extra["training"]`` of every export; empty when nothing was recorded."""
        return getattr(self.config, "extra", {}).get("training", {})

    def check_pretrained_state(self, state: Mapping[str, Tensor], source: str) -> None:
        """Raise ValueError unless ``state`` has exactly this model's tensor names and shapes."""
        expected = self.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(f"{source} does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")

    # ------------------------------------------------------------------ ModelHubMixin hooks
    def _save_pretrained(self, save_directory: Path) -> None:
        """config.json + model.safetensors, each written atomically (weights only; no optimizer state)."""
        from safetensors.torch import save_file

        record = {"format_version": self.format_version, **self.pretrained_record()}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(save_directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        atomic_write(save_directory / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *,
                        map_location: str | torch.device = "cpu", **hub_kwargs: Any) -> Any:
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id, checked against its config.

        A ``Path``, or a string naming an existing path or no valid repo id, is a local folder. ``hub_kwargs``
        are ModelHubMixin's (``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``).
        A repo id that can be neither found in the Hub cache nor downloaded raises FileNotFoundError
        saying why (``HF_HUB_OFFLINE`` set, or no network).
        """
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

        repo_id = hub_repo_id(pretrained_model_name_or_path)
        if repo_id is None:
            directory = Path(pretrained_model_name_or_path).expanduser()
            check_folder(directory, cls)
            return super().from_pretrained(str(directory), map_location=map_location, **hub_kwargs)
        try:
            return super().from_pretrained(repo_id, map_location=map_location, **hub_kwargs)
        except (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled) as error:
            raise FileNotFoundError(hub_failure(repo_id, cls, error, hub_kwargs.get("local_files_only", False))) \
                from error

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str | torch.device = "cpu", config: Any = None,
                         **download: Any) -> Any:
        # ``config`` is config.json as the mixin parsed it; the record is read again here so that local
        # folders and downloads go through one format_version check. ``download``: the mixin's Hub options
        # (revision, cache_dir, token, ...), which mean nothing for a local folder.
        from safetensors.torch import load_file

        if os.path.isdir(model_id):
            directory = Path(model_id)
        else:
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(model_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE], **download))
        model = cls.from_record(read_record(directory, cls), directory)
        weights_path = directory / WEIGHTS_FILE
        state = load_file(str(weights_path), device=str(map_location))
        model.check_pretrained_state(state, str(weights_path))
        model.load_state_dict(state)
        return model.to(map_location)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card ``save_pretrained`` writes as README.md: what the model is, how to load it, and the
        training data, command and measured quality recorded with the weights."""
        record = self.training_record()
        fields = {**self.card_fields(), "data": card_data_text(record.get("data")),
                  "command": card_command_text(record.get("command")),
                  "quality": card_quality_text(record.get("quality"), record.get("step")), **kwargs}
        return super().generate_model_card(*args, **fields)


def hub_repo_id(source: str | os.PathLike) -> str | None:
    """The Hub repo id ``source`` names, or None when it names a local path (existing or not): a ``Path``,
    an existing file or folder, or a string that is no valid repo id (absolute, ``./x``, ``a/b/c``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(source, str) or Path(source).expanduser().exists():
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


def check_folder(directory: Path, cls: type[Pretrained]) -> None:
    """Raise FileNotFoundError unless ``directory`` holds config.json and model.safetensors."""
    for path in (directory / CONFIG_FILE, directory / WEIGHTS_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not a {cls.pretrained_kind}: {path} not found (a saved one has "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE}){cls.pretrained_hint}")


def hub_failure(repo_id: str, cls: type[Pretrained], error: Exception, local_files_only: bool) -> str:
    """Why a repo id could not be loaded, and what to do instead."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    start = f"{repo_id!r} is no local folder, and as a Hugging Face Hub repo id"
    local = f"pass the path of a saved {cls.pretrained_kind} (a folder with {CONFIG_FILE} and {WEIGHTS_FILE})"
    if constants.HF_HUB_OFFLINE or isinstance(error, OfflineModeIsEnabled):
        return (f"{start} it is not in the local Hub cache, and HF_HUB_OFFLINE=1 forbids downloading it: "
                f"{local}, or unset HF_HUB_OFFLINE on a machine with network access")
    if local_files_only and isinstance(error, LocalEntryNotFoundError):
        return f"{start} it is not in the local Hub cache (local_files_only=True): {local}"
    if isinstance(error, LocalEntryNotFoundError):
        return (f"{start} it could not be downloaded: the Hub is unreachable (no network?) and it is not in "
                f"the local Hub cache. {local[0].upper()}{local[1:]}; set HF_HUB_OFFLINE=1 to read only the "
                "cache without trying the network")
    return f"{start} it could not be loaded from the Hub ({type(error).__name__}: {error}): {local}"


def read_record(directory: Path, cls: type[Pretrained]) -> dict[str, Any]:
    """The ``config.json`` record of a saved model, its ``format_version`` checked and removed."""
    check_folder(directory, cls)
    config_path = directory / CONFIG_FILE
    record = json.loads(config_path.read_text())
    version = record.pop("format_version", None)
    if version != cls.format_version:
        raise ValueError(f"{config_path} has format_version {version}, this code reads {cls.format_version}: "
                         "re-export the weights with the current code")
    return record


def card_data_text(data: Any) -> str:
    if not data:
        return NOT_RECORDED + "."
    if isinstance(data, Mapping):
        return "\n".join(f"- `{key}`: {json.dumps(value)}" for key, value in data.items())
    return str(data)


def card_command_text(command: Any) -> str:
    if not command:
        return NOT_RECORDED + " (a run folder's `config.yaml` holds every setting of its run)."
    text = command if isinstance(command, str) else shlex.join(command)
    return f"```bash\n{text}\n```"


def card_quality_text(quality: Any, step: Any) -> str:
    if not quality:
        return NOT_RECORDED + "."
    where = f" at training step {step}" if step is not None else ""
    lines = [f"- {name}: {value:.4g}" if isinstance(value, float) else f"- {name}: {value}"
             for name, value in quality.items()]
    return f"Recorded with these weights{where}:\n\n" + "\n".join(lines)
