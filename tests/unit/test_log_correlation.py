"""The correlation id on log lines: bound per task, added by Herald's JSON handler, never overriding."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from engine import correlation
from herald.logs import json_handler


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    buffer = io.StringIO()
    logger = logging.getLogger("tests.correlation")
    handler = json_handler(buffer)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_bound_id_is_on_every_line_and_gone_after_the_block(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, buffer = logged
    log.info("before")
    with correlation.bound("req-1"):
        log.info("inside")
        with correlation.bound("req-2"):
            log.info("nested")
        log.info("inside again")
    log.info("after")
    got = [(line["message"], line.get("correlation_id")) for line in _lines(buffer)]
    assert got == [
        ("before", None),
        ("inside", "req-1"),
        ("nested", "req-2"),
        ("inside again", "req-1"),
        ("after", None),
    ]


def test_an_explicit_correlation_id_wins_over_the_bound_one(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, buffer = logged
    with correlation.bound("bound"):
        log.info("explicit", extra={"correlation_id": "given"})
    assert _lines(buffer)[0]["correlation_id"] == "given"


def test_concurrent_tasks_keep_their_own_ids(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, buffer = logged

    async def work(cid: str) -> None:
        correlation.bind(cid)  # a loop over records rebinds per record
        for step in range(3):
            await asyncio.sleep(0)
            log.info("step", extra={"who": cid, "step": step})

    async def main() -> None:
        await asyncio.gather(work("a"), work("b"), work("c"))

    asyncio.run(main())
    lines = _lines(buffer)
    assert len(lines) == 9
    assert all(line["correlation_id"] == line["who"] for line in lines)
    assert correlation.current() is None  # nothing leaked out of the tasks


def test_an_overlong_id_is_cut_to_the_storage_length() -> None:
    with correlation.bound("x" * 500):
        assert correlation.current() == "x" * correlation.MAX_LENGTH
