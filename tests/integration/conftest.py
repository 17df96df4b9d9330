"""Fixtures shared by the integration modules that push through the APNs emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from herald.apns_emulator import ApnsEmulator, generate_signing_key
from projections.database import create_engine
from tests.support.api import own_database
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


@pytest.fixture(params=["postgresql", "sqlite"])
async def empty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}")
        yield engine
        await engine.dispose()
        return
    with own_database("herald_empty") as url:
        engine = create_engine(url)
        yield engine
        await engine.dispose()
