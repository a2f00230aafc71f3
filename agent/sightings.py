"""Which of a pass's results make a sighting, and the sighting's padded body (pure: no I/O).

A sighting (``POST /api/v1/confirm``, :class:`~gatewatch.core.wire.Sighting`) tells the collector only which
test-list URLs a scheduled pass just found anomalous in the agent's country, so that the country's agents
confirm them at once while this pass's measurements keep their upload delay. What counts:

- a URL with a verdict of blocking (a layer), judged against a control that answered: a URL whose control
  failed, or with no verdict, is not an anomaly;
- only when the line evidently works: at least one URL of the same pass was accessible. A pass in which
  every URL failed says the volunteer's connection is down (or the pass was one URL long), not that the
  gateway blocks; the measurements still go up with their delay and the collector judges them;
- only http(s) URLs the wire allows, at most ``MAX_SIGHTING_URLS`` (the first ones, in the pass's order);
- never for the withheld country (``ZZ``): the collector lists per country.

The body is padded with JSON whitespace to the next of :data:`BODY_BUCKETS`, so that its length (which an
on-path observer sees, even through TLS) does not tell how many URLs were sighted: in practice every
sighting is 4 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gatewatch.core.vocabulary import WITHHELD_CC
from gatewatch.core.wire import MAX_SIGHTING_BODY, MAX_SIGHTING_URLS, Sighting

__all__ = ["BODY_BUCKETS", "MAX_URL_LENGTH", "UrlOutcome", "choose_sighting", "sighting_body"]

BODY_BUCKETS = (4096, 8192, MAX_SIGHTING_BODY)  # bytes: each sighting's body is exactly one of these
MAX_URL_LENGTH = 1024  # the wire's bound on one sighted URL


class UrlOutcome(Protocol):
    """What a pass found for one URL, as :class:`~gatewatch.agent.run_records.UrlResult` holds it (named
    by shape: run_records imports the upload, which imports the collector calls, which import this)."""

    @property
    def url(self) -> str: ...
    @property
    def blocking(self) -> str | bool | None: ...
    @property
    def control_failure(self) -> str | None: ...
    @property
    def blocked(self) -> bool: ...


def _anomalous(result: UrlOutcome) -> bool:
    return result.blocked and result.control_failure is None


def choose_sighting(results: Iterable[UrlOutcome], cc: str) -> Sighting | None:
    """The sighting a pass's ``results`` make for country ``cc``, or None (nothing anomalous, the line
    looks down, or the country is withheld)."""
    if not cc or cc.upper() == WITHHELD_CC:
        return None
    results = list(results)
    if not any(result.blocking is False for result in results):
        return None  # nothing reachable at all: the volunteer's line, not censorship
    urls = [
        r.url
        for r in results
        if _anomalous(r) and r.url.startswith(("http://", "https://")) and len(r.url) <= MAX_URL_LENGTH
    ]
    urls = list(dict.fromkeys(urls))[:MAX_SIGHTING_URLS]
    return Sighting(cc=cc.upper(), urls=urls) if urls else None


def sighting_body(sighting: Sighting) -> bytes:
    """``sighting`` as JSON padded with spaces to the smallest bucket it fits; URLs are dropped from the end
    while it would exceed the largest (only URLs of many multi-byte characters could)."""
    urls = list(sighting.urls)
    while True:
        body = sighting.model_copy(update={"urls": urls}).model_dump_json().encode()
        bucket = next((size for size in BODY_BUCKETS if len(body) <= size), None)
        if bucket is not None:
            return body + b" " * (bucket - len(body))
        urls.pop()  # a single URL of at most MAX_URL_LENGTH characters always fits the largest bucket
