"""The local page over real HTTP on loopback: each refusal of the gate, then what each page does to the
agent's own files (consent, key, agent.toml, the queue, the export). The browser's view is in
test_browser.py."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewatch.agent.consent import CONSENT_VERSION, load_consent
from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.settings import load_settings
from gatewatch.agent.ui.http_server import MAX_BODY_BYTES, MAX_HEADERS
from gatewatch.agent.ui.security import CSP
from gatewatch.core.envelope import sign
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC

from ..conftest import make_measurement
from .served import TOKEN, UiServer, consent_form

SETTINGS_FORM = (
    "collector_urls=http%3A%2F%2F127.0.0.1%3A9%2F&skip_categories=LGBT&skip_categories=POLR"
    "&max_runtime_minutes=20&max_megabytes=5&concurrency=3&interval_hours=12&jitter_minutes=10&upload=on"
)


def _consent(server: UiServer) -> None:
    assert server.post("/consent", consent_form()).status == 303


# -- the gate: one test per refusal ---------------------------------------------------------------


def test_every_answer_carries_the_security_headers(ui_server: UiServer) -> None:
    for answer in (
        ui_server.request("GET", "/consent"),
        ui_server.request("GET", "/consent", cookie=False),  # a refusal too
        ui_server.request("GET", "/static/app.js"),
    ):
        assert answer.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_request_without_the_token_is_refused(ui_server: UiServer) -> None:
    for path in ("/", "/consent", "/run", "/api/progress", "/export.json", "/static/app.js"):
        answer = ui_server.request("GET", path, cookie=False)
        assert answer.status == 403, path
        assert json.loads(answer.body)["error"] == "no_token"
    wrong = ui_server.request("GET", "/run", cookie=False, headers={"Cookie": ui_server.cookie + "x"})
    assert wrong.status == 403
    assert ui_server.request("GET", "/run?token=nope", cookie=False).status == 403
    page = ui_server.request("GET", "/run", cookie=False, headers={"Accept": "text/html,*/*"})
    assert page.status == 403 and page.headers["content-type"].startswith("text/html")
    assert "no_token" in page.text and TOKEN not in page.text and "<script" not in page.text


def test_the_first_visit_moves_the_token_to_a_cookie(ui_server: UiServer) -> None:
    answer = ui_server.request("GET", f"/?token={TOKEN}", cookie=False)
    assert answer.status == 303 and answer.headers["location"] == "/"  # the token leaves the address bar
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(ui_server.cookie + ";") and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_a_foreign_host_is_refused_even_with_the_token(ui_server: UiServer) -> None:
    """DNS rebinding: a page on evil.example re-resolved to 127.0.0.1 sends its own name as Host."""
    for host in (f"evil.example:{ui_server.port}", "127.0.0.1", f"127.0.0.1:{ui_server.port + 1}", ""):
        answer = ui_server.request("GET", f"/run?token={TOKEN}", host=host)
        assert answer.status == 403, host
        assert json.loads(answer.body)["error"] == "bad_host"
    assert ui_server.request("GET", "/consent", host=f"localhost:{ui_server.port}").status == 200


def test_a_post_needs_the_token_in_the_form_or_a_header(ui_server: UiServer) -> None:
    """CSRF: the cookie alone (which a browser adds by itself) does not change anything."""
    answer = ui_server.request("POST", "/consent", body=consent_form())
    assert answer.status == 403 and json.loads(answer.body)["error"] == "no_form_token"
    assert load_consent(ui_server.data_dir / "consent.json") is None
    answer = ui_server.request("POST", "/api/heartbeat", headers={"X-Gatewatch-Token": TOKEN})
    assert answer.status == 204


def test_a_post_from_another_origin_is_refused(ui_server: UiServer) -> None:
    answer = ui_server.post("/consent", consent_form(), headers={"Origin": "http://evil.example"})
    assert answer.status == 403 and json.loads(answer.body)["error"] == "cross_origin"
    assert load_consent(ui_server.data_dir / "consent.json") is None
    cross = ui_server.post(
        "/consent", consent_form(), headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status == 403 and json.loads(cross.body)["error"] == "cross_origin"
    assert load_consent(ui_server.data_dir / "consent.json") is None
    own = ui_server.post("/consent", consent_form(), headers={"Origin": f"http://{ui_server.host}"})
    assert own.status == 303


def test_state_changes_are_post_only(ui_server: UiServer) -> None:
    _consent(ui_server)
    for path in ("/run/start", "/run/cancel", "/queue/retry", "/quit"):
        assert ui_server.request("GET", path).status == 405, path
    assert ui_server.request("PUT", "/settings", body=b"x").status == 405
    assert ui_server.request("DELETE", "/run").status == 405


def test_oversized_requests_are_refused(ui_server: UiServer) -> None:
    big = ui_server.post("/settings", "collector_urls=" + "a" * (MAX_BODY_BYTES + 10))
    assert big.status == 413
    many = {f"X-Filler-{i}": "1" for i in range(MAX_HEADERS + 1)}
    assert ui_server.request("GET", "/consent", headers=many).status == 431
    assert ui_server.request("GET", "/consent", headers={"X-Long": "a" * 20_000}).status == 431
    assert ui_server.request("GET", "/consent").status == 200  # and the page goes on


# -- what the pages do --------------------------------------------------------------------------------


def test_onboarding_asks_the_quiz_then_records_consent_and_makes_the_key(ui_server: UiServer) -> None:
    assert ui_server.request("GET", "/run").headers["location"] == "/consent"  # no consent yet
    page = ui_server.request("GET", "/consent").text
    assert "Cambodia" in page and "access to the collector" in page and 'name="q0"' in page
    wrong = ui_server.post("/consent", consent_form().replace("q0=0", "q0=1"))
    assert wrong.status == 400 and 'id="q0-why"' in wrong.text and 'id="q1-why"' not in wrong.text
    assert ui_server.post("/consent", "q0=0&q1=1&q2=1").status == 400  # the box not ticked
    assert load_consent(ui_server.data_dir / "consent.json") is None
    answer = ui_server.post("/consent", consent_form())
    assert answer.status == 303 and answer.headers["location"].startswith("/settings")
    record = load_consent(ui_server.data_dir / "consent.json")
    assert record is not None and record.version == CONSENT_VERSION
    assert (ui_server.data_dir / "signing-key.pem").exists()
    assert ui_server.request("GET", "/run").status == 200


def test_settings_are_written_to_agent_toml_and_keep_other_keys(ui_server: UiServer) -> None:
    _consent(ui_server)
    toml = ui_server.data_dir / "agent.toml"
    toml.write_text('test_list_cc = "KH"\nper_host_concurrency = 1\n[queue]\nmax_unsent = 99\n')
    answer = ui_server.post("/settings", SETTINGS_FORM + "&withhold=on")
    assert answer.status == 303, answer.text
    written = tomllib.loads(toml.read_text())
    assert written["test_list_cc"] == "KH" and written["queue"] == {"max_unsent": 99}
    settings = load_settings(toml)
    assert settings.collector_urls == ["http://127.0.0.1:9/"]
    assert settings.skip_categories == ["LGBT", "POLR"]
    assert settings.max_runtime == 1200 and settings.max_bytes == 5_000_000 and settings.concurrency == 3
    assert settings.daemon.interval == 12 * 3600 and settings.daemon.jitter == 600
    assert settings.upload is True and settings.ipv6 is False
    assert (settings.probe_asn, settings.probe_cc) == (WITHHELD_ASN, WITHHELD_CC)
    page = ui_server.request("GET", "/settings?saved=1").text
    assert "Saved to agent.toml" in page and 'value="LGBT" checked' in page


def test_bad_settings_are_refused_with_the_reason_and_the_file_is_untouched(ui_server: UiServer) -> None:
    _consent(ui_server)
    toml = ui_server.data_dir / "agent.toml"
    toml.write_text('collector_urls = ["http://127.0.0.1:9/"]\n')
    good = dict(parse_qsl(SETTINGS_FORM))
    for name, bad in (("collector_urls", "ftp://x"), ("max_runtime_minutes", "-1"), ("concurrency", "1000"),
                      ("concurrency", "2.5"), ("interval_hours", "nan"), ("max_megabytes", "0")):  # fmt: skip
        answer = ui_server.post("/settings", urlencode({**good, name: bad}))
        assert answer.status == 400 and "Not saved" in answer.text, (name, bad)
    assert toml.read_text() == 'collector_urls = ["http://127.0.0.1:9/"]\n'


def _queue_some(data_dir: Path, n: int) -> list[str]:
    key = Ed25519PrivateKey.generate()
    uids = []
    with MeasurementQueue(data_dir / "queue.sqlite3") as queue:
        for i in range(n):
            m = make_measurement(url=f"http://site{i}.example/")
            payload = m.to_json_bytes()
            queue.enqueue(m.measurement_uid, payload, sign(payload, key))
            uids.append(m.measurement_uid)
        queue.quarantine(uids[0], "too_old")
    return uids


def test_results_queue_and_export_show_the_volunteers_own_measurements(ui_server: UiServer) -> None:
    _consent(ui_server)
    uids = _queue_some(ui_server.data_dir, 3)
    runs = ui_server.request("GET", "/results").text
    assert "3 sites" in runs
    run_link = runs.split('href="/results?run=')[1].split('"')[0]
    page = ui_server.request("GET", f"/results?run={run_link}").text
    assert page.count("<details>") == 3 and "http://site2.example/" in page
    detail = ui_server.request("GET", f"/measurement?uid={quote(uids[1])}").text
    assert "Not uploaded yet" in detail and "http://site1.example/" in detail
    assert ui_server.request("GET", "/measurement?uid=nope").status == 404
    nothing_sent = json.loads(ui_server.request("GET", f"/api/collector-verdicts?run={run_link}").body)
    assert nothing_sent == {"verdicts": {}, "failure": None}  # nothing uploaded: the collector is not asked
    queue = ui_server.request("GET", "/queue").text
    assert 'id="count-pending">2<' in queue and 'id="count-quarantined">1<' in queue and "too_old" in queue
    export = ui_server.request("GET", "/export.json")
    assert export.headers["content-type"] == "application/json"
    assert export.headers["content-disposition"].startswith('attachment; filename="gatewatch-results-')
    rows = json.loads(export.body)["measurements"]
    assert {row["measurement_uid"] for row in rows} == set(uids)
    assert {row["upload_state"] for row in rows} == {"pending", "quarantined"}
    assert all(row["measurement"]["input"].startswith("http://site") for row in rows)


def test_a_run_without_a_collector_is_refused_with_a_reason(ui_server: UiServer) -> None:
    _consent(ui_server)
    answer = ui_server.post("/run/start")
    assert answer.status == 303 and "error=" in answer.headers["location"]
    page = ui_server.request("GET", answer.headers["location"]).text
    assert "no collector is set" in page
    assert json.loads(ui_server.request("GET", "/api/progress").body)["phase"] == "idle"


def test_static_files_come_from_the_package(ui_server: UiServer) -> None:
    js = ui_server.request("GET", "/static/app.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"X-Gatewatch-Token" in js.body
    assert ui_server.request("GET", "/static/style.css").headers["content-type"].startswith("text/css")
    assert ui_server.request("GET", "/static/../app.py").status == 404


def test_quit_stops_the_server(ui_server: UiServer) -> None:
    answer = ui_server.post("/quit")
    assert answer.status == 200 and "stopped" in answer.text
    assert ui_server.stopped(10)


def test_it_stops_once_no_page_has_been_seen_for_the_idle_timeout(tmp_path: Path) -> None:
    server = UiServer(tmp_path / "agent", idle_timeout=1.5).start()
    try:
        started = time.monotonic()
        for _ in range(4):  # a page that beats keeps it up past the timeout
            time.sleep(0.5)
            assert (
                server.request("POST", "/api/heartbeat", headers={"X-Gatewatch-Token": TOKEN}).status == 204
            )
        assert time.monotonic() - started > 1.5 and not server.stopped(0)
        assert server.stopped(10)  # then, no page: it stops by itself
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/consent", "/settings", "/run", "/results", "/queue"])
def test_pages_have_no_inline_script_or_style(ui_server: UiServer, path: str) -> None:
    _consent(ui_server)
    page = ui_server.request("GET", path).text
    assert "<script>" not in page and " style=" not in page and "<style" not in page and "onclick" not in page
    assert '<meta name="viewport"' in page and '<html lang="en">' in page
