"""The local page in a real browser (Playwright driving Debian's chromium, headless): a volunteer goes from
the risks and the quiz to consent, sets the collector and a few choices (seen in agent.toml), runs the
emulated lab's test list and watches the progress reach the end, opens a result and sees the collector's
verdict, and sees the upload queue drained to the collector. Then the gate, as a browser meets it.

Everything is on loopback: the lab (its own thread), a real collector process, the page's server (its own
thread). When a test fails, a screenshot of each page goes to a temporary folder (printed).
"""

from __future__ import annotations

import csv
import os
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatewatch.agent.queue import MeasurementQueue
from gatewatch.agent.settings import load_settings
from gatewatch.agent.ui.runs import LabFlags
from gatewatch.lab.lab import Lab

from ...e2e.harness import CollectorProcess, LabThread
from .served import TOKEN, UiServer

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install '.[test]')"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]

NETWORK = "isp-a"
PAGES = ("/consent", "/settings", "/run", "/results", "/queue")
RUN_TIMEOUT_MS = 120_000  # one pass over the lab's list, worst case (a blackholed connect takes 5 s)


@dataclass
class World:
    lab: Lab
    collector: CollectorProcess
    ui: UiServer
    urls: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    lab_thread = LabThread()
    collector: CollectorProcess | None = None
    ui: UiServer | None = None
    try:
        lab = lab_thread.start()
        collector = CollectorProcess(tmp_path_factory.mktemp("collector"), lab)
        collector.start()
        urls = lab.urls()
        test_list = tmp_path_factory.mktemp("list") / "lab.csv"
        with test_list.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["url", "category_code", "category_description", "date_added", "source", "notes"])
            writer.writerows([url, "NEWS", "News", "2026-12-01", "lab", ""] for url in urls)
        flags = LabFlags(
            resolver=lab.resolver,
            ca_file=lab.ca_file,
            source_address=lab.networks[NETWORK].source_address,
            routable=("127.0.0.0/8",),
            input_files=(test_list,),
        )
        ui = UiServer(tmp_path_factory.mktemp("agent") / "data", idle_timeout=600, flags=flags).start()
        yield World(lab, collector, ui, urls)
    finally:
        if ui is not None:
            ui.stop()
        if collector is not None:
            collector.stop()
        lab_thread.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object, world: World, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A page that has visited the address with the token (so it holds the cookie)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(world.ui.url)
    try:
        yield page
    finally:
        failed = getattr(request.node, "report_call", None)
        shots = os.environ.get("GATEWATCH_UI_SCREENSHOTS")
        if (failed is not None and failed.failed) or shots:
            folder = Path(shots) if shots else tmp_path / "screenshots"
            _screenshots(page, world, folder)
        context.close()


def _screenshots(page: object, world: World, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "at-failure.png"), full_page=True)  # type: ignore[attr-defined]
    base = f"http://{world.ui.host}"
    for path in PAGES:
        try:
            page.goto(base + path)  # type: ignore[attr-defined]
            page.screenshot(path=str(folder / f"{path.strip('/')}.png"), full_page=True)  # type: ignore[attr-defined]
            runs = page.get_by_role("link", name="Run of")  # type: ignore[attr-defined]
            if path == "/results" and runs.count():
                runs.first.click()
                page.screenshot(path=str(folder / "one-run.png"), full_page=True)  # type: ignore[attr-defined]
        except Exception as exc:
            print(f"screenshot of {path} failed: {exc}")
    print(f"screenshots of each page: {folder}")


