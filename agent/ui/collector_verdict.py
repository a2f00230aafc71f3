"""The collector's own verdict on one of the volunteer's uploaded measurements, for its detail page.

The collector re-derives every verdict and never trusts the agent's; once a measurement is uploaded the
page asks the public listing (``GET /api/v1/measurements``, filtered by the measured URL and its start
time) and picks the row with the measurement's uid. Asked when the volunteer opens a measurement, never
in bulk. The answer is read with the wire model the collector answers with (:class:`MeasurementPage`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gatewatch.core.vocabulary import blocking_label
from gatewatch.core.wire import MeasurementPage, MeasurementRow

from ..collector_api import BAD_ANSWER, TOLERATED_EXTRA, api_url, make_session
from ..http_client import HttpClientError

__all__ = ["CollectorVerdict", "fetch_collector_verdict", "listing_window"]


@dataclass(frozen=True)
class CollectorVerdict:
    row: MeasurementRow | None  # None: the collector does not list it (yet)
    failure: str | None = None  # why it could not be asked

    @property
    def blocking_label(self) -> str | None:
        return None if self.row is None else blocking_label(self.row.blocking)


def listing_window(measurement_start_time: str) -> tuple[str, str]:
    """``since`` and ``until`` (the whole second) around a measurement's start time, as its payload
    spells it (``2026-12-04T10:00:00Z``, or OONI's ``2026-12-04 10:00:00``). Raises ValueError."""
    start = datetime.fromisoformat(measurement_start_time.strip().replace("Z", "+00:00"))
    if start.utcoffset():
        raise ValueError("not a UTC time")
    start = start.replace(tzinfo=None, microsecond=0)
    end = start + timedelta(seconds=1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


async def fetch_collector_verdict(
    bases: list[str],
    uid: str,
    url: str,
    measurement_start_time: str,
    *,
    source_address: str | None = None,
    ca_file: str | None = None,
) -> CollectorVerdict:
    try:
        since, until = listing_window(measurement_start_time)
    except ValueError:
        return CollectorVerdict(None, "the measurement's start time cannot be read")
    params = {"input": url, "since": since, "until": until, "limit": "100"}
    failure = "no collector is set"
    async with make_session(source_address=source_address, ca_file=ca_file, limit=1) as session:
        for base in bases:
            try:
                response = await session.request("GET", api_url(base, "measurements"), params=params)
            except HttpClientError as exc:
                failure = exc.failure
                continue
            if response.status != 200:
                failure = f"http_{response.status}"
                continue
            try:
                page = MeasurementPage.model_validate(response.json(), extra=TOLERATED_EXTRA)
            except ValueError:  # not JSON, or not the listing's shape
                failure = BAD_ANSWER
                continue
            return CollectorVerdict(next((r for r in page.results if r.measurement_uid == uid), None))
    return CollectorVerdict(None, failure)
