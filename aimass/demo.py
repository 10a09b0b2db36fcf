"""`make demo`: does pretraining help when a new task has only 100 images per class?

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package (installed here when missing and
running as root). Its idx files become PNG class folders under `.aimass/fashion-mnist/` and go into
S3 (the embedded SeaweedFS unless AWS_ENDPOINT_URL is set): classes 0-4 for pretraining, classes
5-9 with 100 training images each for fine-tuning, each with its own validation images.

Then three TrainingJobs from `examples/` run through `aimass train -f`:
pretrain the small ResNet on classes 0-4; fine-tune it on classes 5-9; train the same small job
from scratch with the same budget. The two validation accuracies are printed side by side, as
measured. A rerun reuses the uploads and the finished jobs (the trainer skips a succeeded job).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aimass import cli, spec

PACKAGE = "dataset-fashion-mnist"
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUCKET = "fashion-mnist"

console = Console()


@dataclass(frozen=True)
class Split:
    """A set of class folders cut from one idx file: `per_class` images of each class."""

    name: str  # e.g. "pretrain/train": the local folder and the S3 prefix
    source: str  # "train" or "t10k"
    classes: tuple[int, ...]
    per_class: int


SPLITS = (
    Split("pretrain/train", "train", (0, 1, 2, 3, 4), 600),
    Split("pretrain/validation", "t10k", (0, 1, 2, 3, 4), 100),
    # NB: the fine-tuning images come from the training file, the validation ones from t10k, so
    # no validation image was ever seen by either job.
    Split("finetune/train", "train", (5, 6, 7, 8, 9), 100),
    Split("finetune/validation", "t10k", (5, 6, 7, 8, 9), 200),
)
JOBS = ("pretrain-fashion.yaml", "finetune-fashion.yaml", "scratch-fashion.yaml")


def ensure_fashion_mnist(source_dir: Path = SOURCE_DIR) -> Path:
    """The folder of the four idx files, installing the Debian package if they are missing."""
    if (source_dir / "train-images-idx3-ubyte.gz").exists():
        return source_dir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            f"Fashion-MNIST is not in {source_dir}. Install it with "
            f"`sudo apt-get install -y {PACKAGE}` and run the demo again."
        )
    console.print(f"installing {PACKAGE} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", PACKAGE]):
        result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
        if result.returncode != 0:
            raise SystemExit(
                f"`{' '.join(command)}` failed with exit code {result.returncode}; install "
                f"{PACKAGE} by hand and run the demo again"
            )
    if not (source_dir / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"{PACKAGE} is installed but {source_dir} holds no idx files")
    return source_dir


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed) as a uint8 array: (n,) labels or (n, rows, cols) images."""
    data = gzip.decompress(path.read_bytes())
    # The header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then
    # one big-endian uint32 per dimension.
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not a uint8 idx file (header {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_split(split: Split, images: np.ndarray, labels: np.ndarray, root: Path) -> int:
    """PNG files `root/<split>/<class>/<index>.png`: the first `per_class` of each class."""
    from PIL import Image

    written = 0
    for label in split.classes:
        folder = root / split.name / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(labels == label)[: split.per_class]
        for index in indices:
            Image.fromarray(images[index], mode="L").save(folder / f"{index:05d}.png")
            written += 1
    return written


def prepare_images(source_dir: Path, root: Path) -> None:
    """Write every split's PNG folders unless a finished earlier run left them there."""
    marker = root / ".complete"
    wanted = repr(SPLITS)
    if marker.exists() and marker.read_text() == wanted:
        console.print(f"images: reusing {root}")
        return
    shutil.rmtree(root, ignore_errors=True)
    arrays = {
        source: (
            read_idx(source_dir / f"{source}-images-idx3-ubyte.gz"),
            read_idx(source_dir / f"{source}-labels-idx1-ubyte.gz"),
        )
        for source in ("train", "t10k")
    }
    for split in SPLITS:
        images, labels = arrays[split.source]
        count = write_split(split, images, labels, root)
        console.print(f"images: {count} PNG files in {root / split.name}")
    marker.write_text(wanted)


def upload_images(root: Path) -> None:
    """Upload each split to s3://fashion-mnist/<split>, unless S3 already holds all its files."""
    from aimass import storage

    client = storage.make_client(None)
    storage.ensure_bucket(client, BUCKET)
    for split in SPLITS:
        uri = f"s3://{BUCKET}/{split.name}"
        local = sum(1 for path in (root / split.name).rglob("*.png"))
        if len(storage.list_objects(client, uri)) == local:
            console.print(f"upload: {uri} already holds {local} images")
            continue
        count = storage.upload_dir(client, root / split.name, uri)
        console.print(f"upload: {count} images to {uri}")


def validation_curve(job: spec.TrainingJob) -> list[float | None]:
    """The validation accuracy after each epoch, from the job's metrics.json."""
    from aimass import storage

    metrics = cli.read_metrics(storage.make_client(job.spec.storage), job.spec.output.uri)
    return [entry.get("val_accuracy") for entry in metrics.get("history", [])]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_comparison(finetune: spec.TrainingJob, scratch: spec.TrainingJob, seconds: float) -> None:
    """Validation accuracy of the two jobs after every epoch, the last row being the result."""
    curves = {job.metadata.name: validation_curve(job) for job in (finetune, scratch)}
    table = Table(
        title=f"Classes 5-9, {SPLITS[2].per_class} training images per class: validation "
        f"accuracy on {SPLITS[3].per_class * 5} held-out images",
        title_justify="left",
    )
    table.add_column("epoch", justify="right")
    for name in curves:
        table.add_column(name, justify="right")
    epochs = max(len(curve) for curve in curves.values())
    for epoch in range(epochs):
        cells = [
            _percent(curve[epoch] if epoch < len(curve) else None) for curve in curves.values()
        ]
        table.add_row(str(epoch + 1), *cells, end_section=epoch == epochs - 2)
    console.print(table)
    final = {name: curve[-1] if curve else None for name, curve in curves.items()}
    console.print(
        "final validation accuracy: "
        + ", ".join(f"{name} {_percent(value)}" for name, value in final.items()),
        highlight=False,
    )
    console.print(f"demo wall time: {seconds:.0f} s")


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = Path(args.work_dir)

    source_dir = ensure_fashion_mnist()
    prepare_images(source_dir, work / "fashion-mnist")

    # One embedded server for the uploads and all three jobs, under the same rules as
    # `aimass train`: it is skipped when AWS_ENDPOINT_URL points elsewhere.
    with cli.s3_session(None, work / "s3"):
        upload_images(work / "fashion-mnist")
        for name in JOBS:
            console.rule(f"aimass train -f examples/{name}")
            train = ["train", "-f", str(EXAMPLES / name), "--cache-dir", str(work / "cache")]
            code = cli.main([*train, *(["--debug"] if args.debug else [])])
            if code != 0:
                console.print(f"[red]examples/{name} failed with exit code {code}[/red]")
                return code
        finetune, scratch = (spec.load_job(EXAMPLES / name) for name in JOBS[1:])
        print_comparison(finetune, scratch, time.monotonic() - started)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aimass.demo", description=__doc__)
    parser.add_argument("--work-dir", default=".aimass", help="local folder (%(default)s)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    args.command = "demo"
    return cli.run_handler(run_demo, args)


if __name__ == "__main__":
    sys.exit(main())
