"""APNs sends/s: Herald's APNs sink (aioapns) next to a raw h2 client, same emulator, same run.

    uv run python -m benchmarks.apns [--count 5000] [--concurrency 100]

Serial: one push at a time (the delivery agent with ``HERALD_APNS_MAX_IN_FLIGHT=1``).
Concurrent: ``--concurrency`` pushes in flight (sink sends gathered; raw h2 streams
multiplexed on one connection), as the delivery agent sends by default (100 in flight).
The raw client does the least possible per push (pre-built headers, one JWT), so the
ratio is the cost of the sink: payload building and checks, aioapns and its pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from schemas.events import NotificationAccepted
from streams.apns_sink import ApnsSink
from streams.device_registry import DeviceRegistry

TEAM_ID, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.bench"


class RawH2:
    """A bare HTTP/2 client: one TLS connection, pre-built headers."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, token: str) -> None:
        self.host, self.port, self.context, self.token = host, port, context, token
        self.conn = H2Connection(H2Configuration(client_side=True))
        self.done: dict[int, asyncio.Future[int]] = {}
        self.status: dict[int, int] = {}

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.context)
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())
        self.pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    self.status[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamEnded | StreamReset):
                    fut = self.done.pop(event.stream_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(self.status.pop(event.stream_id, 0))
            self.writer.write(self.conn.data_to_send())

    async def push(self, device: str, body: bytes) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", self.host),
            (":path", f"/3/device/{device}"),
            ("authorization", f"bearer {self.token}"),
            ("apns-topic", TOPIC),
            ("apns-push-type", "alert"),
            ("apns-priority", "10"),
        ]
        self.conn.send_headers(stream, headers)
        self.conn.send_data(stream, body, end_stream=True)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.done[stream] = fut
        self.writer.write(self.conn.data_to_send())
        return await fut

    async def close(self) -> None:
        self.pump.cancel()
        self.writer.close()


async def measure(count: int, concurrency: int, send: Callable[[int], Awaitable[object]]) -> float:
    """Sends/s of ``count`` calls with ``concurrency`` in flight."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await send(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


def accepted(i: int) -> NotificationAccepted:
    return NotificationAccepted(
        notification_id=f"bench-{i}",
        user_id="bench",
        title="Flash sale",
        body="Everything -20% for an hour",
        priority="high",
        channels=("apns",),
        category="",
        data={},
        requested_at=datetime.now(UTC),
    )


async def main(count: int, concurrency: int) -> None:
    private_pem, public_pem = generate_signing_key()
    tokens = [secrets.token_hex(32) for _ in range(256)]
    async with ApnsEmulator(
        keys={KEY_ID: (TEAM_ID, public_pem)}, topics=[TOPIC], inspect_port=None, max_records=4 * count + 10
    ) as emulator:
        host, port = emulator.address
        settings = Settings(
            apns_key=private_pem,
            apns_key_id=KEY_ID,
            apns_team_id=TEAM_ID,
            apns_topic=TOPIC,
            apns_server=f"{host}:{port}",
            apns_ca_path=emulator.ca_path,
            apns_max_connections=1,
        )
        sink = ApnsSink(settings, DeviceRegistry())
        await sink.send(accepted(-1), tokens[0])  # connect outside the clock

        token = jwt.encode(
            {"iss": TEAM_ID, "iat": int(time.time())}, private_pem, algorithm="ES256", headers={"kid": KEY_ID}
        )
        raw = RawH2(host, port, emulator.client_ssl_context(), token)
        await raw.start()
        body = json.dumps({"aps": {"alert": {"title": "Flash sale", "body": "Everything -20% for an hour"}}}).encode()
        assert await raw.push(tokens[0], body) == 200

        rows = []
        for label, n in (("serial", 1), (f"{concurrency} in flight", concurrency)):
            sink_rate = await measure(count, n, lambda i: sink.send(accepted(i), tokens[i % len(tokens)]))
            raw_rate = await measure(count, n, lambda i: raw.push(tokens[i % len(tokens)], body))
            rows.append((label, sink_rate, raw_rate))
        bad = [r for r in emulator.received if r.status != 200]
        await raw.close()
        await sink.close()
    print(f"APNs: {count} pushes per cell against the emulator (one HTTP/2 connection each)")
    print(f"{'mode':<16}{'sink (aioapns) /s':>20}{'raw h2 /s':>12}{'sink/raw':>10}")
    for label, sink_rate, raw_rate in rows:
        print(f"{label:<16}{sink_rate:>20.0f}{raw_rate:>12.0f}{sink_rate / raw_rate:>10.2f}")
    print(f"non-200 answers: {len(bad)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.concurrency))
