"""Read the SNI out of a TLS ClientHello, the way a censoring middlebox does (bytes in, name out)."""

from __future__ import annotations

__all__ = ["client_hello_record_length", "parse_sni"]

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME_EXTENSION = 0
_HOST_NAME = 0


def client_hello_record_length(data: bytes) -> int | None:
    """Bytes the first TLS record occupies (header included), or None if ``data`` is not a handshake."""
    if len(data) < 5:
        return None
    if data[0] != _HANDSHAKE:
        return None
    return 5 + int.from_bytes(data[3:5], "big")


def parse_sni(data: bytes) -> str | None:
    """The server name in the ClientHello that starts ``data``; None when absent or unparseable.

    Only the first record is read, as most middleboxes do; a truncated hello yields None.
    """
    record_length = client_hello_record_length(data)
    if record_length is None:
        return None
    body = memoryview(data)[5:record_length]
    try:
        return _sni_from_handshake(body)
    except IndexError:
        return None


def _sni_from_handshake(body: memoryview) -> str | None:
    if len(body) < 4 or body[0] != _CLIENT_HELLO:
        return None
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + _u16(body, pos)  # cipher suites
    pos += 1 + body[pos]  # compression methods
    if pos + 2 > len(body):
        return None  # no extensions at all
    end = min(len(body), pos + 2 + _u16(body, pos))
    pos += 2
    while pos + 4 <= end:
        ext_type, ext_length = _u16(body, pos), _u16(body, pos + 2)
        pos += 4
        if ext_type == _SERVER_NAME_EXTENSION:
            return _host_name(body[pos : pos + ext_length])
        pos += ext_length
    return None


def _host_name(ext: memoryview) -> str | None:
    list_end = min(len(ext), 2 + _u16(ext, 0))
    pos = 2
    while pos + 3 <= list_end:
        name_type, length = ext[pos], _u16(ext, pos + 1)
        pos += 3
        if name_type == _HOST_NAME:
            name = bytes(ext[pos : pos + length])
            if len(name) != length:
                return None
            return name.decode("ascii", errors="replace").lower().rstrip(".")
        pos += length
    return None


def _u16(view: memoryview, pos: int) -> int:
    if pos + 2 > len(view):
        raise IndexError(pos)
    return (view[pos] << 8) | view[pos + 1]
