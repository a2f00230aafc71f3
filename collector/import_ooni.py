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

import gzip
import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from gatewatch.analysis import analyse
from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSQuery
from gatewatch.core.verdicts import Verdict
from gatewatch.core.vocabulary import (
    ANALYSIS_ERROR,
    INVALID_JSON,
    OONI_IMPORT,
    SCHEME_UNSIGNED_IMPORT,
    UNSTORABLE,
)

from .appkeys import GeoLookup
from .judging import rederive_dns_answers, stored_row
from .ooni_format import GATEWATCH_KEY, OONI_TEST_NAME
from .ooni_observations import (
    control,
    dicts,
    dns_query,
    http_transaction,
    seconds,
    tcp_connect,
    tls_handshake,
)
from .store.base import Store, StoredMeasurement, UnstorableError

__all__ = [
    "IMPORT_SCHEME",
    "ImportReport",
    "import_files",
    "iter_ooni_lines",
    "judge_ooni",
    "measurement_from_ooni",
]

IMPORT_SCHEME: Final = SCHEME_UNSIGNED_IMPORT  # the payload annotation's value: what made this row, and how
IMPORT_ANNOTATION: Final = "gatewatch_import"
_SCRUBBED: Final = "[scrubbed]"
T = TypeVar("T")
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


def _read(reader: Callable[[dict[str, Any]], T | None], entries: list[dict[str, Any]], limit: int) -> list[T]:
    """The entries ``reader`` could map, at most ``limit`` (the measurement model's bound)."""
    return [item for item in map(reader, entries) if item is not None][:limit]


def _queries(keys: dict[str, Any]) -> list[DNSQuery]:
    extras = keys.get(GATEWATCH_KEY, {}).get("queries") if isinstance(keys.get(GATEWATCH_KEY), dict) else None
    queries = dicts(keys.get("queries"))
    if not isinstance(extras, list) or len(extras) != len(queries):
        extras = [None] * len(queries)
    mapped = (dns_query(query, extra) for query, extra in zip(queries, extras, strict=True))
    return [q for q in mapped if q is not None][:64]


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
    control_observations = control(keys)
    test_keys = WebTestKeys(
        queries=_queries(keys),
        tcp_connect=_read(tcp_connect, dicts(keys.get("tcp_connect")), 64),
        tls_handshakes=_read(tls_handshake, dicts(keys.get("tls_handshakes")), 64),
        # OONI lists the last hop first; gatewatch the first hop first.
        requests=_read(http_transaction, list(reversed(dicts(keys.get("requests")))), 32),
        control=control_observations,
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
        "test_runtime": max(seconds(raw.get("test_runtime")), 0.0),
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
    line: bytes,
    fingerprints: FingerprintDB,
    routable: tuple[str, ...],
    now: datetime,
    geo: GeoLookup | None = None,
) -> StoredMeasurement:
    """One OONI line, mapped, judged by gatewatch's analysis and made a store row marked as imported. Each
    DNS answer's ``bogon`` and ``asn`` are recomputed as on ingest (``asn`` from ``geo``, None without)."""
    m = measurement_from_ooni(line)
    flags: tuple[str, ...] = (OONI_IMPORT,)
    try:
        keys = rederive_dns_answers(m.test_keys, routable, geo)
        verdict = analyse(m.input, keys, keys.control, fingerprints)
    except Exception:  # as on ingest: a bug in the analysis costs one verdict, not the import
        verdict, flags = Verdict(blocking=None, accessible=None), (OONI_IMPORT, ANALYSIS_ERROR)
    # Unsigned: the scheme says so in every export, and `verify` counts it apart from signed rows.
    return replace(stored_row(m, verdict, flags, m.to_json_bytes(), now), signature_scheme=IMPORT_SCHEME)


async def import_files(
    paths: Iterable[Path],
    store: Store,
    fingerprints: FingerprintDB,
    *,
    routable: tuple[str, ...] = (),
    geo: GeoLookup | None = None,
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
                pending.append(judge_ooni(line, fingerprints, routable, datetime.now(UTC), geo))
            except NotImportable as exc:
                report.skip(str(exc))
                continue
            if len(pending) >= batch:
                await flush()
    if pending:
        await flush()
    return report
