"""The local image cache: objects downloaded once, keyed by ETag, and decoded once.

Public: `fetch(client, bucket, objects, cache_dir) -> FetchResult` downloads what the cache
lacks, in parallel; `decode_all(paths, size, channels) -> DecodeResult` decodes, checks and
resizes images in parallel into one uint8 array; `decode_image(path, size, channels)` does one.

A cached file is named after the object's ETag and size, so a restarted worker (or a second job
on the same node) finds the bytes it needs already there and fetches nothing; a changed object
has a new ETag and is fetched again. Downloads land under a temporary name first, so a worker
killed mid-download never leaves a partial file that looks complete.

Corrupt, truncated or non-image content is found here, before anything reaches TensorFlow: an
image must pass Pillow's `verify()` and then decode completely. Such files are reported by key
with the reason, never fed to the pipeline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from aimass import storage
from aimass.storage import ObjectInfo

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

# What Pillow raises for content that is not a whole, decodable image.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class FetchResult:
    """Where each key's bytes are on disk, and how many were fetched or already cached."""

    paths: dict[str, Path]
    downloaded: int
    reused: int


@dataclass(frozen=True)
class DecodeResult:
    """Decoded images (uint8, N x H x W x C) in input order, minus the failures.

    `kept` holds the input positions that decoded; `failed` maps a position to its reason.
    """

    images: np.ndarray
    kept: list[int]
    failed: dict[int, str] = field(default_factory=dict)


def cache_path(cache_dir: Path, info: ObjectInfo) -> Path:
    """The cache file for an object: by ETag and size, fanned out over 256 folders."""
    etag = _UNSAFE.sub("_", info.etag) or "noetag"
    suffix = Path(info.key).suffix.lower()
    return cache_dir / "objects" / etag[:2] / f"{etag}-{info.size}{suffix}"


# TODO: entries of objects that changed or were deleted are never evicted from the cache.
def fetch(
    client: Any,
    bucket: str,
    objects: Sequence[ObjectInfo],
    cache_dir: str | Path,
    *,
    workers: int = storage.DEFAULT_WORKERS,
) -> FetchResult:
    """Make sure every object is in the cache; download the missing ones concurrently."""
    root = Path(cache_dir)
    paths = {info.key: cache_path(root, info) for info in objects}
    missing = [
        (f"s3://{bucket}/{info.key}", paths[info.key])
        for info in objects
        if not _is_cached(paths[info.key], info.size)
    ]
    storage.download_many(client, missing, workers=workers)
    return FetchResult(paths=paths, downloaded=len(missing), reused=len(objects) - len(missing))


def _is_cached(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def decode_image(path: str | Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 (height, width, channels), resized bilinearly to `size` (h, w).

    Raises OSError (or another Pillow error) for content that is not a complete image.
    """
    height, width = size
    mode = "RGB" if channels == 3 else "L"
    # verify() checks the structure without decoding; it leaves the file unusable, hence reopen.
    with Image.open(path) as probe:
        probe.verify()
    with Image.open(path) as image:
        # For JPEG, let the decoder scale down by a power of two first: much less work.
        image.draft(mode, (width, height))
        image.load()
        if image.mode in {"P", "PA", "LA", "RGBA", "I;16", "I", "F"} and mode == "RGB":
            image = image.convert("RGBA").convert("RGB")
        elif image.mode != mode:
            image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(height, width, channels)


def decode_all(
    paths: Sequence[Path],
    size: tuple[int, int],
    channels: int,
    *,
    workers: int | None = None,
) -> DecodeResult:
    """Decode every path in parallel into one array; failures are left out and reported.

    TODO: keep decoded arrays in the cache too, so that a restart skips decoding as well.
    """
    height, width = size
    images = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    failed: dict[int, str] = {}

    def decode_into(position: int) -> None:
        try:
            images[position] = decode_image(paths[position], size, channels)
        except UnidentifiedImageError:
            # Its message names the cache file, which means nothing to the user.
            failed[position] = "not a recognised image format"
        except _DECODE_ERRORS as error:
            failed[position] = f"{type(error).__name__}: {error}"

    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(decode_into, range(len(paths))))
    kept = [position for position in range(len(paths)) if position not in failed]
    if failed:
        images = images[kept]
    return DecodeResult(images=images, kept=kept, failed=failed)
