"""Fixtures shared by every test folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import HopProbe, PacketTrace, TracedPacket

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the clone (CI has it; a user's clone does not)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: these tests read the shared reference data beside the clone")
    return path


def require_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (CI installs it from .ci/run)")
    return found


def traced_payload(injection_hop: int, arrival_ttl: int) -> bytes:
    """A stored measurement's bytes whose TLS trace located an injector (issue 17's packet evidence)."""
    first = TracedPacket(delay=0.001, ttl=arrival_ttl, ip_id=0x2E2E, df=True, protocol="tcp", tcp_flags="R",
                         tcp_window=4321, payload_size=0)  # fmt: skip
    hops = [*(HopProbe(ttl=t, answered=False) for t in range(1, injection_hop)),
            HopProbe(ttl=injection_hop, answered=True, first=first)]  # fmt: skip
    trace = PacketTrace(trigger="tls", hostname="gw.example", status="traced", hops=hops,
                        control_answer_hop=injection_hop + 1, injection_hop=injection_hop)  # fmt: skip
    return WebTestKeys(packet_traces=[trace]).model_dump_json().join(['{"test_keys":', "}"]).encode()
