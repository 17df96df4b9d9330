"""Running the audit commands as real processes, and reading a topic's end offsets."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.settings import Settings
from tests.support.processes import clean_env

ROOT = Path(__file__).parents[2]
FIELDS = (
    "kafka_bootstrap",
    "topic_prefix",
    "database_url",
    "kafka_fetch_max_wait_ms",
    "topic_partitions",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Exit status and output of one ``herald`` run."""

    status: int
    stdout: str
    stderr: str


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``herald`` process configured like ``settings``."""
    env = clean_env()
    env.update({f"HERALD_{name.upper()}": str(getattr(settings, name)) for name in FIELDS})
    env.update(HERALD_JWT_SECRET=settings.jwt_secret, HERALD_LOG_LEVEL="WARNING", **extra)
    return env


async def herald(settings: Settings, *args: str, timeout: float = 120.0, **extra: str) -> Outcome:
    """Run ``herald ARGS`` as a process (stdin/out not a terminal: plain progress lines)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald.cli",
        *args,
        cwd=ROOT,
        env=cli_env(settings, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Outcome(proc.returncode, out.decode(), err.decode())


async def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    """End offset of every partition of ``topics`` (to prove a command appended nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
