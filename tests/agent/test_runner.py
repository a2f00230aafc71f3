"""The pass's orchestration against a contract collector on 127.0.0.1.

The probe itself is replaced by a recorded measurement (``echoing_keys``): the real probe through the
emulated network is the end-to-end test's job; here what matters is what the runner does around it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
from collections import Counter

import dns.message
import dns.rrset
import pytest

from gatewatch.agent.anonymise import SCRUBBED
from gatewatch.agent.build import bytes_received
from gatewatch.agent.collector_api import geolocate, make_session
from gatewatch.agent.minimise import BODY_POLICY_ANNOTATION, CANDIDATE_BODIES, DROPPED, FULL_BODIES
from gatewatch.agent.pacing import IN_FLIGHT_PER_SLOT
from gatewatch.agent.pseudonym import PSEUDONYM_ANNOTATION
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.run_records import LAST_RUN_KEY, RunEvent, RunOptions
from gatewatch.agent.runner import run_pass
from gatewatch.agent.settings import QueueSettings
from gatewatch.agent.testlists import TestListEntry
from gatewatch.agent.upload import RetryPolicy
from gatewatch.core.envelope import public_key_bytes
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC
from gatewatch.core.wire import Geolocation
from gatewatch.probes.config import WebConfig
from gatewatch.probes.trace import Trace

from .collector_contract import ContractCollector
from .conftest import OWN_V4, echoing_keys


@pytest.fixture
async def collector(aiohttp_server):
    contract = ContractCollector(probe_ip=OWN_V4, control_status=503)
    server = await aiohttp_server(contract.app(), host="127.0.0.1")
    contract.url = str(server.make_url("/"))  # type: ignore[attr-defined]
    return contract


@pytest.fixture
def queue(tmp_path):
    with MeasurementQueue(tmp_path / "queue.sqlite3") as q:
        yield q


def entries(n: int, hosts: int | None = None) -> list[TestListEntry]:
    return [
        TestListEntry(url=f"http://site{i % (hosts or n)}.example/{i}", category_code="NEWS")
        for i in range(n)
    ]


async def recorded(
    url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
) -> WebTestKeys:
    return echoing_keys().model_copy(update={"control": None, "verdict": None})


# The documentation range stands for the public internet here, so these runs are lab runs (``routable``
# set); route lookups go to loopback only.
LAB = {"routable": ("203.0.113.0/24",), "route_probes": ("127.0.0.1",)}


def _options(collector, **kw) -> RunOptions:
    return RunOptions(collector_urls=(collector.url,), **{**LAB, **kw})


async def test_a_pass_measures_scrubs_signs_queues_and_uploads(collector, queue, signing_key) -> None:
    events: list[RunEvent] = []
    summary = await run_pass(
        entries(5), _options(collector), queue, signing_key, measure=recorded, on_event=events.append
    )
    assert summary.completed and summary.measured == 5 and summary.no_verdict == 5
    assert summary.probe_asn == "AS64501" and summary.probe_cc == "XL"
    assert [e.kind for e in events][0] == "started" and [e.kind for e in events][-2:] == [
        "uploading",
        "uploaded",
    ]
    assert sum(e.kind == "measured" for e in events) == 5

    assert summary.upload is not None and summary.upload.accepted == 5
    assert len(collector.stored) == 5 and queue.counts()["sent"] == 5
    for payload in collector.stored.values():
        assert OWN_V4.encode() not in payload and SCRUBBED.encode() in payload
        m = Measurement.model_validate_json(payload)
        assert m.test_keys.verdict is None and m.test_keys.control_failure == "http_503"
        assert m.probe_network_name == "Lab ISP A" and m.annotations["run_type"] == "manual"
    # The control was asked for every URL, and never given the agent's own address.
    assert len(collector.seen_control_requests) == 5
    assert all(OWN_V4 not in body["addrs"] for body in collector.seen_control_requests)
    assert queue.get_meta(LAST_RUN_KEY)["measured"] == 5  # type: ignore[index]


async def test_the_control_is_asked_while_the_probe_is_still_measuring(collector, queue, signing_key) -> None:
    collector.control_status = 200
    asked_before_done: list[bool] = []

    async def resolving(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        assert on_resolved is not None
        on_resolved(["198.51.100.10", OWN_V4, "not an address"])  # DNS done; connecting comes next
        for _ in range(200):  # bounded: 2 s at most for the collector to see the request
            if collector.seen_control_requests:
                break
            await asyncio.sleep(0.01)
        asked_before_done.append(bool(collector.seen_control_requests))
        return await recorded(url, config)

    summary = await run_pass(entries(1), _options(collector), queue, signing_key, measure=resolving)
    assert asked_before_done == [True]
    assert [body["addrs"] for body in collector.seen_control_requests] == [["198.51.100.10"]]
    assert summary.no_verdict == 0 and summary.measured == 1


@pytest.mark.parametrize("keep_full_bodies", [False, True])
async def test_a_pass_stores_less_unless_the_volunteer_opted_in(
    collector, queue, signing_key, keep_full_bodies: bool
) -> None:
    options = _options(collector, upload=False, keep_full_bodies=keep_full_bodies)
    await run_pass(entries(1), options, queue, signing_key, measure=recorded)
    m = json.loads(queue.recent(1)[0].payload)
    assert m["annotations"][BODY_POLICY_ANNOTATION] == (FULL_BODIES if keep_full_bodies else CANDIDATE_BODIES)
    headers = dict(m["test_keys"]["requests"][0]["response"]["headers"])
    assert headers["X-Client-IP"] == DROPPED  # a value the analysis never reads, either way
    assert headers["Location"] == f"http://{SCRUBBED}/"  # one it reads: kept, scrubbed


async def test_withheld_network_and_country(collector, queue, signing_key) -> None:
    options = _options(collector, probe_asn=WITHHELD_ASN, probe_cc=WITHHELD_CC, upload=False)
    summary = await run_pass(entries(1), options, queue, signing_key, measure=recorded)
    m = json.loads(queue.recent(1)[0].payload)
    assert (m["probe_asn"], m["probe_cc"], m["probe_network_name"]) == (WITHHELD_ASN, WITHHELD_CC, "")
    assert summary.upload is None and queue.counts()["local"] == 1 and not collector.stored


async def test_a_verdict_is_given_only_with_a_control(collector, queue, signing_key) -> None:
    # The pass loads the analysis and its packaged fingerprints itself: both must be installed.
    collector.control_status = 200
    summary = await run_pass(entries(2), _options(collector), queue, signing_key, measure=recorded)
    assert summary.no_verdict == 0
    for payload in collector.stored.values():
        keys = Measurement.model_validate_json(payload).test_keys
        assert keys.control is not None and keys.verdict is not None and keys.control_failure is None


async def test_the_time_budget_stops_the_pass_cleanly(collector, queue, signing_key) -> None:
    async def slow(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        await asyncio.sleep(0.1)
        return WebTestKeys()

    options = _options(collector, concurrency=2, max_runtime=0.35)
    summary = await run_pass(entries(40), options, queue, signing_key, measure=slow)
    assert summary.stop_reason == "time_budget"
    assert 2 <= summary.measured < 40
    assert queue.counts()["sent"] == summary.measured  # everything measured was queued and uploaded
    assert queue.integrity_ok()


async def test_the_byte_budget_stops_the_pass(collector, queue, signing_key) -> None:
    per_url = bytes_received(echoing_keys())
    options = _options(collector, concurrency=1, max_bytes=per_url * 3)
    summary = await run_pass(entries(20), options, queue, signing_key, measure=recorded)
    assert summary.stop_reason == "byte_budget" and summary.measured == 3
    assert summary.bytes_received >= per_url * 3


async def test_concurrency_is_bounded_overall_and_per_host(collector, queue, signing_key) -> None:
    running: Counter[str] = Counter()
    peak_host: Counter[str] = Counter()
    peak = 0

    async def watched(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        nonlocal peak
        host = url.split("/")[2]
        running[host] += 1
        peak_host[host] = max(peak_host[host], running[host])
        peak = max(peak, sum(running.values()))
        await asyncio.sleep(0.01)
        running[host] -= 1
        return WebTestKeys()

    options = _options(collector, concurrency=6, per_host=2, upload=False)
    summary = await run_pass(entries(30, hosts=3), options, queue, signing_key, measure=watched)
    assert summary.measured == 30
    assert max(peak_host.values()) == 2 and peak <= 6


async def test_the_next_url_starts_once_the_network_is_done_and_memory_stays_bounded(
    collector, queue, signing_key
) -> None:
    """A measurement that has closed its connections waits for late DNS replies beside the next URLs; the
    network is used by at most ``concurrency`` at once, and at most IN_FLIGHT_PER_SLOT x concurrency are
    held in memory."""
    on_network = lingering = peak_network = peak_held = 0
    gate = asyncio.Event()

    async def lingers(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        nonlocal on_network, lingering, peak_network, peak_held
        on_network += 1
        peak_network = max(peak_network, on_network)
        peak_held = max(peak_held, on_network + lingering)
        await asyncio.sleep(0.005)  # connecting, fetching
        on_network -= 1
        lingering += 1
        on_network_done()
        await gate.wait()  # the linger: it ends only when the test says so
        lingering -= 1
        return recorded_keys()

    options = _options(collector, concurrency=2, upload=False)
    run = asyncio.ensure_future(run_pass(entries(20), options, queue, signing_key, measure=lingers))
    for _ in range(200):  # bounded: 2 s for the pass to fill its memory bound
        if lingering == IN_FLIGHT_PER_SLOT * 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert lingering == IN_FLIGHT_PER_SLOT * 2 and queue.counts()["local"] == 0  # none ended, none queued
    gate.set()
    summary = await asyncio.wait_for(run, 10)
    assert summary.completed and summary.measured == 20 and queue.counts()["local"] == 20
    assert peak_network <= 2 and peak_held <= IN_FLIGHT_PER_SLOT * 2


async def test_the_time_budget_abandons_lingering_measurements_unqueued(
    collector, queue, signing_key
) -> None:
    async def never_ends(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        on_network_done()
        await asyncio.sleep(60)
        return recorded_keys()

    options = _options(collector, concurrency=2, max_runtime=0.2, upload=False)
    summary = await asyncio.wait_for(
        run_pass(entries(40), options, queue, signing_key, measure=never_ends), 10
    )
    assert summary.stop_reason == "time_budget" and summary.measured == 0
    assert queue.counts()["local"] == 0 and queue.integrity_ok()


async def test_without_the_own_address_nothing_is_measured_for_upload(queue, signing_key) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    options = RunOptions(collector_urls=(closed,), route_probes=("127.0.0.1",))
    summary = await run_pass(entries(3), options, queue, signing_key, measure=recorded)
    assert summary.stop_reason == "own_address_unknown" and summary.measured == 0
    assert "connection_refused" in (summary.stop_detail or "")
    # An exploratory local run may go ahead (its results never leave the machine).
    local_options = RunOptions(collector_urls=(closed,), upload=False, route_probes=("127.0.0.1",))
    local = await run_pass(entries(3), local_options, queue, signing_key, measure=recorded)
    assert local.measured == 3 and queue.counts()["local"] == 3
    row = json.loads(queue.recent(1)[0].payload)
    assert row["test_keys"]["control_failure"] == "connection_refused" and row["test_keys"]["verdict"] is None
    assert (row["probe_asn"], row["probe_cc"], row["probe_network_name"]) == (WITHHELD_ASN, WITHHELD_CC, "")


async def test_a_full_queue_stops_measuring(collector, tmp_path, signing_key) -> None:
    with MeasurementQueue(tmp_path / "q.sqlite3", QueueSettings(max_unsent=2)) as queue:
        collector.fail_next = [(503, {})] * 20  # the collector is down: nothing leaves the queue
        options = _options(collector, concurrency=1, upload_retry=RetryPolicy(max_attempts=1))
        summary = await run_pass(entries(5), options, queue, signing_key, measure=recorded)
        assert summary.stop_reason == "queue_full" and summary.measured == 2
        assert queue.counts()["pending"] == 2


async def test_a_bug_in_one_measurement_does_not_end_the_pass(collector, queue, signing_key) -> None:
    async def flaky(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        if url.endswith("/1"):
            raise RuntimeError("bug")
        return WebTestKeys()

    summary = await run_pass(entries(3), _options(collector, upload=False), queue, signing_key, measure=flaky)
    assert summary.measured == 2 and summary.errors == 1 and summary.completed


async def test_source_address_binds_the_agents_own_client(collector) -> None:
    collector.probe_ip = None  # echo the connection's address, as the real collector does
    async with make_session(source_address="127.0.0.2") as session:
        found = await geolocate(session, [collector.url])
    assert isinstance(found, Geolocation) and found.probe_ip == "127.0.0.2"


GLOBAL_V6 = "2a00:5555:1:2::7"  # synthetic, never contacted: a global address for the collector to echo
LOOPBACK_ROUTES = {"route_probes": ("127.0.0.1",)}


@pytest.mark.parametrize("probe_ip", [None, "not-an-ip", "192.168.1.20", "127.0.0.1", "::", "10.0.0.1"])
async def test_no_public_probe_ip_means_no_pass_for_upload(collector, queue, signing_key, probe_ip) -> None:
    collector.probe_ip, collector.omit_probe_ip = probe_ip, probe_ip is None
    options = RunOptions(collector_urls=(collector.url,), **LOOPBACK_ROUTES)
    summary = await run_pass(entries(2), options, queue, signing_key, measure=recorded)
    assert summary.stop_reason == "own_address_unknown" and summary.measured == 0
    assert not collector.stored and not collector.seen_control_requests


async def test_a_lab_may_have_a_non_global_probe_ip(collector, queue, signing_key) -> None:
    collector.probe_ip = "127.0.0.1"
    options = RunOptions(collector_urls=(collector.url,), routable=("127.0.0.0/8",), **LOOPBACK_ROUTES)
    summary = await run_pass(entries(2), options, queue, signing_key, measure=recorded)
    assert summary.completed and len(collector.stored) == 2


async def test_an_echoed_ipv6_address_is_scrubbed_by_its_64(collector, queue, signing_key) -> None:
    collector.probe_ip = GLOBAL_V6  # a global address: no lab mode needed
    rotated = "2a00:5555:1:2:9c1:2b3:4d5:6e7f"  # a later privacy address of the same /64

    async def echo_v6(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        return echoing_keys(v6=rotated).model_copy(update={"control": None, "verdict": None})

    options = RunOptions(collector_urls=(collector.url,), **LOOPBACK_ROUTES)
    summary = await run_pass(entries(1), options, queue, signing_key, measure=echo_v6)
    assert summary.completed and len(collector.stored) == 1
    payload = next(iter(collector.stored.values())).decode().lower()
    assert "2a00:5555:1:2" not in payload and SCRUBBED in payload


async def test_an_address_change_mid_pass_keeps_the_pass_local(collector, queue, signing_key) -> None:
    collector.next_probe_ips = [OWN_V4, "203.0.113.99"]  # the laptop moved while measuring
    summary = await run_pass(entries(3), _options(collector), queue, signing_key, measure=recorded)
    assert summary.measured == 3 and summary.stop_reason == "network_changed"
    assert "kept local" in (summary.stop_detail or "")
    assert not collector.stored and queue.counts()["local"] == 3 and queue.counts()["pending"] == 0
    row = queue.get(summary.results[0].measurement_uid)
    assert row is not None and row.reason == "the public address changed during the pass"


async def test_a_new_privacy_address_in_the_same_64_is_not_a_change(collector, queue, signing_key) -> None:
    collector.next_probe_ips = [GLOBAL_V6, "2a00:5555:1:2::8"]
    options = RunOptions(collector_urls=(collector.url,), **LOOPBACK_ROUTES)
    summary = await run_pass(entries(2), options, queue, signing_key, measure=recorded)
    assert summary.completed and len(collector.stored) == 2


class _PointerResolver(asyncio.DatagramProtocol):
    """Answers PTR questions on loopback from ``names`` (reverse-pointer name -> host name); counts them."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names, self.asked = names, []

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        query = dns.message.from_wire(data)
        question = query.question[0].name.to_text(omit_final_dot=True)
        self.asked.append(question)
        reply = dns.message.make_response(query)
        if question in self.names:
            reply.answer.append(
                dns.rrset.from_text(question + ".", 60, "IN", "PTR", self.names[question] + ".")
            )
        self.transport.sendto(reply.to_wire(), addr)


