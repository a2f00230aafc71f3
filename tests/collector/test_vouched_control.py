"""Vouched controls: the collector signs its controls, and ingest judges only against one it can
authenticate. Real apps (SQLite), real signatures; the measurement is one the analysis calls DNS blocking
against its control (the resolver said NXDOMAIN, the control fetched the page)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import REGISTRY_KEY, STORE_KEY
from gatewatch.collector.settings import Settings
from gatewatch.collector.store import MeasurementFilter, StoredMeasurement
from gatewatch.collector.vouched_control import ControlSigner, authenticate
from gatewatch.core import envelope
from gatewatch.core.control import (
    VOUCH_HEADER,
    ControlDNS,
    ControlHTTP,
    ControlObservations,
    ControlTCP,
    vouch_from_header,
)
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSQuery
from gatewatch.core.vocabulary import CONTROL_UNVERIFIED
from gatewatch.core.wire import ControlKeys

from .conftest import CONTROL_SECRET, TEST_SIGNER

OTHER_SECRET = "another-collectors-secret-0123456789abcdef"
CONTROL = ControlObservations(
    dns=ControlDNS(addrs=["127.80.0.5"]),
    tcp_connect={"127.80.0.5:80": ControlTCP(status=True)},
    http_request=ControlHTTP(status_code=200, body_length=100, title="x"),
)
# What a lying agent would attach to make a blocked site look like a site that does not exist anywhere.
INVENTED = ControlObservations(
    dns=ControlDNS(failure="dns_nxdomain_error"), http_request=ControlHTTP(failure="x")
)


def nxdomain_measurement(
    make_measurement: Any, control: ControlObservations = CONTROL, **vouch: Any
) -> Measurement:
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab", query_type="A", t0=0.0, t=0.01,
                     failure="dns_nxdomain_error", rcode="NXDOMAIN")  # fmt: skip
    return make_measurement(test_keys=WebTestKeys(queries=[query], control=control, **vouch))


async def app_client(aiohttp_client: Any, tmp_path: Path, secret: str, name: str = "c") -> Any:
    # signed with a long-term key (identified mode): the tokens have their own tests
    settings = Settings(
        db=f"sqlite:///{tmp_path / f'{name}.db'}", control_signing_secret=secret, accept_identified=True
    )
    return await aiohttp_client(create_app(settings))


async def ingest(client: Any, key: Ed25519PrivateKey, m: Measurement) -> StoredMeasurement:
    """Sign ``m`` as it is (the ``sign`` fixture would vouch for its control) and upload it."""
    item = envelope.sign(m.to_json_bytes(), key).model_dump()
    response = await client.post("/api/v1/measurements", json={"measurements": [item]})
    assert response.status == 200, await response.text()  # never a 5xx, whatever the control
    [result] = (await response.json())["results"]
    assert result["status"] == "accepted", result
    rows, _ = await client.app[STORE_KEY].page(MeasurementFilter(), None, 100)
    return next(r for r in rows if r.measurement_uid == m.measurement_uid)


def controls_counted(client: Any, source: str, refusal: str) -> float:
    """gatewatch_ingest_controls_total for one (source, refusal): what an operator's dashboard shows."""
    labels = {"source": source, "refusal": refusal}
    return client.app[REGISTRY_KEY].get_sample_value("gatewatch_ingest_controls_total", labels) or 0.0


def test_signatures_rotate_and_old_or_future_keys_are_unknown() -> None:
    signer = ControlSigner(CONTROL_SECRET.encode(), period_seconds=3600, accepted_periods=2)
    now = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)
    first, later = (
        signer.sign("http://x.lab/", CONTROL, now),
        signer.sign("http://x.lab/", CONTROL, now + timedelta(hours=1)),
    )
    assert first.key_id != later.key_id and first.key_id.startswith(f"ck-{signer.period(now)}-")
    assert signer.public_key(first.key_id, now + timedelta(hours=2)) is not None  # two periods back: kept
    assert signer.public_key(first.key_id, now + timedelta(hours=3)) is None  # retired
    assert signer.public_key(later.key_id, now) is None  # not yet valid
    assert signer.public_key(first.key_id.replace("ck-", "xk-"), now) is None
    # the same secret derives the same keys in another process: each accepts the other's controls
    twin = ControlSigner(CONTROL_SECRET.encode(), period_seconds=3600, accepted_periods=2)
    assert twin.sign("http://x.lab/", CONTROL, now) == first
    published = signer.published(now)
    assert published.current == first.key_id and len(published.keys) == 3
    assert len(base64.b64decode(published.keys[0].public_key)) == 32


