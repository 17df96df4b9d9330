"""``herald verify``: a corrupted live row is reported against the log, then repaired by ``--swap``
(a shadow rebuilt from the log replaces the live tables) while the API keeps answering."""

from __future__ import annotations

import asyncio

import aiohttp
import psycopg
import pytest

from herald.stack import run_stack
from projections.database import create_engine
from projections.projector import Projector
from tests.integration.audit_support import herald
from tests.support.api import Api, isolated_settings, own_database
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _sql(url: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


async def test_a_corrupted_row_is_reported_then_repaired_by_swapping_in_the_rebuilt_models(
    kafka_bootstrap: str, redis_url: str
) -> None:
    with own_database("herald_verify") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings) as stack, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{stack.http_port}"
            kim = Api.for_user(http, base, settings, "kim")
            ids = [(await kim.post("/api/notifications", json={"title": f"n{i}"})).body["id"] for i in range(3)]
            assert (await kim.patch(f"/api/notifications/{ids[0]}/read")).status == 200

            async def projected() -> bool:
                return len((await kim.get("/api/notifications")).body["results"]) == 3

            await eventually(projected, what="three notifications projected")
        engine = create_engine(url)
        try:
            await Projector(settings, engine).catch_up()  # anything appended while the stack stopped
        finally:
            await engine.dispose()

        clean = await herald(settings, "verify")
        assert clean.status == 0, clean.stdout + clean.stderr
        assert "the read models match the log" in clean.stdout

        _sql(url, "UPDATE notifications SET title = 'tampered', read_at = NULL WHERE id = %s", ids[0])
        _sql(url, "DELETE FROM notifications WHERE id = %s", ids[2])
        found = await herald(settings, "verify")
        assert found.status == 1
        assert "notifications: DIFFERS" in found.stdout
        assert f"id='{ids[0]}': title: live 'tampered', log 'n0'; read_at: live None, log datetime" in found.stdout
        assert f"missing from the live table: id='{ids[2]}'" in found.stdout
        assert "`herald verify --swap` repairs" in found.stdout

        # --swap with the projector stopped and the API serving: every read answers during the swap,
        # and the same API process reads the swapped-in tables at once.
        async with run_stack(settings, worker=False, projector=False, api=True) as api, aiohttp.ClientSession() as http:
            kim = Api.for_user(http, f"http://127.0.0.1:{api.http_port}", settings, "kim")
            answers: list[tuple[int, str | None]] = []
            swapping = True

            async def read_all_along() -> None:
                while swapping:
                    item = await kim.get(f"/api/notifications/{ids[0]}")
                    listed = await kim.get("/api/notifications")
                    answers.append((item.status, item.body.get("title") if item.status == 200 else None))
                    answers.append((listed.status, None))
                    await asyncio.sleep(0.02)

            reader = asyncio.create_task(read_all_along())
            try:
                swapped = await herald(settings, "verify", "--swap")
            finally:
                swapping = False
                await reader
            assert swapped.status == 0, swapped.stdout + swapped.stderr
            assert "swapped: the read models are the rebuilt ones" in swapped.stdout
            assert len(answers) > 20 and {status for status, _ in answers} == {200}, "the API answered every read"
            # A read in flight when the swap committed may have begun on the old tables: the
            # first read after the command returned is the one that must see the rebuilt rows.
            after = await kim.get(f"/api/notifications/{ids[0]}")
            assert (after.status, after.body["title"]) == (200, "n0"), "the serving API reads the rebuilt rows"
        assert _sql(url, "SELECT title, read_at IS NOT NULL FROM notifications WHERE id = %s", ids[0]) == [("n0", True)]
        assert _sql(url, "SELECT count(*) FROM notifications") == [(3,)]
        assert _sql(url, "SELECT title FROM herald_retired.notifications WHERE id = %s", ids[0]) == [("tampered",)]
        again = await herald(settings, "verify")
        assert again.status == 0 and "the read models match the log" in again.stdout

        # The API reads the swapped-in tables (a fresh stack on the same database).
        async with run_stack(settings) as stack, aiohttp.ClientSession() as http:
            kim = Api.for_user(http, f"http://127.0.0.1:{stack.http_port}", settings, "kim")
            item = await kim.get(f"/api/notifications/{ids[0]}")
            assert item.status == 200 and item.body["title"] == "n0" and item.body["read_at"]


async def test_bad_setups_fail_in_one_line(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, "sqlite+aiosqlite:///unused.db", redis_url)
    sqlite = await herald(settings, "verify")
    assert sqlite.status == 1
    assert sqlite.stderr.strip().splitlines()[-1].startswith("herald verify: needs Postgres")
    down = await herald(settings, "verify", HERALD_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    assert down.status == 1 and "cannot reach the database" in down.stderr and "Traceback" not in down.stderr
