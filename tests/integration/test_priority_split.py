"""High-priority ingest in a worker process of its own (``herald worker --priorities high``).

Two real ``herald worker`` processes on the session's broker, as ``docker-compose.yml``
runs them: one ingesting ``high`` (its own consumer group and admission table), one
ingesting ``medium,low`` and running the sinks and the scheduler, every thread of it at
``HERALD_WORKER_NICE=10``. Email goes to Herald's
SMTP capture server in the test process. Checked: every request is decided exactly once
(a repeated high request is a duplicate), every notification is mailed exactly once,
the high worker's group never consumes a sink's or the scheduler's topic, nor the event log,
while the other group never consumes ``requests.high``, routing in the high worker follows the
contact preferences it copies from the other group's contacts table, a new high group starts
where the unsplit workers left off (nothing decided twice), and a priority list naming no
real priority stops the worker at start with status 2 and one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.routing import TURNED_OFF
from engine.settings import Settings
from herald.broker import free_port
from herald.smtp_capture import SmtpCapture
from schemas.envelope import Envelope
from schemas.events import ContactUpdated
from schemas.ids import uuid7
from streams.app import runs_sinks, worker_app_id
from tests.support.event_log import append
from tests.support.kafka import publish_json, request
from tests.support.log_reader import TopicTail
from tests.support.processes import ROOT, role_env, start_role, stop_role, thread_niceness
from tests.support.settings import isolated_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def smtp() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as server:
        yield server


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, redis_url: str, smtp: SmtpCapture) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        redis_url,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_tls="none",  # the capture server is on loopback and has no TLS
        scheduler_tick_seconds=0.2,
        log_level="INFO",
    )


LOW_NICE = 10
"""The medium and low worker gives way to the high one on a shared host (``HERALD_WORKER_NICE``)."""


def _halves(settings: Settings) -> tuple[Settings, Settings]:
    high = settings.replace(worker_priorities="high")
    return high, settings.replace(worker_priorities="medium,low", worker_nice=LOW_NICE)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _ready(port: int, proc: subprocess.Popen[bytes], log: Path, *, within: float = 90.0) -> None:
    """Until the worker's ``/readyz`` answers 200 (it holds partitions); fails at once if it exits."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{_tail(log)}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {within} s:\n{_tail(log)}")
            await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def workers(settings: Settings, output_dir: Path) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """``herald worker`` twice: ``--priorities high`` and ``medium,low`` (each set through its setting)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for half, name in zip(_halves(settings), ("high", "medium-low"), strict=True):
            port = free_port()
            log = output_dir / f"priority-split-{name}.log"
            log.write_bytes(b"")
            proc = start_role("worker", half.replace(metrics_port=port), log)
            procs.append(proc)
            await _ready(port, proc, log)
        yield procs
    finally:
        for proc in procs:
            stop_role(proc)


@pytest.fixture(scope="module")
async def log(settings: Settings, workers: list[subprocess.Popen[bytes]]) -> AsyncIterator[TopicTail]:
    tail = TopicTail(settings.kafka_bootstrap, f"{settings.topic_prefix}events")
    await tail.start()
    yield tail
    await tail.stop()


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def _committed(settings: Settings, group: str, topic: str) -> list[int | None]:
    """The committed offset of each partition of ``topic`` for consumer group ``group``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(settings.topic_partitions)]
    finally:
        await consumer.stop()


def test_the_split_names_its_groups_and_runs_the_sinks_in_one_of_them(settings: Settings) -> None:
    high, rest = _halves(settings)
    assert worker_app_id(settings) == settings.app_id and runs_sinks(settings)
    # The sink worker keeps the app id (scheduler agenda, registry, offsets); the other has its own.
    assert worker_app_id(rest) == settings.app_id and runs_sinks(rest)
    assert worker_app_id(high) == f"{settings.app_id}-high" and not runs_sinks(high)
    # However three priorities are split, exactly one group runs the sinks.
    for groups in (("high", "medium", "low"), ("high,medium", "low"), ("high", "medium,low"), ("high,low", "medium")):
        parts = [settings.replace(worker_priorities=g) for g in groups]
        assert sum(map(runs_sinks, parts)) == 1, groups
        assert len({worker_app_id(p) for p in parts}) == len(parts), groups


