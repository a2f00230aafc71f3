"""The measurement model: OONI top-level keys, UTC times, UUIDv7 ids, and no place for an IP."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gatewatch.core.measurement import (
    Measurement,
    TimeOutOfRange,
    WebTestKeys,
    as_utc,
    format_utc,
    new_measurement_uid,
    ooni_time,
    utc_now,
)

OONI_TOP_LEVEL = {
    "measurement_start_time", "test_start_time", "test_runtime", "probe_asn", "probe_cc",
    "probe_network_name", "resolver_asn", "input", "test_name", "test_version", "software_name",
    "software_version", "annotations", "test_keys",
}  # fmt: skip


def make(**overrides: object) -> Measurement:
    fields: dict[str, object] = {
        "measurement_start_time": datetime(2026, 11, 23, 13, 40, tzinfo=UTC),
        "test_start_time": datetime(2026, 11, 23, 13, 39, tzinfo=UTC),
        "test_runtime": 0.5,
        "input": "http://example.lab/",
        "test_keys": WebTestKeys(),
    }
    fields.update(overrides)
    return Measurement(**fields)  # type: ignore[arg-type]


def test_has_ooni_top_level_keys_and_a_uid() -> None:
    data = make().model_dump(mode="json")
    assert OONI_TOP_LEVEL <= set(data)
    assert "measurement_uid" in data


@pytest.mark.parametrize("field", ["probe_ip", "client_ip", "ip"])
def test_rejects_any_ip_field(field: str) -> None:
    data = make().model_dump(mode="json")
    data[field] = "203.0.113.7"
    with pytest.raises(ValidationError):
        Measurement.model_validate(data)


def test_json_round_trip_is_exact() -> None:
    m = make()
    raw = m.to_json_bytes()
    again = Measurement.model_validate_json(raw)
    assert again == m
    assert again.to_json_bytes() == raw


def test_times_are_utc_with_z_and_ooni_export_format() -> None:
    plus7 = timezone(timedelta(hours=7))
    m = make(measurement_start_time=datetime(2026, 11, 23, 20, 40, tzinfo=plus7))
    assert m.model_dump(mode="json")["measurement_start_time"] == "2026-11-23T13:40:00Z"
    assert m.to_ooni_dict()["measurement_start_time"] == "2026-11-23 13:40:00"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError, match="zone"):
        make(measurement_start_time=datetime(2026, 11, 23, 13, 40))


@pytest.mark.parametrize(
    ("field", "value"), [("probe_asn", "64501"), ("probe_cc", "kh"), ("probe_cc", "KHM")]
)
def test_asn_and_country_code_shapes(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        make(**{field: value})


def test_withheld_network_is_as0_zz() -> None:
    m = make()
    assert (m.probe_asn, m.probe_cc) == ("AS0", "ZZ")


def test_measurement_uid_is_uuid7_and_time_ordered() -> None:
    uids = [new_measurement_uid() for _ in range(200)]
    parsed = [uuid.UUID(u) for u in uids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert len(set(uids)) == len(uids)
    stamps = [p.int >> 80 for p in parsed]
    assert stamps == sorted(stamps)
    now_ms = int(utc_now().timestamp() * 1000)
    assert abs(stamps[-1] - now_ms) < 5_000


@pytest.mark.parametrize("bad", ["http://a.lab/\x00", "http://a.lab/\n", "http://a.lab/\ud800", "x\x7f"])
@pytest.mark.parametrize("field", ["input", "probe_network_name", "test_name", "software_version"])
def test_top_level_text_refuses_control_characters(field: str, bad: str) -> None:
    with pytest.raises(ValidationError, match="control characters|unicode"):
        make(**{field: bad})


def test_bodies_inside_test_keys_may_carry_anything() -> None:
    from gatewatch.core.observations import HTTPRequest, HTTPResponse, HTTPTransaction

    odd = HTTPResponse(code=200, body="a\x00b\nc", headers=[("X", "\x01")])
    keys = WebTestKeys(
        requests=[HTTPTransaction(t0=0, t=1, request=HTTPRequest(url="http://a.lab/"), response=odd)]
    )
    assert Measurement.model_validate_json(make(test_keys=keys).to_json_bytes()).test_keys == keys


EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
              "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59"]  # fmt: skip


@pytest.mark.parametrize("when", EDGE_TIMES)
def test_a_time_whose_utc_form_leaves_the_calendar_is_a_validation_error(when: str) -> None:
    """Not an OverflowError: that would escape model_validate and fail a whole batch at the collector."""
    data = make().model_dump(mode="json")
    for field in ("measurement_start_time", "test_start_time"):
        with pytest.raises(ValidationError, match=field):
            Measurement.model_validate({**data, field: when})
        with pytest.raises(ValidationError, match=field):
            Measurement.model_validate_json(json.dumps({**data, field: when}))
    aware = datetime.fromisoformat(when)
    for convert in (as_utc, format_utc, ooni_time):
        with pytest.raises(TimeOutOfRange):
            convert(aware)
    assert issubclass(TimeOutOfRange, ValueError)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
def test_time_texts_are_strftimes(when: datetime, zone: timezone | None) -> None:
    """format_utc and ooni_time take a faster way than strftime; the text is strftime's, in every year."""
    when = when.replace(tzinfo=zone)
    utc = as_utc(when)
    assert format_utc(when) == utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ooni_time(when) == utc.strftime("%Y-%m-%d %H:%M:%S")
