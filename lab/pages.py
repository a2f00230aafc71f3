"""The lab's web content: a deterministic page per domain, the national blockpage and the echo page.

Pure functions (no I/O) so the same bytes are served to the probe and to the control, run after run:
a difference a probe sees is the censor's doing, never the content's.
"""

from __future__ import annotations

import hashlib
import html

__all__ = [
    "BLOCKPAGE_MARKER",
    "BLOCKPAGE_STATUS",
    "BLOCKPAGE_TITLE",
    "blockpage",
    "clean_page",
    "echo_page",
]

# The distinctive string of the blockpage; analysis/data/fingerprints_http.csv matches on it
# (gatewatch_lab_blockpage, location body, contains). Change both together.
BLOCKPAGE_MARKER = "Access to this site has been restricted by the Lab Telecommunications Authority"
BLOCKPAGE_TITLE = "Access Denied - National Filter of Labland"
BLOCKPAGE_STATUS = 403

_WORDS = (
    "network measurement volunteer gateway resolver packet censor latency route border transit "
    "archive library open public research evidence interference circumvention loopback vantage "
    "protocol handshake certificate domain address mirror bandwidth signal relay observatory"
).split()


def clean_page(domain: str) -> str:
    """A few KB of HTML that depends only on ``domain``."""
    seed = hashlib.sha256(domain.encode()).digest()
    paragraphs = []
    for p in range(8):
        digest = hashlib.sha256(seed + bytes([p])).digest()
        words = [_WORDS[b % len(_WORDS)] for b in digest]
        paragraphs.append(f"<p>{' '.join(words).capitalize()}.</p>")
    title = f"{domain} - a gatewatch lab site"
    body = "\n".join(paragraphs)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n<h1>Welcome to {html.escape(domain)}</h1>\n"
        f"{body}\n{body}\n</body>\n</html>\n"
    )


def blockpage(domain: str) -> str:
    """The national blockpage a transparent proxy serves in place of ``domain``."""
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{BLOCKPAGE_TITLE}</title>\n</head>\n<body>\n<h1>Access Denied</h1>\n"
        f"<p>{BLOCKPAGE_MARKER}.</p>\n"
        f"<p>Requested site: {html.escape(domain)}</p>\n"
        "<p>If you believe this is an error, contact your service provider.</p>\n</body>\n</html>\n"
    )


def echo_page(domain: str, client_address: str) -> str:
    """A page that shows the client its own address: what a leaky probe would end up recording."""
    address = html.escape(client_address)
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>Your address is {address}</title>\n</head>\n<body>\n"
        f'<h1>{html.escape(domain)} sees you</h1>\n<p id="client-address">{address}</p>\n</body>\n</html>\n'
    )
