"""A connection writes the frames of an event-loop turn in one go: in order, each notification once,
each receipt once; the compressed protocol (aiohttp's to write) goes through the writer task, same frames."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from api.ws.connection import Connection, Outgoing, text_frame
from engine import websocket_frames as frames
from herald.broker import free_port


class Recorder:
    """Receipts as the gateway's ``Receipts`` takes them (without waiting, or awaited)."""

    def __init__(self) -> None:
        self.now: list[str] = []
        self.awaited: list[str] = []

    def room(self) -> bool:
        return True

    def delivered_now(self, notifications: list[dict[str, Any]], *, connection: str, via: str) -> None:
        self.now.extend(n["id"] for n in notifications)

    async def written(self, conn: Connection, notifications: list[dict[str, Any]], via: str) -> None:
        self.awaited.extend(n["id"] for n in notifications)


def _live(nid: str) -> Outgoing:
    view = {"id": nid, "user_id": "ana", "title": f"t {nid}", "body": "ü" * 200 if nid.endswith("7") else "b"}
    frame = {"type": "notification", "notification": view}
    return Outgoing("live", text=frames.render(frame), notifications=[view])


@pytest.mark.parametrize(("compress", "count"), [(0, 40), (15, 12)], ids=["plain", "deflate"])
async def test_a_turns_frames_arrive_in_order_once_with_one_receipt_each(compress: int, count: int) -> None:
    recorder = Recorder()
    ready: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(
            ws, "ana", "c1", queue_size=16, on_written=recorder.written, request=request, recorder=recorder
        )
        conn.start()
        await conn.end_replay()
        ready.set_result(conn)
        await done.wait()
        await conn.stop()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    expected: list[str] = []
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}/ws", compress=compress) as ws,
        ):
            conn = await asyncio.wait_for(ready, 10)
            for turn in range(3):
                # One turn: a repeat and a control frame among the frames; written in the turn,
                # more than the queue holds (16) are taken (the writer task's queue: fewer).
                ids = [f"n{turn}-{i}" for i in range(count)]
                for i, nid in enumerate(ids):
                    assert conn.offer(_live(nid))
                    if i == 5:
                        assert conn.offer(_live(ids[2]))  # already sent on this connection: not again
                        conn.control(frames.pong())
                expected += [*ids[:6], "pong", *ids[6:]]
                got = []
                while len(got) < len(ids) + 1:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    frame = orjson.loads(msg.data)
                    got.append(frame["notification"]["id"] if frame["type"] == "notification" else frame["type"])
                assert got == expected[-len(got) :]
            done.set()
            closing = await asyncio.wait_for(ws.receive(), 10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        done.set()
        await runner.cleanup()
    notifications = [nid for nid in expected if nid != "pong"]
    receipts = recorder.now + recorder.awaited
    assert sorted(receipts) == sorted(notifications)
    if compress:
        assert recorder.now == []  # every frame through aiohttp's compressing writer
    else:
        assert recorder.awaited == []  # every frame written in its turn


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_a_text_frame_is_the_rfc_6455_encoding(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN, text
    if size < 126:
        assert frame[1] == size and frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == size and frame[4:] == payload
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == size and frame[10:] == payload
