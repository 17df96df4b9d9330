"""The APNs server going away under the sink: every failed push is retriable, none abandoned.

Found by the dependency-fault suite (``tests/faults/test_dependencies.py``): with the APNs
emulator stopped, aioapns gives up connecting after five tries with ``MaxAttemptsExceeded``,
and a send racing the server's GOAWAY fails with h2's ``ProtocolError``; both reached the
delivery path as "internal error", not retriable, so the push was abandoned and
dead-lettered during an outage of a few seconds. One sink against the real emulator.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from herald.apns_emulator import generate_signing_key
from herald.broker import free_port
from schemas.events import NotificationAccepted
from streams.apns_sink import ApnsSink
from streams.delivery_attempt import attempt
from streams.device_registry import DeviceRegistry
from tests.support.apns import apns_settings, emulator_for
from tests.support.settings import isolated_settings


async def test_a_push_while_apns_is_unreachable_fails_retriably_and_goes_through_once_it_is_back(
    tmp_path: Path,
) -> None:
    private_pem, public_pem = generate_signing_key()
    emulator = emulator_for(public_pem, port=free_port(), cert_dir=tmp_path / "apns")
    await emulator.start()
    # A sink timeout longer than aioapns' own five connection attempts (~5 s): aioapns gives up first.
    settings = isolated_settings("127.0.0.1:1", "", apns_timeout_seconds=15.0, **apns_settings(emulator, private_pem))
    sink = ApnsSink(settings, DeviceRegistry())
    token = secrets.token_hex(32)
    accepted = NotificationAccepted(
        notification_id="apns-away-1",
        user_id="ada",
        title="Gate changed",
        body="B12",
        priority="high",
        channels=("apns",),
        category="",
        data={},
        requested_at=datetime.now(UTC),
    )
    try:
        sent, error = await attempt(sink, accepted, token, limit=20)
        assert error is None and sent, "the push goes through while APNs is up"
        await emulator.stop()  # GOAWAY to the open connection, then nothing listens
        _, error = await attempt(sink, accepted, token, limit=20)
        assert error is not None, "nothing to push to"
        assert error.retriable, f"an unreachable APNs is transport trouble, to retry: {error.reason}"
        assert "internal error" not in error.reason
        await emulator.start()
        again, error = await attempt(sink, accepted, token, limit=20)
        assert error is None and again == sent, "the retry is the same push (same apns-id)"
        assert [r.status for r in emulator.received] == [200, 200]
    finally:
        await sink.close()
        await emulator.stop()
