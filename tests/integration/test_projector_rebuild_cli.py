"""``herald rebuild`` as a real process: progress while it replays, and the same read models after."""

from __future__ import annotations

import asyncio
import sys

from engine.settings import Settings
from engine.topics import TopicNames
from projections.database import create_engine, migrate
from projections.projector import Projector
from projections.rebuild import fingerprint
from streams.admin import ensure_topics
from tests.integration.test_projection import known_sequence
from tests.support.event_log import append
from tests.support.processes import clean_env


async def test_rebuild_shows_progress_and_reproduces_the_read_models(settings: Settings) -> None:
    await ensure_topics(settings)
    log, _ = known_sequence()
    await append(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        await Projector(settings, engine).catch_up()
        live = await fingerprint(engine)
    finally:
        await engine.dispose()

    env = clean_env()
    env.update(
        HERALD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HERALD_TOPIC_PREFIX=settings.topic_prefix,
        HERALD_DATABASE_URL=settings.database_url,
        HERALD_KAFKA_FETCH_MAX_WAIT_MS="20",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald.cli",
        "rebuild",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    n = len(log.envelopes)
    # Not a terminal: plain progress lines (the last one at the end), no carriage returns.
    progress = [line for line in err.decode().splitlines() if line.startswith("replaying the event log: ")]
    assert progress and progress[-1].startswith(f"replaying the event log: {n:,}/")
    assert "\r" not in err.decode()
    assert out.decode().strip() == f"replayed {n} events; read-model checksum {live}"
