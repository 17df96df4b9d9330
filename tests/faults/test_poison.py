"""Poison mixed into the steady load: every good request delivered, every bad one dead-lettered with its reason.

A careless or hostile producer publishes, on all three request topics and between the
load's requests: malformed JSON, oversized records, 5,000 nested brackets, identifiers
longer than their 200-character column, and lone surrogates. The topology's checker then
verifies every good notification as after a kill, no role may have died, and each poison
record must be on the dead-letter topic exactly once with a ``herald-error`` header.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from engine.topics import TopicNames
from tests.faults.topology import PRIORITIES, RATE, Topology
from tests.support.log_reader import read_topic
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(900)

ROUNDS = 12
"""Each kind of poison this many times (spread over the three priorities)."""


def poison(kind: str, user: str, priority: str) -> bytes:
    """One bad ``notification.requested`` of ``kind``; unique bytes (a fresh id or marker in each)."""
    marker = uuid.uuid4().hex
    good = {
        "specversion": "1.0",
        "type": "notification.requested",
        "id": f"poison-{marker}",
        "source": "faults",
        "data": {"user_id": user, "title": f"poison {kind}", "priority": priority},
    }
    if kind == "malformed":
        return json.dumps(good).encode()[:-7]
    if kind == "oversized":
        good["data"]["body"] = "x" * 20_000  # type: ignore[index]
        return json.dumps(good).encode()
    if kind == "nested":
        text = json.dumps(good)
        return text.replace('"poison nested"', '"poison nested", "data": ' + "[" * 5000 + "]" * 5000).encode()
    if kind == "long-id":
        good["id"] = f"{marker}-" + "i" * 200
        return json.dumps(good).encode()
    if kind == "long-user":
        good["data"]["user_id"] = f"{user}-" + "u" * 200  # type: ignore[index]
        return json.dumps(good).encode()
    if kind == "surrogate":
        return json.dumps(good).replace('"poison surrogate"', '"poison \\ud800 surrogate"').encode()
    raise ValueError(kind)


KINDS = ("malformed", "oversized", "nested", "long-id", "long-user", "surrogate")


async def test_poison_mixed_into_the_load_is_dead_lettered_and_the_rest_delivered(topology: Topology) -> None:
    settings = topology.settings
    names = TopicNames(settings.topic_prefix)
    tag = settings.topic_prefix.strip(".")
    users = [f"{tag}-poisoner-{i}" for i in range(3)]
    topology.poison_users = users
    topology.load.resume()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_batch_size=1)
    await producer.start()
    bad: dict[bytes, str] = {}
    try:
        for i in range(ROUNDS):
            for k, kind in enumerate(KINDS):
                priority = PRIORITIES[(i + k) % 3]
                value = poison(kind, users[i % len(users)], priority)
                bad[value] = kind
                await producer.send_and_wait(names.request(priority), value, key=users[i % len(users)].encode())

            # Spread over the load: wait for a few of its requests between rounds (a count, not a sleep).
            target = len(topology.sent) + int(RATE / 2)

            async def interleaved(target: int = target) -> bool:
                topology.assert_alive()
                return len(topology.sent) >= target

            await eventually(interleaved, timeout=60, what="load between poison rounds")
    finally:
        await producer.stop()

    report = await topology.check("poison mixed into the load", poison=len(bad))

    dead = await read_topic(settings.kafka_bootstrap, names.deadletter, until=len(bad), timeout=60)
    lettered = Counter(record.value for record in dead if record.value in bad)
    reasons = {
        record.value: dict(record.headers).get("herald-error", b"").decode() for record in dead if record.value in bad
    }
    missing = Counter(kind for value, kind in bad.items() if value not in lettered)
    assert not missing, f"poison never dead-lettered: {dict(missing)}"
    assert all(n == 1 for n in lettered.values()), "a poison record was dead-lettered twice"
    no_reason = Counter(bad[value] for value, reason in reasons.items() if not reason)
    assert not no_reason, f"dead letters without a reason: {dict(no_reason)}"
    report.extra["reasons"] = sorted({reasons[v].split(":")[0][:60] for v in reasons})
    print(f"[faults] dead-letter reasons: {report.extra['reasons']}", flush=True)
