"""The volunteer's page (``gatewatch-agent ui``): what it weighs on a volunteer's machine and how fast it
answers, each against a baseline measured in the same run.

* memory: the resident size of the running ``gatewatch-agent ui`` process, idle, against a Python that has
  imported the agent's command line (what every ``gatewatch-agent`` command pays);
* answers: the median and 95th-percentile time of a server-rendered page (the risks and quiz) and of the
  progress poll the page makes during a run, against the static style sheet (bytes from memory), over one
  kept-alive connection on 127.0.0.1, as a browser makes them.

    python bench/agent_ui.py [--requests 300]

Prints figures; asserts nothing. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from gatewatch.lab.scripts import AGENT, console_script

_BASELINE = (
    "import gatewatch.agent.cli, re\n"
    "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_CONNECTIONS: dict[int, http.client.HTTPConnection] = {}


def _timings(port: int, path: str, headers: dict[str, str]) -> list[float]:
    """One request on the kept-alive connection (a new one when the server ended the last), in ms."""
    conn = _CONNECTIONS.setdefault(port, http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, (path, response.status)
    if response.will_close:
        conn.close()
        del _CONNECTIONS[port]
    return [elapsed]


def _describe(name: str, times: list[float], baseline: float) -> str:
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20)[-1]
    return (
        f"{name:<28} median {median:6.2f} ms  p95 {p95:6.2f} ms  ({median / baseline:4.1f}x the static file)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    requests = max(20, min(args.requests, 10_000))
    baseline_kib = int(subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)  # fmt: skip
    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            [console_script(AGENT), "ui", "--no-browser", "--data-dir", data],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            url = urlsplit(process.stdout.readline().split(": ", 1)[1].strip())
            port = url.port or 0
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/?{url.query}")
            first = conn.getresponse()
            first.read()
            conn.close()
            headers = {"Cookie": first.getheader("Set-Cookie", "").split(";")[0]}
            time.sleep(0.5)
            idle_kib = _rss_kib(process.pid)
            static, page, poll = [], [], []
            for _ in range(requests):  # interleaved, so that a busy moment of the machine hits all three
                static += _timings(port, "/static/style.css", headers)
                page += _timings(port, "/consent", headers)
                poll += _timings(port, "/api/progress", headers)
            after_kib = _rss_kib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=20)
    base = statistics.median(static)
    print(f"agent CLI imported (baseline)  RSS {baseline_kib / 1024:6.1f} MiB")
    print(f"gatewatch-agent ui, idle       RSS {idle_kib / 1024:6.1f} MiB  ({idle_kib / baseline_kib:.2f}x)")
    after = f"  after {3 * requests} requests"
    print(f"{after:<30} RSS {after_kib / 1024:6.1f} MiB  ({after_kib / baseline_kib:.2f}x)")
    print(_describe("static style sheet", static, base))
    print(_describe("risks and quiz page (HTML)", page, base))
    print(_describe("progress poll (JSON)", poll, base))


if __name__ == "__main__":
    main()
