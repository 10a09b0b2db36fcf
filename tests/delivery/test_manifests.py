"""The kustomize manifests build, and the operator they install (and the chart's) is hardened."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aimass_operator import main as operator_main

from delivery.tooling import (
    CI_VALUES,
    KUSTOMIZATIONS,
    MANIFESTS,
    ROOT,
    helm_template,
    kustomize,
    load_yaml,
    only,
    package_version,
    select,
    values_id,
)


def _kustomization_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_kustomization_id)
def test_every_kustomization_builds_a_complete_install(kubectl: Path, path: Path) -> None:
    docs = kustomize(kubectl, path)

    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "CustomResourceDefinition", "ServiceAccount", "Deployment",
            "Service"} <= kinds
    namespaced = [doc for doc in docs if doc["kind"] not in
                  ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")]
    assert {doc["metadata"].get("namespace") for doc in namespaced} == {"aimass-system"}


def test_the_top_level_kustomization_is_the_cluster_wide_base(kubectl: Path) -> None:
    assert kustomize(kubectl, MANIFESTS) == kustomize(kubectl, MANIFESTS / "base")


def test_the_namespaced_overlay_trades_the_cluster_role_for_a_role(kubectl: Path) -> None:
    docs = kustomize(kubectl, MANIFESTS / "overlays" / "namespaced")

    assert not select(docs, "ClusterRole", "aimass-operator")
    assert not select(docs, "ClusterRoleBinding", "aimass-operator")
    role = only(docs, "Role", "aimass-operator")
    binding = only(docs, "RoleBinding", "aimass-operator")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "aimass-system"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aimass-operator", "namespace": "aimass-system"}
    ]
    env = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AIMASS_NAMESPACES", "value": "aimass-system"} in env


def test_the_monitoring_overlay_scrapes_the_metrics_service(kubectl: Path) -> None:
    docs = kustomize(kubectl, MANIFESTS / "overlays" / "monitoring")

    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def test_the_s3_secret_template_holds_only_placeholders() -> None:
    secret = only(load_yaml(MANIFESTS / "examples" / "s3-credentials.yaml"), "Secret")

    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}


@pytest.fixture(scope="module")
def deployments(helm: Path, kubectl: Path) -> dict[str, dict[str, Any]]:
    """The operator Deployment from the manifests and from the chart in every scenario."""
    found = {"kustomize": only(kustomize(kubectl, MANIFESTS), "Deployment")}
    for values in [None, *CI_VALUES]:
        found[f"chart-{values_id(values)}"] = only(helm_template(helm, values), "Deployment")
    return found


def test_the_operator_runs_hardened_with_probes_and_resources(
    deployments: dict[str, dict[str, Any]],
) -> None:
    for source, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert len(pod["containers"]) == 1, source
        container = pod["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}

        assert deployment["spec"]["replicas"] == 1, source
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, source
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, source
        assert "health" in ports and "metrics" in ports, source
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), source
        assert "memory" in container["resources"]["limits"], source
        assert pod["securityContext"]["runAsNonRoot"] is True, source
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, source
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, source
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], source
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, source
        assert not container["image"].endswith(":latest"), source


def test_manifests_and_chart_run_the_same_images(deployments: dict[str, dict[str, Any]]) -> None:
    version = package_version()

    for source in ("kustomize", "chart-default"):
        container = deployments[source]["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert container["image"] == f"aimass/operator:{version}", source
        assert env["AIMASS_TRAINER_IMAGE"] == f"aimass/trainer:{version}", source


def test_the_chart_sets_every_operator_setting_the_manifests_set(
    deployments: dict[str, dict[str, Any]],
) -> None:
    def env_names(source: str) -> set[str]:
        container = deployments[source]["spec"]["template"]["spec"]["containers"][0]
        return {item["name"] for item in container["env"]}

    # The chart adds only optional settings (S3 defaults) on top of the manifests' ones.
    assert env_names("kustomize") <= env_names("chart-default")


def test_the_operator_reads_every_setting_the_deployments_give_it(
    deployments: dict[str, dict[str, Any]],
) -> None:
    read = set(re.findall(r'"(AIMASS_[A-Z_]+)"', inspect.getsource(operator_main)))

    for source, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item.get("value") for item in container["env"]}
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}

        assert set(env) <= read, f"{source}: the operator ignores {set(env) - read}"
        assert urlsplit(env["AIMASS_LIVENESS"]).port == ports["health"], source
        assert int(env["AIMASS_METRICS_PORT"]) == ports["metrics"], source
