"""Indexing an image-folder dataset in S3, without TensorFlow: the operator's cheap preflight.

Public functions: `index_dataset(client, uri) -> DatasetIndex`, `preflight(spec, client=None)
-> PreflightReport`, `is_image_key(key)`; the error `DatasetError`.

The layout is the usual one: `<prefix>/<class>/<image>`, a class per subfolder (images further
down inside a class folder belong to it too). Images are recognised by extension (jpg, jpeg,
png, bmp, gif, in any case); other files are counted as skipped and otherwise ignored. Class
names are sorted, so label indices are the same on every worker and every run.

Listing is all that happens here, so a preflight costs a few LIST requests however big the
dataset is. Whether each image decodes is found out later, when the trainer caches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aimass import storage
from aimass.storage import ObjectInfo, StorageError

if TYPE_CHECKING:
    from aimass.spec import TrainingJobSpec

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})


class DatasetError(ValueError):
    """The dataset cannot be trained on as it is; the message names the prefix. Permanent:
    retrying will not help until the data is fixed."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(message)
        self.uri = uri


@dataclass(frozen=True)
class DatasetIndex:
    """The images found under a prefix, by class. `skipped` holds the keys of non-image files."""

    uri: str
    class_names: tuple[str, ...]
    images: dict[str, tuple[ObjectInfo, ...]]
    skipped: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(self.images[name]) for name in self.class_names}

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DatasetSummary:
    """What a preflight found under one prefix."""

    uri: str
    counts: dict[str, int]
    skipped: int

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class PreflightReport:
    """Classes and image counts of the training (and validation) prefix."""

    class_names: tuple[str, ...]
    train: DatasetSummary
    validation: DatasetSummary | None = None
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a log or a condition message."""
        text = (
            f"{len(self.class_names)} classes, {self.train.num_images} training images"
            f" ({self.train.skipped} skipped)"
        )
        if self.validation is not None:
            text += f", {self.validation.num_images} validation images"
        return text


def is_image_key(key: str) -> bool:
    """Whether a key has one of the accepted image extensions, in any case."""
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def _classify(prefix: str, objects: list[ObjectInfo]) -> tuple[dict[str, list[ObjectInfo]],
                                                                list[str]]:
    """Group objects by their class folder; return (class -> images, skipped keys)."""
    classes: dict[str, list[ObjectInfo]] = {}
    skipped: list[str] = []
    for info in objects:
        relative = info.key[len(prefix):]
        folder, slash, rest = relative.partition("/")
        if not slash:
            # A file directly under the prefix belongs to no class.
            skipped.append(info.key)
            continue
        images = classes.setdefault(folder, [])
        if is_image_key(rest):
            images.append(info)
        elif rest:
            # NB: a key ending in "/" is a folder marker; it makes an empty class visible but is
            # not itself a skipped file.
            skipped.append(info.key)
    return classes, skipped


def index_dataset(client: Any, uri: str) -> DatasetIndex:
    """List the dataset under `uri` and check its shape.

    Raises DatasetError (naming `uri`) for a missing bucket or prefix, a class folder without
    images, fewer than two classes. Raises StorageError when S3 itself fails (retryable).
    """
    try:
        objects = storage.list_objects(client, uri)
    except StorageError as error:
        if error.reason == "NoSuchBucket":
            bucket, _ = storage.parse_s3_uri(uri)
            raise DatasetError(
                f"dataset {uri}: bucket {bucket!r} does not exist; create it and upload the "
                "images (aimass data upload DIR URI), or correct the URI",
                uri=uri,
            ) from error
        raise
    if not objects:
        raise DatasetError(
            f"dataset {uri}: no objects under this prefix; upload the images as "
            f"{uri.rstrip('/')}/<class>/<image> or correct the URI",
            uri=uri,
        )

    _, key = storage.parse_s3_uri(uri)
    prefix = key if not key or key.endswith("/") else key + "/"
    classes, skipped = _classify(prefix, objects)
    empty = sorted(name for name, images in classes.items() if not images)
    if empty:
        raise DatasetError(
            f"dataset {uri}: class folder(s) with no images ({', '.join(empty)}); accepted "
            f"extensions are {', '.join(sorted(IMAGE_EXTENSIONS))}",
            uri=uri,
        )
    if len(classes) < 2:
        found = ", ".join(sorted(classes)) or "none"
        raise DatasetError(
            f"dataset {uri}: needs at least two class folders with images, found "
            f"{len(classes)} ({found})",
            uri=uri,
        )

    names = tuple(sorted(classes))
    return DatasetIndex(
        uri=uri,
        class_names=names,
        images={name: tuple(classes[name]) for name in names},
        skipped=tuple(skipped),
    )


def _summary(index: DatasetIndex) -> DatasetSummary:
    return DatasetSummary(uri=index.uri, counts=index.counts, skipped=len(index.skipped))


def check_same_classes(train: DatasetIndex, validation: DatasetIndex) -> None:
    """Raise DatasetError unless the validation prefix has exactly the training classes."""
    if train.class_names == validation.class_names:
        return
    missing = sorted(set(train.class_names) - set(validation.class_names))
    extra = sorted(set(validation.class_names) - set(train.class_names))
    raise DatasetError(
        f"dataset {validation.uri}: validation classes differ from {train.uri}: "
        f"missing {missing or 'none'}, extra {extra or 'none'}",
        uri=validation.uri,
    )


def preflight(spec: TrainingJobSpec, client: Any = None) -> PreflightReport:
    """Check the job's training (and validation) prefix by listing only.

    Returns the classes and image counts, or raises DatasetError naming the prefix (permanent)
    or StorageError (S3 unreachable or refusing: worth retrying later).
    """
    client = client if client is not None else storage.make_client(spec.storage)
    train = index_dataset(client, spec.dataset.train)
    warnings: list[str] = []
    validation = None
    if spec.dataset.validation:
        validation_index = index_dataset(client, spec.dataset.validation)
        check_same_classes(train, validation_index)
        validation = _summary(validation_index)
    elif spec.dataset.validation_split > 0:
        small = [name for name, count in train.counts.items() if count < 2]
        if small:
            warnings.append(
                f"classes with fewer than two images get no validation images: {small}"
            )
    return PreflightReport(
        class_names=train.class_names,
        train=_summary(train),
        validation=validation,
        warnings=warnings,
    )
