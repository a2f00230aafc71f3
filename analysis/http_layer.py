"""The HTTP layer: did the probe get the control's page?

A response that matches a blocking fingerprint is a blockpage whatever else it looks like. Otherwise
OONI web_connectivity's comparison decides: the page is the same when the status codes match and at
least one of body length (proportion > 0.7), uncommon header names, or title words match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gatewatch.core import failures as F
from gatewatch.core import vocabulary as V
from gatewatch.core.control import ControlHTTP, ControlObservations
from gatewatch.core.observations import HTTPResponse, HTTPTransaction
from gatewatch.core.verdicts import Fingerprint, LayerVerdict

from .fingerprints import FingerprintDB, FingerprintMatch
from .rules import layer_verdict

__all__ = [
    "COMMON_HEADERS",
    "HTTPResult",
    "body_length_match",
    "headers_match",
    "judge_http",
    "status_code_match",
    "title_match",
]

BODY_PROPORTION: Final = 0.7
TITLE_WORD_MIN_LENGTH: Final = 5  # about the average length of an English word: shorter ones say little
TITLE_WORDS: Final = 13
# Headers nearly every server sends (or that only frame the message): their presence tells nothing about
# whose page it is, so only the other header *names* are compared.
COMMON_HEADERS: Final = frozenset(
    {
        "accept-ranges",
        "age",
        "cache-control",
        "cf-ray",
        "connection",
        "content-encoding",
        "content-language",
        "content-length",
        "content-type",
        "date",
        "etag",
        "expires",
        "keep-alive",
        "last-modified",
        "link",
        "location",
        "p3p",
        "pragma",
        "server",
        "set-cookie",
        "strict-transport-security",
        "transfer-encoding",
        "vary",
        "via",
        "x-content-type-options",
        "x-frame-options",
        "x-powered-by",
        "x-varnish",
        "x-xss-protection",
    }
)
_SPACE: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class HTTPResult:
    verdict: LayerVerdict | None  # None: the probe made no request
    status_code_match: bool | None = None
    body_length_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None


def status_code_match(response: HTTPResponse, control: ControlHTTP) -> bool | None:
    if control.status_code is None:
        return None
    if response.code != control.status_code and control.status_code // 100 != 2:
        # As OONI: a control that got a non-2xx (rate limited, geo-blocked, a 5xx) is no reference.
        return None
    return response.code == control.status_code


def body_length_match(response: HTTPResponse, control: ControlHTTP) -> bool | None:
    if response.body_is_truncated or control.body_is_truncated:
        return None  # a cap, not the page, decided both lengths
    measured, expected = response.body_length, control.body_length or 0
    if measured <= 0 or expected <= 0:
        return None
    return min(measured, expected) / max(measured, expected) > BODY_PROPORTION


def _uncommon(names: Sequence[str]) -> set[str]:
    return {n.lower() for n in names} - COMMON_HEADERS


def headers_match(response: HTTPResponse, control: ControlHTTP) -> bool | None:
    if not response.headers or not control.headers:
        return None
    return _uncommon([n for n, _ in response.headers]) == _uncommon(list(control.headers))


def _title_words(title: str) -> set[str]:
    words = [w.lower() for w in _SPACE.split(title.strip()) if len(w) >= TITLE_WORD_MIN_LENGTH]
    return set(words[:TITLE_WORDS])


def title_match(response: HTTPResponse, control: ControlHTTP) -> bool | None:
    if not response.title:
        return None
    return _title_words(response.title) == _title_words(control.title or "")


def _best_match(
    requests: Sequence[HTTPTransaction],
    fingerprints: FingerprintDB | None,
    strength: str,
    matched: dict[int, list[FingerprintMatch]],
) -> tuple[FingerprintMatch, HTTPResponse] | None:
    # Every hop counts: a redirect to a blocking host is itself the evidence (header.location rows).
    # ``matched`` keeps each hop's matches by its index: the vague pass reuses the strong pass's work.
    if fingerprints is None:
        return None
    for index, t in enumerate(requests):
        if t.response is not None:
            if index not in matched:
                matched[index] = fingerprints.matches_http(t.response)
            found = next((m for m in matched[index] if m.strength == strength), None)
            if found is not None:
                return found, t.response
    return None


def judge_http(
    requests: Sequence[HTTPTransaction], control: ControlObservations, fingerprints: FingerprintDB | None
) -> HTTPResult:
    if not requests:
        return HTTPResult(None)
    final, ctl = requests[-1], control.http_request
    control_ok = ctl.failure is None and ctl.status_code is not None
    response = final.response if final.failure is None else None

    if response is not None and ctl.body_sha256 and response.body_sha256 == ctl.body_sha256:
        return _compared(layer_verdict("http.identical_body"), response, ctl)

    matched: dict[int, list[FingerprintMatch]] = {}
    blockpage = _best_match(requests, fingerprints, "strong", matched)
    if blockpage is not None:
        found, page = blockpage
        fp = _blockpage(found, page)
        reason = f"A response matches the blocking fingerprint {found.name} ({found.location})."
        verdict = layer_verdict("http.blockpage", reason=reason, fingerprint=fp)
        return _compared(verdict, response, ctl) if control_ok else HTTPResult(verdict)

    if response is None:
        failure = final.failure or F.UNKNOWN_FAILURE
        if control_ok:
            fp = Fingerprint(technique=V.HTTP_FAILURE, stage="http", failure=failure)
            reason = f"The probe's request failed with {failure}; the control got a response."
            return HTTPResult(layer_verdict("http.failure", reason=reason, fingerprint=fp))
        if ctl.failure == failure:
            return HTTPResult(layer_verdict("http.both_failed"))
        return HTTPResult(layer_verdict("http.control_failed"))

    if not control_ok:
        return HTTPResult(layer_verdict("http.control_failed"))
    result = _compared(layer_verdict("http.same_page"), response, ctl)
    if result.status_code_match and (result.body_length_match or result.headers_match or result.title_match):
        return result

    vague = _best_match(requests, fingerprints, "vague", matched)
    if vague is not None:
        verdict = layer_verdict("http.diff_vague_fingerprint", fingerprint=_blockpage(*vague))
    else:
        fp = Fingerprint(technique=V.HTTP_DIFF, stage="http", body_sha256=response.body_sha256)
        verdict = layer_verdict("http.diff", fingerprint=fp)
    return _compared(verdict, response, ctl)


def _blockpage(found: FingerprintMatch, page: HTTPResponse) -> Fingerprint:
    return Fingerprint(
        technique=V.HTTP_BLOCKPAGE, stage="http", blockpage_id=found.name, body_sha256=page.body_sha256
    )


def _compared(verdict: LayerVerdict, response: HTTPResponse | None, ctl: ControlHTTP) -> HTTPResult:
    if response is None:
        return HTTPResult(verdict)
    return HTTPResult(
        verdict,
        status_code_match=status_code_match(response, ctl),
        body_length_match=body_length_match(response, ctl),
        headers_match=headers_match(response, ctl),
        title_match=title_match(response, ctl),
    )
