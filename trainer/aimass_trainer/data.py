"""The input pipeline: from an image-folder dataset in S3 to batched, augmented tf.data datasets.

Public:
- `load_datasets(spec, *, client, cache_dir, ...) -> DataBundle`: everything in one call.
- `prepare_data(spec, *, client, cache_dir) -> PreparedData`: index, download (cached by ETag),
  decode, split. Do this once per process.
- `train_dataset(prepared, spec, ...)`, `validation_dataset(prepared, spec, ...)`: the tf.data
  pipelines over prepared data; cheap, so a distribution strategy can call them once per input
  pipeline (`strategy.distribute_datasets_from_function(lambda ctx: train_dataset(..., ctx))`).

Every image is decoded and resized once, when it is cached, into one uint8 array held in memory;
an epoch then only gathers batches from it and augments them in parallel. Elements are
`(images, labels)`: float32 [batch, h, w, c] in `value_range` (0 to 255 * rescale) and int32
class indices into `class_names` (sorted folder names), for a sparse categorical loss.

The validation split is stratified and fixed: it depends on the job's seed (0 when unset) and on
the sorted keys, never on download order, so a restarted job validates on the same images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aimass import storage
from aimass.datasets import DatasetError, DatasetIndex, check_same_classes, index_dataset
from aimass.spec import TrainingJobSpec
from aimass_trainer import cache
from aimass_trainer.augment import Augmenter, value_range

AUTOTUNE = tf.data.AUTOTUNE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Decoded images of one split, their labels and the keys they came from."""

    images: np.ndarray
    labels: np.ndarray
    keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def tensors(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The images and labels as tensors, made once however many pipelines read them."""
        return tf.constant(self.images), tf.constant(self.labels)


@dataclass(frozen=True)
class PreparedData:
    """What `prepare_data` produced: class names, decoded splits and what was left out."""

    class_names: tuple[str, ...]
    train: Split
    validation: Split | None
    image_size: tuple[int, int]
    channels: int
    # key -> why it was skipped (not an image, or would not decode).
    skipped: dict[str, str] = field(default_factory=dict)
    downloaded: int = 0
    reused: int = 0


@dataclass
class DataBundle:
    """The datasets for one input pipeline, and the numbers a training loop and its report need."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    class_names: list[str]
    train_steps: int
    validation_steps: int
    batch_size: int
    value_range: tuple[float, float]
    prepared: PreparedData

    @property
    def counts(self) -> dict[str, int]:
        """Images used and skipped, for metrics.json."""
        train = len(self.prepared.train)
        validation = len(self.prepared.validation) if self.prepared.validation else 0
        return {
            "train": train,
            "validation": validation,
            "used": train + validation,
            "skipped": len(self.prepared.skipped),
        }


def _decode_index(
    client: Any, index: DatasetIndex, cache_dir: Path, size: tuple[int, int], channels: int
) -> tuple[Split, dict[str, str], cache.FetchResult]:
    """Download and decode every image of an index; labels follow `index.class_names`."""
    bucket, _ = storage.parse_s3_uri(index.uri)
    objects = [info for name in index.class_names for info in index.images[name]]
    labels = np.array(
        [label for label, name in enumerate(index.class_names) for _ in index.images[name]],
        dtype=np.int32,
    )
    fetched = cache.fetch(client, bucket, objects, cache_dir)
    decoded = cache.decode_all([fetched.paths[info.key] for info in objects], size, channels)
    skipped = {objects[position].key: reason for position, reason in decoded.failed.items()}
    skipped.update({key: "not an image (extension)" for key in index.skipped})
    keys = tuple(objects[position].key for position in decoded.kept)
    split = Split(images=decoded.images, labels=labels[decoded.kept], keys=keys)
    return split, skipped, fetched


def _check_usable(split: Split, index: DatasetIndex) -> None:
    """Each class must keep at least one image once undecodable files are gone."""
    present = set(np.unique(split.labels).tolist())
    lost = [name for label, name in enumerate(index.class_names) if label not in present]
    if lost:
        raise DatasetError(
            f"dataset {index.uri}: no decodable images left in class(es) {', '.join(lost)}",
            uri=index.uri,
        )


def split_validation(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out `fraction` of each class (at least one image of a class with two or more)."""
    if fraction <= 0:
        return split, None
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in np.unique(split.labels):
        # Sorted by key first, so the choice does not depend on the order images arrived in.
        members = sorted(np.flatnonzero(split.labels == label), key=lambda i: split.keys[i])
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        if count > 0:
            held.extend(rng.permutation(members)[:count].tolist())
    held_set = set(held)
    kept = [i for i in range(len(split)) if i not in held_set]
    held = sorted(held)

    def subset(positions: list[int]) -> Split:
        return Split(
            images=split.images[positions],
            labels=split.labels[positions],
            keys=tuple(split.keys[i] for i in positions),
        )

    return subset(kept), (subset(held) if held else None)


def prepare_data(
    spec: TrainingJobSpec, *, client: Any, cache_dir: str | Path
) -> PreparedData:
    """Index, download (once, by ETag), decode and split the job's images.

    Raises DatasetError (naming the prefix) when the data cannot be trained on, StorageError
    when S3 fails.
    """
    dataset = spec.dataset
    size = (int(dataset.image_size[0]), int(dataset.image_size[1]))
    root = Path(cache_dir)

    # Both prefixes are checked before anything is downloaded, so a bad one fails fast.
    train_index = index_dataset(client, dataset.train)
    validation_index = index_dataset(client, dataset.validation) if dataset.validation else None
    if validation_index is not None:
        check_same_classes(train_index, validation_index)

    train, skipped, fetched = _decode_index(client, train_index, root, size, dataset.channels)
    _check_usable(train, train_index)
    downloaded, reused = fetched.downloaded, fetched.reused

    validation: Split | None
    if validation_index is not None:
        validation, more_skipped, fetched = _decode_index(
            client, validation_index, root, size, dataset.channels
        )
        skipped.update(more_skipped)
        downloaded, reused = downloaded + fetched.downloaded, reused + fetched.reused
    else:
        seed = spec.training.seed if spec.training.seed is not None else 0
        train, validation = split_validation(train, dataset.validation_split, seed)

    logger.info(
        "dataset %s: %d classes, %d training and %d validation images; %d fetched, %d cached, "
        "%d skipped", dataset.train, len(train_index.class_names), len(train),
        len(validation) if validation is not None else 0, downloaded, reused, len(skipped),
    )
    for key, reason in sorted(skipped.items())[:20]:
        logger.warning("skipped %s: %s", key, reason)
    # TODO: datasets larger than memory need streaming from the cache instead of one array.
    return PreparedData(
        class_names=train_index.class_names,
        train=train,
        validation=validation,
        image_size=size,
        channels=dataset.channels,
        skipped=dict(sorted(skipped.items())),
        downloaded=downloaded,
        reused=reused,
    )


def _shard(
    count: int, input_context: tf.distribute.InputContext | None, num_shards: int, index: int
) -> tuple[np.ndarray, int]:
    """The element positions of this input pipeline, and the number of pipelines."""
    if input_context is not None:
        num_shards, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
    # NB: every shard gets exactly as many elements, so every worker runs as many steps and
    # none waits forever in a collective. Up to num_shards - 1 elements are left out.
    usable = count - count % num_shards
    return np.arange(index, usable, num_shards, dtype=np.int64), num_shards


def _batch_size(
    global_batch: int, input_context: tf.distribute.InputContext | None, num_shards: int
) -> int:
    if input_context is not None:
        return input_context.get_per_replica_batch_size(global_batch)
    return max(1, global_batch // num_shards)


def _options(sharded: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if sharded:
        # We shard by element ourselves; the strategy must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _gatherer(split: Split) -> Any:
    images, labels = split.tensors

    def gather(positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(images, positions), tf.gather(labels, positions)

    return gather


def train_dataset(
    prepared: PreparedData,
    spec: TrainingJobSpec,
    input_context: tf.distribute.InputContext | None = None,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
    implementation: str | None = None,
) -> tuple[tf.data.Dataset, int, int]:
    """The training pipeline for one input pipeline: (dataset, steps per epoch, batch size).

    Shuffled each epoch (seeded by `training.seed`), batched, augmented in parallel, prefetched.
    Batches are full-sized once there are enough images, so a step's shape never changes.
    `implementation` picks the augmentation code (see `aimass_trainer.augment.Augmenter`);
    unset, `augmentation.fusedWarp` decides.
    """
    positions, shards = _shard(len(prepared.train), input_context, num_shards, shard_index)
    batch = _batch_size(spec.training.batch_size, input_context, shards)
    drop = len(positions) >= batch
    seed = spec.training.seed
    if implementation is None:
        implementation = "fused" if spec.augmentation.fused_warp else "layers"
    augmenter = Augmenter(spec.augmentation, implementation=implementation)

    # TODO: a resumed job starts the shuffle and augmentation sequence again from its first
    # epoch; deriving the seeds from the epoch number would make it repeat an unbroken run.
    dataset = tf.data.Dataset.from_tensor_slices(positions)
    dataset = dataset.shuffle(len(positions), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch, drop_remainder=drop)
    dataset = dataset.map(_gatherer(prepared.train), num_parallel_calls=AUTOTUNE)
    if augmenter.is_identity:
        dataset = dataset.map(lambda x, y: (augmenter.finish(x), y), num_parallel_calls=AUTOTUNE)
    else:
        # One seed per batch, different every epoch, yet fixed for a given job seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, batch_seed: (augmenter(pair[0], batch_seed), pair[1]),
            num_parallel_calls=AUTOTUNE,
        )
    dataset = dataset.prefetch(AUTOTUNE).with_options(_options(shards > 1))
    steps = len(positions) // batch if drop else int(len(positions) > 0)
    return dataset, steps, batch


def validation_dataset(
    prepared: PreparedData,
    spec: TrainingJobSpec,
    input_context: tf.distribute.InputContext | None = None,
    *,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tuple[tf.data.Dataset, int] | tuple[None, int]:
    """The validation pipeline (no augmentation, fixed order): (dataset, steps) or (None, 0)."""
    if prepared.validation is None:
        return None, 0
    positions, shards = _shard(len(prepared.validation), input_context, num_shards, shard_index)
    if len(positions) == 0:
        return None, 0
    batch = _batch_size(spec.training.batch_size, input_context, shards)
    augmenter = Augmenter(spec.augmentation)
    dataset = tf.data.Dataset.from_tensor_slices(positions).batch(batch)
    dataset = dataset.map(_gatherer(prepared.validation), num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda x, y: (augmenter.finish(x), y), num_parallel_calls=AUTOTUNE)
    dataset = dataset.prefetch(AUTOTUNE).with_options(_options(shards > 1))
    return dataset, math.ceil(len(positions) / batch)


def load_datasets(
    spec: TrainingJobSpec,
    *,
    client: Any,
    cache_dir: str | Path,
    input_context: tf.distribute.InputContext | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    prepared: PreparedData | None = None,
) -> DataBundle:
    """Prepare the job's data (unless `prepared` is given) and build both pipelines.

    With `input_context` (from a distribution strategy) or `num_shards`/`shard_index`, the
    datasets hold only this pipeline's shard and batches of the per-replica size.
    """
    if prepared is None:
        prepared = prepare_data(spec, client=client, cache_dir=cache_dir)
    train, train_steps, batch = train_dataset(
        prepared, spec, input_context, num_shards=num_shards, shard_index=shard_index
    )
    validation, validation_steps = validation_dataset(
        prepared, spec, input_context, num_shards=num_shards, shard_index=shard_index
    )
    return DataBundle(
        train=train,
        validation=validation,
        class_names=list(prepared.class_names),
        train_steps=train_steps,
        validation_steps=validation_steps,
        batch_size=batch,
        value_range=value_range(spec.augmentation),
        prepared=prepared,
    )
