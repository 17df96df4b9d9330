"""SMTP transport security: TLS unless told otherwise, and credentials never in cleartext
over a network (issue 10, item 9).

Before the fix ``HERALD_SMTP_TLS`` defaulted to ``none``: a deployment that set a host and
credentials but forgot the TLS mode sent its password in cleartext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from engine.retry import DeliveryError
from engine.settings import ConfigError, Settings
from herald.smtp_capture import SmtpCapture
from schemas.events import NotificationAccepted
from streams.device_registry import DeviceRegistry
from streams.email_sink import EmailSink


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCapture]:
    """A real SMTP server that, like many relays on a private network, offers no STARTTLS."""
    async with SmtpCapture() as server:
        yield server


def _accepted() -> NotificationAccepted:
    return NotificationAccepted(
        notification_id="n-tls",
        user_id="ursula",
        title="hello",
        body="",
        priority="medium",
        channels=("email",),
        category="",
        data={},
        requested_at=datetime.now(UTC),
        email="ursula@example.test",
    )


def test_tls_is_the_default() -> None:
    assert Settings.from_env({}).smtp_tls == "starttls"


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.5", "192.168.1.1"])
def test_credentials_with_tls_none_to_a_remote_host_refuse_to_start(host: str) -> None:
    env = {"HERALD_SMTP_HOST": host, "HERALD_SMTP_TLS": "none", "HERALD_SMTP_USERNAME": "herald"}
    with pytest.raises(ConfigError, match="cleartext"):
        Settings.from_env(env)
    with pytest.raises(ConfigError, match="cleartext"):
        Settings.from_env({**env, "HERALD_SMTP_USERNAME": "", "HERALD_SMTP_PASSWORD": "s3cret"})


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"])
def test_credentials_with_tls_none_are_allowed_on_loopback(host: str) -> None:
    env = {
        "HERALD_SMTP_HOST": host,
        "HERALD_SMTP_TLS": "none",
        "HERALD_SMTP_USERNAME": "u",
        "HERALD_SMTP_PASSWORD": "p",
    }
    assert Settings.from_env(env).smtp_tls == "none"


def test_tls_none_without_credentials_is_allowed_anywhere() -> None:
    assert Settings.from_env({"HERALD_SMTP_HOST": "relay.internal", "HERALD_SMTP_TLS": "none"}).smtp_tls == "none"


async def test_by_default_no_mail_goes_out_in_cleartext(smtp: SmtpCapture) -> None:
    settings = Settings.from_env({}, smtp_host=smtp.host, smtp_port=smtp.port)
    sink = EmailSink(settings, DeviceRegistry())
    try:
        with pytest.raises(DeliveryError) as failed:
            await sink.send(_accepted(), "ursula@example.test")
    finally:
        await sink.close()
    assert "STARTTLS" in str(failed.value) or "TLS" in str(failed.value)
    assert smtp.received == []


async def test_explicit_none_on_loopback_still_delivers(smtp: SmtpCapture) -> None:
    # What herald dev does with its local capture server (herald/dev_channels.py).
    settings = Settings.from_env({}, smtp_host=smtp.host, smtp_port=smtp.port, smtp_tls="none")
    sink = EmailSink(settings, DeviceRegistry())
    try:
        await sink.send(_accepted(), "ursula@example.test")
    finally:
        await sink.close()
    [mail] = await smtp.wait_for(1, to="ursula@example.test")
    assert mail.subject == "hello"
