"""``herald dev``: the whole engine in one process on embedded defaults."""

from __future__ import annotations

import logging
from pathlib import Path

from api.auth import SCOPE_ADMIN, mint_token
from engine.settings import Settings
from herald.broker import embedded_broker
from herald.cli import _wait_for_signal
from herald.dev_channels import dev_channels
from herald.stack import run_stack

log = logging.getLogger("herald.dev")

DEV_DIR = Path(".herald-dev")


def dev_settings(settings: Settings) -> Settings:
    """Settings of the embedded stack: local broker, SQLite, in-process presence, short group timeouts."""
    DEV_DIR.mkdir(exist_ok=True)
    changes: dict[str, object] = {
        "kafka_bootstrap": f"127.0.0.1:{settings.dev_kafka_port}",
        "dev_mode": True,
        # One process: /metrics on the API port (an internal metrics port is for production roles).
        "metrics_port": 0,
        # Tansu: batches of one record keep end offsets right; short timeouts keep group joins fast.
        "producer_max_batch_size": 1,
        "kafka_session_timeout": 6.0,
        "kafka_heartbeat_interval": 1.0,
        "kafka_rebalance_timeout": 6.0,
        # Tansu holds a fetch for the full wait even when data arrives: keep hops short.
        "kafka_fetch_max_wait_ms": 20,
    }
    if settings.database_url == Settings().database_url:
        # A fresh broker has an empty log, so the read models must start empty too.
        db = DEV_DIR / f"herald-{settings.http_port}.db"
        db.unlink(missing_ok=True)
        changes["database_url"] = f"sqlite+aiosqlite:///{db}"
    return settings.replace(**changes)


async def run_dev(settings: Settings) -> None:
    """Start broker and every role; run until SIGINT/SIGTERM."""
    settings = dev_settings(settings)
    async with (
        embedded_broker(settings.dev_kafka_port),
        dev_channels(settings, DEV_DIR / "apns") as channels,
        run_stack(channels.settings) as stack,
    ):
        base = f"http://{settings.http_host}:{stack.http_port}"
        token = mint_token(settings, "alice")
        admin = mint_token(settings, "ops", scopes=(SCOPE_ADMIN,))
        log.info("herald dev ready", extra={"api": base, "broker": settings.kafka_bootstrap})
        print(
            f"\nHerald dev stack is up.\n"
            f"  API and demo page: {base}/\n"
            f"  Kafka broker:      {settings.kafka_bootstrap}\n"
            f"  WebSocket:         ws://{settings.http_host}:{stack.http_port}/ws/notifications?token=<JWT>\n"
            f"  Token for alice:   {token}\n"
            f"  Operator console:  {base}/console  (admin token for ops: {admin})\n"
            f"  (more tokens: uv run herald token USER)\n" + "".join(f"{line}\n" for line in channels.lines),
            flush=True,
        )
        await _wait_for_signal()