def test_the_medium_and_low_worker_runs_every_thread_at_its_niceness(
    workers: list[subprocess.Popen[bytes]],
) -> None:
    high, rest = (thread_niceness(proc.pid) for proc in workers)
    # The consumer thread (and any other) started after the niceness was set: all inherit it.
    assert len(rest) > 1 and set(rest.values()) == {LOW_NICE}, rest
    assert set(high.values()) == {os.nice(0)}, high  # the high worker as started


async def test_each_request_is_decided_once_and_mailed_once(
    settings: Settings, smtp: SmtpCapture, log: TopicTail
) -> None:
    sent: dict[str, tuple[str, str]] = {}  # request id -> (priority, address)
    repeated: tuple[str, dict[str, Any]] | None = None  # the first high request: (user, request)
    for priority in ("high", "medium", "low", "high", "low", "high"):
        user = _user(priority)
        address = f"{user}@example.test"
        body = request(user, f"{priority} news", priority=priority, channels=["email"], email=address)
        await publish_json(settings.kafka_bootstrap, f"{settings.topic_prefix}requests.{priority}", user, body)
        sent[str(body["id"])] = (priority, address)
        repeated = repeated or (user, body)
    assert repeated is not None
    # The same high request again: the high worker's own admission table knows it.
    await publish_json(settings.kafka_bootstrap, f"{settings.topic_prefix}requests.high", *repeated)

    for nid, (priority, address) in sent.items():
        async with asyncio.timeout(60):
            await smtp.wait_for(1, to=address)
        await log.wait_events(1, within=60, type="delivery.succeeded", subject=nid)
        accepted = log.events(type="notification.accepted", subject=nid)
        assert len(accepted) == 1, (priority, accepted)
        assert accepted[0]["data"]["priority"] == priority
    [duplicate] = await log.wait_events(1, within=60, type="notification.duplicate")
    assert duplicate["subject"] == repeated[1]["id"]

    # Both groups have committed what they consumed: the high group its request topic, the
    # other the email topic. Neither ever committed the other's topics.
    high_group, rest_group = (worker_app_id(half) for half in _halves(settings))
    prefix = settings.topic_prefix
    for group, topic in ((high_group, "requests.high"), (rest_group, "deliveries.email")):
        deadline = time.monotonic() + 30
        while not any(await _committed(settings, group, f"{prefix}{topic}")):
            assert time.monotonic() < deadline, f"{group} never committed {topic}"
            await asyncio.sleep(0.2)
    # Nor the event log: the high group's contacts come from the other group's contacts table.
    for topic in ("deliveries.email", "deliveries.websocket", "scheduled", "requests.medium", "requests.low", "events"):
        assert not any(await _committed(settings, high_group, f"{prefix}{topic}")), f"the high group consumed {topic}"
    assert not any(await _committed(settings, rest_group, f"{prefix}requests.high")), "both groups ingested high"

    # Exactly one mail per notification, also after both workers had every chance to send another.
    marker = _user("marker")
    body = request(marker, "last", priority="low", channels=["email"], email=f"{marker}@example.test")
    await publish_json(settings.kafka_bootstrap, f"{prefix}requests.low", marker, body)
    async with asyncio.timeout(60):
        await smtp.wait_for(1, to=f"{marker}@example.test")
    for _, address in sent.values():
        assert len(smtp.to(address)) == 1, address


