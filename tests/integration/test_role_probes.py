"""``herald worker`` and ``herald projector`` as processes answer /healthz, /readyz and /metrics on
``HERALD_METRICS_PORT``, as the API does on its port: an orchestrator probes every role the same way,
and a role that cannot work says so on /readyz instead of looking alive."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import aiohttp
import psycopg
import pytest

from herald.broker import free_port
from tests.support.api import PG_ADMIN_URL, isolated_settings, own_database
from tests.support.processes import start_role, stop_role, thread_niceness
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object] | str]:
    try:
        async with http.get(url) as resp:
            if resp.content_type.endswith("json"):
                return resp.status, await resp.json(content_type=None)
            return resp.status, await resp.text()
    except aiohttp.ClientError as exc:
        return 0, repr(exc)


async def _until(
    http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path, status: int, what: str
) -> None:
    """Until ``url`` answers ``status``; the role must stay up meanwhile."""

    async def answered() -> bool:
        assert proc.poll() is None, f"the role exited; see {log}"
        return (await _get(http, url))[0] == status

    await eventually(answered, timeout=90, interval=0.2, what=what)


async def test_a_projector_is_ready_then_names_its_lost_database(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = output_dir / "probes-projector.log"
    log.unlink(missing_ok=True)
    with own_database("herald_probes") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url, metrics_port=port)
        proc = start_role("projector", settings, log)
        try:
            async with aiohttp.ClientSession() as http:
                await _until(http, f"{base}/readyz", proc, log, 200, "the projector ready")
                assert (await _get(http, f"{base}/healthz"))[0] == 200
                status, metrics = await _get(http, f"{base}/metrics")
                assert status == 200 and "kafka_consumer_lag" in str(metrics)

                name = url.rsplit("/", 1)[1]
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

                async def says_database() -> object:
                    status, body = await _get(http, f"{base}/readyz")
                    return status == 503 and isinstance(body, dict) and body.get("failed") == ["database"]

                await eventually(says_database, timeout=30, interval=0.2, what="/readyz naming the database")
                assert (await _get(http, f"{base}/healthz"))[0] == 200, "alive, retrying: not ready"
        finally:
            stop_role(proc)


async def test_a_projector_runs_every_thread_at_its_niceness(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    # HERALD_PROJECTOR_NICE: the projector gives way to the live path on a shared host.
    port = free_port()
    log = output_dir / "probes-projector-nice.log"
    log.unlink(missing_ok=True)
    with own_database("herald_probes") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url, metrics_port=port, projector_nice=7)
        proc = start_role("projector", settings, log)
        try:
            async with aiohttp.ClientSession() as http:
                await _until(http, f"http://127.0.0.1:{port}/readyz", proc, log, 200, "the projector ready")
            threads = thread_niceness(proc.pid)
            # Its consumer's and its pools' threads started after the niceness was set: all have it.
            assert len(threads) > 1 and set(threads.values()) == {min(19, os.nice(0) + 7)}, threads
        finally:
            stop_role(proc)


async def test_a_worker_waiting_for_its_broker_is_alive_but_not_ready(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = output_dir / "probes-worker.log"
    log.unlink(missing_ok=True)
    with own_database("herald_probes") as url:
        nowhere = f"127.0.0.1:{free_port()}"  # no broker: the worker waits for one with backoff
        settings = isolated_settings(nowhere, url, redis_url, metrics_port=port)
        proc = start_role("worker", settings, log)
        try:
            async with aiohttp.ClientSession() as http:
                await _until(http, f"{base}/healthz", proc, log, 200, "the worker's probes")
                status, body = await _get(http, f"{base}/readyz")
                assert status == 503 and isinstance(body, dict) and body["failed"] == ["starting"], body
                assert (await _get(http, f"{base}/metrics"))[0] == 200
        finally:
            stop_role(proc)
        ready_settings = isolated_settings(kafka_bootstrap, url, redis_url, metrics_port=port)
        proc = start_role("worker", ready_settings, log)
        try:
            async with aiohttp.ClientSession() as http:
                await _until(http, f"{base}/readyz", proc, log, 200, "the worker ready once its broker is there")
        finally:
            stop_role(proc)
