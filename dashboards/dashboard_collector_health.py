"""The collector's health dashboard: is it taking measurements in, and how fast?

Part of ``dashboards/generate.py``.
"""

from __future__ import annotations

from grafana_model import Dashboard, Panel, Target, thresholds

__all__ = ["HEALTH"]

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
            "Upload batches per second by how they were signed",
            "timeseries",
            [
                Target(
                    "sum by (result) (rate(gatewatch_ingest_batches_total[$__rate_interval]))",
                    legend="{{result}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Measurements judged per second, by where their control came from and why an embedded one was "
            "refused",
            "timeseries",
            [
                Target(
                    "sum by (source, refusal) (rate(gatewatch_ingest_controls_total[$__rate_interval]))",
                    legend="{{source}} {{refusal}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Sightings per second by result (test-list URLs agents report before their delayed upload; "
            "rate_limited or rejected in bulk is someone flooding)",
            "timeseries",
            [
                Target(
                    "sum by (result) (rate(gatewatch_sightings_total[$__rate_interval]))",
                    legend="{{result}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Tokens issued per second, and token requests by result",
            "timeseries",
            [
                Target("sum(rate(gatewatch_tokens_issued_total[$__rate_interval]))", legend="tokens issued"),
                Target(
                    "sum by (result) (rate(gatewatch_token_requests_total[$__rate_interval]))",
                    legend="requests {{result}}",
                ),
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
            field_defaults=thresholds(("green", None), ("orange", 900), ("red", 3600)),
        ),
    ],
)
