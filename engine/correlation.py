"""The correlation id of the work in progress, for logs.

One id follows a notification from the REST request that caused it (its request id),
through the CloudEvents ``correlationid`` of every event it causes, to each agent and
sink that handles it. Code that starts work on one record binds the id here
(``bound``); ``herald.logs`` adds it to every log line written meanwhile, so a log
line need not pass it by hand. A context variable: concurrent tasks keep their own.
Pure (no I/O): it only remembers a string for the current task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

MAX_LENGTH = 200
"""The longest id kept (the storage column of ``correlationid``)."""

_CURRENT: ContextVar[str | None] = ContextVar("herald_correlation_id", default=None)


def current() -> str | None:
    """The correlation id bound in this task, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def bound(correlation_id: str | None) -> Iterator[None]:
    """Bind ``correlation_id`` for the block (``None`` clears it), then restore the previous one."""
    token = _CURRENT.set(correlation_id[:MAX_LENGTH] if correlation_id else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def bind(correlation_id: str | None) -> None:
    """Bind ``correlation_id`` until the next ``bind`` in this task (for loops over records)."""
    _CURRENT.set(correlation_id[:MAX_LENGTH] if correlation_id else None)
