"""Checkpoints: a job stopped after an epoch resumes without repeating it, a half-written
checkpoint is never read, and a job that succeeded is not trained again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from trainer_jobs import Recorder, tiny_job, upload_shapes

from aimass import storage
from aimass.spec import Architecture
from aimass_trainer.checkpoints import CheckpointStore
from aimass_trainer.loop import LoopState, make_optimizer
from aimass_trainer.models import build_model
from aimass_trainer.run import InterruptGuard, run_training


@pytest.fixture
def dataset(client: Any, bucket: str, tmp_path: Path) -> str:
    return upload_shapes(client, bucket, tmp_path / "images")


def manifest(client: Any, output: str) -> dict[str, Any]:
    raw = storage.read_bytes(client, f"{output}/checkpoints/manifest.json")
    assert raw is not None
    return json.loads(raw)


def tiny_model_and_optimizer() -> tuple[keras.Model, Any]:
    model = build_model(Architecture.RESNET_SMALL, (16, 16, 3), 3, blocks=[1], filters=[8])
    optimizer = make_optimizer("adam", 0.01, mixed_precision=False)
    optimizer.build(model.trainable_variables)
    return model, optimizer


@pytest.mark.slow
def test_a_job_stopped_by_sigterm_after_epoch_one_resumes_at_epoch_two_and_repeats_none(
    client: Any, bucket: str, dataset: str, tmp_path: Path
) -> None:
    output = f"s3://{bucket}/out"
    job = tiny_job(dataset, output, training={"epochs": 2})
    handler = signal.getsignal(signal.SIGTERM)
    first = Recorder(stop_after=1, interrupt=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt):
        run_training(job, client=client, cache_dir=tmp_path / "cache", reporter=first)
    assert manifest(client, output)["state"]["completed_epochs"] == 1
    assert storage.read_bytes(client, f"{output}/metrics.json") is None
    assert signal.getsignal(signal.SIGTERM) is handler

    second = Recorder()
    result = run_training(job, client=client, cache_dir=tmp_path / "cache", reporter=second)

    assert second.begins == [{"epochs": 2, "initial_epoch": 1, "steps": 3}]
    assert [metrics.epoch for metrics in second.epochs] == [2]
    assert result.epochs_run == 1
    assert [entry["epoch"] for entry in result.metrics["history"]] == [1, 2]
    assert result.metrics["history"][0]["loss"] == pytest.approx(first.epochs[0].loss)


@pytest.mark.slow
def test_a_job_that_succeeded_is_not_trained_again(
    client: Any, bucket: str, dataset: str, tmp_path: Path
) -> None:
    job = tiny_job(dataset, f"s3://{bucket}/out", training={"epochs": 1})
    done = run_training(job, client=client, cache_dir=tmp_path / "cache", reporter=Recorder())

    again = Recorder()
    result = run_training(job, client=client, cache_dir=tmp_path / "other", reporter=again)

    assert result.skipped and result.epochs_run == 0
    assert again.begins == [] and again.epochs == []
    assert again.ends == [{"model_uri": done.model_uri, "final": done.metrics["final"]}]


def test_a_checkpoint_restores_the_weights_and_the_optimizer_state(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    store = CheckpointStore(client, f"s3://{bucket}/out")
    model, optimizer = tiny_model_and_optimizer()
    optimizer.iterations.assign(7)
    optimizer.variables[-1].assign(np.full(optimizer.variables[-1].shape, 0.5))
    store.save(LoopState(completed_epochs=1, history=[{"epoch": 1}]), model, optimizer, best=True)

    fresh_model, fresh_optimizer = tiny_model_and_optimizer()
    checkpoint = store.latest()
    assert checkpoint is not None
    store.restore(checkpoint, fresh_model, fresh_optimizer, scratch=tmp_path)

    for saved, restored in zip(model.weights, fresh_model.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    assert int(fresh_optimizer.iterations.numpy()) == 7
    np.testing.assert_array_equal(fresh_optimizer.variables[-1].numpy(), 0.5)
    assert checkpoint.state.completed_epochs == 1


def test_a_checkpoint_whose_manifest_was_not_written_is_never_read(
    client: Any, bucket: str
) -> None:
    output = f"s3://{bucket}/out"
    store = CheckpointStore(client, output)
    model, optimizer = tiny_model_and_optimizer()
    store.save(LoopState(completed_epochs=1), model, optimizer, best=False)
    # An upload cut short before its manifest: the next epoch's folder holds a broken file.
    storage.upload_bytes(client, b"half", f"{output}/checkpoints/epoch-0002/model.weights.h5")

    checkpoint = store.latest()

    assert checkpoint is not None and checkpoint.folder == "epoch-0001"


def test_a_new_checkpoint_replaces_the_previous_epochs_files(client: Any, bucket: str) -> None:
    output = f"s3://{bucket}/out"
    store = CheckpointStore(client, output)
    model, optimizer = tiny_model_and_optimizer()

    store.save(LoopState(completed_epochs=1), model, optimizer, best=True)
    store.save(LoopState(completed_epochs=2), model, optimizer, best=False)

    keys = sorted(info.key for info in storage.list_objects(client, f"{output}/checkpoints"))
    assert keys == [
        "out/checkpoints/best.weights.h5",
        "out/checkpoints/epoch-0002/model.weights.h5",
        "out/checkpoints/epoch-0002/optimizer.npz",
        "out/checkpoints/manifest.json",
    ]


def test_workers_other_than_the_chief_write_no_checkpoint(client: Any, bucket: str) -> None:
    output = f"s3://{bucket}/out"
    model, optimizer = tiny_model_and_optimizer()

    CheckpointStore(client, output, is_chief=False).save(
        LoopState(completed_epochs=1), model, optimizer, best=True
    )

    assert storage.list_objects(client, output) == []


def test_a_signal_during_a_checkpoint_write_waits_until_the_write_is_complete() -> None:
    guard = InterruptGuard()
    written = []

    with guard.installed(), pytest.raises(KeyboardInterrupt, match="after the checkpoint"):
        with guard.held():
            os.kill(os.getpid(), signal.SIGTERM)
            written.append("checkpoint")

    assert written == ["checkpoint"]