def test_every_refusal_of_authenticate(make_measurement: Any) -> None:
    now = datetime.now(UTC)
    m = nxdomain_measurement(make_measurement)
    good = TEST_SIGNER.sign(m.input, CONTROL, m.measurement_start_time)
    age = timedelta(hours=1)
    assert authenticate(good, m, TEST_SIGNER, age, now) == CONTROL
    assert authenticate(None, m, TEST_SIGNER, age, now) == "absent"
    tampered = good.model_copy(update={"control": INVENTED.model_dump_json()})
    assert authenticate(tampered, m, TEST_SIGNER, age, now) == "forged"
    assert authenticate(good.model_copy(update={"signature": "%%%"}), m, TEST_SIGNER, age, now) == "forged"
    elsewhere = TEST_SIGNER.sign("http://other.lab/", CONTROL, m.measurement_start_time)
    assert authenticate(elsewhere, m, TEST_SIGNER, age, now) == "other_url"
    old = TEST_SIGNER.sign(m.input, CONTROL, m.measurement_start_time - timedelta(hours=2))
    assert authenticate(old, m, TEST_SIGNER, age, now) == "too_old"
    stranger = ControlSigner(OTHER_SECRET.encode()).sign(m.input, CONTROL, m.measurement_start_time)
    assert authenticate(stranger, m, TEST_SIGNER, age, now) == "unknown_key"


def test_the_check_by_re_signing_agrees_with_verification(make_measurement: Any) -> None:
    """Ingest checks a vouch by signing its bytes again (Ed25519 is deterministic) and comparing, with the
    answer cached: every signature our key makes verifies, and any other signature, of the same bytes or
    by another key, is refused, before and after the same bytes were seen with a good signature."""
    now = datetime.now(UTC)
    m = nxdomain_measurement(make_measurement)
    signer = ControlSigner(CONTROL_SECRET.encode())
    good = signer.sign(m.input, CONTROL, m.measurement_start_time)
    public = signer.public_key(good.key_id, now)
    assert public is not None
    public.verify(base64.b64decode(good.signature), good.signed_bytes())  # what the check stands in for
    other_bytes = signer.sign(m.input, INVENTED, m.measurement_start_time).signature
    by_stranger = ControlSigner(OTHER_SECRET.encode()).sign(m.input, CONTROL, m.measurement_start_time)
    flipped = bytearray(base64.b64decode(good.signature))
    flipped[-1] ^= 1
    forgeries = [
        good.model_copy(update={"signature": other_bytes}),  # our signature, of another control
        good.model_copy(update={"signature": by_stranger.signature}),  # another key's, of these bytes
        good.model_copy(update={"signature": base64.b64encode(bytes(flipped)).decode()}),
        good.model_copy(update={"signature": base64.b64encode(bytes(64)).decode()}),
        good.model_copy(update={"signature": ""}),
    ]
    age = timedelta(hours=1)
    fresh = ControlSigner(CONTROL_SECRET.encode())
    assert [authenticate(f, m, fresh, age, now) for f in forgeries] == ["forged"] * len(forgeries)  # uncached
    assert authenticate(good, m, fresh, age, now) == CONTROL
    assert [authenticate(f, m, fresh, age, now) for f in forgeries] == ["forged"] * len(forgeries)  # cached
    assert authenticate(good, m, fresh, age, now) == CONTROL


