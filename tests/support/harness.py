"""Helpers for running the real operator against the emulator, shared by the operator and
delivery tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import kopf

import aimass_operator.handlers  # noqa: F401  (registers the handlers)
from aimass_operator.metrics import OperatorMetrics
from aimass_operator.runtime import OperatorConfig
from support.kube import ClusterEmulator

NAMESPACE = "ml"
IMAGE = "registry.test/aimass:test"
SECRET_NAME = "s3-credentials"


@contextlib.asynccontextmanager
async def running_operator(
    cluster: ClusterEmulator, metrics: OperatorMetrics, *, sweep_interval: float = 0.2,
    namespace: str = NAMESPACE, scanning: bool = False,
) -> AsyncIterator[None]:
    """The operator as `aimass operator` runs it, watching one namespace, for a `with` block.

    `scanning` turns kopf's cluster observers (CRDs, namespaces) on; the emulator must then serve
    Namespaces (`support.kube.DiscoveryMixin`).
    """
    config = OperatorConfig(
        default_image=IMAGE,
        connection=kopf.ConnectionInfo(server=str(cluster.url).rstrip("/")),
        sweep_interval=sweep_interval,
        preflight_retry_delay=1.0,
        metrics=metrics,
    )
    settings = kopf.OperatorSettings()
    # kmock alone cannot list /api/v1/namespaces, and the namespace here is fixed anyway.
    settings.scanning.disabled = not scanning
    settings.batching.idle_timeout = 0.2
    settings.batching.batch_window = 0.01
    settings.watching.reconnect_backoff = 0.1
    # NB: kopf cancels every task of its event loop that it did not start with it, the test's
    # own included, so the operator gets a loop of its own in a thread, as in production.
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(name="operator", daemon=True, target=lambda: asyncio.run(
        kopf.operator(namespaces=[namespace], standalone=True, settings=settings,
                      stop_flag=stop, ready_flag=ready, memo=kopf.Memo(config=config))
    ))
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start in 10 s"
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "the operator did not stop in 15 s"


async def apply(api: aiohttp.ClientSession, job: dict[str, Any]) -> None:
    path = f"/apis/aimass.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs"
    async with api.post(path, json=job) as response:
        assert response.status < 300, await response.text()


async def eventually(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]], *, timeout: float = 10.0,
    what: str = "the condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s (last value: {last!r})")
