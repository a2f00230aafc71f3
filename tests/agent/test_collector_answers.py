"""Every collector answer the agent reads is read with the wire contract's model: what fits is used, what
does not is ``bad_answer`` and treated as any answer that is not the collector's (retried, never
quarantined; a pass without a usable geolocation does not measure for upload). Servers on 127.0.0.1."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from aiohttp import web

from gatewatch.agent.collector_api import (
    ApiFailure,
    geolocate,
    make_session,
    read_geolocation,
    request_control,
    request_controls,
)
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.run_records import RunOptions
from gatewatch.agent.runner import run_pass
from gatewatch.agent.testlists import TestListEntry
from gatewatch.agent.upload import RetryPolicy, Uploader
from gatewatch.core.control import ControlObservations
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.vocabulary import (
    CONTENT_REFUSALS,
    NOT_FOUND,
    RATE_LIMITED,
    REQUEST_ERRORS,
    WITHHELD_ASN,
    WITHHELD_CC,
)
from gatewatch.core.wire import (
    ControlBatchResponse,
    ControlRequest,
    ErrorBody,
    Geolocation,
    IngestResponse,
)

from .collector_contract import ContractCollector

FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)
GEOLOCATION = {
    "probe_asn": "AS64501",
    "probe_cc": "XL",
    "probe_network_name": "ISP",
    "probe_ip": "203.0.113.7",
}


async def _answering(aiohttp_server: Any, path: str, body: str, status: int = 200) -> str:
    """A server answering ``body`` (as JSON) to any request for ``path``; its base URL."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", path, answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/"))


# --- GET /api/v1/geolocate --------------------------------------------------------------------------------
def test_a_geolocation_is_read_with_the_wire_model() -> None:
    assert read_geolocation(GEOLOCATION) == Geolocation(**GEOLOCATION)


@pytest.mark.parametrize("absent", [None, "", "missing"])
def test_what_agents_always_tolerated_in_a_geolocation_still_is(absent: Any) -> None:
    # Without an address (the pass then decides), without network, country or name (withheld).
    answer = {key: absent for key in GEOLOCATION} if absent != "missing" else {}
    assert read_geolocation(answer) == Geolocation(
        probe_asn=WITHHELD_ASN, probe_cc=WITHHELD_CC, probe_network_name="", probe_ip=""
    )
    assert read_geolocation({**GEOLOCATION, "later_field": 1}) == Geolocation(**GEOLOCATION)


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "AS64501",
        {**GEOLOCATION, "probe_asn": "64501"},
        {**GEOLOCATION, "probe_cc": 7},
        {**GEOLOCATION, "probe_ip": ["203.0.113.7"]},
    ],
    ids=["list", "string", "asn_without_AS", "cc_not_text", "probe_ip_not_text"],
)
def test_a_geolocation_outside_the_contract_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError):
        read_geolocation(answer)


@pytest.mark.parametrize("body", ["<html>portal</html>", "[]", json.dumps({**GEOLOCATION, "probe_asn": "x"})])
async def test_a_bad_geolocation_answer_is_a_bad_answer_and_the_next_collector_is_asked(
    aiohttp_server, body: str
) -> None:
    bad = await _answering(aiohttp_server, "/api/v1/geolocate", body)
    good = await _answering(aiohttp_server, "/api/v1/geolocate", json.dumps(GEOLOCATION))
    async with make_session() as session:
        assert await geolocate(session, [bad]) == ApiFailure("bad_answer", "127.0.0.1")
        assert await geolocate(session, [bad, good]) == Geolocation(**GEOLOCATION)


async def _measured(
    url: str, config: Any, *, trace: Any = None, on_resolved: Any = None, on_network_done: Any = None
) -> WebTestKeys:
    return WebTestKeys()


