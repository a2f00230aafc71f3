"""Agents in two censored networks of the lab, a real collector: the verdicts the collector re-derives and
stores are the scenario's expectations for every domain, with the network the collector geolocated."""

from __future__ import annotations

import json

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.lab.lab import Lab

from .conftest import NetworkPass
from .harness import CollectorProcess, read_stored

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def stored_blocking(expected: object) -> str:
    """The store keeps ``blocking`` as text: false -> "false", "dns" -> "dns"."""
    return "false" if expected is False else "null" if expected is None else str(expected)


def test_every_measurement_was_delivered(passes: dict[str, NetworkPass]) -> None:
    for network, done in passes.items():
        assert set(done.uids) == set(done.inputs), network
        with MeasurementQueue(done.queue_path) as queue:
            counts = queue.counts()
            states = {url: queue.get(uid) for url, uid in done.uids.items()}
        assert counts["pending"] == counts["quarantined"] == counts["local"] == 0, (network, counts)
        assert all(row is not None and row.state == "sent" for row in states.values()), (network, states)


def test_stored_verdicts_match_the_scenario(
    lab: Lab, collector: CollectorProcess, passes: dict[str, NetworkPass]
) -> None:
    if lab.blackhole_mode not in (None, "bpf"):
        pytest.skip(f"blackhole mode {lab.blackhole_mode!r}: the control is dropped too on this kernel")
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    wrong = []
    for network, done in passes.items():
        info = lab.networks[network]
        for url in lab.urls():
            row = stored.get(done.uids[url])
            assert row is not None, f"{network} {url}: not in the collector's store"
            expected = stored_blocking(lab.expected(url, network))
            if row.blocking != expected:
                wrong.append(f"{network} {url}: stored {row.blocking!r}, scenario {expected!r}")
            # The agent's network comes from the collector's geolocation of the agent's own connection.
            assert (row.probe_asn, row.probe_cc) == (f"AS{info.asn}", info.cc), (network, url)
            assert row.flags == (), f"{network} {url}: flagged {row.flags}"
            assert row.anomaly == (expected != "false"), (network, url, row.anomaly)
            # The agent judged too (its verdict travels in the signed payload): both agree.
            agent_verdict = json.loads(row.payload)["test_keys"]["verdict"]
            assert agent_verdict is not None, (network, url)
            assert stored_blocking(agent_verdict["blocking"]) == row.blocking, (network, url)
    assert not wrong, "verdicts differ from the scenario:\n" + "\n".join(wrong)
