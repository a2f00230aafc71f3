"""deploy/compose/: the operator stack. No Docker runs here, so the compose file is checked as data: its
services, health checks, start order, volumes, every file it mounts or builds from; and the configurations
it mounts are checked by their own tools (promtool, amtool) exactly as the containers would see them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = COMPOSE_DIR / "Dockerfile"


def _mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of each volume entry of a service (short syntax)."""
    return [tuple(entry.split(":")[:2]) for entry in SERVICES[service].get("volumes", [])]  # type: ignore[misc]


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/"))


def test_the_stack_has_every_part_the_operator_needs() -> None:
    assert set(SERVICES) == {"collector", "postgres", "prometheus", "alertmanager", "grafana"}
    assert all(service.get("restart") == "unless-stopped" for service in SERVICES.values())


def test_every_service_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check, name
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1, name
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_services_start_in_order_once_their_dependencies_are_healthy() -> None:
    order: dict[str, set[str]] = {}
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency, rule in depends.items():
            assert dependency in SERVICES, (name, dependency)
            assert rule == {"condition": "service_healthy"}, (name, dependency)
        order[name] = set(depends)
    assert order["collector"] == {"postgres"}
    assert order["prometheus"] == {"collector", "alertmanager"}
    assert order["grafana"] == {"prometheus"}
    # no cycle: repeatedly remove services whose dependencies are all started
    started: set[str] = set()
    while len(started) < len(order):
        ready = {name for name, deps in order.items() if name not in started and deps <= started}
        assert ready, f"dependency cycle among {set(order) - started}"
        started |= ready


def test_every_mounted_file_exists_and_every_named_volume_is_declared() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    used: set[str] = set()
    for name in SERVICES:
        for source, target in _mounts(name):
            assert target.startswith("/"), (name, target)
            if _is_bind(source):
                assert (COMPOSE_DIR / source).exists(), (name, source)
            else:
                used.add(source)
    assert used == declared
    # state lives in named volumes, so `docker compose down` (without -v) keeps it
    for name, path in {
        "postgres": "/var/lib/postgresql/data",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "grafana": "/var/lib/grafana",
    }.items():
        assert (name, path) in _mounts(name)


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_secrets_come_from_the_documented_env_file() -> None:
    text = (COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    example = (COMPOSE_DIR / "env.example").read_text(encoding="utf-8")
    for variable in set(re.findall(r"\$\{(\w+)", text)):
        assert re.search(rf"^#? ?{variable}=", example, re.MULTILINE), variable
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()


def test_the_collector_is_built_by_the_shipped_dockerfile() -> None:
    build = SERVICES["collector"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (context / source).exists(), source
    # every folder the package is built from is copied in
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and "--from=" not in line}
    assert {"core", "probes", "analysis", "agent", "collector", "lab", "pyproject.toml"} <= copied


def test_the_image_is_slim_non_root_and_checks_its_health() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert all("-slim" in line for line in text.splitlines() if line.startswith("FROM "))
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "\nHEALTHCHECK " in text and "/healthz" in text
    assert '".[collector]"' in text  # the collector's extra, no test tools


def _container_tree(service: str, root: Path) -> Path:
    """The service's bind-mounted files placed under ``root`` at their container paths."""
    for source, target in _mounts(service):
        if _is_bind(source):
            destination = root / target.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            origin = COMPOSE_DIR / source
            (shutil.copytree if origin.is_dir() else shutil.copyfile)(origin, destination)
    return root


@pytest.mark.prometheus
def test_prometheus_accepts_the_config_and_rules_it_mounts(promtool: str, tmp_path: Path) -> None:
    root = _container_tree("prometheus", tmp_path)
    config_flag = next(arg for arg in SERVICES["prometheus"]["command"] if arg.startswith("--config.file="))
    config = root / config_flag.split("=", 1)[1].lstrip("/")
    done = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "rules found" in done.stdout
    loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert loaded["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert loaded["scrape_configs"][0]["job_name"] == "gatewatch-collector"  # what alerts.yml names


@pytest.fixture(scope="module")
def amtool() -> str:
    found = shutil.which("amtool")
    if found is None:
        pytest.skip("amtool is not installed (Debian's prometheus-alertmanager, from .ci/run)")
    return found


def _uncomment_examples(text: str) -> str:
    return re.sub(r"^    # (email_configs|webhook_configs|  )", r"    \1", text, flags=re.MULTILINE)


@pytest.mark.parametrize("with_examples", [False, True])
def test_alertmanager_accepts_its_config(amtool: str, tmp_path: Path, with_examples: bool) -> None:
    text = (COMPOSE_DIR / "alertmanager.yml").read_text(encoding="utf-8")
    if with_examples:
        text = _uncomment_examples(text)
        receivers = yaml.safe_load(text)["receivers"]
        assert all(len(receiver) == 2 for receiver in receivers)  # each example filled one receiver
    config = tmp_path / "alertmanager.yml"
    config.write_text(text, encoding="utf-8")
    done = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_routes_name_real_alerts() -> None:
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    severities = {rule["labels"]["severity"] for group in alerts["groups"] for rule in group["rules"]}
    config = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    text = yaml.safe_dump(config)
    assert set(re.findall(r"alertname=\"(\w+)\"", text)) <= names
    assert {'severity="page"'} <= {m for route in config["route"]["routes"] for m in route["matchers"]}
    assert "page" in severities


def test_grafana_gets_the_shipped_dashboards_and_the_stacks_prometheus() -> None:
    mounts = dict((target, source) for source, target in _mounts("grafana"))
    provider = yaml.safe_load(
        (COMPOSE_DIR / mounts["/etc/grafana/provisioning/dashboards"] / "gatewatch.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    dashboards = COMPOSE_DIR / mounts[path]
    assert dashboards.resolve() == REPO / "dashboards" and list(dashboards.glob("*.json"))
    ours = yaml.safe_load((COMPOSE_DIR / "grafana-datasources.yaml").read_text())["datasources"][0]
    shipped = yaml.safe_load(
        (REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "gatewatch.yaml").read_text()
    )["datasources"][0]
    assert {k: v for k, v in ours.items() if k != "url"} == {k: v for k, v in shipped.items() if k != "url"}
    assert ours["url"] == "http://prometheus:9090"
