"""Drop the read models, replay ``herald.events`` from the start, get identical rows."""

from __future__ import annotations

import json

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import SCOPE_WRITE
from engine.settings import Settings
from herald.stack import run_stack
from projections.database import create_engine
from projections.projector import Projector
from projections.rebuild import rebuild, table_checksums
from tests.support.api import Api, isolated_settings, own_database
from tests.support.clients import next_frame
from tests.support.kafka import publish, request
from tests.support.waiting import eventually


async def _traffic(settings: Settings, base: str) -> None:
    async with aiohttp.ClientSession() as http:
        alice = Api.for_user(http, base, settings, "alice")
        bob = Api.for_user(http, base, settings, "bob")
        service = Api.for_user(http, base, settings, "svc", SCOPE_WRITE)
        ws = await http.ws_connect(base.replace("http", "ws") + f"/ws/notifications?token={alice.token}")
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong")
        ids = []
        for i in range(4):
            reply = await alice.post("/api/notifications", json={"title": f"live {i}", "priority": "high"})
            ids.append(reply.body["id"])
            await next_frame(ws, "notification")
        await ws.close()
        offline = await bob.post("/api/notifications", json={"title": "while away", "data": {"k": [1, 2]}})
        assert (await alice.patch(f"/api/notifications/{ids[0]}/read")).status == 200
        assert (await alice.delete(f"/api/notifications/{ids[1]}")).status == 204
        assert (await bob.post("/api/devices", json={"device_token": "f" * 64, "name": "phone"})).status == 201
        assert (await bob.post("/api/devices", json={"device_token": "e" * 64})).status == 201
        assert (await bob.delete("/api/devices/" + "e" * 64)).status == 204
        assert (await service.put("/api/users/bob/contact", json={"email": "bob@example.com"})).status == 200
        bulk = await service.post("/api/notifications/bulk", json={"user_ids": ["carol", "dave"], "title": "digest"})
        assert bulk.status == 202
        # A request refused by ingest (priority does not match its topic) is part of the log too.
        await publish(
            settings.kafka_bootstrap,
            f"{settings.topic_prefix}requests.low",
            [(b"erin", json.dumps(request("erin", "wrong topic", priority="high")).encode())],
        )

        async def settled() -> bool:
            body = (await alice.get("/api/notifications/stats")).body
            carol = (await Api.for_user(http, base, settings, "carol").get("/api/notifications")).body
            erin = (await Api.for_user(http, base, settings, "erin").get("/api/notifications")).body
            bob_item = (await bob.get(f"/api/notifications/{offline.body['id']}")).body
            return bool(
                body["by_status"]["delivered"] == 3
                and carol["results"]
                and erin["results"]
                and bob_item.get("deliveries")
            )

        await eventually(settled, timeout=60, what="the traffic to be projected")


async def test_replaying_the_log_rebuilds_identical_read_models(kafka_bootstrap: str, redis_url: str) -> None:
    with own_database("herald_rebuild") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings) as stack:
            await _traffic(settings, f"http://127.0.0.1:{stack.http_port}")
        engine = create_engine(url)
        try:
            # Anything appended while the stack stopped is applied too: the reference covers the whole log.
            await Projector(settings, engine).catch_up()
            before = await table_checksums(engine)
            assert int(before["notifications"].split(":")[0]) == 8
            assert int(before["devices"].split(":")[0]) == 2
            indexes_before = await _indexes(engine)
            built: list[tuple[int, int]] = []
            applied = await rebuild(settings, engine, indexing=lambda done, total: built.append((done, total)))
            after = await table_checksums(engine)
            indexes_after = await _indexes(engine)
        finally:
            await engine.dispose()
    assert after == before
    assert applied == int(before["projected_events"].split(":")[0]) > 20
    # The secondary indexes, dropped for the replay, are all back as the migrations made them.
    assert indexes_after == indexes_before
    secondary = [name for name in indexes_before if name.startswith("ix_")]
    assert len(secondary) >= 10
    assert built[0] == (0, len(secondary)) and built[-1] == (len(secondary), len(secondary))


async def _indexes(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname")
        )
        return {str(name): str(definition) for name, definition in rows}
