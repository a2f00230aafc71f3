"""The blackhole's socket filter program (its effect on real SYNs is tested in test_web.py)."""

from __future__ import annotations

import ipaddress

import pytest

from gatewatch.lab.bpf import (
    ACCEPT_WHOLE_PACKET,
    BPF_ALU_AND_K,
    BPF_JMP_JEQ_K,
    BPF_LD_W_ABS,
    BPF_RET_K,
    DROP,
    IPV4_SOURCE_OFFSET,
    source_drop_program,
)


def run(program: list[tuple[int, int, int, int]], source: str) -> int:
    """A tiny interpreter for the four opcodes the program uses: the return value for that source."""
    acc, pc = 0, 0
    for _ in range(len(program)):  # forward jumps only: at most one pass
        code, jt, jf, k = program[pc]
        if code == BPF_RET_K:
            return k
        if code == BPF_LD_W_ABS and k == IPV4_SOURCE_OFFSET:
            acc = int(ipaddress.IPv4Address(source))
        elif code == BPF_ALU_AND_K:
            acc &= k
        elif code == BPF_JMP_JEQ_K:
            pc += jt if acc == k else jf
        pc += 1
    raise AssertionError("program ran off its end")


@pytest.mark.parametrize(
    ("source", "verdict"),
    [
        ("127.65.0.10", DROP),
        ("127.65.255.255", DROP),
        ("127.66.3.4", DROP),
        ("127.0.0.1", ACCEPT_WHOLE_PACKET),
        ("127.67.0.1", ACCEPT_WHOLE_PACKET),
        ("127.64.255.255", ACCEPT_WHOLE_PACKET),
    ],
)
def test_the_program_drops_exactly_the_listed_ranges(source: str, verdict: int) -> None:
    assert run(source_drop_program(["127.65.0.0/16", "127.66.0.0/16"]), source) == verdict


def test_a_filter_needs_a_range() -> None:
    with pytest.raises(ValueError, match="at least one"):
        source_drop_program([])
