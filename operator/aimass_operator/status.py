"""What a TrainingJob's status says, computed from what the operator sees; no API calls here.

Conditions follow the Kubernetes conventions: one entry per type, each with a status
("True"/"False"), a CamelCase reason, a message for people, the generation it was computed for,
and a lastTransitionTime that moves only when the status flips. The phase is derived from the
conditions, never stored on its own, so the two cannot disagree. Pods are read for worker counts,
for the reason a pod is stuck (an image that cannot be pulled, no node to run on, a crash loop),
and for the exit code and message of a failed worker.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Condition types are states, as in Kubeflow and batch/v1 Jobs.
CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
CONDITION_TYPES = (CREATED, RUNNING, RESTARTING, SUCCEEDED, FAILED, SUSPENDED)

# Reasons are CamelCase causes; each line says which condition carries it.
# Created=True: the pre-flight passed and the Service and worker pods were created.
PODS_CREATED = "PodsCreated"
# Created=False: the pre-flight could not reach S3; it is retried.
STORAGE_UNREACHABLE = "StorageUnreachable"
# Running=True, and Restarting=False once a restarted gang runs again.
ALL_WORKERS_RUNNING = "AllWorkersRunning"
# Running=False: workers were created but not all of them run yet.
WORKERS_PENDING = "WorkersPending"
# Running=False: a worker's image cannot be pulled.
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
# Running=False: no node can take a worker (PodScheduled=False).
UNSCHEDULABLE = "Unschedulable"
# Running=False: a worker's container keeps crashing.
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
# Running=False: a worker's container cannot be configured, e.g. its Secret is missing.
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
# Restarting=True and Running=False: a worker failed with a retryable exit code.
# Failed=True: a worker failed with a permanent exit code (a restart would fail the same way).
WORKER_FAILED = "WorkerFailed"
# Failed=True: a worker failed and backoffLimit gang restarts were already spent.
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
# Failed=True: the job ran longer than activeDeadlineSeconds.
DEADLINE_EXCEEDED = "DeadlineExceeded"
# Failed=True: the pre-flight found the dataset missing, empty or with fewer than two classes.
PREFLIGHT_FAILED = "PreflightFailed"
# Failed=True: the spec does not validate (the CRD's schema was bypassed or is older).
INVALID_SPEC = "InvalidSpec"
# Succeeded=True, and Running=False once the chief worker has succeeded.
JOB_SUCCEEDED = "JobSucceeded"
# Suspended=True, and Running=False while the job is suspended.
JOB_SUSPENDED = "JobSuspended"
# Suspended=False: the job was suspended and runs again from its checkpoint.
JOB_RESUMED = "JobResumed"


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


FINISHED_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})

# Container waiting reasons that mean "stuck", mapped to the condition reason shown.
_WAITING_REASONS = {
    "ImagePullBackOff": IMAGE_PULL_BACK_OFF,
    "ErrImagePull": IMAGE_PULL_BACK_OFF,
    "InvalidImageName": IMAGE_PULL_BACK_OFF,
    "ErrImageNeverPull": IMAGE_PULL_BACK_OFF,
    "CrashLoopBackOff": CRASH_LOOP_BACK_OFF,
    "CreateContainerConfigError": CREATE_CONTAINER_CONFIG_ERROR,
    "CreateContainerError": CREATE_CONTAINER_CONFIG_ERROR,
}


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes times."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def find_condition(conditions: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((item for item in conditions if item.get("type") == kind), None)


def is_true(conditions: Iterable[Mapping[str, Any]], kind: str) -> bool:
    found = find_condition(conditions, kind)
    return found is not None and found.get("status") == "True"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    kind: str,
    *,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A new list with the condition `kind` set; the others are kept in their order.

    lastTransitionTime moves only when the status flips; a new reason or message alone keeps it.
    """
    wanted = "True" if status else "False"
    old = find_condition(conditions, kind)
    flipped = old is None or old.get("status") != wanted
    condition: dict[str, Any] = {
        "type": kind,
        "status": wanted,
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(now) if flipped else old.get("lastTransitionTime"),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    result = [dict(item) for item in conditions if item.get("type") != kind]
    position = next(
        (i for i, item in enumerate(conditions) if item.get("type") == kind), len(result)
    )
    result.insert(position, condition)
    return result


def derive_phase(conditions: Sequence[Mapping[str, Any]]) -> Phase:
    """The one-word summary: terminal conditions win, then Suspended, then Running."""
    if is_true(conditions, FAILED):
        return Phase.FAILED
    if is_true(conditions, SUCCEEDED):
        return Phase.SUCCEEDED
    if is_true(conditions, SUSPENDED):
        return Phase.SUSPENDED
    if is_true(conditions, RUNNING):
        return Phase.RUNNING
    return Phase.PENDING


def is_finished(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions") or []
    return is_true(conditions, SUCCEEDED) or is_true(conditions, FAILED)


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(frozen=True)
class WorkerCounts:
    active: int
    succeeded: int
    failed: int
    running: int

    def to_status(self, total: int) -> dict[str, Any]:
        return {
            "active": self.active,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "workersReady": f"{self.running}/{total}",
        }


def count_workers(pods: Iterable[Mapping[str, Any]]) -> WorkerCounts:
    """Counts over the current gang's pods; terminating pods are no longer counted as active."""
    phases = [pod_phase(pod) for pod in pods if not is_terminating(pod)]
    return WorkerCounts(
        active=sum(phase in ("Pending", "Running") for phase in phases),
        succeeded=phases.count("Succeeded"),
        failed=phases.count("Failed"),
        running=phases.count("Running"),
    )


@dataclass(frozen=True)
class Stuck:
    reason: str
    message: str


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def find_stuck(pod: Mapping[str, Any]) -> Stuck | None:
    """Why a pod that should be running is not, when Kubernetes says so; None otherwise."""
    name = pod_name(pod)
    for container in _container_statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = _WAITING_REASONS.get(str(waiting.get("reason")))
        if reason:
            detail = waiting.get("message") or waiting.get("reason")
            return Stuck(reason, f"worker {name}, container {container.get('name')}: {detail}")
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            if condition.get("reason") == "Unschedulable":
                detail = condition.get("message") or "no node can run it"
                return Stuck(UNSCHEDULABLE, f"worker {name} cannot be scheduled: {detail}")
    return None


@dataclass(frozen=True)
class Failure:
    pod: str
    exit_code: int | None
    message: str


def describe_failure(pod: Mapping[str, Any]) -> Failure:
    """The failed pod's exit code and the message its container (or the kubelet) left."""
    name = pod_name(pod)
    for container in _container_statuses(pod):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            code = int(terminated["exitCode"])
            reason = terminated.get("reason") or "Error"
            detail = (terminated.get("message") or "").strip()
            text = f"worker {name} exited with code {code} ({reason})"
            return Failure(name, code, f"{text}: {detail}" if detail else text)
    status = pod.get("status") or {}
    detail = status.get("message") or status.get("reason") or "no exit code was reported"
    return Failure(name, None, f"worker {name} failed: {detail}")


def preflight_status(report: Any, now: datetime) -> dict[str, Any]:
    """`status.preflight` from an aimass.datasets.PreflightReport."""
    found: dict[str, Any] = {
        "classes": len(report.class_names),
        "classNames": list(report.class_names),
        "trainImages": report.train.num_images,
        "skipped": report.train.skipped,
        "message": report.describe(),
        "checkTime": timestamp(now),
    }
    if report.validation is not None:
        found["validationImages"] = report.validation.num_images
    return found


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` into `new` at the top level, or None if nothing changed.

    Keys absent from `new` are left alone (progress is written by the chief worker, not here).
    """
    patch = {key: copy.deepcopy(value) for key, value in new.items() if old.get(key) != value}
    return patch or None
