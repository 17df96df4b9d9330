"""``bulk.target_refused``: what the bulk send records for a target it refuses before publishing.

Its id is the one the target's request would have had, its fields are bounded whatever the
caller sent, the projector makes it a ``rejected`` notification of the bulk, ``herald why``
explains it, and its bytes count against the bulk's budget (the HTTP path is
``tests/integration/test_bulk_refusals.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from api.auth import TokenVerifier
from api.problems import Problem
from api.rest.bulk import BulkRoutes, Refusal
from engine.explain import Fact, explain
from engine.settings import Settings
from projections.batch import prepare
from projections.notifications import States, fold
from projections.queries import NotificationQueries
from schemas.codec import decode, encode, event_to_data
from schemas.events import BulkTargetRefused
from schemas.ids import derived_id

BULK = "0193aaaa-bbbb-7ccc-8ddd-eeeeffff0000"
TOKEN = "ab" * 32


def test_the_fact_carries_the_id_the_request_would_have_had() -> None:
    unknown = Refusal(TOKEN, "unknown device token", device=True)
    inactive = Refusal(TOKEN, "device token is not active", device=True, user_id="ann")
    user = Refusal("bob", "some reason", device=False, user_id="bob")
    # As BulkRoutes.create derives the ids of the requests it publishes.
    assert unknown.notification_id(BULK) == derived_id(BULK, "", TOKEN)
    assert inactive.notification_id(BULK) == derived_id(BULK, "ann", TOKEN)
    assert user.notification_id(BULK) == derived_id(BULK, "bob", "")
    env = inactive.fact(BULK, "svc", "high")
    assert env.id == derived_id(env.subject or "", "bulk.target_refused")  # a retried bulk records it once
    assert (env.subject, env.correlationid, env.userid, env.priority) == (
        inactive.notification_id(BULK),
        BULK,
        "ann",
        "high",
    )
    assert decode(encode(env)) == env


def test_its_fields_are_bounded_whatever_the_caller_sent() -> None:
    long_user = "u" * 5000
    env = Refusal(long_user, "r" * 5000, device=False, user_id=long_user).fact(BULK, "s" * 500, "low")
    event = env.data
    assert isinstance(event, BulkTargetRefused)
    assert (len(event.target), len(event.reason), len(event.requested_by)) == (200, 1000, 200)
    assert event.user_id is None and env.userid is None  # no recipient a request could have had
    assert len(encode(env)) < 2_000


def test_the_projector_makes_it_a_rejected_notification_of_the_bulk_and_why_explains_it() -> None:
    env = Refusal(TOKEN, "unknown device token", device=True).fact(BULK, "svc", "medium")
    prepare(0, 7, env)  # fits the read models' columns
    states: States = {}
    fold(states, env)
    [state] = states.values()
    assert (state.id, state.user_id, state.status, state.error, state.device_token, state.correlation_id) == (
        env.subject,
        "",
        "rejected",
        "unknown device token",
        TOKEN,
        BULK,
    )
    record = {"type": env.type, "id": env.id, "subject": env.subject, "data": event_to_data(env.data)}
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    found = explain(env.subject or "", [Fact("herald.events", 0, 7, stamp, env.type, record)])
    assert found.decision == "rejected"
    assert found.decision_text == (
        "not accepted: refused by the API before publishing: unknown device token (device_token abababab...abab,"
        f" bulk {BULK} sent by svc); no request was published for it"
    )


def test_refused_targets_count_against_the_bulk_budget() -> None:
    settings = Settings(bulk_max_encoded_bytes=10_000)
    routes = BulkRoutes(
        TokenVerifier(settings),
        NotificationQueries(create_async_engine("sqlite+aiosqlite:///:memory:")),
        None,
        settings,
    )
    routes._check_budget(600, 10, 4_000)
    with pytest.raises(Problem) as caught:
        routes._check_budget(600, 10, 4_001)
    assert caught.value.status == 413
    assert "4001 bytes of refused targets" in caught.value.detail
