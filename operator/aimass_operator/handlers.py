"""The kopf handlers: thin entries into `Runtime.reconcile`, which decides and acts.

Every trigger reconciles the whole job from what exists now, so it does not matter which one
fires, how often, or whether the operator restarted in between:

- a job is created, changed (`spec`, e.g. `suspend`), or found when the operator (re)starts;
- a pod labelled `aimass.dev/job-name` changes (the pod phases drive the status);
- the sweeper, started here, looks again when a deadline or TTL falls due.

No handler needs a finalizer (no timers, daemons or mandatory deletion handlers): children go
with their job through ownerReferences, so deleting a job never waits for the operator.

Importing this module registers the handlers in kopf's default registry; the operator's memo
must carry an `OperatorConfig` as `config` (main.py does it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from aimass.spec import GROUP, PLURAL, VERSION
from aimass_operator.metrics import OperatorMetrics
from aimass_operator.naming import JOB_NAME_LABEL
from aimass_operator.runtime import OperatorConfig, Runtime


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf and start the runtime and its sweeper."""
    config: OperatorConfig = memo.config
    # Transitions post their own Events with the condition's reason; kopf's routine
    # "handler succeeded" lines would only bury them, so only its warnings become Events.
    settings.posting.level = logging.WARNING
    # Keep kopf's bookkeeping in annotations under our group, not in `status` (which is ours).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    # Only our workers: the API server filters the pod watch, not kopf after receiving them all.
    settings.watching.label_selectors[("", "v1", "pods")] = JOB_NAME_LABEL
    runtime = Runtime(
        config=config,
        settings=settings,
        metrics=config.metrics or OperatorMetrics(CollectorRegistry()),
        connection=config.connection or load_connection(settings),
        relogin=None if config.connection else lambda: load_connection(settings),
    )
    memo.runtime = runtime
    memo.sweeper = asyncio.create_task(runtime.sweep_forever(), name="aimass sweeper")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.sweeper.cancel()
    await asyncio.gather(memo.sweeper, return_exceptions=True)
    await memo.runtime.close()


def load_connection(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In a pod, the service account; elsewhere, the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        raise kopf.LoginError("no service-account token and no kubeconfig: cannot log in")
    return info


@kopf.on.login()
def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf and the operator's own client use the same connection; a re-login re-reads it."""
    return memo.config.connection or load_connection(settings)


@kopf.on.create(GROUP, VERSION, PLURAL)
async def job_created(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.reconcile(namespace, name)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def job_resumed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """An existing job found at operator start: carry on, find children by their fixed names."""
    await memo.runtime.reconcile(namespace, name)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def job_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.reconcile(namespace, name)


@kopf.on.event("", "v1", "pods", labels={JOB_NAME_LABEL: kopf.PRESENT})
async def worker_changed(
    namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    await memo.runtime.reconcile(namespace, labels[JOB_NAME_LABEL])
