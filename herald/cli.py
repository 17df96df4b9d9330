"""The ``herald`` command: process roles, the embedded dev stack and tooling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import uvloop

from engine.settings import DEV_JWT_SECRET, PRIORITIES, ConfigError, Settings
from herald import (
    apns_emulator_command,
    audit_command,
    deadletters_command,
    inbox_command,
    logs,
    redeliver_command,
    simulate_command,
    verify_command,
    why_command,
)

log = logging.getLogger("herald")

SHUTDOWN_GRACE_SECONDS = 30.0
"""After a background task died, how long the role may take to stop before the process just exits (1)."""

PRODUCTION_ROLES = frozenset({"worker", "projector", "api"})
"""Roles that refuse to start with the dev secret or dev mode (``herald dev`` is the one that has them)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``herald`` console script."""
    parser = argparse.ArgumentParser(prog="herald", description="Event-sourced real-time notification engine on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="everything in one process: embedded broker, SQLite, API and demo page")
    worker = sub.add_parser("worker", help="stream agents (ingest, router, sinks)")
    worker.add_argument(
        "--priorities",
        default=None,
        help="ingest only these priorities, comma separated (e.g. high): HERALD_WORKER_PRIORITIES",
    )
    sub.add_parser("projector", help="event log -> read models")
    sub.add_parser("api", help="REST API and WebSocket gateway")
    rebuild = sub.add_parser(
        "rebuild", help="drop the read models and replay the event log into them (projector stopped)"
    )
    rebuild.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes the replay is split between, each replaying its own partitions (Postgres); default: the"
        " CPUs available, at most one per partition of the log; 1 replays in this process",
    )
    apns_emulator_command.add_parser(sub)
    audit_command.add_parser(sub)
    why_command.add_parser(sub)
    inbox_command.add_parser(sub)
    verify_command.add_parser(sub)
    simulate_command.add_parser(sub)
    redeliver_command.add_parser(sub)
    deadletters_command.add_parser(sub)
    token = sub.add_parser("token", help="print a JWT for USER signed with the configured secret")
    token.add_argument("user")
    token.add_argument("--scope", action="append", default=[], help="scope to grant (repeatable)")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "worker" and args.priorities is not None:
            settings = settings.replace(worker_priorities=args.priorities)
        if args.command == "dev" and tuple(settings.worker_priorities) != PRIORITIES:
            # The one worker of the dev stack: a subset would leave the other priorities unread.
            raise ConfigError("herald dev runs the only worker: HERALD_WORKER_PRIORITIES must name high, medium, low")
        if args.command in PRODUCTION_ROLES:
            # Imported here: the API's libraries (aiohttp, pyjwt) cost the tools ~0.3 s of start-up.
            from api.auth import refuse_dev_defaults

            refuse_dev_defaults(settings)
    except ConfigError as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "apns-emulator":
        logs.configure(settings.log_level)
        return apns_emulator_command.run(args)
    if args.command == "token":
        return _print_token(settings, args.user, tuple(args.scope), args.ttl)
    if args.command == "audit":
        return audit_command.run(args, settings)
    if args.command == "why":
        return why_command.run(args, settings)
    if args.command == "inbox":
        return inbox_command.run(args, settings)
    if args.command == "verify":
        return verify_command.run(args, settings)
    if args.command == "simulate":
        return simulate_command.run(args, settings)
    if args.command == "redeliver":
        return redeliver_command.run(args, settings)
    if args.command == "deadletters":
        return deadletters_command.run(args, settings)
    logs.configure(settings.log_level)
    if args.command == "rebuild":
        if args.processes is not None and args.processes < 1:
            print("herald: --processes must be at least 1", file=sys.stderr)
            return 2
        return _run_rebuild(settings, args.processes)
    if args.command == "dev":
        from herald.dev_parts import missing_message

        refusal = missing_message()
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
        from herald.dev import run_dev

        return _run(run_dev(settings))
    from herald.stack import run_stack

    command = args.command

    if settings.metrics_port and command == "api":  # an internal port; the API port then has no /metrics
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.http_host)
        log.info("metrics listening", extra={"port": settings.metrics_port})

    nice = {"worker": settings.worker_nice, "projector": settings.projector_nice}.get(command, 0)
    if nice:
        # Before any thread starts (Faust's consumer thread, the executors'): each inherits it.
        os.nice(nice)
        log.info(f"{command} niceness raised", extra={"niceness": os.nice(0)})

    async def role() -> int:
        roles = {"worker": command == "worker", "projector": command == "projector", "api": command == "api"}
        probes = None
        if settings.metrics_port and command != "api":
            from herald.role_http import RoleHttp

            probes = RoleHttp(settings, command)  # /metrics, /healthz, /readyz of a role without an API
            await probes.start()
        try:
            if command == "worker":
                # A new priority group starts where the group that ingested its priorities left off.
                from herald.startup import until_reachable
                from streams.app import take_over_request_offsets

                await until_reachable("broker", settings.kafka_bootstrap, lambda: take_over_request_offsets(settings))
            async with run_stack(
                settings, worker=roles["worker"], projector=roles["projector"], api=roles["api"]
            ) as stack:
                # What start-up allocated (modules, app objects) lives as long as the process:
                # moved out of the collector's reach, full collections (20-130 ms pauses, a tail
                # latency of high-priority requests) have far fewer objects to scan.
                gc.collect()
                gc.freeze()
                if probes is not None:
                    probes.attach(stack)
                failed = await _wait_for_signal_or(stack.supervisor.failed)
        finally:
            if probes is not None:
                await probes.stop()
        # A dead task (logged at ERROR by the supervisor): exit non-zero so compose or
        # Kubernetes restarts the role instead of leaving it alive but stuck.
        return 1 if failed else 0

    return _run(role())


def _print_token(settings: Settings, user: str, scopes: tuple[str, ...], ttl: int | None) -> int:
    from api.auth import mint_token

    try:
        token = mint_token(settings, user, scopes=scopes, ttl=ttl)
    except ValueError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    if settings.jwt_secret == DEV_JWT_SECRET:
        # Harmless (production roles refuse to start with this secret), but say so.
        print("herald: HERALD_JWT_SECRET is not set: this token works only with `herald dev`", file=sys.stderr)
    print(token)
    return 0


def _run_rebuild(settings: Settings, processes: int | None) -> int:
    """``herald rebuild``: 0 once done; 1 if a child of a parallel replay failed (the projector then
    refuses the read models until the next rebuild); 130/143 on Ctrl-C/SIGTERM (children stopped)."""
    from herald.progress import Progress
    from projections.database import create_engine
    from projections.rebuild import RebuildFailed, default_processes, fingerprint, rebuild

    async def run() -> None:
        # SIGTERM cancels the rebuild like Ctrl-C does, so that its child processes are stopped too.
        main = asyncio.current_task()
        if main is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        engine = create_engine(settings.database_url)
        try:
            bar = Progress("replaying the event log")
            indexes: list[Progress] = []  # after the replay (Postgres): its secondary indexes

            def indexing(built: int, total: int) -> None:
                if not indexes:
                    bar.close()  # the replay is over
                    indexes.append(Progress("building indexes"))
                indexes[0](built, total)

            applied = await rebuild(
                settings,
                engine,
                progress=bar,
                indexing=indexing,
                processes=processes or default_processes(),
                child_setup=functools.partial(logs.configure, settings.log_level),  # the same log lines
            )
            (indexes[0] if indexes else bar).close()
            print(f"replayed {applied} events; read-model checksum {await fingerprint(engine)}")
        finally:
            await engine.dispose()

    try:
        uvloop.run(run())
    except RebuildFailed as exc:
        print(f"herald rebuild: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("herald rebuild: interrupted; run it again", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("herald rebuild: terminated; run it again", file=sys.stderr)
        return 143
    return 0


async def _wait_for_signal_or(failed: asyncio.Event) -> bool:
    """Until SIGINT/SIGTERM (``False``) or ``failed`` is set (``True``, the shutdown then bounded)."""
    signalled = asyncio.ensure_future(_wait_for_signal())
    failure = asyncio.ensure_future(failed.wait())
    await asyncio.wait({signalled, failure}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (signalled, failure):
        waiter.cancel()
    if not failed.is_set():
        return False
    # A crashed role may not stop cleanly: after the grace period, leave anyway.
    watchdog = threading.Timer(SHUTDOWN_GRACE_SECONDS, os._exit, args=(1,))
    watchdog.daemon = True
    watchdog.start()
    return True


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")


def _run(coro: object) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        # uvloop: the same asyncio semantics, a faster event loop (every role is loop-bound).
        result: object = uvloop.run(coro)  # type: ignore[arg-type]
        return result if isinstance(result, int) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
