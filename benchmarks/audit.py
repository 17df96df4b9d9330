"""Audit tooling on a large log: export + verify of the whole log, inbox --as-of, why.

On one fresh Tansu broker, N realistic events (the generator of ``benchmarks/projector.py``:
``notification.accepted`` over many users, then their outcomes) are produced once onto a
4-partition event log. Then:

(a) baseline: a raw aiokafka consumer reads the N records (no decoding);
(b) ``herald audit export --all`` as its own process (start to exit), and the file size;
(c) ``herald audit verify`` of that file as its own process;
(d) ``herald inbox USER --as-of NOW`` for one user, as its own process and in-process;
(e) ``herald why ID`` for a notification near the end of the log, as its own process and
    in-process (the command's work without interpreter start-up), with the read models
    (``herald rebuild`` of the log into a scratch database first: the ledger gives the
    offsets to seek) and without them (a full scan of the log).

    uv run python -m benchmarks.audit [--events 1000000] [--users 10000] [--no-rebuild]

Process timings include Python start-up and imports, with bytecode cached as in an image
(one untimed ``herald why --help`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import broker, scratch_database
from benchmarks.projector import end_offsets, herald_env, produce, raw_consume
from engine.settings import Settings
from engine.topics import TopicNames
from schemas.ids import derived_id


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``herald ARGS``; seconds from start to exit, and its stdout (fails loudly)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"herald {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds, done.stdout.decode()


async def why_in_process(env: dict[str, str], nid: str) -> float:
    """Seconds of ``explain_notification`` alone (no interpreter start-up)."""
    from api.rest.explain import explain_notification
    from projections.database import create_engine
    from projections.queries import NotificationQueries

    settings = Settings.from_env(env)
    engine = create_engine(settings.database_url)
    try:
        started = time.perf_counter()
        found = await explain_notification(settings, nid, NotificationQueries(engine))
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    if found is None or found.decision != "accepted":
        raise RuntimeError(f"why {nid}: {found}")
    return seconds


async def inbox_in_process(env: dict[str, str], user: str, as_of: str) -> float:
    """Seconds of the inbox fold alone (no interpreter start-up)."""
    from engine.audit_range import parse_bound
    from herald.inbox_command import fold_inbox

    started = time.perf_counter()
    await fold_inbox(Settings.from_env(env), user, parse_bound(as_of, "--as-of"), as_of)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--no-rebuild", action="store_true", help="skip why with read models (no rebuild)")
    args = parser.parse_args()

    async with broker() as bootstrap:
        prefix = f"audit{secrets.token_hex(3)}."
        topic = TopicNames(prefix).events
        acked: dict[int, int] = {}
        seconds = await produce(bootstrap, topic, args.events, args.users, "audit", acked)
        total = sum((await end_offsets(bootstrap, topic, acked)).values())
        print(f"produced {total:,} events over {args.users:,} users in {seconds:.1f} s", flush=True)
        raw = await raw_consume(bootstrap, topic, total)
        print(f"(a) raw consume: {raw:,.0f} events/s ({total / raw:.1f} s for the log)", flush=True)

        # A notification two thirds into the log, and its user (see benchmarks/projector.events).
        last = total // 3
        nid = derived_id("audit", "n", str(last))
        user = f"user-{(last * 7919) % args.users}"
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            url: str = stack.enter_context(scratch_database())
            env = herald_env(bootstrap, prefix, url, "unused")
            # Bytecode cached as in a deployed image (this machine's shells set PYTHONDONTWRITEBYTECODE,
            # which makes every process compile its imports: seconds per command under load).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            timed(["why", "--help"], env)  # compile and cache once, untimed
            out = Path(tmp) / "log.jsonl"
            export_s, _ = timed(["audit", "export", "--all", "-o", str(out)], env)
            size = out.stat().st_size
            print(f"(b) export: {export_s:.1f} s ({total / export_s:,.0f} events/s), {size / 1e6:,.0f} MB", flush=True)
            verify_s, said = timed(["audit", "verify", str(out)], env)
            print(f"(c) verify: {verify_s:.1f} s ({total / verify_s:,.0f} events/s): {said.strip()}", flush=True)
            os.unlink(out)
            as_of = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            inbox_s, said = timed(["inbox", user, "--as-of", as_of], env)
            inner = await inbox_in_process(env, user, as_of)
            print(f"(d) inbox {user}: {inbox_s:.2f} s as a process, {inner:.2f} s in-process", flush=True)
            print("    " + said.splitlines()[0], flush=True)
            scan_s, _ = timed(["why", nid], {**env, "HERALD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"})
            print(f"(e) why without read models (full scan): {scan_s:.2f} s", flush=True)
            if not args.no_rebuild:
                rebuild_s, _ = timed(["rebuild"], env)
                print(f"    (rebuild into the scratch database: {rebuild_s:.0f} s)", flush=True)
                why_s, said = timed(["why", nid], env)
                inner = await why_in_process(env, nid)
                print(f"(e) why with read models: {why_s:.2f} s as a process, {inner:.2f} s in-process", flush=True)
                print("    " + said.splitlines()[1], flush=True)


if __name__ == "__main__":
    asyncio.run(main())
