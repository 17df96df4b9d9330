"""Routing with the recipient's contact preferences: channels turned off, per-user email fallback."""

from __future__ import annotations

from datetime import timedelta

from engine.routing import TURNED_OFF, ContactPreferences, plan_route
from schemas.events import DeliveryCancelled, DeliveryDeferred
from tests.unit.policy_support import NOW, accepted, assert_valid


def _prefs(*channels: str, minutes: int | None = None) -> ContactPreferences:
    return ContactPreferences(frozenset(channels), minutes)


def test_a_channel_the_contact_leaves_out_is_cancelled_not_delivered() -> None:
    plan = plan_route(accepted(channels=("all",)), now=NOW, fallback_seconds=0, contact=_prefs("email"))
    assert plan.now == ("email",)
    cancelled = [e.data for e in plan.events]
    assert [(c.channel, c.reason) for c in cancelled if isinstance(c, DeliveryCancelled)] == [
        ("websocket", TURNED_OFF),
        ("apns", TURNED_OFF),
    ]
    for env in plan.events:
        assert_valid(env)


def test_every_requested_channel_turned_off_leaves_nothing_to_deliver() -> None:
    plan = plan_route(accepted(channels=("apns",)), now=NOW, fallback_seconds=0, contact=_prefs())
    assert plan.now == ()
    assert plan.later == ()
    [cancelled] = plan.events
    assert isinstance(cancelled.data, DeliveryCancelled) and cancelled.data.channel == "apns"


def test_the_user_s_fallback_minutes_win_over_the_global_delay() -> None:
    env = accepted(channels=("websocket", "email"))
    plan = plan_route(env, now=NOW, fallback_seconds=600, contact=_prefs("websocket", "email", minutes=2))
    assert plan.now == ("websocket",)
    [item] = plan.later
    assert (item.kind, item.channel, item.due_at) == ("fallback", "email", (NOW + timedelta(minutes=2)).timestamp())
    [deferred] = plan.events
    assert isinstance(deferred.data, DeliveryDeferred) and deferred.data.reason.startswith("fallback")


def test_a_user_s_fallback_applies_even_when_the_deployment_has_none() -> None:
    env = accepted(channels=("websocket", "email"))
    plan = plan_route(env, now=NOW, fallback_seconds=0, contact=_prefs("websocket", "email", minutes=5))
    assert plan.now == ("websocket",)
    assert [i.due_at for i in plan.later] == [(NOW + timedelta(minutes=5)).timestamp()]


def test_zero_minutes_turns_the_fallback_off_for_that_user() -> None:
    env = accepted(channels=("websocket", "email"))
    plan = plan_route(env, now=NOW, fallback_seconds=600, contact=_prefs("websocket", "email", minutes=0))
    assert plan.now == ("websocket", "email")
    assert plan.later == ()


def test_no_minutes_in_the_contact_keeps_the_deployment_default() -> None:
    env = accepted(channels=("websocket", "email"))
    plan = plan_route(env, now=NOW, fallback_seconds=600, contact=_prefs("websocket", "email"))
    assert [i.due_at for i in plan.later] == [(NOW + timedelta(seconds=600)).timestamp()]


def test_no_fallback_when_the_contact_turned_the_websocket_off() -> None:
    # The fallback is "email if the live notification goes unread": without the live channel
    # the email goes at once.
    env = accepted(channels=("websocket", "email"))
    plan = plan_route(env, now=NOW, fallback_seconds=600, contact=_prefs("email", minutes=3))
    assert plan.now == ("email",)
    assert plan.later == ()
