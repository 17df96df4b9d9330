"""The OpenAPI 3.1 document of the REST API, and the routes serving it and its docs page.

Written by hand next to the handlers; ``tests/integration/test_api_contract.py`` proves
every ``/api`` route is documented and a property-based test checks that responses
match it. The docs page is plain HTML, CSS and JS from ``api/static/apidocs.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.priority import ALL_CHANNELS
from engine.webhook import MAX_URL_LENGTH
from projections.notifications import CHANNEL_STATES, STATUSES
from projections.queries import TARGET_STATUSES
from schemas.channels import DEFAULT_PLATFORM, REGISTRY, DevicePlatform
from schemas.codec import schema
from schemas.limits import MAX_ID_LENGTH

STATIC = Path(__file__).parents[1] / "static"

_S = dict[str, Any]


def _nullable(kind: str, **extra: Any) -> _S:
    return {"type": [kind, "null"], **extra}


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = _nullable("string", format="date-time")
_PRIORITY = {"type": "string", "enum": ["high", "medium", "low"]}
_CHANNEL = {"type": "string", "enum": list(ALL_CHANNELS)}
_DEVICE_TOKEN = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}


def _request_properties() -> _S:
    """The request schema's properties (the REST body accepts exactly these: ``api.rest.envelopes``)."""
    props = {name: dict(spec) for name, spec in schema("notification.requested")["properties"].items()}
    props["user_id"]["description"] = (
        "Recipient (default: the caller; for a notifications:write caller naming a device_token, that device's owner)."
    )
    props["channels"]["description"] += " Over REST, a request naming a device_token but no channels goes on apns."
    return props


_REQUEST_PROPERTIES = _request_properties()


def new_device_schema(platforms: Mapping[str, DevicePlatform]) -> _S:
    """``POST /api/devices``' body for the registry's device platforms (each channel declares its
    platform and token rule): one platform, its rule; several, a token by the rule of the platform named."""

    def token(p: DevicePlatform) -> _S:
        return {"type": "string", "minLength": 1, "maxLength": 200, "pattern": f"^(?:{p.token_pattern})$"}

    default = platforms[DEFAULT_PLATFORM]
    props: _S = {
        "device_token": token(default) if len(platforms) == 1 else {"type": "string", "minLength": 1, "maxLength": 200},
        "platform": {"enum": list(platforms), "default": DEFAULT_PLATFORM},
        "name": _nullable("string", maxLength=200),
        "user_id": {"type": "string"},
        "is_active": {
            "type": "boolean",
            "default": True,
            "description": "false: deactivate the device instead (as DELETE: 200 with it, 404 unless the user's).",
        },
    }
    out = _obj(["device_token"], props, additionalProperties=False)
    if len(platforms) > 1:
        out["oneOf"] = [
            *(
                {"required": ["platform"], "properties": {"platform": {"const": name}, "device_token": token(p)}}
                for name, p in platforms.items()
            ),
            {"not": {"required": ["platform"]}, "properties": {"device_token": token(default)}},
        ]
    return out


def _obj(required: list[str], props: _S, **extra: Any) -> _S:
    return {"type": "object", "required": required, "properties": props, **extra}


