"""Ingest's verdicts with every remembered shortcut warm (URL parses, bogon checks, plain layer verdicts, the
vouched-control check) are the reference analysis's, verdict for verdict: each golden case of
tests/analysis/test_web.py (clean pages, blockpages, DNS injection, bogons and NXDOMAIN, TLS resets and
invalid certificates, TCP failures, redirects) uploaded twice in one mixed batch, judged as ingest judges
it, against ``analyse`` run afresh with every cache emptied before each case."""

from __future__ import annotations

import importlib.util
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
from gatewatch.core.measurement import Measurement

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


def _clear_caches() -> None:
    target._parse.cache_clear()
    rules._plain_verdict.cache_clear()
    judging_module.domain_of.cache_clear()
    judging_module._remembered_bogon.cache_clear()


def test_ingest_verdicts_equal_the_reference_analysis(
    sign: Callable[..., dict[str, Any]], make_measurement: Callable[..., Measurement]
) -> None:
    web = _golden_cases()
    assert len(web.CASES) >= 20 and {c.technique for c in web.CASES} >= {
        "dns.injection", "dns.bogon", "tls.reset", "http.blockpage", "tcp.timeout",
    }  # fmt: skip
    settings = Settings(db="sqlite:///:memory:", control_signing_secret=CONTROL_SECRET)
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
        keys = rederive_dns_answers(m.test_keys, settings.control_allow_net, None)
        reference = analyse(m.input, keys, case.control, web.FINGERPRINTS).model_dump_json()
        assert judged[n] == reference, case.name
        assert judged[n + len(web.CASES)] == reference, case.name
