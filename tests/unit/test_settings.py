"""Configuration is parsed once, with clear errors."""

from __future__ import annotations

import pytest

from engine.settings import ConfigError, Settings


def test_env_values_are_typed() -> None:
    s = Settings.from_env(
        {"HERALD_HTTP_PORT": "8010", "HERALD_JWT_ALGORITHMS": "HS256, ES256", "HERALD_DEV_MODE": "true"}
    )
    assert (s.http_port, s.jwt_algorithms, s.dev_mode) == (8010, ("HS256", "ES256"), True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HERALD_HTTP_PORT": "eighty"}, "HERALD_HTTP_PORT='eighty' is not a valid int"),
        ({"HERALD_JWT_ALGORITHMS": "none"}, "none is never allowed"),
        ({"HERALD_JWT_SECRET": "short"}, "at least 32 characters"),
        ({"HERALD_TOPIC_PARTITIONS": "0"}, "at least 1"),
    ],
)
def test_bad_values_fail_with_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_secret_is_not_in_repr() -> None:
    assert "super-secret" not in repr(Settings.from_env({"HERALD_JWT_SECRET": "super-secret" * 4}))


def test_to_env_round_trips_through_from_env() -> None:
    """A role started as a process with ``settings.to_env()`` reads exactly these settings."""
    settings = Settings.from_env(
        {}, jwt_secret="s" * 40, apns_sandbox=True, jwt_algorithms=("HS256", "RS256"), priority_isolation=False
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_the_rate_window_must_fit_in_the_dedupe_window() -> None:
    """The rate windows are rebuilt from the dedupe entries after a restart: a longer one would lose admissions."""
    with pytest.raises(ConfigError, match="HERALD_RATE_LIMIT_WINDOW_SECONDS"):
        Settings.from_env({"HERALD_RATE_LIMIT_WINDOW_SECONDS": "7200", "HERALD_DEDUPE_WINDOW_SECONDS": "3600"})