def _ref(name: str) -> _S:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, _S] = {
    "Problem": _obj(
        ["type", "title", "status"],
        {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "platforms": {
                "type": "array",
                "items": {"type": "string"},
                "description": "On an unknown device platform: the platforms there are.",
            },
        },
        description="RFC 9457 problem details (application/problem+json).",
    ),
    "Notification": _obj(
        ["id", "user_id", "title", "body", "priority", "channels", "status", "created_at", "read_at"],
        {
            "id": {"type": "string"},
            "user_id": {"type": "string"},
            "title": {"type": "string"},
            "body": {"type": "string"},
            "priority": _PRIORITY,
            "channels": {"type": "array", "items": _CHANNEL},
            "category": {"type": "string"},
            "data": {"type": "object"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "channel_states": {
                "type": "object",
                "additionalProperties": {"type": "string", "enum": list(CHANNEL_STATES)},
            },
            "attempts": {"type": "integer", "minimum": 0},
            "error": _nullable("string"),
            "device_token": _nullable("string"),
            "bulk_id": _nullable("string", description="Correlation id of the request (the bulk id of a bulk send)."),
            "collapse_key": _nullable("string"),
            "created_at": _TIME,
            "delivered_at": _TIME_OR_NULL,
            "read_at": _TIME_OR_NULL,
            "expires_at": _TIME_OR_NULL,
            "deliver_after": _TIME_OR_NULL,
        },
    ),
    "TargetStatus": _obj(
        ["channel", "target", "status", "attempts", "at"],
        {
            "channel": {"type": "string", "enum": [*ALL_CHANNELS, "all"]},
            "target": {
                "type": ["string", "null"],
                "description": "Device token, email address, webhook URL or gateway node.",
            },
            "status": {
                "type": "string",
                "enum": list(TARGET_STATUSES),
                "description": "Where delivery to this target stands (latest delivery event; sending: an"
                " attempt is under way and its outcome not recorded yet).",
            },
            "attempts": {"type": "integer", "minimum": 0},
            "provider_id": {"type": ["string", "null"], "description": "apns-id or SMTP Message-ID once sent."},
            "error": {"type": ["string", "null"]},
            "at": {"type": "string", "format": "date-time"},
        },
    ),
    "Delivery": _obj(
        ["id", "channel", "outcome", "at"],
        {
            "id": {"type": "string", "description": "Id of the delivery event."},
            "channel": {"type": "string"},
            "outcome": {
                "type": "string",
                "enum": ["succeeded", "failed", "retry_scheduled", "deferred", "abandoned", "cancelled", "expired"],
            },
            "target": _nullable("string", description="Device token, email address or gateway connection."),
            "attempt": _nullable("integer"),
            "provider_id": _nullable("string", description="apns-id, SMTP message id, ..."),
            "error": _nullable("string"),
            "retriable": _nullable("boolean"),
            "latency_ms": _nullable("number"),
            "at": _TIME,
        },
    ),
    "Page": _obj(
        ["results", "next"],
        {
            "results": {"type": "array", "items": _ref("Notification")},
            "next": _nullable("string", description="URL of the next page."),
        },
    ),
    "Event": _obj(
        ["id", "type", "time", "source", "partition", "offset", "data"],
        {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "time": _TIME,
            "source": {"type": "string"},
            "correlation_id": _nullable("string"),
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
            "data": {"type": "object"},
        },
    ),
    "NewNotification": _obj(
        ["title"],
        _REQUEST_PROPERTIES,
        additionalProperties=False,
        description="Every field of the notification.requested schema (email: notifications:write scope only).",
    ),
    "Accepted": _obj(
        ["id", "projected"],
        {"id": {"type": "string"}, "projected": {"type": "boolean"}, "status": {"type": "string"}},
        description="The request is on the broker; when projected, the notification's fields follow.",
    ),
    "BulkRequest": {
        "type": "object",
        "description": "Exactly one of user_ids or device_tokens, plus the fields of NewNotification"
        " (except user_id, device_token).",
        "properties": {
            "user_ids": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "maxItems": 100000,
            },
            "device_tokens": {"type": "array", "items": _DEVICE_TOKEN, "minItems": 1, "maxItems": 100000},
            **{k: v for k, v in _REQUEST_PROPERTIES.items() if k not in ("user_id", "device_token", "idempotency_key")},
        },
        "required": ["title"],
        "oneOf": [{"required": ["user_ids"]}, {"required": ["device_tokens"]}],
    },
    "BulkAccepted": _obj(
        ["bulk_id", "requested", "refused", "status_url"],
        {
            "bulk_id": {"type": "string"},
            "requested": {"type": "integer"},
            "refused": {
                "type": "array",
                "items": _obj(
                    ["target", "reason", "notification_id"],
                    {
                        "target": {"type": "string"},
                        "reason": {"type": "string"},
                        "notification_id": {
                            "type": "string",
                            "description": "The id its request would have had: `herald why` explains the refusal.",
                        },
                    },
                ),
            },
            "status_url": {"type": "string"},
        },
    ),
    "BulkStatus": _obj(
        ["bulk_id", "projected", "by_status"],
        {
            "bulk_id": {"type": "string"},
            "projected": {"type": "integer"},
            "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    ),
    "Stats": _obj(
        ["scope", "total", "unread", "by_status", "by_priority", "by_channel", "delivery_latency_ms"],
        {
            "scope": {"type": "string", "enum": ["user", "global"]},
            "user_id": _nullable("string"),
            "total": {"type": "integer"},
            "unread": {"type": "integer"},
            "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
            "by_priority": {"type": "object", "additionalProperties": {"type": "integer"}},
            "by_channel": {
                "type": "object",
                "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "delivery_latency_ms": {
                "type": "object",
                "description": "Percentiles estimated from a 5% log histogram (within 2.5%).",
                "properties": {
                    **{p: _nullable("number") for p in ("p50", "p90", "p95", "p99")},
                    "count": {"type": "integer"},
                },
            },
        },
    ),
    "Device": _obj(
        ["device_token", "user_id", "platform", "active"],
        {
            "device_token": {"type": "string"},
            "user_id": {"type": "string"},
            "platform": {"type": "string"},
            "name": _nullable("string"),
            "active": {"type": "boolean"},
            "status": {"type": "string", "enum": ["active", "unregistered", "invalid"]},
            "reason": _nullable("string"),
            "registered_at": _TIME,
            "updated_at": _TIME,
            "last_notification_at": {
                **_TIME_OR_NULL,
                "description": "Latest push its platform's channel delivered to it (APNs for ios).",
            },
            "projected": {"type": "boolean"},
        },
    ),
    "NewDevice": new_device_schema(REGISTRY.platforms),
    "Contact": _obj(
        ["user_id"],
        {
            "user_id": {"type": "string"},
            "email": _nullable("string"),
            "channels": {"type": "array", "items": _CHANNEL},
            "email_fallback_minutes": _nullable("integer"),
            "webhook_url": _nullable("string"),
            "updated_at": _TIME,
            "projected": {"type": "boolean"},
        },
    ),
    "ContactUpdate": _obj(
        [],
        {
            "email": _nullable("string", maxLength=320),
            "channels": {"type": "array", "items": _CHANNEL, "uniqueItems": True},
            "email_fallback_minutes": _nullable("integer", minimum=0),
            "webhook_url": _nullable(
                "string",
                maxLength=MAX_URL_LENGTH,
                description="URL the webhook channel POSTs notifications to (https://), null to remove.",
            ),
        },
        additionalProperties=False,
    ),
}


def _json(schema: _S, description: str) -> _S:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEM = {"content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _errors(*codes: int) -> dict[str, _S]:
    text = {
        400: "Malformed request",
        401: "Missing or invalid token",
        403: "Missing scope",
        404: "Not found (or not yours)",
        413: "Body too large",
        422: "Invalid content",
        429: "Too many writes by this user (per-user rate limit; retry after Retry-After seconds)",
        503: "No broker connection",
    }
    return {str(c): {"description": text[c], **_PROBLEM} for c in codes}


def _q(name: str, schema: _S, description: str) -> _S:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, description: str) -> _S:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _text(max_length: int = MAX_ID_LENGTH) -> _S:
    """A query string the handlers bound (``api.rest.params.str_param``): 1 to ``max_length`` characters."""
    return {"type": "string", "minLength": 1, "maxLength": max_length}


_USER_Q = _q("user_id", _text(), "Another user's data (admin scope).")
_RETRY = {
    "description": "Written, not yet projected: retry after `Retry-After`.",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 200},
    "description": "A retried request with the same key creates nothing new.",
}


def _op(
    summary: str, responses: dict[str, _S], *, tag: str, params: list[_S] | None = None, body: str | None = None
) -> _S:
    op: _S = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


LIST_PARAMS = [
    _q(
        "status",
        {"type": "string", "enum": [*STATUSES, "sent"]},
        "Only this status (repeatable, or comma-separated); sent is delivered.",
    ),
    _q("priority", _PRIORITY, "Only this priority (repeatable, or comma-separated)."),
    _q("channel", _CHANNEL, "Only notifications requested on this channel."),
    _q("unread", {"type": "boolean"}, "true: unread only; false: read only."),
    _q("since", _TIME, "Created at or after (RFC 3339)."),
    _q("until", _TIME, "Created before (RFC 3339)."),
    _q("device_token", _text(), "Targeted at or delivered to this APNs device token."),
    _q("category", _text(100), "Only this category."),
    _q("bulk_id", _text(), "Only notifications of this bulk send."),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."),
    _q("cursor", _text(600), "From the previous page's `next`."),
    _USER_Q,
]


EXPLANATION = _obj(
    ["notification_id", "user_id", "decision", "decision_text", "channels", "steps", "summary"],
    {
        "notification_id": {"type": "string"},
        "user_id": _nullable("string"),
        "decision": {
            "type": "string",
            "enum": ["accepted", "rate_limited", "duplicate", "rejected", "dead_lettered", "unknown"],
        },
        "decision_text": {"type": "string", "description": "The admission decision in plain words."},
        "channels": {
            "type": "object",
            "description": "Per channel routed to: outcome, notes, and each target's attempts and outcome.",
            "additionalProperties": {"type": "object"},
        },
        "read_at": _nullable("string"),
        "deleted_at": _nullable("string"),
        "dead_letter": _nullable("string"),
        "steps": {
            "type": "array",
            "description": "Every record about it, in log order, with `topic/partition/offset`.",
            "items": _obj(
                ["time", "type", "text", "where"],
                {
                    "time": {"type": "string"},
                    "type": {"type": "string"},
                    "text": {"type": "string"},
                    "where": {"type": "string"},
                },
            ),
        },
        "summary": {"type": "array", "items": {"type": "string"}, "description": "What `herald why` prints."},
    },
)
"""``GET /api/notifications/{id}/explain`` (``engine.explain.Explanation.as_json``)."""


DEADLETTER_PARAMS = [
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."),
    _q(
        "before",
        {"type": "string", "pattern": "^[0-9]+:[0-9]+$"},
        "`partition:offset`: only older dead letters (the previous page's `next`).",
    ),
    _q("source_topic", {"type": "string", "maxLength": 250}, "Only dead letters read from this topic."),
    _q(
        "reason",
        {"type": "string", "maxLength": 200},
        "Only dead letters whose reason contains this text (case-insensitive).",
    ),
]
_COORDS = {"partition": {"type": "integer", "minimum": 0}, "offset": {"type": "integer", "minimum": 0}}
DEADLETTER_PAGE = _obj(
    ["items", "next"],
    {
        "items": {
            "type": "array",
            "items": _obj(
                [
                    "partition",
                    "offset",
                    "timestamp",
                    "reason",
                    "source_topic",
                    "source_partition",
                    "source_offset",
                    "key",
                    "value_preview",
                    "size",
                    "redriven",
                ],
                {
                    **_COORDS,
                    "timestamp": _TIME,
                    "reason": {"type": "string", "description": "The `herald-error` header."},
                    "source_topic": _nullable("string"),
                    "source_partition": _nullable("integer"),
                    "source_offset": _nullable("integer"),
                    "key": _nullable("string", description="The record key as text (invalid UTF-8 replaced)."),
                    "value_preview": {"type": "string", "description": "The first 2 KiB of the value as text."},
                    "size": {"type": "integer", "minimum": 0, "description": "Bytes of the value."},
                    "redriven": {
                        "type": "boolean",
                        "description": "Re-driven before (a deadletter.redriven names it).",
                    },
                    "redriven_from": _nullable(
                        "string",
                        description="`topic/partition/offset` of the dead letter this record is a re-driven copy of.",
                    ),
                    "channel": _nullable("string", description="Channel of an abandoned delivery (`herald-channel`)."),
                },
            ),
        },
        "next": _nullable("string", description="`partition:offset` to pass as `before` for the next page."),
    },
)
REDRIVE_RESULT = _obj(
    ["redriven", "skipped"],
    {
        "redriven": {"type": "integer", "minimum": 0},
        "skipped": {
            "type": "array",
            "items": _obj(["partition", "offset", "why"], {**_COORDS, "why": {"type": "string"}}),
        },
    },
)
SCHEMAS["DevTokenRequest"] = _obj(
    ["user_id"],
    {
        "user_id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.@-]{1,100}$",
            "description": "Who the token is for (its `sub`).",
        },
        "scope": {
            "type": "string",
            "enum": ["notifications:write", "admin"],
            "default": "notifications:write",
            "description": "admin: an operator's token for the console (/console).",
        },
    },
    description="Only under `herald dev`, from a loopback client: production roles never serve it.",
)
SCHEMAS["DeadLetterRedrive"] = _obj(
    [],
    {
        "records": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": _obj(["partition", "offset"], _COORDS, additionalProperties=False),
        },
        "filter": _obj(
            [],
            {
                "source_topic": {"type": "string", "minLength": 1, "maxLength": 250},
                "reason": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            minProperties=1,
            additionalProperties=False,
            description="Dead letters matching every criterion given (at least one), newest first.",
        ),
        "max": {"type": "integer", "minimum": 1, "maximum": 500, "default": 500, "description": "With `filter`."},
        "force": {"type": "boolean", "default": False, "description": "Re-drive records re-driven before too."},
    },
    additionalProperties=False,
    # exactly one of records or filter; max only with filter
    oneOf=[
        {"required": ["records"], "not": {"anyOf": [{"required": ["filter"]}, {"required": ["max"]}]}},
        {"required": ["filter"], "not": {"required": ["records"]}},
    ],
    description="Exactly one of `records` (up to 500) or `filter`.",
)


