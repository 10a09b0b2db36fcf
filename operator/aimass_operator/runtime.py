"""The operator's running state, and how it carries out a reconcile plan against the API.

One reconcile of a job reads the job, its pods and its Service, asks `reconcile.decide` what to
do, runs the dataset pre-flight when the first pods are due, patches the status (only when it
changed, and before acting, so a crash half-way is repaired by the next reconcile), deletes and
creates children, and posts an Event for each transition. Reconciles of one job never overlap.

Deadlines and TTLs must fire when no event arrives, yet kopf's timers and daemons put a
finalizer on every job, and a finalizer wedges deletion while the operator is down. So one
sweeper task of our own looks at each known job again when its plan asks to (or every
`sweep_interval` seconds as a safety net), with no finalizer anywhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib.metadata
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from aimass.datasets import DatasetError
from aimass.spec import SpecError, TrainingJobSpec
from aimass.storage import StorageError
from aimass_operator import reconcile
from aimass_operator import status as st
from aimass_operator.builders import build_service, build_worker_pod, build_worker_rbac, job_spec
from aimass_operator.kubeapi import KubeApi, KubeApiError, jobs_path, pods_path, service_path
from aimass_operator.metrics import OperatorMetrics
from aimass_operator.naming import JOB_NAME_LABEL
from aimass_operator.preflight import CredentialsError, check_dataset

logger = logging.getLogger(__name__)

# The image `make images` builds, tagged with this package's version.
DEFAULT_IMAGE = f"aimass/trainer:{importlib.metadata.version('aimass')}"


@dataclass
class OperatorConfig:
    """Settings of one operator process (from flags or the environment, see main.py)."""

    default_image: str = DEFAULT_IMAGE
    # The API server; None means "whatever the login handler finds" (in-cluster or kubeconfig).
    connection: kopf.ConnectionInfo | None = None
    sweep_interval: float = 10.0
    preflight_retry_delay: float = 30.0
    metrics: OperatorMetrics | None = None


@dataclass
class _Tracked:
    due: float  # loop time at which the sweeper reconciles the job again
    context: contextvars.Context  # kopf's context (event posting) captured in a handler
    phase: str = str(st.Phase.PENDING)


@dataclass
class Runtime:
    config: OperatorConfig
    settings: kopf.OperatorSettings
    metrics: OperatorMetrics
    connection: kopf.ConnectionInfo
    relogin: Callable[[], kopf.ConnectionInfo] | None = None
    _api: KubeApi | None = None
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _jobs: dict[tuple[str, str], _Tracked] = field(default_factory=dict)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    async def api(self) -> KubeApi:
        if self._api is None:
            self._api = KubeApi(self.connection, relogin=self.relogin)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()

    async def reconcile(self, namespace: str, name: str) -> None:
        """Reconcile one job; safe to call from any handler, any number of times."""
        key = (namespace, name)
        context = contextvars.copy_context()
        async with self._locks.setdefault(key, asyncio.Lock()):
            with self.metrics.reconcile_seconds.time():
                await self._reconcile(namespace, name, context)

    async def _reconcile(self, namespace: str, name: str, context: contextvars.Context) -> None:
        api = await self.api()
        body = await api.get(jobs_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._forget((namespace, name))
            return
        log = kopf.LocalObjectLogger(body=body, settings=self.settings)
        try:
            spec = job_spec(body)
        except SpecError as error:
            if not st.is_finished(body.get("status") or {}):
                plan = reconcile.invalid_spec(body, f"the spec does not validate: {error}",
                                              datetime.now(UTC))
                await self._carry_out_status(api, body, plan, log)
            raise kopf.PermanentError(f"the spec does not validate; nothing is done: {error}")

        pods = await api.list(pods_path(namespace), label_selector=f"{JOB_NAME_LABEL}={name}")
        service = await api.get(service_path(namespace, name))
        now = datetime.now(UTC)
        plan = reconcile.decide(body, spec, pods, service_exists=service is not None, now=now)
        retry_message = None
        if plan.needs_preflight:
            plan, retry_message = await self._preflight(body, spec, plan, log)

        await self._carry_out(api, body, spec, plan, log)
        self._track((namespace, name), plan, context)
        if retry_message:
            raise kopf.TemporaryError(retry_message, delay=self.config.preflight_retry_delay)

    async def _preflight(
        self, body: dict[str, Any], spec: TrainingJobSpec, plan: reconcile.Plan,
        log: kopf.LocalObjectLogger,
    ) -> tuple[reconcile.Plan, str | None]:
        """Check the dataset before the first pods; a plan that fails or waits if it is not OK."""
        now = datetime.now(UTC)
        try:
            report = await check_dataset(await self.api(), body["metadata"]["namespace"], spec)
        except DatasetError as error:
            return reconcile.preflight_failed(body, spec, f"pre-flight failed: {error}", now), None
        except (StorageError, CredentialsError) as error:
            delay = self.config.preflight_retry_delay
            message = f"pre-flight could not check the dataset: {error}; retrying in {delay:g} s"
            return reconcile.storage_unreachable(body, spec, message, now), message
        log.info(f"pre-flight passed: {report.describe()}")
        plan.status["preflight"] = st.preflight_status(report, now)
        return plan, None

    async def _carry_out(
        self, api: KubeApi, body: dict[str, Any], spec: TrainingJobSpec, plan: reconcile.Plan,
        log: kopf.LocalObjectLogger,
    ) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        await self._carry_out_status(api, body, plan, log)

        if plan.create_children:
            children = [build_service(body)]
            if not spec.worker.service_account_name:
                children += build_worker_rbac(body)
            for child in children:
                if await api.create(child):
                    log.debug(f"created {child['kind']} {child['metadata']['name']}")
        for pod_name in plan.delete_pods:
            if await api.delete(pods_path(namespace, pod_name)):
                log.debug(f"deleted pod {pod_name}")
        gang = int(plan.status.get("restartCount") or 0)
        for index in plan.create_pods:
            pod = build_worker_pod(
                body, index, default_image=self.config.default_image, restart_count=gang
            )
            if await api.create(pod):
                log.debug(f"created pod {pod['metadata']['name']}")
        if plan.delete_job:
            ttl = spec.run_policy.ttl_seconds_after_finished
            log.info(f"deleting the job: finished more than ttlSecondsAfterFinished={ttl} s ago")
            await api.delete(jobs_path(namespace, name))

    async def _carry_out_status(self, api: KubeApi, body: dict[str, Any], plan: reconcile.Plan,
                                log: kopf.LocalObjectLogger) -> None:
        """Patch the status if it changed, then announce each transition."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        patch = st.status_patch(body.get("status") or {}, plan.status)
        if patch:
            await api.merge_patch(jobs_path(namespace, name, status=True), {"status": patch})
        for change in plan.transitions:
            self._announce(body, change, log)

    def _announce(self, body: dict[str, Any], change: reconcile.Transition,
                  log: kopf.LocalObjectLogger) -> None:
        """A transition: one log line, one Event with the condition's reason, one metric."""
        level = logging.WARNING if change.is_warning else logging.INFO
        log.log(level, f"{change.kind}={change.status}, {change.reason}: {change.message}")
        kopf.event(body, type="Warning" if change.is_warning else "Normal",
                   reason=change.reason, message=change.message)
        self.metrics.count_transition(change.kind, change.status, change.reason)

    def _track(self, key: tuple[str, str], plan: reconcile.Plan,
               context: contextvars.Context) -> None:
        if plan.delete_job:
            self._forget(key)
            return
        loop = asyncio.get_running_loop()
        interval = self.config.sweep_interval
        if plan.recheck_after is not None:
            due = loop.time() + min(plan.recheck_after, interval)
        elif st.is_finished(plan.status):
            due = math.inf  # nothing left to enforce
        else:
            due = loop.time() + interval
        self._jobs[key] = _Tracked(due, context, plan.status.get("phase", st.Phase.PENDING))
        self.metrics.set_phases(tracked.phase for tracked in self._jobs.values())
        self._wakeup.set()

    def _forget(self, key: tuple[str, str]) -> None:
        self._jobs.pop(key, None)
        self._locks.pop(key, None)
        self.metrics.set_phases(tracked.phase for tracked in self._jobs.values())

    async def sweep_forever(self) -> None:
        """Reconcile each known job when it falls due; runs until cancelled."""
        loop = asyncio.get_running_loop()
        interval = self.config.sweep_interval
        while True:
            now = loop.time()
            for key, tracked in list(self._jobs.items()):
                if tracked.due <= now:
                    tracked.due = now + interval  # until the reconcile says otherwise
                    task = asyncio.create_task(self._sweep(*key), context=tracked.context)
                    # NB: a bug in one job's reconcile must not end the deadlines of all
                    # jobs, so its exception stays in its task and is reported from there.
                    task.add_done_callback(functools.partial(_report, key, interval))
                    await asyncio.wait([task])
            next_due = min((tracked.due for tracked in self._jobs.values()), default=math.inf)
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.01, min(
                    next_due - loop.time(), interval)))
            except TimeoutError:
                pass

    async def _sweep(self, namespace: str, name: str) -> None:
        try:
            await self.reconcile(namespace, name)
        except kopf.TemporaryError as error:
            logger.debug(f"[{namespace}/{name}] {error}")
        except (KubeApiError, aiohttp.ClientError, asyncio.TimeoutError) as error:
            logger.warning(f"[{namespace}/{name}] the periodic check failed: {error}; "
                           f"retrying in {self.config.sweep_interval:g} s")
        except kopf.PermanentError as error:
            # Only a change of the job can help, and that reconciles it anyway.
            if (tracked := self._jobs.get((namespace, name))) is not None:
                tracked.due = math.inf
            logger.error(f"[{namespace}/{name}] {error}; not checked again until it changes")


def _report(key: tuple[str, str], interval: float, task: asyncio.Task[None]) -> None:
    """Surface an unexpected failure of a periodic reconcile, with its traceback."""
    if not task.cancelled() and task.exception() is not None:
        logger.error(f"[{key[0]}/{key[1]}] the periodic check failed unexpectedly; the next "
                     f"one is in {interval:g} s", exc_info=task.exception())
