"""The rules table: stable, complete, and the only source of rule ids the analysis uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatewatch import analysis
from gatewatch.analysis import RULES
from gatewatch.analysis.rules import RULES_BY_ID, layer_verdict
from gatewatch.core.vocabulary import BLOCKING_LAYERS

SOURCE = Path(analysis.__file__).parent
RULE_ID = re.compile(r"^(control|dns|tcp|tls|http)\.[a-z0-9_]+$")


def test_rule_ids_are_unique_and_well_formed() -> None:
    ids = [r.rule_id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(RULE_ID.match(i) for i in ids), ids
    for r in RULES:
        assert r.why.endswith(".") and len(r.why) > 20, r.rule_id
        prefix = {"tcp_ip": "tcp"}.get(r.layer, r.layer)
        assert r.rule_id.startswith(prefix + "."), r.rule_id


def test_interference_rules_say_what_blocking_they_mean() -> None:
    for r in RULES:
        if r.concludes == "interference":
            assert r.blocking in BLOCKING_LAYERS, r.rule_id
            assert r.outcome == "interference"
        else:
            assert r.blocking is False, r.rule_id
            assert r.outcome in ("ok", "inconclusive")
    # TLS interference is reported as http-failure (OONI's value for https inputs).
    assert RULES_BY_ID["tls.blocked"].blocking == "http-failure"


def test_every_rule_id_in_the_code_is_in_the_table_and_every_rule_is_used() -> None:
    used: set[str] = set()
    for path in SOURCE.glob("*.py"):
        if path.name != "rules.py":
            text = path.read_text(encoding="utf-8")
            used |= set(re.findall(r'"((?:control|dns|tcp|tls|http)\.[a-z0-9_]+)"', text))
    # Technique names come from the vocabulary (test_techniques.py), so every quoted dotted name in the
    # analysis is a rule id: a misspelt one is not in the table.
    assert used <= RULES_BY_ID.keys(), used - RULES_BY_ID.keys()
    assert RULES_BY_ID.keys() <= used


def test_layer_verdict_uses_the_rule() -> None:
    lv = layer_verdict("tcp.connected")
    assert (lv.layer, lv.outcome, lv.rule_id) == ("tcp_ip", "ok", "tcp.connected")
    assert lv.reason == RULES_BY_ID["tcp.connected"].why
    with pytest.raises(ValueError):
        layer_verdict("control.missing")  # applies to every layer: the caller must say which
    assert layer_verdict("control.missing", layer="http").outcome == "inconclusive"
    with pytest.raises(KeyError):
        layer_verdict("dns.no_such_rule")
