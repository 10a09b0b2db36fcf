"""One TrainingJob from start to finish: `run_training(job, client=, cache_dir=, reporter=)`.

The steps: skip the job if its output already shows success; choose the distribution strategy
(first, as MultiWorkerMirroredStrategy requires); read the data; build the model, from scratch
or pretrained; restore the last checkpoint; train the epochs still to do, checkpointing each;
write the outputs (the chief only).

Errors are left typed for the CLI to map to exit codes: `DatasetError` (the data),
`StorageError` (S3), `ModelError` / `CheckpointError` (the model does not fit), and
`KeyboardInterrupt` for Ctrl-C or SIGTERM. The interrupt stops training at once, except while a
checkpoint is being written, which it lets finish; the job then resumes from the last complete
epoch (see `InterruptGuard`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import keras
import tensorflow as tf

from aimass.progress import ProgressReporter
from aimass.spec import TrainingJob, TrainingJobSpec
from aimass_trainer import adversarial, augment, data, finetune, outputs
from aimass_trainer.checkpoints import CheckpointStore
from aimass_trainer.distribute import (
    Cluster,
    choose_jit_compile,
    cluster_from_env,
    select_strategy,
    use_mixed_precision,
)
from aimass_trainer.loop import LoopSettings, LoopState, Perturb, TrainingLoop
from aimass_trainer.models import dtype_policy


@dataclass(frozen=True)
class TrainingResult:
    """What a run did. `skipped`: the output already showed success, nothing was trained."""

    skipped: bool
    model_uri: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs_run: int = 0
    is_chief: bool = True
    # The trained model, in this process (None when skipped).
    model: keras.Model | None = field(default=None, repr=False, compare=False)


class InterruptGuard:
    """Turns SIGTERM (how Kubernetes stops a pod) and SIGINT (Ctrl-C) into KeyboardInterrupt,
    except while a checkpoint is being written: then the interrupt waits until the checkpoint
    is complete, so that an epoch that finished is never lost to a signal.

    Use `with guard.installed():` around training and `with guard.held():` around a write.
    Outside the main thread signals cannot be caught, and nothing is installed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"interrupted by signal {signum}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        pending, self._pending = self._pending, None
        if pending is not None:
            raise KeyboardInterrupt(f"interrupted by signal {pending}, after the checkpoint")


