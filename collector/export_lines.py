"""JSON Lines and OONI records written from a row's columns: the stores' fast paths for both formats.

The exact path builds a :class:`StoredMeasurement` per row and encodes one document per row
(:func:`.exports.jsonl_line`, :func:`.exports.ooni_line`). Here a page's columns are read as they are
(:data:`DOCUMENT_COLUMNS`, times already formatted by the store's SQL) and what many rows share is made
once: the ``analysis`` of each distinct judgement (decoded verdict, its JSON text, OONI's verdict keys) is
cached, and its text is spliced into the encoded document instead of being encoded again. The payload is
still decoded and encoded by ``json`` as the exact path does, so that the bytes are the exact path's
for any stored payload (tests/collector/test_export_lines.py): what is spliced is only text this module
encodes with the same encoder. A row the splice cannot write exactly (a payload that is not a JSON
object, a value with no UTF-8 form, which makes the exact path escape the whole line) gives None: the
caller writes it the exact way.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN

from .exports import _JSON, _ooni_time_text, json_text, judgement_fields, received_hour_text
from .ooni_format import RowFacts, judgement_keys, ooni_document_of
from .store.verdict_codec import decode_verdict

__all__ = ["DOCUMENT_COLUMNS", "jsonl_record", "ooni_record", "signed_text"]

# What each store's SQL selects, in this order (the names say what each holds).
DOCUMENT_COLUMNS: Final = (
    "payload",  # the stored bytes
    "measurement_uid",
    "input",
    "probe_cc",
    "probe_asn",
    "start",  # measurement_start_time in OONI's form (ooni_time): 2026-11-23 13:40:00
    "started",  # the same as report_id writes it: 20261123T134000Z
    "blocking",
    "anomaly",
    "technique",
    "fingerprint_key",
    "verdict_json",  # as stored (verdict_codec)
    "received_at",  # public_received_at's text, or its hour since the epoch (exports.received_hour_text)
    "flags",  # a JSON array of strings
    "signature_scheme",
    "signature",
    "ephemeral_key",
    "token",
    "token_epoch",
    "token_key_id",
)
_MEASUREMENT_KEYS = frozenset(Measurement.model_fields)
_DECODER = json.JSONDecoder()  # json.loads' own (no options)
# _JSON's C encoder built once (JSONEncoder.encode builds one per call), without the circular-reference
# check (decoded JSON has no cycles): the same text.
_C_ENCODER = (
    c_make_encoder(None, _JSON.default, encode_basestring, None, ":", ",", False, False, True)
    if c_make_encoder is not None
    else None
)
_CACHED: Final = 4096
_NO_FLAGS: Final = "[]"


class _Judged:
    """A distinct judgement: ``analysis`` as JSON values and text (None when it has no UTF-8 form), and
    OONI's verdict keys."""

    __slots__ = ("judged", "text")

    def __init__(self, analysis: dict[str, Any], blocking: str) -> None:
        text = _JSON.encode(analysis)
        try:
            text.encode()
        except UnicodeEncodeError:
            text = None
        self.text: str | None = text
        self.judged = judgement_keys(blocking, analysis.get("verdict"))


@lru_cache(maxsize=_CACHED)
def _judgement(
    blocking: str,
    anomaly: Any,
    technique: str | None,
    fingerprint_key: str | None,
    verdict: bytes | str,
    received_at: str | int,
    flags: str,
) -> _Judged:
    listed = () if flags == _NO_FLAGS else json.loads(flags)
    if isinstance(received_at, int):  # its hour (SQLite: export_documents.py)
        received_at = received_hour_text(received_at)
    analysis = judgement_fields(
        blocking, bool(anomaly), technique, fingerprint_key, decode_verdict(verdict), received_at, listed
    )
    return _Judged(analysis, blocking)


@lru_cache(maxsize=16)
def _scheme_only(scheme: str) -> str:
    return json_text({"signature_scheme": scheme})


_text_of = lru_cache(maxsize=_CACHED)(json_text)  # a scheme, an issuer key id: a few per export


