"""Root only: what the namespace lab and the packet-trace step cost (python bench/netns_trace.py [runs]).

Prints the lab's start and close times, and, from the volunteer behind ISP A, the time of one web
measurement of a gateway-blocked URL (the baseline, same run) against the time of the trace step for that
flow, as a ratio. Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gatewatch.lab.netns.build import missing_requirements
from gatewatch.lab.netns.lab import NetnsLab
from gatewatch.lab.netns.topology import INTL_WEB

TIMED = """
import asyncio, json, sys, time
from gatewatch.probes.config import DNSConfig, TCPConfig, TLSConfig, WebConfig
from gatewatch.probes.packet_trace import PacketTraceConfig, trace_flow
from gatewatch.probes.web import measure
ca_file, server, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = WebConfig(
    dns=DNSConfig(routable=("10.77.0.0/16",)), tcp=TCPConfig(timeout=2), tls=TLSConfig(ca_file=ca_file)
)
trace_config = PacketTraceConfig(control_hostname="clean.netlab")
measured, traced = [], []
def timed(coroutine):
    t0 = time.perf_counter()
    asyncio.run(coroutine)
    return time.perf_counter() - t0
for _ in range(runs):
    measured.append(timed(measure("https://sni-reset.netlab/", config)))
    traced.append(timed(trace_flow("tls", "sni-reset.netlab", server, trace_config)))
print(json.dumps({"measure": measured, "trace": traced}))
"""


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    reason = missing_requirements()
    if reason is not None:
        print(f"skipped: the namespace lab {reason}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        lab = NetnsLab.start(Path(tmp))
        started = time.perf_counter() - t0
        try:
            args = lab.exec_args("vol-a", sys.executable, "-c", TIMED, lab.ca_file, INTL_WEB, str(runs))
            figures = json.loads(
                subprocess.run(args, capture_output=True, text=True, timeout=600, check=True).stdout
            )
        finally:
            t0 = time.perf_counter()
            lab.close()
            closed = time.perf_counter() - t0
    measure, trace = statistics.median(figures["measure"]), statistics.median(figures["trace"])
    print(f"namespace lab start: {started:.2f} s, close: {closed:.2f} s")
    print(f"web measurement of a SNI-reset URL (baseline): median {measure * 1000:.0f} ms over {runs} runs")
    print(f"trace step for that flow: median {trace * 1000:.0f} ms ({trace / measure:.1f}x the measurement)")


if __name__ == "__main__":
    main()