async def test_the_high_worker_routes_by_the_contact_preferences_the_sink_group_folds(
    settings: Settings, log: TopicTail
) -> None:
    user = _user("pref")
    contact = ContactUpdated(user_id=user, email=f"{user}@example.test", channels=("websocket",))
    env = Envelope(id=uuid7(), source="tests", time=datetime.now(UTC), data=contact, subject=None, userid=user)
    await append(settings.kafka_bootstrap, f"{settings.topic_prefix}events", [env])

    async def cancelled_by_preference() -> bool:
        # The fold (in the other group), its copy and the request are on different topics: ask
        # until the high worker's copy has the contact.
        body = request(user, "only live", priority="high", channels=["websocket", "email"])
        await publish_json(settings.kafka_bootstrap, f"{settings.topic_prefix}requests.high", user, body)
        found = await log.wait_events(1, within=30, type="notification.accepted", subject=body["id"])
        assert found
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for event in log.events(subject=body["id"]):
                if event["type"] == "delivery.cancelled" and event["data"]["channel"] == "email":
                    return bool(event["data"]["reason"] == TURNED_OFF)
                if event["type"] in {"delivery.succeeded", "delivery.failed"} and event["data"]["channel"] == "email":
                    return False  # routed before the fold had the contact: try again
            await asyncio.sleep(0.05)
        return False

    deadline = time.monotonic() + 60
    while not await cancelled_by_preference():
        assert time.monotonic() < deadline, "the high worker never applied the contact's channels"


async def test_a_new_high_group_starts_where_the_unsplit_workers_left_off(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    unsplit = isolated_settings(kafka_bootstrap, redis_url, log_level="INFO")
    high = unsplit.replace(worker_priorities="high")
    topic = f"{unsplit.topic_prefix}requests.high"
    log_path = output_dir / "priority-split-takeover.log"
    log_path.write_bytes(b"")
    port = free_port()
    before = _user("before")
    first = request(before, "decided by the unsplit worker", priority="high")
    proc = start_role("worker", unsplit.replace(metrics_port=port), log_path)
    tail = TopicTail(kafka_bootstrap, f"{unsplit.topic_prefix}events")
    try:
        await _ready(port, proc, log_path)
        await tail.start()
        await publish_json(kafka_bootstrap, topic, before, first)
        await tail.wait_events(1, within=60, type="notification.accepted", subject=first["id"])
        deadline = time.monotonic() + 30
        while not any(await _committed(unsplit, unsplit.app_id, topic)):
            assert time.monotonic() < deadline, "the unsplit worker never committed requests.high"
            await asyncio.sleep(0.2)
    finally:
        stop_role(proc)
    # The split: a new group for high. It must not decide the first request again.
    port = free_port()
    proc = start_role("worker", high.replace(metrics_port=port), log_path)
    try:
        await _ready(port, proc, log_path)
        after = _user("after")
        second = request(after, "decided by the high worker", priority="high")
        await publish_json(kafka_bootstrap, topic, after, second)
        await tail.wait_events(1, within=60, type="notification.accepted", subject=second["id"])
        assert len(tail.events(subject=first["id"], type="notification.accepted")) == 1
        assert not tail.events(subject=first["id"], type="notification.duplicate")
        taken = await _committed(unsplit, worker_app_id(high), topic)
        left = await _committed(unsplit, unsplit.app_id, topic)
        assert all(o is None or (t is not None and t >= o) for t, o in zip(taken, left, strict=True)), (taken, left)
    finally:
        stop_role(proc)
        await tail.stop()


@pytest.fixture
def no_broker_settings() -> Settings:
    # Nothing listens there: a refused configuration must stop the worker before it connects.
    return Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}", jwt_secret="s" * 40, log_level="INFO")


@pytest.mark.parametrize(
    ("command", "variable", "says"),
    [
        (["worker", "--priorities", "hgh"], None, "unknown priority 'hgh'"),
        (["worker", "--priorities", ","], None, "must name at least one of high, medium, low"),
        (["worker"], "high,HIGH", "unknown priority 'HIGH'"),
        (["worker"], "low,low", "names a priority twice"),
        # The dev stack's worker is the only one: a subset would leave priorities unread.
        (["dev"], "high", "herald dev runs the only worker"),
    ],
)
def test_a_worker_with_bad_priorities_exits_2_with_one_line(
    no_broker_settings: Settings, command: list[str], variable: str | None, says: str
) -> None:
    extra = {"HERALD_WORKER_PRIORITIES": variable} if variable is not None else {}
    done = subprocess.run(
        [sys.executable, "-m", "herald.cli", *command],
        cwd=ROOT,
        env=role_env(no_broker_settings, **extra),
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2, done.stderr.decode()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("herald: configuration error:"), lines
