"""The CRD's schema and CEL rules accept every example and reject bad specs, naming the field.

There is no API server here, so the test plays its part: it applies the schema's defaults,
validates with jsonschema (the structural schema turned into JSON Schema, unknown fields
rejected as `kubectl` does with strict field validation) and evaluates every
`x-kubernetes-validations` rule with cel-python, transition rules included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from aimass.spec import SpecError, parse_job, parse_spec
from aimass_operator.crd import build_crd

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
CRD_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
CEL = celpy.Environment()


# The API server's part, played by the test.


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3.0 structural schema -> JSON Schema 2020-12 (strict about unknown fields)."""
    result = {key: value for key, value in node.items() if not key.startswith("x-kubernetes")}
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if result.get(exclusive) is True:
            result[exclusive] = result.pop(inclusive)
    if "properties" in node:
        result["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            result[key] = to_json_schema(node[key])
    return result


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: fill unset properties of objects that are present."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def rule_sites(schema: dict[str, Any], value: Any, old: Any, path: str) -> Iterator[tuple]:
    """(rules, self, oldSelf, path) for every schema node with rules and a value present."""
    if "x-kubernetes-validations" in schema:
        yield schema["x-kubernetes-validations"], value, old, path
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                previous = old.get(name) if isinstance(old, dict) else None
                yield from rule_sites(child, value[name], previous, f"{path}.{name}")


def cel_errors(document: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Messages of the rules that fail, each prefixed by the field path it reports."""
    errors = []
    for rules, value, previous, path in rule_sites(CRD_SCHEMA, document, old, ""):
        for rule in rules:
            transition = "oldSelf" in rule["rule"]
            if transition and previous is None:
                continue  # transition rules only run on updates
            activation = {"self": celpy.json_to_cel(value)}
            if transition:
                activation["oldSelf"] = celpy.json_to_cel(previous)
            program = CEL.program(CEL.compile(rule["rule"]))
            result = program.evaluate(activation)
            # An evaluation error (e.g. a missing field) is a failure too, as in the server.
            if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                where = (path + rule.get("fieldPath", "")).lstrip(".")
                errors.append(f"{where}: {rule['message']}")
    return errors


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(to_json_schema(CRD_SCHEMA))
    return [f"{error.json_path.lstrip('$.')}: {error.message}"
            for error in validator.iter_errors(document)]


def admit(document: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Everything the API server would say about creating (or updating to) `document`."""
    document = apply_defaults(CRD_SCHEMA, copy.deepcopy(document))
    if old is not None:
        old = apply_defaults(CRD_SCHEMA, copy.deepcopy(old))
    problems = schema_errors(document)
    return problems or cel_errors(document, old)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def minimal_job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aimass.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "flowers", "namespace": "ml"},
        "spec": {"dataset": {"train": "s3://data/train"}, "output": {"uri": "s3://out/x"},
                 **spec},
    }


# Examples.


def test_there_are_examples_to_check() -> None:
    assert EXAMPLES, "examples/*.yaml is empty"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_is_accepted_by_the_crd_and_the_model(path: Path) -> None:
    document = load(path)
    assert admit(document) == []
    parse_job(document)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_the_servers_defaults_mean_what_the_models_defaults_mean(path: Path) -> None:
    document = load(path)
    defaulted = apply_defaults(CRD_SCHEMA, copy.deepcopy(document))
    assert parse_spec(defaulted["spec"]) == parse_spec(document["spec"])


# Bad specs: (where, value) -> the field that must be named. A `where` of "spec.a.b" sets b.

