"""How a pass's results are shown: the text of a URL is shown as it is, never read as rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from gatewatch.agent.display import results_table, summary_table
from gatewatch.agent.runner import RunSummary, UrlResult

ODD_URLS = ["http://a.example/?q[bold]=1", "http://b.example/[/x]", "http://c.example/:smile:/"]


def _render(table: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, emoji=False).print(table)
    return out.getvalue()


def test_urls_with_brackets_and_colons_are_shown_verbatim() -> None:
    summary = RunSummary(started_at="2026-11-23T13:40:00Z", total=3, measured=3)
    summary.results = [
        UrlResult(url, "NEWS", f"uid{i}", False, None, None, None) for i, url in enumerate(ODD_URLS)
    ]
    text = _render(summary_table(summary))
    assert all(url in text for url in ODD_URLS)


def test_the_results_table_shows_urls_verbatim() -> None:
    rows = [
        {"time": "t", "input": url, "blocking": None, "layer": None, "fingerprint": None, "state": "sent"}
        for url in ODD_URLS
    ]
    text = _render(results_table(rows))
    assert all(url in text for url in ODD_URLS)
