"""OpenAPI entries of the console's routes (overview, search, users, bulks), next to their handlers.

``api/rest/openapi.py`` merges them into the document (``admin_paths``); the contract test
checks that every route is documented and that answers match these schemas.
"""

from __future__ import annotations

from typing import Any

from api.rest.openapi import (
    _CHANNEL,
    _PRIORITY,
    _TIME,
    _TIME_OR_NULL,
    _errors,
    _json,
    _nullable,
    _obj,
    _op,
    _p,
    _q,
    _ref,
    _text,
)
from engine.priority import ALL_CHANNELS
from projections.notifications import CHANNEL_STATES, STATUSES

_S = dict[str, Any]
_COUNT = {"type": "integer", "minimum": 0}
_SERIES = {"type": "array", "items": _COUNT}
_LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Items per page.")
_BY_STATUS = {"type": "object", "additionalProperties": _COUNT, "description": "Notifications per status."}


def _per(names: tuple[str, ...] | list[str]) -> _S:
    return _obj(list(names), dict.fromkeys(names, _SERIES))


OVERVIEW = _obj(
    ["now", "bucket_seconds", "throughput", "latency_ms", "consumer_lag", "dead_letters", "totals"],
    {
        "now": _TIME,
        "bucket_seconds": {"type": "integer"},
        "throughput": _obj(
            ["buckets", "accepted", "delivered", "failed", "delivered_by_priority", "failed_by_priority"],
            {
                "buckets": {"type": "array", "items": _TIME, "description": "Start of each bucket, oldest first."},
                "accepted": _per(("high", "medium", "low")),
                "delivered": _per(ALL_CHANNELS),
                "failed": _per(ALL_CHANNELS),
                "delivered_by_priority": _per(("high", "medium", "low")),
                "failed_by_priority": _per(("high", "medium", "low")),
            },
            description="Counts per bucket: notifications accepted (by priority), delivery attempts that "
            "succeeded or failed (by channel, and by their notification's priority).",
        ),
        "latency_ms": _obj(
            ["p50", "p90", "p99", "count"],
            {"p50": _nullable("number"), "p90": _nullable("number"), "p99": _nullable("number"), "count": _COUNT},
            description="Request to first delivery, over the notifications created in the window.",
        ),
        "consumer_lag": {
            "type": "array",
            "items": _obj(
                ["role", "group", "lag"],
                {
                    "role": {"type": "string"},
                    "group": {"type": "string"},
                    "lag": _nullable("integer", description="Records not processed yet; null: nothing committed."),
                    "by_topic": {"type": "object", "additionalProperties": _COUNT},
                },
            ),
        },
        "dead_letters": _obj(
            ["buckets", "counts"],
            {"buckets": {"type": "array", "items": _TIME}, "counts": _SERIES},
            description="Dead letters per minute (empty counts when the broker did not answer).",
        ),
        "totals": _obj(
            ["accepted", "delivered", "failed", "dead_letters"],
            {"accepted": _COUNT, "delivered": _COUNT, "failed": _COUNT, "dead_letters": _nullable("integer")},
        ),
        "broker_error": _nullable("string", description="Why lag and dead letters are missing, if they are."),
    },
)
SEARCH_PAGE = _obj(
    ["items", "next_cursor"],
    {"items": {"type": "array", "items": _ref("Notification")}, "next_cursor": _nullable("string")},
)
DETAIL = _obj(
    ["notification", "targets", "trail", "explanation"],
    {
        "notification": _ref("Notification"),
        "targets": {
            "type": "array",
            "items": _obj(
                ["channel", "state", "target", "attempts", "error", "delivered_at"],
                {
                    "channel": _CHANNEL,
                    "state": {"type": "string", "enum": list(CHANNEL_STATES)},
                    "target": _nullable("string"),
                    "attempts": _COUNT,
                    "error": _nullable("string"),
                    "provider_id": _nullable("string"),
                    "delivered_at": _TIME_OR_NULL,
                    "next_attempt_at": _TIME_OR_NULL,
                    "updated_at": _TIME_OR_NULL,
                },
            ),
        },
        "trail": {
            "type": "array",
            "items": _obj(
                ["type", "time", "partition", "offset", "summary"],
                {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "time": _TIME,
                    "partition": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "summary": {"type": "string"},
                },
            ),
        },
        "explanation": {"type": "array", "items": {"type": "string"}, "description": "`herald why`'s lines."},
        "explanation_error": _nullable("string", description="Why the explanation is missing (broker unreachable)."),
    },
)
USER = _obj(
    ["user_id", "inbox", "devices", "contact", "presence", "rate_limits"],
    {
        "user_id": {"type": "string"},
        "inbox": _obj(
            ["items", "unread", "total"],
            {"items": {"type": "array", "items": _ref("Notification")}, "unread": _COUNT, "total": _COUNT},
        ),
        "devices": {
            "type": "array",
            "items": _obj(
                ["device_token", "platform", "status", "active", "reason", "registered_at", "updated_at"],
                {
                    "device_token": {"type": "string"},
                    "platform": {"type": "string"},
                    "status": {"type": "string"},
                    "active": {"type": "boolean"},
                    "reason": _nullable("string"),
                    "registered_at": _TIME,
                    "updated_at": _TIME,
                },
            ),
        },
        "contact": {"type": ["object", "null"]},
        "presence": {
            "type": ["object", "null"],
            "required": ["online", "connections"],
            "properties": {"online": {"type": "boolean"}, "connections": _COUNT},
        },
        "rate_limits": _obj(
            ["high", "medium", "low"],
            {
                p: _obj(
                    ["used", "limit", "window_seconds"],
                    {"used": _COUNT, "limit": {"type": "integer"}, "window_seconds": {"type": "integer"}},
                )
                for p in ("high", "medium", "low")
            },
        ),
    },
)
BULKS = _obj(
    ["items"],
    {
        "items": {
            "type": "array",
            "items": _obj(
                ["bulk_id", "created_at", "total", "by_status", "refused"],
                {
                    "bulk_id": {"type": "string"},
                    "created_at": _TIME,
                    "total": _COUNT,
                    "by_status": _BY_STATUS,
                    "refused": _COUNT,
                },
            ),
        }
    },
)
BULK = _obj(
    ["bulk_id", "by_status", "refused"],
    {
        "bulk_id": {"type": "string"},
        "created_at": _TIME_OR_NULL,
        "total": _COUNT,
        "by_status": _BY_STATUS,
        "refused_total": _COUNT,
        "refused": {
            "type": "array",
            "maxItems": 200,
            "items": _obj(
                ["target", "reason"],
                {
                    "notification_id": {
                        "type": "string",
                        "description": "For `herald why` and the notification's page.",
                    },
                    "target": {"type": "string"},
                    "user_id": {
                        "type": ["string", "null"],
                        "description": "null: no user known (an unknown device token).",
                    },
                    "status": {"type": "string", "enum": ["rejected", "rate_limited", "duplicate"]},
                    "reason": {"type": "string"},
                },
            ),
        },
    },
)
SEARCH_PARAMS = [
    _q("user", _text(), "Only this user's notifications."),
    _q("q", {"type": "string", "minLength": 1, "maxLength": 200}, "Text in the title or body (any case)."),
    _q(
        "status",
        {"type": "string", "enum": [*STATUSES, "sent"]},
        "Only these statuses (repeat or comma-separate; `sent` is `delivered`).",
    ),
    _q("priority", _PRIORITY, "Only these priorities (repeat or comma-separate)."),
    _q("channel", _CHANNEL, "Only notifications requested on this channel."),
    _q("category", _text(100), "Only this category."),
    _q("since", _TIME, "Created at or after."),
    _q("until", _TIME, "Created before."),
    _q("bulk_id", _text(), "Only this bulk send's notifications."),
    _LIMIT,
    _q("cursor", _text(600), "`next_cursor` of the previous page."),
]


