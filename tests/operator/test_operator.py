"""The operator running for real (kopf and our handlers) against the extended kmock emulator.

The emulator stands in for the API server and tests play kubelet with `set_pod_status`. The
pre-flight talks to the suite's real S3 server. Every wait is bounded by `eventually`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from aimass.exitcodes import ExitCode
from aimass.seaweed import SeaweedServer
from aimass_operator import rbac
from aimass_operator.metrics import OperatorMetrics
from support.harness import NAMESPACE, SECRET_NAME, apply, eventually, running_operator
from support.images import put_placeholder_dataset
from support.kube import (
    EVENTS,
    JOBS,
    PODS,
    SERVICES,
    ClusterEmulator,
    failed_status,
    running_status,
    succeeded_status,
)


@pytest.fixture
def dataset(client: Any, bucket: str) -> str:
    """A two-class dataset prefix; the pre-flight only lists it, so the bytes are dummies."""
    return put_placeholder_dataset(client, f"s3://{bucket}/data/train", per_class=3)


def make_job(name: str, train: str, endpoint: str, *, workers: int = 2,
             **run_policy: Any) -> dict[str, Any]:
    bucket = train.split("/")[2]
    return {
        "apiVersion": "aimass.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "dataset": {"train": train, "imageSize": [16, 16]},
            "output": {"uri": f"s3://{bucket}/models/{name}"},
            "storage": {"endpoint": endpoint, "credentialsSecret": SECRET_NAME},
            "workers": workers,
            "runPolicy": run_policy,
        },
    }


async def patch_spec(api: aiohttp.ClientSession, name: str, spec: dict[str, Any]) -> None:
    path = f"/apis/aimass.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs/{name}"
    headers = {"Content-Type": "application/merge-patch+json"}
    async with api.patch(path, json={"spec": spec}, headers=headers) as response:
        assert response.status < 300, await response.text()


async def delete_job(api: aiohttp.ClientSession, name: str) -> None:
    path = f"/apis/aimass.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs/{name}"
    async with api.delete(path) as response:
        assert response.status < 300, await response.text()


def status_of(cluster: ClusterEmulator, name: str) -> dict[str, Any]:
    return cluster.live(JOBS, NAMESPACE).get(name, {}).get("status") or {}


def condition(cluster: ClusterEmulator, name: str, kind: str) -> dict[str, Any]:
    found = [c for c in status_of(cluster, name).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def event_reasons(cluster: ClusterEmulator, kind: str | None = None) -> set[str]:
    events = cluster.live(EVENTS, NAMESPACE).values()
    return {event["reason"] for event in events if kind in (None, event.get("type"))}


def pods(cluster: ClusterEmulator) -> dict[str, dict[str, Any]]:
    return cluster.live(PODS, NAMESPACE)


def gang_of(pod: dict[str, Any]) -> str:
    return pod["metadata"]["labels"]["aimass.dev/restart-count"]


async def wait_for_gang(cluster: ClusterEmulator, name: str, gang: int, workers: int = 2) -> None:
    def ready() -> bool:
        found = [p for n, p in pods(cluster).items() if n.startswith(f"{name}-worker-")]
        return len(found) == workers and all(gang_of(p) == str(gang) for p in found)

    await eventually(ready, what=f"gang {gang} of {workers} pods")


def assert_no_credentials_logged(caplog: pytest.LogCaptureFixture, secret: dict[str, str]) -> None:
    """Neither key in the operator's logs; the secret key nowhere, not even in boto's DEBUG."""
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("kopf", "aimass"))]
    assert ours, "the operator logged nothing: the check would be empty"
    for value in secret.values():
        assert not [line for line in ours if value in line]
    assert secret["AWS_SECRET_ACCESS_KEY"] not in caplog.text


async def run_all(cluster: ClusterEmulator, name: str, workers: int = 2) -> None:
    for index in range(workers):
        await cluster.set_pod_status(NAMESPACE, f"{name}-worker-{index}", running_status())


@pytest.mark.usefixtures("operator", "secret")
async def test_a_new_job_gets_its_service_and_one_pod_per_worker(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint))

    await wait_for_gang(cluster, "flowers", 0)
    service = cluster.live(SERVICES, NAMESPACE)["flowers"]
    assert service["spec"]["clusterIP"] == "None"
    job_uid = cluster.live(JOBS, NAMESPACE)["flowers"]["metadata"]["uid"]
    for pod in pods(cluster).values():
        assert pod["metadata"]["ownerReferences"][0]["uid"] == job_uid
    await eventually(lambda: condition(cluster, "flowers", "Created").get("reason")
                     == "PodsCreated", what="Created=True")
    assert status_of(cluster, "flowers")["phase"] == "Pending"
    assert "finalizers" not in cluster.live(JOBS, NAMESPACE)["flowers"]["metadata"]


@pytest.mark.usefixtures("operator", "secret")
async def test_pod_phases_drive_the_status_to_succeeded(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
    metrics: OperatorMetrics,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, cleanPodPolicy="None"))
    await wait_for_gang(cluster, "flowers", 0)

    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", running_status())
    await eventually(lambda: status_of(cluster, "flowers").get("workersReady") == "1/2",
                     what="one of two workers ready")
    assert status_of(cluster, "flowers")["phase"] == "Pending"
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-1", running_status())
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Running",
                     what="phase Running")
    assert status_of(cluster, "flowers")["active"] == 2

    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", succeeded_status())
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Succeeded",
                     what="phase Succeeded")
    final = status_of(cluster, "flowers")
    assert final["modelURI"].endswith("/models/flowers/model.keras")
    assert final["completionTime"] and final["startTime"]
    # The status is patched before the transition is counted: the counter may lag a moment.
    by_phase = metrics.jobs_by_phase
    await eventually(lambda: metrics.jobs_succeeded._value.get() == 1
                     and by_phase.labels(phase="Succeeded")._value.get() == 1,
                     what="success counted")
    assert by_phase.labels(phase="Running")._value.get() == 0
    await eventually(lambda: {"PodsCreated", "AllWorkersRunning", "JobSucceeded"}
                     <= event_reasons(cluster), what="an Event for each transition")


@pytest.mark.usefixtures("operator", "secret")
async def test_a_worker_whose_image_cannot_be_pulled_shows_in_the_conditions(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint))
    await wait_for_gang(cluster, "flowers", 0)

    await cluster.set_pod_status(NAMESPACE, "flowers-worker-1", {
        "phase": "Pending",
        "containerStatuses": [{"name": "trainer", "state": {"waiting": {
            "reason": "ImagePullBackOff",
            "message": 'Back-off pulling image "registry.test/aimass:test"'}}}],
    })

    await eventually(lambda: condition(cluster, "flowers", "Running").get("reason")
                     == "ImagePullBackOff", what="Running=False, ImagePullBackOff")
    assert "registry.test/aimass:test" in condition(cluster, "flowers", "Running")["message"]
    await eventually(lambda: "ImagePullBackOff" in event_reasons(cluster, "Warning"),
                     what="a Warning Event")


@pytest.mark.usefixtures("operator", "secret")
async def test_a_failing_worker_restarts_the_gang_until_the_backoff_is_spent(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
    metrics: OperatorMetrics,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, backoffLimit=2))
    for gang in (0, 1, 2):
        await wait_for_gang(cluster, "flowers", gang)
        await run_all(cluster, "flowers")
        await cluster.set_pod_status(NAMESPACE, "flowers-worker-1",
                                     failed_status(1, "loss became NaN at step 7"))
        if gang < 2:
            await eventually(lambda g=gang: status_of(cluster, "flowers").get("restartCount")
                             == g + 1, what=f"restart {gang + 1}")

    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Failed",
                     what="phase Failed")
    failed = condition(cluster, "flowers", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "exited with code 1" in failed["message"]
    assert "loss became NaN at step 7" in failed["message"]
    assert status_of(cluster, "flowers")["restartCount"] == 2
    await eventually(lambda: metrics.jobs_restarted._value.get() == 2, what="2 restarts counted")
    await eventually(lambda: not pods(cluster), what="the failed job's pods deleted")


@pytest.mark.usefixtures("operator", "secret")
async def test_a_permanent_exit_code_fails_the_job_without_a_restart(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, backoffLimit=3))
    await wait_for_gang(cluster, "flowers", 0)
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0",
                                 failed_status(int(ExitCode.INVALID_SPEC), "bad spec"))

    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Failed",
                     what="phase Failed")
    assert condition(cluster, "flowers", "Failed")["reason"] == "WorkerFailed"
    assert status_of(cluster, "flowers").get("restartCount", 0) == 0


@pytest.mark.usefixtures("operator", "secret")
async def test_the_deadline_fails_a_job_when_no_pod_event_arrives(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, activeDeadlineSeconds=3))
    await wait_for_gang(cluster, "flowers", 0)
    await run_all(cluster, "flowers")

    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Failed",
                     timeout=8, what="the deadline")
    assert condition(cluster, "flowers", "Failed")["reason"] == "DeadlineExceeded"
    await eventually(lambda: not pods(cluster), what="the pods deleted")


@pytest.mark.usefixtures("operator", "secret")
async def test_suspend_deletes_the_pods_and_resume_brings_them_back(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint))
    await wait_for_gang(cluster, "flowers", 0)
    await run_all(cluster, "flowers")
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Running",
                     what="phase Running")

    await patch_spec(api, "flowers", {"suspend": True})
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Suspended",
                     what="phase Suspended")
    await eventually(lambda: not pods(cluster), what="the pods deleted")

    await patch_spec(api, "flowers", {"suspend": False})
    await wait_for_gang(cluster, "flowers", 0)
    assert condition(cluster, "flowers", "Suspended")["reason"] == "JobResumed"
    assert status_of(cluster, "flowers")["phase"] == "Pending"


@pytest.mark.usefixtures("operator", "secret")
async def test_a_finished_job_is_deleted_after_its_ttl_with_its_children(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    job = make_job("flowers", dataset, s3_server.endpoint, workers=1, ttlSecondsAfterFinished=3,
                   cleanPodPolicy="None")
    await apply(api, job)
    await wait_for_gang(cluster, "flowers", 0, workers=1)
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", succeeded_status())
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Succeeded",
                     what="phase Succeeded")
    assert pods(cluster), "cleanPodPolicy None keeps the finished pod until the TTL"

    await eventually(lambda: "flowers" not in cluster.live(JOBS, NAMESPACE), timeout=8,
                     what="the job deleted by its TTL")
    await eventually(lambda: not pods(cluster) and not cluster.live(SERVICES, NAMESPACE),
                     what="the children garbage-collected")


@pytest.mark.usefixtures("secret")
async def test_an_operator_restart_mid_job_makes_no_duplicates_and_carries_on(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
    metrics: OperatorMetrics,
) -> None:
    async with running_operator(cluster, metrics):
        await apply(api, make_job("flowers", dataset, s3_server.endpoint))
        await wait_for_gang(cluster, "flowers", 0)
    creations = cluster.creations(PODS)

    await run_all(cluster, "flowers")  # while no operator is watching
    async with running_operator(cluster, metrics):
        await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Running",
                         what="phase Running after the restart")
        await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", succeeded_status())
        await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Succeeded",
                         what="phase Succeeded")

    assert creations == 2
    assert cluster.creations(PODS) == 2


@pytest.mark.usefixtures("operator", "secret")
async def test_deleting_a_job_takes_its_children_and_no_finalizer_holds_it(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint))
    await wait_for_gang(cluster, "flowers", 0)

    await delete_job(api, "flowers")
    await eventually(lambda: not pods(cluster) and not cluster.live(SERVICES, NAMESPACE),
                     what="the children deleted")
    assert "flowers" not in cluster.live(JOBS, NAMESPACE)


@pytest.mark.usefixtures("operator", "secret")
async def test_deleting_a_finished_jobs_pods_does_not_bring_them_back(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, workers=1,
                              cleanPodPolicy="None"))
    await wait_for_gang(cluster, "flowers", 0, workers=1)
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", succeeded_status())
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Succeeded",
                     what="phase Succeeded")

    async with api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/flowers-worker-0") as response:
        assert response.status < 300
    await patch_spec(api, "flowers", {"suspend": False})  # a later event for the job
    # A negative check needs a wait: several sweeps (every 0.2 s) and the update handler run.
    await asyncio.sleep(1.0)
    assert not pods(cluster)


@pytest.mark.usefixtures("operator", "secret")
async def test_a_missing_dataset_prefix_fails_the_preflight_before_any_pod(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, bucket: str, s3_server: SeaweedServer,
    secret: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    missing = f"s3://{bucket}/nothing/here"
    await apply(api, make_job("flowers", missing, s3_server.endpoint))

    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Failed",
                     what="phase Failed")
    failed = condition(cluster, "flowers", "Failed")
    assert failed["reason"] == "PreflightFailed"
    assert "nothing/here" in failed["message"]
    assert not pods(cluster)
    assert_no_credentials_logged(caplog, secret)


@pytest.mark.usefixtures("operator")
async def test_the_credentials_never_appear_in_the_logs(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
    secret: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await apply(api, make_job("flowers", dataset, s3_server.endpoint))
    await wait_for_gang(cluster, "flowers", 0)
    await run_all(cluster, "flowers")
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Running",
                     what="phase Running")

    assert "pre-flight passed" in caplog.text
    assert_no_credentials_logged(caplog, secret)
    for value in secret.values():
        for pod in pods(cluster).values():
            assert value not in str(pod)


@pytest.mark.usefixtures("operator", "secret")
async def test_a_spec_the_schema_would_have_refused_fails_the_job_naming_the_field(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    # The emulator validates nothing, as an API server with an outdated CRD would not.
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, workers=0))

    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Failed",
                     what="phase Failed")
    assert condition(cluster, "flowers", "Failed")["reason"] == "InvalidSpec"
    assert "spec.workers" in condition(cluster, "flowers", "Failed")["message"]
    assert not pods(cluster)


@pytest.mark.usefixtures("operator", "secret")
async def test_every_api_call_of_a_job_lifetime_is_allowed_by_the_operators_rbac(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str, s3_server: SeaweedServer,
) -> None:
    await apply(api, make_job("flowers", dataset, s3_server.endpoint, workers=1,
                              backoffLimit=1, ttlSecondsAfterFinished=0))
    await wait_for_gang(cluster, "flowers", 0, workers=1)
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", failed_status(1, "oom"))
    await wait_for_gang(cluster, "flowers", 1, workers=1)
    await patch_spec(api, "flowers", {"suspend": True})
    await eventually(lambda: status_of(cluster, "flowers").get("phase") == "Suspended"
                     and not pods(cluster), what="phase Suspended and the pods deleted")
    await patch_spec(api, "flowers", {"suspend": False})
    await wait_for_gang(cluster, "flowers", 1, workers=1)
    await cluster.set_pod_status(NAMESPACE, "flowers-worker-0", succeeded_status())
    await eventually(lambda: "flowers" not in cluster.live(JOBS, NAMESPACE),
                     what="the job deleted by its TTL")

    ours = cluster.api_calls("aimass-operator") | cluster.api_calls("kopf")
    allowed = {(group, resource, verb) for rule in rbac.cluster_rules()
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert ("aimass.dev", "trainingjobs/status", "patch") in ours
    assert ours - allowed == set()


@pytest.mark.usefixtures("operator", "secret")
async def test_unreachable_storage_holds_the_pods_back_and_says_it_will_retry(
    cluster: ClusterEmulator, api: aiohttp.ClientSession, dataset: str,
) -> None:
    # Nothing listens on the discard port: every connection is refused at once.
    await apply(api, make_job("flowers", dataset, "http://127.0.0.1:9"))

    await eventually(lambda: condition(cluster, "flowers", "Created").get("reason")
                     == "StorageUnreachable", what="Created=False, StorageUnreachable")
    assert "retrying in" in condition(cluster, "flowers", "Created")["message"]
    assert status_of(cluster, "flowers")["phase"] == "Pending"
    assert not pods(cluster)
