"""APNs request semantics: decide the answer to one request and record it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection

from herald.apns_emulator._auth import ProviderTokenVerifier
from herald.apns_emulator._log import logger
from herald.apns_emulator._protocol import InboundRequest, Reply
from herald.apns_emulator._state import EmulatorState, ReceivedNotification
from herald.apns_emulator._validation import (
    Rejection,
    check_apns_headers,
    check_apns_id,
    check_device_token,
    check_duplicates,
    check_route,
    check_topic,
    parse_payload,
)

_REDACTED = "<redacted>"


class RequestHandler:
    """Applies Apple's checks, then the configured behaviour, to each request.

    ``topics`` restricts ``apns-topic`` (``None`` accepts any topic).
    """

    def __init__(
        self,
        verifier: ProviderTokenVerifier,
        state: EmulatorState,
        topics: Collection[str] | None,
    ) -> None:
        self._verifier = verifier
        self._state = state
        self.topics = topics

    def __call__(self, request: InboundRequest) -> Reply:
        """Judge one request, record it and say what to answer."""
        now = time.time()
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        raw_collapse_id: bytes | None = None
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("ascii", "replace").lower()
            value = raw_value.decode("utf-8", "replace")
            (pseudo if name.startswith(":") else headers)[name] = value
            if name == "apns-collapse-id":
                raw_collapse_id = raw_value
        given_id = headers.get("apns-id")
        # Apple echoes the caller's apns-id, or makes up an uppercase UUID.
        apns_id = given_id or str(uuid.uuid4()).upper()
        push_type = headers.get("apns-push-type")
        token, route_rejection = check_route(pseudo.get(":method", ""), pseudo.get(":path", ""))
        payload, payload_rejection = parse_payload(bytes(request.body), request.body_length, push_type)
        auth = self._verifier.verify(headers.get("authorization"), now)

        # Framing, then credentials, then headers, then body: Apple does not
        # document its order, this one reports the most fundamental problem.
        rejection = (
            check_duplicates(request.headers)
            or route_rejection
            or check_apns_id(given_id)
            or (Rejection(403, auth.reason) if auth.reason else None)
            or check_topic(headers.get("apns-topic"), self.topics)
            or check_apns_headers(headers, raw_collapse_id)
            or check_device_token(token)
            or payload_rejection
        )
        timestamp: int | None = None
        if rejection is None:
            rejection, timestamp = self._behaviour_for(token)

        if "authorization" in headers:
            headers["authorization"] = _REDACTED
        status = rejection.status if rejection else 200
        reason = rejection.reason if rejection else None
        self._state.record(ReceivedNotification(token, headers, payload, status, reason, apns_id, now, auth.key_id))
        logger.info(
            "%s %s… -> %d %s",
            pseudo.get(":method"),
            pseudo.get(":path", "")[:24],
            status,
            reason or "",
        )
        if rejection is None:
            return Reply(200, apns_id)
        body: dict[str, object] = {"reason": rejection.reason}
        if timestamp is not None:
            body["timestamp"] = timestamp
        return Reply(rejection.status, apns_id, json.dumps(body, separators=(",", ":")).encode())

    def _behaviour_for(self, token: str) -> tuple[Rejection | None, int | None]:
        fault = self._state.take_fault(token)
        if fault is not None:
            return Rejection(*fault), None
        if self._state.is_bad(token):
            return Rejection(400, "BadDeviceToken"), None
        unregistered_at = self._state.unregistered_since(token)
        if unregistered_at is not None:
            return Rejection(410, "Unregistered"), unregistered_at
        return None, None
