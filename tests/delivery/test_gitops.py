"""GitOps examples: the Argo CD health check's verdicts (run in Lua 5.1, as Argo runs it), the
ConfigMap copy of it, and Applications and Flux objects that point at this repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery.tooling import ROOT, load_yaml, only

ARGOCD = ROOT / "gitops" / "argocd"
FLUX = ROOT / "gitops" / "flux"
HEALTH_SCRIPT = ARGOCD / "health-trainingjob.lua"
HEALTH_KEY = "resource.customizations.health.aimass.dev_TrainingJob"

lupa = pytest.importorskip("lupa.lua51", reason="lupa (the dev extra) runs the Lua health check")


def _condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _health(status: dict[str, Any] | None) -> tuple[str, str]:
    """(status, message) that the Lua script gives a TrainingJob with this `.status`."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    job: dict[str, Any] = {"apiVersion": "aimass.dev/v1alpha1", "kind": "TrainingJob",
                           "metadata": {"name": "flowers"}, "spec": {}}
    if status is not None:
        job["status"] = status
    runtime.globals().obj = runtime.table_from(job, recursive=True)
    # Argo CD runs the script as a chunk with `obj` in scope and reads the table it returns.
    result = runtime.execute(HEALTH_SCRIPT.read_text(encoding="utf-8"))
    return str(result["status"]), str(result["message"])


RUNNING = _condition("Running", "True", "AllWorkersRunning", "2/2 workers running")
CASES = [
    ("no status yet", None, "Progressing", "Waiting for the aimass operator"),
    ("pending", {"phase": "Pending", "conditions": [
        _condition("Created", "True", "PodsCreated", "service and 2 pods"),
        _condition("Running", "False", "WorkersPending", "0/2 workers running")]},
     "Progressing", "WorkersPending: 0/2 workers running"),
    ("running with progress", {"phase": "Running", "conditions": [RUNNING],
                               "progress": {"epoch": 3, "epochs": 10, "valAccuracy": 0.8125}},
     "Progressing", "AllWorkersRunning: 2/2 workers running (epoch 3/10, val accuracy 0.812)"),
    ("restarting", {"phase": "Running", "restartCount": 1, "conditions": [
        _condition("Running", "False", "WorkerFailed", "worker 1 exited with code 4"),
        _condition("Restarting", "True", "WorkerFailed", "gang restart 1 of 3")]},
     "Progressing", "WorkerFailed: gang restart 1 of 3"),
    ("image cannot be pulled", {"phase": "Pending", "conditions": [
        _condition("Running", "False", "ImagePullBackOff", "worker 0: not found")]},
     "Degraded", "ImagePullBackOff: worker 0: not found"),
    ("crash loop", {"phase": "Running", "conditions": [
        _condition("Running", "False", "CrashLoopBackOff", "worker 1 keeps crashing")]},
     "Degraded", "CrashLoopBackOff"),
    ("waiting for a node", {"phase": "Pending", "conditions": [
        _condition("Running", "False", "Unschedulable", "0/3 nodes have nvidia.com/gpu")]},
     "Progressing", "Unschedulable: 0/3 nodes"),
    ("succeeded", {"phase": "Succeeded", "modelURI": "s3://models/flowers/model.keras",
                   "conditions": [_condition("Succeeded", "True", "JobSucceeded", "done")]},
     "Healthy", "JobSucceeded: done; model at s3://models/flowers/model.keras"),
    ("failed", {"phase": "Failed", "conditions": [
        _condition("Failed", "True", "BackoffLimitExceeded", "worker 0 exited with code 1")]},
     "Degraded", "BackoffLimitExceeded: worker 0 exited with code 1"),
    ("suspended", {"phase": "Suspended", "conditions": [
        _condition("Suspended", "True", "JobSuspended", "spec.suspend is true")]},
     "Suspended", "JobSuspended"),
]


@pytest.mark.parametrize(("status", "verdict", "message"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_argo_cd_sees_the_jobs_health(
    status: dict[str, Any] | None, verdict: str, message: str
) -> None:
    found_verdict, found_message = _health(status)

    assert found_verdict == verdict
    assert message in found_message


def test_the_argocd_configmap_patch_carries_the_same_script() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())

    assert patch["data"][HEALTH_KEY] == HEALTH_SCRIPT.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted(ARGOCD.glob("application*.yaml")), ids=lambda p: p.name)
def test_argo_applications_install_from_a_path_in_this_repository(path: Path) -> None:
    app = only(load_yaml(path), "Application")

    source = app["spec"]["source"]
    assert (ROOT / source["path"]).is_dir(), source["path"]
    assert source["targetRevision"] == "v" + yaml.safe_load(
        (ROOT / "charts" / "aimass" / "Chart.yaml").read_text())["appVersion"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert app["spec"]["destination"]["namespace"] == "aimass-system"


def test_flux_applies_the_manifests_from_its_git_source() -> None:
    repository = only(load_yaml(FLUX / "gitrepository.yaml"), "GitRepository")
    kustomization = only(load_yaml(FLUX / "aimass-kustomization.yaml"), "Kustomization")

    assert kustomization["spec"]["sourceRef"] == {"kind": "GitRepository",
                                                  "name": repository["metadata"]["name"]}
    assert (ROOT / kustomization["spec"]["path"]).is_dir()
    assert kustomization["spec"]["prune"] is True
    assert repository["spec"]["ref"]["tag"].startswith("v")


def test_flux_health_expressions_give_each_phase_one_verdict() -> None:
    celpy = pytest.importorskip("celpy", reason="cel-python (the dev extra) evaluates CEL")
    jobs = only(load_yaml(FLUX / "trainingjobs-kustomization.yaml"), "Kustomization")
    (check,) = jobs["spec"]["healthCheckExprs"]
    environment = celpy.Environment()

    def verdicts(phase: str | None) -> list[str]:
        # Flux evaluates each expression with the object's top-level fields as variables.
        activation = {"status": celpy.json_to_cel({} if phase is None else {"phase": phase})}
        return [key for key in ("current", "failed", "inProgress")
                if environment.program(environment.compile(check[key])).evaluate(activation)]

    assert check["kind"] == "TrainingJob" and check["apiVersion"] == "aimass.dev/v1alpha1"
    assert verdicts("Succeeded") == ["current"]
    assert verdicts("Suspended") == ["current"]
    assert verdicts("Failed") == ["failed"]
    for phase in (None, "Pending", "Running"):
        assert verdicts(phase) == ["inProgress"], phase
