"""Interference metrics: a prometheus_client custom collector over the aggregate, computed at scrape time.

Cardinality budget
------------------
Every label value comes from a bounded set, and the caps below are enforced here, in code:

==========================================================  ===========================================
metric                                                      series at most
==========================================================  ===========================================
gatewatch_measurements_total{cc,test,blocking}              (MAX_COUNTRIES + 1) x len(TEST_LABELS)
                                                            x len(BLOCKING_LABELS)
gatewatch_anomalies_total{cc,test,blocking}                 same as above
gatewatch_network_anomaly_ratio{cc,asn}                     (MAX_COUNTRIES + 1)
                                                            x (MAX_NETWORKS_PER_COUNTRY + 1)
gatewatch_network_measurements{cc,asn}                      same as above
gatewatch_interference_scope{cc,domain,technique,scope}     MAX_INTERFERENCE_ROWS
gatewatch_interference_networks_affected{cc,domain,technique}  MAX_INTERFERENCE_ROWS
gatewatch_interference_networks_measured{cc,domain,technique}  MAX_INTERFERENCE_ROWS
gatewatch_interference_packet_evidence{cc,domain,rule,supports}  MAX_INTERFERENCE_ROWS
gatewatch_interference_scheme_urls{cc,domain,scheme,            len(URL_SCHEMES) x MAX_INTERFERENCE_ROWS
                                   technique,scope}
gatewatch_countries_gateway_interference                    1
gatewatch_interference_rows_unexported                      1
==========================================================  ===========================================

``SERIES_BUDGET`` is the sum (under 9,500). The rules behind it:

- ``cc``: the first ``MAX_COUNTRIES`` countries seen keep their own label for the collector's lifetime (so
  counters stay monotonic); any later country is ``other``.
- ``test``: one of ``TEST_LABELS`` (a fixed list), else ``other``.
- ``asn``: per country, the ``MAX_NETWORKS_PER_COUNTRY`` networks with the most judged measurements in the
  window; the rest are summed into ``asn="other"``. Anything not shaped like ``AS1234`` is ``other`` too.
- ``domain``: only for rows whose current scope is ``gateway`` or ``isp``, at most
  ``MAX_DOMAINS_PER_COUNTRY`` per country and ``MAX_INTERFERENCE_ROWS`` in all (gateway rows first, then
  by networks affected); a domain that is not a plain host name (an IP literal, say) is never a label.
  Rows left out are counted in ``gatewatch_interference_rows_unexported``. Countries labelled ``other``
  get no interference rows (their rows could not be told apart).
- per-URL attribution reaches the metrics without a URL label (a path is free text): the domain gauges
  carry each domain's roll-up (interfered with when any of its URLs is), and
  ``gatewatch_interference_scheme_urls`` splits an exported domain by scheme (``http``/``https``; other
  schemes are not exported): how many of that scheme's URLs have interference, with the scope and
  technique of the most serious one. That is what tells Host filtering of ``http://`` from SNI filtering of
  ``https://`` on one dashboard. The per-URL rows themselves are in ``GET /api/v1/interference?per=url``.
- ``technique``: one of ``TECHNIQUE_LABELS``: every technique of :mod:`gatewatch.core.vocabulary` (so
  each is its own series), ``unknown`` when the verdict has none, ``other`` for a name outside the
  vocabulary. It does not multiply the budget: a row has one technique, and rows are capped.
- ``blocking``: the vocabulary's ``BLOCKING_LABELS``, and ``other``.
- ``rule``, ``supports``: a packet-evidence rule id of :mod:`gatewatch.analysis.packet_evidence` and what
  it supports (``gateway``, ``isp``, ``none``); only for exported rows that have packet evidence.

Never an IP address, an agent key, a full URL or free text.

Scrape cost: ``collect()`` reads the aggregate's snapshot (refreshed at most every few seconds, within a
key budget) and rebuilds the families only when the snapshot changed, and then not from scratch: the
merged totals follow the keys whose counts changed, and a country's networks are ranked again only when
they changed (an upload touches one or two countries; tests check the result equals a fresh build). The
/metrics page (collector/exposition.py) asks ``cache_key()`` whether its text must be rendered again and
renders it from ``series()`` (label-value tuples: no Metric, no dictionary per sample); ``collect()`` gives
the same families as prometheus_client Metrics, for ``generate_latest``, OpenMetrics and
``get_sample_value``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal
from urllib.parse import urlsplit

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gatewatch.analysis.attribution import InterferenceRow
from gatewatch.analysis.packet_evidence import PACKET_RULES
from gatewatch.analysis.url_rollup import seriousness
from gatewatch.core import vocabulary

from .aggregate import AggregateSnapshot, InterferenceAggregate
from .exposition import SeriesFamily

__all__ = [
    "BLOCKING_LABELS",
    "MAX_COUNTRIES",
    "MAX_DOMAINS_PER_COUNTRY",
    "MAX_INTERFERENCE_ROWS",
    "MAX_NETWORKS_PER_COUNTRY",
    "METRIC_NAMES",
    "SERIES_BUDGET",
    "TECHNIQUE_LABELS",
    "URL_SCHEMES",
    "TEST_LABELS",
    "InterferenceCollector",
    "register_interference_metrics",
    "series_count",
]

OTHER = "other"
MAX_COUNTRIES = 100
MAX_NETWORKS_PER_COUNTRY = 10
MAX_DOMAINS_PER_COUNTRY = 20
MAX_INTERFERENCE_ROWS = 500
TEST_LABELS = ("web", "web_connectivity", OTHER)
# The vocabulary's lists, whole: a value missing here would reach dashboards as "other".
BLOCKING_LABELS = (*vocabulary.BLOCKING_LABELS, OTHER)
UNKNOWN_TECHNIQUE = "unknown"  # a row whose verdict names no technique
TECHNIQUE_LABELS = (*vocabulary.TECHNIQUES, UNKNOWN_TECHNIQUE, OTHER)
URL_SCHEMES = ("http", "https")

MEASUREMENTS = "gatewatch_measurements"  # exposed with the _total suffix
ANOMALIES = "gatewatch_anomalies"
NETWORK_RATIO = "gatewatch_network_anomaly_ratio"
NETWORK_MEASUREMENTS = "gatewatch_network_measurements"
SCOPE = "gatewatch_interference_scope"
AFFECTED = "gatewatch_interference_networks_affected"
MEASURED = "gatewatch_interference_networks_measured"
SCHEME_URLS = "gatewatch_interference_scheme_urls"
COUNTRIES_GATEWAY = "gatewatch_countries_gateway_interference"
UNEXPORTED = "gatewatch_interference_rows_unexported"
PACKET_EVIDENCE = "gatewatch_interference_packet_evidence"  # issue 17
# Names as they appear in /metrics (and so in PromQL).
METRIC_NAMES = (
    MEASUREMENTS + "_total",
    ANOMALIES + "_total",
    NETWORK_RATIO,
    NETWORK_MEASUREMENTS,
    SCOPE,
    AFFECTED,
    MEASURED,
    SCHEME_URLS,
    COUNTRIES_GATEWAY,
    UNEXPORTED,
    PACKET_EVIDENCE,
)

_PER_COUNTRY_TESTS = (MAX_COUNTRIES + 1) * len(TEST_LABELS) * len(BLOCKING_LABELS)
_PER_NETWORK = (MAX_COUNTRIES + 1) * (MAX_NETWORKS_PER_COUNTRY + 1)
SERIES_BUDGET = 2 * _PER_COUNTRY_TESTS + 2 * _PER_NETWORK + (4 + len(URL_SCHEMES)) * MAX_INTERFERENCE_ROWS + 2

_CountryLabel = Callable[[str], str]
_CC = re.compile(r"^[A-Z]{2}$")
_ASN = re.compile(r"^AS\d{1,10}$")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
_TESTS = frozenset(TEST_LABELS)
_BLOCKINGS = frozenset(BLOCKING_LABELS)
_TECHNIQUES = frozenset(TECHNIQUE_LABELS)


def _technique(value: str | None) -> str:
    if value is None:
        return UNKNOWN_TECHNIQUE
    return value if value in _TECHNIQUES else OTHER


@functools.lru_cache(maxsize=8192)  # every network of every snapshot: a lookup, not a regex, per scrape
def _asn(value: str) -> str:
    return value if _ASN.match(value) else OTHER


@functools.lru_cache(maxsize=8192)
def _is_hostname(value: str) -> bool:
    """A plain lower-case host name. Its last label must hold a letter, so no IPv4 literal passes (and an
    IPv6 literal has colons)."""
    labels = value.split(".")
    return (
        0 < len(value) <= 253
        and all(_HOST_LABEL.match(label) for label in labels)
        and any(c.isalpha() for c in labels[-1])
    )


class InterferenceCollector(Collector):
    """Reads ``aggregate.snapshot()`` at scrape time; label sets are bounded as the module says."""

    def __init__(self, aggregate: InterferenceAggregate) -> None:
        self._aggregate = aggregate
        self._countries: dict[str, str] = {}  # cc -> its label, stable for the collector's lifetime
        self._built_for: int | None = None
        self._series: list[SeriesFamily] = []
        self._families: list[Metric] | None = None  # the Metric form of _series, made when asked
        self._networks: _NetworkMemo = {}  # each country's capped networks, until its networks change
        self._totals = _MergedTotals()
        # /metrics renders in a worker thread; two scrapes at once must not interleave the label bookkeeping.
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering does not compute anything.
        return [family.to_metric() for family in _series_families()]

    def cache_key(self) -> int:
        """Changes whenever ``collect()`` may give something new (collector/exposition.py keeps the rendered
        text until then): the snapshot's generation, refreshed at most every refresh_interval."""
        with self._lock:
            return self._aggregate.snapshot().generation

    def series(self) -> list[SeriesFamily]:
        """The families as label-value pairs (what collector/exposition.py renders the page from)."""
        with self._lock:
            return self._current()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            series = self._current()
            if self._families is None:
                self._families = [family.to_metric() for family in series]
            return self._families

    def _current(self) -> list[SeriesFamily]:
        snapshot = self._aggregate.snapshot()
        if snapshot.generation != self._built_for:
            self._series = self._build(snapshot)
            self._families = None
            self._built_for = snapshot.generation
        return self._series

    def _country(self, cc: str) -> str:
        label = self._countries.get(cc)
        if label is None:
            ok = _CC.match(cc) and len(self._countries) < MAX_COUNTRIES
            label = self._countries[cc] = cc if ok else OTHER
        return label

    def _build(self, snapshot: AggregateSnapshot) -> list[SeriesFamily]:
        (
            measurements,
            anomalies,
            ratio,
            network_measurements,
            scope,
            affected,
            measured,
            scheme_urls,
            gateway,
            unexported,
            packet_evidence,
        ) = families = _series_families()
        for labels, (count, anomalous) in self._totals.update(snapshot.totals, self._country):
            measurements.samples.append((labels, count))
            anomalies.samples.append((labels, anomalous))

        for (cc, asn), (judged, anomalous) in _capped_networks(snapshot, self._country, self._networks):
            ratio.samples.append(((cc, asn), anomalous / judged))
            network_measurements.samples.append(((cc, asn), judged))

        exported, left_out = _capped_rows(snapshot.rows, self._country)
        for row in exported:
            cc, technique = self._country(row.cc), _technique(row.technique)
            scope.samples.append(((cc, row.domain, technique, row.scope), 1))
            affected.samples.append(((cc, row.domain, technique), row.networks_affected))
            measured.samples.append(((cc, row.domain, technique), row.networks_measured))
            evidence = row.packet_evidence
            if evidence and evidence.get("rule_id") in PACKET_RULES:
                supports = evidence.get("supports") or "none"
                packet_evidence.samples.append(
                    ((cc, row.domain, evidence["rule_id"], supports), evidence["networks_located"])
                )
        for (cc, domain, scheme), (count, worst) in _by_scheme(snapshot.url_rows, exported).items():
            labels = (self._country(cc), domain, scheme, _technique(worst.technique), worst.scope)
            scheme_urls.samples.append((labels, count))
        gateway.samples.append(((), len({r.cc for r in snapshot.rows if r.scope == "gateway"})))
        unexported.samples.append(((), left_out))
        # A family equal to the last one is handed out as that very object: the page keeps its text
        # (collector/exposition.py render_series). Values are counts and ratios of counts: never -0.0 or
        # NaN, so equal samples print alike.
        previous = {family.name: family for family in self._series}
        return [
            family if previous.get(family.name) != family else previous[family.name] for family in families
        ]


