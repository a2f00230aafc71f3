"""The DNS layer: were the probe's answers for the URL's host the ones the rest of the world gets?

Order of the checks (the first that applies decides): injection (a query answered twice, differently),
then the probe's resolution failing, then bogon answers, then answers that are known blocking addresses,
then OONI's consistency checks (shared address, shared AS, a validated TLS handshake to a probe-resolved
address). Injection comes first because it is proven by the probe's own replies, whatever else happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gatewatch.core import failures as F
from gatewatch.core import vocabulary as V
from gatewatch.core.control import ControlObservations
from gatewatch.core.observations import DNSAnswer, DNSQuery, DNSReply, TLSHandshake
from gatewatch.core.verdicts import Fingerprint, LayerVerdict

from .fingerprints import FingerprintDB
from .rules import layer_verdict
from .target import Target, normalise_ip, split_endpoint

__all__ = ["DNSResult", "judge_dns", "probe_failure"]

Consistency = Literal["consistent", "inconsistent"] | None

_RCODE_FAILURES: Final[dict[str, str]] = {
    "NXDOMAIN": F.DNS_NXDOMAIN_ERROR,
    "SERVFAIL": F.DNS_SERVFAIL_ERROR,
    "REFUSED": F.DNS_REFUSED_ERROR,
}
# Failures that come from the name's own servers, so every vantage point sees the same one. A timeout is
# not among them: two timeouts may have two different causes.
_AUTHORITATIVE_FAILURES: Final = frozenset(
    {F.DNS_NXDOMAIN_ERROR, F.DNS_SERVFAIL_ERROR, F.DNS_REFUSED_ERROR, F.DNS_NO_ANSWER}
)
_FAILURE_TECHNIQUES: Final[dict[str, str]] = {
    F.DNS_NXDOMAIN_ERROR: V.DNS_NXDOMAIN,
    F.DNS_SERVFAIL_ERROR: V.DNS_SERVFAIL,
    F.DNS_REFUSED_ERROR: V.DNS_REFUSED,
    F.DNS_NO_ANSWER: V.DNS_NO_ANSWER,
    F.GENERIC_TIMEOUT_ERROR: V.DNS_TIMEOUT,
}


@dataclass(frozen=True, slots=True)
class DNSResult:
    verdict: LayerVerdict
    consistency: Consistency
    # Every address the probe's stub resolver got for the host (normalised); the IP itself for IP URLs.
    addresses: frozenset[str]


def _addresses(answers: Iterable[DNSAnswer]) -> set[str]:
    return {normalise_ip(a.address) for a in answers if a.address and a.answer_type in ("A", "AAAA")}


def _reply_failure(reply: DNSReply) -> str | None:
    if reply.rcode != "NOERROR":
        return _RCODE_FAILURES.get(reply.rcode, F.UNKNOWN_FAILURE)
    return None if _addresses(reply.answers) else F.DNS_NO_ANSWER


def probe_failure(queries: Sequence[DNSQuery]) -> str:
    """Why the probe got no address: the A query's failure first (it is what a browser would see)."""
    ordered = sorted(queries, key=lambda q: q.query_type != "A")
    for q in ordered:
        if q.failure:
            return q.failure
        if q.rcode and q.rcode != "NOERROR":
            return _RCODE_FAILURES.get(q.rcode, F.UNKNOWN_FAILURE)
    return F.DNS_NO_ANSWER


def _agrees(answers: Iterable[DNSAnswer], control_addrs: set[str], control_asns: set[int]) -> bool:
    answers = list(answers)
    if _addresses(answers) & control_addrs:
        return True
    return bool({a.asn for a in answers if a.asn is not None} & control_asns)


def _blockpage_id(addresses: Iterable[str], fingerprints: FingerprintDB | None) -> str | None:
    """The name of a (non-benign) DNS fingerprint one of ``addresses`` matches, to label what was seen."""
    if fingerprints is None:
        return None
    for address in sorted(addresses):
        found = fingerprints.match_dns(address)
        if found is not None and found.strength != "benign":
            return found.name
    return None


def _injection(
    queries: Sequence[DNSQuery],
    control_addrs: set[str],
    control_asns: set[int],
    fingerprints: FingerprintDB | None,
) -> Fingerprint | None:
    injected: set[str] = set()
    failure: str | None = None
    seen = False
    for q in queries:
        if len(q.replies) < 2:
            continue
        first = (q.replies[0].rcode, frozenset(_addresses(q.replies[0].answers)))
        if all((r.rcode, frozenset(_addresses(r.answers))) == first for r in q.replies):
            continue
        if control_addrs or control_asns:
            suspects = [r for r in q.replies if not _agrees(r.answers, control_addrs, control_asns)]
            # Replies that differ but all agree with the control are a round-robin answer set, not a
            # forgery. When none agrees, there is no telling which is genuine: all are suspects.
            if not suspects:
                continue
        else:
            suspects = [r for r in q.replies if (r.rcode, frozenset(_addresses(r.answers))) != first]
        seen = True
        for reply in suspects:
            injected |= _addresses(reply.answers) - control_addrs
            failure = failure or _reply_failure(reply)
    if not seen:
        return None
    return Fingerprint(
        technique=V.DNS_INJECTION,
        stage="dns",
        failure=failure,
        injected_ips=sorted(injected),
        blockpage_id=_blockpage_id(injected, fingerprints),
    )


