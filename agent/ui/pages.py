"""The page's HTML: the layout every page shares, onboarding and consent, settings and "run now".

Server-rendered and escaped here (:func:`esc` on every value that is not our own markup); no inline script
or style (the Content-Security-Policy forbids both): behaviour is in ``static/app.js``, looks in
``static/style.css``. Every form works without script; the script adds live progress and the heartbeat.
"""

from __future__ import annotations

from html import escape

from ..consent import QUIZ, RISK_SECTIONS
from .security import TOKEN_FIELD
from .settings_form import CATEGORIES, FormValues

__all__ = [
    "NAV",
    "consent_page",
    "esc",
    "layout",
    "message_page",
    "run_page",
    "settings_page",
    "token_field",
]

NAV: tuple[tuple[str, str], ...] = (
    ("/run", "Run"),
    ("/results", "Results"),
    ("/queue", "Uploads"),
    ("/settings", "Settings"),
    ("/consent", "Risks"),
)


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def token_field(token: str) -> str:
    return f'<input type="hidden" name="{TOKEN_FIELD}" value="{esc(token)}">'


def layout(title: str, body: str, token: str, current: str = "") -> str:
    here = ' aria-current="page"'
    links = "".join(
        f'<li><a href="{href}"{here if href == current else ""}>{esc(label)}</a></li>' for href, label in NAV
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="gatewatch-token" content="{esc(token)}">
<title>{esc(title)} · gatewatch</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<p class="brand">gatewatch</p>
<nav aria-label="Pages"><ul>{links}</ul></nav>
<form method="post" action="/quit" class="quit">{token_field(token)}<button type="submit">Quit</button></form>
</header>
<main id="main" tabindex="-1">
<h1>{esc(title)}</h1>
{body}
</main>
</body>
</html>
"""


def message_page(title: str, text: str, token: str, link: tuple[str, str] | None = None) -> str:
    more = f'<p><a href="{esc(link[0])}">{esc(link[1])}</a></p>' if link else ""
    return layout(title, f'<p role="alert">{esc(text)}</p>{more}', token)


def _risks() -> str:
    parts = []
    for section in RISK_SECTIONS:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{esc(section.intro)}</p>")
        if section.points:
            parts.append("<ul>" + "".join(f"<li>{esc(point)}</li>" for point in section.points) + "</ul>")
    return "\n".join(parts)


def consent_page(
    token: str, *, given_at: str | None, current: bool, mistakes: list[int] | None = None
) -> str:
    """The risks in plain words, the quiz, and the consent button. ``mistakes``: questions answered
    wrongly on the last try (each is explained)."""
    status = ""
    if given_at and current:
        status = f'<p class="note">You gave your consent on {esc(given_at)}. The risks, once more:</p>'
    elif given_at:
        status = (
            '<p class="note">The description of the risks changed since you agreed: please read it again.</p>'
        )
    wrong = set(mistakes or [])
    questions = []
    for index, question in enumerate(QUIZ):
        choices = "".join(
            f'<label><input type="radio" name="q{index}" value="{choice}" required> {esc(text)}</label>'
            for choice, text in enumerate(question.choices)
        )
        explain = (
            f'<p class="error" id="q{index}-why">{esc(question.explanation)}</p>' if index in wrong else ""
        )
        described = f' aria-describedby="q{index}-why"' if index in wrong else ""
        questions.append(
            f"<fieldset{described}><legend>{esc(question.question)}</legend>{choices}{explain}</fieldset>"
        )
    alert = (
        '<p role="alert" class="error">Some answers were not right: read the explanation under each.</p>'
        if wrong
        else ""
    )
    return layout(
        "Before you start",
        f"""{status}
<section aria-labelledby="risks">{_risks()}</section>
<section aria-labelledby="quiz-title">
<h2 id="quiz-title">A short quiz</h2>
<p>Three questions, to be sure the risks are clear before you agree.</p>
{alert}
<form method="post" action="/consent">
{token_field(token)}
{"".join(questions)}
<p><label><input type="checkbox" name="agree" required> I understand these risks and want to run
measurements.</label></p>
<button type="submit">I agree</button>
</form>
</section>""",
        token,
        "/consent",
    )


def _checkbox(name: str, label: str, checked: bool, hint: str) -> str:
    on = " checked" if checked else ""
    return (
        f'<p><label><input type="checkbox" name="{name}" id="{name}"{on} aria-describedby="{name}-hint"> '
        f'{esc(label)}</label><span class="hint" id="{name}-hint">{esc(hint)}</span></p>'
    )


def _number(name: str, label: str, value: object, hint: str, *, required: bool = True) -> str:
    need = " required" if required else ""
    return (
        f'<p><label for="{name}">{esc(label)}</label>'
        f'<input type="number" min="0" step="any" id="{name}" name="{name}" value="{esc(value)}"{need}'
        f' aria-describedby="{name}-hint"><span class="hint" id="{name}-hint">{esc(hint)}</span></p>'
    )


def settings_page(
    token: str, values: FormValues, *, error: str | None = None, saved: bool = False, welcome: bool = False
) -> str:
    skipped = set(values.skip_categories)
    boxes = "".join(
        f'<label class="category"><input type="checkbox" name="skip_categories" value="{code}"'
        f'{" checked" if code in skipped else ""}> {esc(name)} <span class="code">{code}</span></label>'
        for code, name in CATEGORIES
    )
    notice = ""
    if error:
        notice = f'<p role="alert" class="error">Not saved: {esc(error)}</p>'
    elif saved:
        notice = '<p role="status" class="ok">Saved to agent.toml.</p>'
    elif welcome:
        notice = (
            '<p role="status" class="ok">Thank you: your consent is recorded. Check the collector\'s address '
            'and the categories to skip, save, then <a href="/run">run</a>.</p>'
        )
    return layout(
        "Settings",
        f"""{notice}
<form method="post" action="/settings">
{token_field(token)}
<fieldset><legend>Where results go</legend>
<p><label for="collector_urls">Collector addresses (one per line, tried in order)</label>
<textarea id="collector_urls" name="collector_urls" rows="3">{esc(values.collector_urls)}</textarea></p>
{
            _checkbox(
                "upload",
                "Upload results to the collector",
                values.upload,
                "Off: results stay on this computer only.",
            )
        }
{
            _checkbox(
                "withhold",
                "Withhold my network and country",
                values.withhold,
                "The results then do not say which provider or country they come from (less useful, safer).",
            )
        }
</fieldset>
<fieldset><legend>Categories not to test</legend>
<p class="hint">Sites in these categories are skipped. Skip the ones that are risky where you live.</p>
<div class="categories">{boxes}</div>
</fieldset>
<fieldset><legend>Budgets</legend>
{
            _number(
                "max_runtime_minutes",
                "Time budget per run (minutes)",
                values.max_runtime_minutes,
                "A run stops when this time is up.",
            )
        }
{
            _number(
                "max_megabytes",
                "Download budget per run (megabytes)",
                values.max_megabytes,
                "Empty: no limit. A run stops when it has downloaded this much.",
                required=False,
            )
        }
{_number("concurrency", "Sites measured at once", values.concurrency, "Fewer is gentler on a slow link.")}
</fieldset>
<fieldset><legend>Schedule (for the background service)</legend>
{
            _number(
                "interval_hours",
                "Run every (hours)",
                values.interval_hours,
                "Used by the background service (gatewatch-agent daemon).",
            )
        }
{
            _number(
                "jitter_minutes",
                "Plus a random delay of up to (minutes)",
                values.jitter_minutes,
                "So that volunteers do not all measure at the same moment.",
            )
        }
</fieldset>
<fieldset><legend>Network</legend>
{
            _checkbox(
                "ipv6",
                "Measure over IPv6 too",
                values.ipv6,
                "Off: only IPv4 addresses are looked up and visited.",
            )
        }
</fieldset>
<button type="submit">Save</button>
</form>""",
        token,
        "/settings",
    )


def run_page(token: str, *, running: bool, error: str | None = None) -> str:
    notice = f'<p role="alert" class="error">{esc(error)}</p>' if error else ""
    start_disabled = " disabled" if running else ""
    cancel_disabled = "" if running else " disabled"
    return layout(
        "Run now",
        f"""{notice}
<p>Measure the test list once now, then upload the results (if uploads are on).</p>
<div class="actions">
<form method="post" action="/run/start">{token_field(token)}
<button type="submit" id="start"{start_disabled}>Start a run</button></form>
<form method="post" action="/run/cancel">{token_field(token)}
<button type="submit" id="cancel" class="secondary"{cancel_disabled}>Cancel</button></form>
</div>
<section id="progress" aria-labelledby="progress-title" data-poll="/api/progress">
<h2 id="progress-title">Progress</h2>
<progress id="bar" max="1" value="0" aria-label="Sites measured">0</progress>
<dl class="facts">
<dt>State</dt><dd id="phase">idle</dd>
<dt>Sites measured</dt><dd id="done">0 of 0</dd>
<dt>Blocked so far</dt><dd id="blocked">0</dd>
<dt>Time left</dt><dd id="left">unknown</dd>
<dt>Now</dt><dd id="current">–</dd>
</dl>
<p id="message" role="status" aria-live="polite"></p>
<p id="done-link" hidden><a href="/results">See the results</a></p>
<noscript><p>Reload this page to see the progress.</p></noscript>
</section>""",
        token,
        "/run",
    )
