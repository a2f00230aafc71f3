"""Grafana's dashboard JSON model, as far as gatewatch's dashboards use it: panels of Prometheus queries,
query variables, and Grafana's way of filling ``$variables`` in.

Part of ``dashboards/generate.py`` (a script, not a package of the wheel): the dashboards themselves are
in the ``dashboard_*.py`` modules beside this one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUILTIN_VARIABLES",
    "DATASOURCE",
    "SCHEMA_VERSION",
    "Dashboard",
    "Panel",
    "Target",
    "Variable",
    "build",
    "expand",
    "render",
    "thresholds",
]

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


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """A panel's field defaults colouring values by ``(colour, from value)`` steps (the first from None)."""
    return {"thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}}


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


# -- Grafana's variables ------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand(template: str, variables: Mapping[str, str]) -> str:
    """Fill in ``$name`` / ``${name}`` as Grafana would (a missing variable is a KeyError, not a guess)."""
    values = {**BUILTIN_VARIABLES, **variables}
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], template)
