"""Tokens of an identity provider: RS256/ES256 verified against its JWKS URL (issue 10, "Also").

The provider is a real HTTP server in the test serving a JWK set; the API fetches it at
start, refreshes it, and picks up a rotated key when a token names it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api.jwks import MIN_FETCH_INTERVAL
from engine.settings import DEV_JWT_SECRET, Settings
from herald.stack import run_stack
from tests.support.api import isolated_settings, own_database
from tests.support.waiting import eventually

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _jwk(kid: str, private: PrivateKey) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        alg = "RS256"
    else:
        data = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        alg = "ES256"
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Provider:
    """An identity provider's JWKS endpoint: the keys it publishes and how often it was asked."""

    keys: dict[str, PrivateKey] = field(default_factory=dict)
    fetches: int = 0
    down: bool = False
    url: str = ""

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503, text="maintenance")
        return web.json_response({"keys": [_jwk(kid, key) for kid, key in self.keys.items()]})

    def token(self, kid: str, key: PrivateKey | None = None, *, alg: str | None = None, **extra: object) -> str:
        signer = key or self.keys[kid]
        algorithm = alg or ("RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(_claims(**extra), signer, algorithm=algorithm, headers={"kid": kid})


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "carol", "iss": "https://id.example.com", "aud": "herald", "iat": now, "exp": now + 300, **extra}


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    served = Provider(
        keys={"rsa-1": rsa.generate_private_key(65537, 2048), "ec-1": ec.generate_private_key(ec.SECP256R1())}
    )
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", served.jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json"
    try:
        yield served
    finally:
        await runner.cleanup()


def _settings(kafka_bootstrap: str, url: str, redis_url: str, provider: Provider) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        url,
        redis_url,
        jwt_algorithms=("RS256", "ES256"),
        jwt_jwks_url=provider.url,
        jwt_issuer="https://id.example.com",
        jwt_jwks_refresh_seconds=3600.0,  # only the rotation path fetches during the test
    )


async def _status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    async with http.get(base + "/api/notifications", headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.status != 200:
            assert resp.content_type == "application/problem+json"
        return resp.status


async def test_provider_tokens_verified_against_its_jwks_with_rotation(
    kafka_bootstrap: str, redis_url: str, provider: Provider
) -> None:
    stranger = rsa.generate_private_key(65537, 2048)
    with own_database("herald_jwks") as url:
        settings = _settings(kafka_bootstrap, url, redis_url, provider)
        async with run_stack(settings, worker=False, projector=False) as stack, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{stack.http_port}"
            assert provider.fetches == 1  # fetched once, before the port opened
            assert await _status(http, base, provider.token("rsa-1")) == 200
            assert await _status(http, base, provider.token("ec-1")) == 200
            refused = {
                "signed by another key": provider.token("rsa-1", stranger),
                "ES256 claimed for an RSA key": provider.token("rsa-1", provider.keys["ec-1"], alg="ES256"),
                "HS256 with the dev secret": jwt.encode(_claims(), DEV_JWT_SECRET, headers={"kid": "rsa-1"}),
                "no kid": jwt.encode(_claims(), provider.keys["rsa-1"], algorithm="RS256"),
                "another audience": provider.token("rsa-1", aud="billing"),
                "a 100-year token": provider.token("rsa-1", exp=int(time.time()) + 100 * 365 * 24 * 3600),
            }
            for case, token in refused.items():
                assert await _status(http, base, token) == 401, case
            assert provider.fetches == 1  # none of these named an unknown key: no fetch

            # Key rotation: the provider publishes rsa-2; the first token naming it triggers a fetch.
            provider.keys["rsa-2"] = rsa.generate_private_key(65537, 2048)
            rotated = provider.token("rsa-2")

            async def accepted() -> bool:
                return await _status(http, base, rotated) == 200

            await eventually(accepted, timeout=MIN_FETCH_INTERVAL + 10, interval=0.2, what="the rotated key accepted")
            assert provider.fetches == 2
            # Unknown key ids in a burst of forged tokens cost at most one fetch per interval.
            for n in range(20):
                assert await _status(http, base, provider.token(f"forged-{n}", stranger)) == 401
            assert provider.fetches <= 3


async def test_provider_outage_keeps_the_keys_it_had(kafka_bootstrap: str, redis_url: str, provider: Provider) -> None:
    with own_database("herald_jwks") as url:
        settings = _settings(kafka_bootstrap, url, redis_url, provider).replace(jwt_jwks_refresh_seconds=1.0)
        async with run_stack(settings, worker=False, projector=False) as stack, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{stack.http_port}"
            provider.down = True
            before = provider.fetches

            async def failed_refresh() -> bool:
                return provider.fetches > before

            await eventually(failed_refresh, timeout=MIN_FETCH_INTERVAL + 10, what="a refresh during the outage")
            assert await _status(http, base, provider.token("rsa-1")) == 200


async def test_api_does_not_start_when_the_jwks_cannot_be_fetched(
    kafka_bootstrap: str, redis_url: str, provider: Provider
) -> None:
    provider.down = True
    with own_database("herald_jwks") as url:
        settings = _settings(kafka_bootstrap, url, redis_url, provider)
        with pytest.raises(jwt.PyJWKClientError, match="Fail to fetch data"):
            async with run_stack(settings, worker=False, projector=False):
                pass  # pragma: no cover - the role must not start
