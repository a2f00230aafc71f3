"""The committed JSON Schema is what the models generate, and it has no field for an IP."""

from __future__ import annotations

import json
from pathlib import Path

from gatewatch.core.schema import render

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "measurement.schema.json"


def test_committed_schema_is_current() -> None:
    regenerate = "python -m gatewatch.core.schema docs/measurement.schema.json"
    assert SCHEMA.read_text(encoding="utf-8") == render(), f"the committed schema is stale: {regenerate}"


def test_schema_has_no_ip_property() -> None:
    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            found = set(node.get("properties", {}))
            for value in node.values():
                found |= keys(value)
            return found
        if isinstance(node, list):
            return set().union(*(keys(v) for v in node)) if node else set()
        return set()

    names = keys(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert "measurement_uid" in names
    assert not {n for n in names if n in {"probe_ip", "client_ip", "ip_address"}}
