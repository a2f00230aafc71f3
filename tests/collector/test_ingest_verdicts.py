"""Ingest's verdicts with every remembered shortcut warm (URL parses, bogon checks, plain layer verdicts, the
vouched-control check) are the reference analysis's, verdict for verdict: each golden case of
tests/analysis/test_web.py (clean pages, blockpages, DNS injection, bogons and NXDOMAIN, TLS resets and
invalid certificates, TCP failures, redirects) uploaded twice in one mixed batch, judged as ingest judges
it, against ``analyse`` run afresh with every cache emptied before each case."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from gatewatch.analysis import analyse, rules, target
from gatewatch.collector import judging as judging_module
from gatewatch.collector.ingest_checks import Judging, check_batch
from gatewatch.collector.judging import rederive_dns_answers
from gatewatch.collector.settings import Settings
from gatewatch.collector.vouched_control import ControlJudge, ControlSigner
from gatewatch.core import bogons
from gatewatch.core.bogons import is_bogon
from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.observations import DNSAnswer

from .conftest import CONTROL_SECRET, vouched


def _golden_cases() -> ModuleType:
    """tests/analysis/test_web.py, loaded by path (the test folders are not packages of one another)."""
    name = "gatewatch_golden_web_cases"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "analysis" / "test_web.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def _reference_keys(keys: WebTestKeys, routable: tuple[str, ...]) -> WebTestKeys:
    """Each DNS answer's ``bogon`` from the core check itself (no cache), ``asn`` empty (no databases)."""

    def answers(given: list[DNSAnswer]) -> list[DNSAnswer]:
        return [
            a.model_copy(
                update={"bogon": a.address is not None and is_bogon(a.address, routable), "asn": None}
            )
            for a in given
        ]

    queries = [
        q.model_copy(
            update={
                "answers": answers(q.answers),
                "replies": [r.model_copy(update={"answers": answers(r.answers)}) for r in q.replies],
            }
        )
        for q in keys.queries
    ]
    return keys.model_copy(update={"queries": queries})


def _clear_caches() -> None:
    target._parse.cache_clear()
    rules._plain_verdict.cache_clear()
    judging_module.domain_of.cache_clear()
    bogons._remembered.cache_clear()


def test_ingest_verdicts_equal_the_reference_analysis(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement]
) -> None:
    web = _golden_cases()
    assert len(web.CASES) >= 20 and {c.technique for c in web.CASES} >= {
        "dns.injection", "dns.bogon", "tls.reset", "http.blockpage", "tcp.timeout",
    }  # fmt: skip
    # The golden cases' sites and censors live in documentation ranges that they treat as public; only
    # their censor's private answer (10.10.34.35) is a bogon.
    routable = ("198.51.100.0/24", "203.0.113.0/24")
    settings = Settings(
        db="sqlite:///:memory:", control_signing_secret=CONTROL_SECRET, control_allow_net=routable
    )
    signer = ControlSigner(CONTROL_SECRET.encode())  # a fresh check cache of its own
    judging = Judging(
        settings,
        web.FINGERPRINTS,
        None,
        datetime.now(UTC),
        None,
        ControlJudge(signer, timedelta(hours=1), lambda url: None),
    )
    measurements = [
        vouched(
            make_measurement(input=case.url, test_keys=case.keys.model_copy(update={"control": case.control}))
        )
        for case in web.CASES
    ]
    _clear_caches()
    # Every case twice, interleaved: the second pass meets every cache warm with the other cases' entries.
    batch = [sign(m) for m in measurements] * 2
    items, failures = check_batch(batch, judging, None)
    assert failures == 0
    judged = [item.row.verdict_json if item.row is not None else None for item in items]

    for n, (case, m) in enumerate(zip(web.CASES, measurements, strict=True)):
        _clear_caches()
        keys = _reference_keys(m.test_keys, settings.control_allow_net)
        assert keys == rederive_dns_answers(m.test_keys, settings.control_allow_net, None), case.name
        reference = analyse(m.input, keys, case.control, web.FINGERPRINTS).model_dump_json()
        assert judged[n] == reference, case.name
        verdict = json.loads(reference)
        if not any(a.asn for q in case.keys.queries for a in q.answers):  # the collector drops given ASNs
            rules_applied = [lv["rule_id"] for lv in verdict["layers"]]
            assert (verdict["blocking"], rules_applied) == (case.blocking, case.rules), case.name
        assert judged[n + len(web.CASES)] == reference, case.name
