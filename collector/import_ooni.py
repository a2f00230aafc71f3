"""``gatewatch-collector import-ooni``: OONI Web Connectivity measurements through gatewatch's analysis.

OONI publishes measurements as JSON Lines (often gzip-compressed), one measurement per line. Each Web
Connectivity line is mapped onto gatewatch's observations (:mod:`gatewatch.core.observations`, the inverse
of :mod:`.ooni_format`), judged by the same analysis and fingerprints as an uploaded measurement, and
stored so that the interference API, the metrics and the dashboards attribute it like any other row.

Imported rows are **unsigned**: no volunteer's key vouches for them. They are marked twice, so that
nothing confuses them with signed uploads: the flag :data:`~gatewatch.core.vocabulary.OONI_IMPORT` in the
row's ``flags``, and the annotation ``gatewatch_import: ooni-import/1`` inside the stored payload. Their
envelope row holds an empty signature and key; a signature check must skip rows carrying the flag.

Privacy: the measurement model has no field for a probe's address, so ``probe_ip``, ``resolver_ip`` and
``resolver_network_name`` are dropped whatever they say; when ``probe_ip`` holds a real address (OONI
replaces it with 127.0.0.1 before publishing, but a file from elsewhere may not), every occurrence of it
in the measurement is replaced before anything is read, as OONI's own scrubbing does. OONI's annotations
are not kept (only the report id and measurement uid, which name the source).

The measurement uid is a UUIDv7 derived from the OONI measurement (its time and a hash of its report id,
input and start time), so importing the same file twice stores each measurement once.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from gatewatch.analysis import analyse
from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.core.control import ControlObservations
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import (
    Certificate,
    DNSAnswer,
    DNSQuery,
    HTTPRequest,
    HTTPResponse,
    HTTPTransaction,
    TCPConnect,
    TLSHandshake,
)
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import ANALYSIS_ERROR, INVALID_JSON, OONI_IMPORT, UNSTORABLE
from gatewatch.probes.http import extract_title

from .ingest import _stored_row as stored_row  # one definition of what a stored row holds
from .ingest import rederive_dns_answers
from .ooni_format import DNS_RCODES, OONI_TEST_NAME
from .store.base import Store, StoredMeasurement, UnstorableError

__all__ = [
    "IMPORT_SCHEME",
    "ImportReport",
    "import_files",
    "iter_ooni_lines",
    "judge_ooni",
    "measurement_from_ooni",
]

IMPORT_SCHEME: Final = "ooni-import/1"  # the payload annotation's value: what made this row, and how
IMPORT_ANNOTATION: Final = "gatewatch_import"
_RCODE_NAMES: Final = {number: name for name, number in DNS_RCODES.items()}
_SCRUBBED: Final = "[scrubbed]"
_MAX_LINE: Final = 16 * 1024 * 1024  # OONI's own measurements stay far below; anything larger is skipped


class NotImportable(ValueError):
    """A line that is not an OONI Web Connectivity measurement gatewatch can judge (skipped, counted)."""


@dataclass
class ImportReport:
    """What an import did: lines read, rows stored, rows already stored, and lines skipped by reason."""

    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def iter_ooni_lines(path: Path) -> Iterator[bytes]:
    """The lines of a JSONL or JSONL.gz file (gzip told by its magic bytes, not its name)."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as lines:
        for line in lines:
            if line.strip():
                yield line


