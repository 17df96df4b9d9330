"""Fixtures shared by the integration modules that push through the APNs emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald.apns_emulator import ApnsEmulator, generate_signing_key
from tests.support.apns import emulator_for


@pytest.fixture(scope="module")
def signing_key() -> tuple[str, str]:
    """A provider signing key: (private PEM for Herald, public PEM for the emulator)."""
    return generate_signing_key()


@pytest.fixture(scope="module")
async def emulator(signing_key: tuple[str, str]) -> AsyncIterator[ApnsEmulator]:
    """A running APNs emulator that accepts ``signing_key``."""
    async with emulator_for(signing_key[1]) as emu:
        yield emu
