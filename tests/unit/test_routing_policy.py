"""Routing and the schedule of delayed work: deliver_after, expiry, fallback, cancellation."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import schedule
from engine.priority import Priority
from engine.routing import due, fire, plan_route
from engine.schedule import Agenda
from schemas.events import DeliveryDeferred, NotificationExpired
from tests.unit.policy_support import NOW, accepted, assert_valid


def test_plain_request_goes_to_every_channel_now() -> None:
    plan = plan_route(accepted(channels=("all",)), now=NOW, fallback_seconds=0)
    assert plan.now == ("websocket", "email", "apns")
    assert plan.later == ()
    assert plan.events == ()


def test_expired_request_is_never_routed() -> None:
    env = accepted(expires_at=NOW - timedelta(seconds=1))
    plan = plan_route(env, now=NOW, fallback_seconds=600)
    assert plan.now == ()
    assert plan.later == ()
    [expired] = plan.events
    assert isinstance(expired.data, NotificationExpired)
    assert expired.data.channel is None
    assert_valid(expired)


def test_deliver_after_schedules_every_channel_with_a_reason() -> None:
    at = NOW + timedelta(minutes=5)
    plan = plan_route(accepted(channels=("websocket", "apns"), deliver_after=at), now=NOW, fallback_seconds=0)
    assert plan.now == ()
    assert [(d.kind, d.channel, d.due_at) for d in plan.later] == [
        ("deliver", "websocket", at.timestamp()),
        ("deliver", "apns", at.timestamp()),
    ]
    assert all(isinstance(e.data, DeliveryDeferred) and e.data.reason.startswith("deliver_after") for e in plan.events)
    assert len({e.id for e in plan.events}) == 2


def test_fallback_sends_websocket_now_and_email_later_only_when_both_are_asked() -> None:
    plan = plan_route(accepted(channels=("websocket", "email")), now=NOW, fallback_seconds=600)
    assert plan.now == ("websocket",)
    [email] = plan.later
    assert (email.kind, email.channel, email.due_at) == ("fallback", "email", (NOW + timedelta(minutes=10)).timestamp())
    [deferred] = plan.events
    assert isinstance(deferred.data, DeliveryDeferred)
    assert deferred.data.reason.startswith("fallback")
    assert plan_route(accepted(channels=("email",)), now=NOW, fallback_seconds=600).now == ("email",)
    assert plan_route(accepted(channels=("websocket", "email")), now=NOW, fallback_seconds=0).now == (
        "websocket",
        "email",
    )


def test_due_work_past_its_expiry_becomes_expired_for_its_channel() -> None:
    env = accepted(expires_at=NOW + timedelta(minutes=1))
    item = due("retry", env, "email", NOW + timedelta(minutes=2), attempt=2, target="a@x.test")
    cause, expired = fire(item, now=NOW + timedelta(seconds=30))
    assert cause == env
    assert expired is None
    _, expired = fire(item, now=NOW + timedelta(minutes=2))
    assert expired is not None
    assert isinstance(expired.data, NotificationExpired)
    assert expired.data.channel == "email"
    assert_valid(expired)


def test_a_cancel_removes_pending_work_and_drops_work_arriving_later() -> None:
    env = accepted("n1", channels=("websocket", "email"))
    fallback = due("fallback", env, "email", NOW + timedelta(minutes=10))
    agenda, ok = schedule.add(Agenda(), fallback, now=NOW.timestamp(), memory_seconds=3600)
    assert ok is None
    agenda, removed = schedule.cancel(agenda, "n1", "read", now=NOW.timestamp(), memory_seconds=3600)
    assert removed == (fallback,)
    assert agenda.items == ()
    retry = due("retry", env, "email", NOW + timedelta(minutes=1), attempt=2, target="a@x.test")
    agenda, why = schedule.add(agenda, retry, now=NOW.timestamp() + 5, memory_seconds=3600)
    assert why == "read"
    assert agenda.items == ()
    # The cancel is forgotten after the memory span.
    agenda, why = schedule.add(agenda, retry, now=NOW.timestamp() + 3601, memory_seconds=3600)
    assert why is None
    assert agenda.items == (retry,)


@settings(max_examples=100, deadline=None)
@given(
    offsets=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 600)), max_size=30),
    now=st.integers(0, 700),
    cancelled=st.sets(st.integers(0, 9), max_size=3),
)
def test_take_due_fires_exactly_the_due_items_once(
    offsets: list[tuple[int, int]], now: int, cancelled: set[int]
) -> None:
    agenda = Agenda()
    for n, secs in offsets:
        env = accepted(f"n{n}", priority=Priority.HIGH)
        agenda, _ = schedule.add(
            agenda, due("deliver", env, "websocket", NOW + timedelta(seconds=secs)), now=0, memory_seconds=1e9
        )
    for n in cancelled:
        agenda, _ = schedule.cancel(agenda, f"n{n}", "read", now=0, memory_seconds=1e9)
    assert Agenda.from_json(agenda.to_json()) == agenda
    at = NOW.timestamp() + now
    after, fired = schedule.take_due(agenda, now=at, memory_seconds=1e9)
    assert all(item.due_at <= at for item in fired)
    assert all(item.due_at > at for item in after.items)
    assert sorted(i.key for i in (*fired, *after.items)) == sorted(i.key for i in agenda.items)
    assert not any(i.notification_id in {f"n{n}" for n in cancelled} for i in fired)
    assert schedule.take_due(after, now=at, memory_seconds=1e9)[1] == ()
