"""The operator's RBAC as data: every API call it makes, and nothing more.

Three sets of rules:

- `namespaced_rules()`: what the operator does to objects in the namespaces it watches
  (TrainingJobs, their pods, Service, worker identities, Events, the credentials Secret).
- `scanning_rules()`: cluster-scoped reads kopf itself makes to notice CRDs and namespaces
  appearing and going.
- `cluster_rules()`: both, for the default cluster-wide install (one ClusterRole).

The namespace-scoped install binds `namespaced_rules()` through a Role in each watched namespace
and `scanning_rules()` through a small ClusterRole (kopf falls back with a warning without it).
The operator runs kopf in `--standalone` mode: no peering objects, so no peering rules.

Workers get their own per-job identity (see `builders.build_worker_rbac`): `get` and `patch` on
`trainingjobs/status` of their own job only. The operator can grant that Role because it holds
those verbs itself (Kubernetes forbids granting more than one has).
"""

from __future__ import annotations

from typing import Any

from aimass.spec import GROUP, PLURAL

OPERATOR_NAME = "aimass-operator"
OPERATOR_NAMESPACE = "aimass-system"
SCANNING_ROLE_NAME = f"{OPERATOR_NAME}-scanning"
RBAC_API = "rbac.authorization.k8s.io"


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def namespaced_rules() -> list[dict[str, Any]]:
    """Calls on namespaced objects: the jobs, their children, Events and Secrets."""
    return [
        # kopf watches the jobs and patches them (annotations, finalizer-free); the TTL
        # deletes finished ones.
        _rule(GROUP, [PLURAL], ["get", "list", "watch", "patch", "delete"]),
        # Status is written through its subresource. `get` is also what lets the operator
        # grant the workers' Role on it.
        _rule(GROUP, [f"{PLURAL}/status"], ["get", "patch"]),
        # Children carry blockOwnerDeletion, which needs this where the
        # OwnerReferencesPermissionEnforcement admission plugin is on.
        _rule(GROUP, [f"{PLURAL}/finalizers"], ["update"]),
        # The worker gang: created, listed and watched for phase changes, deleted on restart,
        # suspend and clean-up.
        _rule("", ["pods"], ["create", "list", "watch", "delete"]),
        # The headless Service behind the workers' DNS names (checked on each reconcile).
        _rule("", ["services"], ["create", "get"]),
        # The per-job worker identity (ServiceAccount, Role, RoleBinding): created once (an
        # existing one is a 409, which is fine) and deleted with the job by the garbage
        # collector, through ownerReferences.
        _rule("", ["serviceaccounts"], ["create"]),
        _rule(RBAC_API, ["roles", "rolebindings"], ["create"]),
        # kopf posts an Event for each transition and handler outcome.
        _rule("", ["events"], ["create"]),
        # The pre-flight lists the dataset with the job's credentials Secret.
        # TODO: resourceNames cannot narrow this (the Secret's name is in each job's spec);
        # a per-namespace opt-in label would need an admission policy.
        _rule("", ["secrets"], ["get"]),
    ]


def scanning_rules() -> list[dict[str, Any]]:
    """Cluster-scoped reads of kopf's observers: CRDs (resource discovery) and namespaces
    (to follow namespace patterns given with --namespace)."""
    return [
        _rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
        _rule("", ["namespaces"], ["list", "watch"]),
    ]


def cluster_rules() -> list[dict[str, Any]]:
    """Everything, for the cluster-wide install's ClusterRole."""
    return [*scanning_rules(), *namespaced_rules()]


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {
        "app.kubernetes.io/name": "aimass",
        "app.kubernetes.io/component": "operator",
    }
    return metadata


def _subject() -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": OPERATOR_NAME, "namespace": OPERATOR_NAMESPACE}


def service_account() -> dict[str, Any]:
    """The operator's ServiceAccount."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(OPERATOR_NAME, OPERATOR_NAMESPACE)}


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRole", "metadata": _meta(name),
            "rules": rules}


def cluster_role_binding(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole", "name": name},
        "subjects": [_subject()],
    }


def cluster_install() -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding of the cluster-wide install."""
    return [
        service_account(),
        cluster_role(OPERATOR_NAME, cluster_rules()),
        cluster_role_binding(OPERATOR_NAME),
    ]


def namespaced_install() -> list[dict[str, Any]]:
    """Role and RoleBinding for one watched namespace (kustomize sets the namespace), plus the
    small ClusterRole for kopf's scanning. The ServiceAccount comes from the base."""
    role = {"apiVersion": f"{RBAC_API}/v1", "kind": "Role", "metadata": _meta(OPERATOR_NAME),
            "rules": namespaced_rules()}
    binding = {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": "RoleBinding",
        "metadata": _meta(OPERATOR_NAME),
        "roleRef": {"apiGroup": RBAC_API, "kind": "Role", "name": OPERATOR_NAME},
        "subjects": [_subject()],
    }
    return [
        role,
        binding,
        cluster_role(SCANNING_ROLE_NAME, scanning_rules()),
        cluster_role_binding(SCANNING_ROLE_NAME),
    ]
