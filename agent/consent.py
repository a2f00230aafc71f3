"""Informed consent: what running the agent means for the volunteer, in plain words, and its record.

The text is versioned: when it changes in substance, ``CONSENT_VERSION`` goes up and ``run`` asks again,
because consent given to an older description is not consent to the new one.

The risks live here once, as sections of plain sentences (:data:`RISK_SECTIONS`), with the short quiz
that checks they were understood (:data:`QUIZ`); the command line prints them as text (:data:`RISK_TEXT`),
the local web page (``gatewatch-agent ui``) as HTML.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gatewatch.core.measurement import format_utc, utc_now
from gatewatch.core.vocabulary import WITHHELD_ASN, WITHHELD_CC

__all__ = [
    "CONSENT_VERSION",
    "QUIZ",
    "RISK_SECTIONS",
    "RISK_TEXT",
    "ConsentRecord",
    "QuizQuestion",
    "RiskSection",
    "load_consent",
    "quiz_mistakes",
    "record_consent",
]

# 2: what a person with access to the collector could learn, and the legal context, were added.
CONSENT_VERSION = 2


@dataclass(frozen=True)
class RiskSection:
    title: str
    intro: str  # a paragraph ("" for none)
    points: tuple[str, ...]  # one bullet each


RISK_SECTIONS: tuple[RiskSection, ...] = (
    RiskSection(
        "What gatewatch does",
        "It visits a list of websites from your connection, the way a browser would, and records whether "
        "each one loads or is interfered with (DNS, connection, TLS, or a block page). The results are "
        "signed and sent to a public research collector, where they help show who blocks what.",
        (),
    ),
    RiskSection(
        "What others can learn",
        "",
        (
            "Anyone watching your connection (your internet provider, your employer, a government) can "
            "see that someone on this network is visiting these sites, some of which may be sensitive or "
            "illegal where you live. Running a measurement tool may itself draw attention.",
            "The published results say that someone on this network (the provider and the country) tested "
            "these sites, at what time. They do not contain your IP address: the agent never sends it, and "
            "it removes it from anything a website or resolver echoed back before storing or signing.",
            "Each agent signs with its own key, so results from the same agent can be linked to each other.",
        ),
    ),
    RiskSection(
        "What a person with access to the collector could learn",
        "The collector's operator, or anyone who takes its server or is given its data, sees more than "
        "the public results:",
        (
            "your IP address while you upload (the collector uses it to find your provider and country, "
            "then drops it: it is not stored or logged, but a person controlling that server could record "
            "it from then on);",
            "which results come from your agent (its key), and when your agent uploads.",
        ),
    ),
    RiskSection(
        "The law where you live",
        "In some countries testing or visiting blocked websites, or taking part in research on "
        "censorship, can be treated as an offence. In Cambodia, for example, the authorities can require "
        "internet providers to hand over data about their users, and laws on telecommunications and on "
        "national security have been used against people for what they did online. Nobody can promise "
        "you that measuring is safe where you are: if in doubt, ask a digital-security organisation you "
        "trust before you start.",
        (),
    ),
    RiskSection(
        "What you can choose",
        "",
        (
            'Skip categories that are riskier in your country (for example: skip_categories = ["LGBT", '
            '"POLR"] in agent.toml, or run with your own list).',
            f'Withhold the network and country (probe_asn = "{WITHHELD_ASN}", probe_cc = "{WITHHELD_CC}").',
            "Keep results local only (run --no-upload, or turn uploads off). You can stop at any time.",
        ),
    ),
)


def _risk_text(sections: tuple[RiskSection, ...]) -> str:
    import textwrap

    lines: list[str] = []
    for section in sections:
        lines.append(section.title)
        if section.intro:
            lines += textwrap.wrap(section.intro, 100, initial_indent="  ", subsequent_indent="  ")
        for point in section.points:
            lines += textwrap.wrap(point, 100, initial_indent="  * ", subsequent_indent="    ")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


RISK_TEXT = _risk_text(RISK_SECTIONS)


@dataclass(frozen=True)
class QuizQuestion:
    """A question about the risks, as OONI Probe's onboarding asks them: one right answer, explained."""

    question: str
    choices: tuple[str, ...]
    correct: int  # index into choices
    explanation: str  # shown when the answer was wrong


QUIZ: tuple[QuizQuestion, ...] = (
    QuizQuestion(
        "Can someone watching your connection see that you are testing websites?",
        ("Yes: my provider or a government can see it.", "No: gatewatch hides it."),
        0,
        "gatewatch does not hide your traffic: anyone who watches your connection can see what it visits.",
    ),
    QuizQuestion(
        "Do the published results contain your IP address?",
        ("Yes, anyone can see it.", "No, but they name my provider and country."),
        1,
        "The agent removes your address; the results still say which network and country they come from.",
    ),
    QuizQuestion(
        "Can testing some websites be illegal or risky where you live?",
        ("No, measuring is always safe.", "Yes, it can be, depending on the country and the sites."),
        1,
        "In some countries it can be: skip risky categories, or do not measure, if in doubt.",
    ),
)


def quiz_mistakes(answers: dict[int, int | None]) -> list[int]:
    """The questions (indexes into :data:`QUIZ`) answered wrongly or not at all."""
    return [i for i, question in enumerate(QUIZ) if answers.get(i) != question.correct]


@dataclass(frozen=True)
class ConsentRecord:
    version: int
    given_at: str  # UTC, ISO 8601

    @property
    def current(self) -> bool:
        return self.version >= CONSENT_VERSION


def record_consent(path: Path) -> ConsentRecord:
    record = ConsentRecord(version=CONSENT_VERSION, given_at=format_utc(utc_now()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash never leaves half a record
    return record


def load_consent(path: Path) -> ConsentRecord | None:
    """The recorded consent, or ``None`` when there is none (or it is unreadable: ask again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ConsentRecord(version=int(data["version"]), given_at=str(data["given_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
