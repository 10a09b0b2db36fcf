"""What to do for a TrainingJob, decided from the job and its observed pods; no API calls here.

`decide` is a pure function: the job body, its pods, whether its Service exists and the time in,
a Plan out (objects to create or delete, the new status, transitions worth an Event). The kopf
handlers carry the plan out. Because the decision depends only on what exists now, running it
twice, or after an operator restart, changes nothing that is already right.

The failure policy follows Kubeflow's RunPolicy: a worker that fails with a retryable exit code
restarts the whole gang (the trainer resumes from its last checkpoint) until backoffLimit gang
restarts are spent; a permanent exit code fails the job at once; activeDeadlineSeconds ends it;
suspend removes the pods and keeps the checkpoint; cleanPodPolicy and ttlSecondsAfterFinished
apply once it has finished. A finished job never gets its children back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aimass.exitcodes import ExitCode, is_retryable
from aimass.spec import CleanPodPolicy, TrainingJobSpec
from aimass.storage import join_uri
from aimass_operator import status as st
from aimass_operator.naming import JOB_NAME_LABEL, REPLICA_INDEX_LABEL, RESTART_COUNT_LABEL

# Copied from the chief's last progress report into `status.metrics` on success.
FINAL_METRICS = ("loss", "accuracy", "valLoss", "valAccuracy")

STUCK_REASONS = frozenset({
    st.IMAGE_PULL_BACK_OFF, st.UNSCHEDULABLE, st.CRASH_LOOP_BACK_OFF,
    st.CREATE_CONTAINER_CONFIG_ERROR,
})


@dataclass(frozen=True)
class Transition:
    """A condition that changed: worth an Event and a log line."""

    kind: str
    status: bool
    reason: str
    message: str

    @property
    def is_warning(self) -> bool:
        """Failures, restarts and stuck workers are warnings; the rest is normal news."""
        if self.kind in (st.FAILED, st.RESTARTING):
            return self.status
        return self.kind == st.RUNNING and not self.status and self.reason in STUCK_REASONS


@dataclass
class Plan:
    """The actions for one reconcile, in the order they are carried out."""

    status: dict[str, Any]
    create_children: bool = False  # the Service and (unless a custom account) the worker RBAC
    needs_preflight: bool = False  # check the dataset before the first pods
    create_pods: list[int] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    delete_job: bool = False
    transitions: list[Transition] = field(default_factory=list)
    # Seconds until a deadline or TTL falls due; None: nothing is due (the sweeper still looks
    # at unfinished jobs every sweep interval, as a safety net for missed events).
    recheck_after: float | None = None


def restart_count(status: Mapping[str, Any]) -> int:
    return int(status.get("restartCount") or 0)


def job_pods(name: str, pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """This job's pods only: the API server's label selector is not trusted to have filtered."""
    return [pod for pod in pods if _labels(pod).get(JOB_NAME_LABEL) == name]


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _gang(pod: Mapping[str, Any]) -> int:
    return int(_labels(pod).get(RESTART_COUNT_LABEL, "0"))


def _index(pod: Mapping[str, Any]) -> int:
    return int(_labels(pod).get(REPLICA_INDEX_LABEL, "-1"))


class _Status:
    """The status being built: conditions set through here are recorded as transitions."""

    def __init__(self, old: Mapping[str, Any], now: datetime, generation: int | None) -> None:
        self.old = old
        self.new: dict[str, Any] = {
            key: value for key, value in old.items() if key in ("startTime", "completionTime")
        }
        self.new["restartCount"] = restart_count(old)
        self.conditions: list[dict[str, Any]] = [dict(c) for c in old.get("conditions") or []]
        self.now = now
        self.generation = generation
        self.transitions: list[Transition] = []

    def set(self, kind: str, status: bool, reason: str, message: str, *,
            news: bool = False) -> None:
        """Set a condition; a new status or reason (or `news`) is recorded as a transition."""
        before = st.find_condition(self.conditions, kind)
        self.conditions = st.set_condition(
            self.conditions, kind, status=status, reason=reason, message=message,
            now=self.now, generation=self.generation,
        )
        wanted = "True" if status else "False"
        changed = before is None or (before.get("status"), before.get("reason")) != (wanted, reason)
        # A condition first written as False is bookkeeping, not news, unless a worker is stuck.
        first_false = before is None and not status and reason not in STUCK_REASONS
        if news or (changed and not first_false):
            self.transitions.append(Transition(kind, status, reason, message))

    def clear(self, kind: str, reason: str, message: str) -> None:
        """Set `kind` to False, but only if it was ever set."""
        if st.find_condition(self.conditions, kind) is not None:
            self.set(kind, False, reason, message)

    def finish(self, plan: Plan, counts: st.WorkerCounts, total: int) -> Plan:
        self.new.update(counts.to_status(total))
        self.new["conditions"] = self.conditions
        self.new["phase"] = str(st.derive_phase(self.conditions))
        plan.status = self.new
        # Running=False often says the same as the condition that ended it: one Event is enough.
        seen: set[tuple[str, str]] = set()
        for change in self.transitions:
            if (change.reason, change.message) not in seen:
                plan.transitions.append(change)
            seen.add((change.reason, change.message))
        return plan


def _pods_to_clean(
    pods: Sequence[Mapping[str, Any]], policy: CleanPodPolicy, failed: bool
) -> list[str]:
    """Pods deleted once the job finished. A failed job never keeps workers running."""
    names = []
    for pod in pods:
        if st.is_terminating(pod):
            continue
        active = st.pod_phase(pod) in ("Pending", "Running")
        stop_active = failed or policy == CleanPodPolicy.RUNNING
        if policy == CleanPodPolicy.ALL or (active and stop_active):
            names.append(st.pod_name(pod))
    return names


def _finished(spec: TrainingJobSpec, pods: Sequence[Mapping[str, Any]], s: _Status) -> Plan:
    failed = st.is_true(s.conditions, st.FAILED)
    policy = spec.run_policy.clean_pod_policy
    plan = Plan(status={}, delete_pods=_pods_to_clean(pods, policy, failed))
    _schedule_ttl(spec, s, plan)
    counts = st.count_workers(pods)
    return s.finish(plan, counts, spec.workers)


def _schedule_ttl(spec: TrainingJobSpec, s: _Status, plan: Plan) -> None:
    """A finished job with a TTL is deleted when it falls due, or looked at again then."""
    ttl = spec.run_policy.ttl_seconds_after_finished
    done_at = s.new.get("completionTime")
    plan.recheck_after = None
    if ttl is not None and done_at:
        due = st.parse_timestamp(done_at) + timedelta(seconds=ttl)
        remaining = (due - s.now).total_seconds()
        plan.delete_job = remaining <= 0
        plan.recheck_after = None if plan.delete_job else remaining


def _fail(s: _Status, reason: str, message: str) -> None:
    s.set(st.FAILED, True, reason, message)
    s.set(st.RUNNING, False, reason, message)
    s.clear(st.RESTARTING, reason, message)
    s.new["completionTime"] = st.timestamp(s.now)


def _succeed(spec: TrainingJobSpec, s: _Status) -> None:
    message = f"the chief worker finished; the model is in {spec.output.uri}"
    s.set(st.SUCCEEDED, True, st.JOB_SUCCEEDED, message)
    s.set(st.RUNNING, False, st.JOB_SUCCEEDED, message)
    s.clear(st.RESTARTING, st.JOB_SUCCEEDED, message)
    s.new["completionTime"] = st.timestamp(s.now)
    s.new["modelURI"] = s.old.get("modelURI") or join_uri(spec.output.uri, "model.keras")
    progress = s.old.get("progress") or {}
    final = {key: progress[key] for key in FINAL_METRICS if key in progress}
    if final and not s.old.get("metrics"):
        s.new["metrics"] = final


def _on_failure(spec: TrainingJobSpec, failure: st.Failure, s: _Status, plan: Plan,
                pods: Sequence[Mapping[str, Any]]) -> None:
    """A worker of the current gang failed: restart the gang, or fail the job."""
    code = failure.exit_code
    restarts = restart_count(s.old)
    limit = spec.run_policy.backoff_limit
    if code is not None and not is_retryable(code):
        meaning = ExitCode(code).name  # not retryable means one of the permanent codes
        _fail(s, st.WORKER_FAILED, f"{failure.message} [{meaning}: permanent, not restarted]")
    elif restarts >= limit:
        _fail(s, st.BACKOFF_LIMIT_EXCEEDED,
              f"{failure.message} [all {limit} restarts spent (backoffLimit {limit})]")
    else:
        s.new["restartCount"] = restarts + 1
        message = (f"{failure.message}; restarting all workers from the last checkpoint "
                   f"(restart {restarts + 1} of {limit})")
        s.set(st.RESTARTING, True, st.WORKER_FAILED, message, news=True)
        s.set(st.RUNNING, False, st.WORKER_FAILED, message)
    plan.delete_pods = [st.pod_name(pod) for pod in pods if not st.is_terminating(pod)]


def decide(
    body: Mapping[str, Any],
    spec: TrainingJobSpec,
    pods: Sequence[Mapping[str, Any]],
    *,
    service_exists: bool,
    now: datetime,
) -> Plan:
    """The plan for one job. `spec` is the parsed `body.spec`; `pods` may include other jobs'."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name"))
    s = _Status(body.get("status") or {}, now, meta.get("generation"))
    pods = job_pods(name, pods)
    if st.is_finished(s.old):
        return _finished(spec, pods, s)

    plan = Plan(status={})
    gang = restart_count(s.old)
    # Pods of an earlier gang go before the new gang is made under the same names.
    stale = [pod for pod in pods if _gang(pod) != gang]
    current = [pod for pod in pods if _gang(pod) == gang and not st.is_terminating(pod)]
    plan.delete_pods = [st.pod_name(pod) for pod in stale if not st.is_terminating(pod)]
    counts = st.count_workers(current)

    if spec.suspend:
        message = "suspended: the workers are deleted and the checkpoint is kept"
        s.set(st.SUSPENDED, True, st.JOB_SUSPENDED, message)
        s.set(st.RUNNING, False, st.JOB_SUSPENDED, message)
        plan.delete_pods += [st.pod_name(pod) for pod in current]
        return s.finish(plan, st.WorkerCounts(0, 0, 0, 0), spec.workers)
    if st.is_true(s.conditions, st.SUSPENDED):
        s.set(st.SUSPENDED, False, st.JOB_RESUMED, "resumed: workers start from the checkpoint")
        # As for batch/v1 Jobs, the deadline starts again when a job resumes.
        s.new["startTime"] = st.timestamp(now)

    deadline = spec.run_policy.active_deadline_seconds
    started = s.new.get("startTime")
    if deadline is not None and started:
        remaining = (st.parse_timestamp(started) + timedelta(seconds=deadline) - now)
        if remaining.total_seconds() <= 0:
            _fail(s, st.DEADLINE_EXCEEDED,
                  f"the job ran longer than activeDeadlineSeconds ({deadline} s) since {started}")
            plan.delete_pods += [st.pod_name(pod) for pod in current]
            _schedule_ttl(spec, s, plan)
            return s.finish(plan, counts, spec.workers)
        plan.recheck_after = remaining.total_seconds()

    failed = [pod for pod in current if st.pod_phase(pod) == "Failed"]
    if failed:
        failed.sort(key=_index)
        _on_failure(spec, st.describe_failure(failed[0]), s, plan, current)
        if st.is_true(s.conditions, st.FAILED):
            _schedule_ttl(spec, s, plan)
        return s.finish(plan, counts, spec.workers)

    chief = next((pod for pod in current if _index(pod) == 0), None)
    everyone = counts.succeeded == spec.workers
    if everyone or (chief is not None and st.pod_phase(chief) == "Succeeded"):
        _succeed(spec, s)
        plan.delete_pods += _pods_to_clean(current, spec.run_policy.clean_pod_policy, False)
        _schedule_ttl(spec, s, plan)
        return s.finish(plan, counts, spec.workers)

    _run(spec, current, s, plan, service_exists=service_exists, blocked={
        _index(pod) for pod in stale})
    return s.finish(plan, counts, spec.workers)


