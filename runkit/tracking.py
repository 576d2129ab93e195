"""Where a training run's scalars and images go: ``log.with: tensorboard | wandb | mlflow | aim | none``.

Every tracker is driven through accelerate's tracker API (``Accelerator(log_with=...)``,
``init_trackers``, ``log``, ``end_training``); :class:`RunLogger` gives the trainers one
``add_scalar`` / ``add_image`` for all of them, and remembers the last value of each scalar for the
exported model card. With ``log.offline: true`` (the default) nothing leaves the run folder: TensorBoard
writes ``<run>/tb``, W&B runs in offline mode under ``<run>/wandb`` (``wandb sync`` uploads it later),
MLflow writes a file store in ``<run>/mlruns`` and Aim its repository in ``<run>/.aim``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Mapping

TRACKERS = ("tensorboard", "wandb", "mlflow", "aim", "none")
TENSORBOARD_DIR = "tb"  # <run>/tb, where the runs before log.with wrote their TensorBoard logs too
MLFLOW_DIR = "mlruns"
# The module each tracker imports, and what to install for it (mlflow-skinny is enough for a file store).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny"), "aim": ("aim", "aim")}
CARD_SCALARS = ("train/loss", "train/accuracy")  # with every val/* scalar: the quality a model card records


def tracker_name(log_cfg: Mapping[str, Any]) -> str | None:
    """The tracker ``log.with`` names (None for ``none``), refused before any work when unknown or when its
    package is not installed."""
    name = str(log_cfg.get("with") or "none").strip().lower()
    if name not in TRACKERS:
        raise ValueError(f"log.with={name!r} is not a tracker: choose one of {', '.join(TRACKERS)}")
    if name == "none":
        return None
    module, package = PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"log.with={name} needs the {module} package: pip install {package} "
                                  "(or log.with=tensorboard / none)")
    return name


def tracker_setup(name: str, run_dir: Path, project: str, offline: bool) -> tuple[str, dict[str, Any]]:
    """(project_name, init_kwargs) for ``Accelerator.init_trackers``: accelerate passes ``project_name`` to
    each tracker in its own role (TensorBoard's sub-folder, W&B's project, MLflow's experiment, Aim's run
    name), so it is chosen per tracker here."""
    run_name = run_dir.name
    if name == "tensorboard":
        return TENSORBOARD_DIR, {}
    if name == "wandb":
        options: dict[str, Any] = {"name": run_name, "dir": str(run_dir)}
        if offline:
            options["mode"] = "offline"
        return project, {"wandb": options}
    if name == "mlflow":
        if offline:
            import mlflow

            # MLflow 3 refuses a file store unless opted in; a file store in the run folder is what needs
            # neither a server nor a database package.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / MLFLOW_DIR).absolute().as_uri())
        return project, {"mlflow": {"run_name": run_name}}
    return run_name, {"aim": {"experiment": project}}


def flat_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested run config as the flat ``{"train.lr": 1e-4, ...}`` every tracker stores as hyperparameters
    (lists and other values as JSON text)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def as_uint8_hwc(image: Any, dataformats: str = "CHW") -> Any:
    """A PIL image, or a CHW / HWC array or tensor (uint8, or float in [0, 1]), as an H×W×3 uint8 array."""
    import numpy as np

    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if dataformats == "CHW":
        array = array.transpose(1, 2, 0)
    elif dataformats != "HWC":
        raise ValueError(f"dataformats must be CHW or HWC, got {dataformats!r}")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return array


class RunLogger:
    """The main process's view of the run's tracker: scalars and images, and the last value of each scalar."""

    def __init__(self, accelerator: Any, name: str | None):
        self.accelerator, self.name = accelerator, name
        self.latest: dict[str, float] = {}  # tag -> last logged value

    @classmethod
    def start(cls, accelerator: Any, name: str | None, run_dir: Path, log_cfg: Mapping[str, Any], trainer: str,
              config: Mapping[str, Any]) -> "RunLogger":
        """Start the run in tracker ``name`` (None: log nowhere) with the run's config as its hyperparameters."""
        if name is not None:
            project = log_cfg.get("project") or f"flowmo-{trainer}"
            project_name, init_kwargs = tracker_setup(name, run_dir, project, bool(log_cfg.get("offline", True)))
            accelerator.init_trackers(project_name, config=flat_config(config), init_kwargs=init_kwargs)
        return cls(accelerator, name)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.latest[tag] = float(value)
        if self.name is not None:
            self.accelerator.log({tag: float(value)}, step=step)

    def add_image(self, tag: str, image: Any, step: int, dataformats: str = "CHW") -> None:
        """One image (PIL, or a CHW / HWC array or tensor) under ``tag`` at ``step``."""
        if self.name is None:
            return
        pixels = as_uint8_hwc(image, dataformats)
        tracker = self.accelerator.get_tracker(self.name)
        if self.name == "tensorboard":
            tracker.log_images({tag: pixels[None]}, step=step, dataformats="NHWC")
        elif self.name == "wandb":
            tracker.log_images({tag: [pixels]}, step=step)
        elif self.name == "aim":
            tracker.log_images({tag: pixels}, step=step)
        else:  # accelerate's MLflow tracker has no log_images: mlflow's own call, in the run it started
            import mlflow

            mlflow.log_image(pixels, key=tag, step=step)

    def card_quality(self) -> dict[str, float]:
        """The last validation scalars and training loss / accuracy: what an exported model card records."""
        return {tag: value for tag, value in self.latest.items() if tag.startswith("val/") or tag in CARD_SCALARS}

    def close(self) -> None:
        if self.name is not None:
            self.accelerator.end_training()
