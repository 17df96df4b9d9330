"""``herald simulate --policy FILE [--from T1 --to T2]``: what a candidate admission and
routing policy would have decided on the recorded requests. Reads the log, writes nothing.

The policy file is JSON (``.json``) or TOML (``.toml``) with any of
``engine.audit_simulation.POLICY_KEYS``; what it leaves out stays as configured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from engine.audit_range import BadRange, parse_range
from engine.audit_simulation import BadPolicy, Policy, Recorded, recorded_fact, simulate
from engine.settings import Settings
from engine.topics import TopicNames

_WANTED = (b"notification.accepted", b"notification.duplicate", b"notification.rate_limited", b"notification.read")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald simulate``."""
    cmd = sub.add_parser("simulate", help="replay the recorded requests through a candidate policy (writes nothing)")
    cmd.add_argument("--policy", required=True, type=Path, help="JSON or TOML file of policy values")
    cmd.add_argument("--from", dest="start", help="first record: RFC 3339 time or partition:offset (inclusive)")
    cmd.add_argument("--to", dest="end", help="last record: RFC 3339 time or partition:offset (inclusive)")
    cmd.add_argument("--top", type=int, default=10, help="users listed among those who change most")
    cmd.add_argument("--json", action="store_true", help="the report as JSON")


def current_policy(settings: Settings) -> Policy:
    """The policy the engine runs with now."""
    return Policy(
        settings.rate_limit_high,
        settings.rate_limit_medium,
        settings.rate_limit_low,
        settings.rate_limit_window_seconds,
        settings.dedupe_window_seconds,
        settings.email_fallback_seconds,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; one line on stderr and a non-zero status on failure."""
    from herald.audit_log import LogUnavailable

    current = current_policy(settings)
    try:
        candidate = current.with_file(_load(args.policy))
        facts = asyncio.run(_facts(settings, args.start, args.end))
    except (BadRange, BadPolicy) as exc:
        sys.stderr.write(f"herald simulate: {exc}\n")
        return 2
    except LogUnavailable as exc:
        sys.stderr.write(f"herald simulate: {exc}\n")
        return 1
    report = simulate(facts, current, candidate)
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(args.top), indent=2) + "\n")
    else:
        decided = sum(report.recorded.values())
        sys.stdout.write(f"{decided} recorded admission decisions replayed\n")
        sys.stdout.write("\n".join(report.lines(args.top)) + "\n")
    return 0


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise BadPolicy(f"{path}: {exc.strerror}") from None
    try:
        raw: Any = tomllib.loads(text.decode()) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPolicy(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(raw, dict):
        raise BadPolicy(f"{path}: the policy must be an object of settings")
    return raw


async def _facts(settings: Settings, start: str | None, end: str | None) -> list[Recorded]:
    import orjson

    from herald.audit_log import EmptySelection, consumer_for, partitions_of, read, spans
    from herald.audit_progress import Bar

    selection = parse_range(start, end)
    topic = TopicNames(settings.topic_prefix).events
    out: list[Recorded] = []
    async with consumer_for(settings) as consumer:
        todo = await spans(consumer, topic, await partitions_of(consumer, topic), selection)
        bar = Bar(f"reading {topic}", sum(s.end - s.start for s in todo))
        try:
            async for batch in read(consumer, topic, todo, progress=bar.advance):
                for r in batch:
                    value = r.value or b""
                    if not any(w in value for w in _WANTED):
                        continue
                    if not selection.includes(r.partition, r.offset, r.timestamp):
                        continue
                    try:
                        event = orjson.loads(value)
                    except orjson.JSONDecodeError:
                        continue
                    fact = recorded_fact(event) if isinstance(event, dict) else None
                    if fact is not None:
                        out.append(fact)
        finally:
            bar.close()
    if not any(f.type != "notification.read" for f in out):
        raise EmptySelection("no admission decisions in the range: nothing to simulate")
    return out
