"""``herald dev``'s off-line channels: a local SMTP capture server and the APNs emulator.

Started only for channels the user has not configured (no ``HERALD_SMTP_HOST``, no
APNs key), and the settings are pointed at them, so email and push work out of the box
and every message shows up in the log (``mail received``) or the emulator's inspection API.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from herald.smtp_capture import SmtpCapture

log = logging.getLogger("herald.dev")

DEV_KEY_ID, DEV_TEAM_ID, DEV_TOPIC = "HERALDDEV1", "HERALDTEAM", "dev.herald.app"


@dataclass
class DevChannels:
    """What was started, and the settings pointed at it."""

    settings: Settings
    smtp: SmtpCapture | None = None
    apns: ApnsEmulator | None = None
    lines: list[str] = field(default_factory=list)
    """Lines for the start-up banner."""


@contextlib.asynccontextmanager
async def dev_channels(settings: Settings, cert_dir: Path) -> AsyncIterator[DevChannels]:
    """Start the capture server and the emulator where needed; stop them on exit."""
    out = DevChannels(settings)
    async with contextlib.AsyncExitStack() as exits:
        if not settings.smtp_host:
            out.smtp = await exits.enter_async_context(SmtpCapture(port=settings.dev_smtp_port))
            out.settings = out.settings.replace(smtp_host=out.smtp.host, smtp_port=out.smtp.port, smtp_tls="none")
            out.lines.append(f"  SMTP capture:      {out.smtp.host}:{out.smtp.port} (received mail is logged)")
        if not (settings.apns_key or settings.apns_key_path):
            private_pem, public_pem = generate_signing_key()
            emulator = ApnsEmulator(
                port=settings.dev_apns_port,
                inspect_port=settings.dev_apns_inspect_port,
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
        yield out
