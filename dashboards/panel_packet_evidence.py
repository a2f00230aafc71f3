"""The country dashboard's packet-evidence table (issue 17): where on the path each blocked domain is
tampered with, as the agents' packet traces show it.

Part of ``dashboards/generate.py``; its own builder so the country dashboard keeps one line for it.
"""

from __future__ import annotations

from grafana_model import Panel, Target

__all__ = ["packet_evidence_panel"]


def packet_evidence_panel() -> Panel:
    return Panel(
        "Packet evidence: where the injector is",
        "table",
        [Target('gatewatch_interference_packet_evidence{cc="$cc"}', instant=True, table=True)],
        description="Per blocked domain, what the agents' packet traces (optional, CAP_NET_RAW) found: "
        "'packet.gateway.same_injector' is the same injected-packet signature at the same distance "
        "before the server from several networks (one box on the shared path); "
        "'packet.isp.different_injectors' points to separate boxes. The value counts the networks that "
        "located an injector.",
        width=24,
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True, "__name__": True, "cc": True},
                    "renameByName": {"Value": "networks located", "rule": "evidence", "supports": "supports"},
                },
            }
        ],
    )
