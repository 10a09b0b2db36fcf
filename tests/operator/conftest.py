"""Fixtures for running the real operator (kopf and our handlers) against the emulator."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import kmock
import pytest
from support.harness import NAMESPACE, SECRET_NAME, running_operator
from prometheus_client import CollectorRegistry

from aimass.seaweed import SeaweedServer
from aimass_operator.metrics import OperatorMetrics
from support.kube import ClusterEmulator


@pytest.fixture
async def cluster() -> AsyncIterator[ClusterEmulator]:
    async with ClusterEmulator() as emulator, kmock.Server(emulator):
        yield emulator


@pytest.fixture
async def api(cluster: ClusterEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    """kubectl, in short: a client of the emulator's HTTP API."""
    async with aiohttp.ClientSession(base_url=str(cluster.url)) as session:
        yield session


@pytest.fixture
async def secret(api: aiohttp.ClientSession, s3_server: SeaweedServer) -> dict[str, str]:
    values = {"AWS_ACCESS_KEY_ID": s3_server.access_key,
              "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    body = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": NAMESPACE},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }
    async with api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=body) as response:
        assert response.status < 300, await response.text()
    return values


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics(CollectorRegistry())


@pytest.fixture
async def operator(cluster: ClusterEmulator, metrics: OperatorMetrics) -> AsyncIterator[None]:
    async with running_operator(cluster, metrics):
        yield
