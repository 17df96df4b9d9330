"""The AsyncAPI 3.0 description of Herald's Kafka topics, built from ``schemas/``.

Producers and consumers in other languages need the contract of every topic without
reading Python: which records each topic carries, their key and headers, and the JSON
Schema of each event's ``data``. This module builds that document from the event schemas
(``schemas/<type>/v<N>.json``, the same ones the codec validates with), so it cannot drift
from them; the topic layout (names, priorities, channels) is handed in by the caller, since
it belongs to ``engine`` (``herald/asyncapi.py`` writes ``docs/asyncapi.yaml``). Also here: a
small YAML emitter, because PyYAML is only a dev dependency. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.codec import schema
from schemas.envelope import CONTENT_TYPE, SPECVERSION
from schemas.events import EVENT_TYPES
from schemas.limits import MAX_ID_LENGTH

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
REQUEST_TYPE = "notification.requested"
SCHEDULE_KINDS = ("deliver", "fallback", "retry")
"""``engine.schedule.Kind`` (a test keeps the two equal)."""
DEADLETTER_HEADERS: dict[str, str] = {
    "herald-error": "Why the record could not be used (UTF-8, at most 4,000 bytes).",
    "herald-source-topic": "Topic the record was read from.",
    "herald-source-partition": "Its partition (decimal).",
    "herald-source-offset": "Its offset (decimal).",
    "herald-channel": "An abandoned delivery: its channel.",
    "herald-attempts": "An abandoned delivery: attempts made (decimal).",
    "herald-target": "An abandoned delivery: the target given up on (first attempt's record only).",
    "herald-redriven-from": "A re-driven copy that failed again: the dead letter it was re-driven from.",
}
"""Headers ``streams/dead_letters.py`` and the console's re-drive add to a dead letter."""
DEADLETTER_REQUIRED = ("herald-error", "herald-source-topic", "herald-source-partition", "herald-source-offset")


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """Topic names by role, as ``engine.topics.TopicNames`` derives them from the prefix."""

    prefix: str
    requests: Mapping[str, str]
    """Priority -> request topic, highest priority first."""
    events: str
    deliveries: Mapping[str, str]
    """Channel -> that channel's delivery topic."""
    deadletter: str
    scheduled: str


def event_schema_name(event_type: str) -> str:
    """Component name of the current schema version of ``event_type``'s ``data``."""
    return f"{event_type}.v{EVENT_TYPES[event_type].VERSION}"


def _data_schema(event_type: str) -> dict[str, Any]:
    doc = dict(schema(event_type, EVENT_TYPES[event_type].VERSION))
    doc.pop("$schema", None)  # AsyncAPI schemas are JSON Schema without these two (draft-07 keywords only)
    doc.pop("$id", None)
    return doc


def _id(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "description": description}


def cloudevent_schema() -> dict[str, Any]:
    """The structured CloudEvents envelope every request and event travels in."""
    return {
        "type": "object",
        "description": (
            f"CloudEvents {SPECVERSION}, structured mode: the whole event is the record's JSON value. "
            "On request topics binary mode is accepted too (attributes as `ce_*` headers, `data` as the value); "
            "Herald always writes structured mode. Extension attribute names are 1-20 lower-case letters or digits."
        ),
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": SPECVERSION},
            "id": _id("Unique event id (UUIDv7 or derived for events Herald emits; any string from producers)."),
            "source": _id("Who emitted it: a producer name, `herald/ingest`, ..."),
            "type": {"type": "string", "description": "Event type; `data` follows that type's schema."},
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "When it happened (RFC 3339 with a timezone); the time of receipt when absent.",
            },
            "subject": _id("The notification the event concerns."),
            "datacontenttype": {
                "type": "string",
                "default": CONTENT_TYPE,
                "description": "`application/json` (parameters allowed); nothing else is accepted.",
            },
            "dataschema": {
                "type": "string",
                "description": (
                    "The version of `data`'s schema: `herald:<type>:v<N>`. Herald writes each event in the oldest "
                    "version that carries it, naming it from version 2 on. Absent (or another URI): version 1, "
                    "read and upcast to the current version."
                ),
            },
            "userid": _id("Extension: the recipient user id (also the record key)."),
            "priority": {"type": "string", "description": "Extension: the notification's priority."},
            "correlationid": _id("Extension: shared by every event one request caused."),
            "data": {"type": "object", "description": "The payload: the schema of `type`."},
        },
    }


def _event_payload(event_type: str) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": "#/components/schemas/CloudEvent"},
            {
                "type": "object",
                "properties": {
                    "type": {"const": event_type},
                    "data": {"$ref": f"#/components/schemas/{event_schema_name(event_type)}"},
                },
            },
        ]
    }


def _key(description: str) -> dict[str, Any]:
    return {"kafka": {"key": {"type": "string", "description": description}, "bindingVersion": KAFKA_BINDING_VERSION}}


