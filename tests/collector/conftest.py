"""Fixtures for the collector: a throwaway PostgreSQL cluster, store URLs for both backends, signed
measurements."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.collector.vouched_control import ControlSigner
from gatewatch.core import envelope
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
