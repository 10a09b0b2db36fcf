"""`aimass operator`'s settings: flags, their environment variables, and what reaches kopf."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from support.harness import NAMESPACE, apply, eventually

from aimass_operator import main as entry
from support.kube import JOBS, ClusterEmulator


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What main() hands to kopf.run and to the metrics server, instead of running them."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(entry, "serve", lambda metrics, port: seen.update(metrics_port=port))
    monkeypatch.setattr(entry, "configure_logging",
                        lambda **kwargs: seen.update(logging=kwargs))
    for name in ("AIMASS_NAMESPACES", "AIMASS_TRAINER_IMAGE", "AIMASS_METRICS_PORT",
                 "AIMASS_LIVENESS", "AIMASS_LOG_FORMAT", "AIMASS_SWEEP_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_by_default_the_operator_watches_the_whole_cluster_standalone(
    launched: dict[str, Any],
) -> None:
    assert entry.main([]) == 0

    assert launched["clusterwide"] is True and launched["namespaces"] == []
    assert launched["standalone"] is True
    assert launched["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"
    assert launched["metrics_port"] == 8080
    assert launched["memo"].config.default_image == entry.DEFAULT_IMAGE
    assert launched["logging"] == {"log_format": "text", "verbose": False}


def test_the_environment_configures_namespaces_image_and_json_logs(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_NAMESPACES", "ml, research")
    monkeypatch.setenv("AIMASS_TRAINER_IMAGE", "registry.example/aimass:1.2")
    monkeypatch.setenv("AIMASS_LOG_FORMAT", "json")
    monkeypatch.setenv("AIMASS_METRICS_PORT", "0")

    entry.main([])

    assert launched["clusterwide"] is False
    assert launched["namespaces"] == ["ml", "research"]
    assert launched["memo"].config.default_image == "registry.example/aimass:1.2"
    assert launched["logging"]["log_format"] == "json"
    assert "metrics_port" not in launched


def test_flags_win_over_the_environment(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_TRAINER_IMAGE", "from-env:1")

    entry.main(["--image", "from-flag:2", "-n", "ml", "--liveness", "", "--sweep-interval", "3"])

    assert launched["memo"].config.default_image == "from-flag:2"
    assert launched["memo"].config.sweep_interval == 3
    assert launched["namespaces"] == ["ml"]
    assert launched["liveness_endpoint"] is None


def test_a_bad_sweep_interval_is_refused_naming_the_value(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_SWEEP_INTERVAL", "soon")

    with pytest.raises(SystemExit, match="AIMASS_SWEEP_INTERVAL.*'soon'"):
        entry.main([])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def answers(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as response:
            return await response.text() if response.status == 200 else None
    except aiohttp.ClientConnectionError:
        return None


async def test_aimass_operator_logs_in_with_a_kubeconfig_and_serves_probes_and_metrics(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": str(cluster.url).rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    metrics_port, liveness_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "AIMASS_METRICS_PORT": str(metrics_port),
           "AIMASS_LIVENESS": f"http://127.0.0.1:{liveness_port}/healthz"}
    # Cluster-wide: kmock cannot list /api/v1/namespaces, which namespace scoping would need.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aimass.cli", "operator", "--log-format", "json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: answers(session, f"http://127.0.0.1:{liveness_port}/healthz"),
                             timeout=30, what="the liveness probe answering")
            exposed = await answers(session, f"http://127.0.0.1:{metrics_port}/metrics")
        assert exposed and "aimass_jobs_created_total" in exposed

        job = {"apiVersion": "aimass.dev/v1alpha1", "kind": "TrainingJob",
               "metadata": {"name": "later", "namespace": NAMESPACE},
               "spec": {"dataset": {"train": "s3://data/train"},
                        "output": {"uri": "s3://models/later"}, "suspend": True}}
        await apply(api, job)
        await eventually(lambda: (cluster.live(JOBS, NAMESPACE)["later"].get("status") or {})
                         .get("phase") == "Suspended", what="the job handled")
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 0
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert any("Suspended=True" in line["message"] for line in lines)
