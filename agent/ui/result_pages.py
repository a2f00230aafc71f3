"""The pages about what the agent measured: runs, each run's results grouped by verdict (each measurement
expandable to its observations and failures), one measurement with the collector's verdict, and the
upload queue. They read the queue through its public reads and :mod:`..history`'s row summary."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from gatewatch.core.wire import MeasurementRow

from ..display import describe_blocking
from ..history import result_row
from ..queue import QueuedMeasurement
from .collector_verdict import CollectorVerdicts
from .pages import esc, layout, token_field

__all__ = [
    "RunGroup",
    "collector_words",
    "group_runs",
    "measurement_page",
    "queue_page",
    "results_page",
    "runs_page",
]

_STATE_WORDS = {
    "pending": "waiting for upload",
    "sent": "uploaded",
    "quarantined": "rejected by the collector",
    "local": "kept on this computer",
}


@dataclass
class RunGroup:
    """The measurements of one run (one ``test_start_time``), newest first."""

    started: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocked(self) -> int:
        return sum(1 for row in self.rows if row["blocking"] not in (False, None))


def collector_words(row: MeasurementRow) -> str:
    """The collector's verdict in the volunteer's words (its technique, when it names one)."""
    words = describe_blocking(row.blocking)
    return f"{words}, {row.technique}" if row.technique else words


def when(text: object) -> str:
    """A stored UTC time for people: ``2026-12-04 16:46:26 UTC``."""
    value = str(text or "").replace("T", " ").removesuffix("Z").split(".")[0]
    return f"{value} UTC" if value else "an unknown time"


def group_runs(rows: Iterable[QueuedMeasurement]) -> list[RunGroup]:
    """Queue rows (newest first) by run, each with its measurement as :func:`..history.result_row` sums
    it up plus the parsed measurement (``_measurement``) for the detail."""
    groups: dict[str, RunGroup] = {}
    for row in rows:
        summary = result_row(row)
        data = row.measurement()
        summary["_measurement"] = data
        started = str(data.get("test_start_time") or summary.get("time") or "")
        groups.setdefault(started, RunGroup(started)).rows.append(summary)
    return list(groups.values())


def runs_page(token: str, groups: list[RunGroup]) -> str:
    if not groups:
        body = '<p>No results yet. <a href="/run">Start a run</a>.</p>'
    else:
        items = "".join(
            f'<li><a href="/results?run={quote(g.started)}">Run of {esc(when(g.started))}</a>: '
            f"{len(g.rows)} sites, {g.blocked} blocked</li>"
            for g in groups
        )
        body = f"""<ul class="runs">{items}</ul>