CHANNELS = _obj(
    ["results", "platforms"],
    {
        "results": {
            "type": "array",
            "items": _obj(
                ["name", "target", "in_all", "fallback_after", "platform"],
                {
                    "name": {"type": "string"},
                    "target": {"type": "string", "enum": ["connection", "address", "device_token", "url"]},
                    "in_all": {"type": "boolean", "description": "Whether a request for `all` channels includes it."},
                    "fallback_after": {**_nullable("string"), "description": "The channel it waits on, if any."},
                    "platform": {**_nullable("string"), "description": "Its device platform (device channels)."},
                },
            ),
            "description": "Every channel of the registry, in canonical (storage-bit) order.",
        },
        "platforms": {"type": "array", "items": {"type": "string"}, "description": "The device platforms."},
    },
)


def admin_paths() -> _S:
    """The console routes' path items (all admin scope)."""
    tag = "admin"
    errors = _errors(400, 401, 403, 422, 503)
    return {
        "/api/admin/overview": {
            "get": _op(
                "Throughput, latency, consumer lag and dead letters of the last minutes (admin scope)",
                {"200": _json(OVERVIEW, "Figures"), **errors},
                tag=tag,
                params=[_q("minutes", {"type": "integer", "minimum": 1, "maximum": 60, "default": 15}, "Window.")],
            ),
        },
        "/api/admin/channels": {
            "get": _op(
                "The channel registry: channels in canonical order and device platforms (admin scope)",
                {"200": _json(CHANNELS, "Channels"), **_errors(401, 403)},
                tag=tag,
            ),
        },
        "/api/admin/notifications": {
            "get": _op(
                "Search any user's notifications, newest first (admin scope)",
                {"200": _json(SEARCH_PAGE, "A page"), **errors},
                tag=tag,
                params=SEARCH_PARAMS,
            ),
        },
        "/api/admin/notifications/{id}": {
            "get": _op(
                "A notification with its targets, trail in the log and explanation (admin scope)",
                {"200": _json(DETAIL, "The notification"), **_errors(400, 401, 403, 404, 503)},
                tag=tag,
                params=[_p("id", "Notification id.")],
            ),
        },
        "/api/admin/users/{id}": {
            "get": _op(
                "A user's inbox, devices, contact, presence and rate-limit use (admin scope)",
                {"200": _json(USER, "The user"), **_errors(400, 401, 403, 404, 503)},
                tag=tag,
                params=[_p("id", "User id.")],
            ),
        },
        "/api/admin/bulks": {
            "get": _op(
                "The latest bulk sends with their progress by status (admin scope)",
                {"200": _json(BULKS, "Bulks"), **errors},
                tag=tag,
                params=[_LIMIT],
            ),
        },
        "/api/admin/bulks/{bulk_id}": {
            "get": _op(
                "One bulk send by status, with its refused targets (admin scope)",
                {"200": _json(BULK, "The bulk"), **_errors(400, 401, 403, 404, 503)},
                tag=tag,
                params=[_p("bulk_id", "Bulk id (the correlation id of its notifications).")],
            ),
        },
    }