def _run(spec: TrainingJobSpec, current: Sequence[Mapping[str, Any]], s: _Status, plan: Plan,
         *, service_exists: bool, blocked: set[int]) -> None:
    """The job should be running: make what is missing and say how far the workers are."""
    present = {_index(pod) for pod in current}
    plan.create_pods = [i for i in range(spec.workers) if i not in present and i not in blocked]
    first = not st.is_true(s.conditions, st.CREATED)
    plan.create_children = bool(plan.create_pods) or not service_exists
    plan.needs_preflight = first and bool(plan.create_pods)
    if plan.create_pods and first:
        s.new.setdefault("startTime", st.timestamp(s.now))
        s.set(st.CREATED, True, st.PODS_CREATED,
              f"created the Service and {spec.workers} worker pod(s)")

    running = sum(st.pod_phase(pod) == "Running" for pod in current)
    stuck = next((found for pod in current if (found := st.find_stuck(pod))), None)
    if running == spec.workers:
        s.set(st.RUNNING, True, st.ALL_WORKERS_RUNNING, f"all {spec.workers} workers are running")
        s.clear(st.RESTARTING, st.ALL_WORKERS_RUNNING, "the restarted workers are running")
    elif stuck is not None:
        s.set(st.RUNNING, False, stuck.reason, stuck.message)
    elif not st.is_true(s.conditions, st.RESTARTING):
        s.set(st.RUNNING, False, st.WORKERS_PENDING,
              f"{running} of {spec.workers} workers are running")


