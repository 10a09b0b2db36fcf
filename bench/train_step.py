"""Our training loop against a plain `model.fit`, on the same model, data and optimizer.

Both train the same freshly built small ResNet on the same in-memory tf.data pipeline (random
images, cached, prefetched), for a warm-up epoch (tracing, excluded) and then epochs taken in
turns; the figures are images per second of the best epoch of each, and the overhead: the
median, over rounds, of how much longer our epoch took than fit's in the same round (negative:
faster). The aim is at most 5%. XLA (`jit_compile`) is measured both ways for both, which is
where the choice in `aimass_trainer.loop` comes from.

    python -m bench.train_step [--size 64] [--images 512] [--rounds 5] [--architecture ...]
"""

from __future__ import annotations

import argparse
import statistics
import os
import time
from dataclasses import replace
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aimass.progress import Silent  # noqa: E402
from aimass.spec import Architecture, FineTune, Model, Optimizer  # noqa: E402
from aimass_trainer.finetune import FineTunePlan  # noqa: E402
from aimass_trainer.loop import LoopSettings, LoopState, TrainingLoop  # noqa: E402
from aimass_trainer.models import build_model  # noqa: E402

CLASSES = 5
BATCH = 32


def make_dataset(images: int, size: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 1, size=(images, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=images).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(BATCH, drop_remainder=True)
    return dataset.cache().prefetch(tf.data.AUTOTUNE)


def fresh_model(architecture: Architecture, size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(architecture, (size, size, 3), CLASSES)


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _FitRunner:
    """Plain Keras: compile once, then one `fit` epoch per round, timed by a callback."""

    def __init__(self, dataset: tf.data.Dataset, args: argparse.Namespace, jit: bool) -> None:
        self.dataset = dataset
        self.model = fresh_model(args.architecture, args.size)
        self.model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
        self.timer = _EpochTimer()

    def epoch(self) -> float:
        self.model.fit(self.dataset, epochs=1, verbose=0, callbacks=[self.timer])
        return self.timer.seconds[-1]


class _LoopRunner:
    """Our loop on the same model and data, one epoch per round."""

    def __init__(self, dataset: tf.data.Dataset, args: argparse.Namespace, jit: bool) -> None:
        self.settings = LoopSettings(
            epochs=0,
            steps_per_epoch=int(dataset.cardinality()),
            learning_rate=1e-3,
            optimizer=Optimizer.ADAM,
            jit_compile=jit,
        )
        self.loop = TrainingLoop(
            strategy=tf.distribute.get_strategy(),
            model=fresh_model(args.architecture, args.size),
            train=lambda context: dataset,
            validation=None,
            settings=self.settings,
            plan=FineTunePlan.from_spec(Model(), FineTune()),
            reporter=Silent(),
        )
        self.loop.prepare(1)
        self.state = LoopState()

    def epoch(self) -> float:
        self.loop.settings = replace(self.settings, epochs=self.state.completed_epochs + 1)
        self.state = self.loop.run(self.state)
        return self.state.history[-1]["seconds"]


def compare(
    dataset: tf.data.Dataset, args: argparse.Namespace
) -> dict[tuple[str, bool], tuple[float, float, float]]:
    """Per variant: images per second of its best epoch, the median over rounds of its epoch
    time against fit's epoch time in the same round (1.0: as fast as fit), and the seconds of
    its warm-up epoch. Epochs are taken in turns after the warm-up, so that a busy machine
    slows all variants alike."""
    images = int(dataset.cardinality()) * BATCH
    runners: dict[tuple[str, bool], Any] = {}
    for jit in (False, True):
        runners["fit", jit] = _FitRunner(dataset, args, jit)
        runners["ours", jit] = _LoopRunner(dataset, args, jit)
    # The warm-up epoch includes tracing (and XLA compilation): what a short job pays.
    warmup = {key: runner.epoch() for key, runner in runners.items()}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in runners}
    for _ in range(args.rounds):
        for key, runner in runners.items():
            times[key].append(runner.epoch())
    result = {}
    for (kind, jit), seconds in times.items():
        ratios = [mine / fit for mine, fit in zip(seconds, times["fit", jit], strict=True)]
        result[kind, jit] = (images / min(seconds), statistics.median(ratios), warmup[kind, jit])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--architecture", type=Architecture, default=Architecture.RESNET_SMALL,
        choices=list(Architecture),
    )
    args = parser.parse_args(argv if argv is not None else [])
    dataset = make_dataset(args.images, args.size)
    print(
        f"{args.architecture.value}, {args.size} px, {args.images} images, batch {BATCH}, "
        f"best of {args.rounds} epochs each, in turns, after one warm-up",
        flush=True,
    )
    print(
        f"{'jit_compile':>12} {'fit img/s':>10} {'ours img/s':>11} {'overhead':>9} "
        f"{'fit warm-up s':>14} {'ours warm-up s':>15}"
    )
    results = compare(dataset, args)
    for jit in (False, True):
        (baseline, _, fit_warmup), (ours, ratio, our_warmup) = (
            results["fit", jit],
            results["ours", jit],
        )
        overhead = (ratio - 1.0) * 100.0
        print(
            f"{str(jit):>12} {baseline:10.1f} {ours:11.1f} {overhead:8.1f}% "
            f"{fit_warmup:14.1f} {our_warmup:15.1f}",
            flush=True,
        )
    print("img/s: best epoch; overhead: median over rounds of our epoch time / fit's, minus 1")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
