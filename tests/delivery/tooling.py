"""Running helm and kubectl for the delivery tests, and reading what they print.

Everything here is synchronous and bounded by a timeout; the async kubectl runs against the
emulator live in test_apply.py.
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aimass"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = [
    MANIFESTS,
    MANIFESTS / "base",
    MANIFESTS / "overlays" / "namespaced",
    MANIFESTS / "overlays" / "monitoring",
]
RELEASE = "aimass"
RELEASE_NAMESPACE = "aimass-system"
TOOL_TIMEOUT_S = 120


def run_tool(args: Sequence[str | Path], *, timeout: float = TOOL_TIMEOUT_S) -> str:
    """stdout of a command run from the repository root; a failure shows the command's stderr."""
    command = [str(arg) for arg in args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr}{done.stdout}"
        )
    return done.stdout


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents in `text`."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return documents(path.read_text(encoding="utf-8"))


def helm_template(helm: Path, values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    """The chart rendered as `helm install` would (without the crds/ folder)."""
    args: list[str | Path] = [helm, "template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE]
    if values is not None:
        args += ["--values", values]
    return documents(run_tool([*args, *extra]))


def kustomize(kubectl: Path, path: Path) -> list[dict[str, Any]]:
    return documents(run_tool([kubectl, "kustomize", path]))


def select(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> list[dict]:
    return [
        doc for doc in docs
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def only(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (and `name`); the assertion lists what there was instead."""
    docs = list(docs)
    found = select(docs, kind, name)
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)} among {kinds}"
    return found[0]


def package_version() -> str:
    """The version in pyproject.toml: images, chart and appVersion all follow it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(pyproject["project"]["version"])


def values_id(values: Path | None) -> str:
    return "default" if values is None else values.name.removesuffix("-values.yaml")
