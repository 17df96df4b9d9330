"""``herald simulate``: recorded decisions replayed through a candidate policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.audit_simulation import BadPolicy, Policy, Recorded, recorded_fact, simulate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CURRENT = Policy(100, 50, 2, 3600, 86400, 60.0)


def _accepted(user: str, i: int, priority: str = "low", **kw: object) -> Recorded:
    return Recorded("notification.accepted", T0 + timedelta(seconds=i), user, f"{user}-{i}", priority, **kw)  # type: ignore[arg-type]


def test_a_looser_limit_accepts_what_was_rate_limited_and_names_the_user() -> None:
    facts = [
        _accepted("ann", 0),
        _accepted("ann", 1),
        Recorded("notification.rate_limited", T0 + timedelta(seconds=2), "ann", "ann-2", "low"),
        Recorded("notification.rate_limited", T0 + timedelta(seconds=3), "ann", "ann-3", "low"),
        _accepted("bob", 4, "high"),
    ]
    report = simulate(facts, CURRENT, CURRENT.with_file({"rate_limit_low": 3}))
    assert report.recorded[("low", "accepted")] == 2 and report.recorded[("low", "rate_limited")] == 2
    assert report.candidate[("low", "accepted")] == 3 and report.candidate[("low", "rate_limited")] == 1
    assert report.candidate[("high", "accepted")] == 1
    assert report.user_changes == {"ann": 1, "bob": 0}
    assert "  ann: +1" in report.lines()
    assert report.as_json()["users_changing_most"] == [{"user_id": "ann", "accepted_change": 1}]


def test_the_same_policy_reproduces_the_log_and_a_shorter_dedupe_window_lets_a_repeat_through() -> None:
    facts = [
        _accepted("cy", 0, "medium", idempotency_key="k"),
        Recorded("notification.duplicate", T0 + timedelta(hours=2), "cy", "cy-1", "medium", "k"),
    ]
    same = simulate(facts, CURRENT, CURRENT)
    assert same.candidate == same.recorded
    shorter = simulate(facts, CURRENT, CURRENT.with_file({"dedupe_window_seconds": 3600}))
    assert shorter.candidate[("medium", "accepted")] == 2 and shorter.candidate[("medium", "duplicate")] == 0


def test_the_fallback_delay_is_replayed_against_the_reads() -> None:
    both = ("websocket", "email")
    facts = [
        _accepted("dee", 0, "high", channels=both),
        Recorded("notification.read", T0 + timedelta(seconds=30), "dee", "dee-0"),
        _accepted("dee", 1, "high", channels=both),  # never read
    ]
    report = simulate(facts, CURRENT, CURRENT.with_file({"email_fallback_seconds": 10}))
    assert report.fallback[("recorded", "cancelled")] == 1 and report.fallback[("recorded", "sent")] == 1
    assert report.fallback[("candidate", "sent")] == 2


def test_policy_files_are_checked_and_events_read_loosely() -> None:
    for bad in ({"rate_limit_lo": 1}, {"rate_limit_low": 0}, {"rate_limit_low": 1.5}, {"dedupe_window_seconds": "x"}):
        with pytest.raises(BadPolicy):
            CURRENT.with_file(bad)
    event = {
        "type": "notification.duplicate",
        "time": "2026-01-01T00:00:00Z",
        "priority": "high",
        "data": {"notification_id": "n", "user_id": "u", "idempotency_key": "n", "original_id": "m"},
    }
    fact = recorded_fact(event)
    assert fact is not None and fact.priority == "high" and fact.idempotency_key is None
    assert recorded_fact({"type": "delivery.succeeded", "data": {}}) is None