<p><a href="/export.json" download>Download all your results (JSON)</a></p>"""
    return layout("Results", body, token, "/results")


def _observations(data: dict[str, Any]) -> str:
    keys = data.get("test_keys") or {}
    items: list[str] = []
    for query in keys.get("queries", []):
        answers = ", ".join(
            (a.get("ipv4") or a.get("ipv6") or a.get("hostname") or "?")
            + (" (private/bogon)" if a.get("bogon") else "")
            for a in query.get("answers", [])
        )
        outcome = query.get("failure") or answers or query.get("rcode") or "no answer"
        items.append(
            f"<li>DNS {esc(query.get('query_type'))} {esc(query.get('hostname'))}: {esc(outcome)}</li>"
        )
    for connect in keys.get("tcp_connect", []):
        outcome = "connected" if connect.get("success") else connect.get("failure") or "failed"
        items.append(f"<li>TCP {esc(connect.get('ip'))} port {esc(connect.get('port'))}: {esc(outcome)}</li>")
    for handshake in keys.get("tls_handshakes", []):
        outcome = handshake.get("failure") or handshake.get("tls_version") or "done"
        items.append(f"<li>TLS {esc(handshake.get('server_name'))}: {esc(outcome)}</li>")
    for request in keys.get("requests", []):
        response = request.get("response") or {}
        url = (request.get("request") or {}).get("url", "")
        outcome = request.get("failure") or f"HTTP {response.get('code')}"
        title = f" “{response['title']}”" if response.get("title") else ""
        items.append(f"<li>HTTP {esc(url)}: {esc(outcome)}{esc(title)}</li>")
    if keys.get("control_failure"):
        items.append(f"<li>Control (the collector's view): {esc(keys['control_failure'])}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No observations.</p>"


def _layers(verdict: dict[str, Any] | None) -> str:
    if not verdict or not verdict.get("layers"):
        return ""
    rows = "".join(
        f"<li>{esc(layer.get('layer'))}: {esc(layer.get('outcome'))}. {esc(layer.get('reason'))}"
        f' <span class="code">{esc(layer.get("rule_id"))}</span></li>'
        for layer in verdict["layers"]
    )
    return f"<ul>{rows}</ul>"


def _measurement_details(row: dict[str, Any]) -> str:
    data = row["_measurement"]
    verdict = (data.get("test_keys") or {}).get("verdict")
    state = _STATE_WORDS.get(row["state"], row["state"])
    reason = f" ({esc(row['reason'])})" if row.get("reason") else ""
    return f"""<details>
<summary>{esc(row["input"])} <span class="state">{esc(state)}</span></summary>
<h4>What was seen</h4>{_observations(data)}
<h4>This computer's verdict, by layer</h4>{_layers(verdict) or "<p>No verdict (no control).</p>"}
{_collector_line(row)}
<p>Upload: {esc(state)}{reason}. <a href="/measurement?uid={quote(row["measurement_uid"])}">Details and
the collector's verdict</a></p>
</details>"""


def _collector_line(row: dict[str, Any]) -> str:
    if row["state"] != "sent":
        return "<p>The collector's verdict: once uploaded.</p>"
    uid = esc(row["measurement_uid"])
    return f'<p>The collector\'s verdict: <span class="collector" data-uid="{uid}">not asked yet</span></p>'


def results_page(token: str, group: RunGroup) -> str:
    by_verdict: dict[str, list[dict[str, Any]]] = {}
    for row in group.rows:
        by_verdict.setdefault(describe_blocking(row["blocking"]), []).append(row)
    order = sorted(by_verdict, key=lambda words: (not words.startswith("blocked"), words))
    sections = "".join(
        f'<section class="verdict"><h2>{esc(words.capitalize())} ({len(by_verdict[words])})</h2>'
        + "".join(_measurement_details(row) for row in by_verdict[words])
        + "</section>"
        for words in order
    )
    verdicts = f"/api/collector-verdicts?run={quote(group.started)}"
    return layout(
        f"Run of {when(group.started)}",
        f'<p>{len(group.rows)} sites, {group.blocked} blocked. <a href="/results">All runs</a></p>'
        f'<p id="collector-status" role="status" data-verdicts="{esc(verdicts)}"></p>{sections}',
        token,
        "/results",
    )


def measurement_page(token: str, row: dict[str, Any], collector: CollectorVerdicts | None) -> str:
    data = row["_measurement"]
    theirs_row = None if collector is None else collector.rows.get(row["measurement_uid"])
    if collector is None:
        theirs = "<p>Not uploaded yet: the collector's verdict comes once it has the measurement.</p>"
    elif theirs_row is None and collector.failure:
        theirs = f"<p>The collector could not be asked: {esc(collector.failure)}.</p>"
    elif theirs_row is None:
        theirs = "<p>The collector does not list this measurement (yet).</p>"
    else:
        flags = f" Flags: {esc(', '.join(theirs_row.flags))}." if theirs_row.flags else ""
        theirs = (
            f'<p id="collector-verdict">The collector says: <strong>{esc(collector_words(theirs_row))}'
            f"</strong>.{flags}</p>{_layers(theirs_row.verdict.model_dump(mode='json'))}"
        )
    ours = describe_blocking(row["blocking"])
    ours_verdict = (data.get("test_keys") or {}).get("verdict")
    state = _STATE_WORDS.get(row["state"], row["state"])
    reason = f" ({esc(row['reason'])})" if row.get("reason") else ""
    return layout(
        "A measurement",
        f"""<dl class="facts">
