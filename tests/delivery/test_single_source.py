"""One source of truth: the CRD and the RBAC rules in the chart, in the manifests and from the
generator (aimass_operator.crd, aimass_operator.rbac) are identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aimass_operator import rbac
from aimass_operator.crd import CRD_NAME, build_crd
from delivery.tooling import CHART, MANIFESTS, helm_template, kustomize, load_yaml, only


@pytest.fixture(scope="module")
def chart_default(helm: Path) -> list[dict[str, Any]]:
    return helm_template(helm)


@pytest.fixture(scope="module")
def chart_namespaced(helm: Path) -> list[dict[str, Any]]:
    return helm_template(helm, CHART / "ci" / "namespaced-values.yaml")


@pytest.fixture(scope="module")
def base(kubectl: Path) -> list[dict[str, Any]]:
    return kustomize(kubectl, MANIFESTS)


@pytest.fixture(scope="module")
def namespaced(kubectl: Path) -> list[dict[str, Any]]:
    return kustomize(kubectl, MANIFESTS / "overlays" / "namespaced")


def test_the_crd_is_the_same_in_the_chart_the_manifests_and_the_generator(
    base: list[dict[str, Any]],
) -> None:
    generated = build_crd()
    in_chart = only(load_yaml(CHART / "crds" / f"{CRD_NAME}.yaml"), "CustomResourceDefinition")
    in_manifests = only(base, "CustomResourceDefinition")

    assert in_chart == generated
    assert in_manifests == generated


def test_the_cluster_wide_rules_are_the_same_everywhere(
    chart_default: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    generated = rbac.cluster_rules()

    assert only(chart_default, "ClusterRole")["rules"] == generated
    assert only(base, "ClusterRole")["rules"] == generated


def test_the_namespaced_rules_are_the_same_everywhere(
    chart_namespaced: list[dict[str, Any]], namespaced: list[dict[str, Any]]
) -> None:
    roles = [doc for doc in chart_namespaced if doc["kind"] == "Role"]

    assert roles and all(role["rules"] == rbac.namespaced_rules() for role in roles)
    assert only(namespaced, "Role")["rules"] == rbac.namespaced_rules()
    assert only(chart_namespaced, "ClusterRole")["rules"] == rbac.scanning_rules()
    assert only(namespaced, "ClusterRole")["rules"] == rbac.scanning_rules()


def test_the_cluster_wide_grant_is_exactly_the_namespaced_and_scanning_grants() -> None:
    assert rbac.cluster_rules() == [*rbac.scanning_rules(), *rbac.namespaced_rules()]


def test_both_installs_bind_the_rules_to_the_operator_service_account(
    chart_default: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    for docs in (chart_default, base):
        account = only(docs, "ServiceAccount")["metadata"]
        binding = only(docs, "ClusterRoleBinding")
        pod = only(docs, "Deployment")["spec"]["template"]["spec"]

        assert binding["roleRef"]["name"] == only(docs, "ClusterRole")["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]
        assert pod["serviceAccountName"] == account["name"]
