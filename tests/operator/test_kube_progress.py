"""The chief worker's progress reports, against a tiny local HTTP server standing in for the API."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aimass.kube_progress import KubeProgressReporter, is_chief
from aimass.progress import EpochMetrics

STATUS_PATH = "/apis/aimass.dev/v1alpha1/namespaces/ml/trainingjobs/flowers/status"


@dataclass
class FakeApi:
    """Records every request; answers with `status_code`."""

    url: str
    status_code: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:  # noqa: N802 (the http.server naming)
            length = int(self.headers.get("Content-Length", 0))
            fake.requests.append({
                "method": "PATCH",
                "path": self.path,
                "headers": dict(self.headers),
                "body": json.loads(self.rfile.read(length)),
            })
            self.send_response(fake.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token-123\n")
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reporter_for(api: FakeApi, token: Path, clock: FakeClock | None = None) -> KubeProgressReporter:
    return KubeProgressReporter(job="flowers", namespace="ml", api_url=api.url,
                                token_file=token, clock=clock or FakeClock())


def metrics(epoch: int, **extra: Any) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, epochs=10, loss=0.5, accuracy=0.8, **extra)


def test_an_epoch_end_merge_patches_the_jobs_status_with_the_pods_token(
    api: FakeApi, token: Path
) -> None:
    reporter_for(api, token).on_epoch_end(
        metrics(3, val_loss=0.6, val_accuracy=0.75, images_per_second=120.5, eta_seconds=70.0))

    [request] = api.requests
    assert request["method"] == "PATCH"
    assert request["path"] == STATUS_PATH
    assert request["headers"]["Content-Type"] == "application/merge-patch+json"
    assert request["headers"]["Authorization"] == "Bearer sa-token-123"
    status = request["body"]["status"]
    assert status["epochProgress"] == "3/10"
    progress = status["progress"]
    assert {key: progress[key] for key in ("epoch", "epochs", "loss", "accuracy", "valLoss",
                                          "valAccuracy", "imagesPerSecond", "etaSeconds")} == {
        "epoch": 3, "epochs": 10, "loss": 0.5, "accuracy": 0.8, "valLoss": 0.6,
        "valAccuracy": 0.75, "imagesPerSecond": 120.5, "etaSeconds": 70.0}
    assert progress["updateTime"].endswith("Z")


def test_batch_updates_are_throttled_but_epoch_ends_always_go(api: FakeApi, token: Path) -> None:
    clock = FakeClock()
    reporter = reporter_for(api, token, clock)
    reporter.on_train_begin(epochs=10, initial_epoch=0, steps_per_epoch=100)
    for step in range(1, 6):
        clock.now += 1.0
        reporter.on_batch_end(epoch=1, step=step, logs={"loss": 1.0, "accuracy": 0.5})
    assert len(api.requests) == 1

    clock.now += 10.0
    reporter.on_batch_end(epoch=1, step=6, logs={"loss": 0.9, "accuracy": 0.55})
    assert api.requests[-1]["body"]["status"]["progress"]["step"] == 6
    reporter.on_epoch_end(metrics(1))
    assert len(api.requests) == 3


def test_train_begin_shows_resumed_epochs_and_the_step_budget(api: FakeApi, token: Path) -> None:
    reporter_for(api, token).on_train_begin(epochs=10, initial_epoch=4, steps_per_epoch=50)
    status = api.requests[0]["body"]["status"]
    assert status["epochProgress"] == "4/10"
    assert status["progress"]["stepsPerEpoch"] == 50


def test_the_end_reports_the_final_metrics_without_non_finite_values(
    api: FakeApi, token: Path
) -> None:
    reporter_for(api, token).on_train_end(
        model_uri="s3://models/flowers/model.keras",
        final={"accuracy": 0.91, "val_accuracy": 0.88, "val_loss": float("nan")})
    assert api.requests[0]["body"]["status"]["metrics"] == {"accuracy": 0.91, "valAccuracy": 0.88}


def test_a_refused_patch_warns_and_never_raises(
    api: FakeApi, token: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.status_code = 403
    with caplog.at_level(logging.WARNING, logger="aimass.kube_progress"):
        reporter_for(api, token).on_epoch_end(metrics(1))
    assert "HTTP 403" in caplog.text
    assert "trainingjobs/status" in caplog.text


def test_an_unreachable_api_warns_once_and_never_raises(
    token: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = KubeProgressReporter(job="flowers", namespace="ml", api_url="http://127.0.0.1:1",
                                    token_file=token)
    with caplog.at_level(logging.WARNING, logger="aimass.kube_progress"):
        reporter.on_epoch_end(metrics(1))
        reporter.on_epoch_end(metrics(2))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_missing_token_file_does_not_stop_training(api: FakeApi, tmp_path: Path) -> None:
    reporter = reporter_for(api, tmp_path / "absent")
    reporter.on_epoch_end(metrics(1))
    assert api.requests == []


@pytest.mark.parametrize(("tf_config", "chief"), [
    (None, True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', False),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", '
     '"index": 0}}', False),
    ('{"cluster": {"chief": ["c:1"]}, "task": {"type": "chief", "index": 0}}', True),
    ("not json", False),
])
def test_only_the_chief_reports(tf_config: str | None, chief: bool) -> None:
    assert is_chief(tf_config) is chief


def test_from_env_points_at_the_override_api_for_the_chief_only(token: Path) -> None:
    env = {"AIMASS_JOB_NAME": "flowers", "AIMASS_JOB_NAMESPACE": "ml",
           "AIMASS_KUBE_API": "http://127.0.0.1:9999", "AIMASS_KUBE_TOKEN_FILE": str(token)}
    reporter = KubeProgressReporter.from_env(env)
    assert reporter is not None
    assert reporter.url == f"http://127.0.0.1:9999{STATUS_PATH}"
    assert reporter.token_file == token

    worker = {**env, "TF_CONFIG": json.dumps({"cluster": {"worker": ["a", "b"]},
                                              "task": {"type": "worker", "index": 1}})}
    assert KubeProgressReporter.from_env(worker) is None


def test_from_env_uses_the_in_cluster_service_address() -> None:
    env = {"AIMASS_JOB_NAME": "flowers", "AIMASS_JOB_NAMESPACE": "ml",
           "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    reporter = KubeProgressReporter.from_env(env)
    assert reporter is not None
    assert reporter.url.startswith("https://10.0.0.1:443/apis/aimass.dev/")


def test_outside_a_cluster_there_is_no_reporter() -> None:
    assert KubeProgressReporter.from_env({"AIMASS_JOB_NAME": "flowers",
                                          "AIMASS_JOB_NAMESPACE": "ml"}) is None
    assert KubeProgressReporter.from_env({}) is None
