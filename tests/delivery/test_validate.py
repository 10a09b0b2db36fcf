"""Every object the chart renders and the manifests build passes kubernetes-validate, strictly,
against the oldest Kubernetes the chart supports and the newest kubernetes-validate knows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from delivery.tooling import (
    CHART,
    CI_VALUES,
    KUSTOMIZATIONS,
    MANIFESTS,
    ROOT,
    helm_template,
    kustomize,
    load_yaml,
    values_id,
)

# Kinds whose schema kubernetes-validate cannot have: they come from CRDs, not from Kubernetes.
NOT_BUILT_IN = {
    "ServiceMonitor": "a Prometheus Operator CRD",
    "TrainingJob": "our own CRD, checked against it by the operator's schema tests",
}


def _oldest_supported() -> str:
    """The lowest version in Chart.yaml's kubeVersion (">=1.30.0-0" gives 1.30.0)."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    return constraint.removeprefix(">=").split("-")[0]


VERSIONS = [_oldest_supported(), kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def unique_objects(helm: Path, kubectl: Path) -> dict[str, dict[str, Any]]:
    """Every built-in object from every source, once: the sources share most of them."""
    sources: dict[str, list[dict[str, Any]]] = {}
    for values in [None, *CI_VALUES]:
        sources[f"chart {values_id(values)}"] = helm_template(helm, values)
    sources["chart crds/"] = [doc for path in sorted((CHART / "crds").glob("*.yaml"))
                              for doc in load_yaml(path)]
    for path in KUSTOMIZATIONS:
        sources[f"kustomize {path.relative_to(ROOT)}"] = kustomize(kubectl, path)
    sources["manifests/examples"] = [doc for path in sorted((MANIFESTS / "examples").glob("*"))
                                     for doc in load_yaml(path)]

    found: dict[str, dict[str, Any]] = {}
    for source, docs in sources.items():
        for doc in docs:
            if doc["kind"] not in NOT_BUILT_IN:
                label = f"{source}: {doc['kind']}/{doc['metadata']['name']}"
                found.setdefault(json.dumps(doc, sort_keys=True), {"label": label, "doc": doc})
    return {item["label"]: item["doc"] for item in found.values()}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_kubernetes_validate(
    unique_objects: dict[str, dict[str, Any]], version: str
) -> None:
    problems = []
    for label, doc in unique_objects.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{label}: {error.message} at {list(error.path)}")

    assert not problems, "\n".join(problems)
    kinds = {doc["kind"] for doc in unique_objects.values()}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "Role", "Secret"} <= kinds


def test_the_validator_rejects_a_misspelled_field(
    unique_objects: dict[str, dict[str, Any]],
) -> None:
    deployment = next(doc for doc in unique_objects.values() if doc["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
