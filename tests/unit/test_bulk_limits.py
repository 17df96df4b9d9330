"""Default bulk bounds (issue 9, target 5): a 100,000-user campaign of ordinary notifications
fits, while the amplification a large body could cause is still refused (413) before publishing.

The size check is exercised directly (the route needs a broker to get that far; the 413 path
over HTTP is ``tests/integration/test_security_devices.py::
test_a_bulk_whose_requests_would_be_dead_lettered_is_refused_before_publishing``).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from api.auth import TokenVerifier
from api.problems import Problem
from api.rest.bulk import MAX_BODY_BYTES, BulkRoutes
from engine.settings import Settings
from projections.queries import NotificationQueries
from schemas.ids import uuid7

CAMPAIGN = {"title": "Flash sale", "body": "Everything -20% for an hour", "channels": ["websocket"]}


def _routes(settings: Settings) -> BulkRoutes:
    queries = NotificationQueries(create_async_engine("sqlite+aiosqlite:///:memory:"))
    return BulkRoutes(TokenVerifier(settings), queries, None, settings)


def _users(count: int, width: int) -> list[tuple[str, str | None]]:
    return [(f"user-{i:0{width - 5}d}", None) for i in range(count)]


def _check(settings: Settings, body: dict[str, Any], recipients: list[tuple[str, str | None]]) -> None:
    assert len(recipients) <= settings.bulk_max_targets, "more targets than a bulk may name"
    _routes(settings)._check_size(dict(body), uuid7(), recipients)


def test_100000_users_of_an_ordinary_notification_fit_the_default_bounds() -> None:
    settings = Settings()
    _check(settings, CAMPAIGN, _users(100_000, width=36))  # ids as long as a UUID


def test_100000_targets_with_a_longer_body_or_a_large_payload_are_refused_by_default() -> None:
    settings = Settings()
    refused = []
    for content in ({"body": "x" * 1_000}, {"data": {"blob": "y" * 10_000}}):  # the latter near ingest's limit
        with pytest.raises(Problem) as caught:
            _check(settings, {**CAMPAIGN, **content}, _users(100_000, width=36))
        refused.append(caught.value)
    for problem in refused:
        assert problem.status == 413
        assert "split it" in problem.detail
        assert f"at most {settings.bulk_max_encoded_bytes}" in problem.detail


def test_a_body_at_the_read_limit_publishes_at_most_the_bulk_budget() -> None:
    settings = Settings()
    # 8 MiB of ~80-character user ids (100,000 of them): accepted only because it fits the budget.
    width = MAX_BODY_BYTES // 100_000 - 4  # quotes, comma and space around each id
    recipients = _users(100_000, width=width)
    _check(settings, CAMPAIGN, recipients)
    with pytest.raises(Problem) as caught:
        _check(settings.replace(bulk_max_encoded_bytes=32 * 1024 * 1024), CAMPAIGN, recipients)
    assert caught.value.status == 413
