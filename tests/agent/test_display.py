"""How a pass's results are shown: the text of a URL is shown as it is, never read as rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from gatewatch.agent.display import plain_summary, results_table, summary_table
from gatewatch.agent.run_records import SUMMARY_ROWS, RunSummary, UrlResult

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


def test_a_long_pass_keeps_a_bounded_number_of_rows_and_says_how_many_are_not_shown() -> None:
    summary = RunSummary(started_at="2026-11-23T13:40:00Z", total=1000)
    for i in range(1000):  # 3 blocked at the end, 2 without a verdict, the rest accessible
        blocking: str | bool | None = "dns" if i >= 997 else None if i < 2 else False
        result = UrlResult(f"http://s{i}.example/", "NEWS", f"uid{i}", blocking, None, None, None)
        summary.add(result, verdict=blocking is not None)
    assert (summary.measured, summary.blocked, summary.no_verdict) == (1000, 3, 2)
    assert len(summary.measurement_uids) == 1000  # every one, should the pass have to keep them local
    assert len(summary.results) == 3 + 2 + SUMMARY_ROWS
    text = _render(summary_table(summary, limit=10))
    rows = [line for line in text.splitlines() if "http://" in line]
    assert [r.split()[1] for r in rows[:3]] == [
        "http://s997.example/",
        "http://s998.example/",
        "http://s999.example/",
    ]
    assert "990 more not shown" in text
    assert "uid" not in str(summary.as_record())  # no URL or measurement id goes to `status`


def test_the_plain_summary_has_the_same_rows_in_aligned_columns() -> None:
    summary = RunSummary(started_at="2026-11-23T13:40:00Z", total=4)
    summary.add(UrlResult("http://ok.example/", "NEWS", "u1", False, None, None, None), verdict=True)
    summary.add(
        UrlResult("http://b.example/", "NEWS", "u2", "dns", "dns", "dns:nxdomain", None), verdict=True
    )
    summary.add(UrlResult("http://nv.example/", "NEWS", "u3", None, None, None, "http_503"), verdict=False)
    lines = plain_summary(summary).splitlines()
    assert lines[0] == "3 of 4 measured, 1 blocked"
    assert lines[1].split() == ["URL", "verdict", "layer", "fingerprint"]
    assert lines[2].split() == ["http://b.example/", "blocked", "(dns)", "dns", "dns:nxdomain"]
    assert lines[3].startswith("http://nv.example/  no verdict") and lines[4].startswith("http://ok.example/")
    assert len({line.index("verdict") for line in lines[1:2]} | {lines[2].index("blocked")}) == 1
    assert plain_summary(summary, limit=1).splitlines()[-1].startswith("2 more not shown")