USER_KEY = "The recipient user id (UTF-8): a user's records share a partition number on every topic."


def _event_message(event_type: str) -> dict[str, Any]:
    data = _data_schema(event_type)
    return {
        "name": event_type,
        "title": f"{event_type} v{EVENT_TYPES[event_type].VERSION}",
        "summary": data.get("description", ""),
        "contentType": CONTENT_TYPE,
        "payload": _event_payload(event_type),
        "bindings": _key(USER_KEY),
    }


def _due_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One delivery to hand to a channel's sink when due (`engine.schedule.Due`).",
        "required": ["kind", "notification_id", "channel", "due_at", "accepted"],
        "properties": {
            "kind": {"enum": list(SCHEDULE_KINDS), "description": "`deliver_after`, email fallback or retry."},
            "notification_id": _id("Notification to deliver."),
            "channel": {"type": "string", "description": "Channel whose sink gets the work."},
            "due_at": {"type": "number", "description": "When (Unix seconds)."},
            "accepted": {
                "$ref": "#/components/schemas/CloudEvent",
                "description": "The `notification.accepted` event, structured.",
            },
            "attempt": {"type": "integer", "minimum": 1, "default": 1, "description": "Attempt number."},
            "target": {"type": ["string", "null"], "description": "The one target to retry; null for all."},
        },
    }


def _scheduler_messages() -> dict[str, dict[str, Any]]:
    common = {"contentType": "application/json"}
    return {
        "scheduler.schedule": {
            **common,
            "name": "scheduler.schedule",
            "title": "schedule command",
            "summary": "Deliver this work when it is due (a retry, a `deliver_after`, an email fallback).",
            "payload": {
                "type": "object",
                "required": ["op", "item"],
                "properties": {"op": {"const": "schedule"}, "item": {"$ref": "#/components/schemas/ScheduledItem"}},
            },
            "bindings": _key(USER_KEY),
        },
        "scheduler.cancel": {
            **common,
            "name": "scheduler.cancel",
            "title": "cancel command",
            "summary": "Drop the notification's pending work, now and later (sent with a read or delete).",
            "payload": {
                "type": "object",
                "required": ["op", "notification_id", "reason", "cause"],
                "properties": {
                    "op": {"const": "cancel"},
                    "notification_id": {"type": ["string", "null"], "description": "The cause's subject."},
                    "reason": {"enum": ["read", "deleted"]},
                    "cause": {
                        "$ref": "#/components/schemas/CloudEvent",
                        "description": "The `notification.read` or `notification.deleted` event, structured.",
                    },
                },
            },
            "bindings": _key(USER_KEY),
        },
        "scheduler.tick": {
            **common,
            "name": "scheduler.tick",
            "title": "tick",
            "summary": "Fire what is due on this partition; each worker sends one to every partition it owns.",
            "payload": {"type": "object", "required": ["op"], "properties": {"op": {"const": "tick"}}},
            "bindings": {"kafka": {"key": {"type": "null"}, "bindingVersion": KAFKA_BINDING_VERSION}},
        },
    }


def _deadletter_message() -> dict[str, Any]:
    return {
        "name": "deadletter",
        "title": "dead letter",
        "summary": "A record that could not be used, byte for byte, with why and where it came from.",
        "description": (
            "Key, value and headers of the original record are kept as they were (a value that is not JSON "
            "included); Herald's headers are appended. The console lists and re-drives them."
        ),
        "headers": {
            "type": "object",
            "required": list(DEADLETTER_REQUIRED),
            "properties": {name: {"type": "string", "description": text} for name, text in DEADLETTER_HEADERS.items()},
        },
        "payload": {"description": "The original record's value, unchanged: any bytes, not necessarily JSON."},
        "bindings": _key("The original record's key."),
    }


WORK_HEADERS: dict[str, str] = {
    "herald-attempt": "Attempt number (decimal), on retries only.",
    "herald-target": "The one target to retry, on retries only; every target of the channel otherwise.",
}
"""Headers ``streams/delivery_work.py`` puts on a retry's work record."""


def _work_message() -> dict[str, Any]:
    return {
        "name": "delivery.work",
        "title": "delivery work",
        "summary": "One delivery for a channel's sink: the `notification.accepted` event, as accepted.",
        "contentType": CONTENT_TYPE,
        "headers": {
            "type": "object",
            "properties": {name: {"type": "string", "description": text} for name, text in WORK_HEADERS.items()},
        },
        "payload": _event_payload("notification.accepted"),
        "bindings": _key(USER_KEY),
    }


def _channel(address: str, description: str, messages: Sequence[str], **topic: Any) -> dict[str, Any]:
    kafka: dict[str, Any] = {"topic": address, "bindingVersion": KAFKA_BINDING_VERSION}
    if topic:
        kafka["topicConfiguration"] = topic
    return {
        "address": address,
        "description": description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
        "bindings": {"kafka": kafka},
    }


