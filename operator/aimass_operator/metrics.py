"""Prometheus metrics of the operator: job outcomes, jobs by phase and reconcile duration.

Counters move on condition transitions (so a reconcile repeated after an operator restart does
not count a job twice within one process); the phase gauge is recomputed from the phases the
operator last saw, so a deleted job drops out of it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from aimass_operator import status as st


class OperatorMetrics:
    """The operator's metrics, registered in one registry (a fresh one per test if wanted)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.jobs_created = Counter(
            "aimass_jobs_created", "TrainingJobs whose workers were created.",
            registry=registry,
        )
        self.jobs_succeeded = Counter(
            "aimass_jobs_succeeded", "TrainingJobs that succeeded.", registry=registry
        )
        self.jobs_failed = Counter(
            "aimass_jobs_failed", "TrainingJobs that failed, by reason.", ["reason"],
            registry=registry,
        )
        self.jobs_restarted = Counter(
            "aimass_jobs_restarted", "Gang restarts of TrainingJobs after a worker failed.",
            registry=registry,
        )
        self.jobs_by_phase = Gauge(
            "aimass_jobs", "TrainingJobs the operator knows, by phase.", ["phase"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "aimass_reconcile_duration_seconds", "Time one reconcile of a TrainingJob took.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        for phase in st.Phase:
            self.jobs_by_phase.labels(phase=str(phase)).set(0)

    def count_transition(self, kind: str, status: bool, reason: str) -> None:
        if not status:
            return
        if kind == st.CREATED:
            self.jobs_created.inc()
        elif kind == st.SUCCEEDED:
            self.jobs_succeeded.inc()
        elif kind == st.FAILED:
            self.jobs_failed.labels(reason=reason).inc()
        elif kind == st.RESTARTING:
            self.jobs_restarted.inc()

    def set_phases(self, phases: Iterable[str]) -> None:
        counts = {str(phase): 0 for phase in st.Phase}
        for phase in phases:
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.jobs_by_phase.labels(phase=phase).set(count)


def serve(metrics: OperatorMetrics, port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` from a daemon thread."""
    _start_http_server(port, addr=address, registry=metrics.registry)
