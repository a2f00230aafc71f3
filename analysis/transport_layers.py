"""The TCP/IP and TLS layers: did connections and handshakes to the site fail where the control's worked?

Both layers compare endpoint by endpoint first (the control also tries the probe's addresses), and only
fall back to "the control reached its own addresses" when the probe's DNS answers were trustworthy:
otherwise a failure at a forged address is the DNS's doing, not the network's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from gatewatch.core import failures as F
from gatewatch.core import vocabulary as V
from gatewatch.core.control import ControlObservations
from gatewatch.core.observations import HTTPTransaction, TCPConnect, TLSHandshake
from gatewatch.core.verdicts import Fingerprint, LayerVerdict

from .dns_layer import DNSResult
from .rules import layer_verdict
from .target import Target, endpoint, normalise_ip, split_endpoint

__all__ = ["dns_is_trusted", "judge_failed_redirect", "judge_tcp", "judge_tls"]

_TCP_TECHNIQUES: Final[dict[str, str]] = {
    F.CONNECTION_REFUSED: V.TCP_REFUSED,
    F.GENERIC_TIMEOUT_ERROR: V.TCP_TIMEOUT,
    F.CONNECTION_RESET: V.TCP_RESET,
    F.HOST_UNREACHABLE: V.TCP_HOST_UNREACHABLE,
    F.NETWORK_UNREACHABLE: V.TCP_NETWORK_UNREACHABLE,
}
_TLS_TECHNIQUES: Final[dict[str, str]] = {
    F.CONNECTION_RESET: V.TLS_RESET,
    F.GENERIC_TIMEOUT_ERROR: V.TLS_TIMEOUT,
    F.EOF_ERROR: V.TLS_EOF,
    F.SSL_INVALID_HOSTNAME: V.TLS_INVALID_CERTIFICATE,
    F.SSL_UNKNOWN_AUTHORITY: V.TLS_INVALID_CERTIFICATE,
    F.SSL_INVALID_CERTIFICATE: V.TLS_INVALID_CERTIFICATE,
    F.SSL_FAILED_HANDSHAKE: V.TLS_FAILED_HANDSHAKE,
}


def dns_is_trusted(dns: DNSResult) -> bool:
    """Whether the probe's addresses are the site's own (consistent answers, or a URL naming an IP)."""
    return dns.consistency == "consistent" or dns.verdict.rule_id == "dns.ip_literal"


def _dominant(failures: Iterable[str | None]) -> str:
    # The most frequent failure; on a tie, the first seen (Counter keeps insertion order).
    counted = Counter(f or F.UNKNOWN_FAILURE for f in failures)
    return counted.most_common(1)[0][0]


def _site_addresses(dns: DNSResult, control: ControlObservations) -> set[str]:
    return set(dns.addresses) | {normalise_ip(a) for a in control.dns.addrs}


def judge_tcp(
    target: Target, connects: Sequence[TCPConnect], dns: DNSResult, control: ControlObservations
) -> LayerVerdict | None:
    """None when the probe made no connection to the site (nothing to judge at this layer)."""
    addresses = _site_addresses(dns, control)
    mine = [c for c in connects if c.port == target.port and normalise_ip(c.ip) in addresses]
    if not mine:
        return None
    if any(c.success for c in mine):
        return layer_verdict("tcp.connected")

    failure = _dominant(c.failure for c in mine)
    fp = Fingerprint(technique=_TCP_TECHNIQUES.get(failure, V.TCP_FAILURE), stage="tcp_ip", failure=failure)
    control_tcp = {split_endpoint(k): v for k, v in control.tcp_connect.items()}
    tried = {endpoint(c.ip, c.port) for c in mine}
    same = [control_tcp[e] for e in tried if e in control_tcp]
    if any(v.status for v in same):
        reason = f"Every probe connection failed ({failure}); the control connected to the same addresses."
        return layer_verdict("tcp.blocked_same_addresses", reason=reason, fingerprint=fp)
    own = [v for key, v in control_tcp.items() if key is not None and key[1] == target.port]
    control_reached = any(v.status for v in own) or control.http_request.status_code is not None
    if control_reached and dns_is_trusted(dns):
        reason = f"Every probe connection failed ({failure}); the control connected to the site."
        return layer_verdict("tcp.blocked_control_addresses", reason=reason, fingerprint=fp)
    if (same or own) and not control_reached:
        return layer_verdict("tcp.both_failed")
    return layer_verdict("tcp.failed_untested")


def judge_tls(
    target: Target, handshakes: Sequence[TLSHandshake], dns: DNSResult, control: ControlObservations
) -> LayerVerdict | None:
    """None for cleartext URLs, or when no handshake for the host was made."""
    if not target.is_https:
        return None
    mine = []
    for h in handshakes:
        parsed = split_endpoint(h.address)
        if target.same_host(h.server_name) and parsed is not None and parsed[1] == target.port:
            mine.append((parsed, h))
    if not mine:
        return None
    if any(h.failure is None for _, h in mine):
        return layer_verdict("tls.ok")

    failure = _dominant(h.failure for _, h in mine)
    stage = next((h.failure_stage for _, h in mine if h.failure == failure and h.failure_stage), None)
    fp = Fingerprint(technique=_TLS_TECHNIQUES.get(failure, V.TLS_FAILURE), stage="tls", failure=failure)
    where = f" {stage.replace('_', ' ')}" if stage else ""
    control_tls = {
        split_endpoint(k): v for k, v in control.tls_handshake.items() if target.same_host(v.server_name)
    }
    same = [control_tls[e] for e, _ in mine if e in control_tls]
    if any(v.status for v in same):
        reason = (
            f"Every handshake failed ({failure}{where}); the control's, at the same addresses, succeeded."
        )
        return layer_verdict("tls.blocked", reason=reason, fingerprint=fp)
    control_reached = (
        any(v.status for v in control_tls.values()) or control.http_request.status_code is not None
    )
    if control_reached and dns_is_trusted(dns):
        reason = f"Every handshake failed ({failure}{where}); the control's handshake for the name succeeded."
        return layer_verdict("tls.blocked", reason=reason, fingerprint=fp)
    control_failures = {v.failure for v in (same or control_tls.values()) if not v.status}
    if control_failures and not control_reached:
        return layer_verdict("tls.both_failed" if failure in control_failures else "tls.control_failed")
    return layer_verdict("tls.failed_untested")


def judge_failed_redirect(
    target: Target,
    requests: Sequence[HTTPTransaction],
    connects: Sequence[TCPConnect],
    handshakes: Sequence[TLSHandshake],
) -> LayerVerdict | None:
    """The step that failed, when the request that failed was a redirect hop to another port or host.

    OONI classifies a failure by the operation that failed, not by the request it belonged to: a redirect
    from ``http://`` to ``https://`` whose TLS handshake is reset is TLS interference (``tls.reset``), not
    an HTTP failure. The first hop's own connects and handshakes are judged by :func:`judge_tcp` and
    :func:`judge_tls`; this looks only at a later hop that got no response. None when it cannot tell
    (the hop's DNS failed, or its records cannot be told from the first hop's)."""
    if len(requests) < 2 or requests[-1].response is not None or requests[-1].failure is None:
        return None
    hop = Target.parse(requests[-1].request.url)
    if (hop.host, hop.port) == (target.host, target.port):
        return None
    if hop.is_https:
        mine = [
            h
            for h in handshakes
            if hop.same_host(h.server_name) and (split_endpoint(h.address) or ("", -1))[1] == hop.port
        ]
        if mine and all(h.failure is not None for h in mine):
            failure = _dominant(h.failure for h in mine)
            fp = Fingerprint(
                technique=_TLS_TECHNIQUES.get(failure, V.TLS_FAILURE), stage="tls", failure=failure
            )
            reason = f"The redirect to {hop.host}:{hop.port} failed in its TLS handshake ({failure})."
            return layer_verdict("tls.redirect_blocked", reason=reason, fingerprint=fp)
        if mine:
            return None
    if hop.port == target.port:
        return None  # its connects cannot be told from the first hop's
    tried = [c for c in connects if c.port == hop.port]
    if tried and not any(c.success for c in tried):
        failure = _dominant(c.failure for c in tried)
        fp = Fingerprint(
            technique=_TCP_TECHNIQUES.get(failure, V.TCP_FAILURE), stage="tcp_ip", failure=failure
        )
        reason = f"The redirect to {hop.host}:{hop.port} failed to connect ({failure})."
        return layer_verdict("tcp.redirect_blocked", reason=reason, fingerprint=fp)
    return None
