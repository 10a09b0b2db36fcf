"""The CRD's spec schema, generated from the pydantic model, and its CEL validation rules.

Pydantic writes JSON Schema (draft 2020-12); a CRD needs a *structural* OpenAPI v3 schema: no
$ref, no anyOf for optional fields, exclusive bounds as booleans, a type on every node, and
open-ended objects marked `x-kubernetes-preserve-unknown-fields`. `structural_schema` does the
conversion and keeps what a user sees in `kubectl explain`: descriptions, defaults, enums and
bounds. Anything it does not understand is an error here, at generation time, not a CRD the API
server rejects at install time.

The CEL rules (`x-kubernetes-validations`) check what a schema cannot: that the spec stays put
while the job runs (except `suspend`), cross-field constraints the model also enforces, and
friendly messages for the URI schemes.
"""

from __future__ import annotations

from typing import Any

from aimass.spec import ObjectMeta, TrainingJobSpec

# Keywords copied unchanged from pydantic's output.
_KEPT = (
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
    "required",
    "x-kubernetes-preserve-unknown-fields",
)
# Keywords dropped: documentation-only, or expressed otherwise in a structural schema
# (additionalProperties false: the API server prunes or, with strict field validation, rejects
# unknown fields).
_DROPPED = ("title", "examples", "$defs")

# Defaults the API server must not fill in. `dataset.validationSplit` is an alternative to
# `dataset.validation` (the model rejects both set); a server default would set it on every job.
NO_SERVER_DEFAULT = {("dataset", "validationSplit")}


# The model's rule for job names, enforced by the API server too.
JOB_NAME_PATTERN = ObjectMeta.model_json_schema()["properties"]["name"]["pattern"]


class SchemaError(ValueError):
    """The model uses a JSON Schema construct with no structural equivalent."""


def spec_schema() -> dict[str, Any]:
    """The structural schema of `spec`, from `aimass.spec.TrainingJobSpec`."""
    source = TrainingJobSpec.model_json_schema(by_alias=True)
    return structural_schema(source, source.get("$defs", {}))


