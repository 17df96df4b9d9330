"""The WebSocket frames the worker and the gateway write come from one module and match the docs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import websocket_frames as frames
from schemas.events import NotificationAccepted
from streams.websocket_dispatch import render_message
from streams.websocket_frames import live_message, notification_frame

DOC = (Path(__file__).parents[2] / "docs" / "websocket.md").read_text()


def _accepted() -> NotificationAccepted:
    return NotificationAccepted(
        notification_id="n-1",
        user_id="zoë",
        title="Grüße",
        body="b",
        priority="high",
        channels=("websocket",),
        category="c",
        data={"k": [1, 2]},
        requested_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def _server_frames() -> list[dict[str, Any]]:
    return [
        frames.notification(_accepted()),
        frames.missed_notifications([], more=False),
        frames.pong(),
        frames.read("n-1", "2026-01-02T03:04:05Z"),
        frames.error("no such notification", id="n-1"),
        frames.error("rate limited: frame ignored", retry_after=0.5),
    ]


def test_every_server_frame_and_its_keys_are_in_the_protocol_table() -> None:
    rows = re.findall(r'^\| `(\{"type":"[a-z_]+".*?)` \|', DOC, flags=re.MULTILINE)
    for frame in _server_frames():
        documented = [row for row in rows if row.startswith('{"type":' + json.dumps(frame["type"]))]
        assert documented, f"{frame['type']} frames are not in docs/websocket.md"
        assert any(all(f'"{key}"' in row for key in frame) for row in documented), (frame, documented)


def test_the_live_frame_the_worker_renders_is_what_the_gateway_forwards() -> None:
    accepted = _accepted()
    message = json.loads(live_message(accepted, "bulk-7"))
    assert message["user_id"] == "zoë"
    frame = message["frame"]
    carried = frames.notification_of(frame)
    assert carried is not None and carried["id"] == "n-1" and carried["bulk_id"] == "bulk-7"
    assert carried["status"] == "delivered"
    # The gateway re-renders what it got from Redis; the client reads the same frame.
    assert json.loads(frames.render(frame)) == json.loads(notification_frame(accepted, "bulk-7"))
    assert render_message("zoë", notification_frame(accepted, "bulk-7")) == live_message(accepted, "bulk-7")


def test_only_notification_frames_carry_a_notification() -> None:
    assert frames.notification_of(frames.pong()) is None
    assert frames.notification_of({"type": "notification", "notification": "not an object"}) is None
    assert frames.notification_of(frames.missed_notifications([{"id": "x"}], more=True)) is None
