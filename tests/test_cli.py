"""The `aimass` command end to end, run as a subprocess against the suite's SeaweedFS server.

Training here is tiny on purpose (16 px grayscale, one stage of eight filters, one epoch): what is
tested is the command, its exit codes and what lands in S3, not how well a model learns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aimass import demo, spec, storage
from aimass.exitcodes import ExitCode
from aimass.seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
TINY_CLASSES = (1, 7, 8)  # trouser, sneaker, bag: distinct enough to learn in one epoch


def aimass(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> (
        subprocess.CompletedProcess[str]):
    """Run the CLI as users do, in a fresh interpreter, bounded by `timeout` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "aimass.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def job_document(bucket: str, **spec_changes: object) -> dict:
    """A tiny, valid TrainingJob reading s3://<bucket>/data/{train,validation}."""
    document = {
        "apiVersion": spec.API_VERSION,
        "kind": spec.KIND,
        "metadata": {"name": "tiny"},
        "spec": {
            "dataset": {
                "train": f"s3://{bucket}/data/train",
                "validation": f"s3://{bucket}/data/validation",
                "imageSize": [16, 16],
                "colorMode": "grayscale",
            },
            "model": {"architecture": "resnet-small", "blocks": [1], "filters": [8]},
            "training": {"epochs": 1, "batchSize": 16, "seed": 1},
            "output": {"uri": f"s3://{bucket}/out"},
        },
    }
    document["spec"].update(spec_changes)
    return document


