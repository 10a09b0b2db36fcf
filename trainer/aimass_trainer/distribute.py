"""Where training runs: this process's place in a TF_CONFIG cluster, the tf.distribute strategy
that fits it, mixed precision and XLA, and keeping BatchNorm statistics equal across replicas.

One device gets the default strategy; several local GPUs get MirroredStrategy; a TF_CONFIG that
names more than one task gets MultiWorkerMirroredStrategy (on CPUs it talks gRPC over the
cluster's addresses, which is how two workers train in sync on loopback).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from aimass.spec import Architecture, MixedPrecision

# Whether a lone replica's step is compiled with XLA (`jit_compile`), by architecture; chosen
# by measurement with bench/train_step.py on this machine's 2 shared CPU cores (batch 32, steady
# state after a warm-up epoch, epochs of all variants taken in turns):
# - resnet-small [2,2,2]/[32,64,128] at 64 px: fit 207 -> 241 img/s with XLA, our loop
#   212 -> 219 img/s: a few per cent for us, less than XLA's compile time costs a short job
#   (and once more after each fine-tuning phase change); so off. (XLA was said to halve this
#   net's speed; on this CPU it did not, but it did not pay either.)
# - resnet50 at 32 px, two runs: fit 9.1 -> 28.7 and 12.3 -> 35.1 img/s with XLA, our loop
#   9.9 -> 17.6 and 10.9 -> 19.9 img/s; so on for all the keras.applications ResNets.
# Under a distribution strategy XLA stays off, as with Keras's own `jit_compile="auto"`.
# TODO: with XLA on resnet50, fit's best epoch beat ours by ~40% while the median ratio of
# paired epochs was even (+0.7%, 3 rounds, a shared machine); measure on a quiet machine.
_JIT_BY_ARCHITECTURE = {Architecture.RESNET_SMALL: False}


@dataclass(frozen=True)
class Cluster:
    """This process's place in a TF_CONFIG cluster; one worker when there is none."""

    workers: int = 1
    task_type: str = "worker"
    task_index: int = 0
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes checkpoints and outputs: the `chief` task, else worker 0."""
        if self.has_chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @classmethod
    def from_tf_config(cls, raw: str | None) -> Cluster:
        if not raw:
            return cls()
        try:
            config = json.loads(raw)
            members = config.get("cluster", {})
            task = config.get("task", {})
            chiefs = len(members.get("chief", []))
            return cls(
                workers=max(1, len(members.get("worker", [])) + chiefs),
                task_type=str(task.get("type", "worker")),
                task_index=int(task.get("index", 0)),
                has_chief=chiefs > 0,
            )
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(
                f"TF_CONFIG is not a valid cluster description ({error}): {raw!r}"
            ) from error


def cluster_from_env() -> Cluster:
    return Cluster.from_tf_config(os.environ.get("TF_CONFIG"))


def select_strategy(
    cluster: Cluster, *, collective_timeout: float | None = None
) -> tf.distribute.Strategy:
    """The strategy for `cluster` and this machine's GPUs.

    NB: MultiWorkerMirroredStrategy must be created before any other TensorFlow operation runs
    in the process, so call this first.
    """
    if cluster.workers > 1:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def use_mixed_precision(setting: MixedPrecision) -> bool:
    """auto means on exactly when there is a GPU: on CPUs float16 is slower, not faster."""
    if setting == MixedPrecision.AUTO:
        return bool(tf.config.list_physical_devices("GPU"))
    return setting == MixedPrecision.ON


def choose_jit_compile(architecture: Architecture, cluster: Cluster, replicas: int) -> bool:
    """Whether the per-replica step is compiled with XLA; see `_JIT_BY_ARCHITECTURE`."""
    if replicas > 1 or cluster.workers > 1:
        return False
    return _JIT_BY_ARCHITECTURE.get(architecture, True)


def batch_norm_statistics(model: keras.Model) -> list[Any]:
    """The moving means and variances of every BatchNorm layer, nested models included."""
    found: list[Any] = []
    pending = list(model.layers)
    while pending:
        layer = pending.pop(0)
        if isinstance(layer, keras.layers.BatchNormalization):
            found += [layer.moving_mean, layer.moving_variance]
        pending += list(getattr(layer, "layers", []))
    return found


def make_statistics_sync(
    strategy: tf.distribute.Strategy, model: keras.Model
) -> Callable[[], None] | None:
    """A function that averages BatchNorm moving statistics over all replicas; None for one.

    NB: Keras 3 updates these statistics on each replica from its own batch and never
    aggregates them, so workers drift apart. Averaging after every epoch (before validation and
    the checkpoint) makes them equal again; for the means this is exact, since the moving
    average is linear in the batch means.
    """
    variables = batch_norm_statistics(model)
    if strategy.num_replicas_in_sync == 1 or not variables:
        return None

    def replica_fn() -> None:
        context = tf.distribute.get_replica_context()
        values = [tf.identity(variable.value) for variable in variables]
        averaged = context.all_reduce(tf.distribute.ReduceOp.MEAN, values)
        for variable, value in zip(variables, averaged, strict=True):
            variable.assign(value)

    @tf.function
    def sync() -> None:
        strategy.run(replica_fn)

    return sync