async def test_a_pass_with_a_bad_geolocation_measures_nothing_for_upload(
    aiohttp_server, tmp_path, signing_key
) -> None:
    base = await _answering(aiohttp_server, "/api/v1/geolocate", json.dumps({**GEOLOCATION, "probe_cc": "X"}))
    entries = [TestListEntry(url="http://a.example/", category_code="NEWS")]
    with MeasurementQueue(tmp_path / "q.sqlite3") as queue:
        options = RunOptions(collector_urls=(base,), route_probes=("127.0.0.1",))
        summary = await run_pass(entries, options, queue, signing_key, measure=_measured)
        assert summary.stop_reason == "own_address_unknown" and summary.measured == 0
        assert summary.stop_detail == "geolocate failed: 127.0.0.1: bad_answer"
        local = RunOptions(collector_urls=(base,), upload=False, route_probes=("127.0.0.1",))
        summary = await run_pass(entries, local, queue, signing_key, measure=_measured)
        assert summary.measured == 1 and (summary.probe_asn, summary.probe_cc) == (WITHHELD_ASN, WITHHELD_CC)


# --- POST /api/v1/measurements ----------------------------------------------------------------------------
def _item(**changes: Any) -> dict[str, Any]:
    return {"index": 0, "measurement_uid": None, "status": "accepted", "reason": None, **changes}


@pytest.mark.parametrize(
    "answer", [[], {"results": "none"}, {"measurements": []}], ids=["list", "not_a_list", "no_results"]
)
async def test_an_ingest_answer_outside_the_contract_is_retried_never_trusted(
    aiohttp_server, fill_queue, answer: Any
) -> None:
    base = await _answering(aiohttp_server, "/api/v1/measurements", json.dumps(answer))
    queue, _ = fill_queue(2)
    async with make_session() as session:
        report = await Uploader(queue, [base], session, policy=FAST, rng=random.Random(1)).upload_pending()
    assert (report.delivered, report.quarantined, report.still_pending) == (0, 0, 2)
    assert report.requests == FAST.max_attempts and report.last_error == "127.0.0.1: bad_answer"


@pytest.mark.parametrize(
    "bad",
    [
        _item(status="kept"),  # a status a later collector may add
        _item(status="rejected", reason="bad_signature", index="0"),  # strict: an index is an int
        _item(status="rejected", reason="bad_signature", index=True),
        {"index": 0, "status": "rejected"},
        5,
    ],
    ids=["unknown_status", "index_as_text", "index_as_bool", "item_missing_fields", "item_not_an_object"],
)
async def test_an_item_outside_the_contract_stays_pending_and_the_others_are_applied(
    aiohttp_server, fill_queue, bad: Any
) -> None:
    queue, uids = fill_queue(2)
    good = _item(index=1, measurement_uid=uids[1])
    base = await _answering(aiohttp_server, "/api/v1/measurements", json.dumps({"results": [bad, good]}))
    async with make_session() as session:
        report = await Uploader(queue, [base], session, policy=FAST, rng=random.Random(1)).upload_pending()
    assert (report.delivered, report.quarantined, report.still_pending) == (1, 0, 1)
    assert [row.measurement_uid for row in queue.pending()] == [uids[0]]


async def test_fields_an_ingest_answer_may_gain_later_are_ignored(aiohttp_server, fill_queue) -> None:
    queue, uids = fill_queue(1)
    answer = {"results": [_item(measurement_uid=uids[0], stored_at="now")], "took_ms": 3}
    base = await _answering(aiohttp_server, "/api/v1/measurements", json.dumps(answer))
    async with make_session() as session:
        report = await Uploader(queue, [base], session, policy=FAST).upload_pending()
    assert report.accepted == 1 and queue.counts()["sent"] == 1


# --- error bodies -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reason", REQUEST_ERRORS)
@pytest.mark.parametrize("status", [400, 413])
async def test_only_the_vocabularys_content_refusals_quarantine(
    aiohttp_server, fill_queue, reason, status
) -> None:
    body = ErrorBody(error=reason, detail="").model_dump_json()
    base = await _answering(aiohttp_server, "/api/v1/measurements", body, status=status)
    queue, uids = fill_queue(1)
    async with make_session() as session:
        report = await Uploader(queue, [base], session, policy=FAST).upload_pending()
    if reason in CONTENT_REFUSALS:
        row = queue.get(uids[0])
        assert report.quarantined == 1 and row is not None and row.reason == f"http_{status} {reason}"
    else:
        assert report.quarantined == 0 and report.still_pending == 1
        assert report.last_error == f"127.0.0.1: http_{status} {reason}"


