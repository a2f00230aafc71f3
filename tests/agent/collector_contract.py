"""A small server implementing the collector's documented upload/geolocate/control answers, for the
agent's tests (the lead's end-to-end tests use the real collector). Loopback only.

It reads the agent's requests and builds its answers with the wire contract's models
(:mod:`gatewatch.core.wire`) and reasons (:mod:`gatewatch.core.vocabulary`), as the collector does, so it
cannot drift from the contract; only the knobs that play a foreign or older server (``raw_next``,
``block_answer``, ``omit_probe_ip``) answer outside it, on purpose."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gatewatch.core import blindrsa
from gatewatch.core.batch_token import (
    EPOCH_SECONDS,
    TokenParts,
    epoch_end,
    epoch_of,
    epoch_start,
    verify_token,
)
from gatewatch.core.control import ControlDNS, ControlHTTP, ControlObservations
from gatewatch.core.envelope import Envelope, EnvelopeError, verify
from gatewatch.core.vocabulary import (
    BODY_TOO_LARGE,
    CONTROL_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    NOT_FOUND,
    RATE_LIMITED,
    STORE_UNAVAILABLE,
    TOO_OLD,
    UID_CONFLICT,
)
from gatewatch.core.wire import (
    ControlBatchItem,
    ControlBatchRequest,
    ControlBatchResponse,
    ControlRequest,
    ErrorBody,
    Geolocation,
    IngestItemResult,
    IngestRequest,
    IngestResponse,
    IssuerKey,
    IssuerKeysResponse,
    TokenRequest,
    TokenRequestBody,
    TokenResponse,
)

# The reason the collector gives with each status these tests make it answer.
_REASONS = {
    400: INVALID_REQUEST,
    404: NOT_FOUND,
    413: BODY_TOO_LARGE,
    429: RATE_LIMITED,
    503: STORE_UNAVAILABLE,
    504: CONTROL_TIMEOUT,
}


def error_answer(status: int, headers: dict[str, str] | None = None) -> web.Response:
    """An error as the collector answers it: an ErrorBody, served as JSON."""
    body = ErrorBody(error=_REASONS.get(status, INTERNAL_ERROR), detail="contract collector")
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)


@dataclass
class ContractCollector:
    stored: dict[str, bytes] = field(default_factory=dict)  # measurement_uid -> exact bytes
    receipts: Counter[str] = field(default_factory=Counter)  # uid -> times answered accepted/duplicate
    requests: int = 0
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (status, headers) queue
    lose_answer_after_store: int = 0  # store, then answer 500 (the answer "lost")
    hang_on_request: int | None = None  # store request #n, then never answer
    stored_and_hanging: asyncio.Event = field(default_factory=asyncio.Event)
    refuse_batches_with: str | None = None  # a uid: whole-request 400 for any batch containing it
    # A uid: any batch containing it gets a middlebox's answer (see ``raw_next``) instead, every time.
    block_batches_with: str | None = None
    block_answer: tuple[int, str, str, dict[str, str]] = (403, "<html>Blocked</html>", "text/html", {})
    # Answers not from the collector's code (status, body, content type, headers), one per request: a
    # censor's blockpage, a captive portal's redirect, a proxy's body limit.
    raw_next: list[tuple[int, str, str, dict[str, str]]] = field(default_factory=list)
    reject_uids: set[str] = field(default_factory=set)
    probe_ip: str | None = "127.0.0.1"  # None: echo the connection's address
    omit_probe_ip: bool = False  # answer geolocate without a probe_ip
    next_probe_ips: list[str] = field(default_factory=list)  # answered (one per call) before probe_ip
    control_status: int = 200
    test_list: str | None = None  # CSV served at /api/v1/test-list; None: 404
    seen_control_requests: list[dict[str, Any]] = field(default_factory=list)
    batch_endpoint: bool = True  # False: a collector from before POST /api/v1/controls (404)
    control_http_requests: int = 0  # HTTP requests to either control endpoint
    control_errors: dict[str, str] = field(default_factory=dict)  # input -> a batch item's error code
    # The token issuer (issue 12): one key for the current epoch, made on first use.
    issuer: rsa.RSAPrivateKey | None = None
    tokens_issued: int = 0
    token_batches: int = 0  # batches that came with a token that verified

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v1/measurements", self.measurements)
        app.router.add_get("/api/v1/geolocate", self.geolocate)
        app.router.add_post("/api/v1/control", self.control)
        if self.batch_endpoint:
            app.router.add_post("/api/v1/controls", self.controls)
        app.router.add_get("/api/v1/test-list", self.serve_test_list)
        app.router.add_get("/api/v1/issuer-keys", self.issuer_keys)
        app.router.add_post("/api/v1/tokens", self.tokens)
        return app

    def _issuer(self) -> rsa.RSAPrivateKey:
        if self.issuer is None:
            self.issuer = blindrsa.generate_issuer_key()
        return self.issuer

    async def issuer_keys(self, request: web.Request) -> web.Response:
        public = self._issuer().public_key()
        epoch = epoch_of(datetime.now(UTC))
        key = IssuerKey(
            epoch=epoch,
            key_id=blindrsa.key_id(public),
            public_key=base64.b64encode(blindrsa.public_key_to_spki(public)).decode(),
            valid_from=epoch_start(epoch),
            issue_until=epoch_end(epoch),
            valid_until=epoch_end(epoch) + timedelta(days=3),
        )
        answer = IssuerKeysResponse(
            variant="RSABSSA-SHA384-PSS-Randomized",
            current_epoch=epoch,
            epoch_seconds=EPOCH_SECONDS,
            keys=[key],
        )
        return web.json_response(answer.model_dump(mode="json"))

    async def tokens(self, request: web.Request) -> web.Response:
        asked = TokenRequest.model_validate(await request.json())
        body = TokenRequestBody.model_validate_json(base64.b64decode(asked.request))
        signatures = [
            base64.b64encode(blindrsa.blind_sign(self._issuer(), base64.b64decode(m))).decode()
            for m in body.blinded_messages
        ]
        self.tokens_issued += len(signatures)
        answer = TokenResponse(
            epoch=body.epoch, key_id=body.key_id, blind_signatures=signatures, remaining=1000
        )
        return web.json_response(answer.model_dump(mode="json"))

    async def measurements(self, request: web.Request) -> web.Response:
        self.requests += 1
        batch = IngestRequest.model_validate(await request.json())
        items = batch.measurements
        if batch.token is not None:
            token = batch.token
            parts = TokenParts.decode(token.epoch, token.key_id, token.ephemeral_public_key, token.token)
            verify_token(parts, self._issuer().public_key())
            self.token_batches += 1
        if self.raw_next:
            return self._raw(*self.raw_next.pop(0))
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            return error_answer(status, headers)
        if self._contains(items, self.block_batches_with):
            return self._raw(*self.block_answer)
        if self._contains(items, self.refuse_batches_with):
            return error_answer(400)
        results = [self._ingest(index, envelope) for index, envelope in enumerate(items)]
        if self.hang_on_request == self.requests:
            self.stored_and_hanging.set()
            await asyncio.sleep(60)  # the agent is killed while waiting for this answer
        if self.lose_answer_after_store:
            self.lose_answer_after_store -= 1
            return error_answer(500)
        return web.json_response(IngestResponse(results=results).model_dump(mode="json"))

    def _ingest(self, index: int, envelope: Envelope) -> IngestItemResult:
        try:
            payload, _ = verify(envelope)
        except EnvelopeError as exc:
            return IngestItemResult(index=index, measurement_uid=None, status="rejected", reason=exc.reason)
        uid = json.loads(payload)["measurement_uid"]
        if uid in self.reject_uids:
            return IngestItemResult(index=index, measurement_uid=uid, status="rejected", reason=TOO_OLD)
        if uid in self.stored and self.stored[uid] != payload:  # another measurement under a stored uid
            return IngestItemResult(index=index, measurement_uid=uid, status="rejected", reason=UID_CONFLICT)
        status = "duplicate" if uid in self.stored else "accepted"  # duplicate: the same bytes again
        self.stored.setdefault(uid, payload)
        self.receipts[uid] += 1
        return IngestItemResult(index=index, measurement_uid=uid, status=status, reason=None)

    @staticmethod
    def _contains(items: list[Envelope], uid: str | None) -> bool:
        return uid is not None and any(uid.encode() in base64.b64decode(item.payload) for item in items)

    @staticmethod
    def _raw(status: int, body: str, content_type: str, headers: dict[str, str]) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type, headers=headers)

    async def geolocate(self, request: web.Request) -> web.Response:
        probe_ip = self.next_probe_ips.pop(0) if self.next_probe_ips else None
        answer = Geolocation(
            probe_asn="AS64501",
            probe_cc="XL",
            probe_network_name="Lab ISP A",
            probe_ip=probe_ip or self.probe_ip or request.remote or "",
        )
        # omit_probe_ip: an answer outside the contract, which agents have always read as "no address".
        return web.json_response(
            answer.model_dump(mode="json", exclude={"probe_ip"} if self.omit_probe_ip else None)
        )

    async def serve_test_list(self, request: web.Request) -> web.Response:
        if self.test_list is None:
            return error_answer(404)
        return web.Response(text=self.test_list, content_type="text/csv")

    async def controls(self, request: web.Request) -> web.Response:
        self.control_http_requests += 1
        asked = ControlBatchRequest.model_validate(await request.json()).requests
        self.seen_control_requests.extend(item.model_dump(mode="json") for item in asked)
        if self.control_status != 200:
            return error_answer(self.control_status)
        results = [self._batch_item(item) for item in asked]
        return web.json_response(ControlBatchResponse(results=results).model_dump(mode="json"))

    def _batch_item(self, asked: ControlRequest) -> ControlBatchItem:
        error = self.control_errors.get(asked.input)
        if error is None:
            return ControlBatchItem(input=asked.input, control=self._observations())
        retry_after = 5 if error == RATE_LIMITED else None
        return ControlBatchItem(input=asked.input, error=error, detail=error, retry_after=retry_after)

    def _observations(self) -> ControlObservations:
        return ControlObservations(
            dns=ControlDNS(addrs=["198.51.100.10"]), http_request=ControlHTTP(status_code=200, title="Echo")
        )

    async def control(self, request: web.Request) -> web.Response:
        self.control_http_requests += 1
        asked = ControlRequest.model_validate(await request.json())
        self.seen_control_requests.append(asked.model_dump(mode="json"))
        if self.control_status != 200:
            return error_answer(self.control_status)
        return web.json_response(self._observations().model_dump(mode="json"))
