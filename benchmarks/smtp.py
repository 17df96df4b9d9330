"""Email sends/s: Herald's email sink next to a raw aiosmtplib loop, same aiosmtpd server, same run.

    uv run python -m benchmarks.smtp [--count 2000]

Both keep one SMTP connection open and send one message at a time (an SMTP connection
carries one transaction at a time). The raw loop re-sends one pre-built message; the
sink renders the templates and builds the MIME message per send, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import aiosmtplib

from engine.settings import Settings
from herald.smtp_capture import SmtpCapture
from schemas.events import NotificationAccepted
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink, build_message


def accepted(i: int) -> NotificationAccepted:
    return NotificationAccepted(
        notification_id=f"bench-{i}",
        user_id="bench",
        title="Your weekly digest",
        body="Three new comments.\n" * 5,
        priority="medium",
        channels=("email",),
        category="digest",
        data={},
        requested_at=datetime.now(UTC),
    )


async def main(count: int) -> None:
    async with SmtpCapture(max_kept=10) as server:
        settings = Settings(smtp_host=server.host, smtp_port=server.port, smtp_tls="none")  # loopback capture
        sink = EmailSink(settings, DeviceRegistry())
        await sink.send(accepted(-1), "warm@example.test")
        start = time.perf_counter()
        for i in range(count):
            await sink.send(accepted(i), f"user{i}@example.test")
        sink_rate = count / (time.perf_counter() - start)
        await sink.close()

        message = build_message(accepted(0), "raw@example.test", settings.smtp_from)
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await smtp.connect()
        await smtp.send_message(message)
        start = time.perf_counter()
        for _ in range(count):
            await smtp.send_message(message)
        raw_rate = count / (time.perf_counter() - start)
        await smtp.quit()
    print(f"Email: {count} messages per cell to aiosmtpd on loopback (one connection, sequential)")
    print(f"{'sink /s':>10}{'raw aiosmtplib /s':>20}{'sink/raw':>10}")
    print(f"{sink_rate:>10.0f}{raw_rate:>20.0f}{sink_rate / raw_rate:>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    asyncio.run(main(parser.parse_args().count))