def channels(layout: TopicLayout) -> dict[str, dict[str, Any]]:
    """Every topic, by channel id (its name without the prefix), with the messages it carries."""
    event_log = [t for t in EVENT_TYPES if t != REQUEST_TYPE]
    out: dict[str, dict[str, Any]] = {}

    def cid(address: str) -> str:
        return address.removeprefix(layout.prefix)

    for priority, address in layout.requests.items():
        out[cid(address)] = _channel(
            address,
            f"Requests of priority `{priority}` from producers and the REST API. A request's own `priority` must "
            "match the topic's (or be absent). Unusable records go to the dead-letter topic, with a "
            "`notification.rejected` event when a user and id could be read.",
            [REQUEST_TYPE],
        )
    out[cid(layout.events)] = _channel(
        layout.events,
        "The event log, source of truth: every state change of a notification, device or contact, appended by "
        "the roles and never changed. The projector builds the read models from it. Kept forever.",
        event_log,
        **{"retention.ms": -1},
    )
    for channel, address in layout.deliveries.items():
        out[cid(address)] = _channel(
            address,
            f"Work for the `{channel}` sink, from routing or, when due later, from the scheduler.",
            ["delivery.work"],
        )
    out[cid(layout.scheduled)] = _channel(
        layout.scheduled,
        "The scheduler's commands (schedule, cancel) and ticks; its agenda is the `herald-scheduled` table.",
        list(_scheduler_messages()),
    )
    out[cid(layout.deadletter)] = _channel(
        layout.deadletter, "Records that could not be decoded, validated or delivered.", ["deadletter"]
    )
    return out


_ROLES: dict[str, tuple[str, str]] = {
    "requests": ("The REST API publishes requests (single and bulk).", "Ingest validates, admits and routes them."),
    "events": ("Every role appends the facts it establishes.", "The projector folds the log into read models."),
    "deliveries": ("Routing and the scheduler hand work to a sink.", "The channel's sink agent delivers it."),
    "scheduled": ("Routing, sinks and the API schedule and cancel work.", "The scheduler agent keeps the agenda."),
    "deadletter": ("Every agent that cannot use a record.", "The console browses and re-drives them."),
}


def operations(chans: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What Herald does on each channel: it both sends to and receives from every topic."""
    out: dict[str, dict[str, Any]] = {}
    for channel_id, channel in chans.items():
        send, receive = _ROLES[channel_id.split(".")[0]]
        for action, text in (("send", send), ("receive", receive)):
            out[f"{action}.{channel_id}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": text,
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in channel["messages"]],
            }
    return out


def document(layout: TopicLayout, version: str) -> dict[str, Any]:
    """The AsyncAPI document of every topic of ``layout``; ``version`` is Herald's."""
    chans = channels(layout)
    messages: dict[str, Any] = {t: _event_message(t) for t in EVENT_TYPES}
    messages["delivery.work"] = _work_message()
    messages.update(_scheduler_messages())
    messages["deadletter"] = _deadletter_message()
    schemas: dict[str, Any] = {"CloudEvent": cloudevent_schema(), "ScheduledItem": _due_schema()}
    schemas.update({event_schema_name(t): _data_schema(t) for t in EVENT_TYPES})
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Herald",
            "version": version,
            "description": (
                "Herald's Kafka topics: the notification requests producers publish, the event log, the work "
                f"topics between its roles and the dead letters. Topic names start with `HERALD_TOPIC_PREFIX` "
                f"(`{layout.prefix}` here); every topic has `HERALD_TOPIC_PARTITIONS` partitions, keyed by user. "
                "Faust's table changelogs (`<HERALD_APP_ID>-herald-*-changelog`) are internal state, not an "
                "interface. Generated from `schemas/` by `python -m herald.asyncapi`; see docs/events.md."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "dev": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "`herald dev`'s embedded broker (`HERALD_DEV_KAFKA_PORT` moves it).",
            },
            "compose": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "docker-compose.yml's broker, inside the compose network.",
            },
        },
        "channels": chans,
        "operations": operations(chans),
        "components": {"schemas": schemas, "messages": messages},
    }


_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$/-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _lines(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(item, Mapping | list) and item:
                out.append(head)
                out += _lines(item, indent + 1)
            else:
                out.append(f"{head} {_flow(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if isinstance(item, Mapping | list) and item:
                nested = _lines(item, indent + 1)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out += nested[1:]
            else:
                out.append(f"{pad}- {_flow(item)}")
        return out
    return [pad + _scalar(value)]


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(doc: Mapping[str, Any]) -> str:
    """``doc`` (JSON-like: mappings, lists, strings, numbers, booleans, null) as block-style YAML."""
    return "\n".join(_lines(doc, 0)) + "\n"
