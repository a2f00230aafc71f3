"""The trace step without CAP_NET_RAW: skipped with the reason recorded, nothing sent, nothing raised; and
the agent's default path never loads scapy. (With the capability, ``tests/lab/netns/`` runs it.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.vocabulary import NO_CAP_NET_RAW, TRACE_SKIPPED
from gatewatch.probes.packet_trace import PacketTraceConfig, missing_capability, plan_traces

STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapPrm:\t{0}\nCapEff:\t{0}\n"
TRACE_ONCE = """
import asyncio, json
from gatewatch.probes.packet_trace import trace_flow
trace = asyncio.run(trace_flow("tls", "blocked.example", "127.0.0.1"))
print(trace.model_dump_json())
"""


CAPABILITY_SETS = [
    ("000001ffffffffff", None),
    ("000001ffffffdfff", NO_CAP_NET_RAW),  # every capability but bit 13
    ("0000000000002000", None),  # bit 13 alone
    ("0000000000000000", NO_CAP_NET_RAW),
]


@pytest.mark.parametrize(("cap_eff", "expected"), CAPABILITY_SETS)
def test_cap_net_raw_is_read_from_the_effective_set(
    tmp_path: Path, cap_eff: str, expected: str | None
) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS.format(cap_eff), encoding="ascii")
    assert missing_capability(status) == expected


def test_an_unreadable_status_means_no_capability(tmp_path: Path) -> None:
    assert missing_capability(tmp_path / "absent") == NO_CAP_NET_RAW
    (tmp_path / "garbled").write_text("CapEff:\tnot-hex\n", encoding="ascii")
    assert missing_capability(tmp_path / "garbled") == NO_CAP_NET_RAW


def _without_cap_net_raw() -> list[str]:
    if missing_capability() is not None:
        return []  # this process already lacks it: run as is
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_NET_RAW from a privileged test run")
    return ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]


def test_without_cap_net_raw_the_step_is_skipped_and_says_why() -> None:
    args = [*_without_cap_net_raw(), sys.executable, "-c", TRACE_ONCE]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trace = json.loads(done.stdout)
    assert trace["status"] == TRACE_SKIPPED and trace["skip_reason"] == NO_CAP_NET_RAW
    assert trace["packets"] == [] and trace["hops"] == []
    # It fits in a measurement as it is.
    assert (
        WebTestKeys.model_validate({"packet_traces": [trace]}).packet_traces[0].skip_reason == NO_CAP_NET_RAW
    )


def test_the_config_bounds_every_loop() -> None:
    with pytest.raises(ValueError):
        PacketTraceConfig(max_hops=0)
    with pytest.raises(ValueError):
        PacketTraceConfig(max_hops=33)
    with pytest.raises(ValueError):
        PacketTraceConfig(hop_wait=60)


@pytest.mark.parametrize("module", ["gatewatch.agent.cli_run", "gatewatch.probes.packet_trace"])
def test_the_agent_path_never_imports_scapy(module: str) -> None:
    loaded = "sorted(m for m in sys.modules if m.split('.')[0] == 'scapy')"
    code = f"import sys, {module}; print(json.dumps({loaded}))"
    done = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


PLAN_KEYS = WebTestKeys.model_validate(
    {
        "tls_handshakes": [{"address": "198.51.100.7:443", "server_name": "x.example", "t0": 0, "t": 0.1}],
        "requests": [
            {"t0": 0, "t": 0.1, "address": "198.51.100.8:80", "request": {"url": "http://x.example/"}},
        ],
    }
)


def test_each_interference_is_traced_on_its_own_flow() -> None:
    abroad = ["203.0.113.5", "2001:db8::5"]
    # DNS goes towards the control's address abroad, not to the volunteer's resolver.
    assert plan_traces("http://x.example/", PLAN_KEYS, "dns", abroad) == [("dns", "x.example", "203.0.113.5")]
    assert plan_traces("https://x.example/", PLAN_KEYS, "http-failure", abroad) == [
        ("tls", "x.example", "198.51.100.7")
    ]
    assert plan_traces("http://x.example/a", PLAN_KEYS, "http-diff", abroad) == [
        ("http", "x.example", "198.51.100.8")
    ]
    # A blackhole injects nothing; no verdict, nothing to trace; IPv6-only: not traced (IPv4 only).
    assert plan_traces("http://x.example/", PLAN_KEYS, "tcp_ip", abroad) == []
    assert plan_traces("http://x.example/", PLAN_KEYS, False, abroad) == []
    assert plan_traces("http://x.example/", WebTestKeys(), "dns", ["2001:db8::5"]) == []


TRACE_INTERFERED = """
import asyncio
from gatewatch.core.measurement import WebTestKeys
from gatewatch.probes.packet_trace import trace_interfered
traces = asyncio.run(trace_interfered("http://x.example/", WebTestKeys(), "dns", ["127.0.0.1"]))
print("[" + ",".join(t.model_dump_json() for t in traces) + "]")
"""


def test_the_agents_call_without_cap_net_raw_records_one_skipped_trace() -> None:
    done = subprocess.run([*_without_cap_net_raw(), sys.executable, "-c", TRACE_INTERFERED],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (trace,) = json.loads(done.stdout)
    assert (trace["trigger"], trace["status"], trace["skip_reason"]) == ("dns", TRACE_SKIPPED, NO_CAP_NET_RAW)