def preflight_failed(body: Mapping[str, Any], spec: TrainingJobSpec, message: str,
                     now: datetime) -> Plan:
    """The dataset check failed for good: the job fails before any pod exists."""
    meta = body.get("metadata") or {}
    s = _Status(body.get("status") or {}, now, meta.get("generation"))
    _fail(s, st.PREFLIGHT_FAILED, message)
    s.new["preflight"] = {"message": message, "checkTime": st.timestamp(now)}
    return s.finish(Plan(status={}), st.WorkerCounts(0, 0, 0, 0), spec.workers)


def invalid_spec(body: Mapping[str, Any], message: str, now: datetime) -> Plan:
    """A spec that does not validate fails the job; nothing is created for it."""
    meta = body.get("metadata") or {}
    s = _Status(body.get("status") or {}, now, meta.get("generation"))
    _fail(s, st.INVALID_SPEC, message)
    return s.finish(Plan(status={}), st.WorkerCounts(0, 0, 0, 0), 0)


def storage_unreachable(body: Mapping[str, Any], spec: TrainingJobSpec, message: str,
                        now: datetime) -> Plan:
    """The dataset could not be checked because S3 did not answer: say so and retry later."""
    meta = body.get("metadata") or {}
    s = _Status(body.get("status") or {}, now, meta.get("generation"))
    s.set(st.CREATED, False, st.STORAGE_UNREACHABLE, message)
    return s.finish(Plan(status={}), st.WorkerCounts(0, 0, 0, 0), spec.workers)
