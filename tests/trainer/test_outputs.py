"""Outputs: model.keras, a SavedModel that serves the same predictions, labels, metrics and the
plot, with metrics.json as the success marker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_jobs import object_keys

from aimass import storage
from aimass.spec import Architecture
from aimass_trainer import outputs
from aimass_trainer.models import build_model

HISTORY = [
    {"epoch": 1, "loss": 1.2, "accuracy": 0.4, "val_loss": 1.3, "val_accuracy": 0.35},
    {"epoch": 2, "loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.6},
]


def metrics() -> dict[str, Any]:
    return outputs.summarize(
        HISTORY,
        counts={"train": 30, "validation": 10, "used": 40, "skipped": 2},
        class_names=["cat", "dog"],
        timings={"train_seconds": 2.0},
        images_seen=60,
        train_seconds=2.0,
        stopped_early=False,
    )


def test_the_summary_holds_final_figures_throughput_and_counts() -> None:
    summary = metrics()

    assert summary["final"] == {"loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.6}
    assert summary["images_per_second"] == pytest.approx(30.0)
    assert summary["images"]["skipped"] == 2 and summary["epochs"] == 2
    assert summary["history"] == HISTORY


@pytest.mark.slow
def test_the_outputs_serve_the_same_predictions_as_the_trained_model(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    model = build_model(Architecture.RESNET_SMALL, (16, 16, 3), 2, blocks=[1], filters=[8])
    output = f"s3://{bucket}/job"
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
    expected = model(images, training=False).numpy()

    model_uri = outputs.write_outputs(
        client, output, model, class_names=["cat", "dog"], metrics=metrics(), scratch=tmp_path
    )

    keys = object_keys(client, output)
    for name in ("model.keras", "labels.json", "metrics.json", "training_curves.png"):
        assert f"job/{name}" in keys
    assert model_uri == f"{output}/model.keras"
    assert json.loads(storage.read_bytes(client, f"{output}/labels.json")) == ["cat", "dog"]
    png = storage.read_bytes(client, f"{output}/training_curves.png")
    assert png is not None and png.startswith(b"\x89PNG")

    storage.download_file(client, model_uri, tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(images, training=False), expected, rtol=1e-5)

    served_dir = tmp_path / "served"
    for key in keys:
        if key.startswith("job/saved_model/"):
            target = served_dir / key.removeprefix("job/saved_model/")
            storage.download_file(client, f"s3://{bucket}/{key}", target)
    served = tf.saved_model.load(str(served_dir))
    np.testing.assert_allclose(served.serve(tf.constant(images)), expected, rtol=1e-5)


def test_metrics_json_written_last_marks_the_job_as_succeeded(client: Any, bucket: str) -> None:
    output = f"s3://{bucket}/job"
    assert outputs.read_success(client, output) is None

    storage.upload_bytes(client, json.dumps({"final": {}}).encode(), f"{output}/metrics.json")
    assert outputs.read_success(client, output) is None

    storage.upload_bytes(client, json.dumps({"succeeded": True}).encode(), f"{output}/metrics.json")
    assert outputs.read_success(client, output) == {"succeeded": True}


def test_the_plot_draws_training_curves_without_validation(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "loss": 1.0, "accuracy": 0.5},
        {"epoch": 2, "loss": 0.5, "accuracy": 0.8},
    ]

    outputs.plot_curves(history, tmp_path / "curves.png")

    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
