"""Per-device (per-target) delivery status, derived from the delivery events of a notification."""

from __future__ import annotations

from typing import Any

from projections.queries import target_statuses

TOKEN = "a" * 64


def _d(
    outcome: str,
    attempt: int | None = 1,
    *,
    error: str | None = None,
    retriable: bool | None = None,
    provider_id: str | None = None,
    target: str | None = TOKEN,
) -> dict[str, Any]:
    return {
        "id": f"e{outcome}{attempt}",
        "channel": "apns",
        "outcome": outcome,
        "target": target,
        "attempt": attempt,
        "provider_id": provider_id,
        "error": error,
        "retriable": retriable,
        "latency_ms": None,
        "at": "2026-01-01T00:00:00Z",
    }


def test_retry_then_success_reads_sent_with_the_provider_id_and_attempts() -> None:
    events = [
        _d("failed", 1, error="TooManyRequests", retriable=True),
        _d("retry_scheduled", 2),
        _d("succeeded", 2, provider_id="APNS-ID"),
    ]
    [target] = target_statuses(events)
    assert (target["status"], target["attempts"], target["provider_id"]) == ("sent", 2, "APNS-ID")


def test_a_pending_retry_reads_queued() -> None:
    [target] = target_statuses([_d("failed", 1, error="ServiceUnavailable", retriable=True), _d("retry_scheduled", 2)])
    assert target["status"] == "queued"


def test_a_refused_device_token_reads_invalid_token() -> None:
    [target] = target_statuses([_d("failed", 1, error="410 Unregistered", retriable=False)])
    assert target["status"] == "invalid_token"


def test_a_permanent_failure_reads_failed_and_each_target_is_separate() -> None:
    other = "b" * 64
    statuses = target_statuses([_d("abandoned", 3, error="PayloadTooLarge"), _d("succeeded", 1, target=other)])
    assert {t["target"]: t["status"] for t in statuses} == {TOKEN: "failed", other: "sent"}
