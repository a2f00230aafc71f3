"""The volunteer's own recent results, read back from the queue (what `results` shows)."""

from __future__ import annotations

from typing import Any

from .queue import MeasurementQueue, QueuedMeasurement

__all__ = ["recent_results", "result_row"]


def result_row(row: QueuedMeasurement) -> dict[str, Any]:
    data = row.measurement()
    keys = data.get("test_keys") or {}
    verdict = keys.get("verdict") or {}
    layer = next(
        (lv.get("layer") for lv in verdict.get("layers", []) if lv.get("outcome") == "interference"), None
    )
    fingerprint = verdict.get("fingerprint") or {}
    return {
        "measurement_uid": row.measurement_uid,
        "time": data.get("measurement_start_time"),
        "input": data.get("input"),
        "probe_asn": data.get("probe_asn"),
        "probe_cc": data.get("probe_cc"),
        "blocking": verdict.get("blocking") if verdict else None,
        "layer": layer,
        "fingerprint": fingerprint.get("blockpage_id") or fingerprint.get("technique"),
        "control_failure": keys.get("control_failure"),
        "state": row.state,
        "reason": row.reason,
    }


def recent_results(queue: MeasurementQueue, limit: int = 20) -> list[dict[str, Any]]:
    return [result_row(row) for row in queue.recent(limit)]
