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
"""

from __future__ import annotations

import contextlib
import ssl

from aioapns import APNs
from aioapns.connection import (
    APNsDevelopmentClientProtocol,
    APNsProductionClientProtocol,
    APNsTLSClientProtocol,
)
from h2.exceptions import ProtocolError

__all__ = ["close_apns_client", "make_apns_client"]


class _FlowControlledProtocol(APNsTLSClientProtocol):
    """aioapns protocol that returns flow-control credit for the data it reads."""

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
