"""GeoDB load time, memory and lookups per second.

    python bench/geoip.py                        # synthetic CSVs the size of ip-location-db's
    python bench/geoip.py --asn asn-ipv4.csv --asn asn-ipv6.csv --country geo-whois-asn-country-ipv4.csv

Synthetic files: 400,000 IPv4 and 100,000 IPv6 ASN ranges, 330,000 + 215,000 country ranges, written to
a temporary folder (the real databases are not shipped with gatewatch). Lookup addresses are drawn at
random, so most hit a range and some fall in gaps, as real clients would.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import resource
import tempfile
import time
from pathlib import Path

from gatewatch.collector.geoip import GeoDB


def _write_ranges(path: Path, count: int, version: int, value: str, rng: random.Random) -> None:
    """Disjoint ranges spread over the family's space, as start,end,<value> rows."""
    space = 2**32 if version == 4 else 2**48  # IPv6: in /64s over 2000::/16, where lookups are drawn
    step = space // count
    base = 0 if version == 4 else 0x2000 << 112
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    with path.open("w") as out:
        for i in range(count):
            start = base + i * step * (1 if version == 4 else 2**64)
            width = rng.randrange(step // 2, step) * (1 if version == 4 else 2**64)
            cells = value.format(n=i + 1, cc=("KH", "MM", "TH", "VN", "US")[i % 5])
            out.write(f"{make(start)},{make(start + width - 1)},{cells}\n")


def _addresses(count: int, rng: random.Random) -> list[str]:
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(count // 2)]
    v6 = [str(ipaddress.IPv6Address((0x2000 << 112) | rng.getrandbits(112))) for _ in range(count // 2)]
    mixed = v4 + v6
    rng.shuffle(mixed)
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--asn", type=Path, action="append", default=[])
    parser.add_argument("--country", type=Path, action="append", default=[])
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="gatewatch-geoip-bench-") as tmp:
        asn_files, country_files = args.asn, args.country
        if not asn_files and not country_files:
            folder = Path(tmp)
            specs = [
                ("asn-ipv4.csv", 400_000, 4, '{n},"Network {n}, Ltd."'),
                ("asn-ipv6.csv", 100_000, 6, "{n},Network {n}"),
                ("country-ipv4.csv", 330_000, 4, "{cc}"),
                ("country-ipv6.csv", 215_000, 6, "{cc}"),
            ]
            for name, count, version, value in specs:
                _write_ranges(folder / name, count, version, value, rng)
            asn_files = [folder / "asn-ipv4.csv", folder / "asn-ipv6.csv"]
            country_files = [folder / "country-ipv4.csv", folder / "country-ipv6.csv"]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        with GeoDB.load(asn_files, country_files) as db:
            load_s = time.perf_counter() - started
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for line in db.describe():
                print(line)
            addresses = _addresses(args.lookups, rng)
            started = time.perf_counter()
            hits = sum(1 for address in addresses if db.lookup(address).asn is not None)
            lookup_s = time.perf_counter() - started
    print(f"load: {load_s:.2f} s, peak RSS {rss_before / 1024:.0f} MiB -> {rss_after / 1024:.0f} MiB")
    print(
        f"lookups: {len(addresses)} in {lookup_s:.2f} s = {len(addresses) / lookup_s:,.0f} lookups/s"
        f" ({hits / len(addresses):.0%} with an ASN; half IPv4, half IPv6)"
    )


if __name__ == "__main__":
    main()
