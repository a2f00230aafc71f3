"""The collector's port comes from one place (collector/settings.py's DEFAULT_PORT): every shipped file that
names it (Prometheus targets, the systemd unit, the compose stack, the Dockerfile, the README) agrees."""

from __future__ import annotations

import re

import yaml

from gatewatch.collector.settings import DEFAULT_PORT, Settings

from .conftest import REPO

DEPLOY = REPO / "deploy"


def _targets(path: str) -> list[str]:
    config = yaml.safe_load((DEPLOY / path).read_text(encoding="utf-8"))
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "gatewatch-collector"]
    return [target for static in job["static_configs"] for target in static["targets"]]


def test_the_collector_listens_on_the_default_port() -> None:
    assert Settings().listen_port == DEFAULT_PORT


def test_prometheus_scrapes_the_default_port() -> None:
    assert _targets("prometheus/prometheus.yml") == [f"localhost:{DEFAULT_PORT}"]
    assert _targets("compose/prometheus.yml") == [f"collector:{DEFAULT_PORT}"]
    # The alert rules' unit tests use the instance label a default scrape gives.
    instances = set(
        re.findall(r'instance="([^"]+)"', (DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    )
    assert instances == {f"localhost:{DEFAULT_PORT}"}


def test_the_systemd_unit_listens_on_the_default_port() -> None:
    unit = (DEPLOY / "systemd" / "gatewatch-collector.service").read_text(encoding="utf-8")
    assert f"\nEnvironment=GATEWATCH_LISTEN=127.0.0.1:{DEFAULT_PORT}\n" in unit


def test_the_image_and_the_compose_stack_use_the_default_port() -> None:
    dockerfile = (DEPLOY / "compose" / "Dockerfile").read_text(encoding="utf-8")
    assert f"\nEXPOSE {DEFAULT_PORT}\n" in dockerfile
    assert f"GATEWATCH_LISTEN=0.0.0.0:{DEFAULT_PORT}" in dockerfile
    assert f"http://127.0.0.1:{DEFAULT_PORT}/healthz" in dockerfile
    collector = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text(encoding="utf-8"))["services"][
        "collector"
    ]
    assert collector["environment"]["GATEWATCH_LISTEN"] == f"0.0.0.0:{DEFAULT_PORT}"
    assert collector["ports"] == [f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}"]
    assert f"http://127.0.0.1:{DEFAULT_PORT}/readyz" in " ".join(collector["healthcheck"]["test"])


def test_no_shipped_file_names_another_collector_port() -> None:
    """Every host:port of the collector in the docs and deployment files is the default one."""
    pattern = re.compile(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0|collector):(\d+)\b")
    files = [*DEPLOY.rglob("*"), REPO / "README.md", *(REPO / "docs").glob("*.md")]
    found = {
        (path.relative_to(REPO).as_posix(), port)
        for path in files
        if path.is_file() and path.suffix in {".md", ".yml", ".yaml", ".service", ".sh", ""}
        for port in pattern.findall(path.read_text(encoding="utf-8"))
        if port not in {str(DEFAULT_PORT), "9090", "9093", "3000", "5432"}
    }
    assert not found