BAD = [
    ("spec.workers", 0, "spec.workers"),
    ("spec.dataset.train", "http://data/train", "spec.dataset.train"),
    ("spec.dataset.validation", "file:///data/val", "spec.dataset.validation"),
    ("spec.output.uri", "gs://bucket/out", "spec.output.uri"),
    ("spec.model.weights", "https://example.com/w.keras", "spec.model.weights"),
    ("spec.model.architecture", "vgg16", "spec.model.architecture"),
    ("spec.model.dropout", 1.0, "spec.model.dropout"),
    ("spec.model.filters", [32, 64], "spec.model.filters"),
    ("spec.training.epochs", 0, "spec.training.epochs"),
    ("spec.dataset.imageSize", [224], "spec.dataset.imageSize"),
    ("spec.dataset.validationSplit", 0.9, "spec.dataset.validationSplit"),
    ("spec.augmentation.rescale", 0, "spec.augmentation.rescale"),
    ("spec.runPolicy.cleanPodPolicy", "Sometimes", "spec.runPolicy.cleanPodPolicy"),
    ("spec.worker.resources.cpu", "lots", "spec.worker.resources.cpu"),
    ("spec.worker.resources.gpus", 17, "spec.worker.resources.gpus"),
    ("spec.storage.endpoint", "minio:9000", "spec.storage.endpoint"),
    ("spec.storage.credentialsSecret", "Not_A_Name", "spec.storage.credentialsSecret"),
    ("spec.trainer", {"epochs": 3}, "spec"),
    ("metadata.name", "a" * 51, "metadata.name"),
    ("metadata.name", "1flowers", "metadata.name"),
    ("metadata.name", "flowers.v2", "metadata.name"),
]


def names(problem: str, field: str) -> bool:
    """Whether a problem names the field: as its location, or first thing in its message."""
    location, _, message = problem.partition(": ")
    return location.startswith(field) or message.startswith(field)


def with_value(document: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    *parents, leaf = where.split(".")
    node = document
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return document


@pytest.mark.parametrize(("where", "value", "field"), BAD,
                         ids=[f"{case[0]}={case[1]!r}"[:60] for case in BAD])
def test_a_bad_spec_is_rejected_naming_the_field(where: str, value: Any, field: str) -> None:
    document = with_value(minimal_job(), where, value)
    problems = admit(document)
    assert problems, f"{where}={value!r} was accepted"
    assert any(names(problem, field) for problem in problems), problems
    with pytest.raises(SpecError):
        parse_job(document)


def test_validation_and_validation_split_together_are_rejected_by_cel() -> None:
    document = minimal_job(dataset={"train": "s3://data/train", "validation": "s3://data/val",
                                    "validationSplit": 0.1})
    problems = admit(document)
    assert any("validationSplit" in problem for problem in problems), problems


def test_the_uri_rules_name_the_field_even_where_the_pattern_would_catch_it() -> None:
    document = apply_defaults(CRD_SCHEMA, with_value(minimal_job(), "spec.output.uri", "gs://b/x"))
    assert cel_errors(document) == [
        "spec.output.uri: spec.output.uri must be an s3://bucket/prefix URI"
    ]


# Transition rules: the spec is frozen while the job runs, except suspend.


def with_phase(document: dict[str, Any], phase: str | None) -> dict[str, Any]:
    document = copy.deepcopy(document)
    if phase is not None:
        document["status"] = {"phase": phase}
    return document


def test_a_spec_change_while_running_is_rejected() -> None:
    old = with_phase(minimal_job(), "Running")
    new = with_value(old, "spec.workers", 2)
    problems = admit(new, old)
    assert problems and problems[0].startswith("spec:"), problems
    assert "suspend" in problems[0]


@pytest.mark.parametrize(("where", "value"), [
    ("spec.training.epochs", 20),
    ("spec.augmentation.adversarial", {"epsilon": 0.02}),
    ("spec.worker", {"image": "other:1"}),
    ("spec.runPolicy.backoffLimit", 9),
])
def test_adding_or_changing_any_spec_field_while_running_is_rejected(
    where: str, value: Any
) -> None:
    old = with_phase(minimal_job(), "Running")
    assert admit(with_value(old, where, value), old)


def test_suspending_a_running_job_is_allowed() -> None:
    old = with_phase(minimal_job(), "Running")
    assert admit(with_value(old, "spec.suspend", True), old) == []


@pytest.mark.parametrize("phase", [None, "Pending", "Suspended", "Succeeded", "Failed"])
def test_a_spec_change_is_allowed_when_the_job_is_not_running(phase: str | None) -> None:
    old = with_phase(minimal_job(), phase)
    assert admit(with_value(old, "spec.workers", 2), old) == []


def test_an_unchanged_spec_of_a_running_job_passes() -> None:
    old = with_phase(minimal_job(), "Running")
    new = with_value(old, "metadata.labels", {"team": "vision"})
    assert admit(new, old) == []
