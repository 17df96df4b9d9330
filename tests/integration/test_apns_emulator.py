"""The APNs emulator against real clients: aioapns 4.0 and a raw h2 client.

aioapns is pointed at the emulator through ``streams.apns_client``; the raw
client covers what aioapns cannot send (missing headers, stale tokens, no
ALPN) and looks at HTTP/2 details such as SETTINGS and GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes

from herald.apns_emulator import ApnsEmulator, generate_signing_key
from streams.apns_client import close_apns_client, make_apns_client

pytestmark = pytest.mark.timeout(60)

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.herald"
TOKEN = "a1" * 32
OTHER_TOKEN = "b2" * 32
UPPER_UUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> tuple[str, str]:
    """(private_pem, public_pem) of the provider key the emulator trusts."""
    return generate_signing_key()


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the module, as a developer's machine would keep it."""
    return tmp_path_factory.mktemp("apns-certs")


@pytest_asyncio.fixture
async def emulator(signing_key: tuple[str, str], cert_dir: Path) -> AsyncIterator[ApnsEmulator]:
    async with ApnsEmulator(
        keys={KEY_ID: (TEAM_ID, signing_key[1])},
        topics=[TOPIC, TOPIC + ".voip"],
        cert_dir=cert_dir,
    ) as running:
        yield running


ClientFactory = Callable[..., APNs]


