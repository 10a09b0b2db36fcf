"""What a finished job leaves under `spec.output.uri`:

- `model.keras`: the trained classifier (the final weights), loadable with `safe_mode` on;
- `saved_model/`: a SavedModel for serving (TF Serving, `tf.saved_model.load`), with a `serve`
  signature from images to class probabilities;
- `labels.json`: the class names, in the order of the model's outputs;
- `training_curves.png`: loss and accuracy per epoch;
- `metrics.json`: per-epoch history, final figures, images per second, the counts of images used
  and skipped, and timings.

NB: `metrics.json` is written last and carries `"succeeded": true`. Its presence is the job's
success marker: a job whose output holds it is not trained again.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from aimass import storage

METRICS = "metrics.json"
MODEL = "model.keras"
LABELS = "labels.json"
CURVES = "training_curves.png"
SAVED_MODEL = "saved_model"


def read_success(client: Any, output_uri: str) -> dict[str, Any] | None:
    """The metrics of a job that already succeeded at `output_uri`, or None."""
    raw = storage.read_bytes(client, storage.join_uri(output_uri, METRICS))
    if raw is None:
        return None
    try:
        metrics = json.loads(raw)
    except ValueError:
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("succeeded") is True else None


def summarize(
    history: Sequence[Mapping[str, float]],
    *,
    counts: Mapping[str, int],
    class_names: Sequence[str],
    timings: Mapping[str, float],
    images_seen: int,
    train_seconds: float,
    stopped_early: bool,
) -> dict[str, Any]:
    """The content of metrics.json (without the success flag)."""
    last = dict(history[-1]) if history else {}
    final = {
        key: last[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in last
    }
    return {
        "epochs": len(history),
        "stopped_early": stopped_early,
        "final": final,
        "history": [dict(entry) for entry in history],
        "images_per_second": images_seen / train_seconds if train_seconds > 0 else None,
        "images": dict(counts),
        "classes": list(class_names),
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [entry["epoch"] for entry in history]
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.plot(epochs, [entry[metric] for entry in history], marker="o", label="train")
        validation = [entry.get(f"val_{metric}") for entry in history]
        if any(value is not None for value in validation):
            axis.plot(epochs, validation, marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def export_serving(model: keras.Model, path: Path) -> None:
    """A SavedModel with a `serve` endpoint, from images to class probabilities."""
    model.export(str(path), format="tf_saved_model", verbose=False)


def write_outputs(
    client: Any,
    output_uri: str,
    model: keras.Model,
    *,
    class_names: Sequence[str],
    metrics: Mapping[str, Any],
    scratch: Path | None = None,
) -> str:
    """Write everything to `output_uri` (metrics.json last); returns the URI of model.keras."""
    with tempfile.TemporaryDirectory(prefix="aimass-outputs-", dir=scratch) as folder:
        local = Path(folder)
        model.save(local / MODEL)
        export_serving(model, local / SAVED_MODEL)
        (local / LABELS).write_text(json.dumps(list(class_names), indent=2))
        plot_curves(metrics.get("history", []), local / CURVES)

        model_uri = storage.join_uri(output_uri, MODEL)
        storage.upload_file(client, local / MODEL, model_uri)
        storage.upload_dir(client, local / SAVED_MODEL, storage.join_uri(output_uri, SAVED_MODEL))
        storage.upload_file(client, local / LABELS, storage.join_uri(output_uri, LABELS))
        storage.upload_file(client, local / CURVES, storage.join_uri(output_uri, CURVES))

    document = {"succeeded": True, **metrics}
    storage.upload_bytes(
        client, json.dumps(document, indent=2).encode(), storage.join_uri(output_uri, METRICS)
    )
    return model_uri
