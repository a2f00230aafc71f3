"""The record a pass makes of one URL: the measurement around the probe's test keys (with the software and
the platform it ran on, nothing more about the machine), what the byte budget counts of it, and the
labels the summary gives its verdict."""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import Any

from gatewatch.core.measurement import Measurement, WebTestKeys
from gatewatch.core.verdicts import Verdict
from gatewatch.core.wire import Geolocation

from .testlists import TestListEntry

__all__ = [
    "build_measurement",
    "bytes_received",
    "fingerprint_label",
    "interference_layer",
    "platform_family",
    "software_version",
]


@functools.cache
def software_version() -> str:
    try:
        return metadata.version("gatewatch")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def platform_family() -> str:
    """The OS family only ("linux"), never a release, host name or machine id."""
    system = platform.system().lower()
    return {"darwin": "macos"}.get(system, system if system in ("linux", "windows", "freebsd") else "other")


def bytes_received(keys: WebTestKeys) -> int:
    """An estimate of the bytes a measurement downloaded (bodies and headers as recorded, certificate
    chains, DNS replies): what the byte budget counts."""
    total = 0
    for query in keys.queries:
        total += 512 * max(1, len(query.replies))
    for handshake in keys.tls_handshakes:
        total += 1024 + sum(len(c.der_b64 or "") * 3 // 4 for c in handshake.peer_certificates)
    for request in keys.requests:
        if request.response is not None:
            total += request.response.body_length + 16
            total += sum(len(k) + len(v) + 4 for k, v in request.response.headers)
    return total


def interference_layer(verdict: Verdict | None) -> str | None:
    """The first layer the verdict found interfered with, if any."""
    if verdict is None:
        return None
    for layer in verdict.layers:
        if layer.outcome == "interference":
            return layer.layer
    return None


def fingerprint_label(verdict: Verdict | None) -> str | None:
    """The matched blockpage's name, else the technique: what the summary shows of the fingerprint."""
    if verdict is None or verdict.fingerprint is None:
        return None
    return verdict.fingerprint.blockpage_id or verdict.fingerprint.technique


def build_measurement(
    entry: TestListEntry,
    keys: WebTestKeys,
    *,
    started: Any,
    pass_started: Any,
    runtime: float,
    geolocation: Geolocation,
    run_type: str = "manual",
) -> Measurement:
    """The top-level record around the test keys. Nothing about the machine goes in beyond the OS
    family: no host name, user, path, MAC or stable device id (nor ``geolocation.probe_ip``)."""
    return Measurement(
        measurement_start_time=started,
        test_start_time=pass_started,
        test_runtime=max(0.0, round(runtime, 6)),
        probe_asn=geolocation.probe_asn,
        probe_cc=geolocation.probe_cc,
        probe_network_name=geolocation.probe_network_name[:256],
        input=entry.url,
        software_version=software_version(),
        annotations={
            "platform": platform_family(),
            "engine_name": "gatewatch",
            "run_type": run_type,
            "category_code": entry.category_code,
        },
        test_keys=keys,
    )
