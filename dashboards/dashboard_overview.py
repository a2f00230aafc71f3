"""The overview dashboard: where interference is happening now, and whether a country's gateway is behind it.

Part of ``dashboards/generate.py``.
"""

from __future__ import annotations

from grafana_model import Dashboard, Panel, Target, thresholds

__all__ = ["OVERVIEW"]

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
            field_defaults=thresholds(("green", None), ("red", 1)),
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
