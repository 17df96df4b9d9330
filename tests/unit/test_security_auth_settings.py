"""Which key configurations a production role accepts, and the token settings' validation (issue 10)."""

from __future__ import annotations

import pytest

from api.auth import mint_token, refuse_dev_defaults
from engine.settings import DEV_JWT_SECRET, ConfigError, Settings

OWN_SECRET = "an-operator-chosen-secret-of-32-characters-or-more"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "HERALD_JWT_SECRET is not set"),
        ({"HERALD_JWT_SECRET": DEV_JWT_SECRET}, "HERALD_JWT_SECRET is not set"),
        ({"HERALD_JWT_ALGORITHMS": "HS256,RS256", "HERALD_JWT_PUBLIC_KEY": "pem"}, "HERALD_JWT_SECRET is not set"),
        ({"HERALD_JWT_ALGORITHMS": "ES256"}, "needs HERALD_JWT_PUBLIC_KEY or HERALD_JWT_JWKS_URL"),
        ({"HERALD_JWT_SECRET": OWN_SECRET, "HERALD_DEV_MODE": "true"}, "HERALD_DEV_MODE is only for `herald dev`"),
    ],
)
def test_production_roles_refuse_dev_defaults(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        refuse_dev_defaults(Settings.from_env(env))


@pytest.mark.parametrize(
    "env",
    [
        {"HERALD_JWT_SECRET": OWN_SECRET},
        {"HERALD_JWT_ALGORITHMS": "RS256", "HERALD_JWT_PUBLIC_KEY": "pem"},
        {"HERALD_JWT_ALGORITHMS": "RS256,ES256", "HERALD_JWT_JWKS_URL": "https://id.example.com/jwks.json"},
    ],
)
def test_production_roles_accept_their_own_key(env: dict[str, str]) -> None:
    refuse_dev_defaults(Settings.from_env(env))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HERALD_JWT_JWKS_URL": "http://id.example.com/jwks.json"}, "must be https://"),
        ({"HERALD_JWT_JWKS_URL": "file:///etc/passwd"}, "must be https://"),
        ({"HERALD_TOKEN_TTL_SECONDS": "90000"}, "between 1 and HERALD_JWT_MAX_LIFETIME_SECONDS"),
        ({"HERALD_JWT_AUDIENCE": ""}, "HERALD_JWT_AUDIENCE must not be empty"),
        ({"HERALD_JWT_JWKS_REFRESH_SECONDS": "0"}, "at least 1"),
    ],
)
def test_bad_token_settings_fail_with_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:80/jwks"])
def test_jwks_over_plain_http_only_on_loopback(url: str) -> None:
    assert Settings.from_env({"HERALD_JWT_JWKS_URL": url}).jwt_jwks_url == url


def test_minted_lifetime_is_capped() -> None:
    settings = Settings.from_env(
        {"HERALD_JWT_SECRET": OWN_SECRET, "HERALD_JWT_MAX_LIFETIME_SECONDS": "3600", "HERALD_TOKEN_TTL_SECONDS": "600"}
    )
    assert mint_token(settings, "alice", ttl=3600)
    for ttl in (3601, 0, -5):
        with pytest.raises(ValueError, match="1 to 3600 seconds"):
            mint_token(settings, "alice", ttl=ttl)


def test_minting_needs_an_hs_algorithm() -> None:
    settings = Settings.from_env({"HERALD_JWT_ALGORITHMS": "RS256", "HERALD_JWT_PUBLIC_KEY": "pem"})
    with pytest.raises(ValueError, match="needs an HS\\* algorithm"):
        mint_token(settings, "alice")
