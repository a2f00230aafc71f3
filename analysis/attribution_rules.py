"""The attribution's rules table: each scope decision names one rule (a stable id, its scope, what it means).
The functions that apply them, one per rule, are in :mod:`.attribution`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gatewatch.core.vocabulary import Scope

__all__ = ["RULES", "Rule"]


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    scope: Scope
    meaning: str


RULES: Mapping[str, Rule] = {
    rule.rule_id: rule
    for rule in (
        Rule(
            "scope.insufficient.measurements",
            "insufficient-data",
            "too few judged measurements in the window",
        ),
        Rule("scope.insufficient.networks", "insufficient-data", "too few networks measured in the window"),
        Rule("scope.none.all_clean", "none", "every network measured is currently clean"),
        Rule(
            "scope.insufficient.flapping",
            "insufficient-data",
            "interference appears only in networks that keep flapping between clean and anomalous",
        ),
        Rule(
            "scope.gateway.same_fingerprint",
            "gateway",
            "the same fingerprint in enough networks and in a large share of those measured, "
            "and no unexplained clean network",
        ),
        Rule("scope.isp.single_network", "isp", "interference in one network only"),
        Rule(
            "scope.isp.no_shared_fingerprint",
            "isp",
            "no fingerprint is shared by enough networks: networks see different interference",
        ),
        Rule(
            "scope.isp.clean_networks",
            "isp",
            "a shared fingerprint, but networks measured since it appeared are clean: confined to some",
        ),
        Rule(
            "scope.isp.low_share",
            "isp",
            "a shared fingerprint, but in too small a share of the networks measured",
        ),
        # Issue 17: where agents took packet traces, they settle what content fingerprints cannot.
        Rule(
            "scope.gateway.same_injector",
            "gateway",
            "networks see different content, but their packet traces locate one injector: the same "
            "injected-packet signature at the same distance before the server, from several networks",
        ),
        Rule(
            "scope.isp.different_injectors",
            "isp",
            "the same fingerprint in several networks, but their packet traces locate different injectors "
            "(another signature or distance): the same list applied by several boxes, not one chokepoint",
        ),
    )
}
