"""Write gatewatch's Grafana dashboards (``dashboards/*.json``) from the definitions below.

The dashboards are generated so that their queries stay consistent with each other and with the metric
names (a test compares the committed JSON with this script's output and checks every metric name a query
uses against the code). Edit this file, then run::

    python dashboards/generate.py           # rewrite the JSON files beside this script
    python dashboards/generate.py --check   # exit 1 if a committed file is out of date

Every panel queries the Prometheus data source chosen in the ``datasource`` variable. ``panel_queries()``
lists every panel query with the dashboard variables filled in, so that a test can evaluate each one
through a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DASHBOARDS",
    "BUILTIN_VARIABLES",
    "PanelQuery",
    "build",
    "expand",
    "main",
    "panel_queries",
    "render",
    "variable_queries",
]

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, with values that suit a Prometheus scraping every 15 s or faster.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False  # tables, stats and bar gauges show the present, not a history
    table: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type
    targets: Sequence[Target]
    description: str = ""
    width: int = 12
    height: int = 8
    unit: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    field_defaults: Mapping[str, Any] = field(default_factory=dict)
    transformations: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    query: str  # label_values(...)
    include_all: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: Sequence[Panel]
    variables: Sequence[Variable] = ()
    time_from: str = "now-24h"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref_id: str
    expr: str  # with variables filled in
    template: str  # as written in the dashboard
    instant: bool


SCOPE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "2": {"text": "gateway", "color": "red", "index": 0},
            "1": {"text": "isp", "color": "orange", "index": 1},
        },
    }
]


def _thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}}


# -- the three dashboards ---------------------------------------------------------------------------

OVERVIEW = Dashboard(
    uid="gatewatch-overview",
    title="gatewatch / Overview",
    description="Where interference is happening now, and whether a country's gateway is behind it.",
    panels=[
        Panel(
            "Countries with gateway-level interference now",
            "stat",
            [Target("gatewatch_countries_gateway_interference", instant=True)],
            description="Countries where networks see the same interference (attribution: gateway).",
            width=6,
            options={"colorMode": "background", "graphMode": "none"},
            field_defaults=_thresholds(("green", None), ("red", 1)),
        ),
        Panel(
            "Metric rows left out by the cardinality budget",
            "stat",
            [Target("gatewatch_interference_rows_unexported", instant=True)],
            description="Gateway or ISP rows not exported as series; GET /api/v1/interference has them all.",
            width=6,
            options={"graphMode": "none"},
        ),
        Panel(
            "Gateway- and ISP-level domains by country",
            "table",
            [Target("count by (cc, scope) (gatewatch_interference_scope)", instant=True, table=True)],
            transformations=[
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "domains"}},
                }
            ],
        ),
        Panel(
            "Top blocked domains (countries where blocked)",
            "bargauge",
            [
                Target(
                    "topk(15, count by (domain) (gatewatch_interference_scope))",
                    legend="{{domain}}",
                    instant=True,
                )
            ],
            options={"orientation": "horizontal", "displayMode": "basic"},
        ),
        Panel(
            "Anomaly ratio by country (window)",
            "timeseries",
            [
                Target(
                    "sum by (cc) (gatewatch_network_anomaly_ratio * gatewatch_network_measurements)"
                    " / sum by (cc) (gatewatch_network_measurements)",
                    legend="{{cc}}",
                )
            ],
            description="Share of judged measurements in the attribution window that were anomalous.",
            unit="percentunit",
        ),
        Panel(
            "Gateway-level domains over time",
            "timeseries",
            [Target('count by (cc) (gatewatch_interference_scope{scope="gateway"})', legend="{{cc}}")],
        ),
        Panel(
            "Measurements per second by country",
            "timeseries",
            [Target("sum by (cc) (rate(gatewatch_measurements_total[$__rate_interval]))", legend="{{cc}}")],
            width=24,
            unit="reqps",
        ),
    ],
)

COUNTRY = Dashboard(
    uid="gatewatch-country",
    title="gatewatch / Country",
    description="One country: its networks, and for each blocked domain: blocked at the gateway, or by ISPs?",
    variables=[
        Variable("cc", "Country", "label_values(gatewatch_network_measurements, cc)"),
        Variable(
            "asn", "Network", 'label_values(gatewatch_network_measurements{cc="$cc"}, asn)', include_all=True
        ),
    ],
    panels=[
        Panel(
            "Gateway vs ISP",
            "table",
            [
                Target('gatewatch_interference_scope{cc="$cc"}', instant=True, table=True),
                Target('gatewatch_interference_networks_affected{cc="$cc"}', instant=True, table=True),
                Target('gatewatch_interference_networks_measured{cc="$cc"}', instant=True, table=True),
            ],
            description="Each blocked domain with its scope; for a gateway row, 'networks affected' counts "
            "the networks that see the same fingerprint.",
            width=24,
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True, "Value #A": True, "cc": True},
                        "renameByName": {"Value #B": "networks affected", "Value #C": "networks measured"},
                    },
                },
            ],
        ),
        Panel(
            "Anomaly ratio per network (window)",
            "timeseries",
            [Target('gatewatch_network_anomaly_ratio{cc="$cc", asn=~"$asn"}', legend="{{asn}}")],
            unit="percentunit",
        ),
        Panel(
            "Judged measurements per network (window)",
            "bargauge",
            [Target('gatewatch_network_measurements{cc="$cc", asn=~"$asn"}', legend="{{asn}}", instant=True)],
            options={"orientation": "horizontal", "displayMode": "basic"},
        ),
        Panel(
            "Interference timeline per domain",
            "state-timeline",
            [
                Target(
                    'max by (domain) (2 * gatewatch_interference_scope{cc="$cc", scope="gateway"})'
                    ' or max by (domain) (gatewatch_interference_scope{cc="$cc", scope="isp"})',
                    legend="{{domain}}",
                )
            ],
            width=24,
            field_defaults={"mappings": SCOPE_MAPPINGS},
        ),
        Panel(
            "Technique breakdown",
            "piechart",
            [
                Target(
                    'count by (technique) (gatewatch_interference_scope{cc="$cc"})',
                    legend="{{technique}}",
                    instant=True,
                )
            ],
            options={"legend": {"displayMode": "table", "placement": "right", "values": ["value"]}},
        ),
        Panel(
            "Anomalies per second by verdict",
            "timeseries",
            [
                Target(
                    'sum by (blocking) (rate(gatewatch_anomalies_total{cc="$cc"}[$__rate_interval]))',
                    legend="{{blocking}}",
                )
            ],
            unit="reqps",
        ),
    ],
)

HEALTH = Dashboard(
    uid="gatewatch-collector-health",
    title="gatewatch / Collector health",
    description="Is the collector taking measurements in, and how fast?",
    time_from="now-6h",
    panels=[
        Panel(
            "Upload requests per second by result",
            "timeseries",
            [
                Target(
                    "sum by (result) (rate(gatewatch_ingest_requests_total[$__rate_interval]))",
                    legend="{{result}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Measurements per second by result",
            "timeseries",
            [
                Target(
                    "sum by (result) (rate(gatewatch_ingest_items_total[$__rate_interval]))",
                    legend="{{result}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Rejections per second by reason",
            "timeseries",
            [
                Target(
                    'sum by (reason) (rate(gatewatch_ingest_items_total{result="rejected"}'
                    "[$__rate_interval]))",
                    legend="{{reason}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Upload latency",
            "timeseries",
            [
                Target(
                    "histogram_quantile(0.5, sum by (le) (rate(gatewatch_ingest_request_seconds_bucket"
                    "[$__rate_interval])))",
                    legend="p50",
                ),
                Target(
                    "histogram_quantile(0.95, sum by (le) (rate(gatewatch_ingest_request_seconds_bucket"
                    "[$__rate_interval])))",
                    legend="p95",
                ),
            ],
            unit="s",
        ),
        Panel(
            "Store latency p95 by operation",
            "timeseries",
            [
                Target(
                    "histogram_quantile(0.95, sum by (le, operation) (rate(gatewatch_store_seconds_bucket"
                    "[$__rate_interval])))",
                    legend="{{operation}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Since the last accepted measurement",
            "stat",
            [Target("time() - gatewatch_ingest_last_accepted_timestamp_seconds", instant=True)],
            unit="s",
            options={"graphMode": "none", "colorMode": "background"},
            field_defaults=_thresholds(("green", None), ("orange", 900), ("red", 3600)),
        ),
    ],
)

DASHBOARDS: Mapping[str, Dashboard] = {
    "overview.json": OVERVIEW,
    "country.json": COUNTRY,
    "collector-health.json": HEALTH,
}

# -- JSON ---------------------------------------------------------------------------------------------


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for index, target in enumerate(panel.targets):
        targets.append(
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + index),
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "instant": target.instant,
                "range": not target.instant,
                "format": "table" if target.table else "time_series",
                "editorMode": "code",
            }
        )
    defaults: dict[str, Any] = dict(panel.field_defaults)
    if panel.unit:
        defaults["unit"] = panel.unit
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": dict(panel.options),
    }
    if panel.description:
        result["description"] = panel.description
    if panel.transformations:
        result["transformations"] = [dict(t) for t in panel.transformations]
    return result


def _variable_json(variable: Variable) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": variable.query,
        "query": {
            "qryType": 1,
            "query": variable.query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "refresh": 2,  # on time range change: networks come and go
        "sort": 1,
        "hide": 0,
        "multi": variable.include_all,
        "includeAll": variable.include_all,
        "current": {},
        "options": [],
        "regex": "",
    }
    if variable.include_all:
        result["allValue"] = ".*"
    return result


def build(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model; panels flow left to right, 24 columns wide."""
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    datasource_variable = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "options": [],
        "refresh": 1,
        "regex": "",
    }
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["gatewatch"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "utc",
        "refresh": "1m",
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["gatewatch"], "asDropdown": True, "title": "gatewatch"}],
        "templating": {"list": [datasource_variable, *(_variable_json(v) for v in dashboard.variables)]},
        "panels": panels,
    }


