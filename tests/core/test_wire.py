"""The wire contract and the vocabulary agree: every reason the collector can give is a vocabulary word,
and the metrics that count reasons and techniques take the vocabulary's lists whole."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter, ValidationError

from gatewatch.collector.metrics import ITEM_REASONS, ITEM_RESULTS, IngestMetrics, item_reason_label
from gatewatch.core import envelope, vocabulary, wire


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bad_envelopes() -> list[envelope.Envelope]:
    """One envelope for each way verify() refuses one."""
    key = Ed25519PrivateKey.generate()
    good = envelope.sign(b'{"a": 1}', key)
    other = envelope.sign(b'{"a": 2}', key)
    return [
        good.model_copy(update={"format": "gatewatch-envelope/9"}),
        good.model_copy(update={"payload": "%%%"}),
        good.model_copy(update={"signature": "%%%"}),
        good.model_copy(update={"public_key": "%%%"}),
        good.model_copy(update={"payload": _b64(b"x" * (envelope.MAX_PAYLOAD_BYTES + 1))}),
        good.model_copy(update={"public_key": _b64(b"k" * 31)}),
        good.model_copy(update={"signature": _b64(b"s" * 63)}),
        good.model_copy(update={"signature": other.signature}),
    ]


def test_every_envelope_refusal_is_an_item_rejection_of_the_vocabulary() -> None:
    reasons = set()
    for bad in _bad_envelopes():
        with pytest.raises(envelope.EnvelopeError) as refused:
            envelope.verify(bad)
        reasons.add(refused.value.reason)
    assert len(reasons) >= 6
    assert reasons <= set(vocabulary.ITEM_REJECTIONS)


def test_no_vocabulary_reason_is_counted_as_other() -> None:
    assert ITEM_REASONS == (*vocabulary.ITEM_REJECTIONS, "other")
    for reason in vocabulary.ITEM_REJECTIONS:
        assert item_reason_label(reason) == reason
    assert item_reason_label("not_a_reason") == "other"
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    for reason in ITEM_REASONS:  # pre-created at zero, so rate() works before the first rejection
        labels = {"result": "rejected", "reason": reason}
        assert registry.get_sample_value("gatewatch_ingest_items_total", labels) == 0


def test_item_statuses_and_blocking_values_are_the_wire_and_vocabulary_ones() -> None:
    assert ITEM_RESULTS == get_args(wire.ItemStatus)
    rows_blocking = TypeAdapter(wire.MeasurementRow.model_fields["blocking"].annotation)
    for label in vocabulary.BLOCKING_LABELS:  # each stored label is a value MeasurementRow accepts
        assert rows_blocking.validate_python(vocabulary.blocking_value(label)) == vocabulary.blocking_value(
            label
        )
    with pytest.raises(ValidationError):
        rows_blocking.validate_python("tls")


def test_the_models_keep_the_bytes_clients_saw() -> None:
    """Key order and null versus absent, as the hand-built answers had them."""
    assert wire.Status(status="ok").model_dump(mode="json", exclude_none=True) == {"status": "ok"}
    result = wire.IngestItemResult(index=0, measurement_uid=None, status="rejected", reason="too_old")
    assert list(result.model_dump(mode="json")) == ["index", "measurement_uid", "status", "reason"]
    assert result.model_dump(mode="json")["measurement_uid"] is None
    when = datetime(2026, 11, 23, 13, 40, tzinfo=UTC)
    network = wire.InterferenceNetwork(
        asn="AS64501",
        condition="clean",
        measurements=1,
        last_measured=when,
        fingerprint_key=None,
        technique=None,
    )
    assert network.model_dump(mode="json")["last_measured"] == "2026-11-23T13:40:00Z"


@pytest.mark.parametrize("value", ["as64501", "64501", "AS", "AS12345678901"])
def test_wire_asns_are_checked(value: str) -> None:
    with pytest.raises(ValueError):
        wire.Geolocation(probe_asn=value, probe_cc="XL", probe_network_name="", probe_ip="")
