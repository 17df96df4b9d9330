"""Build aioapns clients, optionally pointed at a non-Apple server (the emulator).

aioapns has no "server address" option: the host it dials, verifies the
certificate for and sends as ``host`` all come from the ``APNS_SERVER`` /
``APNS_PORT`` class attributes of the protocol class its connection pool
instantiates.  To redirect it we give the pool a subclass carrying the
emulator's address, plus an SSL context that trusts the emulator's CA.

The protocol classes used here (for Apple's hosts too) also fix an aioapns
4.0 flow-control bug: it never acknowledges received DATA, so it never sends
WINDOW_UPDATE.  Every error response carries a JSON body, and after ~64 KB of
them (about 2,400 errors) on one connection the server may not send more, so
later error responses never complete and ``send_notification`` hangs.

They also make a push cheaper in CPU, which bounds a worker's push rate (issue 9):

- headers are built as bytes, already lower-case and valid, so h2 neither normalises nor
  validates them again; the ones that are the same on every push (method, host, topic,
  priority, push type, the provider token) are indexed in the HPACK table and cost a
  byte or two after the first push, the ones unique to a push (``:path`` with the device
  token, ``apns-id``, ``apns-expiration``, ``apns-collapse-id``) are sent as literals that
  are never indexed, so they do not evict the others. The provider token is indexed too,
  unlike h2's default for ``authorization``: HPACK only matches a whole value, and a
  signed JWT cannot be guessed whole, so indexing gives nothing away (RFC 7541, 7.1);
- literals are not Huffman-coded (pure-Python Huffman costs more CPU than the few bytes
  it saves on a device token or an id);
- the frames of every push issued in one turn of the event loop go out in one TLS write,
  with one refresh of aioapns' inactivity timer, instead of a write per push;
- a ``PushRequest`` carries its payload already serialised (the bytes the sink checked
  against Apple's size limit), so the payload is not serialised a second time to send it.

``send_notification`` here is aioapns' own with those changes (aioapns 4.0's request
handling: its channel pool, ``requests`` and ``request_streams`` maps are used as it uses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from typing import Any

from aioapns import APNs
from aioapns.common import NotificationRequest, NotificationResult
from aioapns.connection import (
    APNsDevelopmentClientProtocol,
    APNsProductionClientProtocol,
    APNsTLSClientProtocol,
)
from h2.exceptions import ProtocolError
from hpack import Encoder, NeverIndexedHeaderTuple

__all__ = ["PushRequest", "close_apns_client", "make_apns_client", "serialised"]


def serialised(message: dict[str, Any]) -> bytes:
    """A push payload's bytes on the wire, serialised exactly as aioapns does."""
    return json.dumps(message, ensure_ascii=False).encode()


