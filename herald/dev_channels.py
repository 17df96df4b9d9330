"""``herald dev``'s off-line channels: a stand-in for every channel the user has not configured.

Email gets a local SMTP capture server, APNs the APNs emulator, webhook a local
receiver that checks signatures; each is started only when its settings section is
empty (no ``HERALD_SMTP_HOST``, no APNs key, no ``HERALD_WEBHOOK_SECRET``), and the
settings are pointed at it, so every channel works out of the box and every message
shows up in the log (``mail received``, ``webhook received``) or the emulator's
inspection API. The stand-ins are keyed by the channel names of ``engine.channels``;
a channel declared there without an entry here fails at import.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.channels import REGISTRY
from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from herald.smtp_capture import SmtpCapture
from herald.webhook_capture import WebhookCapture
from streams.channel_registry import SINKS

log = logging.getLogger("herald.dev")

DEV_KEY_ID, DEV_TEAM_ID, DEV_TOPIC = "HERALDDEV1", "HERALDTEAM", "dev.herald.app"


@dataclass
class DevChannels:
    """What was started, and the settings pointed at it."""

    settings: Settings
    smtp: SmtpCapture | None = None
    apns: ApnsEmulator | None = None
    webhook: WebhookCapture | None = None
    lines: list[str] = field(default_factory=list)
    """Lines for the start-up banner."""


StandIn = Callable[[DevChannels, contextlib.AsyncExitStack, Path], Awaitable[None]]
"""Starts one channel's stand-in on the exit stack and points ``DevChannels.settings`` at it."""


async def _smtp(out: DevChannels, exits: contextlib.AsyncExitStack, cert_dir: Path) -> None:
    out.smtp = await exits.enter_async_context(SmtpCapture(port=out.settings.dev_smtp_port))
    out.settings = out.settings.replace(smtp_host=out.smtp.host, smtp_port=out.smtp.port, smtp_tls="none")
    out.lines.append(f"  SMTP capture:      {out.smtp.host}:{out.smtp.port} (received mail is logged)")


async def _apns(out: DevChannels, exits: contextlib.AsyncExitStack, cert_dir: Path) -> None:
    private_pem, public_pem = generate_signing_key()
    emulator = ApnsEmulator(
        port=out.settings.dev_apns_port,
        inspect_port=out.settings.dev_apns_inspect_port,
        keys={DEV_KEY_ID: (DEV_TEAM_ID, public_pem)},
        topics=[DEV_TOPIC],
        cert_dir=cert_dir,
    )
    out.apns = await exits.enter_async_context(emulator)
    host, port = emulator.address
    out.settings = out.settings.replace(
        apns_key=private_pem,
        apns_key_id=DEV_KEY_ID,
        apns_team_id=DEV_TEAM_ID,
        apns_topic=DEV_TOPIC,
        apns_server=f"{host}:{port}",
        apns_ca_path=emulator.ca_path,
        apns_sandbox=True,  # explicit, as with any APNs key; the emulator stands in for the sandbox
    )
    out.lines.append(
        f"  APNs emulator:     {host}:{port} (pushes: curl http://{host}:{emulator.inspect_port}/received)"
    )


async def _webhook(out: DevChannels, exits: contextlib.AsyncExitStack, cert_dir: Path) -> None:
    secret = secrets.token_urlsafe(32)  # per run: the local receiver is the only one that knows it
    out.webhook = await exits.enter_async_context(WebhookCapture(secret))
    out.settings = out.settings.replace(webhook_secret=secret, webhook_allow_loopback_http=True)
    out.lines.append(
        f"  Webhook receiver:  {out.webhook.url}/<any path> as a contact's webhook_url"
        f" (posts: curl {out.webhook.url}/received)"
    )


STAND_INS: dict[str, StandIn | None] = {"websocket": None, "email": _smtp, "apns": _apns, "webhook": _webhook}
"""Dev stand-in of each channel (``None``: the WebSocket gateway is part of ``herald dev`` itself)."""

if set(STAND_INS) != set(REGISTRY.names):
    raise RuntimeError(f"herald.dev_channels.STAND_INS {sorted(STAND_INS)} != channels {sorted(REGISTRY.names)}")


@contextlib.asynccontextmanager
async def dev_channels(settings: Settings, cert_dir: Path) -> AsyncIterator[DevChannels]:
    """Start the stand-in of every channel not configured in ``settings``; stop them on exit."""
    out = DevChannels(settings)
    async with contextlib.AsyncExitStack() as exits:
        for name in REGISTRY.names:
            start = STAND_INS[name]
            if start is not None and not SINKS[name].configured(settings):
                await start(out, exits, cert_dir)
        yield out