def test_the_check_cache_is_bounded(make_measurement: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gatewatch.collector.vouched_control.CHECKED_CACHE_SIZE", 3)
    m = nxdomain_measurement(make_measurement)
    signer = ControlSigner(CONTROL_SECRET.encode())
    now = datetime.now(UTC)
    for seconds in range(10):
        vouch = signer.sign(m.input, CONTROL, m.measurement_start_time - timedelta(seconds=seconds))
        assert authenticate(vouch, m, signer, timedelta(hours=1), now) == CONTROL
    assert len(signer._checked) == 3


async def test_a_vouched_control_decides_not_the_one_the_agent_claims(
    aiohttp_client: Any, tmp_path: Path, agent_key: Ed25519PrivateKey, make_measurement: Any
) -> None:
    client = await app_client(aiohttp_client, tmp_path, CONTROL_SECRET)
    m = nxdomain_measurement(make_measurement, INVENTED)  # the agent claims "NXDOMAIN for everyone"
    vouch = TEST_SIGNER.sign(m.input, CONTROL, m.measurement_start_time)
    m = m.model_copy(update={"test_keys": m.test_keys.model_copy(update={"control_vouch": vouch})})
    assert controls_counted(client, "vouched", "") == 0.0  # pre-created at zero
    row = await ingest(client, agent_key, m)
    assert (row.blocking, row.flags) == ("dns", ())  # judged against the vouched control
    assert controls_counted(client, "vouched", "") == 1.0


@pytest.mark.parametrize("case", ["forged", "other_url", "replayed_old", "unknown_key", "none"])
async def test_a_control_that_cannot_be_authenticated_gives_no_verdict(
    aiohttp_client: Any, tmp_path: Path, agent_key: Ed25519PrivateKey, make_measurement: Any, case: str
) -> None:
    client = await app_client(aiohttp_client, tmp_path, CONTROL_SECRET)
    m = nxdomain_measurement(make_measurement)
    start = m.measurement_start_time
    vouch = {
        "forged": TEST_SIGNER.sign(m.input, INVENTED, start).model_copy(
            update={"control": CONTROL.model_dump_json()}
        ),
        "other_url": TEST_SIGNER.sign("http://elsewhere.lab/", CONTROL, start),
        "replayed_old": TEST_SIGNER.sign(m.input, CONTROL, start - timedelta(hours=3)),
        "unknown_key": ControlSigner(OTHER_SECRET.encode()).sign(m.input, CONTROL, start),
        "none": None,
    }[case]
    m = m.model_copy(update={"test_keys": m.test_keys.model_copy(update={"control_vouch": vouch})})
    row = await ingest(client, agent_key, m)
    assert (row.blocking, row.anomaly, row.flags) == ("null", False, (CONTROL_UNVERIFIED,))
    # counted with its reason, so that an operator sees lying agents (forged, other_url) apart from
    # old agents (absent) and clocks or replays (too_old)
    refusal = {"replayed_old": "too_old", "none": "absent"}.get(case, case)
    assert controls_counted(client, "none", refusal) == 1.0
    assert controls_counted(client, "vouched", "") == 0.0


async def test_two_collectors_with_one_secret_accept_each_others_controls(
    aiohttp_client: Any, tmp_path: Path, agent_key: Ed25519PrivateKey, make_measurement: Any, store_url: str
) -> None:
    """Two collector processes on one store (SQLite, or PostgreSQL as behind a load balancer): the control
    is asked of one and the measurement uploaded to the other; a collector with another secret cannot
    authenticate it. The single control's signature travels in a header over the body's text."""
    secret = "one-deployments-shared-secret-0123456789"

    async def on_the_store() -> Any:
        settings = Settings(db=store_url, control_signing_secret=secret, accept_identified=True)
        return await aiohttp_client(create_app(settings))

    first, second = await on_the_store(), await on_the_store()
    stranger = await app_client(aiohttp_client, tmp_path, OTHER_SECRET, "stranger")
    keys = ControlKeys.model_validate(await (await first.get("/api/v1/control-keys")).json())
    assert keys == ControlKeys.model_validate(await (await second.get("/api/v1/control-keys")).json())

    m = nxdomain_measurement(make_measurement)
    # an invalid URL is answered 400 by the control endpoint; a signed answer needs a measurable one, so the
    # vouch is made the way the endpoint makes it, by the first collector's signer
    signer = ControlSigner(secret.encode())
    vouch = signer.sign(m.input, CONTROL)
    assert vouch.key_id == keys.current
    header_form = vouch_from_header(f"key_id={vouch.key_id}; measured_at={vouch.measured_at.isoformat()}; "
                                    f"signature={vouch.signature}", m.input, vouch.control)  # fmt: skip
    assert header_form == vouch and VOUCH_HEADER.lower().startswith("gatewatch-")
    m = m.model_copy(update={"test_keys": m.test_keys.model_copy(update={"control_vouch": vouch})})
    assert (await ingest(second, agent_key, m)).blocking == "dns"
    assert (await ingest(stranger, agent_key, m)).flags == (CONTROL_UNVERIFIED,)


@pytest.mark.lab
async def test_the_control_endpoints_vouch_for_what_they_answer(
    aiohttp_client: Any, tmp_path: Path, make_measurement: Any
) -> None:
    """POST /api/v1/control: the body's text with a signature header; POST /api/v1/controls: a vouch per
    item. Both authenticate with the collector's published keys."""
    from gatewatch.lab import Lab

    async with await Lab.start() as lab:
        settings = Settings(
            db=f"sqlite:///{tmp_path / 'c.db'}",
            control_resolver=lab.resolver,
            ca_file=lab.ca_file,
            control_allow_net=("127.0.0.0/8",),
            control_signing_secret=CONTROL_SECRET,
        )
        client = await aiohttp_client(create_app(settings))
        url = lab.url("clean.lab")
        response = await client.post("/api/v1/control", json={"input": url})
        assert response.status == 200
        single = vouch_from_header(response.headers[VOUCH_HEADER], url, await response.text())
        response = await client.post("/api/v1/controls", json={"requests": [{"input": url}]})
        [item] = (await response.json())["results"]
    batch = ControlObservations.model_validate(item["control"])
    m = make_measurement(input=url)
    for vouch in (single, type(single).model_validate(item["vouch"])):
        assert authenticate(vouch, m, TEST_SIGNER, timedelta(hours=1), datetime.now(UTC)) == batch
