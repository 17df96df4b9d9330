"""The APNs environment is a deliberate choice (issue 10, item 16)."""

from __future__ import annotations

import pytest

from engine.settings import ConfigError, Settings


def test_an_apns_key_needs_an_explicit_environment() -> None:
    apns = {"HERALD_APNS_KEY_PATH": "/k.p8", "HERALD_APNS_KEY_ID": "K", "HERALD_APNS_TEAM_ID": "T"}
    apns["HERALD_APNS_TOPIC"] = "com.example"
    with pytest.raises(ConfigError, match="HERALD_APNS_SANDBOX is required with an APNs key"):
        Settings.from_env(apns)
    assert Settings.from_env({**apns, "HERALD_APNS_SANDBOX": "false"}).apns_sandbox is False
    assert Settings.from_env({**apns, "HERALD_APNS_SANDBOX": "true"}).apns_sandbox is True
    assert Settings.from_env({}).apns_sandbox is None  # no key, no APNs: nothing to choose
