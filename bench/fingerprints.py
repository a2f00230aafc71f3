"""Fingerprint matching of response bodies, next to a bare loop testing every row on its own.

    python bench/fingerprints.py                 # the shipped database and OONI's public one (../shared)
    python bench/fingerprints.py --repeat 5

For three bodies (the ingest bench's page, a 50 kB page, a 1 MiB page; none holds blockpage text) it
prints µs per body for ``FingerprintDB.matches_http``, for the same database forced onto its word-set
index (how every database was matched before), and for the bare loop (``in``/``startswith``/``re.search``
per row), with the ratio of each to the bare loop. Median of ``--repeat`` rounds, spread in brackets.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gatewatch.analysis.fingerprints import FingerprintDB, load_default_fingerprints
from gatewatch.core.observations import HTTPResponse

PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "blocking-fingerprints"
BENCH_PAGE = "<html><head><title>Example</title></head><body>" + "content " * 200 + "</body></html>"


def _page(size: int, seed: int) -> str:
    """Lorem-like HTML of random lower-case words: no blockpage text, many distinct words."""
    rnd = random.Random(seed)
    vocabulary = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
                  for _ in range(3000)]  # fmt: skip
    parts: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(vocabulary) if rnd.random() > 0.05 else '<div class="post">'
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[:size]


def _bare(db: FingerprintDB, body: str) -> int:
    return sum(1 for row in db.http_rows if row.location == "body" and row.matches(body))


def _time(call: Callable[[], object], budget: float) -> float:
    """µs per call, over at least ``budget`` seconds (and at least 3 calls)."""
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < budget:
        call()
        count += 1
    return (time.perf_counter() - start) / count * 1e6


def _figure(samples: list[float]) -> str:
    return f"{statistics.median(samples):10.1f} µs  [{min(samples):.1f}-{max(samples):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median and spread are printed)")
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per figure per round")
    args = parser.parse_args()
    databases = {"shipped": load_default_fingerprints()}
    if (PUBLIC / "fingerprints_http.csv").is_file():
        databases["ooni"] = FingerprintDB.load(
            PUBLIC / "fingerprints_http.csv", PUBLIC / "fingerprints_dns.csv"
        )
    else:
        print(f"OONI's database is absent ({PUBLIC}): the shipped one only")
    bodies = {"ingest page": BENCH_PAGE, "50 kB page": _page(50_000, 1), "1 MiB page": _page(1 << 20, 2)}
    for db_name, db in databases.items():
        # The same rows on the word-set index alone: how matching worked before the direct path.
        indexed = FingerprintDB(db.http_rows, db.dns_rows)
        indexed._body.direct = None  # the bench compares the two paths of one class
        body_rows = sum(1 for row in db.http_rows if row.location == "body")
        print(f"\n{db_name} database: {body_rows} body rows")
        for body_name, body in bodies.items():
            response = HTTPResponse(code=200, body=body, body_length=len(body))
            assert db.matches_http(response) == indexed.matches_http(response)
            new: list[float] = []
            old: list[float] = []
            bare: list[float] = []
            for _ in range(args.repeat):
                bare.append(_time(partial(_bare, db, body), args.budget))
                old.append(_time(partial(indexed.matches_http, response), args.budget))
                new.append(_time(partial(db.matches_http, response), args.budget))
            base = statistics.median(bare)
            print(f"  {body_name} ({len(body):,} chars)")
            print(f"    bare loop over every row:  {_figure(bare)}  1.00x (baseline)")
            print(f"    word-set index (before):   {_figure(old)}  {statistics.median(old) / base:.3f}x")
            print(f"    matches_http (now):        {_figure(new)}  {statistics.median(new) / base:.3f}x")


if __name__ == "__main__":
    main()
