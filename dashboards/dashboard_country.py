"""The country dashboard: one country's networks and, for each blocked domain, gateway or ISPs, and on
which scheme?

Part of ``dashboards/generate.py``.
"""

from __future__ import annotations

from grafana_model import Dashboard, Panel, Target, Variable
from panel_packet_evidence import packet_evidence_panel

__all__ = ["COUNTRY", "SCOPE_MAPPINGS"]

# The timeline encodes a domain's scope as a number (2 gateway, 1 ISP): these turn it back into words.
SCOPE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "2": {"text": "gateway", "color": "red", "index": 0},
            "1": {"text": "isp", "color": "orange", "index": 1},
        },
    }
]


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
            "Which scheme: http:// or https://",
            "table",
            [Target('gatewatch_interference_scheme_urls{cc="$cc"}', instant=True, table=True)],
            description="Per blocked domain and scheme, the URLs with interference and the scope and "
            "technique of the most serious one: Host filtering hits http:// only, SNI filtering https:// "
            "only. A domain counts as blocked (in the table above) when any of its URLs is; the URLs "
            "themselves are in GET /api/v1/interference?per=url.",
            width=24,
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "__name__": True, "cc": True},
                        "renameByName": {"Value": "URLs affected"},
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
        packet_evidence_panel(),  # issue 17
    ],
)
