"""kmock's Kubernetes emulator, extended just enough for kopf and the aimass operator.

kmock 0.8 (pinned in pyproject's dev extra) keeps objects in memory and serves create, get,
list, watch, merge-patch and delete over HTTP. These are its gaps against a real API server, and
what this module does about each:

- `metadata.generateName` is ignored, so kopf's Events (all nameless) collide with 409.
  FILLED: create makes the name from generateName and a random suffix.
- No uid, resourceVersion, generation or creationTimestamp. FILLED: create sets all four;
  a patch bumps resourceVersion, and generation when `spec` changes (conditions carry
  observedGeneration; ownerReferences need the owner's uid).
- The status subresource is not isolated: PATCH .../status merges the whole body, and a PATCH
  of the object can change `status`. FILLED for resources registered with a `status`
  subresource: .../status keeps only `status`, the main resource drops it.
- No garbage collection: deleting an owner leaves its dependents. FILLED: deleting an object
  deletes, recursively, every object whose ownerReferences name its uid (as a background
  cascade does), each with a DELETED watch event.
- Discovery knows only resources declared or already stored, and kopf will not watch
  anything until `v1/namespaces` is discoverable. FILLED: the TrainingJob CRD (namespaced,
  status subresource), namespaces, and the core/RBAC kinds the operator touches are declared.
- No kubelet and no scheduler: pods stay as created. FILLED by `set_pod_status`, a test-side
  fake kubelet that patches a pod's status and emits the MODIFIED event a watch would see.
- Label selectors (`?labelSelector=`) are IGNORED: a list returns every object of the
  namespace. Not filled: the operator filters pods by label itself, and kopf re-checks the
  labels of what its (server-side filtered) pod watch streams, so neither relies on it.
- No schema validation, defaulting, CEL rules or admission: the emulator stores whatever it is
  sent. Not filled: schema tests validate against the generated CRD instead.
- No graceful deletion: objects without finalizers vanish at once (pods have no
  deletionTimestamp phase). Not filled: the operator's handling of terminating pods is covered
  by the pure reconcile tests.
- resourceVersion is ignored on watch and list (`?resourceVersion=` does not replay history) and
  there are no 410 Gone / bookmarks; a watch re-lists everything as ADDED. Not filled: kopf
  copes, and nothing here depends on it.
- `/api/v1/namespaces` itself cannot be served: kmock's path parser takes the `namespaces`
  segment for a namespace prefix and fails. Not filled: the in-process operator runs with
  kopf's scanning disabled and the CLI test runs cluster-wide, so nothing lists namespaces.
- Strategic merge patch and server-side apply are not supported; merge patches of lists
  replace them (as JSON merge patch does). Not filled: the operator only merge-patches.
- No RBAC: every request is allowed. Not filled, but `api_calls` reports each (group,
  resource, verb) served, and a test checks them against aimass_operator.rbac.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import kmock

from aimass.spec import CATEGORIES, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

JOBS = kmock.resource(GROUP, VERSION, PLURAL)
PODS = kmock.resource("", "v1", "pods")
SERVICES = kmock.resource("", "v1", "services")
SECRETS = kmock.resource("", "v1", "secrets")
EVENTS = kmock.resource("", "v1", "events")

_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
_DECLARED = {
    f"{GROUP}/{VERSION}/{PLURAL}": kmock.ResourceInfo(
        kind=KIND, singular=SINGULAR, namespaced=True, subresources={"status"},
        shortnames=set(SHORT_NAMES), categories=set(CATEGORIES), verbs=_VERBS,
    ),
    "v1/pods": kmock.ResourceInfo(kind="Pod", singular="pod", namespaced=True,
                                  subresources={"status"}, verbs=_VERBS),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, verbs=_VERBS),
    "v1/serviceaccounts": kmock.ResourceInfo(kind="ServiceAccount", namespaced=True,
                                             verbs=_VERBS),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True, verbs=_VERBS),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs=_VERBS),
    # kopf waits for namespaces in discovery before it watches anything namespaced.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=_VERBS),
    "rbac.authorization.k8s.io/v1/roles": kmock.ResourceInfo(kind="Role", namespaced=True,
                                                             verbs=_VERBS),
    "rbac.authorization.k8s.io/v1/rolebindings": kmock.ResourceInfo(
        kind="RoleBinding", namespaced=True, verbs=_VERBS
    ),
}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """A KubernetesEmulator with the gaps above filled; use it as kmock's class."""

    _versions: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in _DECLARED.items():
            self.resources[key] = info

    def _has_status(self, resource: kmock.resource | None) -> bool:
        for declared, info in self.resources.items():
            if declared == resource:
                return "status" in info.subresources
        return False

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            self._amend(request)
        deleted = None
        if request.action == kmock.action.DELETE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                deleted = self.objects[key].get("metadata", {}).get("uid")
        response = await super()._handle(request)
        if deleted:
            await self._collect_garbage({deleted})
        return response

    def _amend(self, request: kmock.Request) -> None:
        """Fill the server-side metadata and isolate the status subresource.

        NB: the request's body dict is edited in place: kmock matches reactions against the
        very request objects it recorded, so a changed copy would match nothing.
        """
        data: dict[str, Any] = request.data
        if request.action == kmock.action.CREATE:
            metadata = data.setdefault("metadata", {})
            metadata.setdefault("namespace", request.namespace)
            if not metadata.get("name") and metadata.get("generateName"):
                metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            metadata["uid"] = str(uuid.uuid4())
            metadata["resourceVersion"] = str(next(self._versions))
            metadata["generation"] = 1
            metadata["creationTimestamp"] = _now()
            if self._has_status(request.resource) and request.subresource is None:
                data.pop("status", None)
        elif request.action == kmock.action.UPDATE and request.name is not None:
            if self._has_status(request.resource):
                if request.subresource == "status":
                    for key in [key for key in data if key != "status"]:
                        del data[key]
                else:
                    data.pop("status", None)
            key = (request.resource, request.namespace, request.name)
            current = self.objects[key] if key in self.objects else None
            metadata = data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(next(self._versions))
            if current is not None and not current.deleted and "spec" in data:
                old = dict(current).get("metadata", {}).get("generation", 1)
                metadata["generation"] = old + 1

    async def _collect_garbage(self, owners: set[str]) -> None:
        """Delete dependents of the deleted `owners` (by uid), recursively, with events."""
        while owners:
            dependents = set()
            for (resource, namespace, name), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                refs = dict(obj).get("metadata", {}).get("ownerReferences") or []
                if any(ref.get("uid") in owners for ref in refs):
                    raw = obj.raw
                    async with self._lock:
                        obj.delete()
                        await self._buses[resource].put({"type": "DELETED", "object": raw})
                    dependents.add(raw["metadata"]["uid"])
            owners = dependents

    async def set_pod_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """The fake kubelet: merge `status` into the pod and emit the watch event."""
        key = (PODS, namespace, name)
        async with self._lock:
            obj = self.objects[key]
            obj.patch({"status": dict(status),
                       "metadata": {"resourceVersion": str(next(self._versions))}})
            await self._buses[PODS].put({"type": "MODIFIED", "object": obj.raw})

    def creations(self, resource: kmock.resource) -> int:
        """How many create requests for `resource` the emulator has served."""
        return sum(1 for request in self if request.action == kmock.action.CREATE
                   and request.resource == resource)

    def api_calls(self, user_agent_prefix: str = "") -> set[tuple[str, str, str]]:
        """(API group, resource[/subresource], RBAC verb) of every request to a resource
        served so far whose User-Agent starts with `user_agent_prefix`."""
        calls = set()
        for request in self:
            agent = request.headers.get("User-Agent", "")
            resource = request.resource
            if resource is None or resource.plural is None or not agent.startswith(
                user_agent_prefix
            ):
                continue
            method = str(request.method.value).upper()
            if method == "GET":
                verb = ("watch" if request.params.get("watch") == "true"
                        else "get" if request.name else "list")
            else:
                verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                        "DELETE": "delete"}[method]
            plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
            calls.add((resource.group or "", plural, verb))
        return calls

    def live(self, resource: kmock.resource, namespace: str) -> dict[str, dict[str, Any]]:
        """The objects of a resource in a namespace that exist now, by name."""
        return {
            name: obj.raw
            for (res, ns, name), obj in list(self.objects.items())
            if res == resource and ns == namespace and not obj.deleted
        }


def running_status() -> dict[str, Any]:
    return {"phase": "Running", "containerStatuses": [
        {"name": "trainer", "ready": True, "state": {"running": {"startedAt": _now()}}}
    ]}


def succeeded_status() -> dict[str, Any]:
    return {"phase": "Succeeded", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    ]}


def failed_status(exit_code: int, message: str) -> dict[str, Any]:
    return {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {
            "exitCode": exit_code, "reason": "Error", "message": message}}}
    ]}
