"""The /metrics page: Prometheus' text format, rendered once per change and served from a cache.

Rendering walks every series; at the interference metrics' cardinality budget (~8k series) prometheus_client's
``generate_latest`` takes tens of milliseconds, holding the GIL, so back-to-back scrapes slowed ingest.
Here a registry's page is kept between scrapes:

- The page is the concatenation of each collector's text, in the registry's order: exactly what
  ``generate_latest`` gives (tests/collector/test_exposition.py proves it byte for byte).
- A collector that has a ``cache_key()`` method (the interference collector: its aggregate snapshot's
  generation) is rendered again only when that key changes. Its snapshot refreshes at most every
  ``refresh_interval`` (5 s), which is also the staleness bound of those series. The ingest metrics are
  keyed too (collector/tracked_metrics.py: a change count bumped after every change), so they are never
  stale. Collectors without a key are rendered at every scrape.
- Each sample's line is remembered with its value, so a re-render after a change formats only the values
  that changed. The work runs in a worker thread; the interpreter hands the GIL to the event loop's thread
  every switch interval (5 ms), and a time.sleep(0) between families would give the CPU away on a busy
  machine (about a millisecond each, measured), so there is none.
- A scraper that accepts gzip (Prometheus does) gets one gzip member made of deflate pieces: a keyed
  collector's piece is compressed once per version of its text, the few kB of the rest at each change.

Content negotiation: the cached page is the text format 0.0.4, served when the ``Accept`` header admits it
(no header, ``*/*``, ``text/*``, ``text/plain`` without another version or escaping). Any other
request (OpenMetrics, a text version with its own escaping) and a registry in multiprocess mode (or with
target info) go through prometheus_client's own ``choose_encoder`` and rendering, unchanged.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import threading
import weakref
import zlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .scrape_pacer import ScrapePacer

__all__ = [
    "MetricsPage",
    "SeriesFamily",
    "accepts_cached_text",
    "accepts_gzip",
    "metrics_page",
    "render_families",
    "render_series",
    "serve_metrics",
]

# Samples prometheus_client's text format moves to a gauge family of their own after the family's samples.
_SPLIT_SUFFIXES = ("_created", "_gsum", "_gcount")
_LINE_CACHE_LIMIT = 50_000  # lines remembered per collector: above the series budget
_GZIP_LEVEL = 1  # the page at the budget: 0.7 ms, 38 kB (level 6: 7 ms, 30 kB; measured)
_TYPE_IN_TEXT = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_NAME_SUFFIX = {"counter": "_total", "info": "_info"}


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


# (sample name, labels) -> (value, timestamp, its line): a value that did not change is not formatted again
_Lines = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, object, str]]
# (sample name, label values) -> (value, its line), for SeriesFamily samples
_SeriesLines = dict[tuple[str, tuple[str, ...]], tuple[float, str]]
# family name -> (the SeriesFamily rendered last, its text)
_FamilyTexts = dict[str, tuple["SeriesFamily", str]]


def _same(old: float, new: float) -> bool:
    """Whether ``new`` prints as ``old`` did (floatToGoString converts to float first): equal, and not 0.0
    against -0.0."""
    if old != new:
        return False
    return new != 0 or math.copysign(1, old) == math.copysign(1, new)


def _sample_line(name: str, labels: dict[str, str], value: float, timestamp: object) -> str:
    if labels:
        pairs = ",".join(f'{escape_label_name(k)}="{_label_value(v)}"' for k, v in sorted(labels.items()))
        prefix = f"{escape_metric_name(name)}{{{pairs}}} "
    else:
        prefix = escape_metric_name(name) + " "
    end = f" {int(float(timestamp) * 1000):d}\n" if timestamp is not None else "\n"  # type: ignore[arg-type]
    return prefix + floatToGoString(value) + end


def _render_family(metric: Metric, lines: _Lines, out: list[str]) -> None:
    """One family as ``generate_latest`` writes it (the default escaping), appended to ``out``."""
    mname = metric.name + _NAME_SUFFIX.get(metric.type, "")
    mtype = _TYPE_IN_TEXT.get(metric.type, metric.type)
    documentation = _help(metric.documentation)
    name = escape_metric_name(mname)
    out.append(f"# HELP {name} {documentation}\n# TYPE {name} {mtype}\n")
    split: dict[str, list[str]] = {}
    split_names = {metric.name + suffix: suffix for suffix in _SPLIT_SUFFIXES}
    for sample in metric.samples:
        key = (sample.name, tuple(sample.labels.items()))
        value, timestamp = sample.value, sample.timestamp
        known = lines.get(key)
        if known is not None and _same(known[0], value) and known[1] == timestamp:
            line = known[2]
        else:
            line = _sample_line(sample.name, sample.labels, value, timestamp)
            lines[key] = (value, timestamp, line)
        suffix = split_names.get(sample.name)
        if suffix is None:
            out.append(line)
        else:
            split.setdefault(suffix, []).append(line)
    for suffix, split_lines in sorted(split.items()):
        name = escape_metric_name(metric.name + suffix)
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} gauge\n")
        out.extend(split_lines)


@dataclass(frozen=True)
class SeriesFamily:
    """A counter or gauge family as (label values, value) pairs: what a collector with many series hands the
    page directly (no Metric, no dictionary per sample). Counters carry no ``_created`` sample."""

    name: str  # without the counter's _total
    type: Literal["counter", "gauge"]
    documentation: str
    labelnames: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def to_metric(self) -> Metric:
        kind = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        metric = kind(self.name, self.documentation, labels=list(self.labelnames))
        for values, value in self.samples:
            metric.add_metric(values, value)
        return metric


def render_series(
    families: Iterable[SeriesFamily], lines: _SeriesLines, texts: _FamilyTexts | None = None
) -> str:
    """Series families in the text format, exactly as ``generate_latest`` writes their ``to_metric()``.
    ``lines`` keeps each sample's line with its value; ``texts`` each family's text with the family: a
    collector that hands the very same ``SeriesFamily`` object again (its samples unchanged, as the
    interference collector does) gets that text back without a walk over its samples."""
    out: list[str] = []
    texts = {} if texts is None else texts
    for family in families:
        known = texts.get(family.name)
        if known is not None and known[0] is family:
            out.append(known[1])
            continue
        start = len(out)
        _render_series_family(family, lines, out)
        texts[family.name] = (family, "".join(out[start:]))
    if len(lines) > _LINE_CACHE_LIMIT:
        lines.clear()
    return "".join(out)


def _render_series_family(family: SeriesFamily, lines: _SeriesLines, out: list[str]) -> None:
    name = family.name + _NAME_SUFFIX.get(family.type, "")
    escaped = escape_metric_name(name)
    out.append(f"# HELP {escaped} {_help(family.documentation)}\n# TYPE {escaped} {family.type}\n")
    labels = [escape_label_name(label) for label in family.labelnames]
    order = sorted(range(len(labels)), key=lambda i: family.labelnames[i])
    for values, value in family.samples:
        key = (name, values)
        known = lines.get(key)
        if known is not None and _same(known[0], value):
            out.append(known[1])
            continue
        pairs = ",".join(f'{labels[i]}="{_label_value(values[i])}"' for i in order)
        line = f"{escaped}{{{pairs}}} " if pairs else escaped + " "
        line += floatToGoString(value) + "\n"
        lines[key] = (value, line)
        out.append(line)


def render_families(families: Iterable[Metric], lines: _Lines | None = None) -> str:
    """Families in Prometheus' text format 0.0.4, as ``generate_latest`` writes them; ``lines`` keeps each
    sample's line with its value between calls."""
    out: list[str] = []
    lines = {} if lines is None else lines
    for metric in families:
        _render_family(metric, lines, out)
    if len(lines) > _LINE_CACHE_LIMIT:
        lines.clear()
    return "".join(out)


