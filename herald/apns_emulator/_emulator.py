"""The :class:`ApnsEmulator` server and the :func:`serve` entry point."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from aiohttp import web

from herald.apns_emulator._auth import (
    DEFAULT_TOKEN_TTL,
    ProviderTokenVerifier,
    PublicKeyLike,
)
from herald.apns_emulator._handler import RequestHandler
from herald.apns_emulator._inspection import build_inspection_app
from herald.apns_emulator._log import logger
from herald.apns_emulator._protocol import ApnsH2Protocol
from herald.apns_emulator._state import EmulatorState, ReceivedNotification
from herald.apns_emulator._tls import (
    TlsMaterial,
    client_ssl_context,
    ensure_tls_material,
    server_ssl_context,
)

_T = TypeVar("_T")

#: How long stop() lets clients read the GOAWAY before cutting connections.
_SHUTDOWN_GRACE = 2.0


class ApnsEmulator:
    """A local stand-in for ``api.push.apple.com``: HTTP/2 over TLS, token auth.

    Answers ``POST /3/device/<token>`` with Apple's status codes and reasons,
    records every request, and can be told to fail on purpose.  Use it as an
    async context manager or call :meth:`start` / :meth:`stop`.

    ``keys`` maps key id -> ``(team_id, public_key)``; ``topics`` restricts
    ``apns-topic`` (``None`` accepts any); ``cert_dir`` keeps the test CA
    across runs (a temporary directory is used otherwise); ``inspect_port``
    ``None`` disables the HTTP inspection API.  Port 0 picks a free port.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        inspect_port: int | None = 0,
        keys: Mapping[str, tuple[str, PublicKeyLike]] | None = None,
        topics: Iterable[str] | None = None,
        cert_dir: str | os.PathLike[str] | None = None,
        max_concurrent_streams: int = 1000,
        latency: float = 0.0,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        max_records: int = 10_000,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._requested_inspect_port = inspect_port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.max_concurrent_streams = max_concurrent_streams
        self.latency = latency
        self._verifier = ProviderTokenVerifier(token_ttl)
        for key_id, (team_id, public_key) in (keys or {}).items():
            self._verifier.add_key(key_id, team_id, public_key)
        self._state = EmulatorState(max_records)
        self._handler = RequestHandler(self._verifier, self._state, frozenset(topics) if topics is not None else None)
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._tls: TlsMaterial | None = None
        self._temp_dir: str | None = None
        self._port: int | None = None
        self._inspect_port: int | None = None
        self._connections: set[ApnsH2Protocol] = set()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Create/load certificates and start listening (HTTP/2 and inspection)."""
        if self._server is not None:
            raise RuntimeError("APNs emulator already started")
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "APNs emulator listening on https://%s:%d (CA %s)%s",
            self._host,
            self.port,
            self.ca_path,
            f", inspection API on http://{self._host}:{self._inspect_port}" if self._inspect_port else "",
        )

    async def _start(self) -> None:
        cert_dir = self._cert_dir
        if cert_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="herald-apns-emulator-")
            cert_dir = Path(self._temp_dir)
        # Off the loop: key generation, file I/O and possibly waiting on the
        # directory lock held by another process.
        self._tls = await asyncio.to_thread(ensure_tls_material, cert_dir)
        context = server_ssl_context(self._tls)
        loop = asyncio.get_running_loop()

        async def bind_h2(port: int) -> asyncio.Server:
            return await loop.create_server(self._new_protocol, self._host, port, ssl=context)

        async def close_h2(server: asyncio.Server) -> None:
            server.close()
            await server.wait_closed()

        self._server = await _bind_one_port(
            bind_h2,
            lambda s: [sock.getsockname()[1] for sock in s.sockets],
            close_h2,
            self._requested_port,
        )
        self._port = self._server.sockets[0].getsockname()[1]

        if self._requested_inspect_port is not None:
            runner = web.AppRunner(build_inspection_app(self), access_log=None)
            await runner.setup()
            self._runner = runner

            async def bind_inspection(port: int) -> web.TCPSite:
                site = web.TCPSite(runner, self._host, port)
                await site.start()
                return site

            async def close_inspection(site: web.TCPSite) -> None:
                await site.stop()

            await _bind_one_port(
                bind_inspection,
                lambda _: [int(address[1]) for address in runner.addresses],
                close_inspection,
                self._requested_inspect_port,
            )
            self._inspect_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Send GOAWAY to clients, close every listener and remove temporary certificates."""
        for connection in list(self._connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(_SHUTDOWN_GRACE):
                for connection in list(self._connections):
                    await connection.closed.wait()
        except TimeoutError:
            pass
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._temp_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._temp_dir, ignore_errors=True)
            self._temp_dir = None
            self._tls = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses ----------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the HTTP/2 server binds to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound HTTP/2 port (the requested one until :meth:`start`)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def inspect_port(self) -> int | None:
        """The bound inspection API port, ``None`` when disabled."""
        if self._inspect_port is not None:
            return self._inspect_port
        return self._requested_inspect_port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` a client on this machine should connect to."""
        # Wildcard bind addresses are not connectable; use loopback instead.
        wildcards = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - not a bind
        host = wildcards.get(self._host, self._host)
        return host, self.port

    @property
    def ca_path(self) -> str:
        """Path of the CA certificate (PEM) clients must trust. Available after start."""
        if self._tls is None:
            raise RuntimeError("APNs emulator not started: no CA yet")
        return str(self._tls.ca_path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only this emulator's CA, offering ALPN h2."""
        return client_ssl_context(self.ca_path)

    # -- behaviour ----------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds to wait before answering each request (0 = answer at once)."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds

    @property
    def max_concurrent_streams(self) -> int:
        """SETTINGS_MAX_CONCURRENT_STREAMS advertised to connections opened from now on."""
        return self._max_concurrent_streams

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        if not 1 <= value <= 2**31 - 1:
            raise ValueError("max_concurrent_streams must be between 1 and 2**31-1")
        self._max_concurrent_streams = value

    def add_key(self, key_id: str, team_id: str, public_key: PublicKeyLike) -> None:
        """Accept ES256 provider tokens with ``kid=key_id`` and ``iss=team_id``."""
        self._verifier.add_key(key_id, team_id, public_key)

    def unregister(self, token: str, timestamp_ms: int | None = None) -> None:
        """Answer 410 ``Unregistered`` for ``token`` (timestamp defaults to now)."""
        self._state.unregister(token, timestamp_ms)

    def mark_bad(self, token: str) -> None:
        """Answer 400 ``BadDeviceToken`` for ``token``."""
        self._state.mark_bad(token)

    def fail_next(
        self,
        status: int,
        reason: str | None = None,
        count: int = 1,
        token: str | None = None,
    ) -> None:
        """Fail the next ``count`` otherwise-valid requests (to ``token`` if given).

        ``reason`` defaults to Apple's for 429, 500 and 503.  Faults apply
        after authentication and validation, and before token states.
        """
        self._state.fail_next(status, reason, count, token)

    def clear(self) -> None:
        """Forget received requests (token states and pending faults stay)."""
        self._state.clear_records()

    def reset(self) -> None:
        """Forget received requests, token states and pending faults."""
        self._state.reset()

    @property
    def received(self) -> list[ReceivedNotification]:
        """Snapshot of every request received, oldest first."""
        return self._state.records

    async def wait_for(self, count: int = 1, *, token: str | None = None) -> list[ReceivedNotification]:
        """Wait until ``count`` requests (for ``token``) arrived; returns them all.

        Waits indefinitely: bound it with ``async with asyncio.timeout(...)``.
        """
        return await self._state.wait_for(count, token)

    # -- request handling -----------------------------------------------------

    def _new_protocol(self) -> ApnsH2Protocol:
        protocol = ApnsH2Protocol(
            self._handler,
            max_concurrent_streams=self._max_concurrent_streams,
            latency=lambda: self._latency,
            on_lost=self._connections.discard,
        )
        self._connections.add(protocol)
        return protocol


async def _bind_one_port(
    bind: Callable[[int], Awaitable[_T]],
    ports_of: Callable[[_T], list[int]],
    close: Callable[[_T], Awaitable[None]],
    port: int,
) -> _T:
    """Bind, making sure every address of the host shares one port.

    With port 0 and a host such as ``localhost`` that resolves to both IPv4
    and IPv6, the OS picks a different free port per address; we then
    re-bind all of them on the first one so ``port`` is meaningful.
    """
    if port != 0:
        return await bind(port)
    for _ in range(5):
        bound = await bind(0)
        ports = ports_of(bound)
        if len(set(ports)) <= 1:
            return bound
        await close(bound)
        try:
            return await bind(ports[0])
        except OSError:
            continue  # someone took it in between; try a fresh one
    raise OSError("could not bind every address of the host to one free port")


async def serve(
    host: str,
    port: int,
    inspect_port: int | None,
    key_id: str,
    team_id: str,
    public_key_pem: str,
    cert_dir: str | os.PathLike[str] | None,
    *,
    topics: Iterable[str] | None = None,
    latency: float = 0.0,
    max_concurrent_streams: int = 1000,
) -> None:
    """Run an emulator accepting one provider key until cancelled (``herald apns-emulator``)."""
    emulator = ApnsEmulator(
        host=host,
        port=port,
        inspect_port=inspect_port,
        keys={key_id: (team_id, public_key_pem)},
        topics=topics,
        cert_dir=cert_dir,
        latency=latency,
        max_concurrent_streams=max_concurrent_streams,
    )
    async with emulator:
        logger.info("APNs emulator accepting key id %s for team %s", key_id, team_id)
        await asyncio.Event().wait()  # until the task is cancelled
