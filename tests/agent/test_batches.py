"""The agent's wallet and sealed batches (issue 12) against the real collector on 127.0.0.1: tokens fetched
blinded, one token and ephemeral key per batch, a batch recorded before it is sent and resent identically
after a crash."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from gatewatch.agent.batches import TokenBatches
from gatewatch.agent.collector_api import api_url, make_session
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.tokens import TokenWallet, TopUpPolicy, WalletError
from gatewatch.agent.upload import RetryPolicy, Uploader, _BatchBody
from gatewatch.collector.app import create_app
from gatewatch.collector.appkeys import STORE_KEY
from gatewatch.collector.settings import Settings
from gatewatch.collector.store import MeasurementFilter
from gatewatch.core.envelope import public_key_bytes
from gatewatch.core.vocabulary import SCHEME_BLIND_TOKEN
from gatewatch.core.wire import IssuerKey

from .conftest import make_measurement

FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def collector(aiohttp_server, tmp_path: Path, registry: CollectorRegistry):
    app = create_app(
        Settings(db=f"sqlite:///{tmp_path / 'collector.db'}", token_quota=100), registry=registry
    )
    server = await aiohttp_server(app, host="127.0.0.1")
    return server


@pytest.fixture
def queue(tmp_path: Path):
    with MeasurementQueue(tmp_path / "queue.sqlite3") as q:
        yield q


def unsigned(queue: MeasurementQueue, n: int) -> list[str]:
    uids = []
    for i in range(n):
        m = make_measurement(url=f"http://site{i}.example/")
        queue.enqueue(m.measurement_uid, m.to_json_bytes(), None)
        uids.append(m.measurement_uid)
    return uids


async def stored_rows(server) -> list:
    rows, _ = await server.app[STORE_KEY].page(MeasurementFilter(), None, 1000)
    return rows


async def test_an_upload_pass_spends_one_token_and_one_ephemeral_key_per_batch(collector, queue) -> None:
    long_term = Ed25519PrivateKey.generate()
    base = str(collector.make_url("/"))
    wallet = TokenWallet(queue, rng=random.Random(3))
    async with make_session() as session:
        added = await wallet.top_up(session, [base], long_term, TopUpPolicy(low=4, high=8))
        assert 4 <= added <= 8 and wallet.usable() == added
        uids = unsigned(queue, 7)
        batches = TokenBatches(queue, wallet)
        uploader = Uploader(queue, [base], session, batch_size=3, policy=FAST, batches=batches)
        report = await uploader.upload_pending()
    assert (report.accepted, report.still_pending) == (7, 0)
    assert wallet.usable() == added - 3  # three batches: 3 + 3 + 1
    rows = await stored_rows(collector)
    assert sorted(row.measurement_uid for row in rows) == sorted(uids)
    assert {row.signature_scheme for row in rows} == {SCHEME_BLIND_TOKEN}
    assert len({row.ephemeral_key for row in rows}) == 3 and len({row.token for row in rows}) == 3
    assert public_key_bytes(long_term) not in {row.ephemeral_key for row in rows}
    assert queue.db.execute("SELECT count(*) FROM batches").fetchone() == (0,)  # all answered, forgotten


async def test_a_batch_sent_before_a_crash_is_resent_identically_and_answered_duplicate(
    collector, queue, registry
) -> None:
    long_term = Ed25519PrivateKey.generate()
    base = str(collector.make_url("/"))
    wallet = TokenWallet(queue)
    async with make_session() as session:
        await wallet.top_up(session, [base], long_term, TopUpPolicy(low=2, high=2))
        uids = unsigned(queue, 3)
        batches = TokenBatches(queue, wallet)
        sealed = batches.seal(queue.pending(10, unbatched=True))
        assert sealed is not None
        # The first attempt reaches the collector, which stores it; the agent dies before reading the answer.
        response = await session.request(
            "POST", api_url(base, "measurements"), body=_BatchBody(sealed), content_type="application/json"
        )
        assert response.status == 200
        assert queue.counts()["pending"] == 3
    # A new process: the same queue file, the batch found as it was sealed.
    reopened = MeasurementQueue(queue.path)
    try:
        batches = TokenBatches(reopened, TokenWallet(reopened))
        (again,) = batches.open_batches()
        assert [row.envelope for row in again] == [
            row.envelope for row in sealed
        ] and again.token == sealed.token
        async with make_session() as session:
            report = await Uploader(reopened, [base], session, policy=FAST, batches=batches).upload_pending()
        assert (report.accepted, report.duplicates, report.still_pending) == (0, 3, 0)
        assert reopened.counts()["sent"] == 3
    finally:
        reopened.close()
    assert sorted(row.measurement_uid for row in await stored_rows(collector)) == sorted(uids)
    assert registry.get_sample_value("gatewatch_ingest_batches_total", {"result": "replayed_batch"}) == 1


async def test_a_refused_token_dissolves_the_batch_and_a_new_token_delivers_it(collector, queue) -> None:
    long_term = Ed25519PrivateKey.generate()
    base = str(collector.make_url("/"))
    wallet = TokenWallet(queue)
    async with make_session() as session:
        await wallet.top_up(session, [base], long_term, TopUpPolicy(low=1, high=1))
        # Spoil the only token: its signature no longer verifies.
        (row_id, token) = queue.db.execute("SELECT id, token FROM tokens").fetchone()
        queue.db.execute("UPDATE tokens SET token = ? WHERE id = ?", (bytes(token[:-1]) + b"\0", row_id))
        uids = unsigned(queue, 2)
        batches = TokenBatches(queue, wallet)
        uploader = Uploader(queue, [base], session, policy=FAST, batches=batches)
        first = await uploader.upload_pending()
        assert first.still_pending == 2 and first.quarantined == 0
        assert first.last_error is not None and first.last_error.endswith("forged_token")
        assert batches.open_batches() == []  # dissolved: nothing of it was stored
        await wallet.top_up(session, [base], long_term, TopUpPolicy(low=1, high=1))
        second = await uploader.upload_pending()
    assert (second.accepted, second.still_pending) == (2, 0)
    assert sorted(r.measurement_uid for r in await stored_rows(collector)) == sorted(uids)


async def test_without_tokens_nothing_is_sent_and_everything_waits(collector, queue) -> None:
    base = str(collector.make_url("/"))
    unsigned(queue, 2)
    async with make_session() as session:
        uploader = Uploader(
            queue, [base], session, policy=FAST, batches=TokenBatches(queue, TokenWallet(queue))
        )
        report = await uploader.upload_pending()
    assert report.still_pending == 2 and report.requests == 0
    assert await stored_rows(collector) == []


async def test_an_issuer_key_is_pinned_per_epoch(collector, queue) -> None:
    wallet = TokenWallet(queue)
    async with make_session() as session:
        answer = await wallet.fetch_keys(session, [str(collector.make_url("/"))])
    key = next(k for k in answer.keys if k.epoch == answer.current_epoch)
    assert wallet.pin(key)  # the same key again: fine
    other = IssuerKey(**(key.model_dump() | {"key_id": "ab" * 32}))
    assert not wallet.pin(other)  # another key for a pinned epoch: refused
    assert wallet.pinned(key.epoch)[0] == key.key_id  # type: ignore[index]


async def test_a_collector_that_is_not_reachable_gives_a_wallet_error(queue) -> None:
    async with make_session() as session:
        with pytest.raises(WalletError):
            await TokenWallet(queue).top_up(session, ["http://127.0.0.1:9/"], Ed25519PrivateKey.generate())


def test_the_top_up_policy_keeps_between_the_water_marks() -> None:
    policy = TopUpPolicy(low=4, high=16)
    rng = random.Random(7)
    assert policy.wanted(4, rng) == 0
    counts = {policy.wanted(1, rng) for _ in range(200)}
    assert min(counts) >= 3 and max(counts) <= 15 and len(counts) > 5  # randomised, never over high
