"""Envelopes the API writes: requests for the priority topics and facts for the event log.

Ids are deterministic wherever a retry must not create a second thing: a request with
an ``Idempotency-Key`` and every fact about a notification (reading it twice is one fact).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.problems import Problem
from engine import correlation
from engine.email_address import InvalidAddress, single_address
from engine.priority import Priority
from schemas.channels import APNS
from schemas.codec import encode, event_from_data, schema
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import Event
from schemas.ids import derived_id, uuid7

SOURCE = "herald/api"

REQUEST_FIELDS: frozenset[str] = frozenset(schema("notification.requested")["properties"])
"""Fields a client may put in a ``POST /api/notifications`` body: exactly the request schema's
(``schemas/notification.requested``), so REST and Kafka producers can never drift apart."""
DEVICE_TOKEN_CHANNEL = APNS.name
"""The channel a request's ``device_token`` belongs to (an ios device's APNs token): a bulk to
device tokens goes on it, and so does a single request naming a token but no ``channels``."""
CALLER_CHOSEN_ADDRESS = "email"
"""The field that sends mail to an address of the caller's choice (services only: no open relay)."""


def request_id(caller: str, user_id: str, idempotency_key: str | None) -> str:
    """The notification id: UUIDv7, or derived from caller, recipient and key so a retry reuses it."""
    if idempotency_key is None:
        return uuid7()
    return derived_id("api-request", caller, user_id, idempotency_key)


def build_request(
    data: dict[str, Any],
    *,
    notification_id: str,
    correlation_id: str | None = None,
    now: datetime | None = None,
    max_bytes: int | None = None,
) -> tuple[Envelope, Priority]:
    """A validated ``notification.requested`` envelope and the priority topic it goes to.

    ``max_bytes``: ingest's record limit; a request whose envelope would exceed it is
    refused here (413) rather than accepted and then dead-lettered by ingest.
    """
    data = {k: v for k, v in data.items() if v is not None}
    data.setdefault("priority", Priority.MEDIUM.value)
    try:
        event = event_from_data("notification.requested", data)
    except InvalidMessage as exc:
        raise Problem(422, "Unprocessable Content", exc.reason) from None
    priority = Priority(data["priority"])
    env = Envelope(
        id=notification_id,
        source=SOURCE,
        time=now or datetime.now(UTC),
        data=event,
        subject=notification_id,
        userid=data["user_id"],
        priority=priority.value,
        # A single request's correlation id is the HTTP request id (api.http_metrics): its log lines follow it.
        correlationid=correlation_id or correlation.current(),
    )
    if max_bytes is not None and (size := len(encode(env))) > max_bytes:
        raise Problem(
            413, "Payload Too Large", f"the notification encodes to {size} bytes; at most {max_bytes} are accepted"
        )
    return env, priority


def fact(event: Event, *, user_id: str, subject: str | None, unique: str | None = None) -> Envelope:
    """A fact the user caused, for the event log.

    ``unique`` makes the id deterministic (``derived_id(unique, type)``): the same fact twice
    is one event to the projector and to the agents reacting to it.
    """
    return Envelope(
        id=derived_id(unique, event.TYPE) if unique is not None else uuid7(),
        source=SOURCE,
        time=datetime.now(UTC),
        data=event,
        subject=subject,
        userid=user_id,
        correlationid=subject,
    )


def check_address(body: dict[str, Any], *, may_write: bool) -> None:
    """Validate a request body's ``email`` in place: one plain address, from a service.

    403 for a user token (mail to any address would make Herald an open relay); 422
    for anything but exactly one plain address (a list in a ``To`` header mails them all).
    """
    email = body.get(CALLER_CHOSEN_ADDRESS)
    if email is None:
        return
    if not may_write:
        raise Problem(403, "Forbidden", "email (an address of your choice) needs the notifications:write scope")
    if not isinstance(email, str):
        raise Problem(422, "Unprocessable Content", "email must be an address or null")
    try:
        body[CALLER_CHOSEN_ADDRESS] = single_address(email)
    except InvalidAddress as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from None
