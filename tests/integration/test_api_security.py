"""Who may see and do what: tokens, algorithms, scopes, other users' ids (404, never 403)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.auth import SCOPE_ADMIN, TokenVerifier, mint_token
from api.problems import Problem
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.api import Api, isolated_settings, own_database
from tests.support.event_log import Log, append
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
async def secured(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings, dict[str, str]]]:
    with own_database() as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings, worker=False) as stack:
            log = Log()
            ids = {"alice": log.accepted("alice", title="alice's secret"), "bob": log.accepted("bob")}
            await append(kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
            assert stack.engine is not None
            from projections.queries import NotificationQueries

            queries = NotificationQueries(stack.engine)

            async def projected() -> bool:
                return all([await queries.exists(i) for i in ids.values()])

            await eventually(projected, what="the seeded notifications")
            yield stack, settings, ids


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(secured: tuple[Stack, Settings, dict[str, str]]) -> str:
    return f"http://127.0.0.1:{secured[0].http_port}"


def claims(settings: Settings, sub: str = "alice", **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": sub, "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "iat": now, "exp": now + 600, **extra}


async def test_another_users_notification_is_404_like_an_unknown_one(secured, http) -> None:  # type: ignore[no-untyped-def]
    _, settings, ids = secured
    bob = Api.for_user(http, base(secured), settings, "bob")
    for method, path in (
        ("GET", f"/api/notifications/{ids['alice']}"),
        ("GET", f"/api/notifications/{ids['alice']}/events"),
        ("PATCH", f"/api/notifications/{ids['alice']}/read"),
        ("DELETE", f"/api/notifications/{ids['alice']}"),
    ):
        theirs = await bob.call(method, path)
        unknown = await bob.call(method, path.replace(ids["alice"], "no-such-id"))
        assert (theirs.status, theirs.body) == (unknown.status, unknown.body) == (404, theirs.body), path
        assert theirs.content_type == "application/problem+json"
        assert "alice" not in str(theirs.body)
    listed = await bob.get("/api/notifications")
    assert [i["id"] for i in listed.body["results"]] == [ids["bob"]]
    # alice's notification is untouched by bob's attempts
    alice = Api.for_user(http, base(secured), settings, "alice")
    mine = await alice.get(f"/api/notifications/{ids['alice']}")
    assert mine.status == 200
    assert mine.body["read_at"] is None


async def test_reading_others_data_needs_admin(secured, http) -> None:  # type: ignore[no-untyped-def]
    _, settings, ids = secured
    bob = Api.for_user(http, base(secured), settings, "bob")
    for path in (
        "/api/notifications?user_id=alice",
        "/api/notifications/stats?user_id=alice",
        "/api/notifications/stats?global=true",
        "/api/devices?user_id=alice",
    ):
        reply = await bob.get(path)
        assert (reply.status, reply.content_type) == (403, "application/problem+json"), path
    admin = Api.for_user(http, base(secured), settings, "ops", SCOPE_ADMIN)
    assert [i["id"] for i in (await admin.get("/api/notifications?user_id=alice")).body["results"]] == [ids["alice"]]
    assert (await admin.get(f"/api/notifications/{ids['alice']}")).status == 200
    assert (await admin.get("/api/notifications/stats?global=true")).body["total"] >= 2


async def test_bad_tokens_are_401(secured, http) -> None:  # type: ignore[no-untyped-def]
    _, settings, _ = secured
    secret = settings.jwt_secret
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = {**claims(settings), "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    tokens = {
        "expired": jwt.encode(expired, secret, algorithm="HS256"),
        "wrong signature": jwt.encode(claims(settings), "another-secret-of-at-least-32-chars!!", algorithm="HS256"),
        "alg none": jwt.encode(claims(settings), None, algorithm="none"),
        "alg none, upper case": _unsigned(claims(settings), "NONE"),
        "wrong algorithm (HS384)": _hs(claims(settings), secret.encode(), "HS384"),
        "wrong algorithm (RS256)": jwt.encode(claims(settings), rsa_key, algorithm="RS256"),
        "malformed": "not.a.jwt",
        "garbage": "%%%",
        "no subject": jwt.encode({k: v for k, v in claims(settings).items() if k != "sub"}, secret, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims(settings, iss="someone-else"), secret, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in claims(settings).items() if k != "exp"}, secret, algorithm="HS256"),
    }
    for name, token in tokens.items():
        async with http.get(base(secured) + "/api/notifications", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401, name
            assert resp.content_type == "application/problem+json", name
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), name
    for headers in ({}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer"}):
        async with http.get(base(secured) + "/api/notifications/stats", headers=headers) as resp:
            assert resp.status == 401
    valid = mint_token(settings, "alice")
    async with http.get(base(secured) + "/api/notifications", headers={"Authorization": f"Bearer {valid}"}) as resp:
        assert resp.status == 200


def _unsigned(payload: dict[str, object], alg: str) -> str:
    import base64
    import json

    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(payload)}."


def _pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithms_are_pinned(algorithm: str) -> None:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    settings = Settings.from_env({}, jwt_algorithms=(algorithm,), jwt_public_key=_pem(private))
    verifier = TokenVerifier(settings)
    good = jwt.encode(claims(settings, scope="admin"), private, algorithm=algorithm)
    principal = verifier.verify(good)
    assert principal.subject == "alice"
    assert principal.has(SCOPE_ADMIN)
    # The classic confusion: an HS256 token "signed" with the public key must not pass.
    confused = _hs256_with_key(claims(settings), _pem(private).encode())
    other = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa.generate_private_key(65537, 2048)
    for token in (
        confused,
        jwt.encode(claims(settings), other, algorithm=algorithm),
        _unsigned(claims(settings), "none"),
    ):
        with pytest.raises(Problem) as info:
            verifier.verify(token)
        assert info.value.status == 401


def _hs256_with_key(payload: dict[str, object], key: bytes) -> str:
    return _hs(payload, key, "HS256")


def _hs(payload: dict[str, object], key: bytes, alg: str) -> str:
    """An HMAC-signed JWT built by hand (PyJWT refuses, rightly, some of the keys we need here)."""
    import base64
    import hashlib
    import hmac
    import json

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    signing_input = f"{part(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{part(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{part(signature)}"


async def test_user_token_cannot_write_for_others(secured, http) -> None:  # type: ignore[no-untyped-def]
    _, settings, _ = secured
    bob = Api.for_user(http, base(secured), settings, "bob")
    for method, path, body in (
        ("POST", "/api/notifications", {"title": "spoof", "user_id": "alice"}),
        ("POST", "/api/notifications/bulk", {"title": "spoof", "user_ids": ["alice", "bob"]}),
        ("PUT", "/api/users/alice/contact", {"email": "evil@example.com"}),
        ("POST", "/api/devices", {"device_token": "e" * 64, "user_id": "alice"}),
    ):
        reply = await bob.call(method, path, json=body)
        assert (reply.status, reply.content_type) == (403, "application/problem+json"), path
