"""Email channel: an SMTP adapter of the ``Sink`` port (``streams.delivery_attempt``).

The recipient is the request's ``email`` or else the user's contact address
(``contact.updated``, from the device registry's table); a contact whose channel
preferences leave out email gets none. One SMTP connection is kept open and reused;
it is dropped after any transport trouble and opened again by the next send.

Outcomes: 2xx -> the ``Message-ID`` is the provider id; a 4xx reply, a refused or
lost connection, a timeout -> retriable; a 5xx reply -> permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib
import faust

from engine.retry import DeliveryError
from engine.settings import Settings
from schemas.events import NotificationAccepted
from streams.device_registry import DeviceRegistry
from streams.email_templates import render
from streams.topics import Topics

log = logging.getLogger(__name__)


def message_id(notification_id: str, recipient: str, domain: str) -> str:
    """Stable ``Message-ID`` of one notification to one address: a retry resends the same message."""
    digest = hashlib.blake2b(recipient.lower().encode(), digest_size=6).hexdigest()
    return f"<{notification_id}.{digest}@{domain}>"


def build_message(accepted: NotificationAccepted, recipient: str, sender: str) -> EmailMessage:
    """The MIME message (plain text with an HTML alternative) of ``accepted`` for ``recipient``."""
    rendered = render(accepted)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "herald.invalid"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(accepted.requested_at.timestamp(), usegmt=True)
    msg["Message-ID"] = message_id(accepted.notification_id, recipient, domain)
    msg["X-Herald-Notification-Id"] = accepted.notification_id
    msg["X-Herald-Priority"] = accepted.priority
    if accepted.priority == "high":
        msg["Importance"] = "high"
    if accepted.category:
        msg["X-Herald-Category"] = " ".join(accepted.category.split())
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def classify(exc: Exception) -> DeliveryError:
    """A ``DeliveryError`` for what ``aiosmtplib`` raised: 4xx and transport trouble retriable, 5xx not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return DeliveryError(f"recipient refused: {text}", retriable=all(400 <= c < 500 for c in codes))
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
        return DeliveryError(f"SMTP {exc.code} {exc.message}", retriable=exc.code < 500)
    return DeliveryError(f"SMTP transport: {type(exc).__name__}: {exc}", retriable=True)


class EmailSink:
    """Sends notifications by SMTP; ``Sink`` of the ``email`` channel."""

    channel = "email"

    def __init__(self, settings: Settings, registry: DeviceRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock: asyncio.Lock | None = None

    def bind(self, app: faust.App, topics: Topics, settings: Settings) -> None:
        """Declare the registry's tables and agent on ``app``."""
        self.registry.bind(app, topics, settings.topic_partitions)

    async def targets(self, accepted: NotificationAccepted) -> Sequence[str]:
        """The request's address, else the contact's, unless the user turned email off."""
        if accepted.email:
            return [accepted.email]
        contact = self.registry.contact(accepted.user_id)
        if contact is None or not contact.get("email") or "email" not in contact.get("channels", ()):
            return []
        return [str(contact["email"])]

    async def send(self, accepted: NotificationAccepted, target: str) -> str | None:
        """Hand the email to the SMTP server; return its ``Message-ID``."""
        msg = build_message(accepted, target, self.settings.smtp_from)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                smtp = await self._connection()
                await smtp.send_message(msg)
            except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                # The client has reset the transaction; the connection stays usable (or, after
                # a 421, is seen as closed by the next send).
                raise classify(exc) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self.close()
                raise classify(exc) from exc
            except asyncio.CancelledError:
                # Cancelled mid-dialogue (the delivery timeout): the connection's state is unknown.
                self._abandon()
                raise
        return str(msg["Message-ID"])

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.settings
        context = ssl.create_default_context(cafile=s.smtp_ca_path or None) if s.smtp_tls != "none" else None
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            tls_context=context,
            timeout=s.smtp_timeout_seconds,
        )
        await smtp.connect()
        self._smtp = smtp
        return smtp

    def _abandon(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def close(self) -> None:
        """Say QUIT and drop the connection (idempotent)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                log.info("SMTP connection closed uncleanly", extra={"error": str(exc)})
                smtp.close()
