"""``herald audit export`` / ``verify`` as real processes on a real broker: an export verifies;
every kind of tampering is named by line; bad input fails in one line and appends nothing."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.settings import Settings
from engine.topics import TopicNames
from herald.broker import free_port
from streams.admin import ensure_topics
from tests.integration.audit_support import ROOT, cli_env, end_offsets, herald
from tests.support.event_log import Log, append

pytestmark = [pytest.mark.timeout(300)]
KEY = "audit-key-" + "x" * 30


async def _log(settings: Settings) -> Log:
    await ensure_topics(settings)
    log = Log()
    for user in ("alice", "bob", "carol"):
        nid = log.accepted(user)
        log.deferred(user, nid)
        log.succeeded(user, nid)
        log.read(user, nid)
    await append(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
    return log


def _records(path: Path) -> list[dict[str, object]]:
    lines = path.read_bytes().splitlines()
    return [json.loads(line) for line in lines[1:-1]]


async def test_export_then_verify_and_every_tampering_is_named(settings: Settings, tmp_path: Path) -> None:
    await _log(settings)
    out = tmp_path / "all.jsonl"
    done = await herald(settings, "audit", "export", "--all", "-o", str(out))
    assert done.status == 0, done.stderr
    assert "exported 12 events" in done.stdout
    records = _records(out)
    assert len(records) == 12
    assert {"topic", "partition", "offset", "timestamp", "prev", "hash", "value"} <= set(records[0])
    ok = await herald(settings, "audit", "verify", str(out))
    assert ok.status == 0, ok.stderr
    assert "OK, 12 events" in ok.stdout

    original = out.read_bytes().splitlines(keepends=True)
    tampered = {
        "modified": [*original[:3], original[3].replace(b'"source":"tests"', b'"source":"elsewhere"'), *original[4:]],
        "deleted": [*original[:5], *original[6:]],
        "inserted": [*original[:7], original[2], *original[7:]],
        "reordered": [*original[:2], original[3], original[2], *original[4:]],
        "truncated": [*original[:-1], original[-1][:30]],
        "foreign": [b'{"id": 1}\n', b'{"id": 2}\n'],
    }
    expected_line = {"modified": 4, "deleted": 6, "inserted": 8, "reordered": 3, "truncated": 14, "foreign": 1}
    for kind, lines in tampered.items():
        bad = tmp_path / f"{kind}.jsonl"
        bad.write_bytes(b"".join(lines))
        result = await herald(settings, "audit", "verify", str(bad))
        assert result.status == 1, (kind, result)
        message = result.stderr.strip().splitlines()[-1]
        assert f": line {expected_line[kind]}: " in message, (kind, message)


async def test_one_users_export_in_a_range_and_a_signed_manifest(settings: Settings, tmp_path: Path) -> None:
    await _log(settings)
    out = tmp_path / "alice.jsonl"
    done = await herald(settings, "audit", "export", "--user", "alice", "-o", str(out), HERALD_AUDIT_HMAC_KEY=KEY)
    assert done.status == 0, done.stderr
    records = _records(out)
    assert [r["value"]["type"] for r in records] == [  # type: ignore[index]
        "notification.accepted",
        "delivery.deferred",
        "delivery.succeeded",
        "notification.read",
    ]
    assert {r["key"] for r in records} == {"alice"}
    assert (await herald(settings, "audit", "verify", str(out), HERALD_AUDIT_HMAC_KEY=KEY)).status == 0
    unsigned = await herald(settings, "audit", "verify", str(out))
    assert unsigned.status == 1 and "signed, but no signing key" in unsigned.stderr
    wrong = await herald(settings, "audit", "verify", str(out), HERALD_AUDIT_HMAC_KEY="another-key-" + "y" * 30)
    assert wrong.status == 1 and "bad signature" in wrong.stderr

    partition, first = records[0]["partition"], records[1]["offset"]
    ranged = tmp_path / "range.jsonl"
    window = f"{partition}:{first}"
    cut = await herald(
        settings, "audit", "export", "--user", "alice", "--from", window, "--to", f"{partition}:{first + 1}",  # type: ignore[operator]
        "-o", str(ranged),
    )  # fmt: skip
    assert cut.status == 0, cut.stderr
    assert [r["value"]["type"] for r in _records(ranged)] == ["delivery.deferred", "delivery.succeeded"]  # type: ignore[index]
    everything = tmp_path / "all.jsonl"
    assert (await herald(settings, "audit", "export", "--all", "-o", str(everything))).status == 0
    stamps = sorted(int(r["timestamp_ms"]) for r in _records(everything))  # type: ignore[call-overload]
    low, high = stamps[3], stamps[8]
    timed = tmp_path / "t.jsonl"
    span = ("--from", _iso(low), "--to", _iso(high))
    assert (await herald(settings, "audit", "export", "--all", *span, "-o", str(timed))).status == 0
    assert sorted(int(r["timestamp_ms"]) for r in _records(timed)) == [s for s in stamps if low <= s <= high]  # type: ignore[call-overload]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_bad_input_fails_in_one_line_and_appends_nothing(settings: Settings, tmp_path: Path) -> None:
    await _log(settings)
    names = TopicNames(settings.topic_prefix)
    before = await end_offsets(settings, list(names.all))
    out = tmp_path / "x.jsonl"
    cases = {
        "no events in the range": ("audit", "export", "--all", "--from", "2999-01-01T00:00:00Z", "-o", str(out)),
        "no events for user nobody": ("audit", "export", "--user", "nobody", "-o", str(out)),
        "neither an RFC 3339 time": ("audit", "export", "--all", "--from", "yesterday", "-o", str(out)),
        "No such file": ("audit", "verify", str(tmp_path / "missing.jsonl")),
    }
    for expected, args in cases.items():
        result = await herald(settings, *args)
        assert result.status != 0, args
        lines = result.stderr.strip().splitlines()
        assert expected in lines[-1] and "Traceback" not in result.stderr, (args, result.stderr)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # noqa: ASYNC240
    down = await herald(
        settings, "audit", "export", "--all", "-o", str(out), HERALD_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}"
    )
    assert down.status == 1 and "cannot reach the Kafka broker" in down.stderr and "Traceback" not in down.stderr
    missing = await herald(settings, "audit", "export", "--all", "-o", str(out), HERALD_TOPIC_PREFIX="nothing-here.")
    assert missing.status == 1 and "does not exist" in missing.stderr
    assert await end_offsets(settings, list(names.all)) == before


def _on_a_terminal(settings: Settings, *args: str) -> tuple[int, str]:
    """Run ``herald ARGS`` with stderr on a pseudo-terminal, as an operator at a shell would; its stderr."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", *args],
            cwd=ROOT,
            env={**cli_env(settings), "COLUMNS": "100", "TERM": "xterm"},
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        status = proc.wait(120)
    finally:
        os.close(leader)
    return status, b"".join(chunks).decode(errors="replace")


async def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_pipe(settings: Settings, tmp_path: Path) -> None:
    await _log(settings)
    status, terminal = await asyncio.to_thread(
        _on_a_terminal, settings, "audit", "export", "--all", "-o", str(tmp_path / "tty.jsonl")
    )
    assert status == 0, terminal
    assert "━" in terminal and "12/12" in terminal, f"a rich bar with its count on a terminal: {terminal!r}"
    piped = await herald(settings, "audit", "export", "--all", "-o", str(tmp_path / "pipe.jsonl"))
    assert piped.status == 0, piped.stderr
    assert "━" not in piped.stderr and "\x1b[" not in piped.stderr, "no bar, no escape codes in a pipe"
    assert "12" in piped.stderr.strip().splitlines()[-1], f"plain lines with the count: {piped.stderr!r}"
