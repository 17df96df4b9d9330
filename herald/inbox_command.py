"""``herald inbox USER --as-of T``: the user's inbox as it was at T, folded from the event log.

Every event of a user is keyed by the user id, so it lives in one partition (Herald's
producers hash keys with murmur2, Kafka's default): only that partition is read, from
its first offset to a minute past T (``offsets_for_times``; then record by record), and folded by
``herald.inbox_history`` with the projector's own functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from engine.audit_range import BadRange, Bound, parse_bound
from engine.settings import Settings
from engine.topics import TopicNames

if TYPE_CHECKING:
    from herald.inbox_history import History


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald inbox``."""
    cmd = sub.add_parser("inbox", help="a user's inbox as it was at an instant, folded from the event log")
    cmd.add_argument("user")
    cmd.add_argument(
        "--as-of", required=True, help="RFC 3339 time, or partition:offset (the last event of the user's partition)"
    )
    cmd.add_argument("--json", action="store_true", help="every notification as JSON, deleted ones included")
    cmd.add_argument("--deleted", action="store_true", help="list deleted notifications too")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the inbox; one line on stderr and a non-zero status on failure."""
    # Kafka, SQLAlchemy models and the fold load only for this command: `herald token` stays quick.
    from herald.audit_log import LogUnavailable
    from herald.inbox_history import lines, view

    try:
        bound = parse_bound(args.as_of, "--as-of")
        history = asyncio.run(fold_inbox(settings, args.user, bound, args.as_of))
    except BadRange as exc:
        sys.stderr.write(f"herald inbox: {exc}\n")
        return 2
    except LogUnavailable as exc:
        sys.stderr.write(f"herald inbox: {exc}\n")
        return 1
    if args.json:
        items = sorted(history.states.values(), key=lambda s: (s.created_at, s.id))
        body = {"user_id": args.user, "as_of": args.as_of, "notifications": [view(s) for s in items]}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(lines(args.user, args.as_of, history.states, show_deleted=args.deleted)) + "\n")
    return 0


def partition_of(user: str, partitions: int) -> int:
    """The partition Herald's producers put ``user``'s records in (Kafka's default partitioner)."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(user.encode()) & 0x7FFFFFFF) % partitions


async def fold_inbox(settings: Settings, user: str, bound: Bound, label: str = "") -> History:
    """The user's inbox after every event up to ``bound`` (``label``: the bound as the user wrote it)."""
    from aiokafka import TopicPartition

    from herald.audit_log import CLOCK_MARGIN_MS, EmptySelection, Span, consumer_for, offset_at, partitions_of, read
    from herald.audit_progress import Bar
    from herald.inbox_history import LoggedRecord, inbox_at

    topic = TopicNames(settings.topic_prefix).events
    async with consumer_for(settings) as consumer:
        parts = await partitions_of(consumer, topic)
        partition = partition_of(user, len(parts))
        tp = TopicPartition(topic, partition)
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if bound.time_ms is not None:
            after = await offset_at(consumer, tp, bound.time_ms + CLOCK_MARGIN_MS)
            if after is not None:
                end = min(end, after)
        if bound.offsets:
            if partition not in bound.offsets:
                named = ", ".join(str(p) for p in sorted(bound.offsets))
                raise BadRange(f"--as-of: {user}'s events are in partition {partition}, not {named}")
            end = min(end, bound.offsets[partition] + 1)
        wanted = user.encode()
        records: list[LoggedRecord] = []
        bar = Bar(f"reading {topic}/{partition}", max(0, end - first))
        try:
            async for batch in read(consumer, topic, [Span(partition, first, end)], progress=bar.advance):
                records.extend(
                    LoggedRecord(r.offset, r.timestamp, r.key, r.value, list(r.headers or ()))
                    for r in batch
                    if r.key == wanted
                )
        finally:
            bar.close()
    history = inbox_at(records, user, bound.time_ms, None)
    if history.applied == 0:
        raise EmptySelection(f"no events for user {user} at or before {label or _describe(bound)}")
    return history


def _describe(bound: Bound) -> str:
    if bound.offsets:
        return ", ".join(f"{p}:{o}" for p, o in sorted(bound.offsets.items()))
    return f"{bound.time_ms} ms since the epoch"