def document() -> _S:
    """The OpenAPI 3.1 document."""
    n = "notifications"
    paths: _S = {
        "/api/notifications": {
            "get": _op(
                "List notifications, newest first",
                {"200": _json(_ref("Page"), "A page"), **_errors(400, 401, 403)},
                tag=n,
                params=LIST_PARAMS,
            ),
            "post": _op(
                "Send a notification (publishes a request; answers once projected)",
                {
                    "202": {
                        **_json(_ref("Accepted"), "Accepted; `Location` is the notification"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 413, 422, 429, 503),
                },
                tag=n,
                params=[_IDEMPOTENCY],
                body="NewNotification",
            ),
        },
        "/api/notifications/bulk": {
            "post": _op(
                "Send to many users or device tokens; one request per target",
                {"202": _json(_ref("BulkAccepted"), "On the broker"), **_errors(400, 401, 403, 413, 422, 429, 503)},
                tag=n,
                params=[_IDEMPOTENCY],
                body="BulkRequest",
            ),
        },
        "/api/notifications/bulk/{bulk_id}": {
            "get": _op(
                "Progress of a bulk send",
                {"200": _json(_ref("BulkStatus"), "Counts by status"), **_errors(401, 403, 404)},
                tag=n,
                params=[_p("bulk_id", "From the bulk answer.")],
            ),
        },
        "/api/notifications/stats": {
            "get": _op(
                "Counts by status, priority and channel; unread; delivery latency",
                {"200": _json(_ref("Stats"), "Stats"), **_errors(400, 401, 403)},
                tag=n,
                params=[_USER_Q, _q("global", {"type": "boolean"}, "All users (admin scope).")],
            ),
        },
        "/api/notifications/read-all": {
            "post": _op(
                "Mark every unread notification read",
                {
                    "200": _json(
                        _obj(
                            ["marked", "more"],
                            {
                                "marked": {"type": "integer"},
                                "more": {"type": "boolean"},
                                "projected": {"type": "boolean"},
                            },
                        ),
                        "Marked",
                    ),
                    "202": _RETRY,
                    **_errors(400, 401, 403, 429, 503),
                },
                tag=n,
                params=[_USER_Q],
            ),
        },
        "/api/notifications/{id}": {
            "get": _op(
                "One notification with its deliveries",
                {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("Notification"),
                                _obj(
                                    ["deliveries", "targets"],
                                    {
                                        "deliveries": {"type": "array", "items": _ref("Delivery")},
                                        "targets": {"type": "array", "items": _ref("TargetStatus")},
                                    },
                                ),
                            ]
                        },
                        "Found",
                    ),
                    **_errors(401, 404),
                },
                tag=n,
                params=[_p("id", "Notification id.")],
            ),
            "delete": _op(
                "Delete (emits notification.deleted)",
                {"204": {"description": "Deleted"}, "202": _RETRY, **_errors(401, 404, 429, 503)},
                tag=n,
                params=[_p("id", "Notification id.")],
            ),
        },
        "/api/notifications/{id}/events": {
            "get": _op(
                "The notification's event trail",
                {
                    "200": _json(
                        _obj(
                            ["notification_id", "events"],
                            {
                                "notification_id": {"type": "string"},
                                "events": {"type": "array", "items": _ref("Event")},
                            },
                        ),
                        "Trail",
                    ),
                    **_errors(401, 404),
                },
                tag=n,
                params=[_p("id", "Notification id.")],
            ),
        },
        "/api/notifications/{id}/explain": {
            "get": _op(
                "Why it ended as it did: the decision chain, read from the event log (owner or admin)",
                {"200": _json(EXPLANATION, "Explanation"), **_errors(401, 404, 503)},
                tag=n,
                params=[_p("id", "Notification id (also of a request that was refused or never parsed).")],
            ),
        },
        "/api/notifications/{id}/read": {
            "patch": _op(
                "Mark read (emits notification.read)",
                {"200": _json(_ref("Notification"), "Read"), "202": _RETRY, **_errors(401, 404, 429, 503)},
                tag=n,
                params=[_p("id", "Notification id.")],
            ),
        },
        "/api/devices": {
            "get": _op(
                "The caller's devices (every platform)",
                {
                    "200": _json(_obj(["results"], {"results": {"type": "array", "items": _ref("Device")}}), "Devices"),
                    **_errors(400, 401, 403),
                },
                tag="devices",
                params=[_USER_Q, _q("active", {"type": "boolean"}, "true: active devices only.")],
            ),
            "post": _op(
                "Register a device token of a platform (emits device.registered; an unknown platform is 422,"
                " listing the platforms in `platforms`); with is_active false, deactivate it",
                {
                    "200": _json(_ref("Device"), "Deactivated (is_active false)"),
                    "201": _json(_ref("Device"), "Registered"),
                    "202": _RETRY,
                    **_errors(400, 401, 403, 404, 413, 422, 429, 503),
                },
                tag="devices",
                body="NewDevice",
            ),
        },
        "/api/devices/{device_token}": {
            "delete": _op(
                "Deactivate a device (emits device.unregistered)",
                {"204": {"description": "Deactivated"}, "202": _RETRY, **_errors(400, 401, 404, 429, 503)},
                tag="devices",
                params=[
                    _p("device_token", "The device's token (of `platform`)."),
                    _q(
                        "platform",
                        {"enum": list(REGISTRY.platforms), "default": DEFAULT_PLATFORM},
                        "The device's platform (ios when absent); an unknown one is 400, listing them.",
                    ),
                ],
            ),
        },
        "/api/users/{id}/contact": {
            "get": _op(
                "A user's email address and channel preferences",
                {"200": _json(_ref("Contact"), "Contact"), **_errors(401, 404)},
                tag="users",
                params=[_p("id", "User id.")],
            ),
            "put": _op(
                "Set email address and channel preferences (notifications:write scope; emits contact.updated)",
                {
                    "200": _json(_ref("Contact"), "Updated"),
                    "202": _RETRY,
                    **_errors(400, 401, 403, 404, 413, 422, 429, 503),
                },
                tag="users",
                params=[_p("id", "User id.")],
                body="ContactUpdate",
            ),
        },
        "/api/presence/{user_id}": {
            "get": _op(
                "Which gateway nodes hold a user's WebSocket connections",
                {"200": _json({"type": "object"}, "Presence"), **_errors(401, 403, 404)},
                tag="realtime",
                params=[_p("user_id", "User id.")],
            ),
        },
        "/api/admin/deadletters": {
            "get": _op(
                "Dead letters, newest first, with why and where each came from (admin scope)",
                {"200": _json(DEADLETTER_PAGE, "A page"), **_errors(400, 401, 403, 422, 503)},
                tag="admin",
                params=DEADLETTER_PARAMS,
            ),
        },
        "/api/admin/deadletters/redrive": {
            "post": _op(
                "Produce dead letters to their source topic again (emits deadletter.redriven; admin scope)",
                {"202": _json(REDRIVE_RESULT, "Re-driven"), **_errors(400, 401, 403, 413, 422, 429, 503)},
                tag="admin",
                body="DeadLetterRedrive",
            ),
        },
        "/api/dev/token": {
            "post": _op(
                "Mint a token (only under `herald dev`)",
                {
                    "200": _json(
                        _obj(
                            ["token"],
                            {
                                "user_id": {"type": "string"},
                                "token": {"type": "string"},
                                "expires_in": {"type": "integer"},
                            },
                        ),
                        "Token",
                    ),
                    **_errors(400, 403),
                },
                tag="dev",
                body="DevTokenRequest",
            )
            | {"security": []},  # no token needed: it mints them
        },
    }
    from api.rest.admin.openapi import admin_paths  # the console's routes, documented next to their handlers

    paths.update(admin_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald REST API",
            "version": "1.0.0",
            "description": "History, filters, read state, stats, devices and sending for Herald. "
            "Errors are application/problem+json. Writes answer once the projector has applied them, "
            "or 202 with Retry-After.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


DEV_ONLY_PATHS = frozenset({"/api/dev/token"})
"""Documented paths that only ``herald dev`` serves."""
UNDOCUMENTED = frozenset({"/api/openapi.json", "/api/docs", "/api/docs/{asset}"})
"""The document and its page describe themselves."""


def register(app: web.Application) -> None:
    """Serve ``/api/openapi.json`` and the docs page ``/api/docs`` (no CDN: assets are local)."""
    doc = document()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(doc)

    async def docs(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "apidocs.html")

    async def asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["asset"]
        if name not in {"apidocs.js", "apidocs.css"}:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name)

    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/docs", docs)
    app.router.add_get("/api/docs/{asset}", asset)
