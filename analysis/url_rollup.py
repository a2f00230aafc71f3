"""From URLs to their domain: a domain is interfered with when any of its URLs is (pure).

Attribution decides per (country, input URL), because that is what a censor acts on: plaintext-HTTP Host
filtering with a blockpage leaves ``https://`` of the same host working, SNI filtering leaves ``http://``
working, and a block can hit one path only. An operator still thinks in domains, so each domain also gets
one row, rolled up from its URL rows by these rules:

- the domain row is its *most serious* URL row: ``gateway`` before ``isp`` before ``insufficient-data``
  before ``none`` (so a domain is ``none`` only when every one of its URLs is), then the URL seen affected
  in more networks, then the one seen most recently, then the URL itself (for a stable answer);
- a URL no network measured in the window (nothing judged, nothing that speaks for a network) takes no
  part, unless no URL of the domain was measured;
- it keeps that URL's decision (rule, evidence, fingerprint, networks), says which URL decided
  (``decided_by``), and counts the domain's URLs (``urls_measured``) and those with interference
  (``urls_affected``: their scope is ``gateway`` or ``isp``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Protocol, TypeVar

from gatewatch.core.vocabulary import Scope

__all__ = ["INTERFERENCE_SCOPES", "SCOPE_SERIOUSNESS", "UrlRow", "roll_up", "seriousness"]

# Most serious first.
SCOPE_SERIOUSNESS: tuple[Scope, ...] = ("gateway", "isp", "insufficient-data", "none")
# The scopes that say where interference is.
INTERFERENCE_SCOPES: frozenset[Scope] = frozenset({"gateway", "isp"})


class UrlRow(Protocol):
    """What the roll-up reads of a URL's attribution row (``attribution.InterferenceRow``)."""

    @property
    def scope(self) -> Scope: ...
    @property
    def input(self) -> str | None: ...
    @property
    def networks_affected(self) -> int: ...
    @property
    def networks_measured(self) -> int: ...
    @property
    def last_seen(self) -> datetime | None: ...


RowT = TypeVar("RowT", bound=UrlRow)


def seriousness(row: UrlRow) -> tuple[int, int, float, str]:
    """A sort key: the most serious row sorts first."""
    last = row.last_seen.timestamp() if row.last_seen is not None else float("-inf")
    return (SCOPE_SERIOUSNESS.index(row.scope), -row.networks_affected, -last, row.input or "")


def roll_up(url_rows: Iterable[RowT], urls_measured: int | None = None) -> RowT:
    """The domain row of a domain's URL rows (one country, one domain; at least one row).

    ``urls_measured`` is how many URLs of the domain were measured in the window when ``url_rows`` holds
    only some of them (the collector keeps only the rows with interference); by default, all rows given."""
    given = list(url_rows)
    if not given:
        raise ValueError("roll_up needs at least one URL row")
    rows = sorted([row for row in given if row.networks_measured] or given, key=seriousness)
    deciding = rows[0]
    affected = sum(1 for row in rows if row.scope in INTERFERENCE_SCOPES)
    measured = max(urls_measured if urls_measured is not None else 0, len(rows))
    return replace(  # type: ignore[type-var]  # a dataclass row, as every caller's is
        deciding, input=None, decided_by=deciding.input, urls_measured=measured, urls_affected=affected
    )
