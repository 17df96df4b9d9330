"""A pass-through Kafka protocol proxy that lets librdkafka clients (kcat) talk to Tansu.

Tansu 0.6 serialises the optional tagged fields of ``ApiVersions`` v3+ responses even
when they hold default values (Apache Kafka omits them); librdkafka 2.0 (Debian's kcat)
fails to parse that response and drops the connection. The proxy forwards every frame
untouched except ApiVersions responses, whose trailing tagged fields it removes. It
exists only in ``herald dev``; production talks to a real Kafka cluster directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

log = logging.getLogger(__name__)

API_VERSIONS = 18


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def strip_api_versions_tags(payload: bytes) -> bytes:
    """An ApiVersions v3+ response payload without its top-level tagged fields."""
    pos = 4 + 2  # correlation id (header v0 for ApiVersions), error code
    count, pos = _uvarint(payload, pos)
    for _ in range(max(0, count - 1)):
        pos += 6  # api key, min version, max version
        tags, pos = _uvarint(payload, pos)
        for _ in range(tags):
            _, pos = _uvarint(payload, pos)
            size, pos = _uvarint(payload, pos)
            pos += size
    pos += 4  # throttle time
    return payload[:pos] + b"\x00"


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class KafkaCompatProxy:
    """Listens on ``listen_port`` and forwards to the broker at ``upstream_port``."""

    def __init__(self, host: str, listen_port: int, upstream_port: int) -> None:
        self._host = host
        self._listen_port = listen_port
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start accepting client connections."""
        self._server = await asyncio.start_server(self._serve, self._host, self._listen_port)

    async def stop(self) -> None:
        """Stop accepting; open connections end with their peers."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self._host, self._upstream_port)
        except OSError:
            client_w.close()
            return
        pending: dict[int, tuple[int, int]] = {}

        async def upstream() -> None:
            while True:
                payload = await _read_frame(client_r)
                api_key, api_version, correlation = struct.unpack(">hhi", payload[:8])
                pending[correlation] = (api_key, api_version)
                up_w.write(_frame(payload))
                await up_w.drain()

        async def downstream() -> None:
            while True:
                payload = await _read_frame(up_r)
                correlation = struct.unpack(">i", payload[:4])[0]
                api_key, api_version = pending.pop(correlation, (-1, -1))
                if api_key == API_VERSIONS and api_version >= 3:
                    payload = strip_api_versions_tags(payload)
                client_w.write(_frame(payload))
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, up_w):
                writer.close()
