"""Names, labels and owner references shared by every object the operator makes for a job.

Names are fixed functions of the job name, so a restarted operator finds what an earlier one
created instead of making duplicates. The job name is at most 50 characters (the spec model's
ObjectMeta), which keeps `<job>-worker-<i>` within the 63 characters of a DNS label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aimass.spec import API_VERSION, GROUP, KIND

JOB_NAME_LABEL = f"{GROUP}/job-name"
REPLICA_INDEX_LABEL = f"{GROUP}/replica-index"
# The gang generation a pod belongs to, so a reconcile can tell the pods of an earlier
# (failed) gang from those of the current one.
RESTART_COUNT_LABEL = f"{GROUP}/restart-count"

TF_PORT = 2222
TF_PORT_NAME = "tf"


def job_name(body: Mapping[str, Any]) -> str:
    """The TrainingJob's name, from its metadata."""
    return str(body["metadata"]["name"])


def job_namespace(body: Mapping[str, Any]) -> str:
    """The TrainingJob's namespace; `default` when the body carries none (local tests)."""
    return str(body["metadata"].get("namespace") or "default")


def worker_name(job: str, index: int) -> str:
    """The name (and hostname) of worker `index` of `job`: `<job>-worker-<index>`."""
    return f"{job}-worker-{index}"


def service_name(job: str) -> str:
    """The headless Service that gives the workers their DNS names: the job's own name."""
    return job


def worker_identity_name(job: str) -> str:
    """The per-job ServiceAccount, Role and RoleBinding of the workers: `<job>-worker`."""
    return f"{job}-worker"


def worker_dns_name(job: str, namespace: str, index: int) -> str:
    """The stable DNS name of a worker through the headless Service, with the TF port."""
    return f"{worker_name(job, index)}.{service_name(job)}.{namespace}.svc:{TF_PORT}"


def job_labels(name: str) -> dict[str, str]:
    """Labels on every child of a job; the Service selects the pods by the job-name one."""
    return {
        "app.kubernetes.io/name": "aimass",
        "app.kubernetes.io/managed-by": "aimass-operator",
        JOB_NAME_LABEL: name,
    }


def pod_labels(name: str, index: int, restart_count: int) -> dict[str, str]:
    """The job labels plus the pod's replica index and gang generation."""
    return {
        **job_labels(name),
        "app.kubernetes.io/component": "worker",
        REPLICA_INDEX_LABEL: str(index),
        RESTART_COUNT_LABEL: str(restart_count),
    }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """A controller reference to the job, so Kubernetes deletes the children with it.

    NB: blockOwnerDeletion needs `update` on trainingjobs/finalizers where the
    OwnerReferencesPermissionEnforcement admission plugin is on; the operator's RBAC has it.
    """
    metadata = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": str(metadata["name"]),
        "uid": str(metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    body: Mapping[str, Any], name: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """Metadata of a namespaced child object owned by the job."""
    return {
        "name": name,
        "namespace": job_namespace(body),
        "labels": dict(labels),
        "ownerReferences": [owner_reference(body)],
    }
