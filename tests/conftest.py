"""Fixtures shared by the whole suite: one real S3 server (SeaweedFS on loopback) per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aimass.seaweed import SeaweedServer

# Keep TensorFlow quiet and on few threads: the CI machine has 2 cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3 server for the whole session; tests isolate themselves by bucket."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's endpoint and credentials, set in this test's environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.env


@pytest.fixture
def client(s3_env: dict[str, str]) -> Any:
    """An S3 client of the suite's server, made as the product makes its own."""
    from aimass import storage

    return storage.make_client()


@pytest.fixture
def bucket(client: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
