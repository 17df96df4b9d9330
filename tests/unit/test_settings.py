"""Configuration is parsed once, with clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.settings import CONCERNS, SECTIONS, ConfigError, EmailSettings, Settings


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
        # A worker only lowers its own CPU priority (raising it needs privileges it should not have).
        ({"HERALD_WORKER_NICE": "-5"}, "HERALD_WORKER_NICE must be at least 0"),
        ({"HERALD_WORKER_NICE": "20"}, "HERALD_WORKER_NICE must be at most 19"),
        ({"HERALD_PROJECTOR_NICE": "-1"}, "HERALD_PROJECTOR_NICE must be at least 0"),
        ({"HERALD_PROJECTOR_NICE": "20"}, "HERALD_PROJECTOR_NICE must be at most 19"),
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


def test_the_constructor_checks_each_value_and_names_the_variable() -> None:
    """Code that builds settings (a test, a benchmark, ``replace``) gets the rules ``from_env`` applies to one value."""
    with pytest.raises(ConfigError, match=r"^HERALD_TOPIC_PARTITIONS must be at least 1$"):
        Settings(topic_partitions=0)
    with pytest.raises(ConfigError, match=r"^HERALD_RETRY_JITTER must be in \[0, 1\)$"):
        Settings().replace(retry_jitter=1.5)
    with pytest.raises(ConfigError, match=r"^HERALD_HTTP_PORT='x' is not a valid int; HERALD_WRITE_BURST must be"):
        Settings.from_env({"HERALD_HTTP_PORT": "x", "HERALD_WRITE_BURST": "0"})


def test_a_mistyped_secret_is_named_but_not_shown() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(smtp_password=12345678)  # type: ignore[arg-type]
    assert str(refused.value) == "HERALD_SMTP_PASSWORD is not a valid str"


def test_each_concern_is_a_class_of_its_own_and_settings_combines_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [title for title, _ in SECTIONS] == [concern.title for concern in CONCERNS]
    with pytest.raises(ConfigError, match="HERALD_SMTP_TLS must be none, starttls or tls"):
        EmailSettings(smtp_tls="ssl")
    assert all(issubclass(Settings, concern) for concern in CONCERNS)
    # Only ``from_env`` reads variables: the constructor is the defaults and its arguments.
    monkeypatch.setenv("HERALD_HTTP_PORT", "8010")
    assert Settings().http_port == 8000
    assert Settings.from_env().http_port == 8010


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]
    assert settings.replace(http_port=1).http_port == 1
    assert settings.http_port == 8000
