"""The verdict rules, as data: one frozen record per rule, each saying what it concludes and why.

Every :class:`~gatewatch.core.verdicts.LayerVerdict` names the rule that decided it, and the overall
``blocking``/``accessible`` values are read off the deciding rule's ``concludes`` (see ``web.py``).
Researchers, dashboards and alerts key on ``rule_id``: never rename or reuse one; add a new rule instead.

``concludes`` says what the rule means for the whole measurement when it is the deciding one:

- ``interference``: this layer was tampered with; ``blocking`` is the rule's value, not accessible.
- ``unavailable``: the site is down or does not exist for everyone: ``blocking`` False, not accessible.
- ``undecided``: nothing can be said (the control failed): ``blocking`` None.
- ``reachable``: the probe got the site's page: ``blocking`` False, accessible.
- ``passes``: this layer is fine; later layers decide.
- ``inconclusive``: this layer cannot be judged on its own; later layers decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from gatewatch.core.verdicts import Fingerprint, Layer, LayerVerdict, Outcome
from gatewatch.core.vocabulary import BlockingLayer

__all__ = ["RULES", "RULES_BY_ID", "Conclusion", "Rule", "RuleLayer", "layer_verdict", "rule"]

Conclusion = Literal["interference", "unavailable", "undecided", "reachable", "passes", "inconclusive"]
# "control" rules are about the measurement as a whole (no control, or a control that failed).
RuleLayer = Literal["control", "dns", "tcp_ip", "tls", "http"]

_OUTCOME: Final[dict[Conclusion, Outcome]] = {
    "interference": "interference",
    "unavailable": "ok",
    "reachable": "ok",
    "passes": "ok",
    "undecided": "inconclusive",
    "inconclusive": "inconclusive",
}


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    layer: RuleLayer
    concludes: Conclusion
    why: str
    # The overall value when ``concludes`` is "interference": one of the vocabulary's blocking layers
    # (tests/analysis/test_rules.py holds every rule to them); False for every other rule.
    blocking: BlockingLayer | Literal[False] = False

    @property
    def outcome(self) -> Outcome:
        return _OUTCOME[self.concludes]


RULES: tuple[Rule, ...] = (
    # --- the control -----------------------------------------------------------------------------------
    Rule("control.missing", "control", "undecided", "There is no control to compare with."),
    Rule(
        "control.failed",
        "control",
        "undecided",
        "The control failed both to resolve the name and to fetch the page: it says nothing about the site.",
    ),
    # --- DNS -------------------------------------------------------------------------------------------
    Rule("dns.ip_literal", "dns", "passes", "The URL names an IP address: there was nothing to resolve."),
    Rule("dns.no_queries", "dns", "inconclusive", "The probe recorded no DNS query for the URL's host."),
    Rule(
        "dns.both_nxdomain",
        "dns",
        "unavailable",
        "Probe and control were both told the name does not exist: the site does not exist.",
    ),
    Rule(
        "dns.both_failed",
        "dns",
        "unavailable",
        "Probe and control resolvers gave the same authoritative failure: the name is broken for everyone.",
    ),
    Rule(
        "dns.probe_failed",
        "dns",
        "interference",
        "The probe's resolver failed (NXDOMAIN, SERVFAIL, REFUSED, no answer, timeout) while the control "
        "resolved the name.",
        "dns",
    ),
    Rule(
        "dns.probe_failed_control_failed",
        "dns",
        "undecided",
        "Both resolutions failed, differently: it cannot be told whose failure it was.",
    ),
    Rule(
        "dns.injection",
        "dns",
        "interference",
        "A query got two or more replies with different answers: an on-path injector raced the resolver.",
        "dns",
    ),
    Rule(
        "dns.bogon",
        "dns",
        "interference",
        "The probe got a non-routable (bogon) answer that the control did not get.",
        "dns",
    ),
    Rule(
        "dns.fingerprint",
        "dns",
        "interference",
        "An answer is a known blocking address (blocking-fingerprints) that the control did not get.",
        "dns",
    ),
    Rule("dns.consistent_ip", "dns", "passes", "Probe and control answers share an address."),
    Rule("dns.consistent_asn", "dns", "passes", "Probe and control answers share an autonomous system."),
    Rule(
        "dns.consistent_tls",
        "dns",
        "passes",
        "A probe-resolved address completed a validated TLS handshake for the host: the answer is genuine.",
    ),
    Rule(
        "dns.control_no_answer",
        "dns",
        "inconclusive",
        "The control could not resolve the name (not NXDOMAIN) and nothing else vouches for the answers.",
    ),
    Rule(
        "dns.inconsistent",
        "dns",
        "interference",
        "The probe's answers share neither address nor AS with the control's and no validated TLS vouches "
        "for them, and they did not lead to the control's page.",
        "dns",
    ),
    Rule(
        "dns.inconsistent_page_matches",
        "dns",
        "passes",
        "The answers differ from the control's (a CDN, say) but served the control's page, as OONI judges.",
    ),
    # --- TCP/IP ----------------------------------------------------------------------------------------
    Rule("tcp.connected", "tcp_ip", "passes", "At least one connection to the site's addresses succeeded."),
    Rule(
        "tcp.blocked_same_addresses",
        "tcp_ip",
        "interference",
        "Every probe connection failed, while the control connected to those same addresses.",
        "tcp_ip",
    ),
    Rule(
        "tcp.blocked_control_addresses",
        "tcp_ip",
        "interference",
        "Every probe connection failed to consistent addresses, while the control connected to its own.",
        "tcp_ip",
    ),
    Rule(
        "tcp.redirect_blocked",
        "tcp_ip",
        "interference",
        "A redirect led to another port and every connection of that hop failed while the control got a "
        "page: the failing step was the connect.",
        "tcp_ip",
    ),
    Rule(
        "tcp.both_failed",
        "tcp_ip",
        "unavailable",
        "Neither probe nor control could connect: the site is down.",
    ),
    Rule(
        "tcp.failed_untested",
        "tcp_ip",
        "inconclusive",
        "Every probe connection failed, to addresses the control could not vouch for.",
    ),
    # --- TLS (https) -----------------------------------------------------------------------------------
    Rule("tls.ok", "tls", "passes", "A TLS handshake for the host completed."),
    Rule(
        "tls.blocked",
        "tls",
        "interference",
        "Every TLS handshake for the host failed (reset, timeout, alert, bad certificate) while the "
        "control's handshake for the same name succeeded.",
        "http-failure",
    ),
    Rule(
        "tls.redirect_blocked",
        "tls",
        "interference",
        "A redirect led to an https:// URL and every TLS handshake of that hop failed (reset, timeout, "
        "alert) while the control got a page: the failing step was the handshake, as OONI classifies it.",
        "http-failure",
    ),
    Rule(
        "tls.both_failed",
        "tls",
        "unavailable",
        "Probe and control handshakes failed the same way: the site's TLS is broken for everyone.",
    ),
    Rule(
        "tls.control_failed",
        "tls",
        "undecided",
        "Probe and control handshakes both failed, differently: it cannot be told whose failure it was.",
    ),
    Rule(
        "tls.failed_untested",
        "tls",
        "inconclusive",
        "Every handshake failed, at addresses the control could not vouch for.",
    ),
    # --- HTTP ------------------------------------------------------------------------------------------
    Rule(
        "http.identical_body",
        "http",
        "reachable",
        "The probe's body has the control's SHA-256: it is the same page.",
    ),
    Rule(
        "http.blockpage",
        "http",
        "interference",
        "A response matches a blocking fingerprint (blocking-fingerprints database).",
        "http-diff",
    ),
    Rule(
        "http.same_page",
        "http",
        "reachable",
        "Status codes match and so does the body length, the uncommon header names or the title (OONI).",
    ),
    Rule(
        "http.diff",
        "http",
        "interference",
        "The probe's page differs from the control's: status code, or body length, headers and title.",
        "http-diff",
    ),
    Rule(
        "http.diff_vague_fingerprint",
        "http",
        "interference",
        "The page differs from the control's and contains a vague blocking phrase from the fingerprints.",
        "http-diff",
    ),
    Rule(
        "http.failure",
        "http",
        "interference",
        "The probe's request failed while the control got a response.",
        "http-failure",
    ),
    Rule(
        "http.both_failed",
        "http",
        "unavailable",
        "Probe and control requests failed the same way: the site is down for everyone (OONI's v0.5 "
        "reading; v0.4 left this undecided).",
    ),
    Rule(
        "http.control_failed",
        "http",
        "undecided",
        "The control's request failed (and not the way the probe's did): there is no page to compare with.",
    ),
    Rule(
        "http.not_attempted",
        "http",
        "inconclusive",
        "The probe made no HTTP request, and no earlier layer explains why.",
    ),
)

RULES_BY_ID: Final[dict[str, Rule]] = {r.rule_id: r for r in RULES}
if len(RULES_BY_ID) != len(RULES):  # a duplicated id would silently shadow a rule
    raise RuntimeError("duplicate rule_id in RULES")


def rule(rule_id: str) -> Rule:
    """The rule with ``rule_id``; a KeyError for an unknown id is a programming error, not data."""
    return RULES_BY_ID[rule_id]


def layer_verdict(
    rule_id: str,
    *,
    layer: Layer | None = None,
    reason: str | None = None,
    fingerprint: Fingerprint | None = None,
) -> LayerVerdict:
    """The LayerVerdict a rule decides: its outcome, its id, and a reason (the rule's ``why`` by default).

    ``layer`` is needed only for the "control" rules, which apply to whichever layer they are reported on.
    """
    if reason is None and fingerprint is None:
        return _plain_verdict(rule_id, layer)
    return _decided(rule_id, layer, reason, fingerprint)


@cache  # at most one per (rule, layer): a few dozen, all from the code
def _plain_verdict(rule_id: str, layer: Layer | None) -> LayerVerdict:
    """A rule's verdict with its own reason and no fingerprint: immutable, so made once and shared."""
    return _decided(rule_id, layer, None, None)


def _decided(
    rule_id: str, layer: Layer | None, reason: str | None, fingerprint: Fingerprint | None
) -> LayerVerdict:
    decided = rule(rule_id)
    if layer is None:
        if decided.layer == "control":
            raise ValueError(f"{rule_id} applies to every layer: say which")
        layer = decided.layer
    return LayerVerdict(
        layer=layer,
        outcome=decided.outcome,
        rule_id=rule_id,
        reason=reason or decided.why,
        fingerprint=fingerprint,
    )
