"""The measurement: OONI-compatible top-level keys around gatewatch's ``web`` test keys.

There is deliberately **no field for the probe's IP address**: with ``extra="forbid"`` a measurement
that tries to carry one (``probe_ip``, say) fails validation instead of being stored.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from .control import ControlObservations, VouchedControl
from .observations import DNSQuery, HTTPTransaction, PacketTrace, TCPConnect, TLSHandshake
from .verdicts import Verdict
from .vocabulary import WITHHELD_ASN, WITHHELD_CC

__all__ = [
    "ASN",
    "ASN_RE",
    "CC_RE",
    "MAX_INPUT_LENGTH",
    "MEASUREMENT_UID_PATTERN",
    "CountryCode",
    "Measurement",
    "TimeOutOfRange",
    "UTCDateTime",
    "WebTestKeys",
    "as_utc",
    "format_utc",
    "new_measurement_uid",
    "ooni_time",
    "utc_now",
]

TEST_NAME = "web"
TEST_VERSION = "0.1.0"
SOFTWARE_NAME = "gatewatch-agent"
ASN_RE = re.compile(r"^AS[0-9]{1,10}$")  # [0-9], not \d: no other script's digits
CC_RE = re.compile(r"^[A-Z]{2}$")
# A UUIDv7 (RFC 9562) in its canonical lower-case form: version nibble 7, variant bits 10. Only that: a uid
# is the measurement's identity in the store, so 36 dashes, the nil UUID or another version are refused.
MEASUREMENT_UID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
MAX_INPUT_LENGTH = 2048  # the longest URL a measurement may carry


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class TimeOutOfRange(ValueError):
    """A valid time whose UTC form falls outside the calendar (``0001-01-01T00:00:00+01:00`` is still in
    year 0 in UTC). A ValueError, so that every parser that refuses bad times refuses this one too."""


def as_utc(value: datetime) -> datetime:
    """A time in UTC; a naive time is taken to be UTC already (never the machine's local zone).

    Raises :class:`TimeOutOfRange` (a ValueError) when the conversion leaves years 1-9999."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise TimeOutOfRange(f"{value.isoformat()} is outside years 1-9999 in UTC") from None


def format_utc(value: datetime) -> str:
    """ISO 8601 with a ``Z``, second precision: ``2026-11-23T13:40:00Z``."""
    utc = as_utc(value)
    # isoformat is several times cheaper than strftime (exports format three times a row) and writes the
    # same text from year 1000 on; strftime's %Y does not zero-pad smaller years, and those keep it.
    return utc.isoformat()[:19] + "Z" if utc.year >= 1000 else utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def ooni_time(value: datetime) -> str:
    """OONI's own format for times: ``2026-11-23 13:40:00`` (UTC, no zone marker)."""
    utc = as_utc(value)
    return utc.isoformat(" ")[:19] if utc.year >= 1000 else utc.strftime("%Y-%m-%d %H:%M:%S")


def _require_utc(value: datetime) -> datetime:
    # Only ValueError and AssertionError become validation errors in pydantic: an OverflowError from
    # astimezone would escape model_validate and fail the whole batch, so as_utc turns it into one.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must carry a zone (UTC)")
    return as_utc(value)


UTCDateTime = Annotated[
    datetime, AfterValidator(_require_utc), PlainSerializer(format_utc, return_type=str, when_used="json")
]


def new_measurement_uid() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so stores index it well, and random in its low 74 bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def _check_asn(value: str) -> str:
    if not ASN_RE.match(value):
        raise ValueError(f"ASN must look like AS1234 ({WITHHELD_ASN} when withheld)")
    return value


def _check_cc(value: str) -> str:
    if not CC_RE.match(value):
        raise ValueError(f"country code must be two upper-case letters ({WITHHELD_CC} when withheld)")
    return value


_CONTROL_OR_SURROGATE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _check_plain_text(value: str) -> str:
    # Top-level fields become indexed text columns and file names in exports: a NUL, a control character or
    # a lone surrogate there is never meaningful and some stores cannot hold it. (Bodies and headers inside
    # test_keys may carry anything: they are kept only inside the signed bytes.)
    if _CONTROL_OR_SURROGATE.search(value):
        raise ValueError("must not contain control characters or unpaired surrogates")
    return value


PlainText = Annotated[str, AfterValidator(_check_plain_text)]
ASN = Annotated[str, AfterValidator(_check_asn)]
CountryCode = Annotated[str, AfterValidator(_check_cc)]


class WebTestKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[DNSQuery] = Field(default_factory=list, max_length=64)
    tcp_connect: list[TCPConnect] = Field(default_factory=list, max_length=64)
    tls_handshakes: list[TLSHandshake] = Field(default_factory=list, max_length=64)
    requests: list[HTTPTransaction] = Field(default_factory=list, max_length=32)
    # The control the agent compared against, as received (the collector keeps it with the measurement).
    control: ControlObservations | None = None
    # The same control as the collector signed it (ingest judges only against a control it can
    # authenticate); absent when the collector does not vouch for its controls.
    control_vouch: VouchedControl | None = None
    control_failure: str | None = None
    # The agent's own verdict. The collector never trusts it: it re-derives its own from the
    # observations and the control with the same analysis code.
    verdict: Verdict | None = None
    # Packet-level evidence for the interfered flows, when the volunteer enabled the privileged trace
    # step (one entry saying "skipped" and why when the agent lacks CAP_NET_RAW); empty otherwise.
    packet_traces: list[PacketTrace] = Field(default_factory=list, max_length=8)


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measurement_uid: str = Field(default_factory=new_measurement_uid, pattern=MEASUREMENT_UID_PATTERN)
    measurement_start_time: UTCDateTime
    test_start_time: UTCDateTime
    test_runtime: float = Field(ge=0)
    probe_asn: ASN = WITHHELD_ASN
    probe_cc: CountryCode = WITHHELD_CC
    probe_network_name: PlainText = Field(default="", max_length=256)
    resolver_asn: ASN = WITHHELD_ASN
    input: PlainText = Field(max_length=MAX_INPUT_LENGTH)
    test_name: PlainText = TEST_NAME
    test_version: PlainText = TEST_VERSION
    software_name: PlainText = SOFTWARE_NAME
    software_version: PlainText = "0.1.0"
    annotations: dict[PlainText, PlainText] = Field(default_factory=dict, max_length=32)
    test_keys: WebTestKeys

    def to_json_bytes(self) -> bytes:
        """The canonical bytes that get signed and uploaded (compact, key order as declared)."""
        return self.model_dump_json(exclude_none=False).encode()

    def to_ooni_dict(self) -> dict[str, Any]:
        """As OONI writes measurements: times as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
        data = self.model_dump(mode="json")
        data["measurement_start_time"] = ooni_time(self.measurement_start_time)
        data["test_start_time"] = ooni_time(self.test_start_time)
        return data
