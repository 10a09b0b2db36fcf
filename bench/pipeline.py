"""Our input pipeline against `ImageDataGenerator.flow_from_directory`, over the same images.

Both read the same PNG folders on local disk (Fashion-MNIST from Debian's dataset-fashion-mnist
when installed, else synthetic shapes), resize to 64 and to 224 px, apply the same random
transforms (rotation, shifts, shear, zoom, horizontal flip, brightness; ImageDataGenerator has
no contrast, so neither side uses it) and the same rescale, in batches of 32.

Two figures per side, in images per second:
- steady: epochs after the first (what a long training run sees);
- first epoch: including everything before it - ours decodes and resizes every file once into
  memory (`aimass_trainer.cache.decode_all`, what the trainer does after fetching from S3),
  ImageDataGenerator scans the folders.

    python -m bench.pipeline [--per-class 50] [--sizes 64 224] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from aimass.spec import Augmentation, parse_spec  # noqa: E402
from aimass_trainer import cache  # noqa: E402
from aimass_trainer.data import PreparedData, Split, train_dataset  # noqa: E402

BATCH = 32
FASHION = Path("/usr/share/datasets/fashion-mnist")
AUGMENTATION = Augmentation(
    rescale=1.0 / 255.0,
    rotation_range=15,
    width_shift_range=0.1,
    height_shift_range=0.1,
    shear_range=10,
    zoom_range=0.1,
    horizontal_flip=True,
    brightness_range=0.2,
)


def write_images(root: Path, per_class: int) -> str:
    """PNG class folders under `root`; returns where the pixels came from."""
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        from aimass.demo import read_idx

        images = read_idx(FASHION / "train-images-idx3-ubyte.gz")
        labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")
        for label in range(10):
            folder = root / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(images[index]).convert("RGB").save(folder / f"{index}.png")
        return f"Fashion-MNIST ({10 * per_class} PNGs, 28 px, as RGB)"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.images import make_image_folder

    make_image_folder(root, [f"class{i}" for i in range(10)], per_class=per_class, size=96)
    return f"synthetic shapes ({10 * per_class} PNGs, 96 px)"


def _timed(batches: Iterator, count: int) -> tuple[float, int]:
    """Seconds and images for `count` batches."""
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += int(next(batches)[0].shape[0])
    return time.perf_counter() - start, images


def ours(root: Path, size: int, epochs: int) -> tuple[float, float]:
    """(first-epoch rate including decoding, steady rate) for our pipeline."""
    start = time.perf_counter()
    paths = sorted(root.rglob("*.png"))
    classes = sorted({path.parent.name for path in paths})
    decoded = cache.decode_all(paths, (size, size), 3)
    labels = np.array([classes.index(path.parent.name) for path in paths], dtype=np.int32)
    prepared = PreparedData(
        class_names=tuple(classes),
        train=Split(decoded.images, labels, tuple(str(path) for path in paths)),
        validation=None,
        image_size=(size, size),
        channels=3,
    )
    spec = parse_spec({
        "dataset": {"train": "s3://bench/train", "imageSize": [size, size]},
        "training": {"batchSize": BATCH, "seed": 1},
        "augmentation": AUGMENTATION.model_dump(by_alias=True),
        "output": {"uri": "s3://bench/out"},
    })
    dataset, steps, _ = train_dataset(prepared, spec)
    batches = iter(dataset.repeat())
    seconds, images = _timed(batches, steps)
    first = images / (time.perf_counter() - start)
    seconds, images = _timed(batches, steps * epochs)
    return first, images / seconds


def baseline(root: Path, size: int, epochs: int) -> tuple[float, float]:
    """The same for ImageDataGenerator.flow_from_directory."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    brightness = AUGMENTATION.brightness_range
    start = time.perf_counter()
    generator = ImageDataGenerator(
        rescale=AUGMENTATION.rescale,
        rotation_range=AUGMENTATION.rotation_range,
        width_shift_range=AUGMENTATION.width_shift_range,
        height_shift_range=AUGMENTATION.height_shift_range,
        shear_range=AUGMENTATION.shear_range,
        zoom_range=AUGMENTATION.zoom_range,
        horizontal_flip=AUGMENTATION.horizontal_flip,
        brightness_range=(1.0 - brightness, 1.0 + brightness),
    ).flow_from_directory(
        str(root), target_size=(size, size), batch_size=BATCH, class_mode="sparse", seed=1
    )
    steps = len(generator)
    batches = iter(generator)
    seconds, images = _timed(batches, steps)
    first = images / (time.perf_counter() - start)
    seconds, images = _timed(batches, steps * epochs)
    return first, images / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50, help="images per class (10 classes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed after the first")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aimass-bench-") as folder:
        root = Path(folder) / "images"
        source = write_images(root, args.per_class)
        print(f"images: {source}; batch {BATCH}; {os.cpu_count()} CPUs; "
              f"{args.epochs} timed epochs after the first", flush=True)
        header = (f"{'size':>5} | {'ImageDataGenerator':>18} | {'aimass tf.data':>14} | "
                  f"{'ratio':>6} | {'first epoch: IDG':>16} | {'ours':>8} | {'ratio':>6}")
        rows = []
        for size in args.sizes:
            base_first, base_steady = baseline(root, size, args.epochs)
            our_first, our_steady = ours(root, size, args.epochs)
            rows.append(
                f"{size:>5} | {base_steady:>12.0f} img/s | {our_steady:>8.0f} img/s | "
                f"{our_steady / base_steady:>5.1f}x | {base_first:>10.0f} img/s | "
                f"{our_first:>8.0f} | {our_first / base_first:>5.1f}x"
            )
            print(rows[-1], flush=True)
        print()
        print(header)
        print("-" * len(header))
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