def _b64(value: bytes | None) -> str:
    return '"' + binascii.b2a_base64(value, newline=False).decode() + '"' if value is not None else "null"


def signed_text(values: Sequence[Any]) -> str:
    """``signed_fields`` of the row (values: scheme, payload, signature, ephemeral key, token, epoch, key
    id; the last six only for token-signed rows)."""
    scheme = values[0]
    if scheme != SCHEME_BLIND_TOKEN:
        return _scheme_only(scheme)
    epoch = "null" if values[5] is None else str(int(values[5]))
    return (
        f'{{"signature_scheme":{_text_of(scheme)},"payload":{_b64(values[1])},"signature":{_b64(values[2])},'
        f'"ephemeral_public_key":{_b64(values[3])},"token":{_b64(values[4])},"token_epoch":{epoch},'
        f'"token_key_id":{_text_of(values[6])}}}'
    )


_ooni_text = lru_cache(maxsize=_CACHED)(_ooni_time_text)


def _payload(row: Sequence[Any]) -> dict[str, Any] | None:
    stored = row[0]
    if type(stored) is not bytes:  # the exact path reads bytes(payload)
        return None
    try:
        if stored[:1] == b"{" and stored[1:2] != b"\0":  # UTF-8 to json.detect_encoding: json.loads' steps
            payload = _DECODER.decode(stored.decode("utf-8", "surrogatepass"))
        else:
            payload = json.loads(stored)
    except (ValueError, RecursionError):  # the exact path raises it again
        return None
    return payload if type(payload) is dict else None


def _text(obj: Any) -> str:
    """``_JSON.encode(obj)`` for a dict."""
    return "".join(_C_ENCODER(obj, 0)) if _C_ENCODER is not None else _JSON.encode(obj)


def _encoded(line: str) -> bytes | None:
    try:
        return line.encode()
    except UnicodeEncodeError:  # the exact path writes this line ASCII-escaped, analysis included
        return None


def jsonl_record(row: Sequence[Any]) -> bytes | None:
    """The JSON Lines record of a row of :data:`DOCUMENT_COLUMNS`, as :func:`.exports.jsonl_line` writes
    it, or None (write it that way)."""
    payload = _payload(row)
    judged = _judgement(row[7], row[8], row[9], row[10], row[11], row[12], row[13])
    if payload is None or judged.text is None:
        return None
    if payload.keys() <= _MEASUREMENT_KEYS:
        doc = payload
    else:
        doc = {key: value for key, value in payload.items() if key in _MEASUREMENT_KEYS}
    doc["measurement_start_time"] = row[5]
    if "test_start_time" in doc:
        stored = doc["test_start_time"]
        doc["test_start_time"] = _ooni_text(stored) if type(stored) is str else _ooni_time_text(stored)
    signed = signed_text((row[14], row[0], *row[15:20]))
    # The document never ends empty ("{}"): it has its measurement_start_time.
    return _encoded(f'{_text(doc)[:-1]},"analysis":{judged.text},"signed":{signed}}}\n')


def ooni_record(row: Sequence[Any], marker: str) -> bytes | None:
    """The OONI record of a row of :data:`DOCUMENT_COLUMNS`, as :func:`.exports.ooni_line` writes it, or
    None (write it that way). ``marker`` (plain ASCII, a random one per export, so that no payload holds
    it) stands for ``analysis`` until the encoded document is made."""
    payload = _payload(row)
    judged = _judgement(row[7], row[8], row[9], row[10], row[11], row[12], row[13])
    if payload is None or judged.text is None:
        return None
    facts = RowFacts(row[1], row[2], row[3], row[4], row[5], row[6])
    try:
        doc = ooni_document_of(payload, facts, marker, judged.judged)
    except (AttributeError, TypeError, ValueError):  # an odd payload: the exact path raises it again
        return None
    text = _text(doc)
    quoted = f'"{marker}"'  # as json writes it: the marker is plain ASCII
    at = text.find(quoted)
    end = at + len(quoted)
    if at < 0 or text.find(quoted, end) >= 0:  # a payload holding the marker: the exact way
        return None
    return _encoded(f"{text[:at]}{judged.text}{text[end:]}\n")
