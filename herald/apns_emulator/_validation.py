"""Stateless checks of an APNs request's path, headers and payload.

Reason strings and status codes follow Apple's "Handling notification
responses from APNs" table.  Each check returns a :class:`Rejection` or
``None`` so the emulator can apply them in Apple's order.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
    }
)
#: 10 = immediate, 5 = power-considerate, 1 = prioritise power (Apple, iOS 15+).
PRIORITIES = frozenset({"1", "5", "10"})
MAX_PAYLOAD_BYTES = 4096
#: VoIP pushes get 5 KB instead of 4 KB (Apple's payload size limits).
MAX_VOIP_PAYLOAD_BYTES = 5120
MAX_COLLAPSE_ID_BYTES = 64

DEVICE_PATH_PREFIX = "/3/device/"
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{64}")
_APNS_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EXPIRATION = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class Rejection:
    """An error answer: HTTP status and Apple's ``reason`` string."""

    status: int
    reason: str


def check_duplicates(raw_headers: Sequence[tuple[bytes, bytes]]) -> Rejection | None:
    """Apple refuses requests repeating a header (``DuplicateHeaders``)."""
    counts = Counter(name for name, _ in raw_headers)
    if any(count > 1 for count in counts.values()):
        return Rejection(400, "DuplicateHeaders")
    return None


def check_route(method: str, path: str) -> tuple[str, Rejection | None]:
    """Validate ``:method``/``:path``; returns the device token found in the path."""
    if not path.startswith(DEVICE_PATH_PREFIX):
        return "", Rejection(404, "BadPath")
    token = path[len(DEVICE_PATH_PREFIX) :]
    if method != "POST":
        return token, Rejection(405, "MethodNotAllowed")
    if not token:
        return token, Rejection(400, "MissingDeviceToken")
    return token, None


def check_apns_id(apns_id: str | None) -> Rejection | None:
    """``apns-id`` is optional but must be a canonical UUID when present."""
    if apns_id is not None and not _APNS_ID.fullmatch(apns_id):
        return Rejection(400, "BadMessageId")
    return None


def check_topic(topic: str | None, allowed_topics: Collection[str] | None) -> Rejection | None:
    """Require ``apns-topic`` and, when configured, restrict it to known topics."""
    if not topic:
        # Apple documents MissingTopic with status 400 (not 403).
        return Rejection(400, "MissingTopic")
    if allowed_topics is not None and topic not in allowed_topics:
        return Rejection(400, "TopicDisallowed")
    return None


def check_apns_headers(headers: Mapping[str, str], raw_collapse_id: bytes | None) -> Rejection | None:
    """Validate push type, priority, expiration and collapse id."""
    push_type = headers.get("apns-push-type")
    # Absent is allowed: Apple only requires it for watchOS, and being
    # stricter than Apple would make the emulator fail correct clients.
    if push_type is not None and push_type not in PUSH_TYPES:
        return Rejection(400, "InvalidPushType")
    priority = headers.get("apns-priority")
    if priority is not None and priority not in PRIORITIES:
        return Rejection(400, "BadPriority")
    expiration = headers.get("apns-expiration")
    if expiration is not None and not _EXPIRATION.fullmatch(expiration):
        return Rejection(400, "BadExpirationDate")
    # The limit is in bytes, so measure the raw header value, not characters.
    if raw_collapse_id is not None and len(raw_collapse_id) > MAX_COLLAPSE_ID_BYTES:
        return Rejection(400, "BadCollapseId")
    return None


def check_device_token(token: str) -> Rejection | None:
    """Device tokens are 32 bytes, sent as 64 hex characters."""
    if not _DEVICE_TOKEN.fullmatch(token):
        return Rejection(400, "BadDeviceToken")
    return None


def payload_limit(push_type: str | None) -> int:
    """Maximum payload size in bytes for the given push type."""
    return MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES


def parse_payload(
    body: bytes, body_length: int, push_type: str | None
) -> tuple[dict[str, Any] | None, Rejection | None]:
    """Check size and shape of the payload; returns it when it is a JSON object.

    ``body_length`` is the full size received, which may exceed ``len(body)``
    because the transport stops buffering oversized bodies.
    """
    payload = _json_object(body) if body_length == len(body) else None
    if body_length > payload_limit(push_type):
        return payload, Rejection(413, "PayloadTooLarge")
    if body_length == 0 or not body.strip():
        return None, Rejection(400, "PayloadEmpty")
    if payload is None:
        # Apple documents no reason for malformed JSON; BadPayload is ours.
        return None, Rejection(400, "BadPayload")
    return payload, None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