def steps_per_epoch(train_count: int, batch_size: int, workers: int) -> int:
    """Global steps per epoch, as the data pipeline shards and batches: each worker gets an
    equal share and a batch smaller than `batch_size` only when there are too few images."""
    usable = train_count - train_count % workers
    return max(1, usable // batch_size)


def loop_settings(
    spec: TrainingJobSpec,
    train_count: int,
    cluster: Cluster,
    strategy: tf.distribute.Strategy,
    *,
    mixed: bool,
) -> LoopSettings:
    """The loop's settings from the spec, the data and where training runs."""
    training = spec.training
    return LoopSettings(
        epochs=training.epochs,
        steps_per_epoch=steps_per_epoch(train_count, training.batch_size, cluster.workers),
        learning_rate=training.learning_rate,
        optimizer=training.optimizer,
        mixed_precision=mixed,
        jit_compile=choose_jit_compile(
            spec.model.architecture, cluster, strategy.num_replicas_in_sync
        ),
        early_stopping=training.early_stopping,
    )


def make_perturb(spec: TrainingJobSpec, value_range: tuple[float, float]) -> Perturb | None:
    """The FGSM mixing from `augmentation.adversarial`, bound to a loss; None when off."""
    step = adversarial.adversarial_step_fn(spec.augmentation.adversarial, value_range)
    if step is None:
        return None
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    return lambda model, images, labels: step(model, loss_fn, images, labels)


def _already_done(
    client: Any, spec: TrainingJobSpec, reporter: ProgressReporter
) -> TrainingResult | None:
    metrics = outputs.read_success(client, spec.output.uri)
    if metrics is None:
        return None
    model_uri = f"{spec.output.uri.rstrip('/')}/{outputs.MODEL}"
    reporter.on_train_end(model_uri=model_uri, final=metrics.get("final", {}))
    return TrainingResult(skipped=True, model_uri=model_uri, metrics=metrics)


def run_training(
    job: TrainingJob,
    *,
    client: Any,
    cache_dir: str | Path,
    reporter: ProgressReporter,
    cluster: Cluster | None = None,
) -> TrainingResult:
    """Train `job` to completion (or resume it); see the module docstring for the steps."""
    spec = job.spec
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = _already_done(client, spec, reporter)
    if done is not None:
        return done

    cluster = cluster or cluster_from_env()
    strategy = select_strategy(cluster)
    mixed = use_mixed_precision(spec.training.mixed_precision)
    if spec.training.seed is not None:
        keras.utils.set_random_seed(spec.training.seed)
    timings: dict[str, float] = {}

    guard = InterruptGuard()
    with guard.installed():
        started = time.perf_counter()
        prepared = data.prepare_data(spec, client=client, cache_dir=cache_dir)
        validation, _ = data.validation_dataset(prepared, spec)
        value_range = augment.value_range(spec.augmentation)
        timings["data_seconds"] = time.perf_counter() - started

        started = time.perf_counter()
        input_shape = (*prepared.image_size, prepared.channels)
        with strategy.scope(), dtype_policy("mixed_float16" if mixed else "float32"):
            model, plan = finetune.build_for_job(
                spec.model,
                spec.fine_tune,
                input_shape,
                len(prepared.class_names),
                client=client,
                cache_dir=cache_dir,
            )
        settings = loop_settings(spec, len(prepared.train), cluster, strategy, mixed=mixed)
        store = CheckpointStore(client, spec.output.uri, is_chief=cluster.is_chief)

        def save_checkpoint(state: LoopState, best: bool) -> None:
            # The loop's optimizer is the current phase's; a signal waits for the upload.
            with guard.held():
                store.save(state, model, loop.optimizer, best=best)

        loop = TrainingLoop(
            strategy=strategy,
            model=model,
            train=lambda context: data.train_dataset(prepared, spec, context)[0],
            validation=validation,
            settings=settings,
            plan=plan,
            reporter=reporter,
            perturb=make_perturb(spec, value_range),
            on_epoch_end=save_checkpoint,
        )

        # The optimizer is built for the phase the checkpoint was written in; the loop moves
        # on to the next phase, with a fresh optimizer, exactly as an unbroken run would.
        checkpoint = store.latest()
        state = checkpoint.state if checkpoint is not None else LoopState()
        optimizer = loop.prepare(state.phase if checkpoint is not None else plan.phase_at(0))
        if checkpoint is not None:
            store.restore(checkpoint, model, optimizer, scratch=cache_dir)
        resumed_at = state.completed_epochs
        timings["build_seconds"] = time.perf_counter() - started

        state = loop.run(state)
        timings["train_seconds"] = state.train_seconds

        metrics = outputs.summarize(
            state.history,
            counts=_counts(prepared),
            class_names=prepared.class_names,
            timings=timings,
            images_seen=state.images_seen,
            train_seconds=state.train_seconds,
            stopped_early=state.stopped_early,
        )
        model_uri = None
        if cluster.is_chief:
            started = time.perf_counter()
            model_uri = outputs.write_outputs(
                client,
                spec.output.uri,
                model,
                class_names=prepared.class_names,
                metrics=metrics,
                scratch=cache_dir,
            )
            # Known only once metrics.json is written: in the result, not in the file.
            metrics["timings"]["outputs_seconds"] = round(time.perf_counter() - started, 3)

    reporter.on_train_end(model_uri=model_uri, final=metrics["final"])
    return TrainingResult(
        skipped=False,
        model_uri=model_uri,
        metrics=metrics,
        epochs_run=state.completed_epochs - resumed_at,
        is_chief=cluster.is_chief,
        model=model,
    )


def _counts(prepared: data.PreparedData) -> dict[str, int]:
    validation = len(prepared.validation) if prepared.validation is not None else 0
    return {
        "train": len(prepared.train),
        "validation": validation,
        "used": len(prepared.train) + validation,
        "skipped": len(prepared.skipped),
    }
