"""A local SMTP server that keeps what it receives: ``herald dev``'s mailbox and the tests' SMTP server.

A real ``aiosmtpd`` server on the caller's event loop. It logs and keeps every message
(parsed); ``fail_next`` makes it answer the next messages with a given reply (e.g.
``451 4.3.0 try again later`` or ``550 5.1.1 no such user``) at ``RCPT`` or ``DATA``
time, which is how the tests produce real SMTP failures.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("herald.smtp")


@dataclass(frozen=True, slots=True)
class CapturedMail:
    """One message accepted by the capture server."""

    mail_from: str
    """Envelope sender (``MAIL FROM``)."""
    rcpt_tos: tuple[str, ...]
    """Envelope recipients (``RCPT TO``)."""
    message: EmailMessage
    """The parsed message (headers, text and HTML parts)."""
    queue_id: str
    """The id the server answered ``250`` with."""
    received_at: datetime
    """When it arrived."""

    @property
    def subject(self) -> str:
        """The ``Subject`` header."""
        return str(self.message["Subject"])

    def body(self, subtype: str = "plain") -> str:
        """The ``text/<subtype>`` part's content with ``\n`` line ends (empty if there is none)."""
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]

    def summary(self) -> dict[str, Any]:
        """JSON-able view (for the dev page and the log)."""
        return {
            "queue_id": self.queue_id,
            "from": self.mail_from,
            "to": list(self.rcpt_tos),
            "subject": self.subject,
            "message_id": self.message["Message-ID"],
            "text": self.body("plain"),
            "received_at": self.received_at.isoformat(),
        }


@dataclass
class _Fault:
    reply: str
    stage: str
    count: int


@dataclass
class SmtpCapture:
    """The capture server. ``await start()`` / ``await stop()`` or ``async with``."""

    host: str = "127.0.0.1"
    port: int = 0
    max_kept: int = 10_000
    """Oldest messages are forgotten beyond this many."""
    received: list[CapturedMail] = field(default_factory=list)
    """Messages accepted, oldest first."""
    refused: list[str] = field(default_factory=list)
    """Replies given instead of accepting a message (injected faults), in order."""
    _faults: list[_Fault] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _sessions: weakref.WeakSet[SMTP] = field(default_factory=weakref.WeakSet)
    _arrived: asyncio.Condition | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> SmtpCapture:
        """Listen on ``host:port`` (``port`` is the bound one afterwards)."""
        loop = asyncio.get_running_loop()
        if logging.getLogger("mail.log").level == logging.NOTSET:
            # aiosmtpd logs every SMTP command at INFO; our own "mail received" line is enough.
            logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._arrived = asyncio.Condition()
        handler = _Handler(self)

        def session() -> SMTP:
            protocol = SMTP(handler, hostname="herald-capture", ident="Herald SMTP capture")
            self._sessions.add(protocol)
            return protocol

        self._server = await loop.create_server(session, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMTP capture listening", extra={"address": f"{self.host}:{self.port}"})
        return self

    async def stop(self) -> None:
        """Stop listening and close open sessions."""
        if self._server is not None:
            self._server.close()
            for protocol in self._sessions:  # Server.close_clients() is Python 3.13+
                if protocol.transport is not None:
                    protocol.transport.close()
            self._sessions.clear()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpCapture:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(self, reply: str, *, count: int = 1, stage: str = "data") -> None:
        """Answer the next ``count`` messages with ``reply`` (e.g. ``"451 4.3.0 later"``) at ``rcpt`` or ``data``."""
        if stage not in {"rcpt", "data"}:
            raise ValueError("stage must be 'rcpt' or 'data'")
        self._faults.append(_Fault(reply, stage, count))

    def clear(self) -> None:
        """Forget received messages, refusals and pending faults."""
        self.received.clear()
        self.refused.clear()
        self._faults.clear()

    def to(self, address: str) -> list[CapturedMail]:
        """Messages for ``address``."""
        return [m for m in self.received if address.lower() in (a.lower() for a in m.rcpt_tos)]

    async def wait_for(self, count: int = 1, *, to: str | None = None) -> list[CapturedMail]:
        """Until ``count`` messages (for ``to``, if given) have arrived; bound it with ``asyncio.timeout``."""
        assert self._arrived is not None, "not started"  # noqa: S101 - programming error
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self._matching(to)) >= count)
            return self._matching(to)

    def _matching(self, to: str | None) -> list[CapturedMail]:
        return self.received if to is None else self.to(to)

    def _take(self, stage: str) -> str | None:
        for fault in self._faults:
            if fault.stage == stage and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                self.refused.append(fault.reply)
                log.info("SMTP capture refused a message", extra={"reply": fault.reply})
                return fault.reply
        return None

    async def _keep(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        queue_id = f"C{next(self._ids):08d}"
        mail = CapturedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=parsed,  # type: ignore[arg-type]
            queue_id=queue_id,
            received_at=datetime.now(UTC),
        )
        self.received.append(mail)
        del self.received[: -self.max_kept]
        log.info("mail received", extra={"to": list(mail.rcpt_tos), "subject": mail.subject, "queue_id": queue_id})
        assert self._arrived is not None  # noqa: S101 - started before any session
        async with self._arrived:
            self._arrived.notify_all()
        return queue_id


class _Handler:
    """aiosmtpd handler: faults first, then accept."""

    def __init__(self, capture: SmtpCapture) -> None:
        self._capture = capture

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self._capture._take("rcpt")
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._capture._take("data")
        if fault is not None:
            return fault
        queue_id = await self._capture._keep(envelope)
        return f"250 2.0.0 Ok: queued as {queue_id}"
