"""Fuzzing the real upload endpoint: a collector served on loopback as ``serve`` runs it (CollectorRunner,
the real SQLite store), sent mixed batches of valid and mutated signed measurements, in every
Content-Encoding (good and broken), with odd content types and sizes (hypothesis, bounded).

Whatever arrives: never a 5xx, every error in the ``{"error", "detail"}`` shape, and in a batch that could
be read every valid measurement is acknowledged and really in the store. The issue's own examples are
explicit cases.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.core import envelope
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now

URL = "/api/v1/measurements"
KEY = Ed25519PrivateKey.generate()
MAX_BODY = 256 * 1024

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

# Values a field may be replaced with: the issue's calendar-edge times, uids that are no UUIDv7, and the
# usual troublemakers (NUL, lone surrogate, huge numbers, wrong types).
EDGE_VALUES = [
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "-" * 36, "0" * 36, "00000000-0000-0000-0000-000000000000", "2026-13-01T00:00:00Z", "", "\x00", "\ud800",
    10**30, -1, 1e308, None, [], {}, True, "AS" + "9" * 20, "x" * 5000,
]  # fmt: skip


def valid_document() -> dict[str, Any]:
    now = utc_now()
    m = Measurement(measurement_start_time=now, test_start_time=now, test_runtime=0.1, input="http://x.lab/",
                    probe_cc="XL", probe_asn="AS64501", test_keys=WebTestKeys())  # fmt: skip
    return json.loads(m.to_json_bytes())


def signed(document: dict[str, Any]) -> dict[str, Any]:
    return envelope.sign(json.dumps(document).encode(), KEY).model_dump()


@st.composite
def valid_items(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    document = valid_document()
    document["input"] = draw(st.sampled_from(["http://x.lab/", "https://y.lab/a?b=c", "http://[::1]:8/"]))
    return document["measurement_uid"], signed(document)


@st.composite
def mutated_items(draw: st.DrawFn) -> dict[str, Any]:
    document = valid_document()
    target = draw(st.sampled_from([document, document["test_keys"]]))
    field = draw(st.sampled_from(sorted(target)))
    target[field] = draw(st.sampled_from(EDGE_VALUES) | st.text(max_size=40) | st.integers())
    item = signed(document)
    if draw(st.integers(0, 9)) == 0:  # now and then, a broken envelope as well
        item[draw(st.sampled_from(sorted(item)))] = draw(st.sampled_from(EDGE_VALUES))
    return item


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


ENCODINGS: dict[str, tuple[str | None, Any]] = {
    "identity": (None, lambda b: b),
    "gzip": ("gzip", gzip.compress),
    "deflate": ("deflate", _deflate),
    "gzip-truncated": ("gzip", lambda b: gzip.compress(b)[:-9]),
    "gzip-lying": ("gzip", lambda b: b),
    "deflate-lying": ("deflate", lambda b: b),
    "br": ("br", lambda b: b),
    "unknown": ("x-unknown", lambda b: b),
}
GOOD_ENCODINGS = {"identity", "gzip", "deflate"}
CONTENT_TYPES = {
    "application/json": True,
    "application/json; charset=utf-8": True,
    "APPLICATION/JSON": True,
    "application/json; charset=latin-1": True,
    "text/plain": False,
    "application/x-www-form-urlencoded": False,
}


@pytest.fixture
async def served(serve_collector) -> AsyncIterator[Any]:
    # One collector for every example of the test: later examples meet the earlier ones' rows.
    yield await serve_collector(max_body_bytes=MAX_BODY, key_burst=1_000_000, key_rate=1000.0)


async def _post(served: Any, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{served.port}{URL}"
        async with session.post(url, data=body, headers=headers) as response:
            status = response.status
            assert response.headers["Content-Type"].startswith("application/json"), status
            return status, json.loads(await response.read())


def _check_shape(status: int, answer: Any) -> None:
    assert status < 500, answer
    if status != 200:
        assert set(answer) == {"error", "detail"}, answer
        assert isinstance(answer["error"], str) and isinstance(answer["detail"], str)


@FUZZ_SETTINGS
@given(
    valid=st.lists(valid_items(), max_size=5),
    bad=st.lists(mutated_items(), max_size=5),
    order=st.randoms(use_true_random=False),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    content_type=st.sampled_from(sorted(CONTENT_TYPES)),
    padding=st.sampled_from([0, 1, 1000, MAX_BODY // 2, MAX_BODY]),
)
@example(valid=[], bad=[], order=None, encoding="gzip-lying", content_type="application/json", padding=0)
async def test_mixed_batches_in_any_encoding(
    served, valid, bad, order, encoding: str, content_type: str, padding: int
) -> None:
    items = [item for _, item in valid] + bad
    if order is not None:
        order.shuffle(items)
    body = json.dumps({"measurements": items}).encode() + b" " * padding  # JSON allows trailing space
    coding, encode = ENCODINGS[encoding]
    headers = {"Content-Type": content_type, **({"Content-Encoding": coding} if coding else {})}
    status, answer = await _post(served, encode(body), headers)
    _check_shape(status, answer)
    readable = encoding in GOOD_ENCODINGS and CONTENT_TYPES[content_type] and len(body) <= MAX_BODY
    if not readable:
        assert status != 200
        return
    assert status == 200, answer
    by_uid = {r["measurement_uid"]: r for r in answer["results"] if r["measurement_uid"]}
    uids = [uid for uid, _ in valid]
    assert all(by_uid[uid]["status"] == "accepted" for uid in uids), answer
    stored = await served.app[STORE_KEY].stored_payloads(uids)
    assert set(stored) == set(uids)


# The issue's examples, one by one, each next to a valid measurement that must be stored.
ISSUE_CASES = {
    "start-time-min-with-offset": ("measurement_start_time", "0001-01-01T00:00:00+01:00"),
    "start-time-max-with-offset": ("measurement_start_time", "9999-12-31T23:59:59-01:00"),
    "test-start-min-with-offset": ("test_start_time", "0001-01-01T00:00:00+01:00"),
    "test-start-max-with-offset": ("test_start_time", "9999-12-31T23:59:59-01:00"),
    "uid-of-dashes": ("measurement_uid", "-" * 36),
    "uid-of-zeros": ("measurement_uid", "0" * 36),
}


@pytest.mark.parametrize("case", ISSUE_CASES)
async def test_the_issues_examples_reject_one_item_only(served, case: str) -> None:
    field, value = ISSUE_CASES[case]
    bad = valid_document()
    bad[field] = value
    document = valid_document()
    uid, good = document["measurement_uid"], signed(document)
    status, answer = await _post(served, json.dumps({"measurements": [signed(bad), good]}).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [
        ("rejected", "invalid_measurement"), ("accepted", None)
    ]  # fmt: skip
    assert set(await served.app[STORE_KEY].stored_payloads([uid])) == {uid}


async def test_the_issues_bodies_are_4xx(served) -> None:
    batch = json.dumps({"measurements": [signed(valid_document())]}).encode()
    for body, coding in ((batch, "gzip"), (gzip.compress(batch)[:40], "gzip")):  # not gzip; truncated
        status, answer = await _post(
            served, body, {"Content-Type": "application/json", "Content-Encoding": coding}
        )
        assert (status, answer["error"]) == (400, "undecodable_body")


async def test_a_reused_uid_is_a_conflict_a_resend_a_duplicate(served) -> None:
    document = valid_document()
    item = signed(document)
    other = dict(document, input="http://other.lab/")
    answers = []
    for batch in ([item], [item, signed(other)]):
        status, answer = await _post(served, json.dumps({"measurements": batch}).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
        answers += [(r["status"], r["reason"]) for r in answer["results"]]
    assert answers == [("accepted", None), ("duplicate", None), ("rejected", "uid_conflict")]
