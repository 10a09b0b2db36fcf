"""End to end: a TrainingJob applied to the emulator trains for real and ends Succeeded.

A small test "kubelet" stands in for the nodes: for each worker pod the operator creates, it runs
the pod's container command (`aimass train --from-env`) as a local process with the pod's env,
the S3 credentials resolved from the Secret the pod references, TF_CONFIG's DNS names mapped to
loopback ports, and the Kubernetes API pointed at the emulator (so the chief's progress reports
land in the job's status). It reports pod phases back as a kubelet would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aimass import spec, storage
from aimass.seaweed import SeaweedServer
from aimass_operator.metrics import OperatorMetrics
from support.harness import NAMESPACE, SECRET_NAME, apply, eventually, running_operator
from support.images import make_image_folder, upload_folder
from support.kube import JOBS, PODS, SECRETS, ClusterEmulator, running_status

AIMASS = str(Path(sys.executable).parent / "aimass")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Kubelet:
    """Runs each worker pod of the namespace as a local process and reports its phase."""

    def __init__(self, cluster: ClusterEmulator, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.ports: dict[tuple[str, str], list[int]] = {}  # (job, gang) -> loopback ports
        self.processes: dict[str, asyncio.subprocess.Process] = {}  # pod uid -> process
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = workdir / "token"
        self.token.write_text("test-token")

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            while True:
                for pod in self.cluster.live(PODS, NAMESPACE).values():
                    uid = pod["metadata"]["uid"]
                    if uid not in self.processes:
                        self.processes[uid] = await self._start(pod)
                        tasks.append(asyncio.create_task(self._watch(pod, self.processes[uid])))
                await asyncio.sleep(0.2)
        finally:
            for process in self.processes.values():
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _secret_value(self, ref: dict[str, Any]) -> str | None:
        found = self.cluster.live(SECRETS, NAMESPACE).get(ref["name"])
        data = (found or {}).get("data") or {}
        value = data.get(ref["key"])
        return base64.b64decode(value).decode() if value is not None else None

    def _env(self, pod: dict[str, Any]) -> dict[str, str]:
        labels = pod["metadata"]["labels"]
        job, gang = labels["aimass.dev/job-name"], labels["aimass.dev/restart-count"]
        container = pod["spec"]["containers"][0]
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif (value := self._secret_value(item["valueFrom"]["secretKeyRef"])) is not None:
                env[item["name"]] = value
        config = json.loads(env["TF_CONFIG"])
        workers = config["cluster"]["worker"]
        ports = self.ports.setdefault((job, gang), [free_port() for _ in workers])
        config["cluster"]["worker"] = [f"127.0.0.1:{port}" for port in ports]
        cache = self.workdir / pod["metadata"]["name"] / gang
        env.update(
            TF_CONFIG=json.dumps(config),
            AIMASS_CACHE_DIR=str(cache),
            AIMASS_KUBE_API=str(self.cluster.url).rstrip("/"),
            AIMASS_KUBE_TOKEN_FILE=str(self.token),
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        return env

    async def _start(self, pod: dict[str, Any]) -> asyncio.subprocess.Process:
        command = list(pod["spec"]["containers"][0]["command"])
        command[0] = AIMASS if command[0] == "aimass" else command[0]
        process = await asyncio.create_subprocess_exec(
            *command, env=self._env(pod), cwd=self.workdir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        await self.cluster.set_pod_status(NAMESPACE, pod["metadata"]["name"], running_status())
        return process

    async def _watch(self, pod: dict[str, Any], process: asyncio.subprocess.Process) -> None:
        output, _ = await process.communicate()
        name = pod["metadata"]["name"]
        if name not in self.cluster.live(PODS, NAMESPACE):
            return
        code = process.returncode or 0
        tail = output.decode(errors="replace")[-2000:]
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                      "message": tail}
        await self.cluster.set_pod_status(NAMESPACE, name, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}],
        })


@contextlib.asynccontextmanager
async def kubelet(cluster: ClusterEmulator, workdir: Path) -> AsyncIterator[Kubelet]:
    node = Kubelet(cluster, workdir)
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.slow
@pytest.mark.usefixtures("secret")
async def test_a_two_worker_job_trains_from_apply_to_succeeded_with_live_progress(
    cluster: ClusterEmulator, metrics: OperatorMetrics, s3_server: SeaweedServer, bucket: str,
    tmp_path: Path,
) -> None:
    client = storage.make_client(spec.Storage(endpoint=s3_server.endpoint))
    make_image_folder(tmp_path / "images", ("circle", "square"), per_class=8, size=16)
    upload_folder(client, tmp_path / "images", f"s3://{bucket}/data/train")
    job = {
        "apiVersion": spec.API_VERSION,
        "kind": spec.KIND,
        "metadata": {"name": "tiny", "namespace": NAMESPACE},
        "spec": {
            "dataset": {"train": f"s3://{bucket}/data/train", "imageSize": [16, 16],
                        "colorMode": "grayscale"},
            "model": {"architecture": "resnet-small", "blocks": [1], "filters": [8]},
            "training": {"epochs": 1, "batchSize": 8, "seed": 1},
            "output": {"uri": f"s3://{bucket}/models/tiny"},
            "storage": {"endpoint": s3_server.endpoint, "credentialsSecret": SECRET_NAME},
            "workers": 2,
            "runPolicy": {"backoffLimit": 0},
        },
    }
    seen_progress: list[dict[str, Any]] = []

    def finished() -> str | None:
        status = cluster.live(JOBS, NAMESPACE).get("tiny", {}).get("status") or {}
        if status.get("phase") in (None, "Pending", "Running") and status.get("progress"):
            seen_progress.append(dict(status["progress"]))
        return status.get("phase") if status.get("phase") in ("Succeeded", "Failed") else None

    async with running_operator(cluster, metrics), kubelet(cluster, tmp_path / "node"):
        async with aiohttp.ClientSession(base_url=str(cluster.url)) as api:
            await apply(api, job)
            phase = await eventually(finished, timeout=400, what="the job finishing")

    status = cluster.live(JOBS, NAMESPACE)["tiny"]["status"]
    assert phase == "Succeeded", json.dumps(status.get("conditions"), indent=1)
    assert status["modelURI"] == f"s3://{bucket}/models/tiny/model.keras"
    assert storage.read_bytes(client, status["modelURI"])
    assert seen_progress, "no progress was seen in the status while the job ran"
    assert status["progress"]["epochs"] == 1
    assert status["epochProgress"] == "1/1"
