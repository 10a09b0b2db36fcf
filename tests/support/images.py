"""Tiny synthetic image-folder datasets for tests and benchmarks.

Public functions:
- `make_image_folder(root, classes=..., per_class=..., size=..., fmt=...)` writes
  `root/<class>/<n>.<fmt>` images whose classes are easy to learn: each class has its own colour
  and shape (a square, a disc, stripes, a cross, ...), placed at a random spot over light noise.
- `synthetic_image(class_index, size, rng)` one such image as a uint8 array (H, W, 3).
- `write_corrupt(path)`, `write_truncated(path)`, `write_non_image(path)` bad files for the
  loader to skip.
- `upload_folder(client, root, uri)` puts a folder into S3 (the bucket must exist or is created).

Everything is seeded, so a dataset made twice is byte for byte the same.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aimass import storage

DEFAULT_CLASSES = ("circle", "cross", "square", "stripes")

# One colour per class index, cycled when there are more classes than colours.
_COLOURS = np.array(
    [[220, 40, 40], [40, 180, 60], [40, 80, 220], [230, 200, 30], [170, 60, 200], [30, 200, 200]],
    dtype=np.float32,
)


def synthetic_image(class_index: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of `size` x `size` that shows class `class_index`."""
    image = rng.uniform(200, 255, size=(size, size, 3)).astype(np.float32)
    colour = _COLOURS[class_index % len(_COLOURS)]
    rows, cols = np.mgrid[0:size, 0:size]
    half = max(2, size // 4)
    cy, cx = rng.integers(half, size - half + 1, size=2)
    shape = class_index % 4
    if shape == 0:
        mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= half**2
    elif shape == 1:
        mask = (np.abs(rows - cy) <= half // 3) | (np.abs(cols - cx) <= half // 3)
    elif shape == 2:
        mask = (np.abs(rows - cy) <= half) & (np.abs(cols - cx) <= half)
    else:
        mask = (cols // max(1, size // 8)) % 2 == 0
    image[mask] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(
    root: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    *,
    per_class: int = 8,
    size: int = 16,
    fmt: str = "png",
    seed: int = 0,
) -> Path:
    """Write `per_class` images of each class under `root/<class>/`. Returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt.lower(), fmt.upper())
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            pixels = synthetic_image(index, size, rng)
            Image.fromarray(pixels).save(folder / f"{number:04d}.{fmt}", format=pil_format)
    return root


def png_bytes(pixels: np.ndarray) -> bytes:
    """`pixels` (uint8, H x W x 3) encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_corrupt(path: str | Path) -> Path:
    """A file named like an image whose content is not one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image, whatever its name says\n" * 4)
    return path


def write_truncated(path: str | Path, size: int = 32) -> Path:
    """A PNG or JPEG (by suffix) cut off halfway: the header reads, the pixels do not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    pil_format = "JPEG" if path.suffix.lower() in {".jpg", ".jpeg"} else "PNG"
    Image.fromarray(pixels).save(buffer, format=pil_format)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_non_image(path: str | Path) -> Path:
    """A file that is not an image and is not named like one (e.g. notes.txt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("labels were checked by hand\n")
    return path


def upload_folder(client: Any, root: str | Path, uri: str) -> int:
    """Upload `root` to the S3 prefix `uri` (creating the bucket). Returns the file count."""
    return storage.upload_dir(client, root, uri)


def put_placeholder_dataset(
    client: Any, uri: str, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 2
) -> str:
    """Objects named like images under `uri/<class>/`, with dummy bytes: enough for a listing,
    such as the operator's pre-flight, not for training. Returns `uri`."""
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    for label in classes:
        for index in range(per_class):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{label}/{index}.png", Body=b"png")
    return uri