_Totals = dict[tuple[str, str, str], tuple[int, int]]


class _MergedTotals:
    """The snapshot's (country, test, blocking) counts under their labels, kept up to date from the keys whose
    counts changed since the last snapshot (an upload changes a few of thousands): the same sums, in the
    same order, as merging every key again."""

    def __init__(self) -> None:
        self._source: _Totals = {}  # the last snapshot's totals (read-only: a snapshot is never mutated)
        self._merged: dict[tuple[str, str, str], list[int]] = {}
        self._order: list[tuple[str, str, str]] = []  # sorted(self._merged)

    def update(self, totals: _Totals, country: _CountryLabel) -> list[tuple[tuple[str, str, str], list[int]]]:
        source = self._source
        changed = [(key, value) for key, value in totals.items() if source.get(key) != value]
        if len(totals) - len(source) != sum(key not in source for key, _value in changed):
            # a key left (the counts only grow in the aggregate, but be exact): merge everything again
            self._source, self._merged, self._order = {}, {}, []
            return self.update(totals, country)
        # Countries are labelled in order of first appearance; among those that first appear in the same
        # snapshot, the busiest go first (so a cap, if reached, leaves the smallest ones as "other"). A
        # country new in this snapshot has all its keys among the changed ones.
        seen: dict[str, int] = defaultdict(int)
        for (cc, _test, _blocking), (count, _anomalous) in changed:
            seen[cc] += count
        for cc in sorted(seen, key=lambda c: (-seen[c], c)):
            country(cc)
        added = False
        for key, (count, anomalous) in changed:
            cc, test, blocking = key
            labels = (
                country(cc),
                test if test in _TESTS else OTHER,
                blocking if blocking in _BLOCKINGS else OTHER,
            )
            merged = self._merged.get(labels)
            if merged is None:
                merged = self._merged[labels] = [0, 0]
                added = True
            old_count, old_anomalous = source.get(key, (0, 0))
            merged[0] += count - old_count
            merged[1] += anomalous - old_anomalous
        self._source = totals
        if added:
            self._order = sorted(self._merged)
        return [(labels, self._merged[labels]) for labels in self._order]


