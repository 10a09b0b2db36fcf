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
  segment for a namespace prefix and fails. FILLED for kubectl by `DiscoveryMixin` below; the
  in-process operator still runs with kopf's scanning disabled and the CLI test runs
  cluster-wide, so the operator's own tests list no namespaces.
- Strategic merge patch and server-side apply are not supported; merge patches of lists
  replace them (as JSON merge patch does). Not filled: the operator only merge-patches.
- No RBAC: every request is allowed. Not filled, but `api_calls` reports each (group,
  resource, verb) served, and a test checks them against aimass_operator.rbac.

## What kubectl needs on top: `DiscoveryMixin` / `DiscoveryEmulator` (tests/delivery)

kubectl reads API discovery before it sends anything, creates Namespaces, and applies
server-side with a PATCH that creates missing objects. kmock 0.8 falls short on each of these;
`DiscoveryEmulator` (or `DiscoveryMixin` on another emulator subclass) closes the gaps:

- Discovery: `/api/v1` answers with `groupVersion: "/v1"`, which kubectl rejects ("no matches for
  kind Namespace in version v1"); it is answered as `v1`. Built-in resources come from kmock's
  bundled list (`load_bundled`), loaded on start.
- Namespaces: kmock parses `/api/v1/namespaces/<name>` as a namespace prefix without a resource,
  and `POST /api/v1/namespaces` fails to parse at all. Such paths are rewritten to a reserved
  namespace prefix before parsing and the prefix is dropped again, so Namespaces are stored as
  cluster-scoped objects like any other.
- Server-side apply: a `PATCH` with `application/apply-patch+yaml` on a missing object creates it
  (kmock answers 404), then merges as usual.
- Lists: kmock's list answers lack `kind` and `apiVersion`, which kubectl needs to decode them.
- CRDs: creating or patching a CustomResourceDefinition registers its resource for discovery, so
  kubectl can apply custom objects after their CRD, as on a real server.

Known gaps that remain: no OpenAPI (`/openapi/v2`, `/openapi/v3`), so kubectl runs with
`--validate=false`; no aggregated discovery (kubectl falls back to the legacy endpoints);
server-side apply is a plain merge without field managers or conflicts; no admission (RBAC,
schema, CEL); no creationTimestamp (kubectl shows AGE <unknown>).
"""

from __future__ import annotations

import datetime
import itertools
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import kmock
from kmock._internal import enums, rendering

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


# --- What kubectl needs: API discovery, Namespaces, server-side apply, list kinds, CRDs ---

# Cluster-scoped Namespace paths that kmock 0.8 cannot parse as such.
NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?P<rest>(/[^/]+)?(/(status|finalize))?)$")
# A namespace name no real object can have (it is not a DNS label), marking rewritten paths.
REWRITE_PREFIX = "~cluster~"
APPLY_PATCH = "application/apply-patch"
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


class DiscoveryMixin:
    """Overrides for a `kmock.KubernetesEmulator` subclass; see the module docstring."""

    async def __call__(self, raw_request: Any) -> Any:
        # NB: the rewrite must happen before kmock reads the body: aiohttp cannot clone after.
        match = NAMESPACE_PATH.match(raw_request.path)
        if match is not None:
            path = f"/api/v1/namespaces/{REWRITE_PREFIX}/namespaces{match.group('rest')}"
            rel_url = raw_request.rel_url.with_path(path).with_query(raw_request.rel_url.query)
            raw_request = raw_request.clone(rel_url=rel_url)
        return await super().__call__(raw_request)  # type: ignore[misc]

    async def _handle(self, request: rendering.Request) -> Any:
        if request.namespace == REWRITE_PREFIX:
            # NB: changed in place: kmock's filters recognise requests by identity, so a copy
            # (attrs.evolve) would match no reaction at all.
            object.__setattr__(request, "namespace", None)
        if _is_apply_patch(request):
            await self._create_missing(request)

        response = await super()._handle(request)  # type: ignore[misc]

        if request.resource == CRDS and request.action in (enums.action.CREATE,
                                                            enums.action.UPDATE):
            register_crd(self.resources, request.data or {})  # type: ignore[attr-defined]
        return response

    async def _serve_version(self, request: rendering.Request) -> Any:
        payload = await super()._serve_version(request)  # type: ignore[misc]
        if request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version

        # Subresources carry no short names or categories (kubectl warns of ambiguity otherwise).
        for entry in payload.get("resources", []):
            if "/" in entry.get("name", ""):
                entry["shortNames"], entry["categories"] = [], []
        return payload

    async def _serve_list(self, request: rendering.Request) -> Any:
        # kubectl decodes a list only with its kind (e.g. TrainingJobList) and apiVersion.
        payload = await super()._serve_list(request)  # type: ignore[misc]
        resource = request.resource
        info = self.resources[resource]  # type: ignore[attr-defined]
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        return {"apiVersion": group_version, "kind": f"{info.kind or 'Object'}List", **payload}

    async def _create_missing(self, request: rendering.Request) -> None:
        """Server-side apply creates what is not there yet; kmock then patches it as usual."""
        objects = self.objects  # type: ignore[attr-defined]
        key = (request.resource, request.namespace, request.name)
        async with self._lock:  # type: ignore[attr-defined]
            if key not in objects or objects[key].deleted:
                objects[key] = request.data or {}


@attrs.define(kw_only=True)
class DiscoveryEmulator(DiscoveryMixin, kmock.KubernetesEmulator):
    """kmock's emulator, usable by kubectl; built-in resources are known from the start."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()


def _is_apply_patch(request: rendering.Request) -> bool:
    content_type = {k.lower(): v for k, v in request.headers.items()}.get("content-type", "")
    return (request.action == enums.action.UPDATE and request.name is not None
            and content_type.startswith(APPLY_PATCH))


def register_crd(resources: kmock.ResourcesArray, crd: dict[str, Any]) -> None:
    """Make the CRD's served versions discoverable, as the API server does once it is created."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names.get("kind"),
            singular=names.get("singular"),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            shortnames=set(names.get("shortNames") or []),
            categories=set(names.get("categories") or []),
            subresources=set((version.get("subresources") or {}).keys()),
        )


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig for `server` (plain HTTP, no credentials: the emulator checks none)."""
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        f"clusters: [{{name: emulator, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: tester, user: {}}]\n"
        "contexts: [{name: emulator, context: {cluster: emulator, user: tester}}]\n"
        "current-context: emulator\n",
        encoding="utf-8",
    )
    return path
