"""Our input pipeline against `ImageDataGenerator.flow_from_directory`, over the same images.

Both read the same PNG folders on local disk (Fashion-MNIST from Debian's dataset-fashion-mnist
when installed, else synthetic shapes), resize to 64 and to 224 px, apply the same random
transforms (rotation, shifts, shear, zoom, horizontal flip, brightness; ImageDataGenerator has
no contrast, so neither side uses it) and the same rescale, in batches of 32.

Ours runs twice: with the default chain of Keras preprocessing layers, and with the fused
warp (`augmentation.fusedWarp: true`). Three figures each, with the ratio to ImageDataGenerator:
- img/s: images per second over the epochs after the first (what a long run sees);
- img/CPU-s: images per CPU-second of all threads - the same on a busy machine, and what
  matters when the input pipeline shares the CPU with training;
- 1st epoch: including everything before it - ours decodes and resizes every file once into
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
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
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


@dataclass(frozen=True)
class Rates:
    """Images per second: steady (wall clock), per CPU-second (all threads), first epoch."""

    steady: float
    per_cpu: float
    first: float


def _timed(batches: Iterator, count: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (all threads of this process) and images for `count` batches."""
    start, cpu, images = time.perf_counter(), time.process_time(), 0
    for _ in range(count):
        images += int(next(batches)[0].shape[0])
    return time.perf_counter() - start, time.process_time() - cpu, images


def _rates(batches: Iterator, steps: int, epochs: int, start: float) -> Rates:
    """Time the first epoch (from `start`), then `epochs` more."""
    _, _, images = _timed(batches, steps)
    first = images / (time.perf_counter() - start)
    seconds, cpu, images = _timed(batches, steps * epochs)
    return Rates(steady=images / seconds, per_cpu=images / cpu, first=first)


def ours(root: Path, size: int, epochs: int, implementation: str) -> Rates:
    """Our pipeline, after decoding every file once (timed as part of the first epoch)."""
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
    dataset, steps, _ = train_dataset(prepared, spec, implementation=implementation)
    return _rates(iter(dataset.repeat()), steps, epochs, start)


def baseline(root: Path, size: int, epochs: int) -> Rates:
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
    return _rates(iter(generator), len(generator), epochs, start)


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
        header = (f"{'size':>4}  {'pipeline':<31} {'img/s':>8} {'x IDG':>6}  "
                  f"{'img/CPU-s':>9} {'x IDG':>6}  {'1st epoch img/s':>15} {'x IDG':>6}")
        lines = [header, "-" * len(header)]
        for size in args.sizes:
            runs = {
                "ImageDataGenerator": baseline(root, size, args.epochs),
                "aimass (keras layers, default)": ours(root, size, args.epochs, "layers"),
                "aimass (fusedWarp)": ours(root, size, args.epochs, "fused"),
            }
            base = runs["ImageDataGenerator"]
            for name, rates in runs.items():
                lines.append(
                    f"{size:>4}  {name:<31} {rates.steady:>8.0f} "
                    f"{rates.steady / base.steady:>5.1f}x  {rates.per_cpu:>9.0f} "
                    f"{rates.per_cpu / base.per_cpu:>5.1f}x  {rates.first:>15.0f} "
                    f"{rates.first / base.first:>5.1f}x"
                )
        print()
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
