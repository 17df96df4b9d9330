"""``herald audit export`` and ``herald audit verify``: a tamper-evident copy of the event log.

Export reads ``herald.events`` straight from Kafka and writes the format of
``engine.audit_chain`` to a temporary file next to ``-o``, renamed into place only when
complete: a failed export leaves no file behind and writes nothing to Kafka. Verify
reads a file and names its first bad line. See ``docs/audit.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.audit_chain import AuditFileError, Verdict, Verifier, Writer, header_line
from engine.audit_range import BadRange, parse_range
from engine.settings import Settings
from engine.topics import TopicNames

READ_CHUNK = 1 << 20
"""Bytes verified between two progress updates."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald audit export|verify``."""
    audit = sub.add_parser("audit", help="export the event log with a hash chain, or verify an export")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    export = actions.add_parser("export", help="write the event log (or one user's events) as signed JSON Lines")
    who = export.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="only this user's events (the records keyed by the user id)")
    who.add_argument("--all", action="store_true", help="every event")
    add_range_options(export)
    export.add_argument("-o", "--output", required=True, type=Path, help="file to write (replaced when complete)")
    verify = actions.add_parser("verify", help="check an export: hash chain, line order, manifest, signature")
    verify.add_argument("file", type=Path)


def add_range_options(cmd: argparse.ArgumentParser) -> None:
    """``--from`` and ``--to`` (RFC 3339 time, or ``partition:offset[,partition:offset]``)."""
    cmd.add_argument("--from", dest="start", help="first record: RFC 3339 time or partition:offset (inclusive)")
    cmd.add_argument("--to", dest="end", help="last record: RFC 3339 time or partition:offset (inclusive)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen action; one line on stderr and a non-zero status on failure."""
    # Kafka and terminal libraries load only for this command: `herald token` stays quick.
    from herald.audit_log import LogUnavailable

    key = settings.audit_hmac_key.encode() or None
    try:
        if args.audit_command == "export":
            count, partitions = asyncio.run(export(settings, args.output, args.user, args.start, args.end, key))
            signed = "signed" if key else "digest manifest, unsigned"
            _out(f"exported {count} events from {partitions} partition(s) to {args.output} ({signed})")
            return 0
        verdict = verify_file(args.file, key)
    except BadRange as exc:
        _err(f"herald audit: {exc}")
        return 2
    except AuditFileError as exc:
        _err(f"herald audit verify: {args.file}: {exc}")
        return 1
    except LogUnavailable as exc:
        _err(f"herald audit: {exc}")
        return 1
    except OSError as exc:
        _err(f"herald audit: {exc.filename}: {exc.strerror}")
        return 1
    signed = "signature valid" if verdict.signed else "unsigned (digest manifest)"
    _out(f"{args.file}: OK, {verdict.count} events in {len(verdict.partitions)} partition(s), {signed}")
    return 0


async def export(
    settings: Settings, output: Path, user: str | None, start: str | None, end: str | None, key: bytes | None
) -> tuple[int, int]:
    """Write the export; return (events, partitions). Nothing is left behind on failure."""
    from herald.audit_log import EmptySelection, consumer_for, partitions_of, read, spans
    from herald.audit_progress import Bar

    selection = parse_range(start, end)
    topic = TopicNames(settings.topic_prefix).events
    wanted = user.encode() if user is not None else None
    header = header_line(
        topic,
        datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        {"user": user, **selection.describe()},
    )
    writer = Writer(header)
    tmp = output.with_name(f".{output.name}.partial")
    try:
        async with consumer_for(settings) as consumer:
            todo = await spans(consumer, topic, await partitions_of(consumer, topic), selection)
            bar = Bar(f"exporting {topic}", sum(s.end - s.start for s in todo))
            try:
                with tmp.open("wb") as out:
                    out.write(header + b"\n")
                    async for batch in read(consumer, topic, todo, progress=bar.advance):
                        lines = [
                            writer.record(
                                topic=r.topic,
                                partition=r.partition,
                                offset=r.offset,
                                timestamp_ms=r.timestamp,
                                timestamp=_iso(r.timestamp),
                                key=r.key,
                                value=r.value,
                                headers=list(r.headers or ()),
                            )
                            for r in batch
                            if (wanted is None or r.key == wanted)
                            and selection.includes(r.partition, r.offset, r.timestamp)
                        ]
                        if lines:
                            out.write(b"\n".join(lines) + b"\n")
                    if writer.count == 0:
                        who = f" for user {user}" if user is not None else ""
                        raise EmptySelection(f"no events{who} in the range: nothing exported")
                    out.write(writer.manifest(key) + b"\n")
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                bar.close()
        tmp.replace(output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return writer.count, len(writer.partitions)


def verify_file(path: Path, key: bytes | None) -> Verdict:
    """Verify ``path``; ``AuditFileError`` names the first bad line."""
    from herald.audit_progress import Bar

    verifier = Verifier(key)
    bar = Bar(f"verifying {path.name} (bytes)", path.stat().st_size)
    try:
        with path.open("rb") as handle:
            pending = 0
            for line in handle:
                verifier.feed(line)
                pending += len(line)
                if pending >= READ_CHUNK:
                    bar.advance(pending)
                    pending = 0
            bar.advance(pending)
    finally:
        bar.close()
    return verifier.finish()


_SECONDS: dict[int, str] = {}


def _iso(timestamp_ms: int) -> str:
    """RFC 3339 with milliseconds; the seconds part cached (records of one second share it)."""
    second, millis = divmod(timestamp_ms, 1000)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        prefix = _SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{millis:03d}Z"


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
