"""``gatewatch-collector verify FILE --issuer-keys URL-or-FILE``: re-verify an export offline (issue 12).

Needs nothing but the export (JSON Lines, CSV or Parquet, gzipped or not) and the published issuer keys
(the JSON of ``GET /api/v1/issuer-keys``, from a file or a URL): no database, no collector. For every
measurement signed under a blind token it checks that

- the token's issuer key was published, for the epoch the token names (``unknown_key``, ``wrong_epoch``);
- the token is a valid RFC 9474 signature by that key over the epoch, key id and ephemeral key
  (``forged_token``);
- the exact signed bytes verify under the ephemeral key (``bad_signature``);
- what the line says about the measurement (uid, input, network, country, test, start time) is what the
  signed bytes say (``payload_mismatch``: a line edited after export).

Measurements stored before issue 12 (or sent by identified probes, ``ed25519-longterm/1``) cannot be
checked without the long-term key, which is never exported: they are counted apart, not failed.
"""

from __future__ import annotations

import base64
import binascii
import csv
import gzip
import io
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import duckdb
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gatewatch.core import blindrsa
from gatewatch.core.batch_token import BatchTokenError, TokenParts, verify_token
from gatewatch.core.measurement import Measurement, as_utc
from gatewatch.core.vocabulary import (
    BAD_SIGNATURE,
    FORGED_TOKEN,
    PAYLOAD_MISMATCH,
    SCHEME_BLIND_TOKEN,
    SCHEME_UNSIGNED_IMPORT,
    UNKNOWN_KEY,
    WRONG_EPOCH,
)
from gatewatch.core.wire import IssuerKeysResponse

__all__ = ["Failure", "VerifyReport", "load_issuer_keys", "read_records", "verify_file", "verify_record"]

# What a line states about its measurement, checked against the signed bytes.
_CLAIMS = ("measurement_uid", "input", "probe_cc", "probe_asn", "test_name")
_MAX_KEYS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Failure:
    line: int  # 1-based record number in the file (CSV: after the header)
    measurement_uid: str
    reason: str


@dataclass
class VerifyReport:
    verified: int = 0
    unverifiable: int = 0  # long-term-key rows: nothing to check them with
    unsigned: int = 0  # imported OONI measurements (``import-ooni``): never signed, never counted as verified
    failures: list[Failure] = field(default_factory=list)


def load_issuer_keys(source: str) -> dict[str, tuple[int, RSAPublicKey]]:
    """key_id → (epoch, key) from a file or an http(s) URL holding ``GET /api/v1/issuer-keys``'s JSON."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as response:
            text = response.read(_MAX_KEYS_BYTES)
    else:
        text = Path(source).read_bytes()
    published = IssuerKeysResponse.model_validate_json(text)
    keys = {}
    for key in published.keys:
        public = blindrsa.public_key_from_spki(base64.b64decode(key.public_key))
        if blindrsa.key_id(public) != key.key_id:
            raise ValueError(f"issuer key of epoch {key.epoch}: key_id does not match the key")
        keys[key.key_id] = (key.epoch, public)
    return keys


def _open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    with duckdb.connect(":memory:") as con:
        cursor = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        names = [column[0] for column in cursor.description]
        while batch := cursor.fetchmany(1000):
            for values in batch:
                yield dict(zip(names, values, strict=True))


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Each exported measurement as a flat record: the summary's columns, or a JSON line with its
    ``signed`` part lifted up."""
    with path.open("rb") as probe:
        head = probe.read(4)
    if head == b"PAR1":
        yield from _parquet_records(path)
        return
    with _open_binary(path) as binary:
        first = binary.read(1)
    with _open_binary(path) as binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
        if first == b"{":
            for line in text:
                if line.strip():
                    doc = json.loads(line)
                    yield {**doc, **doc.get("signed", {})}
        else:
            yield from csv.DictReader(text)


def _b64(value: Any) -> bytes:
    return base64.b64decode(str(value).encode("ascii"), validate=True)


def _same_claims(record: dict[str, Any], payload: dict[str, Any]) -> bool:
    for name in _CLAIMS:
        if name in record and record[name] != payload.get(name):
            return False
    stated = record.get("measurement_start_time")
    if stated is None:
        return True
    signed = Measurement.model_validate(payload).measurement_start_time
    when = stated if isinstance(stated, datetime) else datetime.fromisoformat(str(stated).replace(" ", "T"))
    return abs((as_utc(when) - signed).total_seconds()) < 1  # exports give whole seconds


def verify_record(record: dict[str, Any], keys: dict[str, tuple[int, RSAPublicKey]]) -> str | None:
    """None when the record verifies, else the reason it does not."""
    try:
        parts = TokenParts.decode(
            int(record["token_epoch"]),
            str(record["token_key_id"]),
            str(record["ephemeral_public_key"]),
            str(record["token"]),
        )
        payload, signature = _b64(record["payload"]), _b64(record["signature"])
    except (KeyError, TypeError, ValueError, binascii.Error, BatchTokenError):
        return FORGED_TOKEN
    published = keys.get(parts.key_id)
    if published is None:
        return UNKNOWN_KEY
    if published[0] != parts.epoch:
        return WRONG_EPOCH
    try:
        verify_token(parts, published[1])
    except BatchTokenError as exc:
        return exc.reason
    try:
        Ed25519PublicKey.from_public_bytes(parts.ephemeral_public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return BAD_SIGNATURE
    try:
        if not _same_claims(record, json.loads(payload)):
            return PAYLOAD_MISMATCH
    except ValueError:
        return PAYLOAD_MISMATCH
    return None


def verify_file(path: Path, keys: dict[str, tuple[int, RSAPublicKey]]) -> VerifyReport:
    report = VerifyReport()
    for number, record in enumerate(read_records(path), start=1):
        scheme = record.get("signature_scheme")
        if scheme == SCHEME_UNSIGNED_IMPORT:
            report.unsigned += 1
            continue
        if scheme != SCHEME_BLIND_TOKEN:
            report.unverifiable += 1
            continue
        reason = verify_record(record, keys)
        if reason is None:
            report.verified += 1
        else:
            report.failures.append(Failure(number, str(record.get("measurement_uid", "")), reason))
    return report
