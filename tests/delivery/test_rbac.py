"""The operator's RBAC covers every API call the operator makes, and nothing more; a worker can
reach only its own job's status.

The calls are read from the code (delivery.api_calls explains how) and compared with
`aimass_operator.rbac`, which both the chart and the manifests are generated from, both ways.
The worker's side is checked by running its progress reporter against the emulator and holding
each request it sends against the per-job worker Role. test_rbac_in_operation.py does the same
for the running operator.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import pkgutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

import aimass_operator
from aimass.kube_progress import KubeProgressReporter
from aimass.progress import EpochMetrics
from aimass_operator import builders, kubeapi, rbac
from aimass_operator.crd import build_crd
from delivery.api_calls import (
    KOPF_OBSERVERS,
    Call,
    allows,
    built_kinds,
    client_calls,
    expand,
    grants_needed,
    is_discovery,
    kopf_calls,
    parse_path,
    verb_of,
)
from delivery.tooling import ROOT, load_yaml
from support.kube import DiscoveryEmulator, register_crd

NAMESPACE = "ml"


@pytest.fixture(scope="module")
def sample_job() -> dict[str, Any]:
    job = load_yaml(ROOT / "examples" / "pretrain-fashion.yaml")[0]
    job["metadata"] |= {"namespace": NAMESPACE, "uid": "0f6c1d8e-5a6b-4c57-9d2e-3f1a2b3c4d5e"}
    return job


@pytest.fixture(scope="module")
def needed(sample_job: dict[str, Any]) -> list[Call]:
    """Every permission the operator's code needs, with where it needs it."""
    kinds = built_kinds(builders)
    calls = [Call(*permission, "kopf's observers") for permission in sorted(KOPF_OBSERVERS)]
    for info in pkgutil.iter_modules(aimass_operator.__path__):
        module = importlib.import_module(f"aimass_operator.{info.name}")
        if module is not kubeapi:
            calls += client_calls(module, kubeapi, kinds) + kopf_calls(module)
    return calls + grants_needed(builders, sample_job)


def test_the_operator_rbac_allows_every_call_the_code_makes(needed: list[Call]) -> None:
    granted = expand(rbac.cluster_rules())

    missing = [call for call in needed if call.permission not in granted]

    assert not missing, "calls the operator's RBAC does not allow:\n" + "\n".join(
        f"  {call.verb} {call.group or 'core'}/{call.resource} at {call.where}" for call in missing
    )


def test_the_operator_rbac_grants_nothing_the_code_does_not_use(needed: list[Call]) -> None:
    used = {call.permission for call in needed}

    unused = sorted(expand(rbac.cluster_rules()) - used)

    assert not unused, "granted in aimass_operator/rbac.py but never used by the code:\n" + (
        "\n".join(f"  {verb} {group or 'core'}/{resource}" for group, resource, verb in unused)
    )


def test_the_scan_sees_the_operators_main_calls(needed: list[Call]) -> None:
    used = {call.permission for call in needed}

    # If the scan went blind (say, a renamed client), these would vanish and the two tests
    # above would compare nothing.
    assert ("", "pods", "create") in used
    assert ("aimass.dev", "trainingjobs/status", "patch") in used
    assert ("aimass.dev", "trainingjobs", "watch") in used
    assert ("", "events", "create") in used


def test_the_scan_refuses_a_call_it_cannot_place(tmp_path: Path) -> None:
    source = tmp_path / "opaque_caller.py"
    source.write_text("async def run(api, path):\n    await api.delete(path)\n")
    spec = importlib.util.spec_from_file_location("opaque_caller", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    with pytest.raises(AssertionError, match="opaque_caller.py:2: cannot tell which resource"):
        client_calls(module, kubeapi, set())


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/aimass.dev/v1alpha1/trainingjobs", {"watch": "true"},
         ("aimass.dev", "trainingjobs", None, None, "watch")),
        ("GET", "/api/v1/namespaces/ml/pods", {}, ("", "pods", "ml", None, "list")),
        ("PATCH", "/apis/aimass.dev/v1alpha1/namespaces/ml/trainingjobs/a/status", {},
         ("aimass.dev", "trainingjobs/status", "ml", "a", "patch")),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles", {},
         ("rbac.authorization.k8s.io", "roles", "ml", None, "create")),
        ("DELETE", "/api/v1/namespaces/ml/pods/a-worker-0", {},
         ("", "pods", "ml", "a-worker-0", "delete")),
        ("GET", "/api/v1/namespaces", {}, ("", "namespaces", None, None, "list")),
    ],
)
def test_requests_map_to_rbac_verbs(
    method: str, path: str, query: dict[str, str], expected: tuple[Any, ...]
) -> None:
    group, resource, namespace, name = parse_path(path)

    assert (group, resource, namespace, name, verb_of(method, name, query)) == expected


def test_discovery_paths_need_no_rules() -> None:
    assert all(is_discovery(path) for path in ("/api", "/api/v1", "/apis", "/apis/apps",
                                               "/apis/aimass.dev/v1alpha1", "/version"))
    assert not is_discovery("/api/v1/pods")
    assert not is_discovery("/apis/aimass.dev/v1alpha1/trainingjobs")


def test_worker_pods_run_as_the_per_job_identity(sample_job: dict[str, Any]) -> None:
    account, role, binding = builders.build_worker_rbac(sample_job)
    pod = builders.build_worker_pod(sample_job, 0, default_image="aimass/trainer:0",
                                    restart_count=0)

    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": ["aimass.dev"], "resources": ["trainingjobs/status"],
                              "resourceNames": [sample_job["metadata"]["name"]],
                              "verbs": ["get", "patch"]}]


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[DiscoveryEmulator, str]]:
    async with DiscoveryEmulator() as emulator, kmock.Server(emulator) as server:
        register_crd(emulator.resources, build_crd())
        yield emulator, str(server.url).rstrip("/")


async def test_a_worker_reports_progress_within_its_own_role(
    emulator: tuple[DiscoveryEmulator, str], sample_job: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = emulator
    name = sample_job["metadata"]["name"]
    server.objects["aimass.dev/v1alpha1/trainingjobs", NAMESPACE, name] = sample_job
    reporter = KubeProgressReporter(job=name, namespace=NAMESPACE, api_url=url, min_interval=0)
    metrics = EpochMetrics(epoch=1, epochs=2, loss=0.5, accuracy=0.75)

    def train() -> None:
        reporter.on_train_begin(epochs=2, initial_epoch=0, steps_per_epoch=4)
        reporter.on_batch_end(epoch=0, step=1, logs={"loss": 0.9, "accuracy": 0.5})
        reporter.on_epoch_end(metrics)
        reporter.on_train_end(model_uri="s3://m/model.keras", final={"val_accuracy": 0.7})

    # urllib blocks: run it beside the emulator's event loop, bounded.
    await asyncio.wait_for(asyncio.to_thread(train), timeout=30)

    rules = builders.worker_status_rules(name)
    requests = [(r.method.value, r.url.path, dict(r.params)) for r in server]
    assert requests, "the reporter sent nothing"
    for method, path, query in requests:
        group, resource, namespace, target = parse_path(path)
        verb = verb_of(method, target, query)
        assert namespace == NAMESPACE
        assert allows(rules, group, resource, verb, target), f"{method} {path} not allowed"
    stored = server.objects["aimass.dev/v1alpha1/trainingjobs", NAMESPACE, name]
    assert stored["status"]["epochProgress"] == "1/2"
    assert not allows(rules, "aimass.dev", "trainingjobs/status", "patch", "another-job")
    assert not allows(rules, "aimass.dev", "trainingjobs", "patch", name)

