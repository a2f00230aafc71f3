"""Wildcard sites: where a name the scenario does not list lives when ``wildcard = true``.

A real test list names thousands of sites; the lab gives them a few clean addresses (after the scenario's
own servers) and picks one per name from a hash, so the same name always lands on the same address in
every run and in every process (the control's and the probe's), as a real site's address would.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

__all__ = ["WILDCARD_SITES", "is_wildcard_name", "wildcard_address"]

WILDCARD_SITES = 4  # addresses shared by every unlisted name: enough to spread load, few to bind
# Real hostnames, underscores included (some test-list entries have them); at least two labels.
_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}$")


def is_wildcard_name(name: str) -> bool:
    """True for a hostname the wildcard may serve (not an IP literal, not garbage from a client)."""
    name = name.lower().rstrip(".")
    return bool(_NAME.match(name)) and not name.replace(".", "").isdigit()


def wildcard_address(name: str, addresses: Sequence[str]) -> str:
    """The address among ``addresses`` that serves ``name``: stable across runs and processes."""
    if not addresses:
        raise ValueError("no wildcard addresses")
    digest = hashlib.sha256(name.lower().rstrip(".").encode()).digest()
    return addresses[int.from_bytes(digest[:4], "big") % len(addresses)]