def _known_blocking_answer(
    answers: Sequence[DNSAnswer], addresses: set[str], fingerprints: FingerprintDB
) -> Fingerprint | None:
    """A fingerprint when an address (not also the control's) or a CNAME target is a known blocking one."""
    by_address = {}
    for address in sorted(addresses):
        found = fingerprints.match_dns(address)
        if found is not None and found.strength == "strong":
            by_address[address] = found.name
    by_name = []
    for a in answers:
        found = fingerprints.match_dns(a.hostname) if a.answer_type == "CNAME" and a.hostname else None
        if found is not None and found.strength == "strong":
            by_name.append(found.name)
    if not by_address and not by_name:
        return None
    return Fingerprint(
        technique=V.DNS_FINGERPRINT,
        stage="dns",
        injected_ips=sorted(by_address),
        blockpage_id=by_name[0] if by_name else by_address[min(by_address)],
    )


def _validated_tls(target: Target, handshakes: Iterable[TLSHandshake], addresses: set[str]) -> bool:
    for h in handshakes:
        parsed = split_endpoint(h.address)
        if h.failure is None and h.validated and target.same_host(h.server_name) and parsed is not None:
            if parsed[0] in addresses:
                return True
    return False


def judge_dns(
    target: Target,
    queries: Sequence[DNSQuery],
    handshakes: Sequence[TLSHandshake],
    control: ControlObservations,
    fingerprints: FingerprintDB | None,
) -> DNSResult:
    """The DNS layer's verdict: the first check of the module's order that applies decides."""
    if target.ip_literal:
        return DNSResult(layer_verdict("dns.ip_literal"), None, frozenset({normalise_ip(target.host)}))
    queries = [q for q in queries if target.same_host(q.hostname)]
    if not queries:
        return DNSResult(layer_verdict("dns.no_queries"), None, frozenset())

    control_addrs = {normalise_ip(a) for a in control.dns.addrs}
    control_asns = set(control.dns.asns.values())
    control_failure = control.dns.failure or (None if control_addrs else F.DNS_NO_ANSWER)
    answers = [a for q in queries for a in q.answers]
    addresses = _addresses(answers)
    frozen = frozenset(addresses)

    injected = _injection(queries, control_addrs, control_asns, fingerprints)
    if injected is not None:
        return DNSResult(layer_verdict("dns.injection", fingerprint=injected), "inconsistent", frozen)
    if not addresses:
        return _failed_resolution(probe_failure(queries), control_failure)

    bogons = {normalise_ip(a.address) for a in answers if a.bogon and a.address} - control_addrs
    if bogons:
        fp = Fingerprint(
            technique=V.DNS_BOGON,
            stage="dns",
            failure=F.DNS_BOGON_ERROR,
            injected_ips=sorted(bogons),
            blockpage_id=_blockpage_id(bogons, fingerprints),
        )
        return DNSResult(layer_verdict("dns.bogon", fingerprint=fp), "inconsistent", frozen)
    if fingerprints is not None:
        fp = _known_blocking_answer(answers, addresses - control_addrs, fingerprints)
        if fp is not None:
            return DNSResult(layer_verdict("dns.fingerprint", fingerprint=fp), "inconsistent", frozen)
    return _compared_with_control(
        target, answers, handshakes, control_addrs, control_asns, control_failure, fingerprints
    )


def _failed_resolution(failure: str, control_failure: str | None) -> DNSResult:
    """The probe got no address (with ``failure``): interference only if the control resolved the name."""
    if control_failure is None:
        fp = Fingerprint(
            technique=_FAILURE_TECHNIQUES.get(failure, V.DNS_FAILURE), stage="dns", failure=failure
        )
        reason = f"The probe's resolution failed with {failure}; the control resolved the name."
        return DNSResult(
            layer_verdict("dns.probe_failed", reason=reason, fingerprint=fp), "inconsistent", frozenset()
        )
    if failure == control_failure and failure in _AUTHORITATIVE_FAILURES:
        rule_id = "dns.both_nxdomain" if failure == F.DNS_NXDOMAIN_ERROR else "dns.both_failed"
        return DNSResult(layer_verdict(rule_id), "consistent", frozenset())
    reason = f"The probe's resolution failed with {failure}, the control's with {control_failure}."
    return DNSResult(layer_verdict("dns.probe_failed_control_failed", reason=reason), None, frozenset())


def _compared_with_control(
    target: Target,
    answers: Sequence[DNSAnswer],
    handshakes: Sequence[TLSHandshake],
    control_addrs: set[str],
    control_asns: set[int],
    control_failure: str | None,
    fingerprints: FingerprintDB | None,
) -> DNSResult:
    """OONI's consistency checks, for answers that are neither bogons nor known blocking addresses."""
    addresses = _addresses(answers)
    frozen = frozenset(addresses)
    if addresses & control_addrs:
        return DNSResult(layer_verdict("dns.consistent_ip"), "consistent", frozen)
    if _agrees(answers, control_addrs, control_asns):
        return DNSResult(layer_verdict("dns.consistent_asn"), "consistent", frozen)
    if _validated_tls(target, handshakes, addresses):
        return DNSResult(layer_verdict("dns.consistent_tls"), "consistent", frozen)
    if control_failure is not None and control_failure != F.DNS_NXDOMAIN_ERROR:
        return DNSResult(layer_verdict("dns.control_no_answer"), None, frozen)
    fp = Fingerprint(
        technique=V.DNS_INCONSISTENT,
        stage="dns",
        injected_ips=sorted(addresses),
        blockpage_id=_blockpage_id(addresses, fingerprints),
    )
    return DNSResult(layer_verdict("dns.inconsistent", fingerprint=fp), "inconsistent", frozen)