def structural_schema(
    node: dict[str, Any], defs: dict[str, Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node (and its children) to a structural schema."""
    node = _resolve(node, defs, path)
    where = ".".join(path) or "spec"
    unknown = set(node) - set(_KEPT) - set(_DROPPED) - {
        "default", "properties", "items", "additionalProperties",
        "exclusiveMinimum", "exclusiveMaximum",
    }
    if unknown:
        raise SchemaError(f"{where}: no structural equivalent for {sorted(unknown)}")

    result = {key: node[key] for key in _KEPT if key in node}
    _copy_bounds(node, result)
    if "default" in node and node["default"] is not None and path not in NO_SERVER_DEFAULT:
        result["default"] = node["default"]
    if "properties" in node:
        result["properties"] = {
            name: structural_schema(child, defs, (*path, name))
            for name, child in node["properties"].items()
        }
    if "items" in node:
        result["items"] = structural_schema(node["items"], defs, (*path, "[]"))

    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        result["additionalProperties"] = structural_schema(extra, defs, (*path, "*"))
    elif (extra is True or extra == {}) and "properties" not in node:
        # dict[str, Any]: an open-ended object kept as it is.
        result["x-kubernetes-preserve-unknown-fields"] = True

    if "type" not in result:
        raise SchemaError(f"{where}: a structural schema needs a type on every node")
    return result


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """Inline a $ref and unwrap `anyOf: [X, null]`; the outer keys win (a field's own
    description and default over its type's)."""
    if "anyOf" in node:
        branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
        if len(branches) != 1:
            where = ".".join(path) or "spec"
            raise SchemaError(f"{where}: anyOf with {len(branches)} non-null branches")
        # Optional means "not required"; the null branch goes away.
        outer = {key: value for key, value in node.items() if key != "anyOf"}
        node = {**_resolve(branches[0], defs, path), **outer}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        outer = {key: value for key, value in node.items() if key != "$ref"}
        node = {**_resolve(target, defs, path), **outer}
    return node


def _copy_bounds(node: dict[str, Any], result: dict[str, Any]) -> None:
    """JSON Schema's numeric exclusive bounds become OpenAPI v3.0's boolean flags."""
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in node:
            result[inclusive] = node[exclusive]
            result[exclusive] = True


def _is_running(var: str) -> str:
    return f"has({var}.status) && has({var}.status.phase) && {var}.status.phase == 'Running'"


def _same_field(field: str) -> str:
    """CEL: `spec.<field>` is unchanged, whether it is set or not."""
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    return f"(has({new}) ? has({old}) && {new} == {old} : !has({old}))"


def frozen_while_running_rule() -> dict[str, Any]:
    """Root transition rule: while the job is Running, only `spec.suspend` may change.

    Generated from the model's fields, so a new spec field is frozen too. The rule sits at the
    root because it needs `status.phase`; a status update cannot trip it (the status
    subresource leaves the spec as it was).

    TODO: `worker.affinity` is open-ended (preserve-unknown-fields), and the API server shows
    such an object to CEL as empty, so a change inside it while Running passes this rule.
    """
    fields = [
        field.alias or name
        for name, field in TrainingJobSpec.model_fields.items()
        if (field.alias or name) != "suspend"
    ]
    # One comparison per line: the rule reads as a list in the generated YAML.
    unchanged = "\n&& ".join(_same_field(field) for field in fields)
    return {
        "rule": f"!({_is_running('oldSelf')})\n|| (\n{unchanged}\n)",
        "message": "the spec of a Running TrainingJob cannot change, except spec.suspend: "
        "suspend it, or wait until it finishes",
        "fieldPath": ".spec",
        "reason": "FieldValueForbidden",
    }


def root_rules() -> list[dict[str, Any]]:
    """Rules on the whole object."""
    return [
        frozen_while_running_rule(),
        {
            "rule": "!has(self.metadata.name) || (size(self.metadata.name) <= 50 "
            f"&& self.metadata.name.matches('{JOB_NAME_PATTERN}'))",
            "message": "metadata.name must be a DNS label that starts with a letter (the "
            "Service is named after the job) and has at most 50 characters (so that the pod "
            "names <name>-worker-<i> stay within 63)",
            # NB: no fieldPath: it must name a field of this schema, and metadata has none.
            "reason": "FieldValueInvalid",
        },
    ]


def _s3_rule(parent: str, field: str, *, optional: bool,
             also: tuple[str, ...] = ()) -> dict[str, Any]:
    """A URI-scheme rule on `spec.<parent>.<field>`, with a message that names the field."""
    allowed = " || ".join([f"self.{field} == '{word}'" for word in also]
                          + [f"self.{field}.startsWith('s3://')"])
    rule = f"!has(self.{field}) || {allowed}" if optional else allowed
    choices = ", ".join(also) + " or " if also else ""
    return {
        "rule": rule,
        "message": f"spec.{parent}.{field} must be {choices}an s3://bucket/prefix URI",
        "fieldPath": f".{field}",
        "reason": "FieldValueInvalid",
    }


# Rules on sub-objects of the spec, by wire path (relative to `spec`).
NESTED_RULES: dict[tuple[str, ...], list[dict[str, Any]]] = {
    (): [
        {
            "rule": "!has(self.workers) || self.workers >= 1",
            "message": "spec.workers must be at least 1",
            "fieldPath": ".workers",
            "reason": "FieldValueInvalid",
        },
    ],
    ("dataset",): [
        _s3_rule("dataset", "train", optional=False),
        _s3_rule("dataset", "validation", optional=True),
        {
            "rule": "!(has(self.validation) && has(self.validationSplit))",
            "message": "spec.dataset.validation and spec.dataset.validationSplit are "
            "alternatives: "
            "set one of them",
            "fieldPath": ".validationSplit",
            "reason": "FieldValueForbidden",
        },
    ],
    ("output",): [_s3_rule("output", "uri", optional=False)],
    ("model",): [
        _s3_rule("model", "weights", optional=True, also=("none", "imagenet")),
        {
            "rule": "!has(self.blocks) || !has(self.filters) "
            "|| size(self.blocks) == size(self.filters)",
            "message": "spec.model.blocks and spec.model.filters need one entry per stage",
            "fieldPath": ".filters",
            "reason": "FieldValueInvalid",
        },
    ],
}


def add_nested_rules(spec: dict[str, Any]) -> dict[str, Any]:
    """Attach NESTED_RULES to the spec schema (in place) and return it."""
    for path, rules in NESTED_RULES.items():
        node = spec
        for name in path:
            node = node["properties"][name]
        node["x-kubernetes-validations"] = rules
    return spec
