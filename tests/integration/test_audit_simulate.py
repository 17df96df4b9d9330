"""``herald simulate`` as a real process over a real log: a looser candidate policy accepts what
was rate limited, names the user, and the command writes nothing; bad policies fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.settings import Settings
from engine.topics import TopicNames
from streams.admin import ensure_topics
from tests.integration.audit_support import end_offsets, herald
from tests.support.event_log import Log, append

pytestmark = [pytest.mark.timeout(300)]


async def test_a_looser_policy_on_the_recorded_requests(settings: Settings, tmp_path: Path) -> None:
    await ensure_topics(settings)
    log = Log()
    for _ in range(3):
        log.accepted("ann", priority="low")
    limited = [log.rate_limited("ann", "low") for _ in range(2)]
    log.accepted("bob", priority="high")
    names = TopicNames(settings.topic_prefix)
    await append(settings.kafka_bootstrap, names.events, log.envelopes)
    before = await end_offsets(settings, list(names.all))

    policy = tmp_path / "candidate.json"
    policy.write_text(json.dumps({"rate_limit_low": 4}))
    result = await herald(settings, "simulate", "--policy", str(policy), HERALD_RATE_LIMIT_LOW="3")
    assert result.status == 0, result.stderr
    assert "6 recorded admission decisions replayed" in result.stdout
    assert "low       accepted              3          4        +1" in result.stdout
    assert "low       rate_limited          2          1        -1" in result.stdout
    assert "  ann: +1" in result.stdout
    as_json = await herald(settings, "simulate", "--policy", str(policy), "--json")
    assert json.loads(as_json.stdout)["candidate"]["high"] == {"accepted": 1}
    assert len(limited) == 2
    assert await end_offsets(settings, list(names.all)) == before

    toml = tmp_path / "bad.toml"
    toml.write_text("rate_limit_low = 0\n")
    bad = await herald(settings, "simulate", "--policy", str(toml))
    assert bad.status == 2 and "rate_limit_low must be a whole number of at least 1" in bad.stderr
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"rate_limits": 5}')
    assert "unknown policy key(s) rate_limits" in (await herald(settings, "simulate", "--policy", str(unknown))).stderr
    empty = await herald(settings, "simulate", "--policy", str(policy), "--from", "2999-01-01T00:00:00Z")
    assert empty.status == 1 and "no admission decisions in the range" in empty.stderr