@pytest.mark.parametrize(
    "body",
    [
        '{"error": "invalid_request"}',
        '{"error": 400, "detail": ""}',
        '["invalid_request"]',
        '{"error": "invalid request, said the proxy", "detail": ""}',
        '{"error": "", "detail": ""}',
    ],
    ids=["no_detail", "error_not_text", "not_an_object", "free_text", "empty"],
)
async def test_an_error_body_outside_the_collectors_shape_is_retried(
    aiohttp_server, fill_queue, body
) -> None:
    base = await _answering(aiohttp_server, "/api/v1/measurements", body, status=400)
    queue, _ = fill_queue(1)
    async with make_session() as session:
        report = await Uploader(queue, [base], session, policy=FAST).upload_pending()
    assert report.quarantined == 0 and report.still_pending == 1
    assert report.last_error == "127.0.0.1: http_400"  # nothing of a foreign body is recorded


# --- POST /api/v1/control and /api/v1/controls ------------------------------------------------------------
REQUEST = ControlRequest(input="http://a.example/", addrs=[])


@pytest.mark.parametrize(
    "body", ["[]", '{"dns": "none"}', '{"http_request": {"status_code": "x"}}', "not json"]
)
async def test_a_control_answer_outside_the_contract_is_a_bad_answer(aiohttp_server, body: str) -> None:
    base = await _answering(aiohttp_server, "/api/v1/control", body)
    async with make_session() as session:
        assert await request_control(session, base, REQUEST) == ApiFailure("bad_answer", "127.0.0.1")


def _batch(**item: Any) -> str:
    return json.dumps({"results": [{"input": REQUEST.input, **item}]})


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '{"results": {}}',
        _batch(control="none"),
        json.dumps({"results": []}),
        json.dumps({"results": [{"input": "http://other.example/"}]}),
    ],
    ids=["list", "results_not_a_list", "control_not_observations", "too_few", "not_what_was_asked"],
)
async def test_a_control_batch_answer_outside_the_contract_is_a_bad_answer(aiohttp_server, body: str) -> None:
    base = await _answering(aiohttp_server, "/api/v1/controls", body)
    async with make_session() as session:
        assert await request_controls(session, base, [REQUEST]) == ApiFailure("bad_answer", "127.0.0.1")


async def test_a_batch_item_without_control_or_known_error_is_a_bad_answer(aiohttp_server) -> None:
    base = await _answering(aiohttp_server, "/api/v1/controls", _batch(error="teapot"))
    async with make_session() as session:
        assert await request_controls(session, base, [REQUEST]) == [ApiFailure("bad_answer", "127.0.0.1")]


# --- the contract collector the agent's tests use ----------------------------------------------------------
async def test_the_contract_collectors_answers_are_the_wire_models_exactly(
    aiohttp_server, fill_queue
) -> None:
    contract = ContractCollector(probe_ip="203.0.113.7", control_errors={"http://b.example/": RATE_LIMITED})
    base = str((await aiohttp_server(contract.app(), host="127.0.0.1")).make_url("/"))
    queue, _ = fill_queue(2)
    body = {"measurements": [row.envelope.model_dump() for row in queue.pending(2)]}
    asked = {"requests": [REQUEST.model_dump(), {"input": "http://b.example/", "addrs": []}]}
    async with make_session() as session:
        geo = await session.request("GET", f"{base}api/v1/geolocate")
        ingest = await session.request("POST", f"{base}api/v1/measurements", json_body=body)
        batch = await session.request("POST", f"{base}api/v1/controls", json_body=asked)
        single = await session.request("POST", f"{base}api/v1/control", json_body=REQUEST.model_dump())
        missing = await session.request("GET", f"{base}api/v1/test-list", params={"cc": "XL"})
    # Strictly (unknown fields refused): what the contract collector says is what the collector may say.
    assert Geolocation.model_validate_json(geo.body).probe_ip == "203.0.113.7"
    ingested = IngestResponse.model_validate_json(ingest.body).results
    assert [item.status for item in ingested] == ["accepted", "accepted"]
    controls = ControlBatchResponse.model_validate_json(batch.body).results
    assert [item.error for item in controls] == [None, RATE_LIMITED]
    assert ControlObservations.model_validate_json(single.body) == controls[0].control
    assert missing.status == 404 and ErrorBody.model_validate_json(missing.body).error == NOT_FOUND
