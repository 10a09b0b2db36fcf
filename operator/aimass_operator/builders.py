"""Pure builders: a TrainingJob body (a mapping, as kopf gives it) in, Kubernetes objects out.

Nothing here talks to a cluster, so a reconcile can build the objects it wants and compare them
with what exists, and tests need no API server. The same input always gives the same dicts.

A job gets a headless Service named after it (its DNS gives each worker a stable name), one pod
per worker, and a per-job worker identity (ServiceAccount, Role, RoleBinding) that may only
read and patch this job's status, so the chief can report progress and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aimass.spec import API_VERSION, GROUP, KIND, PLURAL, TrainingJobSpec, parse_spec
from aimass_operator.naming import (
    JOB_NAME_LABEL,
    TF_PORT,
    TF_PORT_NAME,
    child_metadata,
    job_labels,
    job_name,
    job_namespace,
    owner_reference,
    pod_labels,
    service_name,
    worker_dns_name,
    worker_identity_name,
    worker_name,
)

__all__ = [
    "CACHE_DIR",
    "CONTAINER_NAME",
    "build_service",
    "build_tf_config",
    "build_worker_pod",
    "build_worker_pods",
    "build_worker_rbac",
    "job_document",
    "job_labels",
    "job_spec",
    "owner_reference",
    "plain",
    "worker_name",
    "worker_status_rules",
]

CONTAINER_NAME = "trainer"
CACHE_DIR = "/var/cache/aimass"
# NB: the user the trainer image is built with (trainer/Dockerfile): its home, where Keras
# writes, belongs to this uid.
TRAINER_UID = 65532
# Keys of the credentials Secret; AWS_SESSION_TOKEN is optional (temporary credentials).
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_CREDENTIAL_KEYS = ("AWS_SESSION_TOKEN",)


def plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (kopf hands out read-only mapping views)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def job_spec(body: Mapping[str, Any]) -> TrainingJobSpec:
    """The typed spec of a job, defaults filled in; raises aimass.spec.SpecError if invalid."""
    return parse_spec(plain(body.get("spec") or {}))


def job_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """The job as the trainer reads it from AIMASS_JOB: only what it needs, nothing of the
    server's bookkeeping (uid, resourceVersion, managedFields, status)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job_name(body), "namespace": job_namespace(body)},
        "spec": plain(body.get("spec") or {}),
    }


def build_tf_config(name: str, namespace: str, workers: int, index: int) -> str:
    """TF_CONFIG for worker `index`: every worker by its DNS name through the Service."""
    config = {
        "cluster": {"worker": [worker_dns_name(name, namespace, i) for i in range(workers)]},
        "task": {"type": "worker", "index": index},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def build_service(body: Mapping[str, Any]) -> dict[str, Any]:
    """The headless Service whose DNS records name the workers in TF_CONFIG."""
    name = job_name(body)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(body, service_name(name), job_labels(name)),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_NAME_LABEL: name},
            # Workers look each other up before any of them is ready.
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": TF_PORT_NAME, "port": TF_PORT, "targetPort": TF_PORT, "protocol": "TCP"}
            ],
        },
    }


