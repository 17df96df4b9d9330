"""``herald rebuild --processes N``: the replay split between child processes, each over its own
partitions of the log, gives the same read models as one process; a child that dies fails the
rebuild loudly and leaves the marker; SIGTERM stops the children with the parent."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from engine.settings import Settings
from engine.topics import TopicNames
from projections.database import create_engine
from projections.models import ProjectorOffset
from projections.projector import REBUILDING, Projector, UnfinishedRebuild
from projections.rebuild import RebuildFailed, fingerprint, rebuild, table_checksums
from schemas.codec import encode
from streams.admin import ensure_topics
from tests.integration.test_projection import known_sequence
from tests.support.event_log import Log
from tests.support.processes import role_env
from tests.support.waiting import eventually

USERS = 40
NOTIFICATIONS = 5000
"""About 13,000 events in all: a replay long enough (seconds) to kill a child in the middle of it."""


async def _log(settings: Settings) -> int:
    """The known sequence (every kind of event), then a volume of notifications over ``USERS``
    users, their outcomes and reads, keyed by user over the log's partitions; events appended."""
    await ensure_topics(settings)
    log, _ = known_sequence()
    bulk = Log(seed="parallel")
    for i in range(NOTIFICATIONS):
        user = f"user-{i % USERS}"
        nid = bulk.accepted(user, priority=("high", "medium", "low")[i % 3], category=f"c{i % 5}")
        if i % 4:
            bulk.succeeded(user, nid, latency_ms=float(5 + i % 300))
        else:
            bulk.deferred(user, nid)
        if i % 3 == 0:
            bulk.read(user, nid)
    envelopes = log.envelopes + bulk.envelopes
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        topic = TopicNames(settings.topic_prefix).events
        sent = [await producer.send(topic, key=(e.userid or "").encode(), value=encode(e)) for e in envelopes]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(envelopes)


async def _marker(settings: Settings) -> bool:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            o = ProjectorOffset
            topic = TopicNames(settings.topic_prefix).events
            found = await conn.execute(select(o.partition).where(o.topic == topic, o.partition == REBUILDING))
            return found.first() is not None
    finally:
        await engine.dispose()


def _children() -> list[multiprocessing.process.BaseProcess]:
    return [c for c in multiprocessing.active_children() if c.name.startswith("herald-rebuild-")]


async def test_two_processes_rebuild_the_same_read_models_as_one(settings: Settings) -> None:
    n = await _log(settings)
    engine = create_engine(settings.database_url)
    try:
        assert await rebuild(settings, engine) == n
        one = await table_checksums(engine)
        one_fingerprint = await fingerprint(engine)
        seen: list[tuple[int, int]] = []
        assert await rebuild(settings, engine, processes=2, progress=lambda d, t: seen.append((d, t))) == n
        two = await table_checksums(engine)
        two_fingerprint = await fingerprint(engine)
        assert not await _marker(settings)
        assert await Projector(settings, engine).catch_up() == 0  # not refused: the marker went
    finally:
        await engine.dispose()
    assert two == one
    assert two_fingerprint == one_fingerprint
    assert int(one["stat_counters"].split(":")[0]) > USERS and int(one["user_stats"].split(":")[0]) > USERS
    # One progress, summed over the children: it ends at the whole log and never goes back. (The
    # total is the end offsets read at the start, which Tansu may under-report.)
    dones = [d for d, _ in seen]
    assert dones[-1] == n and dones == sorted(dones) and seen[-1][1] > n // 2
    assert not _children()


async def test_a_killed_child_fails_the_rebuild_and_leaves_the_marker(settings: Settings) -> None:
    """SIGKILL of one child mid-replay: ``RebuildFailed``, the other child stopped, the marker
    kept (the projector refuses the read models); the next rebuild starts over and finishes."""
    n = await _log(settings)
    engine = create_engine(settings.database_url)
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if not killed:
            victim = _children()[0].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    try:
        with pytest.raises(RebuildFailed, match="killed by signal 9"):
            await rebuild(settings, engine, processes=2, progress=kill_one)
        assert killed and not _children()
        assert await _marker(settings)
        with pytest.raises(UnfinishedRebuild):
            await Projector(settings, engine).catch_up()
        assert await rebuild(settings, engine, processes=2) == n
        assert not await _marker(settings)
    finally:
        await engine.dispose()


def _env(settings: Settings) -> dict[str, str]:
    return role_env(settings, HERALD_KAFKA_FETCH_MAX_WAIT_MS="20", HERALD_LOG_LEVEL="WARNING")


async def _herald_rebuild(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald.cli",
        "rebuild",
        *args,
        env=_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_prints_the_same_checksum_for_one_and_two_processes(settings: Settings) -> None:
    n = await _log(settings)
    code, one, err = await _herald_rebuild(settings, "--processes", "1")
    assert code == 0, err
    code, two, err = await _herald_rebuild(settings, "--processes", "2")
    assert code == 0, err
    assert one.startswith(f"replayed {n} events; read-model checksum ")
    assert two == one
    progress = [line for line in err.splitlines() if line.startswith("replaying the event log: ")]
    assert progress and progress[-1].startswith(f"replaying the event log: {n:,}/")
    code, _, err = await _herald_rebuild(settings, "--processes", "0")
    assert code == 2 and "--processes" in err


def _child_pids(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("sig", "group", "code", "said"),
    [(signal.SIGTERM, False, 143, "terminated"), (signal.SIGINT, True, 130, "interrupted")],
    ids=["sigterm-to-the-parent", "ctrl-c-to-the-process-group"],
)
async def test_a_signal_stops_the_children_and_keeps_the_marker(
    settings: Settings, sig: signal.Signals, group: bool, code: int, said: str
) -> None:
    """SIGTERM to the command alone, or Ctrl-C (SIGINT to its whole process group): the command
    stops its children, waits for them and exits; nothing keeps running; the marker stays."""
    await _log(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald.cli",
        "rebuild",
        "--processes",
        "2",
        env=_env(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, as a command typed at a terminal
    )
    assert proc.stderr is not None
    try:
        while True:  # the first progress line comes once a child reported
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "herald rebuild ended before replaying"
            if line.startswith("replaying the event log: "):
                break
        children = _child_pids(proc.pid)
        assert len(children) >= 2  # the two replays (and multiprocessing's resource tracker)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == code, err.decode()
    assert said in err.decode()

    async def all_gone() -> bool:
        return not any(_running(pid) for pid in children)

    await eventually(all_gone, timeout=10, what="the children to be gone")  # no orphan left running
    assert await _marker(settings)
