"""WebSocket gateway: idle connections per process (RSS per connection) and fan-out frames/s.

Two servers, same run, same clients, each in its own OS process:
- **herald**: a real ``herald api`` process (Redis presence and connection limit, replay
  query on connect, bounded send queues, a ``delivery.succeeded`` receipt to Kafka per
  frame written);
- **bare**: a bare aiohttp WebSocket server loop (a dict of sockets by user, frames from
  the same Redis pub/sub channel written straight to the socket) -- the floor.

Idle: ``--idle`` connections (one per user) from ``--procs`` client processes spread over
loopback source addresses 127.0.0.2.., RSS of the server process before and after.
Fan-out: ``--fanout`` connected users, ``--rounds`` notification frames each published to
the server's Redis channel (as the WebSocket sink does) as fast as Redis takes them;
frames/s = frames received by the clients / (last frame received - first publish).

    uv run python benchmarks/websocket.py [--idle 50000] [--fanout 5000] [--rounds 4] [--procs 4]

The file-descriptor limit is raised to the hard limit in every process; when the hard
limit is below the target (no CAP_SYS_RESOURCE), the idle target is capped and the
report says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on the path, where a module could shadow
# the standard library when run as a script: use the project root instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from api.auth import mint_token
from benchmarks.common import broker, scratch_database
from engine.presence import gateway_channel
from engine.settings import Settings
from herald.broker import free_port

REDIS_URL = os.environ.get("HERALD_BENCH_REDIS", "redis://127.0.0.1:6379/14")
BENCH_JWT_SECRET = "herald-bench-secret-not-the-dev-one-0123456789"  # noqa: S105 - benchmark configuration
CONNECT_CONCURRENCY = 64  # per client process: keeps the server's connect path (DB, Kafka) unsaturated


def raise_nofile(want: int = 1 << 20) -> tuple[int, int]:
    """Raise this process's open-file limit as far as allowed; return ``(soft, hard)``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # needs CAP_SYS_RESOURCE above hard
        return want, want
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard, hard


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# --- the bare baseline server ------------------------------------------------------------


async def serve_bare(port: int, redis_url: str, channel: str) -> None:
    """Bare aiohttp WebSocket server: sockets by ``?user=``, frames from a Redis channel."""
    sockets: dict[str, set[web.WebSocketResponse]] = {}

    async def handle(request: web.Request) -> web.WebSocketResponse:
        user = request.query["user"]
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        sockets.setdefault(user, set()).add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            sockets.get(user, set()).discard(ws)
        return ws

    async def listen() -> None:
        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            payload = json.loads(message["data"])
            text = json.dumps(payload["frame"], separators=(",", ":"))
            for ws in list(sockets.get(payload["user_id"], ())):
                await ws.send_str(text)

    app = web.Application()
    app.router.add_get("/ws", handle)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    listener = asyncio.create_task(listen())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    listener.cancel()
    await runner.cleanup()


# --- client processes ----------------------------------------------------------------------


def client_main(pipe: Connection, urls: list[tuple[str, str]], source_ip: str, first_frame: bool) -> None:
    """A client process: connect every ``(user, url)`` from ``source_ip``, then obey the parent.

    ``first_frame``: a connection counts once its first frame arrived (Herald's end of replay).
    """
    raise_nofile()
    asyncio.run(_client_loop(pipe, urls, source_ip, first_frame))


