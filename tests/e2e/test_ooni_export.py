"""The ``ooni`` export of an end-to-end lab run, read with OONI's own loader (``oonidata``): every row
loads as Web Connectivity, with blocking/accessible equal to the collector's stored verdict.

``oonidata`` 0.3.0 pins old releases of cryptography and click, so it is installed without its
dependencies (``.ci/run``); what its measurement models need (mashumaro, pyOpenSSL) is in the test extra.
The loader used is ``oonidata.dataclient.load_measurement``'s own logic: the model is chosen by
``test_name`` from ``NETTEST_MODELS`` and built with ``from_dict`` (its module also imports boto3 and the
download machinery, which this test has no use for).
"""

from __future__ import annotations

import gzip
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatewatch.analysis import load_default_fingerprints
from gatewatch.collector.import_ooni import judge_ooni
from gatewatch.core import vocabulary as V
from gatewatch.core.vocabulary import OONI_IMPORT, blocking_value
from gatewatch.lab.scripts import COLLECTOR, console_script

from .conftest import NetworkPass
from .harness import CollectorProcess, read_stored

nettests = pytest.importorskip(
    "oonidata.models.nettests", reason="oonidata is not installed (pip install --no-deps oonidata==0.3.0)"
)
dataformats = pytest.importorskip("oonidata.models.dataformats")

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def load_measurement(msmt: dict[str, Any]) -> Any:
    """oonidata.dataclient.load_measurement (0.3.0), minus its file reading."""
    model = nettests.NETTEST_MODELS.get(msmt["test_name"], nettests.BaseMeasurement)
    return model.from_dict(msmt)


def test_every_exported_row_loads_as_web_connectivity(
    collector: CollectorProcess, passes: dict[str, NetworkPass]
) -> None:
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    uploaded = {uid for done in passes.values() for uid in done.uids.values()}
    assert uploaded <= set(stored)
    status, body = collector.get("/api/v1/measurements/export?format=ooni")
    assert status == 200, body[:500]
    lines = body.splitlines()
    assert len(lines) == len(stored) >= 20
    seen_https = seen_blocked_connect = seen_rcode = 0
    for line in lines:
        raw = json.loads(line)
        loaded = load_measurement(raw)
        assert isinstance(loaded, nettests.WebConnectivity), raw["test_name"]
        row = stored[loaded.measurement_uid]
        keys = loaded.test_keys
        expected = blocking_value(row.blocking)
        assert keys.blocking == expected, (row.input, keys.blocking, row.blocking)
        assert keys.accessible == (None if expected is None else expected is False), row.input
        assert loaded.report_id and loaded.probe_cc == row.probe_cc and loaded.probe_asn == row.probe_asn
        assert loaded.probe_ip is None and "probe_ip" not in raw
        # The shapes the issue found wrong, as OONI's models read them.
        for query in keys.queries or []:
            assert query.rcode is None or isinstance(query.rcode, int)
            seen_rcode += query.rcode is not None
        for connect in keys.tcp_connect or []:
            assert isinstance(connect.status, dataformats.TCPConnectStatus)
            seen_blocked_connect += bool(connect.status.blocked)
        for handshake in keys.tls_handshakes or []:
            seen_https += 1
            for cert in handshake.peer_certificates or []:
                assert isinstance(cert, dataformats.BinaryData) and cert.format == "base64"
        for transaction in keys.requests or []:
            assert isinstance(transaction.request.headers, dict)
            if transaction.response is not None:
                assert isinstance(transaction.response.headers, dict)
                assert transaction.response.headers_list_str is not None
        # gatewatch's own verdict, under its one extra key.
        assert raw["test_keys"]["gatewatch"]["analysis"]["fingerprint_key"] == row.fingerprint_key
    assert seen_https and seen_rcode and seen_blocked_connect


def test_the_ooni_export_imported_back_gets_the_same_verdicts(
    collector: CollectorProcess, passes: dict[str, NetworkPass], tmp_path: Path
) -> None:
    """import-ooni over the export of the lab run: gatewatch's analysis, run again on OONI's shapes, reaches
    the verdict the collector reached on the native measurements (nothing the verdicts need is lost)."""
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    status, body = collector.get("/api/v1/measurements/export?format=ooni")
    assert status == 200
    export = tmp_path / "lab.ooni.jsonl.gz"
    export.write_bytes(gzip.compress(body))
    db = tmp_path / "imported.db"
    done = subprocess.run(
        [console_script(COLLECTOR), "import-ooni", "--db", f"sqlite:///{db}", str(export)],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    imported = read_stored(db)
    assert len(imported) == len(stored)
    differ = []
    for row in imported:
        payload = json.loads(row.payload)
        original = stored[payload["annotations"]["ooni_measurement_uid"]]
        assert row.flags == (OONI_IMPORT,), row.flags
        assert (row.probe_cc, row.probe_asn) == (original.probe_cc, original.probe_asn)
        was, now = (original.blocking, original.technique), (row.blocking, row.technique)
        if was != now:
            differ.append(f"{original.input}: {was} -> {now}")
    assert not differ, "\n".join(differ)


def test_ooni_fields_alone_reach_the_same_blocking(
    collector: CollectorProcess, passes: dict[str, NetworkPass]
) -> None:
    """Without gatewatch's extra key (as OONI's own data is), every row still gets the collector's blocking
    value; only the technique of an injected DNS answer differs (OONI keeps one reply per query, so a second,
    forged reply cannot be seen: the forged address is judged by what it is instead)."""
    stored = {row.measurement_uid: row for row in read_stored(collector.db_path)}
    status, body = collector.get("/api/v1/measurements/export?format=ooni")
    assert status == 200
    fingerprints = load_default_fingerprints()
    now = datetime.now(UTC)
    for line in body.splitlines():
        doc = json.loads(line)
        del doc["test_keys"]["gatewatch"]
        original = stored[doc["measurement_uid"]]
        row = judge_ooni(json.dumps(doc).encode(), fingerprints, (), now)
        assert row.blocking == original.blocking, original.input
        if original.technique != V.DNS_INJECTION:
            assert row.technique == original.technique, original.input
