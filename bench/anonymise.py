"""CPU time of the agent's scrubbing (``anonymise``) per measurement, on real measurements from the lab.

    python bench/anonymise.py [ROUNDS]

Measures every URL of the default scenario once from ISP A with the real web probe (the lab runs in this
process; loopback only), wraps each in a Measurement as the runner does, then scrubs the whole set
ROUNDS times with an identity holding an IPv4 and an IPv6 address of the volunteer plus a LAN resolver.
Prints the median and p90 microseconds per measurement, and the same for a baseline measured in the same
run: the JSON round trip every anonymised measurement makes anyway (``model_dump`` then
``model_validate``), with the ratio of the two medians. Then the worst case for a long text: one
measurement whose 1 MiB body is numbers joined by dots, commas and spaces and holds every part of the
volunteer's address (so the prefilter lets it through), scrubbed 5 times, against the same baseline.
Asserts nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from gatewatch.agent import anonymise as anonymise_module
from gatewatch.agent.anonymise import Identity, anonymise
from gatewatch.agent.build import build_measurement
from gatewatch.agent.testlists import TestListEntry
from gatewatch.core.measurement import Measurement, utc_now
from gatewatch.core.observations import HTTPRequest, HTTPResponse, HTTPTransaction
from gatewatch.core.wire import Geolocation


async def _measurements() -> list[Measurement]:
    from gatewatch.lab import Lab
    from gatewatch.probes.web import measure

    async with Lab() as lab:
        config = lab.web_config("isp-a")
        urls = lab.urls()
        found = await asyncio.gather(*(measure(url, config) for url in urls))
    geolocation = Geolocation(probe_asn="AS64501", probe_cc="KH", probe_network_name="ISP A", probe_ip="")
    now = utc_now()
    return [
        build_measurement(TestListEntry(url), keys, started=now, pass_started=now, runtime=0.1,
                          geolocation=geolocation)
        for url, keys in zip(urls, found, strict=True)
    ]  # fmt: skip


def main(rounds: int) -> None:
    measurements = asyncio.run(_measurements())
    identity = Identity.of(own_addresses=["127.65.0.10", "2001:db8:1:2::7"], lan_addresses=["192.168.1.1"])
    per_measurement: list[float] = []
    baseline: list[float] = []
    for _ in range(rounds):  # bounded: ROUNDS passes over a fixed set
        # Each round is a pass: the scrubber remembers short texts within a pass, not from the last round.
        scrubber = getattr(anonymise_module, "_scrubber", None)  # absent before the scrubber was kept
        if scrubber is not None:
            scrubber.cache_clear()
        for measurement in measurements:
            started = time.process_time()
            Measurement.model_validate(measurement.model_dump(mode="json"))
            baseline.append((time.process_time() - started) * 1e6)
            started = time.process_time()
            anonymise(measurement, identity)
            per_measurement.append((time.process_time() - started) * 1e6)
    print(f"measurements: {len(measurements)} x {rounds} rounds")
    for name, figures in (("baseline (JSON round trip)", baseline), ("anonymise", per_measurement)):
        figures.sort()
        print(f"{name} CPU per measurement: median {statistics.median(figures):.0f} us, "
              f"p90 {figures[int(0.9 * len(figures))]:.0f} us")  # fmt: skip
    ratio = statistics.median(per_measurement) / statistics.median(baseline)
    print(f"ratio anonymise / baseline (medians): {ratio:.2f}")
    _worst_case(measurements[0], identity)


def _worst_case(template: Measurement, identity: Identity) -> None:
    numbers = " ".join(f"{i % 256}.{i * 7 % 256}.{i % 10}, {i % 251}" for i in range(1, 80_000))
    body = (numbers + " 127 65 0 10 0x7f 0101")[: 1 << 20]
    response = HTTPResponse(code=200, body=body, body_length=len(body), body_sha256="0" * 64)
    request = HTTPTransaction(
        t0=0, t=0.1, request=HTTPRequest(url="http://numbers.example/"), response=response
    )
    keys = template.test_keys.model_copy(update={"requests": [request]})
    heavy = template.model_copy(update={"test_keys": keys})
    timings: dict[str, list[float]] = {"baseline": [], "anonymise": []}
    for _ in range(5):  # bounded
        started = time.process_time()
        Measurement.model_validate(heavy.model_dump(mode="json"))
        timings["baseline"].append(time.process_time() - started)
        started = time.process_time()
        anonymise(heavy, identity)
        timings["anonymise"].append(time.process_time() - started)
    base, scrub = (statistics.median(timings[k]) * 1e3 for k in ("baseline", "anonymise"))
    print(
        f"1 MiB body of numbers: baseline {base:.1f} ms, anonymise {scrub:.1f} ms, ratio {scrub / base:.1f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
