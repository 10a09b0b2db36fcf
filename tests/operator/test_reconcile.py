"""The pure decisions: what a reconcile does for a job, given its pods, the time and its status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aimass.exitcodes import ExitCode
from aimass_operator import reconcile
from aimass_operator import status as st
from aimass_operator.builders import job_spec
from aimass_operator.naming import pod_labels

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def body(*, status: dict[str, Any] | None = None, workers: int = 2, suspend: bool = False,
         **run_policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aimass.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "job", "namespace": "ml", "uid": "u-1", "generation": 4},
        "spec": {
            "dataset": {"train": "s3://data/train"},
            "output": {"uri": "s3://models/job"},
            "workers": workers,
            "suspend": suspend,
            "runPolicy": run_policy,
        },
        "status": status or {},
    }


def pod(index: int, phase: str = "Pending", *, gang: int = 0, job: str = "job",
        terminating: bool = False, **status: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"{job}-worker-{index}",
                                "labels": pod_labels(job, index, gang)}
    if terminating:
        metadata["deletionTimestamp"] = st.timestamp(NOW)
    return {"metadata": metadata, "status": {"phase": phase, **status}}


def failed(index: int, code: int, *, gang: int = 0, message: str = "boom") -> dict[str, Any]:
    return pod(index, "Failed", gang=gang, containerStatuses=[{"name": "trainer", "state": {
        "terminated": {"exitCode": code, "reason": "Error", "message": message}}}])


def started(ago: float = 10.0, *, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    """The status of a job whose pods were created `ago` seconds before NOW."""
    conditions = st.set_condition([], st.CREATED, status=True, reason=st.PODS_CREATED,
                                  message="", now=NOW - timedelta(seconds=ago), generation=4)
    return {"startTime": st.timestamp(NOW - timedelta(seconds=ago)), "conditions": conditions,
            "restartCount": restarts, **extra}


def finished(kind: str, reason: str, ago: float = 10.0) -> dict[str, Any]:
    status = started(ago + 100)
    status["conditions"] = st.set_condition(status["conditions"], kind, status=True,
                                            reason=reason, message="", now=NOW, generation=4)
    status["completionTime"] = st.timestamp(NOW - timedelta(seconds=ago))
    return status


def decide(job: dict[str, Any], pods: list[dict[str, Any]], *, service: bool = True,
           now: datetime = NOW) -> reconcile.Plan:
    return reconcile.decide(job, job_spec(job), pods, service_exists=service, now=now)


def condition(plan: reconcile.Plan, kind: str) -> dict[str, Any]:
    found = st.find_condition(plan.status["conditions"], kind)
    assert found is not None, f"no {kind} condition in {plan.status['conditions']}"
    return dict(found)


def test_a_new_job_checks_the_dataset_then_creates_its_children_and_every_worker() -> None:
    plan = decide(body(), [], service=False)

    assert plan.needs_preflight and plan.create_children
    assert plan.create_pods == [0, 1]
    assert plan.delete_pods == [] and not plan.delete_job
    assert plan.status["startTime"] == st.timestamp(NOW)
    assert condition(plan, st.CREATED)["reason"] == st.PODS_CREATED
    assert condition(plan, st.CREATED)["observedGeneration"] == 4
    assert plan.status["phase"] == "Pending"
    assert [(t.kind, t.reason) for t in plan.transitions] == [(st.CREATED, st.PODS_CREATED)]


def test_a_second_reconcile_of_a_settled_job_changes_nothing() -> None:
    job = body(status=started())
    pods = [pod(0, "Running"), pod(1, "Running")]
    first = decide(job, pods)
    job["status"] = first.status

    again = decide(job, pods)

    assert st.status_patch(job["status"], again.status) is None
    assert again.transitions == [] and again.create_pods == [] and again.delete_pods == []


def test_a_missing_pod_is_recreated_without_a_second_preflight() -> None:
    plan = decide(body(status=started()), [pod(0, "Running")])

    assert plan.create_pods == [1]
    assert not plan.needs_preflight


def test_other_jobs_pods_are_ignored_whatever_the_list_returned() -> None:
    plan = decide(body(status=started()), [pod(0, "Failed", job="other"), pod(0), pod(1)])

    assert plan.create_pods == [] and plan.delete_pods == []
    assert plan.status["active"] == 2


@pytest.mark.parametrize(
    ("phases", "phase", "ready", "reason"),
    [
        (("Pending", "Pending"), "Pending", "0/2", st.WORKERS_PENDING),
        (("Running", "Pending"), "Pending", "1/2", st.WORKERS_PENDING),
        (("Running", "Running"), "Running", "2/2", st.ALL_WORKERS_RUNNING),
    ],
)
def test_pod_phases_drive_the_phase_and_the_ready_count(
    phases: tuple[str, str], phase: str, ready: str, reason: str
) -> None:
    plan = decide(body(status=started()), [pod(i, p) for i, p in enumerate(phases)])

    assert plan.status["phase"] == phase
    assert plan.status["workersReady"] == ready
    assert condition(plan, st.RUNNING)["reason"] == reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"containerStatuses": [{"name": "trainer", "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": "pull access denied"}}}]},
         st.IMAGE_PULL_BACK_OFF),
        ({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                          "message": "Insufficient nvidia.com/gpu"}]}, st.UNSCHEDULABLE),
        ({"containerStatuses": [{"name": "trainer", "state": {"waiting": {
            "reason": "CrashLoopBackOff"}}}]}, st.CRASH_LOOP_BACK_OFF),
    ],
)
def test_a_stuck_worker_shows_in_the_running_condition_as_a_warning(
    status: dict[str, Any], reason: str
) -> None:
    plan = decide(body(status=started()), [pod(0, "Running"), pod(1, "Pending", **status)])

    assert condition(plan, st.RUNNING)["status"] == "False"
    assert condition(plan, st.RUNNING)["reason"] == reason
    assert "job-worker-1" in condition(plan, st.RUNNING)["message"]
    assert [t.is_warning for t in plan.transitions if t.kind == st.RUNNING] == [True]


@pytest.mark.parametrize("code", [int(ExitCode.TRAINING_FAILED), int(ExitCode.STORAGE_ERROR),
                                  int(ExitCode.INTERRUPTED), 137])
def test_a_retryable_failure_restarts_the_whole_gang(code: int) -> None:
    job = body(status=started(restarts=1), backoffLimit=3)

    plan = decide(job, [pod(0, "Running", gang=1), failed(1, code, gang=1)])

    assert plan.status["restartCount"] == 2
    assert sorted(plan.delete_pods) == ["job-worker-0", "job-worker-1"]
    assert plan.create_pods == []
    restarting = condition(plan, st.RESTARTING)
    assert restarting["status"] == "True" and restarting["reason"] == st.WORKER_FAILED
    assert f"code {code}" in restarting["message"] and "restart 2 of 3" in restarting["message"]
    assert plan.status["phase"] == "Pending"


def test_the_next_gang_replaces_the_old_pods_under_the_same_names() -> None:
    job = body(status=started(restarts=1))

    plan = decide(job, [pod(0, "Running", gang=0), pod(1, "Failed", gang=0, terminating=True)])

    assert plan.delete_pods == ["job-worker-0"]
    assert plan.create_pods == []  # both names are still taken by the old gang
    assert decide(job, []).create_pods == [0, 1]


def test_the_last_failure_after_the_backoff_fails_the_job_with_the_pods_words() -> None:
    job = body(status=started(restarts=2), backoffLimit=2)

    plan = decide(job, [pod(0, "Running", gang=2),
                        failed(1, 1, gang=2, message="loss became NaN")])

    failed_condition = condition(plan, st.FAILED)
    assert failed_condition["reason"] == st.BACKOFF_LIMIT_EXCEEDED
    assert "exited with code 1" in failed_condition["message"]
    assert "loss became NaN" in failed_condition["message"]
    assert plan.status["phase"] == "Failed" and plan.status["restartCount"] == 2
    assert plan.status["completionTime"] == st.timestamp(NOW)
    assert plan.delete_pods == ["job-worker-0", "job-worker-1"]


@pytest.mark.parametrize("code", [int(ExitCode.INVALID_SPEC), int(ExitCode.DATASET_ERROR)])
def test_a_permanent_exit_code_fails_at_once_however_many_restarts_are_left(code: int) -> None:
    plan = decide(body(status=started(), backoffLimit=5), [pod(0, "Running"), failed(1, code)])

    assert condition(plan, st.FAILED)["reason"] == st.WORKER_FAILED
    assert "permanent" in condition(plan, st.FAILED)["message"]
    assert plan.status["restartCount"] == 0


@pytest.mark.parametrize(
    ("phases", "succeeded"),
    [
        (("Succeeded", "Running"), True),
        (("Succeeded", "Succeeded"), True),
        (("Running", "Succeeded"), False),
    ],
)
def test_the_job_succeeds_when_the_chief_does(phases: tuple[str, str], succeeded: bool) -> None:
    plan = decide(body(status=started(progress={"loss": 0.1, "accuracy": 0.9, "epoch": 3})),
                  [pod(i, p) for i, p in enumerate(phases)])

    assert (plan.status["phase"] == "Succeeded") is succeeded
    if succeeded:
        assert plan.status["modelURI"] == "s3://models/job/model.keras"
        assert plan.status["metrics"] == {"loss": 0.1, "accuracy": 0.9}
        assert condition(plan, st.SUCCEEDED)["reason"] == st.JOB_SUCCEEDED


def test_the_deadline_fails_a_running_job_and_stops_its_workers() -> None:
    job = body(status=started(ago=61), activeDeadlineSeconds=60)

    plan = decide(job, [pod(0, "Running"), pod(1, "Running")])

    assert condition(plan, st.FAILED)["reason"] == st.DEADLINE_EXCEEDED
    assert "60 s" in condition(plan, st.FAILED)["message"]
    assert sorted(plan.delete_pods) == ["job-worker-0", "job-worker-1"]


def test_a_job_within_its_deadline_asks_to_be_checked_when_it_falls_due() -> None:
    plan = decide(body(status=started(ago=45), activeDeadlineSeconds=60),
                  [pod(0, "Running"), pod(1, "Running")])

    assert plan.status["phase"] == "Running"
    assert plan.recheck_after == pytest.approx(15)


def test_suspending_deletes_the_pods_and_says_suspended() -> None:
    job = body(status=started(), suspend=True)

    plan = decide(job, [pod(0, "Running"), pod(1, "Running")])

    assert plan.status["phase"] == "Suspended"
    assert sorted(plan.delete_pods) == ["job-worker-0", "job-worker-1"]
    assert plan.create_pods == [] and plan.status["active"] == 0
    assert condition(plan, st.SUSPENDED)["reason"] == st.JOB_SUSPENDED


def test_a_job_created_suspended_makes_no_pods_and_no_preflight() -> None:
    plan = decide(body(suspend=True), [])

    assert plan.status["phase"] == "Suspended"
    assert plan.create_pods == [] and not plan.needs_preflight


def test_resuming_recreates_the_gang_and_restarts_the_deadline_clock() -> None:
    status = started(ago=500)
    status["conditions"] = st.set_condition(status["conditions"], st.SUSPENDED, status=True,
                                            reason=st.JOB_SUSPENDED, message="", now=NOW,
                                            generation=3)
    plan = decide(body(status=status, activeDeadlineSeconds=60), [])

    assert plan.create_pods == [0, 1] and not plan.needs_preflight
    assert condition(plan, st.SUSPENDED) | {"status": "False", "reason": st.JOB_RESUMED} == \
        condition(plan, st.SUSPENDED)
    assert plan.status["startTime"] == st.timestamp(NOW)
    assert plan.status["phase"] == "Pending"


@pytest.mark.parametrize(
    ("policy", "kind", "deleted"),
    [
        ("All", st.SUCCEEDED, ["job-worker-0", "job-worker-1"]),
        ("Running", st.SUCCEEDED, ["job-worker-1"]),
        ("None", st.SUCCEEDED, []),
        ("None", st.FAILED, ["job-worker-1"]),  # a failed job never keeps a worker running
    ],
)
def test_the_clean_pod_policy_applies_once_the_job_finished(
    policy: str, kind: str, deleted: list[str]
) -> None:
    job = body(status=finished(kind, "R"), cleanPodPolicy=policy)

    plan = decide(job, [pod(0, "Succeeded"), pod(1, "Running")])

    assert sorted(plan.delete_pods) == deleted


def test_a_finished_job_never_recreates_deleted_children() -> None:
    plan = decide(body(status=finished(st.SUCCEEDED, st.JOB_SUCCEEDED)), [], service=False)

    assert plan.create_pods == [] and not plan.create_children and not plan.needs_preflight
    assert plan.transitions == []


@pytest.mark.parametrize(("ttl", "ago", "deleted"), [(30, 31, True), (30, 29, False),
                                                     (0, 0, True)])
def test_the_ttl_deletes_the_finished_job_when_it_falls_due(ttl: int, ago: float,
                                                            deleted: bool) -> None:
    job = body(status=finished(st.FAILED, st.DEADLINE_EXCEEDED, ago=ago),
               ttlSecondsAfterFinished=ttl)

    plan = decide(job, [])

    assert plan.delete_job is deleted
    assert (plan.recheck_after is None) is deleted


@pytest.mark.parametrize(
    ("pods", "run_policy"),
    [
        ([pod(0, "Succeeded"), pod(1, "Running")], {}),
        ([pod(0, "Running"), failed(1, int(ExitCode.DATASET_ERROR))], {}),
        ([pod(0, "Running"), pod(1, "Running")], {"activeDeadlineSeconds": 5}),
    ],
)
def test_a_job_that_finishes_now_asks_to_be_checked_when_its_ttl_falls_due(
    pods: list[dict[str, Any]], run_policy: dict[str, Any]
) -> None:
    job = body(status=started(ago=10), ttlSecondsAfterFinished=30, **run_policy)

    plan = decide(job, pods)

    assert plan.status["phase"] in ("Succeeded", "Failed")
    assert plan.recheck_after == pytest.approx(30) and not plan.delete_job
    assert decide(body(status=started(), ttlSecondsAfterFinished=0, **run_policy),
                  pods).delete_job


def test_a_finished_job_without_ttl_stays() -> None:
    plan = decide(body(status=finished(st.SUCCEEDED, st.JOB_SUCCEEDED, ago=10**6)), [])

    assert not plan.delete_job and plan.recheck_after is None


def test_a_failed_preflight_fails_the_job_naming_the_prefix() -> None:
    job = body()
    message = "pre-flight failed: no objects under s3://data/train"

    plan = reconcile.preflight_failed(job, job_spec(job), message, NOW)

    assert condition(plan, st.FAILED)["reason"] == st.PREFLIGHT_FAILED
    assert "s3://data/train" in condition(plan, st.FAILED)["message"]
    assert plan.status["phase"] == "Failed" and plan.create_pods == []


def test_unreachable_storage_keeps_the_job_pending_and_says_why() -> None:
    job = body()

    plan = reconcile.storage_unreachable(job, job_spec(job), "S3 did not answer", NOW)

    assert plan.status["phase"] == "Pending"
    assert condition(plan, st.CREATED) | {"status": "False"} == condition(plan, st.CREATED)
    assert condition(plan, st.CREATED)["reason"] == st.STORAGE_UNREACHABLE


def test_a_spec_that_does_not_validate_fails_the_job_naming_the_field() -> None:
    plan = reconcile.invalid_spec(body(), "spec.workers: must be at least 1 (received 0)", NOW)

    assert condition(plan, st.FAILED)["reason"] == st.INVALID_SPEC
    assert "spec.workers" in condition(plan, st.FAILED)["message"]
    assert plan.status["phase"] == "Failed" and plan.create_pods == []
