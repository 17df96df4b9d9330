"""The per-device ``sending`` status: an attempt under way whose outcome is not on the log yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from projections.queries import target_statuses

TOKEN = "b" * 64
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _d(outcome: str, attempt: int, *, retriable: bool | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"{outcome}-{attempt}",
        "channel": "apns",
        "outcome": outcome,
        "target": TOKEN,
        "attempt": attempt,
        "provider_id": None,
        "error": "APNs 503 ServiceUnavailable" if outcome == "failed" else None,
        "retriable": retriable,
        "latency_ms": None,
        "at": "2026-12-02T11:59:00Z",
    }


def _statuses(events: list[dict[str, Any]], due_at: datetime) -> list[str]:
    [target] = target_statuses(events, due={"retry_scheduled-2": due_at}, now=NOW)
    return [target["status"]]


def test_a_retry_not_yet_due_is_queued_and_once_due_it_is_sending() -> None:
    events = [_d("failed", 1, retriable=True), _d("retry_scheduled", 2)]
    assert _statuses(events, NOW + timedelta(seconds=5)) == ["queued"]
    assert _statuses(events, NOW - timedelta(seconds=1)) == ["sending"]


def test_the_order_of_a_failure_and_its_schedule_at_the_same_instant_does_not_matter() -> None:
    events = [_d("retry_scheduled", 2), _d("failed", 1, retriable=True)]
    assert _statuses(events, NOW - timedelta(seconds=1)) == ["sending"]


def test_an_answer_after_the_due_retry_wins() -> None:
    events = [_d("failed", 1, retriable=True), _d("retry_scheduled", 2), _d("succeeded", 2)]
    assert _statuses(events, NOW - timedelta(seconds=1)) == ["sent"]
    events = [_d("failed", 1, retriable=True), _d("retry_scheduled", 2), _d("abandoned", 2)]
    assert _statuses(events, NOW - timedelta(seconds=1)) == ["failed"]


def test_a_first_attempt_handed_to_the_sink_is_sending_until_its_outcome() -> None:
    [target] = target_statuses([], in_flight=[("apns", TOKEN, "2026-12-02T11:59:00Z")], now=NOW)
    assert (target["channel"], target["target"], target["status"], target["attempts"]) == ("apns", TOKEN, "sending", 0)
    [target] = target_statuses([_d("succeeded", 1)], in_flight=[("apns", TOKEN, "2026-12-02T11:59:00Z")], now=NOW)
    assert target["status"] == "sent"
