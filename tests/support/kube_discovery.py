"""What kubectl needs from kmock's Kubernetes emulator, on top of what kmock 0.8 serves.

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

import re
from pathlib import Path
from typing import Any

import attrs
import kmock
from kmock._internal import enums, rendering

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
