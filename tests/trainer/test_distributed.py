"""Two workers on loopback, each its own process with its own TF_CONFIG, train one job in sync
with MultiWorkerMirroredStrategy on this CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer_jobs import tiny_job, upload_shapes

from aimass import storage

WORKER = Path(__file__).with_name("two_worker_job.py")
# Both workers together, TensorFlow's start included, on two busy cores.
TIMEOUT = 300


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_workers(job_path: Path, tmp_path: Path, env: dict[str, str]) -> list[Any]:
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        worker_env = {**os.environ, **env, "TF_CONFIG": json.dumps(tf_config)}
        worker_env["PYTHONPATH"] = os.pathsep.join(sys.path)
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(job_path), str(tmp_path / f"cache{index}"),
                 str(tmp_path / f"result{index}.json")],
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def wait_all(processes: list[Any]) -> list[str]:
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    return logs


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)
def test_two_workers_on_loopback_train_in_sync_and_only_the_chief_writes(
    s3_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    client = storage.make_client()
    dataset = upload_shapes(client, bucket, tmp_path / "images", per_class=8)
    output = f"s3://{bucket}/out"
    job = tiny_job(dataset, output, training={"epochs": 2, "batchSize": 6, "seed": 5})
    job_path = tmp_path / "job.json"
    job_path.write_text(json.dumps(job.model_dump(mode="json", by_alias=True)))

    logs = wait_all(start_workers(job_path, tmp_path, s3_env))

    for index, process_log in enumerate(logs):
        assert (tmp_path / f"result{index}.json").exists(), process_log[-3000:]
    chief, other = (json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2))
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["weights"] == pytest.approx(other["weights"], rel=1e-6)
    assert [e["val_loss"] for e in chief["history"]] == pytest.approx(
        [e["val_loss"] for e in other["history"]], rel=1e-6
    )
    assert len(chief["history"]) == 2
    assert chief["model_uri"] == f"{output}/model.keras" and other["model_uri"] is None
    assert storage.read_bytes(client, f"{output}/metrics.json") is not None
