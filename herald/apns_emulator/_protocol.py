"""HTTP/2 server plumbing: one :class:`ApnsH2Protocol` per TLS connection.

The protocol knows nothing about APNs rules; it assembles requests, hands
them to a synchronous handler and writes the reply, honouring HTTP/2 flow
control and the configured artificial latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from herald.apns_emulator._log import logger

#: Bodies beyond this are counted but not kept: the largest legal payload is
#: 5 KB, anything bigger is answered 413 without holding it in memory.
MAX_BUFFERED_BODY = 16 * 1024


@dataclass
class InboundRequest:
    """A request assembled from HEADERS and DATA frames of one stream."""

    stream_id: int
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    body_length: int = 0


@dataclass(frozen=True)
class Reply:
    """What to answer: a status, the ``apns-id`` to echo and an optional JSON body."""

    status: int
    apns_id: str
    body: bytes | None = None


Handler = Callable[[InboundRequest], Reply]


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


class ApnsH2Protocol(asyncio.Protocol):
    """Serves APNs-style requests on one HTTP/2 connection."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_concurrent_streams: int,
        latency: Callable[[], float],
        on_lost: Callable[[ApnsH2Protocol], None],
    ) -> None:
        self._handler = handler
        self._max_concurrent_streams = max_concurrent_streams
        self._latency = latency
        self._on_lost = on_lost
        self._conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, InboundRequest] = {}
        self._delayed: dict[int, asyncio.TimerHandle] = {}
        # Bodies waiting for flow-control window; see _send_body.
        self._blocked: dict[int, bytes] = {}
        self._shutting_down = False
        self.closed = asyncio.Event()

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # create_server gives a Transport
        ssl_object = self._transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        logger.debug("Connection from %s (ALPN %s)", self._transport.get_extra_info("peername"), alpn)
        self._conn.initiate_connection()
        # Sent as a settings *update* rather than in the initial SETTINGS so
        # h2 only enforces the limit once the client has acknowledged it: a
        # client may legitimately open streams before it has seen our limit.
        self._conn.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self._max_concurrent_streams})
        self._flush()
        if self._shutting_down:
            # stop() ran while this connection was still in its TLS handshake.
            self.shutdown()

    def data_received(self, data: bytes) -> None:
        if self._shutting_down:
            return  # GOAWAY sent and closing; h2 would call late frames errors
        try:
            events = self._conn.receive_data(data)
        except ProtocolError as exc:
            # h2 has queued a GOAWAY; send it and drop the connection.
            logger.warning("HTTP/2 protocol error from client: %s", exc)
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._blocked.clear()
        self._streams.clear()
        self.closed.set()
        self._on_lost(self)

    # -- control ----------------------------------------------------------

    def shutdown(self) -> None:
        """Send GOAWAY (with Apple's ``Shutdown`` reason) and close gracefully."""
        self._shutting_down = True
        if self._transport is None or self._transport.is_closing():
            return  # connection_made() will finish the job
        with contextlib.suppress(ProtocolError):  # already closed at the HTTP/2 level
            self._conn.close_connection(ErrorCodes.NO_ERROR, additional_data=b'{"reason":"Shutdown"}')
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop the connection without waiting for buffered data to drain."""
        if self._transport is not None:
            self._transport.abort()

    # -- internals --------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            headers = [(_as_bytes(n), _as_bytes(v)) for n, v in event.headers]
            self._streams[event.stream_id] = InboundRequest(event.stream_id, headers)
        elif isinstance(event, DataReceived):
            if event.stream_id is None or event.data is None:
                return  # h2 always sets both; the check narrows the types
            # Give the window back at once; otherwise a busy client stalls
            # after 64 KB of payloads on the connection.
            if event.flow_controlled_length:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            request = self._streams.get(event.stream_id)
            if request is not None:
                room = MAX_BUFFERED_BODY - len(request.body)
                request.body += event.data[:room]
                request.body_length += len(event.data)
        elif isinstance(event, StreamEnded):
            request = self._streams.pop(event.stream_id or 0, None)
            if request is not None:
                self._handle(request)
        elif isinstance(event, StreamReset):
            self._forget(event.stream_id or 0)
        elif isinstance(event, WindowUpdated):
            self._retry_blocked()
        elif isinstance(event, ConnectionTerminated):
            logger.debug("Client sent GOAWAY (code %s)", event.error_code)
            if self._transport is not None:
                self._transport.close()

    def _handle(self, request: InboundRequest) -> None:
        try:
            reply = self._handler(request)
        except Exception:  # noqa: BLE001 - a handler bug must not kill the connection
            logger.exception("APNs emulator handler failed")
            reply = Reply(500, str(uuid.uuid4()).upper(), b'{"reason":"InternalServerError"}')
        delay = self._latency()
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._delayed[request.stream_id] = loop.call_later(delay, self._reply_later, request.stream_id, reply)
        else:
            self._send_reply(request.stream_id, reply)

    def _reply_later(self, stream_id: int, reply: Reply) -> None:
        self._delayed.pop(stream_id, None)
        self._send_reply(stream_id, reply)
        self._flush()

    def _send_reply(self, stream_id: int, reply: Reply) -> None:
        headers = [(":status", str(reply.status)), ("apns-id", reply.apns_id)]
        if reply.body is not None:
            headers += [
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", str(len(reply.body))),
            ]
        try:
            # Success ends the stream on HEADERS, like Apple: no empty DATA frame.
            self._conn.send_headers(stream_id, headers, end_stream=reply.body is None)
            if reply.body is not None:
                self._send_body(stream_id, reply.body)
        except (StreamClosedError, ProtocolError) as exc:
            # The client reset the stream or the connection is going away.
            logger.debug("Could not answer stream %d: %s", stream_id, exc)

    def _send_body(self, stream_id: int, body: bytes) -> None:
        # Always one DATA frame: aioapns json-decodes each DATA frame on its
        # own, so a body split across frames would break it.  If the window
        # is too small, park the body until the client sends WINDOW_UPDATE.
        if self._conn.local_flow_control_window(stream_id) >= len(body):
            self._conn.send_data(stream_id, body, end_stream=True)
            return
        if stream_id not in self._blocked:
            logger.warning(
                "Flow-control window exhausted on stream %d; waiting for the client's WINDOW_UPDATE",
                stream_id,
            )
        self._blocked[stream_id] = body

    def _retry_blocked(self) -> None:
        for stream_id, body in list(self._blocked.items()):
            try:
                if self._conn.local_flow_control_window(stream_id) >= len(body):
                    del self._blocked[stream_id]
                    self._conn.send_data(stream_id, body, end_stream=True)
            except (StreamClosedError, ProtocolError):
                self._blocked.pop(stream_id, None)

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        handle = self._delayed.pop(stream_id, None)
        if handle is not None:
            handle.cancel()

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
