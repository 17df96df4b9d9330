"""Generic devices (issue 13): a device is (platform, token), its platform declared by a channel.

Version 1 device events (no platform) are APNs ones and stay readable; ios events are
still written as version 1, byte for byte, other platforms as version 2; an unknown
platform, or a token its platform refuses, is refused at decode. The registry's fold
keeps the same token string on two platforms apart, and the REST body schema follows
the declared platforms.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from api.rest.openapi import new_device_schema
from engine.device_lifecycle import device_key, split_key
from engine.devices import ActiveDevice, decide_registration
from schemas.channels import IOS, REGISTRY, ChannelRegistry, ChannelRegistryError, ChannelSpec, canonical_token
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import DeviceInvalidated, DeviceRegistered, DeviceUnregistered, Event
from streams.device_registry import DeviceRegistry
from tests.support.pager_channel import PAGER, PAGEROS, declared

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _raw(event_type: str, data: dict[str, Any], dataschema: str | None = None) -> bytes:
    env: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "tests",
        "type": event_type,
        "time": "2026-03-01T00:00:00Z",
    }
    env |= {"datacontenttype": "application/json", "data": data}
    if dataschema:
        env["dataschema"] = dataschema
    return json.dumps(env).encode()


def _env(event: Event) -> Envelope:
    return Envelope(id="e-1", source="tests", time=T0, data=event, subject=None, userid=getattr(event, "user_id", None))


def test_apns_declares_ios_and_the_registry_knows_each_channel_s_platform() -> None:
    assert dict(REGISTRY.platforms) == {"ios": IOS}
    assert REGISTRY.platform_of("apns") == "ios" and REGISTRY.platform_of("email") is None
    with declared() as registry:
        assert list(registry.platforms) == ["ios", "pageros"]
        assert canonical_token("pageros", "AbC12345") == "AbC12345"  # case kept: pageros says so
    assert canonical_token("pageros", "AbC12345") is None  # gone with the block
    assert canonical_token("ios", "AB" * 32) == "ab" * 32


def test_a_platform_is_one_device_channel_s_and_unique() -> None:
    with pytest.raises(ChannelRegistryError, match="only a device_token channel"):
        REGISTRY.plus(ChannelSpec("sms", bit=9, target="address", settings_prefix="", platform=PAGEROS))
    with pytest.raises(ChannelRegistryError, match="platforms repeat"):
        REGISTRY.plus(ChannelSpec("fcm", bit=9, target="device_token", settings_prefix="", platform=IOS))
    assert isinstance(REGISTRY.plus(PAGER), ChannelRegistry)


def test_a_v1_device_event_from_an_old_log_is_an_ios_one() -> None:
    token = secrets.token_hex(32)
    for event_type, data in [
        ("device.registered", {"user_id": "u", "device_token": token}),
        ("device.unregistered", {"user_id": "u", "device_token": token}),
        ("device.invalidated", {"user_id": "u", "device_token": token, "reason": "Unregistered"}),
    ]:
        event = decode(_raw(event_type, data)).data
        assert (event.platform, event.device_token) == ("ios", token), event_type  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "event",
    [
        DeviceRegistered("u", "ab" * 32, name="phone"),
        DeviceUnregistered("u", "ab" * 32),
        DeviceInvalidated("u", "ab" * 32, "BadDeviceToken", invalid_since=T0),
    ],
)
def test_an_ios_device_event_is_written_as_version_1_byte_for_byte(event: Event) -> None:
    written = json.loads(encode(_env(event)))
    assert "dataschema" not in written
    v1 = {"user_id": "u", "device_token": "ab" * 32}
    if isinstance(event, DeviceRegistered):
        v1 |= {"platform": "ios", "name": "phone"}  # v1 had platform (enum ios)
    if isinstance(event, DeviceInvalidated):
        v1 |= {"reason": "BadDeviceToken", "invalid_since": "2026-03-01T00:00:00Z"}
    assert written["data"] == v1
    assert decode(encode(_env(event))).data == event


def test_another_platform_s_device_events_are_version_2_and_need_the_platform_declared() -> None:
    events = [
        DeviceRegistered("u", "Pager0001", platform="pageros"),
        DeviceUnregistered("u", "Pager0001", platform="pageros"),
        DeviceInvalidated("u", "Pager0001", "gone", platform="pageros"),
    ]
    with declared():
        raws = [encode(_env(e)) for e in events]
        for event, raw in zip(events, raws, strict=True):
            assert json.loads(raw)["dataschema"] == f"herald:{event.TYPE}:v2"
            assert decode(raw).data == event
    for raw in raws:
        with pytest.raises(InvalidMessage, match="unknown device platform 'pageros' \\(known: ios\\)"):
            decode(raw)


def test_a_registration_whose_token_its_platform_refuses_is_invalid() -> None:
    data = {"user_id": "u", "device_token": "not-hex", "platform": "ios"}
    with pytest.raises(InvalidMessage, match="device_token of platform ios: 64 hexadecimal characters"):
        decode(_raw("device.registered", data, "herald:device.registered:v2"))
    with declared(), pytest.raises(InvalidMessage, match="device_token of platform pageros"):
        decode(_raw("device.registered", {**data, "platform": "pageros"}, "herald:device.registered:v2"))


def test_the_registry_fold_keeps_one_token_on_two_platforms_as_two_devices() -> None:
    registry = DeviceRegistry(max_devices=2)
    registry.tokens, registry.index, registry.contacts = {}, {}, {}
    token = secrets.token_hex(32)
    for platform in ("ios", "pageros", "ios"):
        assert registry.apply(_env(DeviceRegistered("u", token, platform=platform))) == []
    assert (registry.active_tokens("u", "ios"), registry.active_tokens("u", "pageros")) == ([token], [token])
    assert registry.active_tokens_in_order("u") == [device_key("pageros", token), token]  # ios re-registered last
    registry.apply(_env(DeviceUnregistered("u", token, platform="pageros")))
    assert (registry.state("u", token), registry.state("u", token, "pageros")) == ("active", "unregistered")
    # The cap counts devices of every platform: a third device evicts the oldest, whatever its platform.
    registry.apply(_env(DeviceRegistered("u", "Pager0001", platform="pageros")))
    evicted = registry.apply(_env(DeviceRegistered("u", "Pager0002", platform="pageros")))
    assert [(e.data.platform, e.data.device_token) for e in evicted] == [("ios", token)]  # type: ignore[attr-defined]
    assert split_key(device_key("pageros", "a:b")) == ("pageros", "a:b") and split_key(token) == ("ios", token)


def test_a_takeover_or_eviction_unregisters_the_device_on_its_own_platform() -> None:
    token = secrets.token_hex(32)
    active = [ActiveDevice("Pager0001", T0, "pageros")]
    decision = decide_registration(
        DeviceRegistered("bob", token, platform="pageros"), previous_owner="alice", active=active, cap=1
    )
    assert decision.unregistered == (
        DeviceUnregistered("alice", token, platform="pageros"),
        DeviceUnregistered("bob", "Pager0001", platform="pageros"),
    )


def test_the_rest_body_schema_checks_each_token_by_the_rule_of_the_platform_named() -> None:
    one = new_device_schema(REGISTRY.platforms)
    assert one["properties"]["platform"] == {"enum": ["ios"], "default": "ios"} and "oneOf" not in one
    two = new_device_schema(REGISTRY.plus(PAGER).platforms)
    jsonschema.Draft202012Validator.check_schema(two)
    valid: list[dict[str, Any]] = [{"device_token": "ab" * 32}, {"device_token": "AbC12345", "platform": "pageros"}]
    invalid: list[dict[str, Any]] = [
        {"device_token": "AbC12345"},  # ios by default: not 64 hex
        {"device_token": "ab" * 32, "platform": "ios", "extra": 1},
        {"device_token": "a-b", "platform": "pageros"},
        {"device_token": "ab" * 32, "platform": "fax"},
    ]
    for body in valid:
        jsonschema.validate(body, two)
    for body in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, two)