async def test_the_reverse_dns_name_of_our_address_is_scrubbed_too(collector, queue, signing_key) -> None:
    name = "customer-4711.dyn.isp.example"  # does not spell the address out: only the lookup reveals it
    pointer = ipaddress.ip_address(OWN_V4).reverse_pointer
    transport, responder = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _PointerResolver({pointer: name}), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]

    async def echo_name(
        url: str, config: WebConfig, *, trace: Trace | None = None, on_resolved=None, on_network_done=None
    ) -> WebTestKeys:
        keys = recorded_keys()
        response = keys.requests[0].response
        assert response is not None
        # In a header whose value is kept (Location: fingerprints read it): scrubbing is what removes it.
        location = ("Location", f"http://{name.upper()}/welcome")
        echoed = response.model_copy(update={"headers": [*response.headers, location]})
        return keys.model_copy(
            update={"requests": [keys.requests[0].model_copy(update={"response": echoed})]}
        )

    try:
        options = _options(collector, resolver=f"127.0.0.1:{port}")
        summary = await run_pass(entries(1), options, queue, signing_key, measure=echo_name)
    finally:
        transport.close()
    assert responder.asked == [pointer]  # asked once, for our public address only
    assert summary.completed and len(collector.stored) == 1
    payload = next(iter(collector.stored.values())).decode()
    assert name not in payload.lower() and '["Location","http://[scrubbed]/welcome"]' in payload.replace(
        " ", ""
    )


