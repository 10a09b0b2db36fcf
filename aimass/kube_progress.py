"""Live training progress in a TrainingJob's status, written by the chief worker itself.

In a worker pod the trainer has no Kubernetes client (the image stays small), so this reporter
speaks plain HTTPS with urllib: a JSON merge patch of `status.progress` (and the `epochProgress`
printer column) on the job's `/status` subresource, authenticated with the pod's ServiceAccount
token. The per-job worker Role allows exactly that: `get` and `patch` on `trainingjobs/status`
of this one job.

Progress is best-effort. A failed patch logs a warning and training carries on; nothing here
raises into the training loop. Batch-level updates are throttled (one every `min_interval`
seconds at most); the start, every epoch end and the end are always sent.
"""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import math
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from aimass.progress import EpochMetrics
from aimass.spec import GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_MIN_INTERVAL = 10.0
REQUEST_TIMEOUT = 5.0
# Batch logs worth showing while an epoch is under way.
_BATCH_KEYS = {"loss": "loss", "accuracy": "accuracy"}


def is_chief(tf_config: str | None) -> bool:
    """Whether this process reports: no TF_CONFIG (one worker), the `chief` task, or worker 0
    of a cluster that has no chief task."""
    if not tf_config:
        return True
    try:
        config = json.loads(tf_config)
        task = config.get("task") or {}
        cluster = config.get("cluster") or {}
    except (ValueError, AttributeError):
        logger.warning("TF_CONFIG is not a JSON object (%.80r): progress is not reported",
                       tf_config)
        return False
    if task.get("type") == "chief":
        return True
    first_worker = task.get("type") == "worker" and str(task.get("index", 0)) == "0"
    return first_worker and "chief" not in cluster


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(logs: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only, rounded; NaN and infinities are not JSON the API server accepts."""
    return {
        key: round(float(value), 6)
        for key, value in logs.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(float(value))
    }


class KubeProgressReporter:
    """A ProgressReporter that merge-patches `status.progress` of the worker's own TrainingJob."""

    def __init__(
        self,
        *,
        job: str,
        namespace: str,
        api_url: str,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = (
            f"{api_url.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/"
            f"{PLURAL}/{job}/status"
        )
        self.token_file = token_file
        self.min_interval = min_interval
        self.clock = clock
        self._context = None
        if api_url.startswith("https://"):
            cafile = str(ca_file) if ca_file and ca_file.is_file() else None
            self._context = ssl.create_default_context(cafile=cafile)
        self._last_sent: float | None = None
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubeProgressReporter | None:
        """The reporter for a worker pod, or None when this process should not report (not in a
        cluster, or not the chief).

        AIMASS_KUBE_API and AIMASS_KUBE_TOKEN_FILE override the in-cluster API address and
        token (tests point them at an emulator).
        """
        env = os.environ if env is None else env
        job, namespace = env.get("AIMASS_JOB_NAME"), env.get("AIMASS_JOB_NAMESPACE")
        if not job or not namespace or not is_chief(env.get("TF_CONFIG")):
            return None
        api_url = env.get("AIMASS_KUBE_API")
        if not api_url:
            host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
            if not host:
                logger.warning("no Kubernetes API in the environment (KUBERNETES_SERVICE_HOST "
                               "unset): progress of %s/%s is not reported", namespace, job)
                return None
            host = f"[{host}]" if ":" in host else host
            api_url = f"https://{host}:{port or 443}"
        token_file = Path(env.get("AIMASS_KUBE_TOKEN_FILE") or SERVICE_ACCOUNT_DIR / "token")
        return cls(job=job, namespace=namespace, api_url=api_url, token_file=token_file,
                   ca_file=SERVICE_ACCOUNT_DIR / "ca.crt")

    # ProgressReporter

    def on_train_begin(self, *, epochs: int, initial_epoch: int, steps_per_epoch: int) -> None:
        progress = {"epoch": initial_epoch, "epochs": epochs, "step": 0,
                    "stepsPerEpoch": steps_per_epoch}
        self._send(progress, epoch_progress=f"{initial_epoch}/{epochs}")

    def on_batch_end(self, *, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        now = self.clock()
        if self._last_sent is not None and now - self._last_sent < self.min_interval:
            return
        latest = _finite({wire: logs[key] for key, wire in _BATCH_KEYS.items() if key in logs})
        self._send({"step": step, **latest})

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        progress = {**_finite(metrics.to_status()), "epoch": metrics.epoch,
                    "epochs": metrics.epochs, "step": 0}
        self._send(progress, epoch_progress=f"{metrics.epoch}/{metrics.epochs}")

    def on_train_end(self, *, model_uri: str | None, final: Mapping[str, float]) -> None:
        # camelCase like the rest of the status (val_accuracy -> valAccuracy).
        extra = {"metrics": {to_camel(key): value for key, value in _finite(final).items()}}
        self._send({}, **(extra if final else {}))

    # The request

    def _send(self, progress: dict[str, Any], *, epoch_progress: str | None = None,
              **status: Any) -> None:
        """Merge-patch the status; on failure warn (once per run of failures) and carry on."""
        self._last_sent = self.clock()
        body: dict[str, Any] = {"progress": {**progress, "updateTime": _now()}, **status}
        if epoch_progress is not None:
            body["epochProgress"] = epoch_progress
        try:
            self._patch({"status": body})
        except urllib.error.HTTPError as error:
            hint = (" (does the worker's ServiceAccount have get/patch on "
                    f"{PLURAL}/status?)" if error.code in (401, 403) else "")
            self._warn(f"HTTP {error.code} {error.reason}{hint}")
        except (OSError, ValueError, http.client.HTTPException) as error:
            self._warn(f"{type(error).__name__}: {error}")
        else:
            if self._failing:
                logger.info("progress reporting to %s works again", self.url)
            self._failing = False

    def _warn(self, what: str) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        logger.log(level, "could not report progress to %s: %s; training carries on and "
                   "the next update will retry", self.url, what)
        self._failing = True

    def _patch(self, document: dict[str, Any]) -> None:
        headers = {
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        }
        if self.token_file is not None:
            # Read every time: projected ServiceAccount tokens are rotated by the kubelet.
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        request = urllib.request.Request(
            self.url, data=json.dumps(document).encode(), headers=headers, method="PATCH"
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT,
                                    context=self._context) as response:
            response.read()