_CC_TEST_BLOCKING = ("cc", "test", "blocking")
_ROW = ("cc", "domain", "technique")
# (family type, name, help, labels), in the order _build fills them.
_FAMILY_TABLE: tuple[tuple[Literal["counter", "gauge"], str, str, tuple[str, ...]], ...] = (
    ("counter", MEASUREMENTS, "Measurements, by country, test and verdict", _CC_TEST_BLOCKING),
    ("counter", ANOMALIES, "Anomalies, by country, test and verdict", _CC_TEST_BLOCKING),
    ("gauge", NETWORK_RATIO, "Anomalous share of a network's judged measurements in the window",
     ("cc", "asn")),
    ("gauge", NETWORK_MEASUREMENTS, "Judged measurements in the window per network", ("cc", "asn")),
    ("gauge", SCOPE, "1 per (country, domain) whose interference is now gateway- or ISP-level",
     ("cc", "domain", "technique", "scope")),
    ("gauge", AFFECTED, "Networks showing the interference (gateway: the same fingerprint)", _ROW),
    ("gauge", MEASURED, "Networks that measured the domain in the window", _ROW),
    ("gauge", SCHEME_URLS, "URLs of the domain and scheme with gateway- or ISP-level interference "
     "(technique, scope: the most serious one's)", ("cc", "domain", "scheme", "technique", "scope")),
    ("gauge", COUNTRIES_GATEWAY, "Countries with at least one gateway-level interference now", ()),
    ("gauge", UNEXPORTED, "Gateway or ISP rows left out of the metrics by the budget", ()),
    ("gauge", PACKET_EVIDENCE, "Networks whose packet traces located an injector, by evidence rule",
     ("cc", "domain", "rule", "supports")),
)  # fmt: skip


