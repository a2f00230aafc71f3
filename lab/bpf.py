"""A classic BPF socket filter that silently drops packets from some IPv4 source ranges.

Attached to a *listening* TCP socket it emulates a blackhole for those sources only: the kernel runs a
listener's filter on each incoming SYN, a dropped SYN gets no SYN-ACK and no RST, so the client retransmits
until its own timeout. SO_ATTACH_FILTER needs no privilege, which keeps the lab root-free.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Iterable

__all__ = ["attach_source_drop_filter", "source_drop_program"]

SO_ATTACH_FILTER = 26  # from <asm-generic/socket.h>; not exported by the socket module
# Negative offsets address the packet from its network header whatever layer the socket sees;
# +12 is the IPv4 source address.
SKF_NET_OFF = -0x100000
IPV4_SOURCE_OFFSET = (SKF_NET_OFF + 12) & 0xFFFFFFFF

# Opcodes (<linux/filter.h>): class | size | mode / op | source.
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
BPF_ALU_AND_K = 0x04 | 0x50 | 0x00
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00
BPF_RET_K = 0x06 | 0x00
ACCEPT_WHOLE_PACKET = 0xFFFFFFFF
DROP = 0

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def source_drop_program(cidrs: Iterable[str]) -> list[Instruction]:
    """The filter program: drop when the IPv4 source lies in any of ``cidrs``, accept otherwise."""
    networks = [ipaddress.IPv4Network(c, strict=True) for c in cidrs]
    if not networks:
        raise ValueError("a source-drop filter needs at least one IPv4 range")
    if len(networks) > 80:  # jump offsets are 8-bit: keep every jump to DROP in range
        raise ValueError("too many ranges for one filter")
    total = 3 * len(networks) + 2
    drop_index = total - 1
    program: list[Instruction] = []
    for net in networks:
        program.append((BPF_LD_W_ABS, 0, 0, IPV4_SOURCE_OFFSET))
        program.append((BPF_ALU_AND_K, 0, 0, int(net.netmask)))
        jeq_index = len(program)
        program.append((BPF_JMP_JEQ_K, drop_index - jeq_index - 1, 0, int(net.network_address)))
    program.append((BPF_RET_K, 0, 0, ACCEPT_WHOLE_PACKET))
    program.append((BPF_RET_K, 0, 0, DROP))
    return program


def attach_source_drop_filter(sock: socket.socket, cidrs: Iterable[str]) -> None:
    """Attach the drop filter to ``sock`` (raises OSError if the kernel refuses it)."""
    program = source_drop_program(cidrs)
    instructions = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    fprog = _SockFprog(len(program), ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
    # The kernel copies the program during the call; `instructions` stays alive until it returns.
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
