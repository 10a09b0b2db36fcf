"""What `aimass train` shows in a terminal: a progress bar for each epoch, one line of metrics when
an epoch ends, and a summary table when training is over.

`RichProgress` is a `ProgressReporter`, so the trainer drives it without knowing about terminals.
On a console that is not a terminal (a pod's log, a CI job) rich draws no live bar; the per-epoch
lines are then the log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from aimass.progress import EpochMetrics


def _format_logs(logs: Mapping[str, float]) -> str:
    """`loss 0.4123  accuracy 0.8750` from a batch's running metrics."""
    shown = [f"{name} {value:.4f}" for name, value in logs.items() if isinstance(value, float)]
    return "  ".join(shown)


def format_epoch(metrics: EpochMetrics) -> str:
    """One line per finished epoch, the same in a terminal and in a pod's log."""
    parts = [
        f"epoch {metrics.epoch}/{metrics.epochs}",
        f"loss {metrics.loss:.4f}",
        f"accuracy {metrics.accuracy:.4f}",
    ]
    if metrics.val_loss is not None:
        parts.append(f"val_loss {metrics.val_loss:.4f}")
    if metrics.val_accuracy is not None:
        parts.append(f"val_accuracy {metrics.val_accuracy:.4f}")
    if metrics.images_per_second is not None:
        parts.append(f"{metrics.images_per_second:.0f} images/s")
    return "  ".join(parts)


class RichProgress:
    """A ProgressReporter that draws one rich progress bar per epoch."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._steps = 0
        self._epochs = 0
        self._started = 0.0

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        self._steps = steps_per_epoch
        self._epochs = epochs
        self._started = time.monotonic()
        if initial_epoch:
            self.console.print(
                f"resuming from the checkpoint: {initial_epoch} of {epochs} epochs already done"
            )
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[logs]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()

    def _ensure_task(self, epoch: int) -> TaskID | None:
        """The bar of `epoch`, replacing the previous epoch's bar when a new epoch starts."""
        if self._progress is None:
            return None
        if self._task is not None and self._progress.tasks[0].fields.get("epoch") == epoch:
            return self._task
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            "train", total=self._steps or None, epoch=epoch, epochs=self._epochs, logs=""
        )
        return self._task

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        task = self._ensure_task(epoch)
        if task is None or self._progress is None:
            return
        self._progress.update(task, completed=step, logs=_format_logs(logs))

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self.console.print(format_epoch(metrics), highlight=False, soft_wrap=True)

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if not model_uri:
            return
        if not self._started:
            # NB: the trainer ends without beginning when the job had already succeeded.
            message = f"nothing to train: the job already succeeded; its model is {model_uri}"
        else:
            elapsed = time.monotonic() - self._started
            message = f"model written to {model_uri} after {elapsed:.0f} s of training"
        self.console.print(message, highlight=False, soft_wrap=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def summary_table(title: str, rows: Mapping[str, Any]) -> Table:
    """A two-column table of what a run produced; rows whose value is unknown show `-`."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows.items():
        table.add_row(name, _cell(value))
    return table


def train_summary(job_name: str, result: Any, seconds: float) -> dict[str, Any]:
    """The rows closing `aimass train`, from the trainer's result and its metrics.json content:
    what was trained, how well, how fast, and where the model is."""
    metrics: Mapping[str, Any] = result.metrics
    final = metrics.get("final", {})
    images = metrics.get("images", {})
    return {
        "job": job_name,
        "result": "already succeeded: nothing trained" if result.skipped else "succeeded",
        "epochs": metrics.get("epochs"),
        "epochs run now": result.epochs_run,
        "loss": final.get("loss"),
        "accuracy": final.get("accuracy"),
        "val loss": final.get("val_loss"),
        "val accuracy": final.get("val_accuracy"),
        "images/s": metrics.get("images_per_second"),
        "images used": images.get("used"),
        "images skipped": images.get("skipped"),
        "wall time": f"{seconds:.0f} s",
        "model": result.model_uri,
    }
