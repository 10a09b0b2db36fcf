"""`aimass operator`'s settings: flags, their environment variables, and what reaches kopf."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from aimass_operator import main as entry


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What main() hands to kopf.run and to the metrics server, instead of running them."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(entry, "serve", lambda metrics, port: seen.update(metrics_port=port))
    monkeypatch.setattr(entry, "configure_logging",
                        lambda **kwargs: seen.update(logging=kwargs))
    for name in ("AIMASS_NAMESPACES", "AIMASS_TRAINER_IMAGE", "AIMASS_METRICS_PORT",
                 "AIMASS_LIVENESS", "AIMASS_LOG_FORMAT", "AIMASS_SWEEP_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_by_default_the_operator_watches_the_whole_cluster_standalone(
    launched: dict[str, Any],
) -> None:
    assert entry.main([]) == 0

    assert launched["clusterwide"] is True and launched["namespaces"] == []
    assert launched["standalone"] is True
    assert launched["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"
    assert launched["metrics_port"] == 8080
    assert launched["memo"].config.default_image == entry.DEFAULT_IMAGE
    assert launched["logging"] == {"log_format": "text", "verbose": False}


def test_the_environment_configures_namespaces_image_and_json_logs(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_NAMESPACES", "ml, research")
    monkeypatch.setenv("AIMASS_TRAINER_IMAGE", "registry.example/aimass:1.2")
    monkeypatch.setenv("AIMASS_LOG_FORMAT", "json")
    monkeypatch.setenv("AIMASS_METRICS_PORT", "0")

    entry.main([])

    assert launched["clusterwide"] is False
    assert launched["namespaces"] == ["ml", "research"]
    assert launched["memo"].config.default_image == "registry.example/aimass:1.2"
    assert launched["logging"]["log_format"] == "json"
    assert "metrics_port" not in launched


def test_flags_win_over_the_environment(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_TRAINER_IMAGE", "from-env:1")

    entry.main(["--image", "from-flag:2", "-n", "ml", "--liveness", "", "--sweep-interval", "3"])

    assert launched["memo"].config.default_image == "from-flag:2"
    assert launched["memo"].config.sweep_interval == 3
    assert launched["namespaces"] == ["ml"]
    assert launched["liveness_endpoint"] is None


def test_a_bad_sweep_interval_is_refused_naming_the_value(
    launched: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIMASS_SWEEP_INTERVAL", "soon")

    with pytest.raises(SystemExit, match="AIMASS_SWEEP_INTERVAL.*'soon'"):
        entry.main([])
