"""Scheduler: delayed delivery work that survives a restart.

Everything that must happen later (a retry, a ``deliver_after``, an email fallback)
is sent as a ``schedule`` command to the ``scheduled`` topic, keyed by user; reads and
deletes send a ``cancel`` (the API, which appends those facts, sends it with them:
``api.publisher``). One agent applies the commands to the user's agenda in the
``herald-scheduled`` table (changelog-backed, co-partitioned with the topic), so it is
the only writer. Each worker's timer sends a ``tick`` to every partition of the topic
it owns; on a tick the agent fires what is due on that partition: the work goes to the
channel's sink topic, or becomes ``notification.expired`` if it is too late.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from engine import correlation, schedule
from engine.notification import follow
from engine.routing import accepted_of, fire
from engine.schedule import Agenda, Due
from engine.settings import Settings
from schemas.codec import decode, envelope_to_dict
from schemas.envelope import Envelope
from schemas.errors import InvalidMessage
from schemas.events import DeliveryCancelled
from streams.dead_letters import dead_letter, read_or_dead_letter
from streams.delivery_work import hand_off
from streams.metrics import DELIVERIES_CANCELLED, NOTIFICATIONS_EXPIRED, SCHEDULED_PENDING
from streams.publish import append
from streams.topics import Topics

log = logging.getLogger(__name__)

SOURCE = "herald/scheduler"


async def send_schedule(topics: Topics, item: Due) -> None:
    """Ask the scheduler to deliver ``item`` when it is due."""
    user = item.accepted.get("userid") or ""
    value = json.dumps({"op": "schedule", "item": item.to_json()}, separators=(",", ":")).encode()
    fut = await topics.scheduled.send(key=user.encode(), value=value)
    await fut


async def send_cancel(topics: Topics, cause: Envelope, reason: str) -> None:
    """Ask the scheduler to drop the pending work of ``cause``'s notification (and later work for it)."""
    command = schedule.cancel_command(envelope_to_dict(cause), reason)
    fut = await topics.scheduled.send(key=(cause.userid or "").encode(), value=json.dumps(command).encode())
    await fut


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire what is due on the record's partition."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Add ``item`` to its user's agenda."""

    item: Due


@dataclass(frozen=True, slots=True)
class Cancel:
    """Drop the pending work of ``notification_id`` (and work for it arriving later)."""

    cause: Envelope
    notification_id: str
    reason: str


Command = Tick | Schedule | Cancel


def read_command(message: faust.types.Message) -> Command:
    """The command a ``scheduled`` record carries; ``InvalidMessage`` saying why for anything else."""
    try:
        raw = json.loads(message.value or b"")
    except ValueError as exc:
        raise InvalidMessage(f"scheduler: not JSON: {exc}") from exc
    op = raw.get("op") if isinstance(raw, dict) else None
    try:
        if op == "tick":
            return Tick()
        if op == "schedule":
            return Schedule(Due.from_json(raw["item"]))
        if op == "cancel":
            cause = decode(json.dumps(raw["cause"]).encode())
            return Cancel(cause, str(raw["notification_id"]), str(raw["reason"]))
    except InvalidMessage as exc:
        raise InvalidMessage(f"scheduler: {op} command: {exc.reason}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidMessage(f"scheduler: malformed {op} command: {type(exc).__name__}: {exc}") from exc
    raise InvalidMessage(f"scheduler: unknown command {op!r}")


def install(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Register the scheduler agent, its table and its tick timer."""
    table = app.Table(
        "herald-scheduled",
        default=None,
        partitions=settings.topic_partitions,
        help="Per-user pending delivery work (engine.schedule.Agenda).",
    )
    # Cancels are remembered as long as a retry may still be in flight for the notification.
    memory = max(settings.retry_max_delay_seconds * settings.retry_max_attempts, settings.dedupe_window_seconds)
    pending: dict[int, int] = {}

    async def scheduler(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            correlation.bind(None)
            command = await read_or_dead_letter(topics, message, read_command)
            if command is None:
                continue  # dead-lettered with the reason
            try:
                now = datetime.now(UTC)
                if isinstance(command, Tick):
                    pending[message.partition] = await _tick(topics, table, message.partition, now, memory)
                    SCHEDULED_PENDING.set(sum(pending.values()))
                elif isinstance(command, Schedule):
                    await _schedule(topics, table, message.partition, command.item, now, memory)
                else:
                    await _cancel(topics, table, message, command, now, memory)
            except Exception as exc:  # one bad command must not stop delayed delivery for everyone
                log.exception(
                    "scheduler command failed", extra={"offset": message.offset, "partition": message.partition}
                )
                await dead_letter(topics, message, f"scheduler: {type(exc).__name__}: {exc}")

    app.agent(topics.scheduled, name="herald.scheduler")(scheduler)

    async def tick() -> None:
        owned = [tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.names.scheduled]
        for partition in owned:
            await topics.scheduled.send(value=b'{"op":"tick"}', partition=partition)

    app.timer(interval=settings.scheduler_tick_seconds, name="herald.scheduler.tick")(tick)


async def _schedule(topics: Topics, table: Any, partition: int, item: Due, now: datetime, memory: float) -> None:
    user = str(item.accepted.get("userid") or "")
    agenda = Agenda.from_json(table.get(user))
    after, cancelled = schedule.add(agenda, item, now=now.timestamp(), memory_seconds=memory)
    table[user] = {**after.to_json(), "partition": partition}
    if cancelled is not None:
        # The notification was read (or deleted) while this work was in flight.
        await _cancelled(topics, accepted_of(item), (item,), cancelled, now)


async def _cancel(
    topics: Topics, table: Any, message: faust.types.Message, command: Cancel, now: datetime, memory: float
) -> None:
    user = (message.key or b"").decode()
    agenda = Agenda.from_json(table.get(user))
    after, removed = schedule.cancel(
        agenda, command.notification_id, command.reason, now=now.timestamp(), memory_seconds=memory
    )
    table[user] = {**after.to_json(), "partition": message.partition}
    await _cancelled(topics, command.cause, removed, command.reason, now)


async def _cancelled(topics: Topics, cause: Envelope, items: tuple[Due, ...], reason: str, now: datetime) -> None:
    events = []
    for channel in sorted({i.channel for i in items}):
        event = DeliveryCancelled(
            notification_id=items[0].notification_id, user_id=cause.userid or "", channel=channel, reason=reason
        )
        events.append(follow(cause, event, now=now, source=SOURCE))
        DELIVERIES_CANCELLED.labels(channel).inc()
    await append(topics.events, events)


async def _tick(topics: Topics, table: Any, partition: int, now: datetime, memory: float) -> int:
    """Fire what is due on ``partition``; return how many items stay pending there."""
    left = 0
    for user, raw in list(table.items()):
        if not raw or raw.get("partition") != partition:
            continue
        agenda = Agenda.from_json(raw)
        after, due = schedule.take_due(agenda, now=now.timestamp(), memory_seconds=memory)
        left += len(after.items)
        if after == agenda:
            continue
        if after.empty:
            del table[user]
        else:
            table[user] = {**after.to_json(), "partition": partition}
        for item in due:
            await _fire(topics, item, now)
    return left


async def _fire(topics: Topics, item: Due, now: datetime) -> None:
    cause, expired = fire(item, now=now)
    correlation.bind(cause.correlationid or cause.id)  # this item's log lines; the next item rebinds
    if expired is not None:
        await append(topics.events, [expired])
        NOTIFICATIONS_EXPIRED.labels(item.channel).inc()
        return
    await hand_off(topics, item.channel, cause, attempt=item.attempt, target=item.target)
    log.info(
        "scheduled work fired",
        extra={
            "notification_id": item.notification_id,
            "user_id": cause.userid,
            "kind": item.kind,
            "channel": item.channel,
        },
    )
