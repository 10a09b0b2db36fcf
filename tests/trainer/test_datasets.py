"""Dataset indexing and the operator's preflight, against a real SeaweedFS server."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.images import make_image_folder, upload_folder, write_non_image

from aimass import storage
from aimass.datasets import DatasetError, index_dataset, is_image_key, preflight
from aimass.spec import parse_spec


def _spec(train: str, **dataset: object) -> object:
    return parse_spec({"dataset": {"train": train, **dataset}, "output": {"uri": "s3://out/x"}})


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a/b.jpg", True),
        ("a/b.JPEG", True),
        ("a/b.Png", True),
        ("a/b.bmp", True),
        ("a/b.GIF", True),
        ("a/b.tiff", False),
        ("a/notes.txt", False),
        ("a/.png", False),
        ("a/png", False),
    ],
)
def test_images_are_recognised_by_extension_in_any_case(key: str, expected: bool) -> None:
    assert is_image_key(key) is expected


def test_classes_are_sorted_folder_names_with_their_images_counted(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path, ["zebra", "apple", "mango"], per_class=3)
    write_non_image(tmp_path / "apple" / "README.txt")
    upload_folder(client, tmp_path, f"s3://{bucket}/fruit/train")

    index = index_dataset(client, f"s3://{bucket}/fruit/train")

    assert index.class_names == ("apple", "mango", "zebra")
    assert index.counts == {"apple": 3, "mango": 3, "zebra": 3}
    assert index.skipped == ("fruit/train/apple/README.txt",)


def test_every_accepted_extension_counts_as_an_image(
    client: object, bucket: str, tmp_path: Path
) -> None:
    for number, fmt in enumerate(["jpg", "jpeg", "png", "bmp", "gif"]):
        make_image_folder(tmp_path / fmt, ["a", "b"], per_class=1, fmt=fmt, seed=number)
        upload_folder(client, tmp_path / fmt, f"s3://{bucket}/mixed")
    storage.upload_bytes(client, b"x", f"s3://{bucket}/mixed/a/UPPER.JPG")

    index = index_dataset(client, f"s3://{bucket}/mixed")

    assert index.counts == {"a": 6, "b": 5}


def test_a_missing_bucket_is_a_dataset_error_naming_the_prefix(client: object) -> None:
    uri = "s3://nobody-made-this-bucket/flowers/train"

    with pytest.raises(DatasetError, match="nobody-made-this-bucket/flowers/train") as caught:
        index_dataset(client, uri)

    assert caught.value.uri == uri
    assert "does not exist" in str(caught.value)


def test_a_missing_prefix_is_a_dataset_error_naming_it(client: object, bucket: str) -> None:
    storage.upload_bytes(client, b"x", f"s3://{bucket}/other/a/1.png")

    with pytest.raises(DatasetError, match=f"s3://{bucket}/flowers/train: no objects"):
        index_dataset(client, f"s3://{bucket}/flowers/train")


def test_a_class_without_images_is_named_with_its_prefix(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path, ["cats", "dogs"], per_class=2)
    write_non_image(tmp_path / "owls" / "todo.txt")
    upload_folder(client, tmp_path, f"s3://{bucket}/pets")

    with pytest.raises(DatasetError, match=rf"s3://{bucket}/pets: .*\(owls\)"):
        index_dataset(client, f"s3://{bucket}/pets")


def test_an_empty_class_folder_marker_counts_as_an_empty_class(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path, ["cats", "dogs"], per_class=2)
    upload_folder(client, tmp_path, f"s3://{bucket}/pets")
    storage.upload_bytes(client, b"", f"s3://{bucket}/pets/owls/")

    with pytest.raises(DatasetError, match="owls"):
        index_dataset(client, f"s3://{bucket}/pets")


def test_a_single_class_is_refused_naming_the_prefix_and_the_class(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path, ["only"], per_class=3)
    upload_folder(client, tmp_path, f"s3://{bucket}/one")

    with pytest.raises(DatasetError, match=rf"s3://{bucket}/one: .*two class.*found 1 \(only\)"):
        index_dataset(client, f"s3://{bucket}/one")


def test_images_loose_under_the_prefix_belong_to_no_class(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path, ["a", "b"], per_class=2)
    upload_folder(client, tmp_path, f"s3://{bucket}/ds")
    storage.upload_bytes(client, b"x", f"s3://{bucket}/ds/stray.png")

    index = index_dataset(client, f"s3://{bucket}/ds")

    assert index.num_images == 4
    assert index.skipped == ("ds/stray.png",)


def test_preflight_reports_classes_and_counts_of_train_and_validation(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "train", ["a", "b"], per_class=4)
    make_image_folder(tmp_path / "val", ["a", "b"], per_class=2)
    upload_folder(client, tmp_path, f"s3://{bucket}/ds")
    spec = _spec(f"s3://{bucket}/ds/train", validation=f"s3://{bucket}/ds/val")

    report = preflight(spec, client)

    assert report.class_names == ("a", "b")
    assert report.train.counts == {"a": 4, "b": 4}
    assert report.validation is not None and report.validation.num_images == 4
    assert "2 classes, 8 training images" in report.describe()


def test_preflight_refuses_validation_classes_that_differ_from_training(
    client: object, bucket: str, tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "train", ["a", "b"], per_class=2)
    make_image_folder(tmp_path / "val", ["a", "c"], per_class=2)
    upload_folder(client, tmp_path, f"s3://{bucket}/ds")
    spec = _spec(f"s3://{bucket}/ds/train", validation=f"s3://{bucket}/ds/val")

    with pytest.raises(DatasetError, match=rf"s3://{bucket}/ds/val: .*missing \['b'\]"):
        preflight(spec, client)


def test_preflight_makes_its_own_client_from_the_environment(
    bucket: str, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    make_image_folder(tmp_path, ["a", "b"], per_class=1)
    upload_folder(storage.make_client(), tmp_path, f"s3://{bucket}/ds")

    report = preflight(_spec(f"s3://{bucket}/ds"))

    assert report.train.num_images == 2