@dataclass
class _Part:
    key: Hashable
    data: bytes  # the collector's text, encoded
    lines: dict  # _Lines, or _SeriesLines for a collector with series()
    texts: _FamilyTexts  # for a collector with series()
    deflated: bytes | None = None  # data as raw deflate blocks, made on the first gzip scrape


# A gzip member with no name and no time (RFC 1952); the deflate stream follows, then CRC-32 and size.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _deflate(data: bytes) -> bytes:
    """``data`` as raw deflate blocks that end on a byte boundary and refer to nothing before them: such
    pieces, joined and closed by a final block, are one valid deflate stream (what pigz does)."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


_FINAL_BLOCK = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)


class MetricsPage:
    """A registry's page, with each keyed collector's text (and its compressed form) kept until its
    ``cache_key()`` changes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._parts: weakref.WeakKeyDictionary[Collector, _Part] = weakref.WeakKeyDictionary()
        self._dynamic_lines: _Lines = {}
        self._lock = threading.Lock()  # one render at a time: they share the caches
        self._segments: list[tuple[bytes, _Part | None]] = []  # the last page, piece by piece
        self._body = b""
        self._gzipped: bytes | None = None
        self.pacer = ScrapePacer()  # used on the event loop only (serve_metrics)

    def cacheable(self) -> bool:
        """False when the page must come from prometheus_client's own rendering: multiprocess collection
        (values live in files another process writes) or a registry this class does not know inside."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
            return False
        if type(self._registry) is not CollectorRegistry or getattr(self._registry, "_target_info", None):
            return False
        return not any(isinstance(c, MultiProcessCollector) for c in self._collectors())

    def _collectors(self) -> list[Collector]:
        # The registry's own order (what CollectorRegistry.collect walks); read under its lock.
        with self._registry._lock:
            return list(self._registry._collector_to_names)

    def _part(self, collector: Collector, key: Hashable) -> _Part:
        part = self._parts.get(collector)
        if part is not None and part.key == key:
            return part
        lines = part.lines if part is not None else {}
        texts = part.texts if part is not None else {}
        series = getattr(collector, "series", None)
        if series is not None:
            text = render_series(series(), lines, texts)
        else:
            text = render_families(collector.collect(), lines)
        # Stored under the key read before collecting: if the collector moved on meanwhile, the next scrape
        # renders once more (never a stale text under a newer key).
        part = self._parts[collector] = _Part(key, text.encode("utf-8"), lines, texts)
        return part

    def render(self) -> bytes:
        """The page now (call it in a worker thread: a keyed collector's re-render walks its series)."""
        with self._lock:
            segments: list[tuple[bytes, _Part | None]] = []
            for collector in self._collectors():
                cache_key = getattr(collector, "cache_key", None)
                if cache_key is None:
                    segments.append(
                        (render_families(collector.collect(), self._dynamic_lines).encode(), None)
                    )
                else:
                    part = self._part(collector, cache_key())
                    segments.append((part.data, part))
            if self._same_segments(segments):
                return self._body  # every piece as last time: no 700 kB join and compare per scrape
            body = b"".join(data for data, _part in segments)
            self._segments = segments
            if body != self._body:
                self._body, self._gzipped = body, None
            return self._body

    def _same_segments(self, segments: list[tuple[bytes, _Part | None]]) -> bool:
        old = self._segments
        return len(old) == len(segments) and all(
            (data is old_data) if part is not None else (old_part is None and data == old_data)
            for (data, part), (old_data, old_part) in zip(segments, old, strict=True)
        )

    def body(self, *, compressed: bool = False) -> bytes:
        """The page now, gzip-compressed if asked. Call it in a worker thread. Compressed, the page is one
        gzip member whose deflate stream is made of pieces: each keyed collector's piece is compressed
        once per version of its text, the rest (a few kB) at every change (zlib lets go of the GIL)."""
        body = self.render()
        if not compressed:
            return body
        with self._lock:
            if self._gzipped is None:  # render() drops it when the page changes
                pieces, crc = [_GZIP_HEADER], 0
                for data, part in self._segments:
                    crc = zlib.crc32(data, crc)
                    if part is None:
                        pieces.append(_deflate(data))
                    else:
                        if part.deflated is None:
                            part.deflated = _deflate(data)
                        pieces.append(part.deflated)
                pieces += [_FINAL_BLOCK, struct.pack("<II", crc, len(self._body) & 0xFFFFFFFF)]
                self._gzipped = b"".join(pieces)
            return self._gzipped


_PAGES: weakref.WeakKeyDictionary[CollectorRegistry, MetricsPage] = weakref.WeakKeyDictionary()
_PAGES_LOCK = threading.Lock()


def metrics_page(registry: CollectorRegistry) -> MetricsPage:
    """The page kept for ``registry`` (one per registry, for as long as the registry lives)."""
    with _PAGES_LOCK:
        page = _PAGES.get(registry)
        if page is None:
            page = _PAGES[registry] = MetricsPage(registry)
        return page


def _media_ranges(header: str) -> Iterable[tuple[str, dict[str, str]]]:
    for item in header.split(","):
        kind, *params = (token.strip() for token in item.split(";"))
        options = {}
        for param in params:
            name, _, value = param.partition("=")
            options[name.strip().lower()] = value.strip().strip('"')
        if kind:
            yield kind.lower(), options


def _q(options: dict[str, str]) -> float:
    try:
        return float(options.get("q", "1"))
    except ValueError:
        return 0.0


def accepts_cached_text(accept: str | None) -> bool:
    """Whether the ``Accept`` header admits the text format 0.0.4 with its default escaping (what the
    cache holds): no header, ``*/*``, ``text/*``, or ``text/plain`` with no other version or escaping."""
    if not accept:
        return True
    for kind, options in _media_ranges(accept):
        if _q(options) <= 0:
            continue
        if kind in ("*/*", "text/*"):
            return True
        if kind == "text/plain" and options.get("version", "0.0.4") == "0.0.4":
            if options.get("escaping", "underscores") == "underscores":
                return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    return any(kind == "gzip" and _q(options) > 0 for kind, options in _media_ranges(accept_encoding or ""))


async def serve_metrics(
    registry: CollectorRegistry, request: web.Request | None = None, *, min_interval: float = 0.0
) -> web.Response:
    """The /metrics answer for ``request`` (none: the plain text format, uncompressed), at most one wave of
    answers every ``min_interval`` seconds (collector/scrape_pacer.py)."""
    headers = request.headers if request is not None else {}
    accept = headers.get("Accept")
    page = metrics_page(registry)
    await page.pacer.wait(min_interval)
    if not accepts_cached_text(accept) or not page.cacheable():
        encoder, content_type = choose_encoder(accept or "")
        body = await asyncio.to_thread(encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
    compressed = accepts_gzip(headers.get("Accept-Encoding"))
    body = await asyncio.to_thread(page.body, compressed=compressed)
    response_headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Vary": "Accept, Accept-Encoding"}
    if compressed:
        response_headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=response_headers)
