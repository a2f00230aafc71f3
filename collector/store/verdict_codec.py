"""Stored verdicts, compact: raw deflate with a preset dictionary of what verdicts say.

A verdict is ~650 bytes of JSON, most of it a few rules' ids and reasons that every verdict repeats; the
dictionary below holds them, so a verdict deflates to ~100 bytes. The SQLite store keeps the encoded
bytes (BLOB) and hands out the JSON text: nothing above the store sees the encoding. Rows stored before
(JSON text) are read as they are.

**The dictionary is frozen**: changing it would make every stored verdict unreadable. When the rules'
words drift, compression gets a little worse, nothing breaks; to follow them, add a version 2 dictionary
and keep version 1 for decoding.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

__all__ = ["decode_verdict", "encode_verdict"]

_VERSION_1 = 1
_WINDOW_BITS = -13  # raw deflate (no header or checksum), an 8 KiB window: the dictionary fits
_MEMORY_LEVEL = 4
# Version 1 (frozen): each rule's layer verdict as the analysis wrote it in December 2026, and the frame.
_DICTIONARY_1 = b"""\
{"layer":"control","outcome":"ok","rule_id":"control.missing","reason":"There is no control to compa\
re with.","fingerprint":null}{"layer":"control","outcome":"ok","rule_id":"control.failed","reason":"\
The control failed both to resolve the name and to fetch the page: it says nothing about the site.",\
"fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.ip_literal","reason":"The URL names \
an IP address: there was nothing to resolve.","fingerprint":null}{"layer":"dns","outcome":"ok","rule\
_id":"dns.no_queries","reason":"The probe recorded no DNS query for the URL's host.","fingerprint":n\
ull}{"layer":"dns","outcome":"ok","rule_id":"dns.both_nxdomain","reason":"Probe and control were bot\
h told the name does not exist: the site does not exist.","fingerprint":null}{"layer":"dns","outcome\
":"ok","rule_id":"dns.both_failed","reason":"Probe and control resolvers gave the same authoritative\
 failure: the name is broken for everyone.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_i\
d":"dns.probe_failed","reason":"The probe's resolver failed (NXDOMAIN, SERVFAIL, REFUSED, no answer,\
 timeout) while the control resolved the name.","fingerprint":null}{"layer":"dns","outcome":"ok","ru\
le_id":"dns.probe_failed_control_failed","reason":"Both resolutions failed, differently: it cannot b\
e told whose failure it was.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.inject\
ion","reason":"A query got two or more replies with different answers: an on-path injector raced the\
 resolver.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.bogon","reason":"The pro\
be got a non-routable (bogon) answer that the control did not get.","fingerprint":null}{"layer":"dns\
","outcome":"ok","rule_id":"dns.fingerprint","reason":"An answer is a known blocking address (blocki\
ng-fingerprints) that the control did not get.","fingerprint":null}{"layer":"dns","outcome":"ok","ru\
le_id":"dns.consistent_ip","reason":"Probe and control answers share an address.","fingerprint":null\
}{"layer":"dns","outcome":"ok","rule_id":"dns.consistent_asn","reason":"Probe and control answers sh\
are an autonomous system.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.consisten\
t_tls","reason":"A probe-resolved address completed a validated TLS handshake for the host: the answ\
er is genuine.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.control_no_answer","\
reason":"The control could not resolve the name (not NXDOMAIN) and nothing else vouches for the answ\
ers.","fingerprint":null}{"layer":"dns","outcome":"ok","rule_id":"dns.inconsistent","reason":"The pr\
obe's answers share neither address nor AS with the control's and no validated TLS vouches for them,\
 and they did not lead to the control's page.","fingerprint":null}{"layer":"dns","outcome":"ok","rul\
e_id":"dns.inconsistent_page_matches","reason":"The answers differ from the control's (a CDN, say) b\
ut served the control's page, as OONI judges.","fingerprint":null}{"layer":"tcp_ip","outcome":"ok","\
rule_id":"tcp.connected","reason":"At least one connection to the site's addresses succeeded.","fing\
erprint":null}{"layer":"tcp_ip","outcome":"ok","rule_id":"tcp.blocked_same_addresses","reason":"Ever\
y probe connection failed, while the control connected to those same addresses.","fingerprint":null}\
{"layer":"tcp_ip","outcome":"ok","rule_id":"tcp.blocked_control_addresses","reason":"Every probe con\
nection failed to consistent addresses, while the control connected to its own.","fingerprint":null}\
{"layer":"tcp_ip","outcome":"ok","rule_id":"tcp.redirect_blocked","reason":"A redirect led to anothe\
r port and every connection of that hop failed while the control got a page: the failing step was th\
e connect.","fingerprint":null}{"layer":"tcp_ip","outcome":"ok","rule_id":"tcp.both_failed","reason"\
:"Neither probe nor control could connect: the site is down.","fingerprint":null}{"layer":"tcp_ip","\
outcome":"ok","rule_id":"tcp.failed_untested","reason":"Every probe connection failed, to addresses \
the control could not vouch for.","fingerprint":null}{"layer":"tls","outcome":"ok","rule_id":"tls.ok\
","reason":"A TLS handshake for the host completed.","fingerprint":null}{"layer":"tls","outcome":"ok\
","rule_id":"tls.blocked","reason":"Every TLS handshake for the host failed (reset, timeout, alert, \
bad certificate) while the control's handshake for the same name succeeded.","fingerprint":null}{"la\
yer":"tls","outcome":"ok","rule_id":"tls.redirect_blocked","reason":"A redirect led to an https:// U\
RL and every TLS handshake of that hop failed (reset, timeout, alert) while the control got a page: \
the failing step was the handshake, as OONI classifies it.","fingerprint":null}{"layer":"tls","outco\
me":"ok","rule_id":"tls.both_failed","reason":"Probe and control handshakes failed the same way: the\
 site's TLS is broken for everyone.","fingerprint":null}{"layer":"tls","outcome":"ok","rule_id":"tls\
.control_failed","reason":"Probe and control handshakes both failed, differently: it cannot be told \
whose failure it was.","fingerprint":null}{"layer":"tls","outcome":"ok","rule_id":"tls.failed_untest\
ed","reason":"Every handshake failed, at addresses the control could not vouch for.","fingerprint":n\
ull}{"layer":"http","outcome":"ok","rule_id":"http.identical_body","reason":"The probe's body has th\
e control's SHA-256: it is the same page.","fingerprint":null}{"layer":"http","outcome":"ok","rule_i\
d":"http.blockpage","reason":"A response matches a blocking fingerprint (blocking-fingerprints datab\
ase).","fingerprint":null}{"layer":"http","outcome":"ok","rule_id":"http.same_page","reason":"Status\
 codes match and so does the body length, the uncommon header names or the title (OONI).","fingerpri\
nt":null}{"layer":"http","outcome":"ok","rule_id":"http.diff","reason":"The probe's page differs fro\
m the control's: status code, or body length, headers and title.","fingerprint":null}{"layer":"http"\
,"outcome":"ok","rule_id":"http.diff_vague_fingerprint","reason":"The page differs from the control'\
s and contains a vague blocking phrase from the fingerprints.","fingerprint":null}{"layer":"http","o\
utcome":"ok","rule_id":"http.failure","reason":"The probe's request failed while the control got a r\
esponse.","fingerprint":null}{"layer":"http","outcome":"ok","rule_id":"http.both_failed","reason":"P\
robe and control requests failed the same way: the site is down for everyone (OONI's v0.5 reading; v\
0.4 left this undecided).","fingerprint":null}{"layer":"http","outcome":"ok","rule_id":"http.control\
_failed","reason":"The control's request failed (and not the way the probe's did): there is no page \
to compare with.","fingerprint":null}{"layer":"http","outcome":"ok","rule_id":"http.not_attempted","\
reason":"The probe made no HTTP request, and no earlier layer explains why.","fingerprint":null}{"bl\
ocking":false,"accessible":true,"layers":[],"fingerprint":null,"dns_consistency":"consistent","body_\
length_match":true,"status_code_match":true,"headers_match":true,"title_match":true}\
"""
_CACHED = 4096  # distinct verdict texts remembered each way (most measurements share a few verdicts)


@lru_cache(maxsize=_CACHED)
def encode_verdict(verdict_json: str) -> bytes:
    """The stored form of a verdict's JSON text: a version byte, then its raw deflate."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, _WINDOW_BITS, _MEMORY_LEVEL, zdict=_DICTIONARY_1)
    return bytes((_VERSION_1,)) + deflate.compress(verdict_json.encode()) + deflate.flush()


@lru_cache(maxsize=_CACHED)
def _inflate(stored: bytes) -> str:
    if stored[:1] != bytes((_VERSION_1,)):
        raise ValueError(f"unknown verdict encoding {stored[:1]!r}")
    inflate = zlib.decompressobj(_WINDOW_BITS, zdict=_DICTIONARY_1)
    text = inflate.decompress(stored[1:]) + inflate.flush()
    if not inflate.eof:
        raise ValueError("truncated verdict")
    return text.decode()


def decode_verdict(stored: bytes | str) -> str:
    """The verdict's JSON text from what the store holds: encoded bytes, or (rows stored before) the text."""
    return stored if isinstance(stored, str) else _inflate(bytes(stored))
