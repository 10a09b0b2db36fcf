"""Every request the running operator sends is allowed by the Role it gets.

The static check in test_rbac.py reads the calls from the code; this one watches them happen.
The operator runs as the namespace-scoped install runs it (one watched namespace, kopf's cluster
observers on) against the emulator, through a job's life: pre-flight, a failed gang and its
restart, success, and deletion by TTL. Each request it sent is then held against
`rbac.namespaced_rules()` (in the namespace) or `rbac.scanning_rules()` (cluster-scoped).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import attrs
import kmock
from prometheus_client import CollectorRegistry

import aimass_operator.handlers  # noqa: F401  (registers the handlers kopf runs)
from aimass.seaweed import SeaweedServer
from aimass_operator import rbac
from aimass_operator.crd import build_crd
from aimass_operator.metrics import OperatorMetrics
from delivery.api_calls import allows, is_discovery, verb_of
from support.kube import (
    JOBS,
    PODS,
    ClusterEmulator,
    failed_status,
    running_status,
    succeeded_status,
)
from support.harness import running_operator
from support.images import put_placeholder_dataset
from support.kube import DiscoveryMixin, register_crd

NAMESPACE = "ml"
TEST_CLIENT = "aimass-delivery-test"


@attrs.define(kw_only=True)
class ObservedCluster(DiscoveryMixin, ClusterEmulator):
    """support.kube's emulator, plus Namespaces and the built-in resources, so kopf's cluster
    observers (CRDs, namespaces) run as they do in production instead of being turned off."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        register_crd(self.resources, build_crd())


async def _until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def test_every_request_the_running_operator_sends_is_allowed_by_its_role(
    s3_server: SeaweedServer, client: Any, bucket: str
) -> None:
    name = "rbac-probe"
    secret = {"AWS_ACCESS_KEY_ID": s3_server.access_key,
              "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    job = {
        "apiVersion": "aimass.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "dataset": {"train": put_placeholder_dataset(client, f"s3://{bucket}/train"),
                        "imageSize": [16, 16]},
            "output": {"uri": f"s3://{bucket}/models/{name}"},
            "storage": {"endpoint": s3_server.endpoint, "credentialsSecret": "s3"},
            "workers": 2,
            "runPolicy": {"backoffLimit": 1, "ttlSecondsAfterFinished": 0},
        },
    }

    async with ObservedCluster() as cluster, kmock.Server(cluster), aiohttp.ClientSession(
        base_url=str(cluster.url), headers={"User-Agent": TEST_CLIENT}
    ) as client, running_operator(cluster, OperatorMetrics(CollectorRegistry()),
                                              namespace=NAMESPACE, scanning=True):
        namespace_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await client.post("/api/v1/namespaces", json=namespace_body)
        secret_body = {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "s3", "namespace": NAMESPACE},
                       "data": {k: base64.b64encode(v.encode()).decode()
                                for k, v in secret.items()}}
        await client.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret_body)
        await client.post(f"/apis/aimass.dev/v1alpha1/namespaces/{NAMESPACE}/trainingjobs",
                          json=job)

        # A failure (gang restart: pods deleted), then success, then the TTL deletes the job.
        for gang, last in ((0, failed_status(1, "boom")), (1, succeeded_status())):
            await _until(lambda g=gang: sorted(
                pod["metadata"]["labels"]["aimass.dev/restart-count"]
                for pod in cluster.live(PODS, NAMESPACE).values()) == [str(g)] * 2,
                f"gang {gang} of two pods")
            for index in (0, 1):
                await cluster.set_pod_status(NAMESPACE, f"{name}-worker-{index}",
                                             running_status())
            await cluster.set_pod_status(NAMESPACE, f"{name}-worker-0", last)
        await _until(lambda: name not in cluster.live(JOBS, NAMESPACE), "the TTL deletion")

    sent = [request for request in cluster if request.headers.get("User-Agent") != TEST_CLIENT]
    seen = set()
    for request in sent:
        described = f"{request.method.value} {request.url.path_qs}"
        if request.resource is None or not request.resource.plural:
            assert is_discovery(request.url.path), f"{described} is no API call RBAC can grant"
            continue
        group, namespace, target = request.resource.group, request.namespace, request.name
        resource = "/".join(filter(None, [request.resource.plural, request.subresource]))
        verb = verb_of(request.method.value, target, dict(request.params))
        # The namespaced install: a Role in the watched namespace, the scanning ClusterRole.
        rules = rbac.namespaced_rules() if namespace else rbac.scanning_rules()
        assert namespace in (None, NAMESPACE), f"{described} reaches outside {NAMESPACE}"
        assert allows(rules, group, resource, verb, target), f"{described} is not allowed"
        seen.add((group, resource, verb))
    assert {("", "pods", "create"), ("", "pods", "delete"), ("aimass.dev", "trainingjobs",
            "delete"), ("", "secrets", "get"), ("", "events", "create")} <= seen
