"""The APNs emulator as the sink tests use it: one provider key, one app topic, and the
settings that point Herald's APNs sink at the emulator."""

from __future__ import annotations

from typing import Any

from herald.apns_emulator import ApnsEmulator

TEAM_ID, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.herald"


def emulator_for(public_pem: str, **options: Any) -> ApnsEmulator:
    """An emulator that accepts provider tokens signed with the key of ``public_pem``."""
    return ApnsEmulator(keys={KEY_ID: (TEAM_ID, public_pem)}, topics=[TOPIC], inspect_port=None, **options)


def apns_settings(emulator: ApnsEmulator, private_pem: str) -> dict[str, Any]:
    """Settings overrides that send Herald's pushes to ``emulator`` with the matching key."""
    host, port = emulator.address
    return {
        "apns_key": private_pem,
        "apns_key_id": KEY_ID,
        "apns_team_id": TEAM_ID,
        "apns_topic": TOPIC,
        "apns_server": f"{host}:{port}",
        "apns_ca_path": emulator.ca_path,
    }
