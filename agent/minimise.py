"""Store less: what a measurement keeps of the web pages it saw (pure: no I/O).

Scrubbing the volunteer's address out of every spelling a server may echo it in is a race that cannot be
won alone (a page can always invent one more encoding), so a measurement also keeps only what its
judgement needs. This module is the one place that says what that is; ``docs/privacy.md`` says it in
plain words.

* **Header names are always kept** (the page comparison compares the names of uncommon headers).
* **Header values** only of the headers the analysis reads: those the blocking fingerprints look at
  (``Location``, ``Server``, ``Via``, ``X-App-Url`` in OONI's public database, plus any
  ``header.<name>`` row of the database the agent judges with) and the harmless framing pair
  ``Content-Type``/``Content-Length``. Every other value becomes :data:`DROPPED`. **Cookie values are
  never kept**, whatever a fingerprint database says: they are the most likely place for a token that
  names the volunteer.
* **Bodies** only of *blockpage candidates*: a body that a blocking fingerprint matches, or a small body
  (at most :data:`MAX_KEPT_BODY` bytes) of a page that differs from the control's by the analysis's own
  comparison (status code, and none of length, uncommon header names or title words alike). Any other
  body is dropped; its length, SHA-256 and title stay, which is all the comparison reads. A page whose
  bytes equal the control's is never kept (nothing in it is news).
* **Certificates**: every field of each certificate (scrubbed) and its SHA-256 stay; the DER bytes only of
  a chain that did not validate (the evidence of an interception), as the analysis reads none of them.
* A volunteer may opt in to keep every body and certificate (``keep_full_bodies = true`` in
  ``agent.toml``) on a network where they accept the risk; header values stay minimised. The choice is
  written in the measurement's annotations (:data:`BODY_POLICY_ANNOTATION`), so researchers know which
  measurements carry full pages.

Minimising runs after scrubbing (so the SHA-256 of a dropped body is that of the scrubbed text, which
cannot be brute-forced back to an address) and before signing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gatewatch.analysis.fingerprints import FingerprintDB
from gatewatch.analysis.http_layer import body_length_match, headers_match, status_code_match, title_match
from gatewatch.core.control import ControlHTTP
from gatewatch.core.measurement import Measurement
from gatewatch.core.observations import HTTPResponse, HTTPTransaction, TLSHandshake

__all__ = [
    "ANALYSED_HEADERS",
    "BODY_POLICY_ANNOTATION",
    "CANDIDATE_BODIES",
    "DROPPED",
    "FULL_BODIES",
    "MAX_KEPT_BODY",
    "NEVER_KEPT_HEADERS",
    "PROBE_REQUEST_HEADERS",
    "StoragePolicy",
    "is_blockpage_candidate",
    "minimise",
    "without_validated_der",
]

DROPPED: Final = "[dropped]"
# Blockpages are small (the national ones in OONI's database are a few KiB); a larger page that differs
# from the control is most likely the real site with changing content, or a portal page full of tokens.
MAX_KEPT_BODY: Final = 32 * 1024  # bytes received
# Headers whose values the analysis reads (lower case): the fingerprint database's header locations
# (OONI's public database uses exactly these four) and the framing pair researchers expect.
ANALYSED_HEADERS: Final = frozenset(
    {"location", "server", "via", "x-app-url", "content-type", "content-length"}
)
# Never kept, even when a fingerprint database names them.
NEVER_KEPT_HEADERS: Final = frozenset(
    {"set-cookie", "set-cookie2", "cookie", "authorization", "proxy-authorization", "www-authenticate"}
)
# What the probe itself sends (probes/http.py): the request's values are ours, not the server's.
PROBE_REQUEST_HEADERS: Final = frozenset(
    {"host", "user-agent", "accept", "accept-language", "accept-encoding"}
)
BODY_POLICY_ANNOTATION: Final = "body_policy"
CANDIDATE_BODIES: Final = "blockpage_candidates"
FULL_BODIES: Final = "full_bodies_opt_in"


@dataclass(frozen=True)
class StoragePolicy:
    """What a measurement keeps: the defaults are the documented policy; ``keep_full_bodies`` is the
    volunteer's opt-in."""

    keep_full_bodies: bool = False
    max_kept_body: int = MAX_KEPT_BODY
    extra_headers: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_fingerprints(
        cls, fingerprints: FingerprintDB | None, *, keep_full_bodies: bool = False
    ) -> StoragePolicy:
        """The policy that keeps the value of every header ``fingerprints`` matches on."""
        return cls(keep_full_bodies=keep_full_bodies, extra_headers=fingerprint_headers(fingerprints))

    @property
    def kept_header_values(self) -> frozenset[str]:
        return (ANALYSED_HEADERS | self.extra_headers) - NEVER_KEPT_HEADERS

    @property
    def annotation(self) -> str:
        return FULL_BODIES if self.keep_full_bodies else CANDIDATE_BODIES


def fingerprint_headers(fingerprints: FingerprintDB | None) -> frozenset[str]:
    """The (lower-case) header names the database's ``header.<name>`` rows match on."""
    if fingerprints is None:
        return frozenset()
    return frozenset(
        row.location.removeprefix("header.")
        for row in fingerprints.http_rows
        if row.location.startswith("header.")
    )


def _kept_headers(headers: Iterable[tuple[str, str]], kept: frozenset[str]) -> list[tuple[str, str]]:
    return [(name, value if name.lower() in kept else DROPPED) for name, value in headers]


