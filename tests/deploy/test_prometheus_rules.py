"""The Prometheus configuration and alerting rules: promtool's own checks and unit tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gatewatch.collector.settings import DEFAULT_PORT

pytestmark = pytest.mark.prometheus

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
METRIC = re.compile(r"\b(gatewatch_[a-z0-9_]+|up)\b")


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_is_valid_and_scrapes_the_collector(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "gatewatch-collector"
    assert job["static_configs"] == [{"targets": [f"localhost:{DEFAULT_PORT}"]}]
    assert config["rule_files"] == ["alerts.yml"]


def test_promtool_would_notice_a_failing_alert(promtool: str, tmp_path: Path) -> None:
    # Guard against a unit-test file that passes whatever the rules say: break a rule, expect a failure.
    broken = (PROMETHEUS / "alerts.yml").read_text().replace("for: 15m", "for: 45m")
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "IspInterferenceAppeared" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}


def test_alerts_use_only_metrics_the_collector_exposes(known_metrics: frozenset[str]) -> None:
    for rule in rules():
        names = set(METRIC.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= known_metrics, (rule["alert"], names - known_metrics)
        assert rule["labels"]["severity"] in {"page", "warning", "info"}
