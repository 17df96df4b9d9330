"""The dead-letter topic: raw records that could not be used, with why and where they came from.

Every agent that decodes input (ingest, the scheduler, the sinks) reads it through
``read_or_dead_letter`` / ``decode_or_dead_letter``: a record it cannot use comes here
with the reason, whatever the decoder raised, and the agent moves on to the next one;
nothing is dropped silently and no record stops an agent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import faust

from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import Event
from streams.metrics import DEAD_LETTERED
from streams.topics import Topics

log = logging.getLogger(__name__)

T = TypeVar("T")


def header_items(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    """Kafka headers as a list of pairs, whatever shape the client handed us."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def record_source(message: faust.types.Message) -> str:
    """``topic/partition/offset`` of a record: its identity for redelivery detection."""
    return f"{message.topic}/{message.partition}/{message.offset}"


async def dead_letter(
    topics: Topics, message: faust.types.Message, reason: str, *, extra: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Copy the raw record to the dead-letter topic with why and where it came from.

    Never fails on what the record carries: a key or header that cannot be re-encoded
    (a lone surrogate, a null value) is escaped, so the poison itself cannot stop this.
    """
    headers = [
        *(_safe_header(k, v) for k, v in header_items(message.headers)),
        ("herald-error", _utf8(reason)[:4000]),
        ("herald-source-topic", _utf8(message.topic)),
        ("herald-source-partition", str(message.partition).encode()),
        ("herald-source-offset", str(message.offset).encode()),
        *(_safe_header(k, v) for k, v in extra),
    ]
    key = message.key if message.key is None or isinstance(message.key, bytes) else _utf8(str(message.key))
    fut = await topics.deadletter.send(key=key, value=message.value, headers=headers)
    await fut
    DEAD_LETTERED.labels(message.topic).inc()
    log.warning(
        "dead-lettered record",
        extra={
            "error": _utf8(reason).decode(),
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
        },
    )


async def read_or_dead_letter(
    topics: Topics,
    message: faust.types.Message,
    read: Callable[[faust.types.Message], T],
    *,
    on_invalid: Callable[[InvalidMessage], Awaitable[None]] | None = None,
) -> T | None:
    """``read(message)``, or ``None`` once the record is on the dead-letter topic with why.

    ``InvalidMessage`` gives the reason. Any other exception (a decoder bug, a
    ``RecursionError``) is the record's fault too: logged with its traceback and
    dead-lettered as ``undecodable: <type>: <message>``. ``on_invalid`` then gets the
    error (ingest records the rejection in the user's history).
    """
    try:
        return read(message)
    except InvalidMessage as exc:
        problem = exc
    except Exception as exc:
        log.exception("undecodable record", extra={"topic": message.topic, "offset": message.offset})
        problem = InvalidMessage(f"undecodable: {type(exc).__name__}: {exc}")
    await dead_letter(topics, message, problem.reason)
    if on_invalid is not None:
        await on_invalid(problem)
    return None


async def decode_or_dead_letter(
    topics: Topics, message: faust.types.Message, *, expect: type[Event] | None = None, max_bytes: int | None = None
) -> Envelope | None:
    """The record as an envelope (of an ``expect`` event, when given), or ``None`` once it is dead-lettered."""

    def read(record: faust.types.Message) -> Envelope:
        env = decode(record.value, header_items(record.headers), max_bytes=max_bytes)
        if expect is not None and not isinstance(env.data, expect):
            raise InvalidMessage(f"expected {expect.TYPE}, got {env.type}")
        return env

    return await read_or_dead_letter(topics, message, read)


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``, lone surrogates escaped (``\\udc80``) instead of raising."""
    return text.encode("utf-8", "backslashreplace")


def _safe_header(key: Any, value: Any) -> tuple[str, bytes]:
    name = _utf8(key if isinstance(key, str) else repr(key)).decode()
    if value is None or isinstance(value, bytes):
        return name, value or b""
    return name, _utf8(str(value))
