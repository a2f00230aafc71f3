"""Turn a web measurement taken from an uncensored vantage point into the control's shape.

The collector's control endpoint and the emulated lab both run the ordinary probes from their clean
network and answer with this summary, so probe and control are always measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gatewatch.core import failures as F
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations, ControlTCP, ControlTLS
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import DNSQuery

from .dns_layer import probe_failure

__all__ = ["summarise"]


def _dns(queries: Sequence[DNSQuery], asn_of: Callable[[str], int | None] | None) -> ControlDNS:
    if not queries:  # a URL naming an IP: nothing was resolved, and nothing failed
        return ControlDNS()
    # The first query's host is the URL's; later ones belong to redirects.
    host = queries[0].hostname
    mine = [q for q in queries if q.hostname == host]
    addrs: list[str] = []
    asns: dict[str, int] = {}
    for q in mine:
        for answer in q.answers:
            address = answer.address
            if answer.answer_type not in ("A", "AAAA") or not address or address in addrs:
                continue
            addrs.append(address)
            asn = asn_of(address) if asn_of is not None else None
            asn = asn if asn is not None else answer.asn
            if asn is not None:
                asns[address] = asn
    if not addrs:
        return ControlDNS(failure=probe_failure(mine))
    return ControlDNS(addrs=addrs, asns=asns)


def _tcp(keys: WebTestKeys) -> dict[str, ControlTCP]:
    out: dict[str, ControlTCP] = {}
    for c in keys.tcp_connect:
        key = f"[{c.ip}]:{c.port}" if ":" in c.ip else f"{c.ip}:{c.port}"
        if key not in out or (c.success and not out[key].status):  # one success is enough
            out[key] = ControlTCP(status=c.success, failure=None if c.success else c.failure)
    return out


def _tls(keys: WebTestKeys) -> dict[str, ControlTLS]:
    # Keyed by endpoint alone (OONI's shape): the first server name tried there (the URL's host) wins.
    out: dict[str, ControlTLS] = {}
    for h in keys.tls_handshakes:
        ok = h.failure is None
        known = out.get(h.address)
        if known is None or (known.server_name == h.server_name and ok and not known.status):
            out[h.address] = ControlTLS(server_name=h.server_name, status=ok, failure=h.failure)
    return out


def _why_nothing_was_fetched(keys: WebTestKeys, dns: ControlDNS) -> str:
    if dns.failure:
        return dns.failure
    for steps in (keys.tls_handshakes, keys.tcp_connect):
        failed = [s.failure for s in steps if s.failure]
        if failed:
            return failed[-1]
    return F.UNKNOWN_FAILURE


def _http(keys: WebTestKeys, dns: ControlDNS) -> ControlHTTP:
    if not keys.requests:
        return ControlHTTP(failure=_why_nothing_was_fetched(keys, dns))
    final = keys.requests[-1]  # after redirects
    response = final.response
    if final.failure is not None or response is None:
        return ControlHTTP(failure=final.failure or F.UNKNOWN_FAILURE)
    headers: dict[str, str] = {}
    for name, value in response.headers:
        headers.setdefault(name, value)  # a repeated header: the first value is enough to compare names
    return ControlHTTP(
        status_code=response.code,
        headers=headers,
        title=response.title,
        body_length=response.body_length,
        body_sha256=response.body_sha256,
        body_is_truncated=response.body_is_truncated,
    )


def summarise(keys: WebTestKeys, asn_of: Callable[[str], int | None] | None = None) -> ControlObservations:
    """The control view of ``keys``: DNS outcome (with ASNs from ``asn_of`` or the answers), per-endpoint
    TCP and TLS results, and the final HTTP response's status, headers, title, length and digest."""
    dns = _dns(keys.queries, asn_of)
    return ControlObservations(
        dns=dns, tcp_connect=_tcp(keys), tls_handshake=_tls(keys), http_request=_http(keys, dns)
    )
