"""Admission of a valid request: deduplicate, then rate-limit, per user.

``decide_admission(state, accepted, ...)`` turns the ``notification.accepted`` that
validation produced into the final outcome (accepted, duplicate or rate limited);
``evolve`` folds an outcome into the user's state. The state a worker keeps in its
table is therefore ``reduce(evolve, outcomes, Admission())``, and deciding the same
request against the same state always gives the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import dedupe, rate_limit
from engine.notification import follow
from engine.rate_limit import RateLimit, Window
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationDuplicate, NotificationRateLimited

SOURCE = "herald/ingest"


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Rate limits per priority and the dedupe window."""

    limits: Mapping[str, RateLimit]
    """Limit per priority value (``high``, ``medium``, ``low``)."""
    dedupe_window_seconds: int
    """How long a request key is remembered."""


@dataclass(frozen=True, slots=True)
class Admission:
    """One user's admission state: used request keys and rate windows per priority."""

    seen: dedupe.SeenKeys = field(default_factory=dedupe.SeenKeys)
    windows: Mapping[str, Window] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the table value)."""
        return {"seen": self.seen.to_json(), "windows": {p: w.to_json() for p, w in self.windows.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Admission:
        """Inverse of ``to_json`` (``None`` is a user never seen)."""
        if not raw:
            return cls()
        windows = {p: Window.from_json(w) for p, w in raw.get("windows", {}).items()}
        return cls(dedupe.SeenKeys.from_json(raw.get("seen")), windows)


def decide_admission(
    state: Admission, decided: Envelope, *, source: str, policy: AdmissionPolicy, now: datetime
) -> Envelope:
    """The final outcome of a request whose validation outcome is ``decided``.

    ``source`` names the Kafka record (``topic/partition/offset``): the same record
    processed again replays its first decision instead of counting as a duplicate.
    """
    accepted = decided.data
    if not isinstance(accepted, NotificationAccepted):
        return decided  # rejected: nothing to admit
    at = now.timestamp()
    first: dedupe.Seen | None = None
    key = accepted.notification_id
    for key in _keys(accepted):
        first = dedupe.lookup(state.seen, key, now=at, window_seconds=policy.dedupe_window_seconds)
        if first is not None:
            break
    if first is not None:
        if first.source == source:
            return decided
        duplicate = NotificationDuplicate(
            notification_id=accepted.notification_id,
            user_id=accepted.user_id,
            idempotency_key=key,
            original_id=first.original_id,
        )
        return _follow(decided, duplicate, now)
    limit = policy.limits[accepted.priority]
    window = state.windows.get(accepted.priority, Window())
    verdict = rate_limit.check(window, limit, now=at, notification_id=accepted.notification_id)
    if not verdict.allowed:
        return rate_limited(decided, accepted, limit, verdict.retry_after_seconds, now=now)
    return decided


def rate_limited(
    decided: Envelope, accepted: NotificationAccepted, limit: RateLimit, retry_after_seconds: float, *, now: datetime
) -> Envelope:
    """The ``notification.rate_limited`` outcome of ``decided`` (the envelope of ``accepted``)."""
    limited = NotificationRateLimited(
        notification_id=accepted.notification_id,
        user_id=accepted.user_id,
        priority=accepted.priority,
        limit=limit.limit,
        window_seconds=limit.window_seconds,
        retry_after_seconds=retry_after_seconds,
    )
    return _follow(decided, limited, now)


def evolve(state: Admission, outcome: Envelope, *, source: str, policy: AdmissionPolicy) -> Admission:
    """``state`` after ``outcome``: an acceptance uses its key and a slot of its window."""
    accepted = outcome.data
    if not isinstance(accepted, NotificationAccepted):
        return state
    at = outcome.time.timestamp()
    first = dedupe.Seen(accepted.notification_id, at, source)
    seen = state.seen
    for key in _keys(accepted):
        seen = dedupe.remember(seen, key, first, now=at, window_seconds=policy.dedupe_window_seconds)
    limit = policy.limits[accepted.priority]
    window = rate_limit.admit(
        state.windows.get(accepted.priority, Window()), limit, now=at, notification_id=accepted.notification_id
    )
    return Admission(seen, {**state.windows, accepted.priority: window})


def request_keys(accepted: NotificationAccepted) -> tuple[str, ...]:
    """The keys a request is known by: the producer's idempotency key, and its id too
    (a notification id is never accepted twice). ``decide_admission`` and ``evolve`` read
    and write the state of these keys only."""
    key, nid = accepted.idempotency_key, accepted.notification_id
    if not key or key == nid:
        return (nid,) if nid else ()
    return (key, nid) if nid else (key,)


_keys = request_keys


def _follow(decided: Envelope, event: NotificationDuplicate | NotificationRateLimited, now: datetime) -> Envelope:
    # Caused by the provisional acceptance, whose id is itself derived from the request id.
    return follow(decided, event, now=now, source=SOURCE)