def render(dashboard: Dashboard) -> str:
    return json.dumps(build(dashboard), indent=2, ensure_ascii=False) + "\n"


# -- queries, for tests -------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand(template: str, variables: Mapping[str, str]) -> str:
    """Fill in ``$name`` / ``${name}`` as Grafana would (a missing variable is a KeyError, not a guess)."""
    values = {**BUILTIN_VARIABLES, **variables}
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], template)


def panel_queries(variables: Mapping[str, str] | None = None) -> list[PanelQuery]:
    """Every panel query of every dashboard. With ``variables`` (e.g. ``{"cc": "XL", "asn": ".*"}``) the
    expressions are filled in; without, only queries that use no dashboard variable are expandable, so
    the others keep their template text in ``expr``."""
    out = []
    for dashboard in DASHBOARDS.values():
        for panel in dashboard.panels:
            for index, target in enumerate(panel.targets):
                try:
                    expr = expand(target.expr, variables or {})
                except KeyError:
                    if variables is not None:
                        raise
                    expr = target.expr
                out.append(
                    PanelQuery(
                        dashboard.uid, panel.title, chr(ord("A") + index), expr, target.expr, target.instant
                    )
                )
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, variable name, label_values query) for every query variable."""
    return [(d.uid, v.name, v.query) for d in DASHBOARDS.values() for v in d.variables]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is out of date")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write to (default: beside this file)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, dashboard in DASHBOARDS.items():
        path = args.out / name
        text = render(dashboard)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
