"""Retry policy: exponential backoff with jitter, bounded attempts, permanent failures at once."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.retry import DeliveryError, RetryPolicy, attempt_outcome, backoff
from schemas.events import DeliveryAbandoned, DeliveryFailed, DeliveryRetryScheduled, DeliverySucceeded
from tests.unit.policy_support import NOW, accepted, assert_valid

POLICY = RetryPolicy()
FLAKY = DeliveryError("421 try later", retriable=True)


def _outcome(attempt: int, error: DeliveryError | None, policy: RetryPolicy = POLICY, target: str = "a@x.test"):  # type: ignore[no-untyped-def]
    return attempt_outcome(
        accepted("n1"),
        channel="email",
        target=target,
        attempt=attempt,
        error=error,
        provider_id="p-1",
        policy=policy,
        now=NOW,
    )


def test_first_retry_is_about_a_minute_later() -> None:
    failed, retry = _outcome(1, FLAKY)
    assert isinstance(failed.data, DeliveryFailed)
    assert failed.data.retriable
    assert isinstance(retry.data, DeliveryRetryScheduled)
    assert retry.data.attempt == 2
    assert 48 <= retry.data.delay_seconds <= 72
    assert retry.data.due_at == NOW + timedelta(seconds=retry.data.delay_seconds)


def test_the_last_attempt_is_abandoned_and_a_permanent_failure_is_abandoned_at_once() -> None:
    _, gone = _outcome(5, FLAKY)
    assert isinstance(gone.data, DeliveryAbandoned)
    assert gone.data.attempts == 5
    assert "gave up after 5 attempts" in gone.data.error
    failed, final = _outcome(1, DeliveryError("550 no such mailbox", retriable=False))
    assert isinstance(failed.data, DeliveryFailed)
    assert not failed.data.retriable
    assert isinstance(final.data, DeliveryAbandoned)
    assert final.data.error == "550 no such mailbox"


def test_success_reports_attempt_provider_id_and_latency() -> None:
    [ok] = _outcome(3, None)
    assert isinstance(ok.data, DeliverySucceeded)
    assert (ok.data.attempt, ok.data.provider_id, ok.data.latency_ms) == (3, "p-1", 0.0)


def test_the_same_attempt_schedules_the_same_retry_but_targets_spread() -> None:
    assert _outcome(2, FLAKY) == _outcome(2, FLAKY)
    delays = {_outcome(1, FLAKY, target=f"u{i}@x.test")[1].data.delay_seconds for i in range(20)}  # type: ignore[attr-defined]
    assert len(delays) > 10, "jitter spreads retries of different targets"


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(1, 10),
    base=st.floats(0.1, 300),
    jitter=st.floats(0, 0.3),
    spread=st.floats(0, 0.999),
)
def test_backoff_stays_within_its_jitter_band_and_grows(
    attempts: int, base: float, jitter: float, spread: float
) -> None:
    policy = RetryPolicy(max_attempts=attempts, base_delay_seconds=base, jitter=jitter, max_delay_seconds=1e9)
    previous = 0.0
    for n in range(1, attempts + 1):
        raw = base * 2 ** (n - 1)
        delay = backoff(policy, n, spread=spread)
        assert raw * (1 - jitter) - 1e-3 <= delay <= raw * (1 + jitter) + 1e-3
        assert delay >= previous
        previous = delay


@settings(max_examples=60, deadline=None)
@given(max_attempts=st.integers(1, 8), retriable=st.lists(st.booleans(), min_size=1, max_size=10))
def test_never_more_than_max_attempts_and_every_event_validates(max_attempts: int, retriable: list[bool]) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    attempt, attempts_made, ended = 1, 0, False
    for flag in retriable:
        events = _outcome(attempt, DeliveryError("boom", retriable=flag), policy)
        attempts_made += 1
        for env in events:
            assert_valid(env)
        last = events[-1].data
        if isinstance(last, DeliveryAbandoned):
            ended = True
            break
        assert isinstance(last, DeliveryRetryScheduled)
        assert last.attempt == attempt + 1
        attempt = last.attempt
    assert attempts_made <= max_attempts
    if len(retriable) >= max_attempts or not all(retriable[:attempts_made]):
        assert ended