@pytest_asyncio.fixture
async def apns_client_factory(emulator: ApnsEmulator, signing_key: tuple[str, str]) -> AsyncIterator[ClientFactory]:
    """Builds aioapns clients aimed at the emulator; closes them afterwards.

    The redirection itself (protocol subclass + CA-trusting SSL context) is
    ``streams.apns_client.make_apns_client``, the code Herald ships.
    """
    clients: list[APNs] = []

    def factory(
        *,
        key_pem: str = signing_key[0],
        key_id: str = KEY_ID,
        team_id: str = TEAM_ID,
        topic: str = TOPIC,
        server: tuple[str, int] | None = None,
    ) -> APNs:
        client = make_apns_client(
            key_pem=key_pem,
            key_id=key_id,
            team_id=team_id,
            topic=topic,
            use_sandbox=True,
            server=server or emulator.address,
            ca_path=emulator.ca_path,
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        close_apns_client(client)


@pytest_asyncio.fixture
async def apns(apns_client_factory: ClientFactory) -> APNs:
    return apns_client_factory()


def alert(text: str = "Hello") -> dict[str, Any]:
    return {"aps": {"alert": {"title": "Herald", "body": text}, "sound": "default"}}


async def send(
    client: APNs,
    token: str = TOKEN,
    message: dict[str, Any] | None = None,
    **kwargs: Any,
) -> NotificationResult:
    """Send through aioapns with a deadline (a hung client fails, not stalls)."""
    request = NotificationRequest(device_token=token, message=message or alert(), **kwargs)
    async with asyncio.timeout(10):
        return await client.send_notification(request)


# -- raw HTTP/2 client ---------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class _Stream:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class RawH2Client:
    """Minimal HTTP/2 client over Python's ssl, for what aioapns cannot send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.streams: dict[int, _Stream] = {}
        self.terminated: asyncio.Future[ConnectionTerminated] = asyncio.get_running_loop().create_future()
        self.settings_seen = asyncio.Event()
        self._reader_task = asyncio.create_task(self._read(reader))
        self._flush()

    @classmethod
    async def connect(
        cls,
        emulator: ApnsEmulator,
        *,
        alpn: bool = True,
        host: str = "127.0.0.1",
        server_hostname: str = "localhost",
    ) -> RawH2Client:
        context = ssl.create_default_context(cafile=emulator.ca_path)
        if alpn:
            context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            host, emulator.port, ssl=context, server_hostname=server_hostname
        )
        return cls(reader, writer)

    @property
    def alpn(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        protocol: str | None = ssl_object.selected_alpn_protocol()
        return protocol

    def _flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65535):
            for event in self.conn.receive_data(data):
                stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
                if isinstance(event, ResponseReceived) and stream:
                    stream.headers = {str(k): str(v) for k, v in event.headers}
                elif isinstance(event, DataReceived) and stream and event.data is not None:
                    stream.body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamEnded) and stream and not stream.done.done():
                    stream.done.set_result(None)
                elif isinstance(event, StreamReset) and stream and not stream.done.done():
                    stream.done.set_exception(ConnectionError(f"stream reset: {event.error_code!r}"))
                elif isinstance(event, RemoteSettingsChanged):
                    self.settings_seen.set()
                elif isinstance(event, ConnectionTerminated) and not self.terminated.done():
                    self.terminated.set_result(event)
            self._flush()

    def start(self, headers: list[tuple[str, str]], body: bytes) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = _Stream()
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self._flush()
        return stream_id

    async def response(self, stream_id: int) -> RawResponse:
        stream = self.streams[stream_id]
        async with asyncio.timeout(5):
            await stream.done
        return RawResponse(int(stream.headers[":status"]), stream.headers, bytes(stream.body))

    async def request(self, headers: list[tuple[str, str]], body: bytes = b"") -> RawResponse:
        return await self.response(self.start(headers, body))

    async def close(self) -> None:
        self._reader_task.cancel()
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await self.writer.wait_closed()


@pytest_asyncio.fixture
async def raw(emulator: ApnsEmulator) -> AsyncIterator[RawH2Client]:
    client = await RawH2Client.connect(emulator)
    yield client
    await client.close()


def provider_token(
    private_pem: str,
    *,
    iat: float | None = None,
    kid: str = KEY_ID,
    team: str = TEAM_ID,
) -> str:
    issued = int(time.time() if iat is None else iat)
    return jwt.encode(
        {"iss": team, "iat": issued},
        private_pem,
        algorithm="ES256",
        headers={"kid": kid},
    )


def request_headers(
    authorization: str | None,
    *,
    token: str = TOKEN,
    method: str = "POST",
    path: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    omit: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    headers = [
        (":method", method),
        (":scheme", "https"),
        (":path", path if path is not None else f"/3/device/{token}"),
        (":authority", "localhost"),
        ("apns-topic", TOPIC),
        ("apns-push-type", "alert"),
    ]
    if authorization is not None:
        headers.append(("authorization", authorization))
    headers = [(name, value) for name, value in headers if name not in omit]
    return headers + (extra or [])


BODY = json.dumps(alert()).encode()


# -- aioapns: the happy paths ---------------------------------------------------------


async def test_alert_push_priority_10_is_accepted_and_recorded(emulator: ApnsEmulator, apns: APNs) -> None:
    notification_id = str(uuid.uuid4())
    result = await send(
        apns,
        notification_id=notification_id,
        priority=10,
        push_type=PushType.ALERT,
        collapse_key="chat-42",
        time_to_live=3600,
    )

    assert (result.status, result.description) == ("200", None)
    assert result.notification_id == notification_id  # apns-id echoed back
    [record] = emulator.received
    assert record.token == TOKEN
    assert record.payload == alert()
    assert (record.status, record.reason, record.apns_id) == (
        200,
        None,
        notification_id,
    )
    assert record.key_id == KEY_ID
    assert record.headers["apns-topic"] == TOPIC
    assert record.headers["apns-priority"] == "10"
    assert record.headers["apns-push-type"] == "alert"
    assert record.headers["apns-collapse-id"] == "chat-42"
    assert abs(int(record.headers["apns-expiration"]) - (time.time() + 3600)) < 60
    assert record.headers["authorization"] == "<redacted>"  # credentials are not kept
    assert abs(record.received_at - time.time()) < 60


async def test_background_push_priority_5_is_accepted(emulator: ApnsEmulator, apns: APNs) -> None:
    message = {"aps": {"content-available": 1}, "sync": "inbox"}
    result = await send(apns, message=message, priority=5, push_type=PushType.BACKGROUND)

    assert result.status == "200"
    [record] = emulator.received
    assert record.headers["apns-priority"] == "5"
    assert record.headers["apns-push-type"] == "background"
    assert record.payload == message


async def test_client_trusting_the_ca_reaches_it_by_dns_name(
    emulator: ApnsEmulator, apns_client_factory: ClientFactory
) -> None:
    client = apns_client_factory(server=("localhost", emulator.port))

    assert (await send(client)).status == "200"


async def test_wait_for_returns_pushes_as_they_arrive(emulator: ApnsEmulator, apns: APNs) -> None:
    sending = asyncio.create_task(send(apns, OTHER_TOKEN))

    async with asyncio.timeout(5):
        [record] = await emulator.wait_for(1, token=OTHER_TOKEN)
    assert record.token == OTHER_TOKEN
    assert (await sending).status == "200"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await emulator.wait_for(1, token=TOKEN)


# -- aioapns: provider authentication ---------------------------------------------------


async def test_token_signed_with_another_key_is_refused(
    emulator: ApnsEmulator, apns_client_factory: ClientFactory
) -> None:
    forged_private, _ = generate_signing_key()
    client = apns_client_factory(key_pem=forged_private)

    result = await send(client)

    assert (result.status, result.description) == ("403", "InvalidProviderToken")
    assert [(r.status, r.reason) for r in emulator.received] == [(403, "InvalidProviderToken")]


@pytest.mark.parametrize(
    ("key_id", "team_id"),
    [(KEY_ID, "OTHERTEAM0"), ("UNKNOWNKEY", TEAM_ID)],
    ids=["wrong-team", "unknown-kid"],
)
async def test_token_for_wrong_team_or_unknown_key_is_refused(
    apns_client_factory: ClientFactory, key_id: str, team_id: str
) -> None:
    client = apns_client_factory(key_id=key_id, team_id=team_id)

    result = await send(client)

    assert (result.status, result.description) == ("403", "InvalidProviderToken")


# -- aioapns: device and payload errors ---------------------------------------------------


async def test_unregistered_token_answers_410_with_timestamp(emulator: ApnsEmulator, apns: APNs) -> None:
    before_ms = int(time.time() * 1000)
    emulator.unregister(TOKEN)

    result = await send(apns)

    assert (result.status, result.description) == ("410", "Unregistered")
    assert result.timestamp is not None
    assert before_ms <= result.timestamp <= int(time.time() * 1000)
    assert (await send(apns, OTHER_TOKEN)).status == "200"  # only that token


async def test_unregistered_timestamp_can_be_chosen(emulator: ApnsEmulator, apns: APNs) -> None:
    emulator.unregister(TOKEN, timestamp_ms=1_700_000_000_000)

    result = await send(apns)

    assert result.timestamp == 1_700_000_000_000


async def test_token_marked_bad_answers_bad_device_token(emulator: ApnsEmulator, apns: APNs) -> None:
    emulator.mark_bad(TOKEN.upper())  # tokens compare case-insensitively

    result = await send(apns)

    assert (result.status, result.description) == ("400", "BadDeviceToken")


async def test_malformed_device_token_is_refused(apns: APNs) -> None:
    result = await send(apns, token="abc123")

    assert (result.status, result.description) == ("400", "BadDeviceToken")


async def test_payload_over_4kb_answers_413(emulator: ApnsEmulator, apns: APNs) -> None:
    message = {"aps": {"alert": "x" * 4100}}

    result = await send(apns, message=message)

    assert (result.status, result.description) == ("413", "PayloadTooLarge")
    [record] = emulator.received
    assert record.status == 413


async def test_voip_payload_may_be_5kb(apns: APNs) -> None:
    message = {"aps": {}, "call": "x" * 4500}

    voip = await send(apns, message=message, push_type=PushType.VOIP, apns_topic=TOPIC + ".voip")
    alert_sized = await send(apns, message=message, push_type=PushType.ALERT)

    assert voip.status == "200"
    assert (alert_sized.status, alert_sized.description) == ("413", "PayloadTooLarge")


async def test_topic_not_configured_is_disallowed(apns: APNs) -> None:
    result = await send(apns, apns_topic="com.someone.else")

    assert (result.status, result.description) == ("400", "TopicDisallowed")


# -- aioapns: injected failures, latency, concurrency ------------------------------------------


async def test_429_on_demand_then_success(emulator: ApnsEmulator, apns: APNs) -> None:
    emulator.fail_next(429, "TooManyRequests", count=2, token=TOKEN)

    other = await send(apns, OTHER_TOKEN)
    first = await send(apns)
    second = await send(apns)
    third = await send(apns)

    assert other.status == "200"  # the fault is for TOKEN only
    assert [(r.status, r.description) for r in (first, second)] == [("429", "TooManyRequests")] * 2
    assert third.status == "200"


@pytest.mark.parametrize(("status", "reason"), [(500, "InternalServerError"), (503, "ServiceUnavailable")])
async def test_server_errors_on_demand(emulator: ApnsEmulator, apns: APNs, status: int, reason: str) -> None:
    emulator.fail_next(status)  # Apple's reason is the default

    failed = await send(apns)
    recovered = await send(apns)

    assert (failed.status, failed.description) == (str(status), reason)
    assert recovered.status == "200"


async def test_latency_delays_every_answer(emulator: ApnsEmulator, apns: APNs) -> None:
    await send(apns)  # connection set up outside the measurement
    emulator.latency = 0.3
    loop = asyncio.get_running_loop()

    started = loop.time()
    result = await send(apns)

    assert result.status == "200"
    assert loop.time() - started >= 0.3


async def test_max_concurrent_streams_is_advertised_and_throttles_aioapns(
    signing_key: tuple[str, str], cert_dir: Path
) -> None:
    async with ApnsEmulator(
        keys={KEY_ID: (TEAM_ID, signing_key[1])},
        cert_dir=cert_dir,
        max_concurrent_streams=2,
    ) as emu:
        raw = await RawH2Client.connect(emu)
        try:
            async with asyncio.timeout(5):
                while raw.conn.remote_settings.max_concurrent_streams != 2:
                    raw.settings_seen.clear()
                    await raw.settings_seen.wait()
        finally:
            await raw.close()

        client = make_apns_client(
            key_pem=signing_key[0],
            key_id=KEY_ID,
            team_id=TEAM_ID,
            topic=TOPIC,
            use_sandbox=True,
            server=emu.address,
            ca_path=emu.ca_path,
        )
        try:
            assert (await send(client)).status == "200"  # aioapns now knows the limit
            emu.latency = 0.2  # keep the streams open together
            results = await asyncio.gather(*(send(client, f"{i:064x}") for i in range(6)))
            connections = len(client.pool.connections)
        finally:
            close_apns_client(client)

    assert [r.status for r in results] == ["200"] * 6
    # aioapns honours the limit by opening more connections instead of
    # queueing: the first can carry only two of the six streams.
    assert connections >= 2


async def test_client_exceeding_the_stream_limit_gets_goaway(signing_key: tuple[str, str], cert_dir: Path) -> None:
    async with ApnsEmulator(
        keys={KEY_ID: (TEAM_ID, signing_key[1])},
        cert_dir=cert_dir,
        max_concurrent_streams=1,
        latency=5,
    ) as emu:
        raw = await RawH2Client.connect(emu)
        try:
            async with asyncio.timeout(5):
                while raw.conn.remote_settings.max_concurrent_streams != 1:
                    raw.settings_seen.clear()
                    await raw.settings_seen.wait()
            # Make h2 forget the limit on the client side, as a buggy client would.
            raw.conn.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 100
            raw.conn.remote_settings.acknowledge()
            headers = request_headers(f"bearer {provider_token(signing_key[0])}")
            raw.start(headers, BODY)
            raw.start(headers, BODY)
            async with asyncio.timeout(5):
                goaway = await raw.terminated
        finally:
            await raw.close()

    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR


async def test_many_error_responses_on_one_connection_do_not_stall_aioapns(emulator: ApnsEmulator, apns: APNs) -> None:
    # Each error body is ~27 bytes; plain aioapns 4.0 never returns flow-control
    # credit and hangs after ~2,400 of them (65,535 bytes) on a connection.
    emulator.mark_bad(TOKEN)
    results: list[NotificationResult] = []
    for _ in range(14):
        results += await asyncio.gather(*(send(apns) for _ in range(200)))

    assert len(results) == 2800
    assert {r.description for r in results} == {"BadDeviceToken"}
    assert len(apns.pool.connections) == 1  # all on the one connection


# -- raw h2: what aioapns cannot send ----------------------------------------------------------


async def test_works_without_alpn(emulator: ApnsEmulator, signing_key: tuple[str, str]) -> None:
    client = await RawH2Client.connect(emulator, alpn=False)
    try:
        response = await client.request(request_headers(f"bearer {provider_token(signing_key[0])}"), BODY)
        assert client.alpn is None  # nothing negotiated, HTTP/2 spoken anyway
    finally:
        await client.close()

    assert response.status == 200
    assert response.body == b""
    assert emulator.received[0].payload == alert()


async def test_alpn_h2_is_negotiated_when_offered(raw: RawH2Client, signing_key: tuple[str, str]) -> None:
    response = await raw.request(request_headers(f"bearer {provider_token(signing_key[0])}"), BODY)

    assert raw.alpn == "h2"
    assert response.status == 200


async def test_certificate_is_valid_for_the_ip_address(emulator: ApnsEmulator, signing_key: tuple[str, str]) -> None:
    client = await RawH2Client.connect(emulator, server_hostname="127.0.0.1")
    try:
        response = await client.request(request_headers(f"bearer {provider_token(signing_key[0])}"), BODY)
    finally:
        await client.close()

    assert response.status == 200


async def test_missing_apns_id_gets_a_generated_uppercase_uuid(
    emulator: ApnsEmulator, raw: RawH2Client, signing_key: tuple[str, str]
) -> None:
    response = await raw.request(request_headers(f"bearer {provider_token(signing_key[0])}"), BODY)

    assert response.status == 200
    assert UPPER_UUID.fullmatch(response.headers["apns-id"])
    assert emulator.received[0].apns_id == response.headers["apns-id"]


async def test_missing_topic_is_refused(emulator: ApnsEmulator, raw: RawH2Client, signing_key: tuple[str, str]) -> None:
    apns_id = str(uuid.uuid4())
    headers = request_headers(
        f"bearer {provider_token(signing_key[0])}",
        omit=("apns-topic",),
        extra=[("apns-id", apns_id)],
    )

    response = await raw.request(headers, BODY)

    # Apple documents MissingTopic as a 400.
    assert (response.status, response.json) == (400, {"reason": "MissingTopic"})
    assert response.headers["apns-id"] == apns_id
    assert (emulator.received[0].status, emulator.received[0].reason) == (
        400,
        "MissingTopic",
    )


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "MissingProviderToken"),
        ("bearer not-a-jwt", "InvalidProviderToken"),
        ("stale", "ExpiredProviderToken"),
        ("hs256", "InvalidProviderToken"),
    ],
)
async def test_provider_token_problems_answer_403(
    raw: RawH2Client,
    signing_key: tuple[str, str],
    authorization: str | None,
    reason: str,
) -> None:
    if authorization == "stale":
        authorization = f"bearer {provider_token(signing_key[0], iat=time.time() - 3700)}"
    elif authorization == "hs256":
        forged = jwt.encode(
            {"iss": TEAM_ID, "iat": int(time.time())},
            "x" * 32,
            algorithm="HS256",
            headers={"kid": KEY_ID},
        )
        authorization = f"bearer {forged}"

    response = await raw.request(request_headers(authorization), BODY)

    assert (response.status, response.json) == (403, {"reason": reason})


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"extra": [("apns-priority", "7")]}, 400, "BadPriority"),
        ({"extra": [("apns-priority", "1")]}, 200, None),
        (
            {"omit": ("apns-push-type",), "extra": [("apns-push-type", "banner")]},
            400,
            "InvalidPushType",
        ),
        (
            {"omit": ("apns-push-type",), "extra": [("apns-push-type", "pushtotalk")]},
            200,
            None,
        ),
        ({"extra": [("apns-expiration", "tomorrow")]}, 400, "BadExpirationDate"),
        ({"extra": [("apns-expiration", "0")]}, 200, None),
        ({"extra": [("apns-collapse-id", "é" * 33)]}, 400, "BadCollapseId"),  # 66 bytes
        ({"extra": [("apns-collapse-id", "c" * 64)]}, 200, None),
        ({"extra": [("apns-id", "not-a-uuid")]}, 400, "BadMessageId"),
        ({"extra": [("apns-topic", TOPIC)]}, 400, "DuplicateHeaders"),
        ({"path": "/3/device/" + "zz" * 32}, 400, "BadDeviceToken"),
        ({"path": "/3/device/"}, 400, "MissingDeviceToken"),
        ({"path": "/2/device/" + TOKEN}, 404, "BadPath"),
        ({"method": "PUT"}, 405, "MethodNotAllowed"),
    ],
)
async def test_header_validation(
    raw: RawH2Client,
    signing_key: tuple[str, str],
    change: dict[str, Any],
    status: int,
    reason: str | None,
) -> None:
    response = await raw.request(request_headers(f"bearer {provider_token(signing_key[0])}", **change), BODY)

    assert response.status == status
    assert (response.json if response.body else None) == ({"reason": reason} if reason else None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"", "PayloadEmpty"), (b"{not json", "BadPayload"), (b"[1, 2]", "BadPayload")],
)
async def test_payload_must_be_a_json_object(
    raw: RawH2Client, signing_key: tuple[str, str], body: bytes, reason: str
) -> None:
    response = await raw.request(request_headers(f"bearer {provider_token(signing_key[0])}"), body)

    assert (response.status, response.json) == (400, {"reason": reason})


async def test_stop_sends_goaway_to_connected_clients(emulator: ApnsEmulator) -> None:
    client = await RawH2Client.connect(emulator)
    try:
        await emulator.stop()
        async with asyncio.timeout(5):
            goaway = await client.terminated
    finally:
        await client.close()

    assert goaway.error_code == ErrorCodes.NO_ERROR
    assert goaway.additional_data is not None
    assert json.loads(goaway.additional_data) == {"reason": "Shutdown"}


# -- certificates ----------------------------------------------------------------------


async def test_cert_dir_keeps_the_same_ca_across_restarts(tmp_path: Path) -> None:
    async with ApnsEmulator(cert_dir=tmp_path, inspect_port=None) as first:
        ca_first = await asyncio.to_thread(Path(first.ca_path).read_bytes)
    async with ApnsEmulator(cert_dir=tmp_path, inspect_port=None) as second:
        ca_second = await asyncio.to_thread(Path(second.ca_path).read_bytes)

    assert ca_first == ca_second
    for key_file in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((tmp_path / key_file).stat().st_mode) == 0o600


async def test_temporary_certificates_are_removed_on_stop(
    signing_key: tuple[str, str],
) -> None:
    emulator = ApnsEmulator(inspect_port=None)
    await emulator.start()
    ca_path = Path(emulator.ca_path)
    assert await asyncio.to_thread(ca_path.is_file)

    await emulator.stop()

    assert not await asyncio.to_thread(ca_path.parent.exists)


# -- inspection API ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def http(emulator: ApnsEmulator) -> AsyncIterator[Callable[..., Any]]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{emulator.inspect_port}") as session:

        def call(method: str, path: str, **kwargs: Any) -> Any:
            return session.request(method, path, **kwargs)

        yield call


async def test_inspection_api_controls_and_reports(
    emulator: ApnsEmulator, apns: APNs, http: Callable[..., Any]
) -> None:
    third_token = "c3" * 32
    async with http("POST", f"/tokens/{TOKEN}/unregistered") as response:
        assert response.status == 204
    async with http("POST", f"/tokens/{OTHER_TOKEN}/bad") as response:
        assert response.status == 204
    async with http(
        "POST",
        "/fail",
        json={"status": 429, "reason": "TooManyRequests", "count": 2, "token": None},
    ) as response:
        assert response.status == 204

    results = [await send(apns, t) for t in (third_token, third_token, third_token, TOKEN, OTHER_TOKEN)]

    assert [(r.status, r.description) for r in results] == [
        ("429", "TooManyRequests"),
        ("429", "TooManyRequests"),
        ("200", None),
        ("410", "Unregistered"),
        ("400", "BadDeviceToken"),
    ]
    async with http("GET", "/received") as response:
        everything = await response.json()
    assert [(r["token"], r["status"], r["reason"]) for r in everything] == [
        (third_token, 429, "TooManyRequests"),
        (third_token, 429, "TooManyRequests"),
        (third_token, 200, None),
        (TOKEN, 410, "Unregistered"),
        (OTHER_TOKEN, 400, "BadDeviceToken"),
    ]
    assert everything[2]["payload"] == alert()
    assert everything[2]["headers"]["apns-topic"] == TOPIC
    assert everything[2]["apns_id"] == results[2].notification_id
    async with http("GET", "/received", params={"token": TOKEN}) as response:
        assert [r["status"] for r in await response.json()] == [410]

    async with http("DELETE", "/received") as response:
        assert response.status == 204
    async with http("GET", "/received") as response:
        assert await response.json() == []
    assert emulator.received == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": "429"},
        {"status": 200, "reason": "OK"},
        {"status": 429, "count": 0},
        {"status": 418},
        [1],
    ],
)
async def test_inspection_api_rejects_bad_fault_requests(http: Callable[..., Any], body: Any) -> None:
    async with http("POST", "/fail", json=body) as response:
        assert response.status == 400
        assert "error" in await response.json()


async def test_reset_clears_token_states_and_faults(
    emulator: ApnsEmulator, apns: APNs, http: Callable[..., Any]
) -> None:
    emulator.unregister(TOKEN)
    emulator.fail_next(503, count=5)

    async with http("POST", "/reset") as response:
        assert response.status == 204

    assert (await send(apns)).status == "200"
