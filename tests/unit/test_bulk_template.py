"""A bulk's records for user ids are its request template with the user put in: byte for byte what
building, validating and encoding each request makes."""

from __future__ import annotations

from typing import Any

import pytest

from api.rest.bulk import _Template
from api.rest.envelopes import build_request
from engine.topics import TopicNames
from schemas.codec import encode
from schemas.ids import derived_id

BODIES: list[dict[str, Any]] = [
    {"title": "Flash sale", "body": "Everything -20% for an hour", "channels": ["websocket"]},
    {"title": "ünï\u2028cödé", "priority": "high", "data": {"n": 1, "big": 2**70, "nested": {"a": [1, None]}}},
    {"title": "t", "priority": "low", "channels": ["websocket", "email"], "deliver_after": "2030-01-01T00:00:00Z"},
]
USERS = ["ana", 'quo"te', "ünï\u2028cödé", "back\\slash", "x" * 200, "bulk-content-check"]


@pytest.mark.parametrize("body", BODIES)
def test_a_users_record_is_what_building_and_encoding_its_request_makes(body: dict[str, Any]) -> None:
    names = TopicNames("p.")
    template = _Template.of(body, "bulk-1", names)
    for user in USERS:
        assert template.fits(user)
        nid = derived_id("bulk-1", user, "")
        env, priority = build_request(
            {**body, "user_id": user}, notification_id=nid, correlation_id="bulk-1", now=template.now
        )
        record = template.record(nid, user)
        assert record.value == encode(env), user
        assert (record.topic, record.key, record.headers) == (names.request(priority), user.encode(), [])


def test_a_user_id_the_schema_refuses_does_not_fit() -> None:
    template = _Template.of(BODIES[0], "bulk-1", TopicNames(""))
    assert not template.fits("x" * 201)
    assert not template.fits("")