async def _client_loop(pipe: Connection, urls: list[tuple[str, str]], source_ip: str, first_frame: bool) -> None:
    received = 0
    first_at = last_at = 0.0
    target = 0
    reached = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal received, first_at, last_at
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith('{"type":"notification"'):
                now = time.time()
                received += 1
                first_at = first_at or now
                last_at = now
                if target and received >= target:
                    reached.set()

    connector = aiohttp.TCPConnector(limit=0, local_addr=(source_ip, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        errors: list[str] = []

        async def connect(url: str) -> None:
            async with gate:
                try:
                    ws = await session.ws_connect(url, autoping=True, max_msg_size=0)
                    if first_frame:
                        await ws.receive(timeout=60)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    errors.append(repr(exc))
                    return
                sockets.append(ws)
                readers.append(asyncio.create_task(reader(ws)))

        readers: list[asyncio.Task[None]] = []
        started = time.monotonic()
        await asyncio.gather(*(connect(url) for _, url in urls))
        pipe.send(("connected", len(sockets), len(errors), errors[:1], time.monotonic() - started))
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command[0] == "expect":
                target, received, first_at, last_at = command[1], 0, 0.0, 0.0
                reached.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reached.wait(), command[2])
                pipe.send(("received", received, first_at, last_at))
            elif command[0] == "close":
                for task in readers:
                    task.cancel()
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
                pipe.send(("closed",))
                return


@dataclass
class Clients:
    """The client processes of one measurement."""

    procs: list[Any]  # multiprocessing (spawn context) processes
    pipes: list[Connection]

    def ask(self, command: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]


@contextlib.contextmanager
def clients(
    urls: list[tuple[str, str]], procs: int, first_frame: bool
) -> Iterator[tuple[Clients, list[tuple[Any, ...]]]]:
    """Spread ``urls`` over ``procs`` processes (source addresses 127.0.0.2..); yield once all connected."""
    ctx = mp.get_context("spawn")
    group = Clients([], [])
    for i in range(procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=client_main, args=(child, urls[i::procs], f"127.0.0.{2 + i}", first_frame), daemon=True
        )
        proc.start()
        group.procs.append(proc)
        group.pipes.append(parent)
    try:
        yield group, [pipe.recv() for pipe in group.pipes]
    finally:
        with contextlib.suppress(OSError, EOFError):
            group.ask(("close",))
        for proc in group.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process under test."""

    kind: str
    pid: int
    port: int
    channel: str
    url: Any  # (user) -> url
    settings: Settings | None = None


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("server not ready after 90 s")


API_TREE: Path | None = None
"""``--api-tree``: run the herald server from this checkout of the project."""


def _spawn(command: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile
        )


@contextlib.asynccontextmanager
async def server(kind: str, bootstrap: str, database_url: str) -> AsyncIterator[Server]:
    """Start a ``herald`` or ``bare`` server process on a free port."""
    port = free_port()
    tag = uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    settings = None
    if kind.startswith("herald"):
        settings = Settings.from_env(
            {},
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            redis_url=REDIS_URL,
            topic_prefix=f"wsb{tag}.",
            node_id=f"bench-{tag}",
            http_port=port,
            jwt_secret=BENCH_JWT_SECRET,
        )
        env.update(
            HERALD_KAFKA_BOOTSTRAP=bootstrap,
            HERALD_DATABASE_URL=database_url,
            HERALD_REDIS_URL=REDIS_URL,
            HERALD_TOPIC_PREFIX=settings.topic_prefix,
            HERALD_NODE_ID=settings.node_id,
            HERALD_HTTP_PORT=str(port),
            HERALD_LOG_LEVEL="WARNING",
            HERALD_JWT_SECRET=BENCH_JWT_SECRET,  # `herald api` refuses the dev secret
        )
        if kind == "herald-1MiB":
            # Receipts are one Kafka record per frame written: a larger producer batch than
            # Kafka's 16 KB default lets them keep up with fan-out (see docs/benchmarks.md).
            env["HERALD_PRODUCER_MAX_BATCH_SIZE"] = str(1 << 20)
        channel = gateway_channel(settings.topic_prefix, settings.node_id)
        command = [sys.executable, "-m", "herald.cli", "api"]
        if os.environ.get("HERALD_BENCH_PROFILE"):  # cProfile the gateway: where does a frame's time go?
            command = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                os.environ["HERALD_BENCH_PROFILE"],
                "-m",
                "herald.cli",
                "api",
            ]
        base = f"ws://127.0.0.1:{port}/ws/notifications?token="
        secret_settings = settings

        def url(user: str) -> str:
            return base + mint_token(secret_settings, user)
    else:
        channel = f"wsbare{tag}"
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "websocket.py"),
            "--serve-bare",
            str(port),
            REDIS_URL,
            channel,
        ]

        def url(user: str) -> str:
            return f"ws://127.0.0.1:{port}/ws?user={user}"

    cwd = ROOT
    if kind.startswith("herald") and API_TREE is not None:
        cwd = API_TREE
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(API_TREE), env.get("PYTHONPATH", "")) if p)
    proc = _spawn(command, env, ROOT / "test-output" / f"bench-ws-{kind}.log", cwd)
    try:
        await _wait_ready(port, proc)
        yield Server(kind, proc.pid, port, channel, url, settings)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- measurements ---------------------------------------------------------------------------


async def measure_idle(kind: str, n: int, procs: int, bootstrap: str, database_url: str) -> dict[str, Any]:
    async with server(kind, bootstrap, database_url) as srv:
        await asyncio.sleep(1)
        before = rss_kib(srv.pid)
        users = [(f"idle{i}", srv.url(f"idle{i}")) for i in range(n)]
        with clients(users, procs, kind.startswith("herald")) as (_, replies):
            connected = sum(r[1] for r in replies)
            failed = sum(r[2] for r in replies)
            seconds = max(r[4] for r in replies)
            await asyncio.sleep(3)  # let the server settle (GC, presence refresh)
            after = rss_kib(srv.pid)
            errors = [e for r in replies for e in r[3]]
        return {
            "kind": kind,
            "connected": connected,
            "failed": failed,
            "errors": errors[:1],
            "connect_per_s": connected / seconds if seconds else 0.0,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024,
            "kib_per_conn": (after - before) / connected if connected else float("nan"),
        }


def _frame(user: str, i: int) -> dict[str, Any]:
    return {
        "type": "notification",
        "notification": {
            "id": str(uuid.uuid4()),
            "user_id": user,
            "title": f"Fan-out {i}",
            "body": "x" * 200,
            "priority": "high",
            "channels": ["websocket"],
            "category": "bench",
            "data": {"i": i},
            "status": "delivered",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "read_at": None,
        },
    }


async def measure_fanout(
    kind: str, n: int, rounds: int, procs: int, bootstrap: str, database_url: str
) -> dict[str, Any]:
    async with server(kind, bootstrap, database_url) as srv:
        users = [(f"fan{i}", srv.url(f"fan{i}")) for i in range(n)]
        with clients(users, procs, kind.startswith("herald")) as (group, replies):
            connected = sum(r[1] for r in replies)
            per_proc = [len(users[i::procs]) * rounds for i in range(procs)]
            redis = Redis.from_url(REDIS_URL)
            messages = [
                json.dumps({"user_id": user, "frame": _frame(user, r)}, separators=(",", ":"))
                for r in range(rounds)
                for user, _ in users
            ]
            for pipe, expected in zip(group.pipes, per_proc, strict=True):
                pipe.send(("expect", expected, 120))
            await asyncio.sleep(0.5)  # the clients are waiting
            started = time.time()
            for start in range(0, len(messages), 1000):
                async with redis.pipeline(transaction=False) as batch:
                    for message in messages[start : start + 1000]:
                        batch.publish(srv.channel, message)
                    await batch.execute()
            published = time.time()
            results = [pipe.recv() for pipe in group.pipes]
            await redis.aclose()
        received = sum(r[1] for r in results)
        last = max(r[3] for r in results)
        return {
            "kind": kind,
            "connected": connected,
            "frames": len(messages),
            "received": received,
            "publish_s": published - started,
            "seconds": last - started,
            "frames_per_s": received / (last - started) if last > started else 0.0,
        }


async def main(args: argparse.Namespace) -> None:
    _, hard = raise_nofile()
    idle = min(args.idle, hard - 500)
    print(f"open-file limit: {hard} (target {args.idle} idle connections -> measuring {idle})")
    print(f"cpus: {os.cpu_count()}, client processes: {args.procs}, source addresses 127.0.0.2-{args.procs + 1}")
    async with broker() as bootstrap:
        database_url: str
        with scratch_database() as database_url:
            print("\n## Idle connections held by one server process")
            header = (
                f"{'connected':>10} {'failed':>7} {'conn/s':>8} {'RSS before':>11} {'RSS after':>10} {'KiB/conn':>9}"
            )
            print(f"{'server':8} {header}")
            for kind in ("bare", "herald"):
                r = await measure_idle(kind, idle, args.procs, bootstrap, database_url)
                print(
                    f"{kind:8} {r['connected']:>10} {r['failed']:>7} {r['connect_per_s']:>8.0f} "
                    f"{r['rss_before_mib']:>8.1f} MiB {r['rss_after_mib']:>6.1f} MiB {r['kib_per_conn']:>9.1f}"
                    + (f"  first error: {r['errors'][0]}" if r["errors"] else "")
                )
            print(f"\n## Fan-out: {args.rounds} frames to each of {args.fanout} connected users")
            print(f"{'server':12} {'connected':>10} {'frames':>7} {'received':>9} {'seconds':>8} {'frames/s':>9}")
            rates = {}
            for kind in ("bare", "herald", "herald-1MiB"):
                r = await measure_fanout(kind, args.fanout, args.rounds, args.procs, bootstrap, database_url)
                rates[kind] = r["frames_per_s"]
                print(
                    f"{kind:12} {r['connected']:>10} {r['frames']:>7} {r['received']:>9} "
                    f"{r['seconds']:>8.2f} {r['frames_per_s']:>9.0f}"
                )
            if rates.get("bare"):
                for kind in ("herald", "herald-1MiB"):
                    print(f"{kind} / bare fan-out: {rates[kind] / rates['bare']:.2f}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=50_000)
    parser.add_argument("--fanout", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--serve-bare", nargs=3, metavar=("PORT", "REDIS_URL", "CHANNEL"))
    parser.add_argument(
        "--api-tree",
        metavar="DIR",
        type=lambda path: Path(path).resolve(),
        help="run the herald server from this checkout of the project (git archive <commit> | tar -x -C DIR)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    options = _args()
    API_TREE = options.api_tree
    if options.serve_bare:
        raise_nofile()
        asyncio.run(serve_bare(int(options.serve_bare[0]), options.serve_bare[1], options.serve_bare[2]))
    else:
        asyncio.run(main(options))