def _scrub(line: bytes, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every spelling of a real ``probe_ip`` replaced (OONI's published 127.0.0.1 is none)."""
    text = raw.get("probe_ip")
    try:
        address = ipaddress.ip_address(text) if isinstance(text, str) else None
    except ValueError:
        address = None
    if address is None or address.is_loopback or address.is_unspecified:
        return raw
    spellings = {str(address), address.exploded} | ({str(address).upper()} if address.version == 6 else set())
    decoded = line.decode("utf-8", "replace")
    for spelling in sorted(spellings, key=len, reverse=True):
        decoded = decoded.replace(spelling, _SCRUBBED)
    scrubbed: dict[str, Any] = json.loads(decoded)
    return scrubbed


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise NotImportable("missing_time")
    try:
        value = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise NotImportable("bad_time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def measurement_uid(raw: dict[str, Any], started: datetime) -> str:
    """A UUIDv7 whose time is the measurement's and whose random bits hash its OONI identity."""
    identity = json.dumps(
        [
            raw.get("report_id"),
            raw.get("input"),
            raw.get("measurement_start_time"),
            raw.get("measurement_uid"),
        ]
    )
    digest = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:10], "big")
    ms = int(started.timestamp() * 1000) & ((1 << 48) - 1)
    value = ms << 80 | 0x7 << 76 | ((digest >> 62) & 0xFFF) << 64 | 0b10 << 62 | (digest & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _text(value: Any) -> str | None:
    """OONI's MaybeBinaryData: a string, or ``{"format": "base64", "data": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("format") == "base64" and isinstance(value.get("data"), str):
        try:
            return base64.b64decode(value["data"]).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
    return None


def _answer(answer: dict[str, Any]) -> DNSAnswer | None:
    if answer.get("answer_type") not in ("A", "AAAA", "CNAME"):
        return None
    fields = {k: answer.get(k) for k in ("answer_type", "ipv4", "ipv6", "hostname", "ttl", "asn")}
    try:
        return DNSAnswer.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError:
        return None


def _query(query: dict[str, Any]) -> DNSQuery | None:
    if query.get("query_type") not in ("A", "AAAA") or not isinstance(query.get("hostname"), str):
        return None  # gatewatch asks A and AAAA only; OONI's other types have no place here
    engine = query.get("engine")
    rcode = query.get("rcode")
    answers = [a for a in map(_answer, _dicts(query.get("answers"))) if a is not None]
    return DNSQuery(
        engine=engine if engine in ("udp", "tcp") else "system",  # getaddrinfo, system, doh, dot, ...
        resolver_address=str(query.get("resolver_address") or ""),
        hostname=query["hostname"],
        query_type=query["query_type"],
        t0=_seconds(query.get("t0")),
        t=_seconds(query.get("t")),
        failure=query.get("failure") if isinstance(query.get("failure"), str) else None,
        rcode=_RCODE_NAMES.get(rcode, str(rcode)) if isinstance(rcode, int) else None,
        answers=answers,
    )


def _connect(connect: dict[str, Any]) -> TCPConnect | None:
    status = connect.get("status") if isinstance(connect.get("status"), dict) else {}
    try:
        return TCPConnect(
            ip=str(connect["ip"]),
            port=int(connect["port"]),
            t0=_seconds(connect.get("t0")),
            t=_seconds(connect.get("t")),
            success=bool(status.get("success")),
            failure=status.get("failure") if isinstance(status.get("failure"), str) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _certificate(entry: Any) -> Certificate | None:
    from cryptography import x509  # the collector's own dependency; only needed for TLS entries

    data = _binary(entry)
    if data is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(data)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        return Certificate(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=names,
            not_before=cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            not_after=cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            sha256=hashlib.sha256(data).hexdigest(),
            der_b64=base64.b64encode(data).decode(),
        )
    except (ValueError, TypeError):
        return None


def _binary(entry: Any) -> bytes | None:
    if isinstance(entry, dict) and entry.get("format") == "base64" and isinstance(entry.get("data"), str):
        try:
            return base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def _handshake(handshake: dict[str, Any]) -> TLSHandshake | None:
    failure = handshake.get("failure") if isinstance(handshake.get("failure"), str) else None
    certificates = [c for c in map(_certificate, handshake.get("peer_certificates") or []) if c is not None]
    try:
        return TLSHandshake(
            address=str(handshake.get("address") or ""),
            server_name=str(handshake.get("server_name") or ""),
            t0=_seconds(handshake.get("t0")),
            t=_seconds(handshake.get("t")),
            failure=failure,
            tls_version=handshake.get("tls_version") or None,
            cipher_suite=handshake.get("cipher_suite") or None,
            negotiated_protocol=handshake.get("negotiated_protocol") or None,
            peer_certificates=certificates,
            # OONI's probes verify the chain unless told not to: a verified handshake that succeeded.
            validated=failure is None and not handshake.get("no_tls_verify"),
        )
    except ValidationError:
        return None


def _headers(part: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = part.get("headers_list")
    if isinstance(pairs, list) and pairs:
        out = []
        for pair in pairs:
            if isinstance(pair, list) and len(pair) == 2:
                name, value = _text(pair[0]), _text(pair[1])
                if name is not None and value is not None:
                    out.append((name, value))
        return out
    headers = part.get("headers")
    if isinstance(headers, dict):
        return [(str(k), v) for k, v in headers.items() if isinstance(v, str)]
    return []


def _transaction(entry: dict[str, Any]) -> HTTPTransaction | None:
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    url = request.get("url")
    if not isinstance(url, str) or not url:
        return None
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    parsed_response = None
    if isinstance(response.get("code"), int) and response.get("code"):
        body = _text(response.get("body"))
        body_bytes = _binary(response.get("body")) or (body or "").encode("utf-8", "replace")
        parsed_response = HTTPResponse(
            code=response["code"],
            headers=_headers(response),
            body=body,
            body_is_truncated=bool(response.get("body_is_truncated")),
            body_length=len(body_bytes),
            body_sha256=hashlib.sha256(body_bytes).hexdigest() if body is not None else None,
            title=extract_title(body_bytes) if body is not None else None,
        )
    return HTTPTransaction(
        t0=_seconds(entry.get("t0")),
        t=_seconds(entry.get("t")),
        address=entry.get("address") if isinstance(entry.get("address"), str) else None,
        transport="tls" if url.lower().startswith("https:") else "tcp",
        request=HTTPRequest(method=str(request.get("method") or "GET"), url=url, headers=_headers(request)),
        response=parsed_response,
        failure=entry.get("failure") if isinstance(entry.get("failure"), str) else None,
    )


def _statuses(entries: Any, *extra: str) -> dict[str, dict[str, Any]]:
    """OONI's control ``{"ip:port": {status, failure, ...}}`` keeping what gatewatch's control holds."""
    if not isinstance(entries, dict):
        return {}
    return {
        str(key): {"status": bool(v.get("status")), "failure": v.get("failure")}
        | {name: v.get(name) or "" for name in extra}
        for key, v in entries.items()
        if isinstance(v, dict)
    }


def _control_http(http: dict[str, Any]) -> dict[str, Any]:
    shaped = {
        k: http.get(k) for k in ("failure", "status_code", "title", "body_length") if http.get(k) is not None
    }
    if isinstance(shaped.get("status_code"), int) and shaped["status_code"] < 0:
        del shaped["status_code"]  # OONI's test helper writes -1 when its fetch failed
    headers = http.get("headers") if isinstance(http.get("headers"), dict) else {}
    return shaped | {"headers": {k: v for k, v in headers.items() if isinstance(v, str)}}


def _control(keys: dict[str, Any]) -> ControlObservations | None:
    control = keys.get("control")
    if not isinstance(control, dict) or not isinstance(control.get("dns"), dict):
        return None
    http = control.get("http_request") if isinstance(control.get("http_request"), dict) else {}
    shaped = {
        "dns": {"failure": control["dns"].get("failure"), "addrs": control["dns"].get("addrs") or []},
        "tcp_connect": _statuses(control.get("tcp_connect")),
        "tls_handshake": _statuses(control.get("tls_handshake"), "server_name"),
        "http_request": _control_http(http),
    }
    try:
        return ControlObservations.model_validate(shaped)
    except ValidationError:
        return None


def measurement_from_ooni(line: bytes) -> Measurement:
    """One OONI Web Connectivity measurement (one JSON line) as a gatewatch measurement; raises
    :class:`NotImportable` with a short reason."""
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise NotImportable(INVALID_JSON) from None
    if not isinstance(raw, dict):
        raise NotImportable(INVALID_JSON)
    if raw.get("test_name") != OONI_TEST_NAME:
        raise NotImportable("not_web_connectivity")
    raw = _scrub(line, raw)
    keys = raw.get("test_keys") if isinstance(raw.get("test_keys"), dict) else {}
    started = _time(raw.get("measurement_start_time"))
    url = raw.get("input")
    url = url[0] if isinstance(url, list) and url else url
    if not isinstance(url, str) or not url:
        raise NotImportable("no_input")
    control = _control(keys)
    test_keys = WebTestKeys(
        queries=[q for q in map(_query, _dicts(keys.get("queries"))) if q is not None][:64],
        tcp_connect=[c for c in map(_connect, _dicts(keys.get("tcp_connect"))) if c is not None][:64],
        tls_handshakes=[h for h in map(_handshake, _dicts(keys.get("tls_handshakes"))) if h is not None][:64],
        # OONI lists the last hop first; gatewatch the first hop first.
        requests=[t for t in map(_transaction, reversed(_dicts(keys.get("requests")))) if t is not None][:32],
        control=control,
        control_failure=keys.get("control_failure") if isinstance(keys.get("control_failure"), str) else None,
    )
    annotations = {IMPORT_ANNOTATION: IMPORT_SCHEME, "ooni_test_name": OONI_TEST_NAME}
    for name in ("report_id", "measurement_uid"):
        if isinstance(raw.get(name), str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", raw[name]):
            annotations[f"ooni_{name}"] = raw[name]
    fields: dict[str, Any] = {
        "measurement_uid": measurement_uid(raw, started),
        "measurement_start_time": started,
        "test_start_time": _time(raw.get("test_start_time") or raw.get("measurement_start_time")),
        "test_runtime": max(_seconds(raw.get("test_runtime")), 0.0),
        "input": url,
        "software_name": str(raw.get("software_name") or "ooniprobe")[:64],
        "software_version": str(raw.get("software_version") or "")[:64],
        "test_version": str(raw.get("test_version") or "")[:64],
        "annotations": annotations,
        "test_keys": test_keys,
    }
    for name in ("probe_asn", "probe_cc", "resolver_asn", "probe_network_name"):
        if isinstance(raw.get(name), str) and raw[name]:
            fields[name] = raw[name][:256]
    try:
        return Measurement.model_validate(fields)
    except ValidationError as exc:
        raise NotImportable("invalid_" + str(exc.errors()[0]["loc"][0])) from None


def judge_ooni(
    line: bytes, fingerprints: FingerprintDB, routable: tuple[str, ...], now: datetime
) -> StoredMeasurement:
    """One OONI line, mapped, judged by gatewatch's analysis and made a store row marked as imported."""
    m = measurement_from_ooni(line)
    flags: tuple[str, ...] = (OONI_IMPORT,)
    try:
        keys = rederive_dns_answers(m.test_keys, routable, None)
        verdict = analyse(m.input, keys, keys.control, fingerprints)
    except Exception:  # as on ingest: a bug in the analysis costs one verdict, not the import
        verdict, flags = Verdict(blocking=None, accessible=None), (OONI_IMPORT, ANALYSIS_ERROR)
    return stored_row(m, verdict, flags, m.to_json_bytes(), now)


async def import_files(
    paths: Iterable[Path],
    store: Store,
    fingerprints: FingerprintDB,
    *,
    routable: tuple[str, ...] = (),
    batch: int = 500,
) -> ImportReport:
    """Import every line of ``paths`` into ``store`` (one bad line is skipped and counted, never fatal)."""
    report = ImportReport()
    pending: list[StoredMeasurement] = []

    async def insert(rows: list[StoredMeasurement]) -> None:
        # Imported rows are unsigned: an empty signature and key (the flag says why).
        inserted = await store.insert_many(rows, [(b"", b"")] * len(rows))
        report.imported += sum(inserted)
        report.duplicates += len(inserted) - sum(inserted)

    async def flush() -> None:
        try:
            await insert(pending)
        except UnstorableError:  # one row the backend refuses (a NUL for PostgreSQL): find it, keep the rest
            for row in pending:
                try:
                    await insert([row])
                except UnstorableError:
                    report.skip(UNSTORABLE)
        pending.clear()

    for path in paths:
        for line in iter_ooni_lines(path):
            report.lines += 1
            if len(line) > _MAX_LINE:
                report.skip("too_large")
                continue
            try:
                pending.append(judge_ooni(line, fingerprints, routable, datetime.now(UTC)))
            except NotImportable as exc:
                report.skip(str(exc))
                continue
            if len(pending) >= batch:
                await flush()
    if pending:
        await flush()
    return report
