"""The pure status logic: conditions, phase, worker counts, stuck pods, failures, patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aimass_operator import status as st

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def pod(name: str = "job-worker-0", phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase, **status}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"containerStatuses": [
        {"name": "trainer", "state": {"waiting": {"reason": reason, "message": message}}}
    ]}


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"containerStatuses": [
        {"name": "trainer", "state": {"terminated": {
            "exitCode": code, "reason": reason, "message": message}}}
    ]}


def test_a_new_condition_records_when_it_was_set() -> None:
    conditions = st.set_condition([], st.RUNNING, status=True, reason="AllWorkersRunning",
                                  message="m", now=T0, generation=3)

    assert conditions == [{
        "type": "Running", "status": "True", "reason": "AllWorkersRunning", "message": "m",
        "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 3,
    }]


def test_a_new_reason_with_the_same_status_keeps_the_transition_time() -> None:
    first = st.set_condition([], st.RUNNING, status=False, reason="WorkersPending",
                             message="0 of 2", now=T0, generation=1)

    second = st.set_condition(first, st.RUNNING, status=False, reason="ImagePullBackOff",
                              message="no image", now=T1, generation=2)

    assert second[0]["lastTransitionTime"] == st.timestamp(T0)
    assert second[0]["reason"] == "ImagePullBackOff"
    assert second[0]["observedGeneration"] == 2


def test_a_flipped_status_moves_the_transition_time() -> None:
    first = st.set_condition([], st.RUNNING, status=False, reason="WorkersPending",
                             message="", now=T0, generation=1)

    second = st.set_condition(first, st.RUNNING, status=True, reason="AllWorkersRunning",
                              message="", now=T1, generation=1)

    assert second[0]["lastTransitionTime"] == st.timestamp(T1)


def test_setting_a_condition_keeps_the_others_in_their_place() -> None:
    conditions: list[dict[str, Any]] = []
    for kind in (st.CREATED, st.RUNNING, st.SUSPENDED):
        conditions = st.set_condition(conditions, kind, status=True, reason="R", message="",
                                      now=T0, generation=None)

    conditions = st.set_condition(conditions, st.RUNNING, status=False, reason="X", message="",
                                  now=T1, generation=None)

    assert [c["type"] for c in conditions] == ["Created", "Running", "Suspended"]
    assert "observedGeneration" not in conditions[0]


@pytest.mark.parametrize(
    ("true_types", "phase"),
    [
        ((), st.Phase.PENDING),
        ((st.CREATED,), st.Phase.PENDING),
        ((st.CREATED, st.RUNNING), st.Phase.RUNNING),
        ((st.CREATED, st.RUNNING, st.SUSPENDED), st.Phase.SUSPENDED),
        ((st.CREATED, st.SUCCEEDED), st.Phase.SUCCEEDED),
        ((st.CREATED, st.FAILED), st.Phase.FAILED),
        ((st.SUSPENDED, st.FAILED), st.Phase.FAILED),
        ((st.RESTARTING,), st.Phase.PENDING),
    ],
)
def test_the_phase_follows_from_the_conditions(true_types: tuple[str, ...],
                                               phase: st.Phase) -> None:
    conditions: list[dict[str, Any]] = []
    for kind in st.CONDITION_TYPES:
        conditions = st.set_condition(conditions, kind, status=kind in true_types, reason="R",
                                      message="", now=T0, generation=1)

    assert st.derive_phase(conditions) == phase


def test_workers_are_counted_by_phase_and_terminating_pods_are_not_active() -> None:
    terminating = pod("c", "Running")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pods = [pod("a", "Running"), pod("b", "Pending"), terminating, pod("d", "Succeeded"),
            pod("e", "Failed"), {"metadata": {"name": "f"}}]

    counts = st.count_workers(pods)

    assert counts == st.WorkerCounts(active=3, succeeded=1, failed=1, running=1)
    assert counts.to_status(4) == {"active": 3, "succeeded": 1, "failed": 1,
                                   "workersReady": "1/4"}


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"'),
         st.IMAGE_PULL_BACK_OFF, 'pulling image "nope:1"'),
        (waiting("ErrImagePull", "not found"), st.IMAGE_PULL_BACK_OFF, "not found"),
        (waiting("InvalidImageName"), st.IMAGE_PULL_BACK_OFF, "InvalidImageName"),
        (waiting("CrashLoopBackOff", "back-off 5m0s"), st.CRASH_LOOP_BACK_OFF, "back-off"),
        (waiting("CreateContainerConfigError", 'secret "s3" not found'),
         st.CREATE_CONTAINER_CONFIG_ERROR, 'secret "s3" not found'),
        ({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                          "message": "0/3 nodes have nvidia.com/gpu"}]},
         st.UNSCHEDULABLE, "0/3 nodes have nvidia.com/gpu"),
    ],
)
def test_a_stuck_pod_is_named_with_a_reason_and_kubernetes_words(
    status: dict[str, Any], reason: str, words: str
) -> None:
    stuck = st.find_stuck(pod("job-worker-1", "Pending", **status))

    assert stuck is not None
    assert stuck.reason == reason
    assert words in stuck.message and "job-worker-1" in stuck.message


@pytest.mark.parametrize(
    "status",
    [
        {},
        waiting("ContainerCreating"),
        {"conditions": [{"type": "PodScheduled", "status": "True"}]},
        {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
    ],
)
def test_a_pod_on_its_way_is_not_stuck(status: dict[str, Any]) -> None:
    assert st.find_stuck(pod(**status)) is None


def test_a_failure_carries_the_exit_code_and_the_containers_last_words() -> None:
    failed = pod("job-worker-1", "Failed", **terminated(3, message="no images under s3://b/x"))

    failure = st.describe_failure(failed)

    assert failure.exit_code == 3
    assert failure.pod == "job-worker-1"
    assert "exited with code 3 (Error)" in failure.message
    assert "no images under s3://b/x" in failure.message


def test_a_failure_without_an_exit_code_says_what_the_kubelet_said() -> None:
    evicted = pod("job-worker-0", "Failed", reason="Evicted",
                  message="The node was low on resource: memory.")

    failure = st.describe_failure(evicted)

    assert failure.exit_code is None
    assert "low on resource: memory" in failure.message


def test_the_status_patch_is_none_when_nothing_changed() -> None:
    status = {"phase": "Running", "conditions": [{"type": "Running", "status": "True"}]}

    assert st.status_patch(status, dict(status)) is None


def test_the_status_patch_holds_only_what_changed_and_leaves_progress_alone() -> None:
    old = {"phase": "Running", "active": 2, "progress": {"epoch": 3}}
    new = {"phase": "Succeeded", "active": 2}

    assert st.status_patch(old, new) == {"phase": "Succeeded"}


def test_every_reason_constant_is_documented_with_its_condition() -> None:
    source = open(st.__file__).read()
    reasons = [name for name, value in vars(st).items()
               if name.isupper() and isinstance(value, str) and value[:1].isupper()
               and name not in {"CREATED", "RUNNING", "RESTARTING", "SUCCEEDED", "FAILED",
                                "SUSPENDED"}]
    assert reasons
    for name in reasons:
        line = next(i for i, text in enumerate(source.splitlines())
                    if text.startswith(f"{name} = "))
        comment = source.splitlines()[line - 1]
        assert comment.startswith("#") and "=" in comment, f"{name} lacks its condition"
