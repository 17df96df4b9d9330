"""The codec without a broker: round trips, binary mode, and clear errors for bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import NotificationAccepted, NotificationRequested


def _request(dataschema: str | None = None, **data: object) -> bytes:
    body = {"user_id": "alice", "title": "hi", **data}
    doc: dict[str, object] = {"specversion": "1.0", "type": "notification.requested", "id": "r1", "source": "t"}
    if dataschema is not None:
        doc["dataschema"] = dataschema
    return json.dumps({**doc, "data": body}).encode()


def test_structured_request_decodes_with_defaults() -> None:
    env = decode(_request(expires_at="2030-01-01T00:00:00Z", channels=["all"]))
    assert isinstance(env.data, NotificationRequested)
    assert env.data.channels == ("all",)
    assert env.data.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert env.data.body == "" and env.data.data == {}


def test_binary_mode_headers_are_accepted() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_type", b"notification.requested"),
        ("ce_id", b"b1"),
        ("ce_source", b"kcat"),
    ]
    env = decode(json.dumps({"user_id": "bob", "title": "t"}).encode(), headers)
    assert env.id == "b1" and env.source == "kcat"
    assert isinstance(env.data, NotificationRequested) and env.data.user_id == "bob"


def test_encode_decode_round_trip_is_identity() -> None:
    event = NotificationAccepted(
        notification_id="n1",
        user_id="alice",
        title="t",
        body="b",
        priority="high",
        channels=("websocket", "email"),
        category="c",
        data={"k": [1, 2]},
        requested_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    env = Envelope(
        id="e1",
        source="s",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        data=event,
        subject="n1",
        userid="alice",
        priority="high",
    )
    assert decode(encode(env)) == env
    assert "dataschema" not in json.loads(encode(env))  # channels v1 knew: written as v1, as before


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"{nope", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"specversion":"1.0","type":"notification.requested","source":"t","data":{}}', "id"),
        (
            b'{"specversion":"0.3","type":"notification.requested","id":"x","source":"t","data":{"user_id":"a","title":"t"}}',
            "specversion",
        ),
        (b'{"specversion":"1.0","type":"bogus.type","id":"x","source":"t","data":{}}', "unknown event type"),
        (_request(priority="urgent"), "priority"),
        (_request(colour="red"), "must not contain"),
        (_request(title=""), "title"),
        (_request(expires_at="tomorrow"), "expires_at"),
        (
            _request("herald:notification.requested:v2", channels=["sms"]),
            "notification.requested: unknown channel 'sms' in channels (known: websocket, email, apns, webhook, all)",
        ),
        (_request(channels=["sms"]), "channels added since need dataschema herald:notification.requested:v2"),
        (_request("herald:notification.requested:v9"), "has versions 1 to 2; a newer Herald wrote this record"),
        (_request("herald:notification.accepted:v2"), "names another type"),
    ],
)
def test_bad_input_raises_invalid_message_with_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(raw)
    assert reason in info.value.reason


def test_oversize_payload_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidMessage, match="exceeds the 100-byte limit"):
        decode(_request(body="x" * 200), max_bytes=100)


def test_invalid_message_still_reports_user_and_id() -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(_request(colour="red"))
    assert (info.value.user_id, info.value.event_id) == ("alice", "r1")
