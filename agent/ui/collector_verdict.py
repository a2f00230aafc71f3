"""The collector's own verdicts on the volunteer's uploaded measurements, for the results pages.

The collector re-derives every verdict and never trusts the agent's; once a measurement is uploaded the
page asks the public listing (``GET /api/v1/measurements``) filtered by the time the measurement started
(and by its URL for one measurement, by its network and country for a run) and picks the rows with the
volunteer's measurement uids. Asked when the volunteer opens a run or a measurement, never in the
background, with short timeouts (a blocked collector must not hang the page) and a bounded number of
pages. The answer is read with the wire model the collector answers with (:class:`MeasurementPage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gatewatch.core.wire import MeasurementPage, MeasurementRow

from ..collector_api import BAD_ANSWER, TOLERATED_EXTRA, api_url
from ..http_client import HttpClient, HttpClientError, Timeouts

__all__ = ["CollectorVerdicts", "fetch_collector_verdicts", "listing_window"]

_TIMEOUTS = Timeouts(connect=5.0, read=10.0, total=15.0)
_MAX_PAGES = 5  # of up to 1000 rows each: a run's window on a busy collector holds others' measurements too


@dataclass(frozen=True)
class CollectorVerdicts:
    rows: dict[str, MeasurementRow] = field(default_factory=dict)  # by measurement_uid, ours only
    failure: str | None = None  # why the collector could not be asked (rows may then be partial)


def _utc(text: str) -> datetime:
    """A stored start time (``2026-12-04T10:00:00Z``, or OONI's ``2026-12-04 10:00:00``), to the second."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.utcoffset():
        raise ValueError("not a UTC time")
    return when.replace(tzinfo=None, microsecond=0)


def listing_window(start_times: list[str]) -> tuple[str, str]:
    """``since`` and ``until`` covering these start times (whole seconds). Raises ValueError."""
    times = [_utc(text) for text in start_times]
    if not times:
        raise ValueError("no start time")
    since, until = min(times), max(times) + timedelta(seconds=1)
    return since.strftime("%Y-%m-%dT%H:%M:%SZ"), until.strftime("%Y-%m-%dT%H:%M:%SZ")


async def fetch_collector_verdicts(
    bases: list[str],
    uids: set[str],
    start_times: list[str],
    filters: dict[str, str],
    *,
    source_address: str | None = None,
    ca_file: str | None = None,
) -> CollectorVerdicts:
    """The collector's rows for ``uids`` (measurements that started at ``start_times``), asked with the
    listing's ``filters`` (``input``, ``probe_asn``, ``probe_cc``) at the first collector that answers."""
    try:
        since, until = listing_window(start_times)
    except ValueError:
        return CollectorVerdicts(failure="the measurements' start times cannot be read")
    if not bases:
        return CollectorVerdicts(failure="no collector is set")
    failure = BAD_ANSWER
    client = HttpClient(source_address=source_address, ca_file=ca_file, max_concurrent=1, timeouts=_TIMEOUTS)
    async with client:
        for base in bases:
            found: dict[str, MeasurementRow] = {}
            params = {**filters, "since": since, "until": until, "limit": "1000"}
            for _ in range(_MAX_PAGES):
                try:
                    response = await client.request("GET", api_url(base, "measurements"), params=params)
                except HttpClientError as exc:
                    failure = exc.failure
                    break
                if response.status != 200:
                    failure = f"http_{response.status}"
                    break
                try:
                    page = MeasurementPage.model_validate(response.json(), extra=TOLERATED_EXTRA)
                except ValueError:  # not JSON, or not the listing's shape
                    failure = BAD_ANSWER
                    break
                found.update(
                    {row.measurement_uid: row for row in page.results if row.measurement_uid in uids}
                )
                if page.next_cursor is None or len(found) == len(uids):
                    return CollectorVerdicts(found)
                params = {**params, "cursor": page.next_cursor}
            else:
                return CollectorVerdicts(found, "more measurements in that time than the page reads")
    return CollectorVerdicts(failure=failure)
