"""``herald redeliver --from T1 --to T2 [--channel C] [--status ...] [--dry-run]``.

After an outage (SMTP or APNs down until retries ran out), puts the deliveries of the
notifications accepted in the range back to work: for each, ``delivery.requeued``
(operator, reason) is appended to the event log, then the work record goes to the
channel's sink topic as a fresh first attempt of that one target. The plan comes from
the log (``engine.audit_redelivery``): a target that already succeeded is never sent
again (and the sinks' sent-targets table would suppress it too). ``--dry-run`` prints
the plan and writes nothing; so does any failure before the first write.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from engine.audit_range import BadRange, parse_range
from engine.audit_redelivery import CHANNELS, STATUSES, Requeue, plan
from engine.settings import Settings
from engine.topics import TopicNames

_WANTED = (b"notification.accepted", b'"delivery.', b"notification.expired")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald redeliver``."""
    cmd = sub.add_parser("redeliver", help="requeue failed/abandoned/deferred deliveries after an outage")
    cmd.add_argument("--from", dest="start", required=True, help="accepted at or after: RFC 3339 time or p:o")
    cmd.add_argument("--to", dest="end", required=True, help="accepted at or before: RFC 3339 time or p:o")
    cmd.add_argument("--channel", choices=CHANNELS, action="append", help="only this channel (repeatable)")
    cmd.add_argument("--status", default="failed,abandoned", help=f"comma-separated, of {', '.join(STATUSES)}")
    cmd.add_argument("--reason", help="why (recorded in each delivery.requeued); required unless --dry-run")
    cmd.add_argument("--operator", help="who (recorded); default: the login name")
    cmd.add_argument("--dry-run", action="store_true", help="print what would be requeued; write nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Requeue (or list); one line on stderr and a non-zero status on failure."""
    from herald.audit_log import LogUnavailable

    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    bad = sorted(set(statuses) - set(STATUSES))
    try:
        if bad or not statuses:
            raise BadRange(f"--status: {', '.join(bad) or 'empty'} (choose from {', '.join(STATUSES)})")
        if not args.dry_run and not (args.reason or "").strip():
            raise BadRange("--reason is required (it is recorded with each redelivery)")
        todo, sources = asyncio.run(_plan(settings, args.start, args.end, args.channel or CHANNELS, statuses))
        for item in todo:
            where = item.target or "every target not delivered yet"
            sys.stdout.write(f"{item.notification_id} {item.channel} {where} (was {item.previous_status})\n")
        if args.dry_run or not todo:
            verb = "would requeue" if args.dry_run else "requeued"
            sys.stdout.write(
                f"{verb} {len(todo)} deliveries of {len({i.notification_id for i in todo})} notifications\n"
            )
            return 0
        operator = (args.operator or getpass.getuser() or "unknown").strip()
        asyncio.run(_requeue(settings, todo, sources, operator, args.reason.strip()))
    except BadRange as exc:
        sys.stderr.write(f"herald redeliver: {exc}\n")
        return 2
    except LogUnavailable as exc:
        sys.stderr.write(f"herald redeliver: {exc}\n")
        return 1
    sys.stdout.write(f"requeued {len(todo)} deliveries of {len({i.notification_id for i in todo})} notifications\n")
    return 0


async def _plan(
    settings: Settings, start: str, end: str, channels: Any, statuses: list[str]
) -> tuple[list[Requeue], dict[str, bytes]]:
    import orjson

    from herald.audit_log import EmptySelection, consumer_for, partitions_of, read, spans
    from herald.audit_progress import Bar

    selection = parse_range(start, end)
    reading = parse_range(start, None)  # outcomes may come after the range: read to the end
    topic = TopicNames(settings.topic_prefix).events
    accepted: dict[str, dict[str, Any]] = {}
    sources: dict[str, bytes] = {}
    outcomes: list[tuple[str, dict[str, Any]]] = []
    async with consumer_for(settings) as consumer:
        todo = await spans(consumer, topic, await partitions_of(consumer, topic), reading)
        bar = Bar(f"reading {topic}", sum(s.end - s.start for s in todo))
        try:
            async for batch in read(consumer, topic, todo, progress=bar.advance):
                for r in batch:
                    value = r.value or b""
                    if not any(w in value for w in _WANTED):
                        continue
                    try:
                        event = orjson.loads(value)
                    except orjson.JSONDecodeError:
                        continue
                    data = event.get("data") if isinstance(event, dict) else None
                    if not isinstance(data, dict):
                        continue
                    kind = str(event.get("type"))
                    if kind == "notification.accepted":
                        nid = data.get("notification_id")
                        if isinstance(nid, str) and selection.includes(r.partition, r.offset, r.timestamp):
                            accepted.setdefault(nid, data)
                            sources.setdefault(nid, value)
                    else:
                        outcomes.append((kind, data))
        finally:
            bar.close()
    if not accepted:
        raise EmptySelection("no notifications accepted in the range: nothing to redeliver")
    return plan(accepted, outcomes, channels=channels, statuses=statuses), sources


async def _requeue(
    settings: Settings, todo: list[Requeue], sources: dict[str, bytes], operator: str, reason: str
) -> None:
    import dataclasses
    from datetime import UTC, datetime

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from herald.audit_log import LogUnavailable
    from schemas.codec import decode, encode
    from schemas.envelope import Envelope
    from schemas.events import DeliveryRequeued
    from schemas.ids import derived_id, uuid7

    run = uuid7()
    names = TopicNames(settings.topic_prefix)
    # Everything is built (and every stored acceptance decoded) before the first write.
    records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
    now = datetime.now(UTC)
    for item in todo:
        cause = decode(sources[item.notification_id])
        fact = DeliveryRequeued(
            notification_id=item.notification_id,
            user_id=item.user_id,
            channel=item.channel,
            operator=operator,
            reason=reason,
            previous_status=item.previous_status,
            target=item.target,
        )
        event_id = derived_id(cause.id, fact.TYPE, item.channel, item.target or "*", run)
        env = Envelope(
            id=event_id,
            source="herald/redeliver",
            time=now,
            data=fact,
            subject=item.notification_id,
            userid=item.user_id,
            priority=cause.priority,
            correlationid=cause.correlationid,
        )
        # A fresh cause id: the new attempts' derived event ids differ from the outage's ones.
        work = dataclasses.replace(cause, id=derived_id(cause.id, "redelivery", event_id))
        headers = [("herald-target", item.target.encode())] if item.target else []
        key = item.user_id.encode()
        records.append((names.events, key, encode(env), []))
        records.append((names.delivery(item.channel), key, encode(work), headers))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=False)
    try:
        await asyncio.wait_for(producer.start(), 10)
    except (KafkaError, OSError, TimeoutError) as exc:
        await producer.stop()
        raise LogUnavailable(
            f"cannot reach the Kafka broker at {settings.kafka_bootstrap} ({type(exc).__name__})"
        ) from None
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers or None)
    finally:
        await producer.stop()