<dt>Site</dt><dd>{esc(row["input"])}</dd>
<dt>Measured</dt><dd>{esc(when(data.get("measurement_start_time")))}</dd>
<dt>Network</dt><dd>{esc(row.get("probe_asn"))} ({esc(row.get("probe_cc"))})</dd>
<dt>This computer's verdict</dt><dd id="agent-verdict">{esc(ours)}</dd>
<dt>Upload</dt><dd>{esc(state)}{reason}</dd>
<dt>Measurement id</dt><dd class="code">{esc(row["measurement_uid"])}</dd>
</dl>
<h2>The collector's verdict</h2>{theirs}
<h2>What was seen</h2>{_observations(data)}
<h2>This computer's verdict, by layer</h2>{_layers(ours_verdict) or "<p>None.</p>"}
<p><a href="/results?run={quote(str(data.get("test_start_time") or ""))}">Back to the run</a></p>""",
        token,
        "/results",
    )


def queue_page(
    token: str,
    counts: dict[str, int],
    reasons: dict[str, int],
    quarantined: list[QueuedMeasurement],
    recent: list[QueuedMeasurement],
    *,
    notice: str | None = None,
    busy: bool = False,
) -> str:
    waiting = "".join(f"<li>{esc(reason)}: {count}</li>" for reason, count in reasons.items())
    rejected = "".join(
        f'<li><a href="/measurement?uid={quote(r.measurement_uid)}">{esc(r.measurement_uid)}</a>: '
        f"{esc(r.reason or 'rejected')} ({esc(when(r.updated_at))})</li>"
        for r in quarantined
    )
    rows = "".join(
        f'<tr><td><a href="/measurement?uid={quote(r.measurement_uid)}">'
        f"{esc(r.measurement().get('input'))}</a></td><td>{esc(_STATE_WORDS.get(r.state, r.state))}</td>"
        f"<td>{esc(r.reason or r.last_error or '')}</td><td>{r.attempts}</td></tr>"
        for r in recent
    )
    disabled = " disabled" if busy or not counts.get("pending") else ""
    message = f'<p role="status" id="queue-notice">{esc(notice)}</p>' if notice else ""
    return layout(
        "Uploads",
        f"""{message}
<dl class="facts" id="queue-counts">
<dt>Waiting</dt><dd id="count-pending">{counts.get("pending", 0)}</dd>
<dt>Uploaded</dt><dd id="count-sent">{counts.get("sent", 0)}</dd>
<dt>Rejected (quarantined)</dt><dd id="count-quarantined">{counts.get("quarantined", 0)}</dd>
<dt>Kept on this computer</dt><dd id="count-local">{counts.get("local", 0)}</dd>
</dl>
<form method="post" action="/queue/retry">{token_field(token)}
<button type="submit" id="retry"{disabled}>Retry the upload now</button></form>
{"<h2>Why results wait</h2><ul>" + waiting + "</ul>" if waiting else ""}
{
            "<h2>Rejected by the collector</h2><p>The collector refused these; sending them again would be "
            "refused again, so they are kept here with its reason.</p><ul>" + rejected + "</ul>"
            if rejected
            else ""
        }
<h2>Latest measurements</h2>
<div class="table-wrap"><table>
<thead><tr><th scope="col">Site</th><th scope="col">Upload</th><th scope="col">Reason or last error</th>
<th scope="col">Attempts</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<p><a href="/export.json" download>Download all your results (JSON)</a></p>""",
        token,
        "/queue",
    )
