"""The webhook channel's pure rules: Standard Webhooks signatures and which URLs may be called."""

from __future__ import annotations

import pytest

from engine.webhook import (
    InvalidWebhook,
    address_allowed,
    check_url,
    message_id,
    reachable,
    signature,
    signing_key,
    verify,
)

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    key = signing_key(SPEC_SECRET)
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    assert verify(key, {**headers, "webhook-signature": expected}, body, now=1614265330 + 299) is None
    assert verify(key, {**headers, "webhook-signature": expected}, body, now=1614265330 + 301) == (
        "stale or future webhook-timestamp"
    )
    assert verify(key, {**headers, "webhook-signature": expected}, body + b" ", now=1614265330) == (
        "no matching v1 signature"
    )


def test_a_retry_carries_the_same_id_and_another_url_another() -> None:
    assert message_id("n1", "https://a.example/x") == message_id("n1", "https://a.example/x")
    assert message_id("n1", "https://a.example/x") != message_id("n1", "https://b.example/x")


def test_a_short_or_malformed_secret_is_refused() -> None:
    with pytest.raises(InvalidWebhook, match="at least 24 bytes"):
        signing_key("whsec_c2hvcnQ=")
    with pytest.raises(InvalidWebhook, match="base64"):
        signing_key("whsec_not base64!")
    assert signing_key("x" * 24) == b"x" * 24


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/in", "must be https://"),
        ("https://169.254.169.254/latest/meta-data", "internal address"),
        ("https://10.0.0.5/in", "internal address"),
        ("https://[::1]/in", "internal address"),
        ("https://localhost/in", "internal address"),
        ("https://user:pw@hooks.example.com/in", "no credentials"),
        ("https:///in", "needs a host"),
        ("https://hooks.example.com/ in", "no spaces"),
        ("https://hooks.example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_urls_herald_will_not_call(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhook, match=why):
        check_url(url, allow_loopback_http=False)


def test_https_to_a_public_host_and_loopback_http_where_allowed_are_accepted() -> None:
    assert check_url("https://hooks.example.com/in?x=1", allow_loopback_http=False)
    assert check_url("https://93.184.215.14/in", allow_loopback_http=False)
    assert check_url("http://127.0.0.1:8081/in", allow_loopback_http=True)
    with pytest.raises(InvalidWebhook, match="internal address"):
        check_url("http://127.0.0.1:8081/in", allow_loopback_http=False)
    with pytest.raises(InvalidWebhook, match="internal address"):
        check_url("http://192.168.1.1/in", allow_loopback_http=True)


@pytest.mark.parametrize(
    ("address", "loopback_allowed", "allowed"),
    [
        ("93.184.215.14", False, True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", False, True),
        ("127.0.0.1", False, False),
        ("127.0.0.1", True, True),
        ("::1", True, True),
        ("10.1.2.3", True, False),
        ("169.254.169.254", False, False),
        ("::ffff:10.0.0.1", False, False),
        ("fe80::1%eth0", False, False),
        ("224.0.0.1", False, False),
        ("not an address", False, False),
    ],
)
def test_a_resolved_address_is_connected_to_only_when_public_or_allowed_loopback(
    address: str, loopback_allowed: bool, allowed: bool
) -> None:
    assert address_allowed(address, allow_loopback=loopback_allowed) is allowed


def test_a_name_resolving_only_inside_the_network_is_refused_and_mixed_answers_keep_the_public_ones() -> None:
    with pytest.raises(InvalidWebhook, match=r"hooks.corp resolves only to internal addresses \(10.0.0.5\)"):
        reachable("hooks.corp", ["10.0.0.5"], allow_loopback=False)
    assert reachable("hooks.example.com", ["10.0.0.5", "93.184.215.14"], allow_loopback=False) == ["93.184.215.14"]
