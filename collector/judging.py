"""What the collector re-derives and keeps of one measurement, apart from how it arrived: each DNS answer's
``bogon`` and ``asn`` recomputed, the flags for claims the connection contradicts, and the store row beside
the signed bytes. Used by ingest (``ingest.py``) and by the OONI import (``import_ooni.py``) alike."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from gatewatch.core.batch_token import TokenParts
from gatewatch.core.bogons import is_bogon_remembered
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSAnswer, DNSQuery
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import (
    ASN_MISMATCH,
    CC_MISMATCH,
    SCHEME_BLIND_TOKEN,
    WITHHELD_ASN,
    WITHHELD_CC,
    blocking_label,
)

from .appkeys import GeoLookup
from .geoip import GeoInfo
from .store.base import StoredMeasurement

__all__ = [
    "NO_VERDICT",
    "domain_of",
    "mismatch_flags",
    "rederive_dns_answers",
    "stored_row",
    "token_fields",
]


# Distinct URLs whose domain is remembered: ingest meets the same test-list URLs again and again, and the
# domain is a pure function of the text (a URL is at most a measurement's input). Answers' bogon-ness is
# remembered in core (bogons.is_bogon_remembered).
REMEMBERED = 4096


@lru_cache(maxsize=REMEMBERED)
def domain_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. an unbalanced "[" in the host part
        return ""


def _rederive_answer(answer: DNSAnswer, routable: tuple[str, ...], geo: GeoLookup | None) -> DNSAnswer:
    address = answer.address
    if address is None:  # a CNAME: no address, so neither a bogon nor in a network
        bogon, asn = False, None
    else:
        info = geo.lookup(address) if geo is not None else None
        bogon, asn = is_bogon_remembered(address, routable), info.asn if info is not None else None
    if answer.bogon == bogon and answer.asn == asn:
        return answer  # what the agent said: the (frozen) answer as it is, no copy
    return answer.model_copy(update={"bogon": bogon, "asn": asn})


def _rederive_answers(
    answers: list[DNSAnswer], routable: tuple[str, ...], geo: GeoLookup | None
) -> list[DNSAnswer] | None:
    """The answers re-derived, or None when each is as the agent said."""
    rederived = [_rederive_answer(a, routable, geo) for a in answers]
    return None if all(new is old for new, old in zip(rederived, answers, strict=True)) else rederived


def rederive_dns_answers(keys: WebTestKeys, routable: tuple[str, ...], geo: GeoLookup | None) -> WebTestKeys:
    """``keys`` with each DNS answer's ``bogon`` and ``asn`` recomputed by the collector (copies where a
    value changes: the parsed measurement and the signed bytes are untouched). ``routable`` names the
    non-public ranges that are real in this deployment (``control_allow_net``)."""

    def query(q: DNSQuery) -> DNSQuery:
        answers = _rederive_answers(q.answers, routable, geo)
        replies = [(r, _rederive_answers(r.answers, routable, geo)) for r in q.replies]
        if answers is None and all(new is None for _, new in replies):
            return q
        return q.model_copy(
            update={
                "answers": q.answers if answers is None else answers,
                "replies": [
                    r if new is None else r.model_copy(update={"answers": new}) for r, new in replies
                ],
            }
        )

    queries = [query(q) for q in keys.queries]
    if all(new is old for new, old in zip(queries, keys.queries, strict=True)):
        return keys
    return keys.model_copy(update={"queries": queries})


# Stored when the analysis itself fails: no verdict, and a flag saying why (the collector's bug to fix and
# re-judge; the agent did nothing wrong, and a rejection would be quarantined on its side for good).
NO_VERDICT = Verdict(blocking=None, accessible=None)


def token_fields(signature: bytes, token: TokenParts) -> dict[str, Any]:
    """The stored row's fields of a token-signed item: its signature, the ephemeral key and the token."""
    return {
        "signature_scheme": SCHEME_BLIND_TOKEN,
        "signature": signature,
        "ephemeral_key": token.ephemeral_public_key,
        "token": token.token,
        "token_epoch": token.epoch,
        "token_key_id": token.key_id,
    }


def stored_row(
    m: Measurement,
    verdict: Verdict,
    flags: tuple[str, ...],
    payload: bytes,
    now: datetime,
    signed: dict[str, Any] | None = None,
) -> StoredMeasurement:
    """What the store keeps: the signed bytes as they came, and the server's own verdict beside them;
    ``signed``: how they are signed when not by a long-term key (:func:`token_fields`)."""
    fingerprint = verdict.fingerprint
    return StoredMeasurement(
        measurement_uid=m.measurement_uid,
        received_at=now,
        measurement_start_time=m.measurement_start_time,
        probe_cc=m.probe_cc,
        probe_asn=m.probe_asn,
        test_name=m.test_name,
        input=m.input,
        domain=domain_of(m.input),
        blocking=blocking_label(verdict.blocking),
        anomaly=verdict.anomaly,
        technique=fingerprint.technique if fingerprint else None,
        fingerprint_key=fingerprint.key if fingerprint else None,
        verdict_json=verdict.model_dump_json(),
        payload=payload,
        flags=flags,
        **(signed or {}),
    )


def mismatch_flags(m: Measurement, geo: GeoInfo | None) -> tuple[str, ...]:
    """Claims that disagree with where the upload came from are kept, but marked (as OONI does). A
    withheld value (AS0, ZZ) is not a disagreement."""
    if geo is None:
        return ()
    flags: list[str] = []
    if geo.asn is not None and m.probe_asn != WITHHELD_ASN and m.probe_asn != f"AS{geo.asn}":
        flags.append(ASN_MISMATCH)
    if geo.cc is not None and m.probe_cc != WITHHELD_CC and m.probe_cc != geo.cc.upper():
        flags.append(CC_MISMATCH)
    return tuple(flags)
