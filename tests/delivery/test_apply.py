"""kubectl applies the kustomize output to the test API server (kmock's emulator, extended for
kubectl in support/kube.py), client-side and server-side, and everything lands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import kmock
import pytest
from delivery.tooling import MANIFESTS, ROOT, kustomize
from support.kube import DiscoveryEmulator, write_kubeconfig

KUBECTL_TIMEOUT_S = 60
# The emulator serves no OpenAPI document, so kubectl cannot validate client-side; the objects
# are validated by kubernetes-validate in test_validate.py instead.
NO_OPENAPI = "--validate=false"
APPLY_MODES = {"client-side": [], "server-side": ["--server-side"]}


@dataclass
class Cluster:
    emulator: DiscoveryEmulator
    kubectl: Path
    kubeconfig: Path

    async def run(self, *args: str) -> str:
        """kubectl's output; the assertion carries it when kubectl fails."""
        process = await asyncio.create_subprocess_exec(
            str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), KUBECTL_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            command = " ".join(args)
            raise AssertionError(f"kubectl {command} ran over {KUBECTL_TIMEOUT_S} s") from None
        text = output.decode()
        assert process.returncode == 0, f"kubectl {' '.join(args)} failed:\n{text}"
        return text

    def stored(self) -> set[tuple[str, str | None, str]]:
        """(kind, namespace, name) of every live object in the emulator."""
        return {
            (obj.get("kind"), namespace, name)
            for (_, namespace, name), obj in self.emulator.objects.items()
            if not obj.deleted
        }


@pytest.fixture
async def cluster(kubectl: Path, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with DiscoveryEmulator() as emulator, kmock.Server(emulator) as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        yield Cluster(emulator, kubectl, kubeconfig)


def _expected(kubectl: Path, path: Path) -> set[tuple[str, str | None, str]]:
    return {(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            for doc in kustomize(kubectl, path)}


@pytest.mark.parametrize("mode", APPLY_MODES.values(), ids=APPLY_MODES.keys())
async def test_kubectl_apply_k_installs_every_object(
    cluster: Cluster, kubectl: Path, mode: list[str]
) -> None:
    output = await cluster.run("apply", *mode, NO_OPENAPI, "-k", "manifests/")

    assert cluster.stored() == _expected(kubectl, MANIFESTS)
    assert "namespace/aimass-system" in output
    assert "customresourcedefinition.apiextensions.k8s.io/trainingjobs.aimass.dev" in output


async def test_applying_again_changes_nothing(cluster: Cluster) -> None:
    await cluster.run("apply", NO_OPENAPI, "-k", "manifests/")

    output = await cluster.run("apply", NO_OPENAPI, "-k", "manifests/")

    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and all(line.endswith(" unchanged") for line in lines), output


async def test_the_namespaced_overlay_installs_server_side(
    cluster: Cluster, kubectl: Path
) -> None:
    overlay = MANIFESTS / "overlays" / "namespaced"

    await cluster.run("apply", "--server-side", NO_OPENAPI, "-k", str(overlay.relative_to(ROOT)))

    stored = cluster.stored()
    assert stored == _expected(kubectl, overlay)
    assert ("Role", "aimass-system", "aimass-operator") in stored
    assert ("ClusterRole", None, "aimass-operator") not in stored


async def test_a_first_job_applies_once_the_crd_is_installed(cluster: Cluster) -> None:
    await cluster.run("apply", "--server-side", NO_OPENAPI, "-k", "manifests/")
    await cluster.run("apply", NO_OPENAPI, "-f", "manifests/examples/s3-credentials.yaml",
                      "-n", "ml")

    output = await cluster.run("apply", NO_OPENAPI, "-f", "examples/pretrain-fashion.yaml",
                               "-n", "ml")

    assert "trainingjob.aimass.dev/pretrain-fashion created" in output
    assert ("TrainingJob", "ml", "pretrain-fashion") in cluster.stored()
    listed = await cluster.run("get", "tj", "-n", "ml", "-o", "name")
    assert listed.split() == ["trainingjob.aimass.dev/pretrain-fashion"]