def _storage_env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """S3 settings; credentials only as references to the Secret, never as values."""
    env: list[dict[str, Any]] = [{"name": "AWS_DEFAULT_REGION", "value": spec.storage.region}]
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    secret = spec.storage.credentials_secret
    if secret:
        for key in CREDENTIAL_KEYS + OPTIONAL_CREDENTIAL_KEYS:
            ref: dict[str, Any] = {"name": secret, "key": key}
            if key in OPTIONAL_CREDENTIAL_KEYS:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(spec: TrainingJobSpec) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS, so a training pod is the last to be evicted)."""
    wanted = spec.worker.resources
    compute = {"cpu": wanted.cpu, "memory": wanted.memory}
    limits: dict[str, Any] = dict(compute)
    if wanted.gpus:
        limits["nvidia.com/gpu"] = str(wanted.gpus)
    return {"requests": dict(compute), "limits": limits}


def _container_security_context() -> dict[str, Any]:
    """The `restricted` Pod Security Standard for the trainer container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context() -> dict[str, Any]:
    """Pod-level part of the restricted profile; fsGroup makes the cache volume writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _scheduling(spec: TrainingJobSpec) -> dict[str, Any]:
    """The pass-through scheduling fields, each only when the spec sets it."""
    worker = spec.worker
    fields: dict[str, Any] = {}
    if worker.node_selector:
        fields["nodeSelector"] = dict(sorted(worker.node_selector.items()))
    if worker.tolerations:
        fields["tolerations"] = [toleration.to_wire() for toleration in worker.tolerations]
    if worker.affinity:
        fields["affinity"] = plain(worker.affinity)
    if worker.priority_class_name:
        fields["priorityClassName"] = worker.priority_class_name
    if worker.scheduler_name:
        fields["schedulerName"] = worker.scheduler_name
    if worker.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in worker.image_pull_secrets]
    return fields


def build_worker_pod(
    body: Mapping[str, Any], index: int, *, default_image: str, restart_count: int
) -> dict[str, Any]:
    """Worker pod `index` of the job's gang number `restart_count` (0 for the first).

    restartPolicy is Never: a failed worker restarts the whole gang from the last checkpoint,
    which is the operator's decision, not the kubelet's. Raises SpecError for an invalid spec.
    """
    spec = job_spec(body)
    name, namespace = job_name(body), job_namespace(body)
    pod_name = worker_name(name, index)

    env: list[dict[str, Any]] = [
        {"name": "AIMASS_JOB", "value": json.dumps(job_document(body), sort_keys=True)},
        {"name": "AIMASS_JOB_NAME", "value": name},
        {"name": "AIMASS_JOB_NAMESPACE", "value": namespace},
        {"name": "AIMASS_CACHE_DIR", "value": CACHE_DIR},
        {"name": "AIMASS_RESTART_COUNT", "value": str(restart_count)},
        {"name": "TF_CONFIG", "value": build_tf_config(name, namespace, spec.workers, index)},
        *_storage_env(spec),
    ]
    container = {
        "name": CONTAINER_NAME,
        "image": spec.worker.image or default_image,
        "command": ["aimass", "train", "--from-env"],
        "env": env,
        "ports": [{"name": TF_PORT_NAME, "containerPort": TF_PORT, "protocol": "TCP"}],
        "resources": _resources(spec),
        "securityContext": _container_security_context(),
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}],
        # The trainer's last words (exit reason) end up in the pod status for the conditions.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # hostname + subdomain = <pod>.<service>.<ns>.svc, the names in TF_CONFIG.
        "hostname": pod_name,
        "subdomain": service_name(name),
        "serviceAccountName": spec.worker.service_account_name or worker_identity_name(name),
        "automountServiceAccountToken": True,
        # Service links would add one env var per Service in the namespace; nothing reads them.
        "enableServiceLinks": False,
        "securityContext": _pod_security_context(),
        "containers": [container],
        "volumes": [{"name": "cache", "emptyDir": {}}],
        **_scheduling(spec),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": child_metadata(body, pod_name, pod_labels(name, index, restart_count)),
        "spec": pod_spec,
    }


def build_worker_pods(
    body: Mapping[str, Any], *, default_image: str, restart_count: int
) -> list[dict[str, Any]]:
    """Every worker pod of the gang, index 0 (the chief) first."""
    workers = job_spec(body).workers
    return [
        build_worker_pod(body, index, default_image=default_image, restart_count=restart_count)
        for index in range(workers)
    ]


def worker_status_rules(job: str) -> list[dict[str, Any]]:
    """The least privilege a worker needs: read and merge-patch its own job's status."""
    return [
        {
            "apiGroups": [GROUP],
            "resources": [f"{PLURAL}/status"],
            "resourceNames": [job],
            "verbs": ["get", "patch"],
        }
    ]


def build_worker_rbac(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of the per-job worker identity `<job>-worker`.

    The pods use it unless `worker.serviceAccountName` names another account (which then needs
    the same rule to report progress).
    """
    name = job_name(body)
    identity = worker_identity_name(name)
    labels = job_labels(name)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(body, identity, labels),
        "automountServiceAccountToken": True,
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(body, identity, labels),
        "rules": worker_status_rules(name),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(body, identity, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": identity},
        "subjects": [
            {"kind": "ServiceAccount", "name": identity, "namespace": job_namespace(body)}
        ],
    }
    return [account, role, binding]

