"""The blackhole's fallback, for kernels that refuse unprivileged socket filters."""

from __future__ import annotations

import os
import socket

import pytest

from gatewatch.lab.blackhole import FullAcceptQueue, try_source_filter

pytestmark = pytest.mark.lab

SO_LOCK_FILTER = 44  # <asm-generic/socket.h>: once set, the kernel refuses SO_ATTACH_FILTER with EPERM


def test_a_refused_filter_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
        assert try_source_filter(sock, ["127.65.0.0/16"]) is False
    assert "drops SYNs from EVERY network" in caplog.text


def test_an_accepted_filter_is_reported() -> None:
    with socket.socket() as sock:
        assert try_source_filter(sock, ["127.65.0.0/16"]) is True


def test_a_full_accept_queue_drops_every_syn() -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    queue = FullAcceptQueue(listener)
    queue.fill()
    address = listener.getsockname()
    try:
        for source in ("127.0.0.1", "127.65.0.10"):
            with socket.socket() as client:
                client.bind((source, 0))
                client.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    client.connect(address)
    finally:
        queue.close()
    assert set(os.listdir("/proc/self/fd")) == fds_before
