"""Shared test infrastructure: a real broker, Postgres and Redis for the whole session.

Missing services fail the run: nothing here skips. ``HERALD_TEST_KAFKA``,
``HERALD_TEST_DATABASE_URL`` and ``HERALD_TEST_REDIS_URL`` point the suite at other
instances (e.g. an Apache Kafka cluster).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from engine.settings import Settings
from herald.broker import free_port, tansu_binary
from tests.support.settings import isolated_settings, reset_schema

PG_ADMIN_URL = os.environ.get("HERALD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
OUTPUT_DIR = Path(__file__).parent.parent / "test-output"


def _wait_tcp(host: str, port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka-protocol broker for the session."""
    external = os.environ.get("HERALD_TEST_KAFKA")
    if external:
        yield external
        return
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = OUTPUT_DIR / "tansu.log"
    OUTPUT_DIR.mkdir(exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_tcp("127.0.0.1", port, 20)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A Postgres database created for this session and dropped after it."""
    external = os.environ.get("HERALD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    name = f"herald_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (fails, never skips, when it is down)."""
    url = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url)
    client.ping()
    client.close()
    return url


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str, redis_url: str) -> Settings:
    """Settings isolated per test (own topics, groups) with the Tansu workarounds of docs/architecture.md;
    the read models start empty."""
    reset_schema(database_url)
    return isolated_settings(kafka_bootstrap, redis_url, database_url=database_url)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests leave artefacts (screenshots, logs)."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR
