"""The verdict of a web measurement: OONI web_connectivity's semantics, plus a TLS layer.

Each layer (dns, tcp_ip, tls, http) is judged on its own by the modules beside this one, each naming
the rule that decided it (``rules.py``). The overall value is then read off the rules' ``concludes``:
the earliest layer showing interference decides ``blocking`` (all interfering layers stay listed);
failing that, the earliest layer that ends the story (site unavailable for everyone, control failed,
page reached) decides; if none does, there is no verdict (``blocking`` None).

Pure: observations and a control in, a Verdict out. No clock, no I/O.
"""

from __future__ import annotations

from gatewatch.core import failures as F
from gatewatch.core.control import ControlObservations
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.verdicts import Layer, LayerVerdict, Verdict

from .dns_layer import DNSResult, judge_dns
from .fingerprints import FingerprintDB
from .http_layer import HTTPResult, judge_http
from .rules import layer_verdict, rule
from .target import Target
from .transport_layers import judge_failed_redirect, judge_tcp, judge_tls

__all__ = ["analyse"]


def _probed_layers(target: Target, keys: WebTestKeys) -> list[Layer]:
    layers: list[Layer] = []
    if not target.ip_literal:
        layers.append("dns")
    if keys.tcp_connect:
        layers.append("tcp_ip")
    if target.is_https and keys.tls_handshakes:
        layers.append("tls")
    if keys.requests:
        layers.append("http")
    return layers or ["dns"]


def _undecided(target: Target, keys: WebTestKeys, rule_id: str) -> Verdict:
    # The same whole-measurement rule on every layer the probe reached: none of them can be judged.
    layers = [layer_verdict(rule_id, layer=layer) for layer in _probed_layers(target, keys)]
    return Verdict(blocking=None, accessible=None, layers=layers)


def _control_failed(control: ControlObservations, dns: DNSResult) -> bool:
    """The control failed to resolve (other than NXDOMAIN, which is an answer) and to fetch the page,
    and its DNS failure is not the probe's own (which would say the name is broken everywhere)."""
    dns_failed = control.dns.failure not in (None, F.DNS_NXDOMAIN_ERROR)
    shared = rule(dns.verdict.rule_id).concludes == "unavailable"
    return dns_failed and control.http_request.failure is not None and not shared


def _verdict(layers: list[LayerVerdict], dns: DNSResult, http: HTTPResult) -> Verdict:
    comparisons = {
        "dns_consistency": dns.consistency,
        "status_code_match": http.status_code_match,
        "body_length_match": http.body_length_match,
        "headers_match": http.headers_match,
        "title_match": http.title_match,
    }
    for lv in layers:
        decided = rule(lv.rule_id)
        if decided.concludes == "interference":
            return Verdict(
                blocking=decided.blocking,
                accessible=False,
                layers=layers,
                fingerprint=lv.fingerprint,
                **comparisons,
            )
    for lv in layers:
        concludes = rule(lv.rule_id).concludes
        if concludes == "unavailable":
            return Verdict(blocking=False, accessible=False, layers=layers, **comparisons)
        if concludes == "undecided":
            return Verdict(blocking=None, accessible=None, layers=layers, **comparisons)
        if concludes == "reachable":
            return Verdict(blocking=False, accessible=True, layers=layers, **comparisons)
    return Verdict(blocking=None, accessible=None, layers=layers, **comparisons)


def analyse(
    url: str,
    keys: WebTestKeys,
    control: ControlObservations | None,
    fingerprints: FingerprintDB | None = None,
) -> Verdict:
    """Judge one web measurement of ``url`` against the control (None when there was none)."""
    target = Target.parse(url)
    if control is None:
        return _undecided(target, keys, "control.missing")
    dns = judge_dns(target, keys.queries, keys.tls_handshakes, control, fingerprints)
    if _control_failed(control, dns):
        return _undecided(target, keys, "control.failed")

    tcp = judge_tcp(target, keys.tcp_connect, dns, control)
    tls = judge_tls(target, keys.tls_handshakes, dns, control)
    http = judge_http(keys.requests, control, fingerprints)
    if http.verdict is not None and http.verdict.rule_id == "http.failure":
        # Classified by the step that failed: a redirect hop's reset handshake is TLS interference.
        step = judge_failed_redirect(target, keys.requests, keys.tcp_connect, keys.tls_handshakes)
        if step is not None:
            http = HTTPResult(step)

    dns_verdict = dns.verdict
    if dns_verdict.rule_id == "dns.inconsistent" and http.verdict is not None:
        # OONI: answers unlike the control's that still served the control's page were genuine (a CDN).
        if rule(http.verdict.rule_id).concludes == "reachable":
            dns_verdict = layer_verdict("dns.inconsistent_page_matches")

    layers = [lv for lv in (dns_verdict, tcp, tls, http.verdict) if lv is not None]
    if http.verdict is None and not any(
        rule(lv.rule_id).concludes not in ("passes", "inconclusive") for lv in layers
    ):
        layers.append(layer_verdict("http.not_attempted"))
    return _verdict(layers, dns, http)
