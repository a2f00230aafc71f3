"""Controls the collector vouches for: signed on the way out, authenticated at ingest.

Keys. The control-signing keys are Ed25519 keys **derived from one shared secret setting**
(``control_signing_secret``, e.g. ``GATEWATCH_CONTROL_SIGNING_SECRET``): the key of period *n* (periods of
``control_key_period_seconds``, a day by default, counted from the Unix epoch) is derived with HKDF-SHA256
from the secret and *n*. So keys rotate by themselves, nothing needs storing, and every collector process
given the same secret (several behind one load balancer, on one PostgreSQL) signs and accepts the same
keys: each accepts the others' controls. Without a secret, a process draws a random one at start: it
vouches for its own controls only, until it restarts (the log says so). The key id names the period and
the public key (``ck-<period>-<16 hex digits>``); the public keys of the periods ingest still accepts are
published at ``GET /api/v1/control-keys`` so that anyone can check a stored measurement's control.

Ingest (:func:`control_for_judgement`) judges a measurement only against a control it can authenticate:

1. the embedded ``test_keys.control_vouch``, when its key id is one of ours (a period ingest still
   accepts), its signature is valid, it is of the measurement's own URL, and it was measured no earlier
   than ``control_max_age_seconds`` before the measurement began (nor later than the measurement could
   have lasted): then its control, not whatever the agent put in ``test_keys.control``;
2. otherwise a control this process measured itself for that URL within the same bound (the control
   service's cache);
3. otherwise none: the measurement is stored with no verdict, and with the flag ``control_unverified``
   when the agent had embedded a control (one that came without any has no verdict, as before).

Each refusal has a reason (``forged``, ``unknown_key``, ``other_url``, ``too_old``, ...), logged with the
measurement uid and counted (``gatewatch_ingest_controls_total{source, refusal}``); it never fails the item.

Ingest does not fetch a control of its own for an upload that lacks an authentic one: uploads arrive after
the agent's upload delay (minutes to an hour), so a control measured then is outside ``CONTROL_AFTER_START``
and would not describe the moment the agent measured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from gatewatch.core.control import ControlObservations, VouchedControl
from gatewatch.core.measurement import Measurement
from gatewatch.core.vocabulary import TOO_OLD, UNKNOWN_KEY, VouchRefusal, VouchSource
from gatewatch.core.wire import ControlKey, ControlKeys

from .metrics import ControlMetrics
from .responses import model_response

__all__ = [
    "CONTROL_JUDGE_KEY",
    "CONTROL_KEYS_PATH",
    "CONTROL_SIGNER_KEY",
    "ControlJudge",
    "ControlSigner",
    "Refusal",
    "Vouching",
    "add_control_keys_route",
    "control_for_judgement",
]

CONTROL_KEYS_PATH = "/api/v1/control-keys"
MIN_SECRET_LENGTH = 32
CHECKED_CACHE_SIZE = 4096  # distinct vouched controls whose check ingest remembers
# How long after a measurement began its control may have been measured: the agent asks for it as soon as
# its DNS answered, and a measurement lasts at most a couple of minutes.
CONTROL_AFTER_START = timedelta(minutes=10)
log = logging.getLogger(__name__)

Refusal = VouchRefusal


def _period_key(secret: bytes, period: int) -> Ed25519PrivateKey:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"gatewatch control-signing key", info=str(period).encode()
    ).derive(secret)
    return Ed25519PrivateKey.from_private_bytes(derived)


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class ControlSigner:
    """The collector's control-signing keys, one per period, all derived from ``secret``."""

    secret: bytes
    period_seconds: float = 86_400.0
    # Periods back from the current one whose keys are still accepted (and published).
    accepted_periods: int = 31
    _keys: dict[int, tuple[str, Ed25519PrivateKey]] = field(default_factory=dict, repr=False)
    # (key id, signature) -> the fields that signature was found to be ours over (URL, time, control text)
    # and the control they hold: many measurements carry one vouched control, so most checks are one
    # lookup and a comparison of the texts (see :meth:`check`).
    _checked: dict[tuple[str, bytes], tuple[tuple[str, str, str], ControlObservations | None]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_setting(cls, secret: str, period_seconds: float, accept_for_seconds: float) -> ControlSigner:
        if secret and len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"control_signing_secret: at least {MIN_SECRET_LENGTH} characters")
        if not secret:
            log.warning(
                "no control_signing_secret: this process vouches for its own controls only, until it "
                "restarts (set one shared secret on every collector behind a load balancer)"
            )
        raw = secret.encode() if secret else secrets.token_bytes(32)
        periods = int(accept_for_seconds // period_seconds) + 1
        return cls(raw, period_seconds, periods)

    def period(self, when: datetime) -> int:
        return int(when.timestamp() // self.period_seconds)

    def key(self, period: int) -> tuple[str, Ed25519PrivateKey]:
        found = self._keys.get(period)
        if found is None:
            private = _period_key(self.secret, period)
            digest = hashlib.sha256(_raw(private.public_key())).hexdigest()[:16]
            found = self._keys[period] = (f"ck-{period}-{digest}", private)
            if len(self._keys) > 4 * (self.accepted_periods + 2):
                self._keys.pop(min(self._keys))
        return found

    def sign(self, url: str, control: ControlObservations, now: datetime | None = None) -> VouchedControl:
        measured_at = (now or datetime.now(UTC)).replace(microsecond=0)
        key_id, private = self.key(self.period(measured_at))
        unsigned = VouchedControl(
            key_id=key_id, input=url, measured_at=measured_at, control=control.model_dump_json(), signature=""
        )
        signature = base64.b64encode(private.sign(unsigned.signed_bytes())).decode()
        return unsigned.model_copy(update={"signature": signature})

    def check(
        self, vouch: VouchedControl, private: Ed25519PrivateKey
    ) -> tuple[bool, ControlObservations | None]:
        """Whether ``vouch`` carries our signature by ``private`` and, when it does, its control (None
        when the text is not one).

        Ed25519 signatures are deterministic (RFC 8032): the one valid signature of these bytes that our
        key ever makes is the one we make again now. Re-signing and comparing in constant time is about
        three times cheaper than a verification. A signature found to be ours is remembered with the fields
        it covers (and the parsed control): the same signature over the same key id, URL, time and text is
        the same signed bytes, so it is ours again without signing; anything else is signed and compared
        afresh (every collector holding the secret decides alike)."""
        try:
            given = base64.b64decode(vouch.signature, validate=True)
        except (binascii.Error, ValueError):
            return False, None
        fields = (vouch.input, vouch.measured_at.isoformat(), vouch.control)
        cache_key = (vouch.key_id, given)
        known = self._checked.get(cache_key)
        if known is not None and known[0] == fields:
            return True, known[1]
        if not hmac.compare_digest(private.sign(vouch.signed_bytes()), given):
            return False, None
        try:
            control: ControlObservations | None = vouch.observations()
        except ValidationError:
            control = None  # signed by us, so not expected: a control text of an older model
        if len(self._checked) >= CHECKED_CACHE_SIZE:
            try:
                self._checked.pop(next(iter(self._checked)), None)  # the oldest entry
            except (RuntimeError, StopIteration):  # another judging thread changed it meanwhile
                pass
        self._checked[cache_key] = (fields, control)
        return True, control

    def known_periods(self, now: datetime) -> range:
        current = self.period(now)
        return range(current - self.accepted_periods, current + 1)

    def public_key(self, key_id: str, now: datetime) -> Ed25519PublicKey | None:
        """The public key of ``key_id`` when it is one of ours still accepted at ``now``; else None."""
        private = self.private_key(key_id, now)
        return private.public_key() if private is not None else None

    def private_key(self, key_id: str, now: datetime) -> Ed25519PrivateKey | None:
        """The signing key of ``key_id`` when it is one of ours still accepted at ``now``; else None."""
        parts = key_id.split("-")
        if len(parts) != 3 or parts[0] != "ck" or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        period = int(parts[1])
        if period not in self.known_periods(now):
            return None
        expected_id, private = self.key(period)
        return private if secrets.compare_digest(expected_id, key_id) else None

    def published(self, now: datetime) -> ControlKeys:
        keys = []
        for period in reversed(self.known_periods(now)):
            key_id, private = self.key(period)
            keys.append(
                ControlKey(
                    key_id=key_id,
                    public_key=base64.b64encode(_raw(private.public_key())).decode(),
                    not_before=datetime.fromtimestamp(period * self.period_seconds, UTC),
                    not_after=datetime.fromtimestamp((period + 1) * self.period_seconds, UTC),
                )
            )
        return ControlKeys(keys=keys, current=keys[0].key_id)


@dataclass(frozen=True)
class Vouching:
    """What ingest decided about a measurement's control."""

    control: ControlObservations | None  # what to judge against; None: no verdict
    source: VouchSource
    refusal: Refusal | None = None  # why the embedded vouch was not used (None when it was)
    # The agent embedded a control, but none could be authenticated: stored with the flag
    # control_unverified (a measurement that came with no control at all has no verdict, unflagged).
    unverified: bool = False


def authenticate(
    vouch: VouchedControl | None, m: Measurement, signer: ControlSigner, max_age: timedelta, now: datetime
) -> ControlObservations | Refusal:
    """The vouched control of measurement ``m``, or why it cannot be trusted."""
    if vouch is None:
        return "absent"
    private = signer.private_key(vouch.key_id, now)
    if private is None:
        return UNKNOWN_KEY
    authentic, control = signer.check(vouch, private)
    if not authentic:
        return "forged"
    if vouch.input != m.input:
        return "other_url"
    measured = vouch.measured_at if vouch.measured_at.tzinfo else vouch.measured_at.replace(tzinfo=UTC)
    if measured < m.measurement_start_time - max_age:
        return TOO_OLD
    if measured > m.measurement_start_time + CONTROL_AFTER_START:
        return "too_new"
    return control if control is not None else "malformed"


def control_for_judgement(
    m: Measurement,
    signer: ControlSigner,
    max_age: timedelta,
    now: datetime,
    own_control: ControlObservations | None = None,
) -> Vouching:
    """The control ingest may judge ``m`` against (see the module's rules). ``own_control`` is what this
    process measured itself for ``m.input`` within the bound, if anything."""
    found = authenticate(m.test_keys.control_vouch, m, signer, max_age, now)
    if isinstance(found, ControlObservations):
        return Vouching(found, "vouched")
    if found != "absent":
        log.info("control not authenticated", extra={"measurement_uid": m.measurement_uid, "reason": found})
    if own_control is not None:
        return Vouching(own_control, "own_cache", found)
    embedded = found != "absent" or m.test_keys.control is not None
    return Vouching(None, "none", found, unverified=embedded)


@dataclass(frozen=True)
class ControlJudge:
    """What ingest calls per measurement (from its worker thread): the control to judge it against."""

    signer: ControlSigner
    max_age: timedelta
    # This process's latest control of a URL and when it was measured (the control service's).
    latest: Callable[[str], tuple[datetime, ControlObservations] | None]
    metrics: ControlMetrics | None = None  # each decision counted by source and refusal

    def __call__(self, m: Measurement, now: datetime) -> Vouching:
        own = self.latest(m.input)
        fits = own is not None and (
            m.measurement_start_time - self.max_age
            <= own[0]
            <= m.measurement_start_time + CONTROL_AFTER_START
        )
        found = control_for_judgement(m, self.signer, self.max_age, now, own[1] if own and fits else None)
        if self.metrics is not None:
            self.metrics.count(found.source, found.refusal)
        return found


CONTROL_SIGNER_KEY = web.AppKey("gatewatch_control_signer", ControlSigner)
CONTROL_JUDGE_KEY = web.AppKey("gatewatch_control_judge", ControlJudge)


async def handle_control_keys(request: web.Request) -> web.Response:
    return model_response(request.app[CONTROL_SIGNER_KEY].published(datetime.now(UTC)))


def add_control_keys_route(app: web.Application, signer: ControlSigner) -> None:
    app[CONTROL_SIGNER_KEY] = signer
    app.router.add_get(CONTROL_KEYS_PATH, handle_control_keys)
