"""The training loop: one tf.function step per batch, under the tf.distribute strategy that fits
the machine, with metrics, throughput, early stopping and fine-tuning phases.

NB: this is a custom loop rather than `model.fit` on purpose: Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585). The step follows the usual pattern for
tf.distribute: each replica averages its loss over the global batch and the optimizer sums the
gradients across replicas. Training batches come from a repeated dataset and every epoch runs a
fixed number of steps, so that workers never disagree on how many collective steps remain.

Validation runs on each worker over the whole validation set, outside the distributed step: the
weights are identical on every replica, so every worker computes the same figures without a
collective. TODO: on several local GPUs validation uses only the first one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from aimass.progress import EpochMetrics, ProgressReporter
from aimass.spec import EarlyStopping, Optimizer
from aimass_trainer.distribute import make_statistics_sync
from aimass_trainer.finetune import FineTunePlan

# Seconds between progress reports within an epoch: each report reads the running sums, which
# waits for the steps in flight, so reporting every step would slow training down.
BATCH_REPORT_INTERVAL = 0.5

Perturb = Callable[[keras.Model, tf.Tensor, tf.Tensor], tf.Tensor]
# One input pipeline's training batches (per-replica batch size), finite: the loop repeats it.
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def make_optimizer(
    name: Optimizer, learning_rate: float, *, mixed_precision: bool
) -> keras.optimizers.Optimizer:
    """The optimizer named in the spec; wrapped for dynamic loss scaling under mixed precision."""
    factories: dict[Optimizer, Callable[[], keras.optimizers.Optimizer]] = {
        Optimizer.ADAM: lambda: keras.optimizers.Adam(learning_rate),
        Optimizer.ADAMW: lambda: keras.optimizers.AdamW(learning_rate),
        Optimizer.SGD: lambda: keras.optimizers.SGD(learning_rate, momentum=0.9),
        Optimizer.RMSPROP: lambda: keras.optimizers.RMSprop(learning_rate),
    }
    optimizer = factories[Optimizer(name)]()
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@dataclass
class LoopState:
    """Everything a resumed job needs besides the weights: saved with every checkpoint."""

    completed_epochs: int = 0
    phase: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    images_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    steps_per_epoch: int
    learning_rate: float
    optimizer: Optimizer = Optimizer.ADAM
    mixed_precision: bool = False
    jit_compile: bool = False
    early_stopping: EarlyStopping | None = None


def _monitored(stopping: EarlyStopping, entry: dict[str, float]) -> tuple[float, bool]:
    """The watched value and whether bigger is better; without validation, the train metric."""
    name = stopping.monitor.value
    if name not in entry:
        name = name.removeprefix("val_")
    return entry[name], name.endswith("accuracy")


def update_early_stopping(state: LoopState, stopping: EarlyStopping | None) -> bool:
    """Record the last epoch against the best so far; True when it improved (or no watch)."""
    if stopping is None:
        return True
    value, higher_is_better = _monitored(stopping, state.history[-1])
    if state.best is None:
        improved = True
    else:
        gain = value - state.best if higher_is_better else state.best - value
        improved = gain > stopping.min_delta
    if improved:
        state.best, state.best_epoch, state.wait = value, state.completed_epochs, 0
    else:
        state.wait += 1
        state.stopped_early = state.wait >= stopping.patience
    return improved


def _per_example(labels: tf.Tensor, probs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy and correctness per example, for sparse or one-hot labels."""
    if labels.shape.rank == probs.shape.rank:
        loss = keras.losses.categorical_crossentropy(labels, probs)
        truth = tf.argmax(labels, axis=-1)
    else:
        labels = tf.reshape(labels, [-1])
        loss = keras.losses.sparse_categorical_crossentropy(labels, probs)
        truth = tf.cast(labels, tf.int64)
    correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1), truth), tf.float32)
    return tf.cast(loss, tf.float32), correct


def _sums(loss: tf.Tensor, correct: tf.Tensor) -> tf.Tensor:
    """[loss sum, correct count, example count] for one batch."""
    count = tf.cast(tf.shape(loss)[0], tf.float32)
    return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(correct), count])


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    totals: tf.Variable,
    *,
    perturb: Perturb | None = None,
    jit_compile: bool = False,
) -> Callable[[Any], None]:
    """A tf.function that takes one distributed batch from an iterator and trains on it.

    NB: it captures `model.trainable_variables` when first traced; after a phase changes what
    trains, make a new step.
    """

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        if perturb is not None:
            images = perturb(model, images, labels)
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss, correct = _per_example(labels, probs)
            mean = tf.nn.compute_average_loss(loss)
            if model.losses:
                mean += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(mean)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return _sums(loss, correct)

    # Without XLA the replica step is traced inline, saving a nested function call per step.
    compiled = tf.function(replica_step, jit_compile=True) if jit_compile else replica_step

    @tf.function
    def train_step(iterator: Any) -> None:
        images, labels = next(iterator)
        per_replica = strategy.run(compiled, args=(images, labels))
        totals.assign_add(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))

    return train_step


def make_eval_step(model: keras.Model) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    @tf.function
    def eval_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        loss, correct = _per_example(labels, model(images, training=False))
        return _sums(loss, correct)

    return eval_step


