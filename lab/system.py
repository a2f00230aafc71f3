"""The whole system on loopback: the lab, a real collector process, and one real agent per censored network.

This is the embedded default of the README's first command: it shows what an operator would see after
volunteers in two networks of one country ran their agents. The collector and the agents run as separate
processes through their installed command lines (:mod:`.scripts`), with everything on 127.0.0.0/8:

1. the lab starts (resolver, sites, censor) and writes ip-location-db CSVs of its networks;
2. ``gatewatch-collector serve`` starts on a free loopback port with a SQLite store in a temporary folder,
   the lab's geolocation CSVs, and its control pointed at the lab's resolver and CA;
3. ``gatewatch-agent init --yes`` and ``run`` execute once per censored network, each bound to that
   network's source address, measuring every scenario URL, asking the collector for controls, uploading;
4. the collector's own verdicts (``GET /api/v1/measurements``) and its gateway-vs-ISP attribution
   (``GET /api/v1/interference``) are read back and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gatewatch.core.wire import InterferenceResponse, InterferenceRow, MeasurementPage, MeasurementRow

from .lab import Lab
from .networks import CENSORED_NETWORKS
from .scripts import AGENT, COLLECTOR, console_script

__all__ = ["SystemRun", "run_system"]
_READY_DEADLINE = 30.0
_AGENT_DEADLINE = 300.0


@dataclass(frozen=True)
class SystemRun:
    """What the collector holds after the agents' passes."""

    measurements: list[MeasurementRow]  # GET /api/v1/measurements
    interference: list[InterferenceRow]  # GET /api/v1/interference
    agent_logs: dict[str, str]  # network -> the agent's output, for when something went wrong


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(*args: str, limit: float, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{Path(args[0]).name} {args[1]} did not finish within {limit:g} s") from None
    return proc.returncode or 0, out.decode(errors="replace")


@contextlib.asynccontextmanager
async def _collector(lab: Lab, workdir: Path, env: dict[str, str]) -> AsyncIterator[str]:
    asn_csv, country_csv = workdir / "lab-asn.csv", workdir / "lab-country.csv"
    lab.write_asn_csv(asn_csv)
    lab.write_country_csv(country_csv)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "collector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        console_script(COLLECTOR), "serve",
        "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{workdir / 'collector.db'}",
        "--asn-db", str(asn_csv), "--country-db", str(country_csv),
        "--control-resolver", lab.resolver, "--ca-file", lab.ca_file, "--control-allow-net", "127.0.0.0/8",
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    try:
        await _wait_ready(url, proc)
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + _READY_DEADLINE
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the collector exited with status {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the collector was not ready within {_READY_DEADLINE:g} s")


async def _agent_pass(lab: Lab, network: str, collector: str, workdir: Path, env: dict[str, str]) -> str:
    data_dir = workdir / f"agent-{network}"
    agent = console_script(AGENT)
    code, out = await _run(agent, "init", "--yes", "--data-dir", str(data_dir), limit=60, env=env)
    if code != 0:
        raise RuntimeError(f"gatewatch-agent init failed in {network}:\n{out}")
    inputs = [arg for url in lab.urls() for arg in ("--input", url)]
    code, out = await _run(
        agent, "run", "--data-dir", str(data_dir), "--collector", collector,
        "--resolver", lab.resolver, "--ca-file", lab.ca_file, "--routable", "127.0.0.0/8",
        "--source-address", lab.networks[network].source_address, *inputs,
        limit=_AGENT_DEADLINE, env=env,
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"gatewatch-agent run failed in {network} (status {code}):\n{out}")
    return out


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def run_system(
    lab: Lab, networks: Sequence[str] = CENSORED_NETWORKS, workdir: Path | None = None
) -> SystemRun:
    """Run the agents of ``networks`` through ``lab`` against a fresh collector; return what it holds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="gatewatch-demo-") as tmp:
        root = workdir or Path(tmp)
        async with _collector(lab, root, env) as collector:
            logs = await asyncio.gather(*(_agent_pass(lab, n, collector, root, env) for n in networks))
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                cc = lab.networks[networks[0]].cc
                # Read by the wire contract: a collector answering otherwise fails the demo here.
                listing = MeasurementPage.model_validate(
                    await _get_json(session, f"{collector}/api/v1/measurements?probe_cc={cc}&limit=1000")
                )
                attribution = InterferenceResponse.model_validate(
                    await _get_json(session, f"{collector}/api/v1/interference?cc={cc}")
                )
    return SystemRun(listing.results, attribution.results, dict(zip(networks, logs, strict=True)))
