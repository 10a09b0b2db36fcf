"""Shared makings of the trainer's tests: tiny jobs on a real S3 server, synthetic batches, and a
reporter that records what it is told."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from support.images import make_image_folder, upload_folder

from aimass import storage
from aimass.progress import EpochMetrics
from aimass.spec import TrainingJob, parse_job

CLASSES = ("circle", "cross", "square")


def upload_shapes(client: Any, bucket: str, root: Path, *, per_class: int = 8) -> str:
    """A three-class image folder of 16 px images in `bucket`; returns its URI."""
    make_image_folder(root, CLASSES, per_class=per_class, size=16)
    uri = f"s3://{bucket}/shapes"
    upload_folder(client, root, uri)
    return uri


def tiny_job(train_uri: str, output_uri: str, **spec: Any) -> TrainingJob:
    """A job small enough to train in seconds on two cores; `spec` overrides sections."""
    document = {
        "dataset": {"train": train_uri, "imageSize": [16, 16], "validationSplit": 0.25},
        "model": {"architecture": "resnet-small", "blocks": [1, 1], "filters": [8, 16]},
        "training": {"epochs": 2, "batchSize": 6, "seed": 3},
        "output": {"uri": output_uri},
    }
    for section, values in spec.items():
        merged = copy.deepcopy(document.get(section, {}))
        if isinstance(values, Mapping):
            merged.update(values)
        else:
            merged = values
        document[section] = merged
    return parse_job(
        {
            "apiVersion": "aimass.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "tiny"},
            "spec": document,
        }
    )


def batches(count: int = 24, *, size: int = 16, classes: int = 3, seed: int = 0) -> Any:
    """(images, labels) batches of 8 whose class shows in the mean colour: quick to learn."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=count).astype(np.int32)
    images = rng.uniform(0.0, 0.3, size=(count, size, size, 3)).astype(np.float32)
    images[np.arange(count), :, :, labels % 3] += 0.7
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def object_keys(client: Any, uri: str) -> list[str]:
    return sorted(info.key for info in storage.list_objects(client, uri))


class Recorder:
    """A ProgressReporter that keeps every call; `stop_after` raises KeyboardInterrupt (or calls
    `interrupt`) when that epoch ends, as Ctrl-C would."""

    def __init__(self, stop_after: int | None = None, interrupt: Any = None) -> None:
        self.stop_after = stop_after
        self.interrupt = interrupt
        self.begins: list[dict[str, int]] = []
        self.epochs: list[EpochMetrics] = []
        self.ends: list[dict[str, Any]] = []
        self.batches = 0

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        self.begins.append(
            {"epochs": epochs, "initial_epoch": initial_epoch, "steps": steps_per_epoch}
        )

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        self.batches += 1

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        self.epochs.append(metrics)
        if metrics.epoch == self.stop_after:
            if self.interrupt is not None:
                self.interrupt()
            else:
                raise KeyboardInterrupt("stopped by the test")

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        self.ends.append({"model_uri": model_uri, "final": dict(final)})
