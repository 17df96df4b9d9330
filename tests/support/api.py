"""REST API test support: a module-wide stack on its own database, and a JSON client."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg

from api.auth import mint_token
from engine.settings import Settings
from tests.support.settings import isolated_settings as test_settings

PG_ADMIN_URL = os.environ.get("HERALD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def own_database(prefix: str = "herald_api") -> Iterator[str]:
    """A Postgres database for one test module, dropped afterwards (SQLAlchemy psycopg URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def isolated_settings(kafka_bootstrap: str, database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings with their own topics and groups and the Tansu workarounds (``tests/support/settings.py``)."""
    return test_settings(kafka_bootstrap, redis_url, database_url=database_url, **overrides)


@dataclass
class Reply:
    """An HTTP answer: status, headers and decoded JSON body (``None`` when empty)."""

    status: int
    headers: dict[str, str]
    body: Any
    content_type: str


class Api:
    """A caller of the REST API with one bearer token."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = base
        self.token = token

    @classmethod
    def for_user(cls, session: aiohttp.ClientSession, base: str, settings: Settings, user: str, *scopes: str) -> Api:
        """A client whose token has ``sub=user`` and ``scopes``."""
        return cls(session, base, mint_token(settings, user, scopes=scopes))

    async def call(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None, params: Any = None
    ) -> Reply:
        """Send a request and decode the answer."""
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        url = path if path.startswith("http") else self.base + path
        async with self.session.request(method, url, json=json, headers=all_headers, params=params) as resp:
            text = await resp.text()
            body = None
            if text:
                import json as _json

                body = _json.loads(text)
            return Reply(resp.status, dict(resp.headers), body, resp.content_type)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.call("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Reply:
        return await self.call("PATCH", path, **kw)

    async def put(self, path: str, **kw: Any) -> Reply:
        return await self.call("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)


def unique(name: str) -> str:
    """A user id no other test uses."""
    return f"{name}-{uuid.uuid4().hex[:6]}"
