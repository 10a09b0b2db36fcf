"""The pure builders: a TrainingJob body in, Kubernetes objects out."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from aimass.spec import SpecError, parse_job
from aimass_operator import builders
from aimass_operator.naming import job_labels, owner_reference, worker_name

DEFAULT_IMAGE = "ghcr.io/example/aimass-trainer:0.1.0"


def make_body(**spec: Any) -> dict[str, Any]:
    """A job body as kopf hands it over: with a uid, a resourceVersion and a status."""
    return {
        "apiVersion": "aimass.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "flowers", "namespace": "ml", "uid": "1234-abcd",
                     "resourceVersion": "42", "generation": 1},
        "spec": {
            "dataset": {"train": "s3://data/flowers/train"},
            "output": {"uri": "s3://models/flowers"},
            **spec,
        },
        "status": {"phase": "Pending"},
    }


def env_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}


def pod(body: dict[str, Any], index: int = 0, restart_count: int = 0) -> dict[str, Any]:
    return builders.build_worker_pod(body, index, default_image=DEFAULT_IMAGE,
                                     restart_count=restart_count)


def test_worker_names_are_fixed_by_job_and_index() -> None:
    assert worker_name("flowers", 3) == "flowers-worker-3"
    pods = builders.build_worker_pods(make_body(workers=3), default_image=DEFAULT_IMAGE,
                                      restart_count=0)
    assert [p["metadata"]["name"] for p in pods] == [f"flowers-worker-{i}" for i in range(3)]


def test_every_child_is_owned_by_the_job_as_its_controller() -> None:
    body = make_body()
    children = [builders.build_service(body), pod(body), *builders.build_worker_rbac(body)]
    reference = owner_reference(body)
    assert reference == {"apiVersion": "aimass.dev/v1alpha1", "kind": "TrainingJob",
                         "name": "flowers", "uid": "1234-abcd", "controller": True,
                         "blockOwnerDeletion": True}
    for child in children:
        assert child["metadata"]["ownerReferences"] == [reference]
        assert child["metadata"]["namespace"] == "ml"
        assert child["metadata"]["labels"]["aimass.dev/job-name"] == "flowers"


def test_pods_carry_the_job_name_and_replica_index_labels() -> None:
    labels = pod(make_body(workers=2), index=1, restart_count=2)["metadata"]["labels"]
    assert labels["aimass.dev/job-name"] == "flowers"
    assert labels["aimass.dev/replica-index"] == "1"
    assert labels["aimass.dev/restart-count"] == "2"
    assert job_labels("flowers").items() <= labels.items()


def test_the_headless_service_selects_the_job_pods_on_the_tf_port() -> None:
    service = builders.build_service(make_body())
    assert service["metadata"]["name"] == "flowers"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"aimass.dev/job-name": "flowers"}
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [port["port"] for port in service["spec"]["ports"]] == [2222]


def test_tf_config_names_every_worker_by_its_service_dns_name() -> None:
    config = json.loads(builders.build_tf_config("flowers", "ml", 3, 2))
    assert config["cluster"]["worker"] == [
        f"flowers-worker-{i}.flowers.ml.svc:2222" for i in range(3)
    ]
    assert config["task"] == {"type": "worker", "index": 2}


def test_a_pod_resolves_as_its_tf_config_name() -> None:
    worker = pod(make_body(workers=2), index=1)
    config = json.loads(env_of(worker)["TF_CONFIG"]["value"])
    own_name = config["cluster"]["worker"][config["task"]["index"]]
    spec = worker["spec"]
    host = f"{spec['hostname']}.{spec['subdomain']}.{worker['metadata']['namespace']}.svc:2222"
    assert own_name == host


def test_the_container_runs_the_trainer_from_its_environment() -> None:
    body = make_body()
    container = pod(body)["spec"]["containers"][0]
    env = env_of(pod(body))
    assert container["command"] == ["aimass", "train", "--from-env"]
    assert env["AIMASS_JOB_NAME"]["value"] == "flowers"
    assert env["AIMASS_JOB_NAMESPACE"]["value"] == "ml"
    assert env["AIMASS_RESTART_COUNT"]["value"] == "0"
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["AIMASS_CACHE_DIR"]["value"] in mounts


def test_aimass_job_holds_the_spec_and_not_the_servers_bookkeeping() -> None:
    body = make_body(workers=2)
    document = json.loads(env_of(pod(body))["AIMASS_JOB"]["value"])
    assert document["metadata"] == {"name": "flowers", "namespace": "ml"}
    assert "status" not in document
    assert document["spec"] == body["spec"]
    assert parse_job(document).spec.workers == 2


def test_credentials_come_from_the_secret_by_reference_only() -> None:
    body = make_body(storage={"credentialsSecret": "s3-creds",
                              "endpoint": "http://minio.storage:9000"})
    env = env_of(pod(body))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": key}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"


def test_a_job_without_a_secret_gets_no_credential_variables() -> None:
    env = env_of(pod(make_body()))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} & set(env)


def test_every_pod_gets_the_restricted_security_context() -> None:
    spec = pod(make_body())["spec"]
    container = spec["containers"][0]["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == container["runAsUser"]


def test_gpus_cpu_and_memory_become_requests_and_limits() -> None:
    body = make_body(worker={"resources": {"gpus": 2, "cpu": "8", "memory": "32Gi"}})
    resources = pod(body)["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert resources["requests"] == {"cpu": "8", "memory": "32Gi"}


def test_a_cpu_job_asks_for_no_gpu() -> None:
    resources = pod(make_body())["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]


def test_scheduling_fields_pass_through_to_the_pod() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    worker = {
        "image": "registry.local/trainer:dev",
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "affinity": affinity,
        "priorityClassName": "training",
        "schedulerName": "volcano",
        "imagePullSecrets": ["regcred"],
        "serviceAccountName": "trainer",
    }
    spec = pod(make_body(worker=worker))["spec"]
    assert spec["containers"][0]["image"] == "registry.local/trainer:dev"
    assert spec["nodeSelector"] == {"gpu": "a100"}
    assert spec["tolerations"] == worker["tolerations"]
    assert spec["affinity"] == affinity
    assert spec["priorityClassName"] == "training"
    assert spec["schedulerName"] == "volcano"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "trainer"


def test_unset_fields_use_the_operator_image_and_the_per_job_account() -> None:
    spec = pod(make_body())["spec"]
    assert spec["containers"][0]["image"] == DEFAULT_IMAGE
    assert spec["serviceAccountName"] == "flowers-worker"
    assert spec["restartPolicy"] == "Never"
    assert not {"nodeSelector", "tolerations", "affinity", "schedulerName"} & set(spec)


def test_the_worker_role_may_only_touch_its_own_jobs_status() -> None:
    account, role, binding = builders.build_worker_rbac(make_body())
    assert account["metadata"]["name"] == "flowers-worker"
    assert role["rules"] == [{"apiGroups": ["aimass.dev"], "resources": ["trainingjobs/status"],
                              "resourceNames": ["flowers"], "verbs": ["get", "patch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flowers-worker",
                                    "namespace": "ml"}]


def test_the_same_job_always_builds_the_same_objects() -> None:
    body = make_body(workers=2, worker={"nodeSelector": {"b": "2", "a": "1"}})
    first = [pod(body, 1), builders.build_service(body), builders.build_worker_rbac(body)]
    again = copy.deepcopy(body)
    second = [pod(again, 1), builders.build_service(again), builders.build_worker_rbac(again)]
    assert first == second
    assert json.dumps(first) == json.dumps(second)


def test_builders_never_change_the_body() -> None:
    body = make_body(workers=2)
    before = copy.deepcopy(body)
    builders.build_worker_pods(body, default_image=DEFAULT_IMAGE, restart_count=1)
    builders.build_worker_rbac(body)
    assert body == before


def test_an_invalid_spec_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.workers"):
        pod(make_body(workers=0))


def test_every_built_object_passes_the_kubernetes_schemas() -> None:
    body = make_body(workers=2, storage={"credentialsSecret": "s3-creds"},
                     worker={"tolerations": [{"key": "gpu", "operator": "Exists"}],
                             "imagePullSecrets": ["regcred"], "nodeSelector": {"a": "b"}})
    objects = [builders.build_service(body), *builders.build_worker_rbac(body),
               *builders.build_worker_pods(body, default_image=DEFAULT_IMAGE, restart_count=0)]
    for item in objects:
        kubernetes_validate.validate(item, "1.33", strict=True)