def _body_matches(response: HTTPResponse, fingerprints: FingerprintDB | None) -> bool:
    if fingerprints is None or not response.body:
        return False
    return bool(fingerprints.matches_http(response.model_copy(update={"headers": []})))


def _differs_from_control(response: HTTPResponse, control: ControlHTTP | None) -> bool:
    """True unless the analysis's comparison finds the page like the control's (or byte-identical)."""
    if control is None or control.failure is not None or control.status_code is None:
        return True  # no reference: nothing says it is the real page
    if control.body_sha256 and response.body_sha256 == control.body_sha256:
        return False
    same_code = status_code_match(response, control)
    alike = (
        body_length_match(response, control)
        or headers_match(response, control)
        or title_match(response, control)
    )
    return not (same_code and alike)


def is_blockpage_candidate(
    response: HTTPResponse,
    control: ControlHTTP | None,
    fingerprints: FingerprintDB | None,
    max_kept_body: int,
) -> bool:
    """Whether the body of ``response`` is kept under the default policy."""
    if not response.body:
        return False
    if control is not None and control.body_sha256 and response.body_sha256 == control.body_sha256:
        return False
    if _body_matches(response, fingerprints):
        return True  # the evidence of a verdict, whatever its size
    return response.body_length <= max_kept_body and _differs_from_control(response, control)


def _minimised_response(
    response: HTTPResponse,
    control: ControlHTTP | None,
    fingerprints: FingerprintDB | None,
    policy: StoragePolicy,
) -> HTTPResponse:
    keep_body = policy.keep_full_bodies or is_blockpage_candidate(
        response, control, fingerprints, policy.max_kept_body
    )
    update: dict[str, object] = {"headers": _kept_headers(response.headers, policy.kept_header_values)}
    if not keep_body:
        update["body"] = None
    return response.model_copy(update=update)


def _minimised_handshake(handshake: TLSHandshake, policy: StoragePolicy) -> TLSHandshake:
    """A chain that validated is named by its certificates' fields and SHA-256; its DER bytes (which
    the scrubber reads only as text) are kept where they are evidence: a chain that did not validate."""
    if policy.keep_full_bodies or not handshake.validated:
        return handshake
    if all(c.der_b64 is None for c in handshake.peer_certificates):
        return handshake  # already dropped (without_validated_der)
    certificates = [c.model_copy(update={"der_b64": None}) for c in handshake.peer_certificates]
    return handshake.model_copy(update={"peer_certificates": certificates})


def _minimised_requests(
    requests: Sequence[HTTPTransaction],
    control: ControlHTTP | None,
    fingerprints: FingerprintDB | None,
    policy: StoragePolicy,
) -> list[HTTPTransaction]:
    kept_request = policy.kept_header_values | PROBE_REQUEST_HEADERS
    out = []
    for transaction in requests:
        request = transaction.request.model_copy(
            update={"headers": _kept_headers(transaction.request.headers, kept_request - NEVER_KEPT_HEADERS)}
        )
        response = transaction.response
        if response is not None:
            response = _minimised_response(response, control, fingerprints, policy)
        out.append(transaction.model_copy(update={"request": request, "response": response}))
    return out


def minimise(
    measurement: Measurement,
    policy: StoragePolicy = StoragePolicy(),
    fingerprints: FingerprintDB | None = None,
) -> Measurement:
    """A copy of ``measurement`` keeping only what :class:`StoragePolicy` allows, annotated with it.

    ``fingerprints`` is the database the measurement is judged with: a body it matches is always kept, so
    the judgement of the minimised measurement is the judgement of the full one.
    """
    keys = measurement.test_keys
    control = keys.control.http_request if keys.control is not None else None
    requests = _minimised_requests(keys.requests, control, fingerprints, policy)
    new_control = keys.control
    if new_control is not None:
        # The control's values come from the collector's vantage, but they are stored with the
        # measurement: the same rule for its headers (the comparison reads their names only).
        kept = policy.kept_header_values
        http = new_control.http_request
        headers = {name: value if name.lower() in kept else DROPPED for name, value in http.headers.items()}
        new_control = new_control.model_copy(
            update={"http_request": http.model_copy(update={"headers": headers})}
        )
    handshakes = [_minimised_handshake(h, policy) for h in keys.tls_handshakes]
    new_keys = keys.model_copy(
        update={"requests": requests, "control": new_control, "tls_handshakes": handshakes}
    )
    annotations = {**measurement.annotations, BODY_POLICY_ANNOTATION: policy.annotation}
    return measurement.model_copy(update={"test_keys": new_keys, "annotations": annotations})


def without_validated_der(measurement: Measurement, policy: StoragePolicy = StoragePolicy()) -> Measurement:
    """``measurement`` without the DER bytes :func:`minimise` drops whatever they say (a validated chain's,
    unless the volunteer keeps everything): dropped before scrubbing, they are not scanned for an address
    only to be thrown away. Whether they are dropped depends on ``validated`` alone, never on the scrubbed
    text, so ``minimise(anonymise(without_validated_der(m)))`` is ``minimise(anonymise(m))``."""
    keys = measurement.test_keys
    handshakes = [_minimised_handshake(h, policy) for h in keys.tls_handshakes]
    if all(new is old for new, old in zip(handshakes, keys.tls_handshakes, strict=True)):
        return measurement
    new_keys = keys.model_copy(update={"tls_handshakes": handshakes})
    return measurement.model_copy(update={"test_keys": new_keys})
