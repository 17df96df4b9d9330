"""Start-up waits (``herald.startup``): backoff, one log line per attempt, no credentials in it."""

from __future__ import annotations

import logging

import pytest

from engine.settings import Settings
from herald.broker import free_port
from herald.startup import redacted, until_reachable
from streams.admin import ensure_topics


def test_the_logged_address_never_carries_a_password() -> None:
    assert (
        redacted("postgresql+psycopg://herald:s3cret@db:5432/herald")
        == "postgresql+psycopg://herald:***@db:5432/herald"
    )
    assert redacted("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("redis://cache:6379/0") == "redis://cache:6379/0"


async def test_an_unreachable_dependency_is_retried_with_growing_delays_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def step() -> str:
        nonlocal calls
        calls += 1
        if calls < 5:
            raise ConnectionRefusedError(111, "Connection refused")
        return "up"

    with caplog.at_level(logging.WARNING, logger="herald.startup"):
        assert await until_reachable("broker", "127.0.0.1:1", step, first_delay=0.01, max_delay=0.04) == "up"
    lines = [r for r in caplog.records if r.name == "herald.startup"]
    assert lines[0].getMessage() == "broker unreachable at start-up (127.0.0.1:1); retrying in 0.0 s"
    assert [r.__dict__["attempt"] for r in lines] == [1, 2, 3, 4]
    assert [r.__dict__["retry_in_seconds"] for r in lines] == [0.01, 0.02, 0.04, 0.04]


async def test_an_error_that_is_not_an_outage_is_not_retried() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad topic configuration")

    with pytest.raises(ValueError, match="bad topic configuration"):
        await until_reachable("broker", "127.0.0.1:1", step, first_delay=0.01)
    assert calls == 1


async def test_each_attempt_at_an_absent_broker_is_one_line_not_the_client_library_s_errors_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings.from_env({}, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            await ensure_topics(settings)  # nothing listens: aiokafka logs its own ERROR, then raises

    with caplog.at_level(logging.INFO):
        await until_reachable("broker", settings.kafka_bootstrap, step, first_delay=0.01)
        logging.getLogger("aiokafka").error("after the wait: still logged")
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == [
        "herald.startup",
        "herald.startup",
        "aiokafka",
    ]
