"""The Helm chart: it lints strictly, renders in every scenario, and its values are documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery.tooling import (
    CHART,
    CI_VALUES,
    ROOT,
    helm_template,
    only,
    package_version,
    run_tool,
    select,
    values_id,
)

SCENARIOS = [None, *CI_VALUES]
# `key:` at the start of a values.yaml line (list items and comments are not keys).
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z][\w.-]*):")


@pytest.mark.parametrize("values", SCENARIOS, ids=values_id)
def test_the_chart_lints_strictly(helm: Path, values: Path | None) -> None:
    args: list[str | Path] = [helm, "lint", "--strict", CHART]
    if values is not None:
        args += ["--values", values]

    output = run_tool(args)

    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("values", SCENARIOS, ids=values_id)
def test_the_chart_renders_the_operator_in_every_scenario(helm: Path, values: Path | None) -> None:
    docs = helm_template(helm, values)

    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == "aimass-system"
    assert not select(docs, "CustomResourceDefinition"), "the CRD belongs in crds/, not templates/"


def test_each_template_renders_one_kind_of_resource(helm: Path) -> None:
    rendered = run_tool([helm, "template", "aimass", CHART, "--values",
                         CHART / "ci" / "namespaced-values.yaml", "--set",
                         "metrics.serviceMonitor.enabled=true"])

    # `# Source: aimass/templates/<file>` precedes every document.
    kinds_by_template: dict[str, set[str]] = {}
    for chunk in rendered.split("\n---\n"):
        source = re.search(r"# Source: aimass/templates/(\S+)", chunk)
        doc = yaml.safe_load(chunk)
        if source and doc:
            kinds_by_template.setdefault(source.group(1), set()).add(doc["kind"])
    for template, kinds in kinds_by_template.items():
        assert len(kinds) == 1, f"{template} renders several kinds: {sorted(kinds)}"
        assert template == f"{next(iter(kinds)).lower()}.yaml", f"{template} renders {kinds}"


def test_chart_version_and_app_version_follow_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert chart["version"] == package_version()
    assert chart["appVersion"] == package_version()
    assert chart["kubeVersion"].startswith(">=1.")


def test_images_default_to_the_app_version(helm: Path) -> None:
    deployment = only(helm_template(helm), "Deployment")

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == f"aimass/operator:{package_version()}"
    assert env["AIMASS_TRAINER_IMAGE"] == f"aimass/trainer:{package_version()}"


def _keys_with_comments(lines: list[str]) -> list[tuple[str, bool]]:
    """(dotted key, whether a comment line sits right above it) for every values.yaml key."""
    result = []
    path: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match.group("indent"))
        path = [(level, key) for level, key in path if level < indent] + [(indent, match["key"])]
        above = lines[number - 1].strip() if number else ""
        result.append((".".join(key for _, key in path), above.startswith("#")))
    return result


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    keys = {}
    for name, sub in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        keys[dotted] = sub
        keys |= _schema_keys(sub, f"{dotted}.")
    return keys


def test_every_values_key_is_commented_and_described_in_the_schema() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())

    keys = _keys_with_comments(lines)
    schema_keys = _schema_keys(schema)
    free_form = {key for key, sub in schema_keys.items() if "properties" not in sub}
    # Keys below a free-form object (resources.requests.cpu, securityContext...) are its example.
    documented = [key for key, _ in keys if not any(key.startswith(f"{f}.") for f in free_form)]
    uncommented = [key for key, commented in keys if key in documented and not commented]
    assert not uncommented, f"values.yaml keys without a comment above them: {uncommented}"
    assert sorted(documented) == sorted(schema_keys), "values.yaml and values.schema.json differ"
    assert all(sub.get("description") for sub in schema_keys.values())


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("image.tag=latest", "/image/tag"),
        ("replicas=2", "additional properties 'replicas'"),
        ("logging.format=xml", "/logging/format"),
        ("logging.level=debug", "additional properties 'level'"),
        ("watchNamespaces[0]=Team_A", "/watchNamespaces/0"),
        ("metrics.port=80", "/metrics/port"),
    ],
)
def test_the_schema_rejects_bad_values_at_install(
    helm: Path, setting: str, complaint: str
) -> None:
    with pytest.raises(AssertionError) as failure:
        run_tool([helm, "template", "aimass", CHART, "--set", setting])

    assert complaint in str(failure.value)


def test_watched_namespaces_get_a_role_each_and_no_cluster_wide_grant(helm: Path) -> None:
    docs = helm_template(helm, CHART / "ci" / "namespaced-values.yaml")

    roles = select(docs, "Role")
    bindings = select(docs, "RoleBinding")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    cluster_role = only(docs, "ClusterRole")
    granted = {res for rule in cluster_role["rules"] for res in rule["resources"]}
    assert granted == {"customresourcedefinitions", "namespaces"}
    env = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AIMASS_NAMESPACES", "value": "team-a,team-b"} in env


def test_the_servicemonitor_is_rendered_only_when_enabled(helm: Path) -> None:
    default = helm_template(helm)
    monitored = helm_template(helm, CHART / "ci" / "monitoring-values.yaml")

    assert not select(default, "ServiceMonitor")
    monitor = only(monitored, "ServiceMonitor")
    service = only(monitored, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_rbac_and_service_account_can_be_left_to_the_cluster_admin(helm: Path) -> None:
    docs = helm_template(helm, CHART / "ci" / "bring-your-own-rbac-values.yaml")

    kinds = {doc["kind"] for doc in docs}
    assert kinds == {"Deployment"}
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aimass-operator-managed"


def test_the_notes_tell_how_to_submit_a_first_job(helm: Path) -> None:
    output = run_tool([helm, "install", "aimass", CHART, "--namespace", "aimass-system",
                       "--dry-run=client"])

    notes = output.split("NOTES:", 1)[1]
    applied = re.search(r"kubectl -n \S+ apply -f (\S+)", notes)
    assert applied, notes
    assert (ROOT / applied.group(1)).is_file(), f"NOTES name {applied.group(1)}, which is missing"
    assert "create secret generic" in notes
    assert "AWS_ACCESS_KEY_ID" in notes and "AWS_SECRET_ACCESS_KEY" in notes
    assert "get tj" in notes


def test_the_s3_secret_lands_where_the_jobs_run(helm: Path) -> None:
    watched = helm_template(helm, CHART / "ci" / "s3-secret-values.yaml")
    alone = helm_template(helm, None, "--set", "s3.secret.create=true", "--set",
                          "s3.secret.accessKeyId=a", "--set", "s3.secret.secretAccessKey=b")

    secret = only(watched, "Secret")
    assert secret["metadata"] == secret["metadata"] | {"name": "team-s3", "namespace": "ml"}
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert only(alone, "Secret")["metadata"]["namespace"] == "aimass-system"
    assert not select(helm_template(helm), "Secret")


def test_creating_the_s3_secret_without_keys_fails_with_the_missing_key(helm: Path) -> None:
    with pytest.raises(AssertionError, match="s3.secret.accessKeyId is required"):
        run_tool([helm, "template", "aimass", CHART, "--set", "s3.secret.create=true"])
