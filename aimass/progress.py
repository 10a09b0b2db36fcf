"""How training reports progress, whoever listens: a terminal progress bar, or a worker that
writes `status.progress` of its TrainingJob through the Kubernetes API.

The trainer calls a ProgressReporter; it knows nothing about terminals or clusters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EpochMetrics:
    """What is known at the end of an epoch. Epochs count from 1."""

    epoch: int
    epochs: int
    loss: float
    accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    images_per_second: float | None = None
    eta_seconds: float | None = None

    def to_status(self) -> dict[str, Any]:
        """The camelCase mapping stored in a TrainingJob's `status.progress`."""
        names = {
            "val_loss": "valLoss",
            "val_accuracy": "valAccuracy",
            "images_per_second": "imagesPerSecond",
            "eta_seconds": "etaSeconds",
        }
        return {
            names.get(key, key): (round(value, 6) if isinstance(value, float) else value)
            for key, value in asdict(self).items()
            if value is not None
        }


class ProgressReporter(Protocol):
    """Receives training progress. Every method must return quickly and never raise."""

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        """Training starts (or resumes: `initial_epoch` epochs are already done)."""

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        """One batch of `epoch` (from 1) is done; `step` counts from 1 within the epoch."""

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        """An epoch is done and checkpointed."""

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        """Training finished; `model_uri` is where model.keras was written (chief only)."""


class FanOut:
    """Sends each call to several reporters."""

    def __init__(self, reporters: Sequence[ProgressReporter]) -> None:
        self.reporters = list(reporters)

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        for reporter in self.reporters:
            reporter.on_train_begin(
                epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch
            )

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        for reporter in self.reporters:
            reporter.on_batch_end(epoch=epoch, step=step, logs=logs)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        for reporter in self.reporters:
            reporter.on_epoch_end(metrics)

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        for reporter in self.reporters:
            reporter.on_train_end(model_uri=model_uri, final=final)


class Silent:
    """A reporter that ignores everything."""

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        pass

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        pass

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        pass