def evaluate(
    model: keras.Model, dataset: tf.data.Dataset, step: Callable[..., tf.Tensor] | None = None
) -> tuple[float, float, int]:
    """Mean loss, accuracy and example count over a whole (finite) dataset. Pass the same
    `step` (from `make_eval_step`) on every call, or it is traced again each time."""
    step = step or make_eval_step(model)
    totals = tf.zeros([3])
    for images, labels in dataset:
        totals += step(images, labels)
    loss_sum, correct, count = (float(value) for value in totals.numpy())
    if count == 0:
        return math.nan, math.nan, 0
    return loss_sum / count, correct / count, int(count)


class TrainingLoop:
    """Trains `model` epoch by epoch from a LoopState, calling `on_epoch_end(state, improved)`
    (the checkpoint) and then the reporter after every epoch.

    `train` makes one input pipeline's dataset from the strategy's InputContext, batched to the
    per-replica size (as `aimass_trainer.data.train_dataset` does); every epoch runs
    `settings.steps_per_epoch` global steps.
    """

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        train: DatasetFn,
        validation: tf.data.Dataset | None,
        settings: LoopSettings,
        plan: FineTunePlan,
        reporter: ProgressReporter,
        perturb: Perturb | None = None,
        on_epoch_end: Callable[[LoopState, bool], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.model = model
        self.validation = validation
        self.settings = settings
        self.plan = plan
        self.reporter = reporter
        self.perturb = perturb
        self.on_epoch_end = on_epoch_end
        self.phase = 0
        self.optimizer: keras.optimizers.Optimizer | None = None
        self._train = train
        self._iterator: Any = None
        self._step: Callable[[Any], None] | None = None
        self._totals = tf.Variable(tf.zeros([3]), trainable=False, name="epoch_totals")
        self._sync_statistics = make_statistics_sync(strategy, model)
        self._eval_step = make_eval_step(model)

    def prepare(self, phase: int) -> keras.optimizers.Optimizer:
        """Set what trains in `phase` and build a fresh optimizer for it (its variables
        exist afterwards, so a checkpoint can be restored into them)."""
        self.plan.enter(self.model, phase)
        rate = self.plan.learning_rate(self.settings.learning_rate, phase)
        with self.strategy.scope():
            self.optimizer = make_optimizer(
                self.settings.optimizer, rate, mixed_precision=self.settings.mixed_precision
            )
            self.optimizer.build(self.model.trainable_variables)
        self._step = make_train_step(
            self.strategy,
            self.model,
            self.optimizer,
            self._totals,
            perturb=self.perturb,
            jit_compile=self.settings.jit_compile,
        )
        self.phase = phase
        return self.optimizer

    def run(self, state: LoopState) -> LoopState:
        """Train the epochs still to do; returns the state after the last one."""
        settings = self.settings
        self.reporter.on_train_begin(
            epochs=settings.epochs,
            initial_epoch=state.completed_epochs,
            steps_per_epoch=settings.steps_per_epoch,
        )
        while state.completed_epochs < settings.epochs and not state.stopped_early:
            phase = self.plan.phase_at(state.completed_epochs)
            if phase != self.phase:
                self.prepare(phase)
            state.phase = phase
            self._train_epoch(state)
        return state

    def _batches(self) -> Any:
        if self._iterator is None:
            if self.strategy.num_replicas_in_sync == 1:
                # One replica: the plain dataset, without a distributed iterator's wrapping.
                dataset = self._train(tf.distribute.InputContext()).repeat()
            else:
                dataset = self.strategy.distribute_datasets_from_function(
                    lambda context: self._train(context).repeat()
                )
            self._iterator = iter(dataset)
        return self._iterator

    def _train_epoch(self, state: LoopState) -> None:
        epoch = state.completed_epochs + 1
        iterator = self._batches()
        self._totals.assign(tf.zeros([3]))
        started = last_report = time.perf_counter()
        for step in range(1, self.settings.steps_per_epoch + 1):
            self._step(iterator)
            now = time.perf_counter()
            if now - last_report >= BATCH_REPORT_INTERVAL:
                last_report = now
                self.reporter.on_batch_end(epoch=epoch, step=step, logs=self._running())
        loss_sum, correct, count = (float(value) for value in self._totals.numpy())
        seconds = time.perf_counter() - started
        if self._sync_statistics is not None:
            self._sync_statistics()

        entry = {"epoch": epoch, "loss": loss_sum / count, "accuracy": correct / count}
        if self.validation is not None:
            entry["val_loss"], entry["val_accuracy"], _ = evaluate(
                self.model, self.validation, self._eval_step
            )
        entry["images_per_second"] = count / seconds
        entry["seconds"] = seconds
        state.history.append(entry)
        state.completed_epochs = epoch
        state.train_seconds += seconds
        state.images_seen += int(count)
        improved = update_early_stopping(state, self.settings.early_stopping)

        if self.on_epoch_end is not None:
            self.on_epoch_end(state, improved)
        self.reporter.on_epoch_end(self._metrics(state))

    def _running(self) -> dict[str, float]:
        loss_sum, correct, count = (float(value) for value in self._totals.numpy())
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "accuracy": correct / count}

    def _metrics(self, state: LoopState) -> EpochMetrics:
        entry = state.history[-1]
        per_epoch = state.train_seconds / max(1, len(state.history))
        remaining = 0 if state.stopped_early else self.settings.epochs - state.completed_epochs
        return EpochMetrics(
            epoch=state.completed_epochs,
            epochs=self.settings.epochs,
            loss=entry["loss"],
            accuracy=entry["accuracy"],
            val_loss=entry.get("val_loss"),
            val_accuracy=entry.get("val_accuracy"),
            images_per_second=entry["images_per_second"],
            eta_seconds=remaining * per_epoch,
        )