def _series_families() -> list[SeriesFamily]:
    return [SeriesFamily(name, kind, help_text, labels) for kind, name, help_text, labels in _FAMILY_TABLE]


_CappedNetworks = list[tuple[tuple[str, str], tuple[int, int]]]
# country label -> (its networks as the snapshot gave them, what they came to): a country whose networks did
# not change since the last snapshot is not ranked again (an upload touches one or two countries)
_NetworkMemo = dict[str, tuple[list[tuple[str, int, int]], _CappedNetworks]]


def _capped_networks(
    snapshot: AggregateSnapshot, country: _CountryLabel, memo: _NetworkMemo | None = None
) -> _CappedNetworks:
    """Per country label, the busiest networks by name and the rest summed as ``other``."""
    per_country: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for (cc, asn), (judged, anomalous) in snapshot.networks.items():
        per_country[country(cc)].append((_asn(asn), judged, anomalous))
    memo = {} if memo is None else memo
    for gone in memo.keys() - per_country.keys():
        del memo[gone]
    out: _CappedNetworks = []
    for cc in sorted(per_country):
        networks = per_country[cc]
        known = memo.get(cc)
        if known is None or known[0] != networks:
            known = memo[cc] = (networks, _capped_country(cc, networks))
        out += known[1]
    return out


