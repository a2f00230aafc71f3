"""The optional network pseudonym (issue 12): off by default (``network_pseudonym = true`` in agent.toml).

With it on, every measurement carries ``annotations.network_pseudonym`` = the first 16 bytes (hex) of
HMAC-SHA256(secret, ``gatewatch-pseudonym/1|<probe_asn>|<probe_cc>|<epoch>``), the secret being 32 random
bytes this agent keeps in its data directory (0600) and never sends. What it reveals, exactly:

- within one network (ASN and country) and one weekly epoch, every batch of this agent carries the same
  value: those batches are linkable to each other, so operators can count distinct volunteers per
  network and week (that is its purpose, and why it is off by default);
- nothing across networks or epochs: without the secret, the values of two networks or two weeks cannot
  be related to each other, nor to the agent's long-term key;
- when the network is withheld (AS0), no pseudonym is given (every withheld network would otherwise be
  "one network" and link the agent's batches across real networks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gatewatch.core.batch_token import epoch_of
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import WITHHELD_ASN

if TYPE_CHECKING:
    from .run_records import RunOptions

__all__ = [
    "PSEUDONYM_ANNOTATION",
    "load_or_create_secret",
    "network_pseudonym",
    "with_pseudonym",
    "with_secret",
]

PSEUDONYM_ANNOTATION = "network_pseudonym"
_CONTEXT = b"gatewatch-pseudonym/1"
_SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """The agent's pseudonym secret, created (0600, from the first byte) on first use."""
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = os.urandom(_SECRET_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"{path}: not a pseudonym secret ({len(secret)} bytes)")
    return secret


def network_pseudonym(secret: bytes, probe_asn: str, probe_cc: str, epoch: int) -> str | None:
    """The pseudonym for this (network, epoch); None for a withheld network."""
    if probe_asn == WITHHELD_ASN:
        return None
    message = b"|".join((_CONTEXT, probe_asn.encode(), probe_cc.encode(), str(epoch).encode()))
    return hmac.new(secret, message, hashlib.sha256).digest()[:16].hex()


def with_pseudonym(measurement: Measurement, secret: bytes) -> Measurement:
    """``measurement`` with its network pseudonym in its annotations (unchanged for a withheld network)."""
    epoch = epoch_of(measurement.measurement_start_time)
    value = network_pseudonym(secret, measurement.probe_asn, measurement.probe_cc, epoch)
    if value is None:
        return measurement
    annotations = {**measurement.annotations, PSEUDONYM_ANNOTATION: value}
    return measurement.model_copy(update={"annotations": annotations})


def with_secret(options: RunOptions, enabled: bool, path: Path) -> RunOptions:
    """``options`` carrying the pseudonym secret when the volunteer turned the pseudonym on (agent.toml's
    ``network_pseudonym``), for every kind of pass alike (``run``, ``daemon``, the page)."""
    if not enabled:
        return options
    return dataclasses.replace(options, pseudonym_secret=load_or_create_secret(path))
