"""The Grafana dashboards: generated, consistent with the code's metric names, and valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gatewatch.collector.metrics import IngestMetrics, TokenMetrics
from gatewatch.core.vocabulary import BLOCKING_LABELS, SCOPES, TECHNIQUES

REPO = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bgatewatch_[a-z0-9_]+\b")
VARIABLES = {"cc": "XL", "asn": ".*"}
SELECTOR = re.compile(r"\b(gatewatch_[a-z0-9_]+)\{([^}]*)\}")
EXACT_MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')  # label="value" (not =~, not !=)
# Labels whose values are the project's vocabulary, whatever the metric.
VOCABULARY = {"scope": SCOPES, "blocking": BLOCKING_LABELS, "technique": TECHNIQUES}


def test_committed_json_is_what_generate_writes(generator: ModuleType, tmp_path: Path) -> None:
    assert generator.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(generator.DASHBOARDS)
    committed = sorted(p.name for p in (REPO / "dashboards").glob("*.json"))
    assert committed == written, "a dashboard JSON file without a definition (or the reverse)"
    for name in written:
        assert (REPO / "dashboards" / name).read_text() == (tmp_path / name).read_text(), (
            f"dashboards/{name} is out of date: run python dashboards/generate.py"
        )
    assert generator.main(["--check"]) == 0


def test_every_panel_queries_known_metrics(generator: ModuleType, known_metrics: frozenset[str]) -> None:
    for name in generator.DASHBOARDS:
        model = json.loads((REPO / "dashboards" / name).read_text())
        assert model["schemaVersion"] == 39
        datasource = model["templating"]["list"][0]
        assert (datasource["name"], datasource["type"], datasource["query"]) == (
            "datasource",
            "datasource",
            "prometheus",
        )
        assert model["panels"]
        for panel in model["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            exprs = [t["expr"] for t in panel["targets"]]
            assert exprs, f"{name}: {panel['title']} has no query"
            for expr in exprs:
                used = set(METRIC.findall(expr))
                assert used, f"{name}: {panel['title']}: {expr}"
                assert used <= known_metrics, (panel["title"], used - known_metrics)
    for _uid, _name, query in generator.variable_queries():
        assert set(METRIC.findall(query)) <= known_metrics


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}


def _ingest_label_values() -> dict[tuple[str, str], set[str]]:
    """(series, label) -> every value the ingest metrics expose (they pre-create each combination)."""
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    TokenMetrics.register(registry)
    values: dict[tuple[str, str], set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault((sample.name, label), set()).add(value)
    return values


def test_every_label_value_a_query_matches_is_one_the_code_exposes() -> None:
    # A dashboard filtering on a value the code never writes (a renamed scope, a re-spelled technique)
    # shows an empty panel forever: each exact matcher must name a value of the vocabulary or of the metric.
    ingest = _ingest_label_values()
    checked = 0
    for name, model in _dashboards().items():
        for panel in model["panels"]:
            for target in panel["targets"]:
                for series, matchers in SELECTOR.findall(target["expr"]):
                    for label, value in EXACT_MATCHER.findall(matchers):
                        if "$" in value:
                            continue  # a dashboard variable, filled from label_values()
                        known = VOCABULARY.get(label) or ingest.get((series, label), set())
                        assert value in known, f"{name}: {panel['title']}: {label}={value!r} on {series}"
                        checked += 1
    assert checked  # the dashboards do filter on fixed values; this test must see them


def test_the_scope_timeline_names_scopes_of_the_vocabulary() -> None:
    texts = [
        option["text"]
        for model in _dashboards().values()
        for panel in model["panels"]
        if any("gatewatch_interference_scope" in t["expr"] for t in panel["targets"])
        for mapping in panel["fieldConfig"]["defaults"].get("mappings", [])
        for option in mapping["options"].values()
    ]
    assert texts and set(texts) <= set(SCOPES), texts


def test_panel_queries_lists_every_target(generator: ModuleType) -> None:
    queries = generator.panel_queries(VARIABLES)
    targets = sum(len(p.targets) for d in generator.DASHBOARDS.values() for p in d.panels)
    assert len(queries) == targets
    for query in queries:
        assert "$" not in query.expr, query
    # without values, queries that need a dashboard variable keep their template
    unexpanded = [q for q in generator.panel_queries() if "$cc" in q.expr]
    assert unexpanded and all(q.dashboard == "gatewatch-country" for q in unexpanded)
    with pytest.raises(KeyError):
        generator.panel_queries({"cc": "XL"})  # asn missing


def test_expand_fills_grafana_variables(generator: ModuleType) -> None:
    text = 'rate(x{cc="$cc", asn=~"${asn:regex}"}[$__rate_interval])'
    assert generator.expand(text, {"cc": "XL", "asn": "AS1|AS2"}) == 'rate(x{cc="XL", asn=~"AS1|AS2"}[1m])'


@pytest.mark.prometheus
def test_panel_queries_are_valid_promql(generator: ModuleType, promtool: str, tmp_path: Path) -> None:
    # promtool parses every expression of a rules file: one recording rule per panel query.
    records = [
        {"record": f"gatewatch_check:q{i}", "expr": q.expr}
        for i, q in enumerate(generator.panel_queries(VARIABLES))
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards(generator: ModuleType) -> None:
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "gatewatch.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://localhost:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "gatewatch.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/dashboards/gatewatch")