def write_job(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def tiny_dataset(root: Path) -> Path:
    """A few dozen real images per class: Fashion-MNIST when installed, else synthetic ones."""
    if (demo.SOURCE_DIR / "train-images-idx3-ubyte.gz").exists():
        for name, source, count in (("train", "train", 24), ("validation", "t10k", 8)):
            images = demo.read_idx(demo.SOURCE_DIR / f"{source}-images-idx3-ubyte.gz")
            labels = demo.read_idx(demo.SOURCE_DIR / f"{source}-labels-idx1-ubyte.gz")
            demo.write_split(demo.Split(name, source, TINY_CLASSES, count), images, labels, root)
        return root

    from support.images import make_image_folder

    make_image_folder(root / "train", per_class=24, size=16)
    make_image_folder(root / "validation", per_class=8, size=16, seed=1)
    return root


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_example_is_a_valid_training_job(path: Path) -> None:
    job = spec.load_job(path)

    assert job.metadata.name == path.stem


def test_the_examples_include_the_demo_jobs_and_a_gpu_job() -> None:
    names = {path.name for path in EXAMPLES}

    assert set(demo.JOBS) <= names
    assert spec.load_job(ROOT / "examples/flowers-resnet50.yaml").spec.worker.resources.gpus == 1


def test_fine_tune_and_scratch_jobs_get_the_same_budget() -> None:
    finetune = spec.load_job(ROOT / "examples/finetune-fashion.yaml").spec
    scratch = spec.load_job(ROOT / "examples/scratch-fashion.yaml").spec

    assert finetune.dataset == scratch.dataset
    assert finetune.augmentation == scratch.augmentation
    assert finetune.training == scratch.training
    assert finetune.model.weights.startswith("s3://") and scratch.model.weights == "none"


def test_validate_accepts_the_examples_without_importing_tensorflow() -> None:
    files = [arg for path in EXAMPLES for arg in ("-f", str(path))]
    check = (
        "import sys; from aimass.cli import main; code = main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules, 'validate imported TensorFlow'; sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, "validate", *files],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )

    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout.count("valid TrainingJob") == len(EXAMPLES)


def test_validate_names_each_bad_field_and_exits_2(tmp_path: Path) -> None:
    document = job_document("any-bucket", training={"epochs": 0, "batchSize": 16})
    document["spec"]["dataset"]["colorMode"] = "sepia"

    result = aimass("validate", "-f", str(write_job(tmp_path / "job.yaml", document)))

    assert result.returncode == ExitCode.INVALID_SPEC
    assert "spec.training.epochs" in result.stderr
    assert "spec.dataset.colorMode" in result.stderr and "sepia" in result.stderr


def test_validate_takes_several_files_after_one_flag_and_a_missing_one_exits_2(
    tmp_path: Path,
) -> None:
    result = aimass("validate", "-f", *map(str, EXAMPLES), str(tmp_path / "missing.yaml"))

    assert result.returncode == ExitCode.INVALID_SPEC
    assert result.stdout.count("valid TrainingJob") == len(EXAMPLES)
    assert "missing.yaml: cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_snake_case_field_names_are_rejected_as_the_cluster_would(tmp_path: Path) -> None:
    document = job_document("any-bucket")
    document["spec"]["dataset"]["image_size"] = document["spec"]["dataset"].pop("imageSize")

    result = aimass("validate", "-f", str(write_job(tmp_path / "job.yaml", document)))

    assert result.returncode == ExitCode.INVALID_SPEC
    assert "spec.dataset.image_size" in result.stderr


def test_data_upload_to_a_bad_uri_exits_2_before_starting_any_server(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()

    result = aimass("data", "upload", str(tmp_path), "s3://Bad_Bucket/x",
                    "--data-dir", str(tmp_path / "store"))

    assert result.returncode == ExitCode.INVALID_SPEC
    assert "'s3://Bad_Bucket/x'" in result.stderr
    assert not (tmp_path / "store").exists()


def test_leading_options_do_not_stop_the_operator_commands_from_being_forwarded() -> None:
    result = aimass("--debug", "crd")

    assert result.returncode == ExitCode.OK, result.stderr
    assert "kind: CustomResourceDefinition" in result.stdout


def test_train_with_an_invalid_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    document = job_document("any-bucket")
    document["spec"]["model"]["dropout"] = 1.5

    result = aimass("train", "-f", str(write_job(tmp_path / "job.yaml", document)))

    assert result.returncode == ExitCode.INVALID_SPEC
    assert "spec.model.dropout" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_from_env_without_a_job_exits_2() -> None:
    result = aimass("train", "--from-env", env={"AIMASS_JOB": ""})

    assert result.returncode == ExitCode.INVALID_SPEC
    assert "AIMASS_JOB" in result.stderr


def test_train_on_a_missing_dataset_exits_3_naming_the_prefix(
    bucket: str, s3_env: dict[str, str]
) -> None:
    document = job_document(bucket)

    result = aimass("train", "--from-env", env={"AIMASS_JOB": json.dumps(document)},
                    timeout=120)

    assert result.returncode == ExitCode.DATASET_ERROR, result.stderr
    assert f"s3://{bucket}/data/train" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_upload_puts_every_file_in_s3(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    root = tiny_dataset(tmp_path / "data")
    expected = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.png"))

    result = aimass("data", "upload", str(root), f"s3://{bucket}/data")

    assert result.returncode == ExitCode.OK, result.stderr
    assert f"uploaded {len(expected)} files" in result.stdout
    keys = [info.key for info in storage.list_objects(storage.make_client(), f"s3://{bucket}/data")]
    assert sorted(key.removeprefix("data/") for key in keys) == expected


@pytest.mark.slow
def test_data_upload_without_an_endpoint_fills_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_dataset(tmp_path / "data")
    store = tmp_path / "s3"
    no_endpoint = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}

    result = subprocess.run(
        [sys.executable, "-m", "aimass.cli", "data", "upload", str(root / "train"),
         "s3://embedded/train", "--data-dir", str(store)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=no_endpoint,
    )

    assert result.returncode == ExitCode.OK, result.stderr
    assert "embedded SeaweedFS" in result.stderr
    # The store outlives the command: a new server on the same folder still holds the files.
    with SeaweedServer(store) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        found = storage.list_objects(storage.make_client(), "s3://embedded/train")
    assert len(found) == len(list((root / "train").rglob("*.png")))


@pytest.mark.slow
def test_train_end_to_end_writes_the_model_and_a_summary(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    root = tiny_dataset(tmp_path / "data")
    assert aimass("data", "upload", str(root), f"s3://{bucket}/data").returncode == 0
    job = write_job(tmp_path / "job.yaml", job_document(bucket))

    result = aimass("train", "-f", str(job), "--cache-dir", str(tmp_path / "cache"), timeout=300)

    assert result.returncode == ExitCode.OK, result.stderr
    assert "val accuracy" in result.stdout and f"s3://{bucket}/out/model.keras" in result.stdout
    client = storage.make_client()
    written = {info.key for info in storage.list_objects(client, f"s3://{bucket}/out")}
    assert {"out/model.keras", "out/labels.json", "out/metrics.json"} <= written
    labels = json.loads(storage.read_bytes(client, f"s3://{bucket}/out/labels.json") or b"null")
    assert labels is not None


def test_a_worker_pod_also_reports_progress_to_its_training_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aimass import cli

    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    monkeypatch.setenv("AIMASS_JOB_NAME", "tiny")
    monkeypatch.setenv("AIMASS_JOB_NAMESPACE", "ml")
    monkeypatch.setenv("AIMASS_KUBE_API", "http://127.0.0.1:9")
    monkeypatch.setenv("AIMASS_KUBE_TOKEN_FILE", str(token))
    monkeypatch.delenv("TF_CONFIG", raising=False)

    in_pod = [type(reporter).__name__ for reporter in cli.build_reporter().reporters]
    token.unlink()
    no_token = [type(reporter).__name__ for reporter in cli.build_reporter().reporters]

    assert in_pod == ["RichProgress", "KubeProgressReporter"]
    assert no_token == ["RichProgress"]


def test_the_terminal_reporter_prints_each_epoch_and_the_model() -> None:
    import io

    from rich.console import Console

    from aimass.console import RichProgress
    from aimass.progress import EpochMetrics

    buffer = io.StringIO()
    reporter = RichProgress(Console(file=buffer, width=200))

    reporter.on_train_begin(epochs=2, initial_epoch=1, steps_per_epoch=3)
    for step in (1, 2, 3):
        reporter.on_batch_end(epoch=2, step=step, logs={"loss": 0.5, "accuracy": 0.75})
    reporter.on_epoch_end(EpochMetrics(epoch=2, epochs=2, loss=0.5, accuracy=0.75,
                                       val_accuracy=0.625))
    reporter.on_train_end(model_uri="s3://b/out/model.keras", final={"loss": 0.5})

    text = buffer.getvalue()
    assert "1 of 2 epochs already done" in text
    assert "epoch 2/2  loss 0.5000  accuracy 0.7500  val_accuracy 0.6250" in text
    assert "model written to s3://b/out/model.keras" in text


def test_the_field_reference_lists_every_field_of_the_spec() -> None:
    from pydantic import BaseModel

    from aimass import docs

    paths = [row[0] for row in docs.rows()]

    def names(model: type[BaseModel]) -> set[str]:
        found = set()
        for name, field in model.model_fields.items():
            found.add(field.alias or name)
            annotation = field.annotation
            for inner in getattr(annotation, "__args__", ()) + (annotation,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    found |= names(inner)
        return found

    leaves = {path.rsplit(".", 1)[-1].removesuffix("[]") for path in paths}
    assert names(spec.TrainingJobSpec) <= leaves
    assert "spec.augmentation.adversarial.epsilon" in paths
    assert len(paths) == len(set(paths))


def test_the_readme_field_reference_is_the_generated_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aimass.docs"], capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (ROOT / "README.md").read_text(), (
        "README.md's TrainingJob reference is stale: paste `python -m aimass.docs` into it"
    )