def recorded_keys() -> WebTestKeys:
    return echoing_keys().model_copy(update={"control": None, "verdict": None})


# --- issue 12: unlinkable by default, identified on request -------------------------------------------------
async def test_by_default_a_pass_uploads_token_batches_without_the_long_term_key(
    collector, queue, signing_key
) -> None:
    summary = await run_pass(
        entries(4), _options(collector, upload_batch=2), queue, signing_key, measure=recorded
    )
    assert summary.upload is not None and summary.upload.accepted == 4
    assert collector.token_batches == 2 and collector.tokens_issued >= 2  # fetched before measuring
    # Queued unsigned (the batch signs); each measurement's test_start_time is its own start, so nothing
    # pass-wide links the pass's batches.
    rows = queue.recent(10)
    assert {(row.signature, row.public_key) for row in rows} == {("", "")}
    for payload in collector.stored.values():
        m = Measurement.model_validate_json(payload)
        assert m.test_start_time == m.measurement_start_time


async def test_identified_mode_signs_with_the_long_term_key_and_keeps_the_pass_start(
    collector, queue, signing_key
) -> None:
    summary = await run_pass(
        entries(3), _options(collector, identified=True), queue, signing_key, measure=recorded
    )
    assert summary.upload is not None and summary.upload.accepted == 3
    assert collector.token_batches == 0 and collector.tokens_issued == 0
    own = base64.b64encode(public_key_bytes(signing_key)).decode()
    assert {row.public_key for row in queue.recent(10)} == {own}
    starts = {Measurement.model_validate_json(p).test_start_time for p in collector.stored.values()}
    assert len(starts) == 1


async def test_the_network_pseudonym_is_given_only_when_asked_for(collector, queue, signing_key) -> None:
    await run_pass(entries(2), _options(collector), queue, signing_key, measure=recorded)
    assert all(
        PSEUDONYM_ANNOTATION not in Measurement.model_validate_json(p).annotations
        for p in collector.stored.values()
    )
    options = _options(collector, upload_batch=1, pseudonym_secret=bytes(range(32)))
    await run_pass(entries(3), options, queue, signing_key, measure=recorded)
    values = {
        Measurement.model_validate_json(p).annotations.get(PSEUDONYM_ANNOTATION)
        for p in collector.stored.values()
    }
    assert len(values - {None}) == 1  # three batches, one (network, week): one value
