"""Fixtures for the collector: a throwaway PostgreSQL cluster, store URLs for both backends, signed
measurements."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import blindrsa, envelope, wire
from gatewatch.core.batch_token import PREFIX_BYTES, token_message
from gatewatch.core.measurement import Measurement, WebTestKeys, utc_now

# Debian keeps the server binaries off PATH, one directory per major version (newest first).
PG_BIN_DIRS = (
    *sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) if x.isdigit() else -1 for x in p.parent.name.split(".")],
        reverse=True,
    ),
    Path("/usr/local/bin"),
)


def _pg_binary(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        path = directory / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


@dataclass(frozen=True)
class PostgresCluster:
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of our own, listening on a unix socket only (no TCP port to collide on),
    stopped and deleted at the end of the session."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (looked in PATH and PG_BIN_DIRS)")
    # PostgreSQL refuses to run as root; run it as nobody in a directory nobody owns. mkdtemp under /tmp,
    # not pytest's tmp_path (its parents are private to root).
    as_user: dict[str, Any] = {"user": "nobody"} if os.geteuid() == 0 else {}
    base = Path(tempfile.mkdtemp(prefix="gatewatch-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if as_user:
        os.chmod(base, 0o755)
        for path in (base, sockets):
            shutil.chown(path, user="nobody")
    run = dict(check=True, capture_output=True, timeout=120, **as_user)
    try:
        subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], **run
        )
        options = f"-c listen_addresses='' -k {sockets} -c fsync=off -c max_connections=200"
        log = str(base / "log")
        subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"], **run)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}")
    try:
        yield PostgresCluster(sockets)
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **run | {"check": False})
        shutil.rmtree(base, ignore_errors=True)


async def create_database(cluster: PostgresCluster) -> str:
    """A fresh, empty database in the cluster; its URL."""
    name = "gw_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return cluster.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind (the same tests run against both stores)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gatewatch.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return await create_database(cluster)


@pytest.fixture(scope="session")
def agent_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


# The control-signing secret of the apps these tests build (Settings(control_signing_secret=...)): a test
# measurement's control is vouched for with it, as the collector's own control endpoint would.
CONTROL_SECRET = "tests-control-signing-secret-0123456789"
TEST_SIGNER = ControlSigner(CONTROL_SECRET.encode())


def vouched(m: Measurement) -> Measurement:
    """``m`` with its embedded control vouched for (signed as measured when ``m`` began), unless it has
    none or already carries a vouch."""
    keys = m.test_keys
    if keys.control is None or keys.control_vouch is not None:
        return m
    vouch = TEST_SIGNER.sign(m.input, keys.control, m.measurement_start_time)
    return m.model_copy(update={"test_keys": keys.model_copy(update={"control_vouch": vouch})})


def _make_measurement(**changes: Any) -> Measurement:
    """A valid measurement with an empty observation set (the analysis judges it; no network needed)."""
    now = utc_now()
    fields: dict[str, Any] = dict(
        measurement_start_time=now,
        test_start_time=now,
        test_runtime=0.1,
        input="http://x.lab/",
        probe_asn="AS64501",
        probe_cc="XL",
        test_keys=WebTestKeys(),
    )
    fields.update(changes)
    return Measurement(**fields)


@pytest.fixture
def make_measurement() -> Callable[..., Measurement]:
    return _make_measurement


@pytest.fixture
def sign(agent_key: Ed25519PrivateKey) -> Callable[..., dict[str, Any]]:
    """``sign(m=None, key=None)``: the JSON form of a measurement's envelope, as an agent uploads it."""

    def sign_(m: Measurement | None = None, key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
        m = m if m is not None else _make_measurement()
        m = vouched(m)
        return envelope.sign(m.to_json_bytes(), key or agent_key).model_dump()

    return sign_


@dataclass
class ServedCollector:
    """A collector application served by ``CollectorRunner`` on 127.0.0.1, as ``serve`` runs it (no
    handler cancellation, the JSON protocol errors), for tests that speak raw HTTP to it."""

    app: Any
    port: int

    async def raw(self, data: bytes, *, read_timeout: float = 10.0) -> bytes:
        """Send ``data`` on a new connection and read until the server closes it (bounded in time)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), read_timeout)
        finally:
            writer.close()


@pytest.fixture
async def serve_collector(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServedCollector]]]:
    """``await serve_collector(**settings)``: a served collector on SQLite; stopped at the end of the test."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from gatewatch.collector.app import create_app
    from gatewatch.collector.http_server import CollectorRunner
    from gatewatch.collector.settings import Settings

    runners: list[Any] = []

    async def serve(**overrides: Any) -> ServedCollector:
        overrides.setdefault("db", f"sqlite:///{tmp_path / f'served{len(runners)}.db'}")
        # These tests sign with a long-term key (identified mode); the token mode has its own tests.
        overrides.setdefault("accept_identified", True)
        overrides.setdefault("control_signing_secret", CONTROL_SECRET)  # the `sign` fixture's vouches
        app = create_app(Settings(**overrides), registry=CollectorRegistry())
        runner = CollectorRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return ServedCollector(app, runner.addresses[0][1])

    yield serve
    for runner in runners:
        await runner.cleanup()


# --- unlinkable batches (issue 12): tokens as an agent gets and spends them ---------------------------------
@dataclass
class HeldToken:
    """A finalised token and the ephemeral key its batch signs with."""

    ephemeral: Ed25519PrivateKey
    token: wire.BatchToken

    def batch(self, measurements: list[Measurement], key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
        """The ingest body of a batch spending this token, each item signed by ``key`` (the ephemeral key
        unless another is given)."""
        signer = key or self.ephemeral
        return {
            "measurements": [envelope.sign(m.to_json_bytes(), signer).model_dump() for m in measurements],
            "token": self.token.model_dump(),
        }


def token_request(
    long_term: Ed25519PrivateKey, epoch: int, key_id: str, blinded: list[bytes], **changes: Any
) -> dict[str, Any]:
    """A signed ``POST /api/v1/tokens`` body."""
    fields: dict[str, Any] = dict(
        public_key=base64.b64encode(envelope.public_key_bytes(long_term)).decode(),
        epoch=epoch,
        key_id=key_id,
        blinded_messages=[base64.b64encode(b).decode() for b in blinded],
        timestamp=utc_now(),
        nonce=base64.b64encode(os.urandom(18)).decode(),
    )
    fields.update(changes)
    signed = wire.TokenRequestBody(**fields).model_dump_json(exclude_none=True).encode()
    return {
        "request": base64.b64encode(signed).decode(),
        "signature": base64.b64encode(long_term.sign(signed)).decode(),
    }


async def fetch_tokens(
    client: Any, long_term: Ed25519PrivateKey, count: int = 1, *, epoch: int | None = None, **changes: Any
) -> list[HeldToken]:
    """``count`` tokens from the collector behind ``client`` (an aiohttp test client), as an agent gets
    them: blinded, signed, finalised and checked."""
    published = wire.IssuerKeysResponse.model_validate(await (await client.get("/api/v1/issuer-keys")).json())
    epoch = published.current_epoch if epoch is None else epoch
    key = next(k for k in published.keys if k.epoch == epoch)
    issuer = blindrsa.public_key_from_spki(base64.b64decode(key.public_key))
    pending = []
    for _ in range(count):
        ephemeral = Ed25519PrivateKey.generate()
        prepared = blindrsa.prepare(token_message(epoch, key.key_id, envelope.public_key_bytes(ephemeral)))
        blinded, inverse = blindrsa.blind(issuer, prepared)
        pending.append((ephemeral, prepared, blinded, inverse))
    body = token_request(long_term, epoch, key.key_id, [p[2] for p in pending], **changes)
    response = await client.post("/api/v1/tokens", json=body)
    assert response.status == 200, await response.text()
    answer = wire.TokenResponse.model_validate(await response.json())
    held = []
    for (ephemeral, prepared, _, inverse), blind_signature in zip(
        pending, answer.blind_signatures, strict=True
    ):
        signature = blindrsa.finalize(issuer, prepared, base64.b64decode(blind_signature), inverse)
        token = wire.BatchToken(
            epoch=epoch,
            key_id=key.key_id,
            ephemeral_public_key=base64.b64encode(envelope.public_key_bytes(ephemeral)).decode(),
            token=base64.b64encode(prepared[:PREFIX_BYTES] + signature).decode(),
        )
        held.append(HeldToken(ephemeral, token))
    return held
