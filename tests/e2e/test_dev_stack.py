"""`herald dev` as a user runs it: a separate process, kcat as the producer, real clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from herald.broker import free_port
from tests.support.clients import next_frame
from tests.support.processes import clean_env
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[dict[str, str]]:
    """`herald dev` on free ports, in its own working directory."""
    env = clean_env()
    env.update(HERALD_HTTP_PORT=str(free_port()), HERALD_DEV_KAFKA_PORT=str(free_port()))
    cwd = tmp_path_factory.mktemp("dev")
    log = (output_dir / "herald-dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "herald.cli", "dev"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield {
            "api": f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}",
            "broker": f"127.0.0.1:{env['HERALD_DEV_KAFKA_PORT']}",
            "cwd": str(cwd),
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _token(user: str) -> str:
    env = clean_env()
    out = subprocess.run(
        [sys.executable, "-m", "herald.cli", "token", user], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


async def test_kcat_request_reaches_websocket_and_rest(dev_stack: dict[str, str]) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by `make test` (.ci/system-deps)"
    api = dev_stack["api"]
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            try:
                async with http.get(api + "/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=60, interval=0.2, what="herald dev to be ready")
        alice, bob = _token("alice"), _token("bob")
        ws = await http.ws_connect(api.replace("http", "ws") + f"/ws/notifications?token={alice}")
        await ws.send_json({"type": "ping"})
        await next_frame(ws, "pong")

        notification_id = str(uuid.uuid4())
        request = {
            "specversion": "1.0",
            "type": "notification.requested",
            "id": notification_id,
            "source": "kcat",
            "data": {"user_id": "alice", "title": "From kcat", "body": "structured CloudEvents"},
        }
        started = time.monotonic()
        await asyncio.to_thread(
            subprocess.run,
            [kcat, "-P", "-b", dev_stack["broker"], "-t", "herald.requests.high", "-K:"],
            input=f"alice:{json.dumps(request)}\n",
            text=True,
            check=True,
            timeout=30,
        )
        published = time.monotonic()
        frame = await next_frame(ws, "notification", timeout=10)
        latency = time.monotonic() - published
        print(f"kcat run {published - started:.3f}s")
        assert frame["notification"]["id"] == notification_id
        assert frame["notification"]["title"] == "From kcat"
        # The product promise: a request published with kcat is on the user's screen within a second.
        assert latency < 1.0, f"kcat -> WebSocket took {latency:.3f}s"
        print(f"kcat exit -> WebSocket frame {latency * 1000:.0f} ms")

        async def listed() -> list[dict[str, object]] | None:
            async with http.get(api + "/api/notifications", headers={"Authorization": f"Bearer {alice}"}) as resp:
                body = await resp.json()
            return [n for n in body["results"] if n["id"] == notification_id] or None

        await eventually(listed, what="the notification in alice's history")
        async with http.get(
            api + f"/api/notifications/{notification_id}", headers={"Authorization": f"Bearer {bob}"}
        ) as resp:
            assert resp.status == 404
        await ws.close()