def _capped_country(cc: str, networks: list[tuple[str, int, int]]) -> _CappedNetworks:
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for asn, judged, anomalous in networks:
        merged[asn][0] += judged
        merged[asn][1] += anomalous
    rest = merged.pop(OTHER, [0, 0])
    ranked = sorted(merged.items(), key=lambda item: (-item[1][0], item[0]))
    out: _CappedNetworks = []
    for asn, (judged, anomalous) in ranked[:MAX_NETWORKS_PER_COUNTRY]:
        out.append(((cc, asn), (judged, anomalous)))
    for _asn_name, (judged, anomalous) in ranked[MAX_NETWORKS_PER_COUNTRY:]:
        rest[0] += judged
        rest[1] += anomalous
    if rest[0]:
        out.append(((cc, OTHER), (rest[0], rest[1])))
    return out


def _capped_rows(
    rows: Sequence[InterferenceRow], country: _CountryLabel
) -> tuple[list[InterferenceRow], int]:
    """The rows that get series: gateway first, then by networks affected; capped per country and in all."""
    eligible = [r for r in rows if r.scope in ("gateway", "isp")]
    ranked = sorted(eligible, key=lambda r: (r.scope != "gateway", -r.networks_affected, r.cc, r.domain))
    per_country: dict[str, int] = defaultdict(int)
    kept: list[InterferenceRow] = []
    for row in ranked:
        cc = country(row.cc)
        if cc == OTHER or not _is_hostname(row.domain) or len(kept) >= MAX_INTERFERENCE_ROWS:
            continue
        if per_country[cc] >= MAX_DOMAINS_PER_COUNTRY:
            continue
        per_country[cc] += 1
        kept.append(row)
    return kept, len(eligible) - len(kept)


def _by_scheme(
    url_rows: Sequence[InterferenceRow], exported: Sequence[InterferenceRow]
) -> dict[tuple[str, str, str], tuple[int, InterferenceRow]]:
    """Per exported (country, domain) and scheme: how many URLs have interference, and the most serious."""
    domains = {(row.cc, row.domain) for row in exported}
    out: dict[tuple[str, str, str], tuple[int, InterferenceRow]] = {}
    for row in sorted(url_rows, key=seriousness):
        scheme = urlsplit(row.input or "").scheme.lower()
        if (row.cc, row.domain) not in domains or scheme not in URL_SCHEMES:
            continue
        key = (row.cc, row.domain, scheme)
        count, worst = out.get(key, (0, row))
        out[key] = (count + 1, worst)
    return out


def register_interference_metrics(
    registry: CollectorRegistry, aggregate: InterferenceAggregate
) -> InterferenceCollector:
    """Create the collector for ``aggregate`` and register it on ``registry`` (no global registry)."""
    collector = InterferenceCollector(aggregate)
    registry.register(collector)
    return collector


def series_count(families: Iterable[Metric]) -> int:
    """How many samples (series) the families carry: what the budget bounds."""
    return sum(len(f.samples) for f in families)
