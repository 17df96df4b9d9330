"""Schema version 2 of the channel-naming events: old records still read, channels from the registry.

The records below are byte for byte what Herald wrote before version 2 (no
``dataschema``, channels from the v1 enum): the event log keeps them forever, so the
codec must read them into today's classes. Version 2 takes any channel the registry
declares, so adding a channel edits no schema, and refuses any other with a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import versions
from schemas.channels import CHANNELS, ChannelRegistry, ChannelSpec
from schemas.codec import SCHEMA_DIR, decode, encode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import (
    ContactUpdated,
    DeliveryFailed,
    DeliveryRequeued,
    DeliverySucceeded,
    NotificationAccepted,
    NotificationExpired,
    NotificationRead,
    NotificationRequested,
)

OLD_ACCEPTED = (
    b'{"specversion":"1.0","id":"0190a7c2-0000-7000-8000-000000000001","source":"herald/ingest",'
    b'"type":"notification.accepted","time":"2026-03-01T10:00:00Z","datacontenttype":"application/json",'
    b'"subject":"n-1","userid":"alice","priority":"high","correlationid":"n-1","data":{"notification_id":"n-1",'
    b'"user_id":"alice","title":"Hello","body":"b","priority":"high","channels":["websocket","email","webhook"],'
    b'"category":"","data":{},"requested_at":"2026-03-01T09:59:59Z"}}'
)
"""A ``notification.accepted`` as the v1 release wrote it to ``herald.events``."""

OLD_SUCCEEDED = (
    b'{"specversion":"1.0","id":"e-2","source":"herald/delivery","type":"delivery.succeeded",'
    b'"time":"2026-03-01T10:00:01Z","datacontenttype":"application/json","subject":"n-1","userid":"alice",'
    b'"data":{"notification_id":"n-1","user_id":"alice","channel":"email","target":"a@example.com",'
    b'"latency_ms":12.5,"attempt":2}}'
)


def _envelope(event_type: str, data: dict[str, Any], dataschema: str | None = None) -> bytes:
    doc: dict[str, Any] = {"specversion": "1.0", "id": "e-1", "source": "t", "type": event_type}
    if dataschema is not None:
        doc["dataschema"] = dataschema
    return json.dumps({**doc, "data": data}).encode()


def _request(channels: list[str], dataschema: str | None = "herald:notification.requested:v2") -> bytes:
    return _envelope("notification.requested", {"user_id": "alice", "title": "t", "channels": channels}, dataschema)


def test_a_v1_event_from_an_old_log_decodes_into_the_current_class() -> None:
    env = decode(OLD_ACCEPTED)
    assert isinstance(env.data, NotificationAccepted) and env.data.VERSION == 2
    assert env.data.channels == ("websocket", "email", "webhook")
    assert env.data.requested_at == datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC)
    assert (env.subject, env.userid, env.correlationid) == ("n-1", "alice", "n-1")
    done = decode(OLD_SUCCEEDED)
    assert isinstance(done.data, DeliverySucceeded)
    assert (done.data.channel, done.data.target, done.data.attempt) == ("email", "a@example.com", 2)


def test_an_event_is_written_in_the_oldest_version_that_carries_it() -> None:
    """Channels v1 knew: byte for byte the v1 record (the previous release still reads it)."""
    env = decode(OLD_ACCEPTED)
    assert encode(env) == OLD_ACCEPTED
    assert encode(decode(OLD_SUCCEEDED)) == OLD_SUCCEEDED


def test_a_record_naming_v1_explicitly_is_validated_as_v1_then_upcast() -> None:
    v1 = "herald:delivery.failed:v1"
    data = {
        "notification_id": "n",
        "user_id": "u",
        "channel": "apns",
        "target": "tok",
        "attempt": 1,
        "retriable": True,
        "error": "503",
    }
    env = decode(_envelope("delivery.failed", data, v1))
    assert isinstance(env.data, DeliveryFailed) and env.data.channel == "apns"
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"delivery.failed"), ("ce_id", b"b"), ("ce_source", b"k")]
    binary = decode(json.dumps(data).encode(), [*headers, ("ce_dataschema", v1.encode())])
    assert binary.data == env.data


def test_v1_keeps_its_enum_so_a_v1_record_cannot_name_a_channel_v1_never_had() -> None:
    with pytest.raises(InvalidMessage, match=r"need dataschema herald:notification\.requested:v2"):
        decode(_request(["sms"], dataschema=None))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_request(["websocket", "sms"]), "notification.requested: unknown channel 'sms' in channels"),
        (_request(["Email"]), "unknown channel 'Email'"),
        (
            _envelope(
                "delivery.deferred",
                {"notification_id": "n", "user_id": "u", "channel": "pigeon", "reason": "offline"},
                "herald:delivery.deferred:v2",
            ),
            "delivery.deferred: unknown channel 'pigeon' in channel (known: websocket, email, apns, webhook)",
        ),
        (
            _envelope(
                "delivery.requeued",
                {
                    "notification_id": "n",
                    "user_id": "u",
                    "channel": "websocket",
                    "operator": "op",
                    "reason": "outage",
                    "previous_status": "failed",
                },
                "herald:delivery.requeued:v2",
            ),
            "delivery.requeued: unknown channel 'websocket' in channel (known: email, apns, webhook)",
        ),
        (
            _envelope("contact.updated", {"user_id": "u", "channels": ["email", "fax"]}, "herald:contact.updated:v2"),
            "contact.updated: unknown channel 'fax' in channels",
        ),
    ],
)
def test_an_unknown_channel_is_refused_with_the_channels_that_exist(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(raw)
    assert reason in info.value.reason
    assert info.value.user_id in ("alice", "u")  # the caller can still record the rejection


def test_an_overlong_channel_is_refused_by_the_schema_before_any_lookup() -> None:
    with pytest.raises(InvalidMessage, match="channels"):
        decode(_request(["x" * 65]))


def test_a_null_channel_still_means_every_channel_of_an_expiry() -> None:
    data = {"notification_id": "n", "user_id": "u", "expires_at": "2026-01-01T00:00:00Z", "channel": None}
    env = decode(_envelope("notification.expired", data, "herald:notification.expired:v2"))
    assert isinstance(env.data, NotificationExpired) and env.data.channel is None


def test_adding_a_channel_to_the_registry_needs_no_schema_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    schemas_before = {p: p.read_bytes() for p in SCHEMA_DIR.glob("*/v*.json")}
    with pytest.raises(InvalidMessage, match="unknown channel 'sms'"):
        decode(_request(["sms"]))
    sms = ChannelSpec("sms", bit=4, target="address", settings_prefix="sms_")
    monkeypatch.setattr(versions, "REGISTRY", ChannelRegistry.of((*CHANNELS, sms)))

    request = decode(_request(["sms", "email"]))
    assert isinstance(request.data, NotificationRequested) and request.data.channels == ("sms", "email")
    succeeded = DeliverySucceeded(notification_id="n", user_id="u", channel="sms", target="+100", latency_ms=3.0)
    env = Envelope(id="e", source="herald/delivery", time=datetime(2026, 3, 1, tzinfo=UTC), data=succeeded)
    assert json.loads(encode(env))["dataschema"] == "herald:delivery.succeeded:v2"  # v1 could not carry it
    assert decode(encode(env)) == env
    requeued = DeliveryRequeued(
        notification_id="n", user_id="u", channel="sms", operator="op", reason="r", previous_status="failed"
    )
    assert decode(encode(Envelope(id="q", source="s", time=env.time, data=requeued))).data == requeued
    contact = ContactUpdated(user_id="u", channels=("sms",))
    assert decode(encode(Envelope(id="c", source="s", time=env.time, data=contact))).data == contact
    assert {p: p.read_bytes() for p in SCHEMA_DIR.glob("*/v*.json")} == schemas_before


def test_a_type_still_at_v1_is_written_as_before_without_dataschema() -> None:
    read = NotificationRead(notification_id="n", user_id="u")
    raw = encode(Envelope(id="r", source="s", time=datetime(2026, 3, 1, tzinfo=UTC), data=read))
    assert "dataschema" not in json.loads(raw)
    assert decode(raw).data == read
