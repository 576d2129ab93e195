"""What a gFID run produced: ``GfidReport`` (``report.json``), its metric labels and summary lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evaluation.feature_spaces import INCEPTION_LABEL, metric_label

from ..memorization import format_memorization

UNCALIBRATED = "UNCALIBRATED (random Inception weights)"
METRIC_LABELS = {"fid": "gFID", "isc_mean": "IS", "precision": "precision", "recall": "recall", "kid_mean": "KID"}


@dataclass
class GfidReport:
    """Everything a gFID run produced; ``to_dict()`` is what ``report.json`` holds."""

    metrics: dict[str, float]
    calibrated: bool
    num_samples: int
    num_classes: int
    image_size: tuple[int, int]
    reference: str
    settings: dict[str, Any]
    generated_this_run: int
    generation_seconds: float
    metrics_seconds: float
    wall_seconds: float
    out_dir: str
    files: dict[str, str] = field(default_factory=dict)
    feature_space: str = INCEPTION_LABEL  # the network behind FID / IS / PRC / KID
    memorization: dict[str, float] = field(default_factory=dict)  # generator.memorization.memorization_report

    @property
    def images_per_second(self) -> float:
        """Generation throughput of this run (resumed shards excluded); 0 when nothing was generated."""
        return self.generated_this_run / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["images_per_second"] = self.images_per_second
        record["uncalibrated_note"] = None if self.calibrated else UNCALIBRATED
        return record

    def metric_lines(self) -> list[str]:
        """The fidelity metrics, each named for its feature space and marked UNCALIBRATED when it is."""
        from evaluation.metrics import format_metric

        return [format_metric(metric_label(label, self.feature_space), self.metrics[key], self.calibrated)
                for key, label in METRIC_LABELS.items() if key in self.metrics]

    def summary(self) -> str:
        """The metrics on one line, then memorization beside real data, then count, time and img/s."""
        height, width = self.image_size
        lines = [" | ".join(self.metric_lines()), *format_memorization(self.memorization),
                 f"{self.num_samples} samples {height}x{width} vs {self.reference}; "
                 f"{self.wall_seconds:.1f} s ({self.images_per_second:.2f} img/s generation)"]
        return "\n".join(line for line in lines if line)
