"""``herald redeliver``'s plan: what failed is requeued, what succeeded never is."""

from __future__ import annotations

from typing import Any

from engine.audit_redelivery import Requeue, plan
from engine.explain import Fact, explain

ACCEPTED: dict[str, dict[str, Any]] = {
    "a": {"user_id": "u", "channels": ["websocket", "email", "apns"]},
    "b": {"user_id": "u", "channels": ["email"]},
    "c": {"user_id": "u", "channels": ["email"]},
    "d": {"user_id": "u", "channels": ["email"]},
}


def _ev(kind: str, nid: str, channel: str | None = None, target: str | None = None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"notification_id": nid, "user_id": "u"}
    if channel:
        data["channel"] = channel
    if target:
        data["target"] = target
    return kind, data


def test_only_undelivered_targets_in_the_statuses_asked_are_requeued() -> None:
    outcomes = [
        _ev("delivery.failed", "a", "email", "a@x"),
        _ev("delivery.retry_scheduled", "a", "email", "a@x"),
        _ev("delivery.abandoned", "a", "email", "a@x"),
        _ev("delivery.succeeded", "a", "apns", "t1"),
        _ev("delivery.abandoned", "a", "apns", "t2"),
        _ev("delivery.abandoned", "b", "email", "b@x"),
        _ev("delivery.succeeded", "b", "email", "b@x"),  # a later redelivery made it
        _ev("delivery.deferred", "c", "email"),
        _ev("delivery.abandoned", "d", "email", "d@x"),
        _ev("notification.expired", "d"),
        _ev("delivery.abandoned", "zz", "email", "z@x"),  # not accepted in the range
    ]
    assert plan(ACCEPTED, outcomes) == [
        Requeue("a", "u", "email", "a@x", "abandoned"),
        Requeue("a", "u", "apns", "t2", "abandoned"),
    ]
    assert plan(ACCEPTED, outcomes, channels=["apns"]) == [Requeue("a", "u", "apns", "t2", "abandoned")]
    with_deferred = plan(ACCEPTED, outcomes, statuses=["deferred"])
    assert with_deferred == [Requeue("c", "u", "email", None, "deferred")]


def test_a_requeued_target_is_not_requeued_twice_and_why_says_who_asked() -> None:
    outcomes = [
        _ev("delivery.abandoned", "b", "email", "b@x"),
        (
            "delivery.requeued",
            {**_ev("x", "b", "email", "b@x")[1], "operator": "ops", "reason": "outage", "previous_status": "abandoned"},
        ),
    ]
    assert plan(ACCEPTED, outcomes) == []
    facts = [
        Fact("e", 0, i, i, kind, {"type": kind, "time": f"2026-01-01T00:00:0{i}Z", "data": data})
        for i, (kind, data) in enumerate(
            [("notification.accepted", {**ACCEPTED["b"], "notification_id": "b"}), *outcomes]
        )
    ]
    text = "\n".join(explain("b", facts).lines())
    assert "email: requeued to b@x by ops (outage); it was abandoned" in text
