"""The APNs sink's request: its payload serialised once, and the bytes checked against Apple's limit sent as they are.

``request_for`` serialises the payload to check its size; the request carries those bytes
(``PushRequest.body``) and the client's protocol sends them instead of serialising the
payload again. The ``apns-id`` is the derived id itself (already a canonical UUID).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from engine.retry import DeliveryError
from schemas.events import NotificationAccepted
from schemas.ids import derived_id
from streams.apns_client import PushRequest, serialised
from streams.apns_sink import MAX_PAYLOAD_BYTES, apns_id, payload, payload_size, request_for

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
TOKEN = "ab" * 32


def _accepted(**overrides: object) -> NotificationAccepted:
    fields: dict[str, object] = {
        "notification_id": "n-1",
        "user_id": "alice",
        "title": "Soldes d'été",
        "body": "Tout à -20 % pendant une heure ✓",
        "priority": "high",
        "channels": ("apns",),
        "category": "general",
        "data": {"deep_link": "app://sale", "n": 3, "aps": "dropped"},
        "requested_at": NOW,
        "expires_at": NOW + timedelta(minutes=5),
    }
    return NotificationAccepted(**{**fields, **overrides})  # type: ignore[arg-type]


def test_the_request_carries_the_payload_bytes_aioapns_would_send() -> None:
    accepted = _accepted()
    request = request_for(accepted, TOKEN, now=NOW)
    assert isinstance(request, PushRequest)
    assert request.message == payload(accepted)
    # aioapns' own serialisation of the message, byte for byte (not ASCII-escaped).
    assert request.body == json.dumps(request.message, ensure_ascii=False).encode() == serialised(request.message)
    assert len(request.body) == payload_size(request.message)
    assert json.loads(request.body)["aps"]["alert"]["body"] == "Tout à -20 % pendant une heure ✓"
    assert (request.device_token, request.priority, request.time_to_live) == (TOKEN, 10, 300)


def test_the_apns_id_is_the_derived_uuid_unchanged() -> None:
    request = request_for(_accepted(), TOKEN, now=NOW)
    assert request.notification_id == apns_id("n-1", TOKEN) == derived_id("n-1", "apns", TOKEN)
    assert request.notification_id == str(uuid.UUID(derived_id("n-1", "apns", TOKEN)))


def test_a_payload_over_the_limit_is_refused_by_its_serialised_size() -> None:
    # Multi-byte characters: the limit is in bytes of the serialised payload, not characters.
    fits = _accepted(data={"x": "é" * ((MAX_PAYLOAD_BYTES - 300) // 2)})
    assert len(request_for(fits, TOKEN, now=NOW).body) <= MAX_PAYLOAD_BYTES
    over = _accepted(data={"x": "é" * (MAX_PAYLOAD_BYTES // 2)})
    with pytest.raises(DeliveryError, match="over APNs' 4096-byte limit") as raised:
        request_for(over, TOKEN, now=NOW)
    assert not raised.value.retriable
