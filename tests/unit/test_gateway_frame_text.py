"""The gateway sends a live frame as the worker rendered it: the text it cuts out of the pub/sub message."""

from __future__ import annotations

import orjson
import pytest

from api.ws.presence import frame_text
from streams.websocket_dispatch import render_message

USERS = ["ana", 'quo"te', ',"frame":{"id":"x"}', "ünï\u2028cödé", "back\\slash"]


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "decoded"])
def test_the_frame_cut_out_of_a_message_is_the_frame_the_worker_rendered(user: str, as_bytes: bool) -> None:
    frame = orjson.dumps({"type": "notification", "notification": {"id": "n1", "title": ',"frame": "ü"'}})
    message = render_message(user, frame)
    text = frame_text(message if as_bytes else message.decode())
    assert text == frame.decode()
    assert orjson.loads(message) == {"user_id": user, "frame": orjson.loads(frame)}


@pytest.mark.parametrize(
    "data", ['{"frame":{"id":"n1"},"user_id":"ana"}', '{"user_id":"ana"}', '{"user_id":"ana","frame":1']
)
def test_another_layout_is_rendered_by_the_gateway_instead(data: str) -> None:
    assert frame_text(data) is None