class PushRequest(NotificationRequest):
    """An aioapns request with its payload's bytes (``body``: ``serialised(message)``), sent as they are."""

    __slots__ = ("body",)

    def __init__(self, *args: Any, body: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body = body


class _PlainEncoder(Encoder):
    """An HPACK encoder that never Huffman-codes (see the module docstring)."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


class _FlowControlledProtocol(APNsTLSClientProtocol):
    """aioapns protocol that returns flow-control credit for the data it reads and sends pushes cheaply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.config.normalize_outbound_headers = False  # built lower-case and valid below
        self.conn.config.validate_outbound_headers = False
        self.conn.encoder = _PlainEncoder()
        self._write_pending = False
        self._host = self.APNS_SERVER.encode()

    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        stream_id = await self.free_channels.acquire()
        headers: list[tuple[bytes, bytes]] = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            NeverIndexedHeaderTuple(b":path", b"/3/device/" + request.device_token.encode()),
            (b"host", self._host),
            NeverIndexedHeaderTuple(b"apns-id", request.notification_id.encode()),
            (b"apns-topic", (request.apns_topic or self.apns_topic).encode()),
        ]
        if request.time_to_live is not None:
            expiration = str(int(time.time()) + request.time_to_live).encode()
            headers.append(NeverIndexedHeaderTuple(b"apns-expiration", expiration))
        if request.priority is not None:
            headers.append((b"apns-priority", str(request.priority).encode()))
        if request.collapse_key is not None:
            headers.append(NeverIndexedHeaderTuple(b"apns-collapse-id", request.collapse_key.encode()))
        if request.push_type is not None:
            headers.append((b"apns-push-type", request.push_type.value.encode()))
        if self.auth_provider:
            headers.append((b"authorization", self.auth_provider.get_header().encode()))
        self.conn.send_headers(stream_id=stream_id, headers=headers)
        data = request.body if isinstance(request, PushRequest) else serialised(request.message)
        self.conn.send_data(stream_id=stream_id, data=data, end_stream=True)
        self.flush()
        response: asyncio.Future[NotificationResult] = self.loop.create_future()
        self.requests[request.notification_id] = response
        self.request_streams[stream_id] = request.notification_id
        return await response

    def flush(self) -> None:
        # One write per turn of the loop for every push (and WINDOW_UPDATE) queued in it.
        if not self._write_pending:
            self._write_pending = True
            self.loop.call_soon(self._write)

    def _write(self) -> None:
        self._write_pending = False
        if self.transport is None or self.transport.is_closing():
            return
        self.refresh_inactivity_timer()
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def on_data_received(self, raw_data: bytes, stream_id: int) -> None:
        # aioapns passes only the data, not h2's flow_controlled_length; APNs
        # does not pad DATA frames, so the two are equal.  The WINDOW_UPDATE
        # goes out with the flush aioapns does after handling the events.
        # ProtocolError: the stream is already forgotten, nothing to give back.
        with contextlib.suppress(ProtocolError):
            self.conn.acknowledge_received_data(len(raw_data), stream_id)
        super().on_data_received(raw_data, stream_id)


class _ProductionProtocol(_FlowControlledProtocol):
    APNS_SERVER = APNsProductionClientProtocol.APNS_SERVER


class _DevelopmentProtocol(_FlowControlledProtocol):
    APNS_SERVER = APNsDevelopmentClientProtocol.APNS_SERVER


def _protocol_for(host: str, port: int) -> type[APNsTLSClientProtocol]:
    """An aioapns protocol class that connects to ``host:port`` instead of Apple."""

    class RedirectedAPNsProtocol(_FlowControlledProtocol):
        APNS_SERVER = host
        APNS_PORT = port

    return RedirectedAPNsProtocol


def _ssl_context(ca_path: str | None) -> ssl.SSLContext:
    # aioapns' own default context offers no ALPN; HTTP/2 over TLS is
    # supposed to negotiate "h2", so offer it (Apple and the emulator accept
    # either way).  With ca_path only that CA is trusted, not the system store.
    context = ssl.create_default_context(cafile=ca_path)
    context.set_alpn_protocols(["h2"])
    return context


def make_apns_client(
    *,
    key_pem: str,
    key_id: str,
    team_id: str,
    topic: str,
    use_sandbox: bool,
    server: tuple[str, int] | None = None,
    ca_path: str | None = None,
) -> APNs:
    """Create a token-authenticated aioapns client.

    Without ``server`` it talks to Apple (sandbox or production per
    ``use_sandbox``).  With ``server=(host, port)`` it connects there instead;
    ``host`` must match the server certificate (the emulator's covers
    ``localhost``, ``127.0.0.1`` and ``::1``) and ``ca_path`` is the CA to
    trust for it (the system store is used when ``ca_path`` is ``None``).
    Must be called with an event loop running: aioapns grabs the loop at
    construction.  Close with :func:`close_apns_client`.
    """
    client = APNs(
        key=key_pem,
        key_id=key_id,
        team_id=team_id,
        topic=topic,
        use_sandbox=use_sandbox,
        ssl_context=_ssl_context(ca_path),
    )
    if server is not None:
        client.pool.protocol_class = _protocol_for(*server)
    elif use_sandbox:
        client.pool.protocol_class = _DevelopmentProtocol
    else:
        client.pool.protocol_class = _ProductionProtocol
    return client


def close_apns_client(client: APNs) -> None:
    """Close the client's connections (aioapns' ``APNs`` has no close method).

    Sends still in flight on it then fail at once with ``MaxAttemptsExceeded`` instead of
    aioapns reconnecting them through the closed client's pool (a connection nobody closes).
    """
    client.pool.max_connection_attempts = 0
    client.pool.close()
