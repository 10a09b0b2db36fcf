"""A small asyncio client for the few Kubernetes calls the operator makes itself.

kopf watches and patches through its own client but exposes none for creating other objects,
so this one covers the rest: get, list, create, delete and merge-patch on plain dicts, over
aiohttp (already a kopf dependency), with the same connection details kopf logs in with
(`kopf.ConnectionInfo`). A 409 on create and a 404 on delete are answers, not errors: names
are fixed, so "already there" and "already gone" are what a restarted operator expects.

Every path the operator uses is built here, which makes this module the list of API calls the
operator's RBAC must allow (see aimass_operator.rbac).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from aimass.spec import GROUP, PLURAL, VERSION

JOBS = f"/apis/{GROUP}/{VERSION}"
CORE = "/api/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
# Collection paths by the `kind` of the object that is created there.
COLLECTIONS = {
    "Pod": (CORE, "pods"),
    "Service": (CORE, "services"),
    "ServiceAccount": (CORE, "serviceaccounts"),
    "Role": (RBAC, "roles"),
    "RoleBinding": (RBAC, "rolebindings"),
}


# Names the operator's own calls in the API server's audit log (kopf's say kopf/<version>).
USER_AGENT = "aimass-operator"


class KubeApiError(RuntimeError):
    """The API server refused a call; the message names the verb, the path and the answer."""

    def __init__(self, verb: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{verb} {path} failed with HTTP {status}: {text[:300]}")
        self.status = status


def jobs_path(namespace: str, name: str | None = None, *, status: bool = False) -> str:
    path = f"{JOBS}/namespaces/{namespace}/{PLURAL}"
    path = f"{path}/{name}" if name else path
    return f"{path}/status" if status else path


def collection_path(kind: str, namespace: str) -> str:
    prefix, plural = COLLECTIONS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}"


def pods_path(namespace: str, name: str | None = None) -> str:
    path = collection_path("Pod", namespace)
    return f"{path}/{name}" if name else path


def service_path(namespace: str, name: str) -> str:
    return f"{collection_path('Service', namespace)}/{name}"


def secret_path(namespace: str, name: str) -> str:
    return f"{CORE}/namespaces/{namespace}/secrets/{name}"


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=_text(info.ca_data) if info.ca_data else None,
    )
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    # TODO: client certificates given inline (certificate_data) need a temporary file.
    return context


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _auth_headers(info: kopf.ConnectionInfo) -> dict[str, str]:
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    if info.username and info.password:
        pair = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


class KubeApi:
    """JSON in, JSON out, against one API server. Create it inside the running event loop."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = info.server.rstrip("/")
        self._auth = _auth_headers(info)
        # Service-account tokens are rotated by the kubelet: on a 401, log in again once.
        self._relogin = relogin
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        verb: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
        retried: bool = False,
    ) -> tuple[int, Any]:
        headers = {**self._auth, **({"Content-Type": content_type} if body is not None else {})}
        async with self._session.request(
            verb, self.server + path, json=body, params=params, headers=headers,
        ) as response:
            if response.status == 401 and self._relogin is not None and not retried:
                # Once per call: a second 401 with fresh credentials is a real refusal.
                self._auth = _auth_headers(self._relogin())
                return await self._call(verb, path, body=body, params=params,
                                        content_type=content_type, allow=allow, retried=True)
            if response.status in allow:
                return response.status, None
            if response.status >= 400:
                raise KubeApiError(verb, path, response.status, await response.text())
            return response.status, await response.json(content_type=None)

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None if there is none."""
        status, data = await self._call("GET", path, allow=(404,))
        return None if status == 404 else data

    async def list(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        _, data = await self._call("GET", path, params=params)
        return list((data or {}).get("items") or [])

    async def create(self, obj: Mapping[str, Any]) -> bool:
        """Create `obj` in its namespace; False if an object of that name already exists."""
        path = collection_path(str(obj["kind"]), str(obj["metadata"]["namespace"]))
        status, _ = await self._call("POST", path, body=obj, allow=(409,))
        return status != 409

    async def delete(self, path: str) -> bool:
        """Delete, letting the garbage collector take dependents; False if already gone."""
        options = {"propagationPolicy": "Background"}
        status, _ = await self._call("DELETE", path, body=options, allow=(404,))
        return status != 404

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch; None if the object is gone."""
        status, data = await self._call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json", allow=(404,)
        )
        return None if status == 404 else data
