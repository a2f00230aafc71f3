"""Storing less changes no verdict: over every lab scenario URL and censored network, the judgement of the
minimised measurement (what the agent uploads and the collector re-judges) is the judgement of the full
one, and the minimised measurement keeps a body only where the policy says (blockpages, small pages that
differ from the control)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gatewatch.agent.build import build_measurement
from gatewatch.agent.minimise import StoragePolicy, minimise
from gatewatch.agent.testlists import TestListEntry
from gatewatch.analysis import analyse, load_default_fingerprints
from gatewatch.core.measurement import Measurement, utc_now
from gatewatch.core.wire import Geolocation
from gatewatch.lab import Lab
from gatewatch.lab.demo import DemoRow, measure_lab

pytestmark = pytest.mark.lab


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rows() -> AsyncIterator[list[DemoRow]]:
    async with await Lab.start() as lab:
        yield await measure_lab(lab)


def _full(row: DemoRow) -> Measurement:
    now = utc_now()
    keys = row.keys.model_copy(update={"control": row.control, "verdict": row.verdict})
    where = Geolocation(probe_asn="AS64501", probe_cc="XL", probe_network_name="lab", probe_ip="")
    return build_measurement(
        TestListEntry(row.url), keys, started=now, pass_started=now, runtime=0.1, geolocation=where
    )


def test_minimised_and_full_measurements_get_the_same_verdict(rows: list[DemoRow]) -> None:
    db = load_default_fingerprints()
    policy = StoragePolicy.for_fingerprints(db)
    differing = {}
    for row in rows:
        full = _full(row)
        small = minimise(full, policy, db)
        assert small.test_keys.control is not None
        verdict = analyse(row.url, small.test_keys, small.test_keys.control, db)
        if verdict != analyse(row.url, full.test_keys, row.control, db):
            differing[(row.network, row.domain)] = (verdict.blocking, row.verdict.blocking)
        assert verdict.blocking == row.expected, (row.network, row.domain)
    assert not differing
    assert len(rows) >= 20


def test_the_lab_blockpage_is_kept_and_clean_pages_are_not(rows: list[DemoRow]) -> None:
    db = load_default_fingerprints()
    policy = StoragePolicy.for_fingerprints(db)
    by_key = {(r.network, r.domain): r for r in rows}
    blockpage = minimise(_full(by_key[("isp-a", "isp-blockpage.lab")]), policy, db).test_keys.requests[-1]
    assert blockpage.response is not None and blockpage.response.body
    for network in ("isp-a", "isp-b"):
        clean = minimise(_full(by_key[(network, "clean.lab")]), policy, db).test_keys.requests[-1]
        assert clean.response is not None
        assert clean.response.body is None
        assert clean.response.body_sha256 and clean.response.body_length > 0
