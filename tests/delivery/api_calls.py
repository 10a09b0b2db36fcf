"""The Kubernetes API calls the operator's code makes, read from the code itself.

The RBAC test compares these with `aimass_operator.rbac`. Three kinds of calls exist:

- the operator's own client (`aimass_operator.kubeapi.KubeApi`): every `api.<verb>(<path>)` call
  in the package is found in the syntax tree; its path helper (`jobs_path`, `pods_path`, ...) is
  called with placeholder arguments and the path it returns is parsed, so the resource comes
  from kubeapi's own code, not from a second list here. `api.create(obj)` creates whatever the
  builders build: every `"kind": "..."` literal in builders.py, routed by `kubeapi.COLLECTIONS`;
- kopf's calls, implied by the handlers' decorators (watching means list + watch; change handlers
  persist their progress with a patch), by `kopf.event` (an Event), and kopf's observers, which
  list and watch CustomResourceDefinitions and Namespaces;
- grants the operator must hold without calling them: the per-job worker Role (Kubernetes lets
  nobody grant what they do not hold) and `finalizers` update for children that carry
  `blockOwnerDeletion`.

A call this module cannot classify fails the test with its file and line, so a new kind of call
cannot slip past the RBAC check unnoticed.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aimass.spec import GROUP, PLURAL

# KubeApi's methods and the RBAC verb each needs.
CLIENT_VERBS = {"get": "get", "list": "list", "create": "create", "delete": "delete",
                "merge_patch": "patch"}
# kopf change handlers store their progress on the object (annotations) with a patch.
KOPF_PATCHING = {"create", "update", "resume", "delete", "field", "timer", "daemon"}
KOPF_WATCHING = KOPF_PATCHING | {"event", "index"}
# kopf's posting calls, each an Event created through the API.
KOPF_EVENTS = {"event", "info", "warn", "exception"}
# kopf's observers: CRDs (to notice resources appear) and namespaces (for namespace patterns).
KOPF_OBSERVERS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}


@dataclass(frozen=True)
class Call:
    """One permission the code needs, and where (or why) it needs it."""

    group: str
    resource: str
    verb: str
    where: str

    @property
    def permission(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def parse_path(path: str) -> tuple[str, str, str | None, str | None]:
    """(group, resource[/subresource], namespace, name) of an API path."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"{path!r} is not a Kubernetes API path")

    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    return group, resource, namespace, name


def verb_of(method: str, name: str | None, query: dict[str, str]) -> str:
    """The RBAC verb an HTTP request on a resource (or one named object of it) needs."""
    method = method.upper()
    if method == "GET":
        return "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete" if name else "deletecollection"}[method]


def is_discovery(path: str) -> bool:
    """Discovery and version paths, which the built-in system:discovery role opens to everyone."""
    parts = path.strip("/").split("/")
    return (parts[0] in ("version", "openapi") or (parts[0] == "api" and len(parts) <= 2)
            or (parts[0] == "apis" and len(parts) <= 3))


def _where(module: ModuleType, node: ast.AST) -> str:
    return f"{Path(inspect.getfile(module)).name}:{getattr(node, 'lineno', '?')}"


def _placeholder(node: ast.expr) -> Any:
    """Constants stay (status=True matters); anything else becomes a placeholder name."""
    return node.value if isinstance(node, ast.Constant) else "placeholder"


def client_calls(module: ModuleType, kubeapi: ModuleType, kinds: set[str]) -> list[Call]:
    """Every `api.<verb>(...)` call in `module`, as permissions."""
    calls = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = ast.unparse(node.func.value)
        if node.func.attr not in CLIENT_VERBS or not receiver.lower().endswith("api"):
            continue
        verb, where = CLIENT_VERBS[node.func.attr], _where(module, node)

        if verb == "create":
            for kind in sorted(kinds):
                prefix, plural = kubeapi.COLLECTIONS[kind]
                group = parse_path(f"{prefix}/{plural}")[0]
                calls.append(Call(group, plural, verb, f"{where} (creates {kind})"))
            continue

        helper = node.args[0] if node.args else None
        if not (isinstance(helper, ast.Call) and isinstance(helper.func, ast.Name)
                and hasattr(kubeapi, helper.func.id)):
            raise AssertionError(f"{where}: cannot tell which resource {ast.unparse(node)} "
                                 "reaches; build its path with a kubeapi helper")
        path = getattr(kubeapi, helper.func.id)(
            *[_placeholder(arg) for arg in helper.args],
            **{kw.arg: _placeholder(kw.value) for kw in helper.keywords if kw.arg},
        )
        group, resource, _, _ = parse_path(path)
        calls.append(Call(group, resource, verb, f"{where} {ast.unparse(node)}"))
    return calls


def built_kinds(builders: ModuleType) -> set[str]:
    """Kinds of the objects the builders build: every `"kind": "<Kind>"` literal."""
    kinds = set()
    for node in ast.walk(ast.parse(inspect.getsource(builders))):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "kind"
                        and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    kinds.add(value.value)
    return kinds


def _resolve(module: ModuleType, node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(module, node.id)
    raise AssertionError(f"{_where(module, node)}: cannot read {ast.unparse(node)}")


def kopf_calls(module: ModuleType) -> list[Call]:
    """Calls kopf makes on behalf of `module`'s handlers and event posting."""
    calls = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        where = _where(module, node)

        if name.startswith(("kopf.on.", "kopf.timer", "kopf.daemon", "kopf.index")):
            kind = name.rsplit(".", 1)[-1]
            if kind in KOPF_WATCHING:
                group, version, plural = (_resolve(module, arg) for arg in node.args[:3])
                verbs = ["list", "watch"] + (["patch"] if kind in KOPF_PATCHING else [])
                calls += [Call(group, plural, verb, f"{where} @{name}") for verb in verbs]
        elif name in {f"kopf.{event}" for event in KOPF_EVENTS}:
            calls.append(Call("", "events", "create", f"{where} {name}"))
    return calls


def grants_needed(builders: ModuleType, sample_job: dict[str, Any]) -> list[Call]:
    """Permissions the operator must hold to create its children, without calling them."""
    calls = []
    for rule in builders.worker_status_rules(sample_job["metadata"]["name"]):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                calls += [Call(group, resource, verb, "granted to the worker Role")
                          for verb in rule["verbs"]]

    service = builders.build_service(sample_job)
    if any(ref.get("blockOwnerDeletion") for ref in service["metadata"]["ownerReferences"]):
        calls.append(Call(GROUP, f"{PLURAL}/finalizers", "update",
                          "children set blockOwnerDeletion on their TrainingJob owner"))
    return calls


def expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) a list of PolicyRules grants."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str,
           name: str | None) -> bool:
    """Whether the rules allow one request, resourceNames included."""
    for rule in rules:
        names = rule.get("resourceNames")
        if ((group, resource, verb) in expand([rule])
                and (not names or (name is not None and name in names))):
            return True
    return False
