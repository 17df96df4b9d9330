"""``decode_written``: a record the worker wrote itself, read without JSON Schema validation.

It must give exactly the envelope ``decode`` gives for every record ``encode`` writes, and
give up (``None``, so the caller runs the full ``decode`` and its dead-letter reason) on
anything off that layout, instead of building an event from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

import streams.delivery_attempt as delivery_attempt
from schemas.codec import decode, decode_written, encode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import EVENT_TYPES, NotificationAccepted, NotificationRequested
from tests.unit.test_worker_codec import _sample

WHEN = datetime(2026, 12, 3, 13, 1, 2, 345678, tzinfo=UTC)


def _accepted(**overrides: Any) -> NotificationAccepted:
    fields: dict[str, Any] = {
        "notification_id": "n-1",
        "user_id": "alice",
        "title": "Flash sale",
        "body": "Everything -20% for an hour",
        "priority": "medium",
        "channels": ("apns",),
        "category": "general",
        "data": {},
        "requested_at": WHEN,
    }
    return NotificationAccepted(**{**fields, **overrides})


def _envelope(event: Any, **attrs: Any) -> Envelope:
    base: dict[str, Any] = {
        "id": "n-1",
        "source": "herald/ingest",
        "time": WHEN,
        "subject": "n-1",
        "userid": "alice",
        "priority": "medium",
        "correlationid": "c-1",
    }
    return Envelope(data=event, **{**base, **attrs})


ACCEPTED = [
    _accepted(),
    _accepted(device_token="ab" * 32, push_type="background", badge=0, sound="", collapse_key="k"),
    _accepted(
        channels=("websocket", "email", "apns", "webhook"),
        data={"order": {"id": 7, "lines": [1, 2, 3], "note": "é ✓ \u2028", "ok": True, "none": None}},
        expires_at=WHEN + timedelta(hours=1),
        deliver_after=datetime(2026, 12, 3, 15, 0, tzinfo=timezone(timedelta(hours=2))),
        idempotency_key="idem",
        email="a@example.test",
        priority="high",
    ),
]


@pytest.mark.parametrize("event", ACCEPTED)
@pytest.mark.parametrize("attrs", [{}, {"subject": None, "userid": None, "priority": None, "correlationid": None}])
def test_a_record_encode_wrote_reads_as_decode_reads_it(event: NotificationAccepted, attrs: dict[str, Any]) -> None:
    env = _envelope(event, **attrs)
    raw = encode(env)
    assert decode_written(raw, [], expect=NotificationAccepted) == decode(raw) == env


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_reads_as_decode_reads_it_or_is_left_to_decode(event_type: str) -> None:
    cls = EVENT_TYPES[event_type]
    hints = typing.get_type_hints(cls)
    event = cls(**{f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls)})
    raw = encode(_envelope(event))
    written = decode_written(raw, [], expect=cls)
    try:
        full = decode(raw)
    except InvalidMessage:  # a content rule of the schema the structural decode does not repeat
        return
    # Left to decode only for floats (an integer beyond 64 bits would read as one): the samples' data have none.
    float_fields = any(isinstance(getattr(event, f.name), float) for f in dataclasses.fields(cls))
    assert written == full or (written is None and float_fields)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode(_envelope(_accepted())))
    for key, value in changes.items():
        if key.startswith("data_"):
            doc["data"][key[5:]] = value
        else:
            doc[key] = value
    return doc


def _drop(*names: str) -> dict[str, Any]:
    doc = _doc()
    for name in names:
        if name.startswith("data_"):
            del doc["data"][name[5:]]
        else:
            del doc[name]
    return doc


OFF_LAYOUT: list[tuple[str, Any]] = [
    ("not JSON", b"{nope"),
    ("not UTF-8", b"\xff\xfe"),
    ("a lone surrogate", json.dumps(_doc(data_title="\ud800")).encode()),
    ("an array", b"[]"),
    ("null JSON", b"null"),
    ("another type", json.dumps(_doc(type="notification.requested")).encode()),
    ("another specversion", json.dumps(_doc(specversion="0.3")).encode()),
    ("an extension attribute", json.dumps(_doc(traceparent="00-ab")).encode()),
    ("another content type", json.dumps(_doc(datacontenttype="text/plain")).encode()),
    ("no id", json.dumps(_drop("id")).encode()),
    ("an empty id", json.dumps(_doc(id="")).encode()),
    ("an id over the limit", json.dumps(_doc(id="x" * 201)).encode()),
    ("a user id over the limit", json.dumps(_doc(userid="x" * 201)).encode()),
    ("a numeric subject", json.dumps(_doc(subject=5)).encode()),
    ("no time", json.dumps(_drop("time")).encode()),
    ("a bad time", json.dumps(_doc(time="yesterday")).encode()),
    ("a time without zone", json.dumps(_doc(time="2026-12-03T13:00:00")).encode()),
    ("a newer version", json.dumps(_doc(dataschema="herald:notification.accepted:v9")).encode()),
    ("another type's schema", json.dumps(_doc(dataschema="herald:notification.requested:v2")).encode()),
    ("data not an object", json.dumps(_doc(data=[1])).encode()),
    ("a missing field", json.dumps(_drop("data_title")).encode()),
    ("an unknown field", json.dumps(_doc(data_colour="red")).encode()),
    ("a numeric title", json.dumps(_doc(data_title=5)).encode()),
    ("a null title", json.dumps(_doc(data_title=None)).encode()),
    ("channels as a string", json.dumps(_doc(data_channels="apns")).encode()),
    ("a numeric channel", json.dumps(_doc(data_channels=["apns", 3])).encode()),
    ("an unknown channel", json.dumps(_doc(data_channels=["sms"])).encode()),
    ("a boolean badge", json.dumps(_doc(data_badge=True)).encode()),
    ("a string badge", json.dumps(_doc(data_badge="3")).encode()),
    ("a bad requested_at", json.dumps(_doc(data_requested_at="soon")).encode()),
    ("data of the payload a list", json.dumps(_doc(data_data=[1])).encode()),
    ("a float in the payload", json.dumps(_doc(data_data={"price": 1.5})).encode()),
    ("an integer beyond 64 bits", json.dumps(_doc(data_data={"big": [2**70]})).encode()),
    ("an integer beyond signed 64 bits", json.dumps(_doc(data_data={"big": {"n": 2**63}})).encode()),
]


@pytest.mark.parametrize(("what", "raw"), OFF_LAYOUT, ids=[what for what, _ in OFF_LAYOUT])
def test_a_record_off_the_layout_is_left_to_decode(what: str, raw: bytes) -> None:
    assert decode_written(raw, [], expect=NotificationAccepted) is None


def test_binary_mode_and_null_values_are_left_to_decode() -> None:
    raw = encode(_envelope(_accepted()))
    assert decode_written(raw, [("ce_type", b"notification.accepted")], expect=NotificationAccepted) is None
    assert decode_written(None, [], expect=NotificationAccepted) is None
    assert decode_written(raw, [("herald-attempt", b"2")], expect=NotificationAccepted) is not None


def test_numbers_orjson_does_not_read_as_decode_does_are_left_to_decode() -> None:
    # orjson reads 2**70 as a float and keeps 2**63 (decode refuses both); a float stays one.
    for big in (2**70, 2**63):
        raw = encode(_envelope(_accepted(data={"big": [big]})))
        assert decode_written(raw, [], expect=NotificationAccepted) is None
        with pytest.raises(InvalidMessage, match="out of range"):
            decode(raw)
    raw = encode(_envelope(_accepted(badge=2**63)))
    assert decode_written(raw, [], expect=NotificationAccepted) is None
    priced = _envelope(_accepted(data={"price": 1.5}))
    assert decode_written(encode(priced), [], expect=NotificationAccepted) is None
    assert decode(encode(priced)) == priced


def test_a_version_1_record_without_dataschema_reads_as_its_class() -> None:
    doc = _doc()
    assert "dataschema" not in doc  # channels version 1 knew: written as version 1
    env = decode_written(json.dumps(doc).encode(), [], expect=NotificationAccepted)
    assert env is not None and env.data == _accepted()
    doc["dataschema"] = "herald:notification.accepted:v2"
    assert decode_written(json.dumps(doc).encode(), [], expect=NotificationAccepted) == env


async def test_the_sink_falls_back_to_decode_loudly_on_a_bug_of_the_structural_decode(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("injected")

    monkeypatch.setattr(delivery_attempt, "decode_written", broken)
    env = _envelope(_accepted())
    message = SimpleNamespace(value=encode(env), headers=[], topic="herald.sink.apns", partition=0, offset=7)
    with caplog.at_level(logging.ERROR, logger=delivery_attempt.__name__):
        read = await delivery_attempt.read_work(typing.cast(Any, None), typing.cast(Any, message), [])
    assert read == env
    assert any(r.message == "structural decode failed" and r.exc_info for r in caplog.records)


def test_a_request_is_not_taken_for_an_acceptance() -> None:
    request = _envelope(NotificationRequested(user_id="alice", title="hi"))
    assert decode_written(encode(request), [], expect=NotificationAccepted) is None
    assert decode_written(encode(request), [], expect=NotificationRequested) == decode(encode(request))