def test_a_volunteer_goes_from_consent_to_uploaded_results(page: object, world: World) -> None:
    p = page  # the Playwright page (typed loosely: Playwright is optional)
    data_dir = world.ui.data_dir
    expect = playwright_api.expect

    # Onboarding: the risks, the quiz (one wrong answer first), consent.
    assert p.url.endswith("/consent")  # type: ignore[attr-defined]
    expect(
        p.get_by_role("heading", name="What a person with access to the collector could learn")
    ).to_be_visible()  # type: ignore[attr-defined]
    p.get_by_label("Yes: my provider or a government can see it.").check()  # type: ignore[attr-defined]
    p.get_by_label("Yes, anyone can see it.").check()  # wrong  # type: ignore[attr-defined]
    p.get_by_label("Yes, it can be, depending on the country and the sites.").check()  # type: ignore[attr-defined]
    p.get_by_label("I understand these risks").check()  # type: ignore[attr-defined]
    p.get_by_role("button", name="I agree").click()  # type: ignore[attr-defined]
    expect(p.locator("#q1-why")).to_be_visible()  # type: ignore[attr-defined]
    assert not (data_dir / "consent.json").exists()
    p.get_by_label("Yes: my provider or a government can see it.").check()  # type: ignore[attr-defined]
    p.get_by_label("No, but they name my provider and country.").check()  # type: ignore[attr-defined]
    p.get_by_label("Yes, it can be, depending on the country and the sites.").check()  # type: ignore[attr-defined]
    p.get_by_label("I understand these risks").check()  # type: ignore[attr-defined]
    p.get_by_role("button", name="I agree").click()  # type: ignore[attr-defined]
    expect(p.get_by_role("heading", name="Settings")).to_be_visible()  # type: ignore[attr-defined]
    assert (data_dir / "consent.json").exists() and (data_dir / "signing-key.pem").exists()

    # Settings: the collector, a category skipped, a time budget; seen in agent.toml.
    p.get_by_label("Collector addresses").fill(world.collector.url)  # type: ignore[attr-defined]
    p.get_by_label("LGBTQ+").check()  # type: ignore[attr-defined]
    p.get_by_label("Time budget per run (minutes)").fill("5")  # type: ignore[attr-defined]
    p.get_by_role("button", name="Save").click()  # type: ignore[attr-defined]
    expect(p.get_by_role("status")).to_have_text("Saved to agent.toml.")  # type: ignore[attr-defined]
    written = tomllib.loads((data_dir / "agent.toml").read_text(encoding="utf-8"))
    assert written["collector_urls"] == [world.collector.url]
    assert written["skip_categories"] == ["LGBT"] and written["max_runtime"] == 300
    assert load_settings(data_dir / "agent.toml").upload is True

    # Run now: progress reaches the end.
    p.get_by_role("link", name="Run").click()  # type: ignore[attr-defined]
    p.get_by_role("button", name="Start a run").click()  # type: ignore[attr-defined]
    expect(p.locator("#phase")).to_have_text("finished", timeout=RUN_TIMEOUT_MS)  # type: ignore[attr-defined]
    total = len(world.urls)
    expect(p.locator("#done")).to_have_text(f"{total} of {total}")  # type: ignore[attr-defined]
    assert int(p.locator("#bar").get_attribute("value")) == total  # type: ignore[attr-defined]

    # Results: grouped by verdict; a blocked measurement opened, with the collector's verdict.
    p.get_by_role("link", name="See the results").click()  # type: ignore[attr-defined]
    p.get_by_role("link", name="Run of").first.click()  # type: ignore[attr-defined]
    expect(p.get_by_role("heading", name="Blocked (dns)")).to_be_visible()  # type: ignore[attr-defined]
    expect(p.get_by_role("heading", name="Accessible")).to_be_visible()  # type: ignore[attr-defined]
    blocked = p.locator("section.verdict", has=p.get_by_role("heading", name="Blocked (dns)"))  # type: ignore[attr-defined]
    first = blocked.locator("details").first
    first.locator("summary").click()
    expect(first.get_by_text("What was seen")).to_be_visible()
    expect(first.locator("span.collector")).to_contain_text("blocked (dns), dns.")  # filled in by script
    first.get_by_role("link", name="Details and").click()
    expect(p.locator("#collector-verdict")).to_contain_text("blocked (dns)")  # type: ignore[attr-defined]
    expect(p.locator("#agent-verdict")).to_have_text("blocked (dns)")  # type: ignore[attr-defined]

    # The upload queue: drained to the collector.
    p.get_by_role("link", name="Uploads").click()  # type: ignore[attr-defined]
    expect(p.locator("#count-pending")).to_have_text("0")  # type: ignore[attr-defined]
    expect(p.locator("#count-sent")).to_have_text(str(total))  # type: ignore[attr-defined]
    with MeasurementQueue(data_dir / "queue.sqlite3") as queue:
        ours = {row.measurement_uid for row in queue.recent(1000)}
    # Playwright's sync API holds this thread's event loop: the collector is asked over its own API.
    listing = world.collector.get_json("/api/v1/measurements?limit=1000")
    stored = {row["measurement_uid"] for row in listing["results"]}
    assert len(ours) == total and ours <= stored

    # The export: the volunteer's own results as a JSON download.
    with p.expect_download() as download:  # type: ignore[attr-defined]
        p.get_by_role("link", name="Download all your results (JSON)").click()  # type: ignore[attr-defined]
    assert download.value.suggested_filename.startswith("gatewatch-results-")


def test_the_browser_meets_the_gate(browser: object, world: World) -> None:
    """Without the token, from another origin, or under another host name, nothing is served or done."""
    context = browser.new_context()  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        answer = page.goto(f"http://{world.ui.host}/run")  # no token, no cookie
        assert answer.status == 403 and "no_token" in page.content()
        renamed = context.request.get(
            f"http://{world.ui.host}/?token={TOKEN}", headers={"Host": "evil.example"}
        )
        assert renamed.status == 403 and renamed.json()["error"] == "bad_host"
        # A page of another origin (here: a data: URL) posting to the agent: the cookie is SameSite=Strict
        # and the form carries no token, so Quit is refused and the page keeps running.
        page.goto(world.ui.url)  # now the context holds the cookie
        page.set_content(
            f'<form method="post" action="http://{world.ui.host}/quit"><button>go</button></form>'
        )
        with page.expect_navigation():
            page.click("button")
        assert "no_token" in page.content() or "no_form_token" in page.content()
        assert world.ui.thread.is_alive()
    finally:
        context.close()


def test_phone_width_keyboard_and_labels(browser: object, world: World) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.goto(world.ui.url)
        base = f"http://{world.ui.host}"
        for path in PAGES:
            page.goto(base + path)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 361, f"{path} is {wide}px wide at a phone's 360"
            unlabelled = page.evaluate(
                "[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]"
                ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"
            )
            assert unlabelled == [], (path, unlabelled)
        page.goto(base + "/run")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"  # a visible focus ring
        page.keyboard.press("Enter")
        for _ in range(12):  # the start button is reached by keyboard alone
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "start":
                break
        assert page.evaluate("document.activeElement.id") == "start"
    finally:
        context.close()
