"""Start-up against dependencies that are not there yet: wait for them, with backoff, visibly.

Orchestrators start the roles and their dependencies in no particular order: a worker may
come up before the broker, a projector before Postgres accepts connections. Failing at
the first refused connection turns that into a crash loop of tracebacks; retrying in a
tight loop burns a core. ``until_reachable`` does neither: it retries the one start-up
step that needs the dependency (create the topics, migrate the schema, ping Redis) with
exponential backoff, logs one WARNING line per failed attempt naming the dependency, its
address (without credentials) and the next delay, and returns once the step succeeds.
The role then starts normally and its ``/readyz`` turns green. Any other error (a bug,
a refused topic configuration) propagates at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5
"""Seconds before the second attempt."""
MAX_DELAY = 5.0
"""Longest wait between two attempts (the delay doubles up to it): a dependency that
appears is used within this many seconds."""

UNREACHABLE: tuple[type[BaseException], ...] = (OSError, TimeoutError, KafkaError, RedisError, OperationalError)
"""What a dependency that is down, starting or cut off raises (refused or reset
connections, timeouts, a database not accepting connections yet)."""

REPEATERS = ("aiokafka",)
"""Library loggers that log each failed connection at ERROR themselves: while a start-up
step waits, what they log from its task is dropped, so each attempt is one line, ours."""

T = TypeVar("T")


def redacted(url: str) -> str:
    """``url`` without its password (``postgresql+psycopg://user:***@host/db``), for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


async def until_reachable(
    what: str,
    address: str,
    step: Callable[[], Awaitable[T]],
    *,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """``step()``, retried with backoff while ``what`` (at ``address``) is unreachable.

    One WARNING line per failed attempt; an error that is not an outage (a bug, a
    refused configuration) propagates at once. Waits forever: a role that cannot reach
    its dependency is not ready (``/readyz`` does not answer yet), and an orchestrator
    restarting it would only start the wait again.
    """
    quiet = _TaskQuiet(asyncio.current_task())
    for name in REPEATERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        return await _retry(what, address, step, first_delay, max_delay)
    finally:
        for name in REPEATERS:
            logging.getLogger(name).removeFilter(quiet)


async def _retry(what: str, address: str, step: Callable[[], Awaitable[T]], first_delay: float, max_delay: float) -> T:
    delay = first_delay
    attempt = 0
    while True:
        try:
            return await step()
        except UNREACHABLE as exc:
            attempt += 1
            log.warning(
                "%s unreachable at start-up (%s); retrying in %.1f s",
                what,
                address,
                delay,
                extra={
                    "dependency": what,
                    "address": address,
                    "attempt": attempt,
                    "retry_in_seconds": delay,
                    "error": f"{type(exc).__name__}: {_first_line(exc)}",
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class _TaskQuiet(logging.Filter):
    """Drops the records logged from one task (the waiting start-up step's); others pass."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        super().__init__()
        self._task = task

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self._task is None or asyncio.current_task() is not self._task
        except RuntimeError:  # logged from a thread without a running loop
            return True
