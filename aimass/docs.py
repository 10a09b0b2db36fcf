"""The TrainingJob field reference, generated from the spec model: `python -m aimass.docs`.

It walks the JSON schema of `aimass.spec.TrainingJob` (the same schema the CRD is generated from)
and prints one Markdown table row per field: its path on the wire, type, default, bounds and
description. Generating the reference keeps the README from drifting away from the API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

from aimass import spec

Schema = dict[str, Any]

# Fields of the document around the spec, which the model leaves undescribed.
WIRE = {
    "apiVersion": f"Always `{spec.API_VERSION}`.",
    "kind": f"Always `{spec.KIND}`.",
    "metadata.namespace": "Namespace of the job in a cluster; ignored by `aimass train`.",
}


def _resolve(node: Schema, defs: dict[str, Schema]) -> tuple[Schema, bool]:
    """The schema behind a `$ref` or an optional `anyOf [X, null]`, and whether null is allowed."""
    nullable = False
    if "anyOf" in node:
        branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
        nullable = len(branches) < len(node["anyOf"])
        node = {**branches[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node, nullable


def _type_name(node: Schema, defs: dict[str, Schema]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type", "any")
    if kind == "array":
        item, _ = _resolve(node.get("items", {}), defs)
        return f"list of {_type_name(item, defs)}"
    if kind == "object" and "properties" not in node:
        values = node.get("additionalProperties")
        if isinstance(values, dict) and values.get("type"):
            return f"map of {values['type']}"
        return "object"
    return str(kind)


def _bounds(node: Schema, defs: dict[str, Schema]) -> str:
    """Bounds in words: `>= 1`, `< 1`, `2 items`, the pattern a string must match."""
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"),
                      ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            value = node[key]
            parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    low, high = node.get("minItems"), node.get("maxItems")
    if low is not None and low == high:
        parts.append(f"{low} items")
    elif low is not None or high is not None:
        parts.append(f"{low or 0}-{high if high is not None else 'any'} items")
    if node.get("type") == "array":
        item, _ = _resolve(node.get("items", {}), defs)
        inner = _bounds(item, defs)
        if inner:
            parts.append(f"each {inner}")
    if "maxLength" in node and "pattern" not in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`".replace("|", "\\|"))
    return ", ".join(parts)


def _default(node: Schema, field: Schema, required: bool, nullable: bool) -> str:
    if required:
        return "required"
    if "default" not in node and not nullable:
        # A default_factory leaves no default in the schema: an empty value or nested defaults.
        if field.get("type") == "array":
            return "`[]`"
        return "(see fields)" if "properties" in field else "`{}`"
    if "default" not in node or (node["default"] is None and nullable):
        return "unset"
    if isinstance(node["default"], dict):
        return "(see fields)"
    return f"`{json.dumps(node['default'])}`"


def rows(schema: Schema | None = None) -> Iterator[tuple[str, str, str, str, str]]:
    """(path, type, default, bounds, description) for every field of a TrainingJob, in order."""
    root = schema or spec.TrainingJob.model_json_schema(by_alias=True)
    defs = root.get("$defs", {})

    def walk(node: Schema, prefix: str) -> Iterator[tuple[str, str, str, str, str]]:
        required = set(node.get("required", []))
        for name, raw in node.get("properties", {}).items():
            field, nullable = _resolve(raw, defs)
            path = f"{prefix}{name}"
            description = (
                raw.get("description") or field.get("description") or WIRE.get(path, "")
            ).strip()
            description = " ".join(description.split()).replace("|", "\\|")
            nested = field.get("type") == "object" and "properties" in field
            kind = "object" if nested else _type_name(field, defs)
            yield (path, kind, _default(raw, field, name in required, nullable),
                   _bounds(field, defs), description)
            if nested:
                yield from walk(field, f"{path}.")
            elif field.get("type") == "array":
                item, _ = _resolve(field.get("items", {}), defs)
                if "properties" in item:
                    yield from walk(item, f"{path}[].")

    yield from walk(root, "")


def markdown(schema: Schema | None = None) -> str:
    lines = [
        "| Field | Type | Default | Bounds | Meaning |",
        "|---|---|---|---|---|",
    ]
    for path, kind, default, bounds, description in rows(schema):
        lines.append(f"| `{path}` | {kind} | {default} | {bounds} | {description} |")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
