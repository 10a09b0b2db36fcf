"""Checkpoints in S3, written after every epoch, so that a restarted job resumes where it was.

Layout under `<output>/checkpoints/`:
- `epoch-NNNN/model.weights.h5` and `epoch-NNNN/optimizer.npz`: the weights and the optimizer's
  variables (its step counter and moments; the loss scale under mixed precision);
- `best.weights.h5`: the weights of the best epoch so far (by early stopping's metric, else the
  latest);
- `manifest.json`: the loop's state (epochs done, phase, history, early-stopping counters) and
  the folder it belongs to.

NB: the manifest is uploaded last, and an epoch's folder is removed only once a newer manifest
names another one. A checkpoint cut short by a crash is therefore never read: the manifest still
names the previous, complete one. Ctrl-C or SIGTERM during an epoch loses only that epoch: the
job resumes from the last complete epoch, and repeats none that finished.

In multi-worker training only the chief uploads; every worker reads the same manifest at start,
before the first collective step, so all of them restore the same state.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aimass import storage
from aimass_trainer.loop import LoopState

MANIFEST = "manifest.json"
WEIGHTS = "model.weights.h5"
OPTIMIZER = "optimizer.npz"
BEST = "best.weights.h5"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint exists but does not fit the job's model or optimizer."""


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint, as its manifest describes it."""

    folder: str
    state: LoopState


def checkpoint_uri(output_uri: str) -> str:
    return storage.join_uri(output_uri, "checkpoints")


def save_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    arrays = {f"v{index:05d}": np.asarray(v.numpy()) for index, v in enumerate(optimizer.variables)}
    np.savez(path, **arrays)


def restore_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    """Assign saved values to a built optimizer; its variables must match in number and shape."""
    with np.load(path) as saved:
        values = [saved[name] for name in sorted(saved.files)]
    variables = optimizer.variables
    if len(values) != len(variables):
        raise CheckpointError(
            f"the checkpoint's optimizer has {len(values)} variables but this job's has "
            f"{len(variables)}; was the model or optimizer changed since it was written?"
        )
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise CheckpointError(
                f"optimizer variable {variable.path} has shape {tuple(variable.shape)} but the "
                f"checkpoint holds {value.shape}"
            )
        variable.assign(value)


class CheckpointStore:
    """Reads and writes the checkpoints of one job's output prefix."""

    def __init__(self, client: Any, output_uri: str, *, is_chief: bool = True) -> None:
        self.client = client
        self.uri = checkpoint_uri(output_uri)
        self.is_chief = is_chief

    def latest(self) -> Checkpoint | None:
        """The checkpoint the manifest names, or None before the first epoch finished."""
        raw = storage.read_bytes(self.client, storage.join_uri(self.uri, MANIFEST))
        if raw is None:
            return None
        try:
            manifest = json.loads(raw)
            return Checkpoint(manifest["folder"], LoopState.from_json(manifest["state"]))
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{self.uri}/{MANIFEST} is not a checkpoint manifest ({error}); delete it to "
                "start the job afresh"
            ) from error

    def restore(
        self,
        checkpoint: Checkpoint,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        *,
        scratch: Path,
    ) -> None:
        """Load the checkpoint's weights into `model` and its state into a built `optimizer`."""
        folder = storage.join_uri(self.uri, checkpoint.folder)
        local = Path(scratch) / "restore" / checkpoint.folder
        weights = storage.download_file(self.client, f"{folder}/{WEIGHTS}", local / WEIGHTS)
        moments = storage.download_file(self.client, f"{folder}/{OPTIMIZER}", local / OPTIMIZER)
        try:
            model.load_weights(weights)
        except ValueError as error:
            raise CheckpointError(
                f"{folder}/{WEIGHTS} does not fit this job's model ({error}); was "
                "model.architecture, blocks or filters changed since it was written?"
            ) from error
        restore_optimizer(optimizer, moments)

    def save(
        self,
        state: LoopState,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        *,
        best: bool,
    ) -> None:
        """Upload this epoch's checkpoint (chief only), then point the manifest at it."""
        if not self.is_chief:
            return
        previous = self.latest()
        folder = f"epoch-{state.completed_epochs:04d}"
        target = storage.join_uri(self.uri, folder)
        local = Path(tempfile.mkdtemp(prefix="aimass-checkpoint-"))
        try:
            model.save_weights(local / WEIGHTS)
            save_optimizer(optimizer, local / OPTIMIZER)
            storage.upload_file(self.client, local / WEIGHTS, f"{target}/{WEIGHTS}")
            storage.upload_file(self.client, local / OPTIMIZER, f"{target}/{OPTIMIZER}")
            if best:
                storage.upload_file(
                    self.client, local / WEIGHTS, storage.join_uri(self.uri, BEST)
                )
        finally:
            shutil.rmtree(local, ignore_errors=True)

        manifest = {"format": FORMAT, "folder": folder, "state": state.to_json()}
        storage.upload_bytes(
            self.client,
            json.dumps(manifest, indent=2).encode(),
            storage.join_uri(self.uri, MANIFEST),
        )
        if previous is not None and previous.folder != folder:
            storage.delete_prefix(self.client, storage.join_uri(self.uri, previous.folder))
