"""The input pipeline against a real SeaweedFS server: cache, skipped files, splits, shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from support.images import (
    make_image_folder,
    upload_folder,
    write_corrupt,
    write_non_image,
    write_truncated,
)

from aimass import storage
from aimass.datasets import DatasetError
from aimass.spec import TrainingJobSpec, parse_spec
from aimass_trainer.data import load_datasets, prepare_data, train_dataset

CLASSES = ["circle", "cross", "square"]


@pytest.fixture
def dataset_uri(client: Any, bucket: str, tmp_path: Path) -> str:
    """Ten 20 px images of each of three classes in S3."""
    make_image_folder(tmp_path / "src", CLASSES, per_class=10, size=20)
    upload_folder(client, tmp_path / "src", f"s3://{bucket}/shapes/train")
    return f"s3://{bucket}/shapes/train"


def _spec(train: str, **overrides: Any) -> TrainingJobSpec:
    document: dict[str, Any] = {
        "dataset": {"train": train, "imageSize": [16, 16], "validationSplit": 0.2},
        "training": {"batchSize": 8, "seed": 5},
        "output": {"uri": "s3://out/x"},
    }
    for section, values in overrides.items():
        document.setdefault(section, {}).update(values)
    return parse_spec(document)


def _count_gets(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: calls.append(params["url_path"])
    )
    return calls


def _first_batch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_batches_have_the_configured_size_shape_and_value_range(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    spec = _spec(dataset_uri, augmentation={"rotationRange": 20, "horizontalFlip": True})

    bundle = load_datasets(spec, client=client, cache_dir=tmp_path / "cache")
    images, labels = _first_batch(bundle.train)

    assert bundle.class_names == CLASSES
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int32 and set(labels) <= {0, 1, 2}
    assert bundle.value_range == (0.0, 1.0)
    assert bundle.counts == {"train": 24, "validation": 6, "used": 30, "skipped": 0}
    assert bundle.train_steps == 3 and bundle.validation_steps == 1


def test_grayscale_gives_one_channel(client: Any, dataset_uri: str, tmp_path: Path) -> None:
    spec = _spec(dataset_uri, dataset={"colorMode": "grayscale", "imageSize": [12, 10]})

    bundle = load_datasets(spec, client=client, cache_dir=tmp_path / "cache")

    assert _first_batch(bundle.train)[0].shape == (8, 12, 10, 1)


def test_a_restarted_worker_downloads_nothing_again(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    spec = _spec(dataset_uri)
    gets = _count_gets(client)
    prepare_data(spec, client=client, cache_dir=tmp_path / "cache")
    first_gets = len(gets)
    cached = sorted((tmp_path / "cache").rglob("*.png"))
    mtimes = [path.stat().st_mtime_ns for path in cached]

    again = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")

    assert first_gets == 30
    assert len(gets) == first_gets
    assert (again.downloaded, again.reused) == (0, 30)
    assert [path.stat().st_mtime_ns for path in cached] == mtimes


def test_a_changed_object_is_downloaded_again(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    spec = _spec(dataset_uri)
    prepare_data(spec, client=client, cache_dir=tmp_path / "cache")
    replacement = make_image_folder(tmp_path / "new", ["circle"], per_class=1, size=20, seed=9)
    storage.upload_file(
        client, replacement / "circle" / "0000.png", f"{dataset_uri}/circle/0000.png"
    )

    again = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")

    assert (again.downloaded, again.reused) == (1, 29)


def test_corrupt_truncated_and_non_image_files_are_skipped_and_named(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    source = make_image_folder(tmp_path / "src", CLASSES, per_class=4, size=20)
    write_corrupt(source / "circle" / "corrupt.png")
    write_truncated(source / "cross" / "truncated.jpg")
    write_truncated(source / "cross" / "truncated.png")
    write_non_image(source / "square" / "notes.txt")
    upload_folder(client, source, f"s3://{bucket}/dirty")

    bundle = load_datasets(
        _spec(f"s3://{bucket}/dirty"), client=client, cache_dir=tmp_path / "cache"
    )

    assert sorted(bundle.prepared.skipped) == [
        "dirty/circle/corrupt.png",
        "dirty/cross/truncated.jpg",
        "dirty/cross/truncated.png",
        "dirty/square/notes.txt",
    ]
    assert bundle.counts["used"] == 12 and bundle.counts["skipped"] == 4
    # Every remaining image goes through the pipeline without an error.
    assert sum(int(labels.shape[0]) for _, labels in bundle.train) > 0


def test_a_class_whose_images_all_fail_to_decode_is_a_dataset_error(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    source = make_image_folder(tmp_path / "src", ["good"], per_class=3)
    write_corrupt(source / "broken" / "a.png")
    write_corrupt(source / "broken" / "b.jpg")
    upload_folder(client, source, f"s3://{bucket}/half")

    with pytest.raises(DatasetError, match=rf"s3://{bucket}/half: .*broken"):
        prepare_data(_spec(f"s3://{bucket}/half"), client=client, cache_dir=tmp_path / "c")


def test_a_missing_prefix_fails_before_anything_is_downloaded(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match=f"s3://{bucket}/nothing/here"):
        load_datasets(_spec(f"s3://{bucket}/nothing/here"), client=client, cache_dir=tmp_path)


def test_the_validation_split_is_stratified_disjoint_and_fixed_by_the_seed(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    spec = _spec(dataset_uri)

    first = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")
    again = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")
    other = prepare_data(
        _spec(dataset_uri, training={"seed": 6}), client=client, cache_dir=tmp_path / "cache"
    )

    assert first.validation is not None and other.validation is not None
    assert np.bincount(first.validation.labels).tolist() == [2, 2, 2]
    assert not set(first.validation.keys) & set(first.train.keys)
    assert first.validation.keys == again.validation.keys
    assert first.validation.keys != other.validation.keys


def test_a_validation_prefix_is_used_instead_of_a_split(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "src" / "train", CLASSES, per_class=4, size=20)
    make_image_folder(tmp_path / "src" / "val", CLASSES, per_class=2, size=20, seed=3)
    upload_folder(client, tmp_path / "src", f"s3://{bucket}/ds")
    spec = parse_spec({
        "dataset": {"train": f"s3://{bucket}/ds/train", "validation": f"s3://{bucket}/ds/val",
                    "imageSize": [16, 16]},
        "output": {"uri": "s3://out/x"},
    })

    bundle = load_datasets(spec, client=client, cache_dir=tmp_path / "cache")

    assert bundle.counts == {"train": 12, "validation": 6, "used": 18, "skipped": 0}
    assert all(key.startswith("ds/val/") for key in bundle.prepared.validation.keys)


def test_the_same_seed_gives_the_same_batches_and_another_seed_does_not(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    augmentation = {"zoomRange": 0.2, "brightnessRange": 0.2}
    prepared = prepare_data(_spec(dataset_uri), client=client, cache_dir=tmp_path / "cache")

    def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
        spec = _spec(dataset_uri, training={"seed": seed}, augmentation=augmentation)
        return _first_batch(train_dataset(prepared, spec)[0])

    first, again, other = batch(1), batch(1), batch(2)

    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_without_a_seed_two_runs_differ(client: Any, dataset_uri: str, tmp_path: Path) -> None:
    spec = _spec(dataset_uri, training={"seed": None}, augmentation={"zoomRange": 0.2})
    prepared = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")

    first = _first_batch(train_dataset(prepared, spec)[0])
    second = _first_batch(train_dataset(prepared, spec)[0])

    assert not np.array_equal(first[0], second[0])


def test_epochs_are_shuffled_differently(client: Any, dataset_uri: str, tmp_path: Path) -> None:
    bundle = load_datasets(_spec(dataset_uri), client=client, cache_dir=tmp_path / "cache")

    def epoch() -> list[int]:
        return [int(label) for _, labels in bundle.train for label in labels.numpy()]

    assert epoch() != epoch()


def test_shards_split_the_training_set_evenly_without_overlap(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    spec = _spec(dataset_uri, augmentation={"rescale": 1.0})
    prepared = prepare_data(spec, client=client, cache_dir=tmp_path / "cache")

    shards = [train_dataset(prepared, spec, num_shards=2, shard_index=i) for i in range(2)]
    contents = [
        {image.tobytes() for images, _ in dataset for image in images.numpy()}
        for dataset, _, _ in shards
    ]

    assert [(steps, batch) for _, steps, batch in shards] == [(3, 4), (3, 4)]
    assert len(contents[0]) == len(contents[1]) == 12
    assert not contents[0] & contents[1]


def test_an_input_context_sets_the_shard_and_the_per_replica_batch(
    client: Any, dataset_uri: str, tmp_path: Path
) -> None:
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )

    bundle = load_datasets(
        _spec(dataset_uri), client=client, cache_dir=tmp_path / "cache", input_context=context
    )

    assert bundle.batch_size == 2
    assert bundle.train_steps == 6
