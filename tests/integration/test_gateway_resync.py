"""The gateway's Redis restarted: its open sockets are told to resume (close 1013) once the
subscription is back, because frames published in the gap reached nobody and the restarted
Redis forgot the node's presence. The fault suite (``tests/faults/test_dependencies.py``)
shows the whole story with processes and load; this is the gateway's part alone, on a real
private ``redis-server``.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from engine.settings import Settings
from herald.stack import run_stack
from tests.faults.dependency_support import RedisServer
from tests.support.clients import UserClient, missed_notifications
from tests.support.settings import isolated_settings, reset_schema


async def test_open_sockets_are_asked_to_resume_with_1013_when_the_gateway_s_redis_is_back(
    kafka_bootstrap: str, database_url: str, output_dir: Path
) -> None:
    redis = RedisServer(output_dir / "gateway-resync-redis.log")
    await redis.start()
    reset_schema(database_url)
    settings: Settings = isolated_settings(kafka_bootstrap, redis.url, database_url=database_url)
    try:
        async with (
            run_stack(settings, worker=False, projector=False, api=True) as stack,
            aiohttp.ClientSession() as http,
        ):
            client = UserClient(http, f"http://127.0.0.1:{stack.http_port}", settings, "resync-user")
            ws = await client.websocket()
            try:
                assert await missed_notifications(ws) == []  # replayed: the socket is live
                await redis.stop()
                await redis.start()  # empty: every presence entry is gone
                msg = await ws.receive(timeout=30)
                assert msg.type is aiohttp.WSMsgType.CLOSE, f"the socket was not told to resume: {msg}"
                assert ws.close_code == 1013
                assert "since" in str(msg.extra)
                again = await client.websocket()  # and the client can resume at once
                assert await missed_notifications(again) == []
                await again.close()
            finally:
                await ws.close()
    finally:
        await redis.stop()
