"""The training loop's pure parts: early stopping, the cluster from TF_CONFIG, steps per epoch,
and a loop that really lowers the loss."""

from __future__ import annotations

import json

import keras
import pytest
import tensorflow as tf
from trainer_jobs import Recorder, batches

from aimass.spec import Adversarial, Architecture, EarlyStopping, FineTune, Model
from aimass_trainer.adversarial import adversarial_step_fn
from aimass_trainer.distribute import Cluster
from aimass_trainer.finetune import FineTunePlan
from aimass_trainer.loop import (
    LoopSettings,
    LoopState,
    TrainingLoop,
    update_early_stopping,
)
from aimass_trainer.models import build_model, dtype_policy
from aimass_trainer.run import steps_per_epoch


def state_after(values: list[float], metric: str, stopping: EarlyStopping) -> LoopState:
    state = LoopState()
    for epoch, value in enumerate(values, start=1):
        state.history.append({"epoch": epoch, metric: value})
        state.completed_epochs = epoch
        update_early_stopping(state, stopping)
    return state


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    stopping = EarlyStopping(monitor="val_loss", patience=2)

    state = state_after([1.0, 0.8, 0.85, 0.9], "val_loss", stopping)

    assert state.stopped_early and state.best == 0.8 and state.best_epoch == 2


def test_early_stopping_on_accuracy_counts_a_rise_as_improvement() -> None:
    stopping = EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.01)

    state = state_after([0.5, 0.6, 0.605, 0.7], "val_accuracy", stopping)

    assert not state.stopped_early and state.best == 0.7 and state.wait == 0


def test_early_stopping_watches_the_training_metric_when_there_is_no_validation() -> None:
    state = state_after([1.0, 1.0], "loss", EarlyStopping(monitor="val_loss", patience=1))

    assert state.stopped_early and state.best_epoch == 1


def test_the_loop_state_survives_a_json_round_trip() -> None:
    state = state_after([1.0, 0.5], "loss", EarlyStopping(monitor="loss"))

    assert LoopState.from_json(json.loads(json.dumps(state.to_json()))) == state


@pytest.mark.parametrize(
    ("tf_config", "expected"),
    [
        (None, Cluster(1, "worker", 0)),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}},
         Cluster(2, "worker", 1)),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}},
         Cluster(2, "chief", 0, has_chief=True)),
    ],
)
def test_the_cluster_is_read_from_tf_config(tf_config: dict | None, expected: Cluster) -> None:
    raw = json.dumps(tf_config) if tf_config else None

    assert Cluster.from_tf_config(raw) == expected


def test_the_chief_task_or_else_worker_zero_is_chief() -> None:
    assert Cluster(2, "worker", 0).is_chief
    assert not Cluster(2, "worker", 1).is_chief
    assert Cluster(3, "chief", 0, has_chief=True).is_chief
    assert not Cluster(3, "worker", 0, has_chief=True).is_chief


def test_a_broken_tf_config_is_reported_with_its_text() -> None:
    with pytest.raises(ValueError, match="TF_CONFIG.*not json"):
        Cluster.from_tf_config("not json")


@pytest.mark.parametrize(
    ("images", "batch", "workers", "steps"),
    [(100, 10, 1, 10), (105, 10, 1, 10), (101, 10, 2, 10), (5, 32, 1, 1)],
)
def test_steps_per_epoch_match_the_sharded_batches(
    images: int, batch: int, workers: int, steps: int
) -> None:
    assert steps_per_epoch(images, batch, workers) == steps


def test_the_loop_lowers_the_loss_and_reports_every_epoch() -> None:
    tf.keras.utils.set_random_seed(0)
    model = build_model(Architecture.RESNET_SMALL, (16, 16, 3), 3, blocks=[1], filters=[8])
    reporter = Recorder()
    loop = TrainingLoop(
        strategy=tf.distribute.get_strategy(),
        model=model,
        train=lambda context: batches(48),
        validation=batches(16, seed=1),
        settings=LoopSettings(epochs=4, steps_per_epoch=6, learning_rate=0.01),
        plan=FineTunePlan.from_spec(Model(), FineTune()),
        reporter=reporter,
    )
    loop.prepare(1)

    state = loop.run(LoopState())

    assert [metrics.epoch for metrics in reporter.epochs] == [1, 2, 3, 4]
    assert state.history[-1]["loss"] < state.history[0]["loss"]
    assert reporter.epochs[-1].val_accuracy is not None
    assert reporter.epochs[-1].eta_seconds == 0


def test_mixed_precision_with_fgsm_mixing_trains_through_a_loss_scale_optimizer() -> None:
    tf.keras.utils.set_random_seed(0)
    with dtype_policy("mixed_float16"):
        model = build_model(Architecture.RESNET_SMALL, (16, 16, 3), 3, blocks=[1], filters=[8])
    fgsm = adversarial_step_fn(Adversarial(epsilon=0.05, fraction=0.5), (0.0, 1.0))
    assert fgsm is not None
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    loop = TrainingLoop(
        strategy=tf.distribute.get_strategy(),
        model=model,
        train=lambda context: batches(48),
        validation=None,
        settings=LoopSettings(
            epochs=3, steps_per_epoch=6, learning_rate=0.01, mixed_precision=True
        ),
        plan=FineTunePlan.from_spec(Model(), FineTune()),
        reporter=Recorder(),
        perturb=lambda net, images, labels: fgsm(net, loss_fn, images, labels),
    )

    optimizer = loop.prepare(1)
    state = loop.run(LoopState())

    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("head_dense").compute_dtype == "float16"
    assert state.history[-1]["loss"] < state.history[0]["loss"]
