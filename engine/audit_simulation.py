"""``herald simulate``: the recorded admission decisions replayed through a candidate policy.

Every request that passed validation left one decision in the log (``accepted``,
``duplicate`` or ``rate_limited``) carrying what admission looked at: user, priority,
idempotency key, id and time. Replaying those requests, in log order, through
``engine.admission.decide_admission`` / ``evolve`` with other limits, another dedupe
window, gives what the candidate would have decided; the email fallback delay is
replayed against the recorded reads. Pure: recorded facts in, a report out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve
from engine.rate_limit import default_limits
from schemas.envelope import Envelope
from schemas.errors import HeraldError
from schemas.events import NotificationAccepted, NotificationDuplicate, NotificationRateLimited

DECISIONS = ("notification.accepted", "notification.duplicate", "notification.rate_limited")
"""The recorded outcomes of admission."""
OUTCOME = {
    "notification.accepted": "accepted",
    "notification.duplicate": "duplicate",
    "notification.rate_limited": "rate_limited",
}
POLICY_KEYS = (
    "rate_limit_high",
    "rate_limit_medium",
    "rate_limit_low",
    "rate_limit_window_seconds",
    "dedupe_window_seconds",
    "email_fallback_seconds",
)
"""What a policy file may set (the names of the settings they replace)."""


class BadPolicy(HeraldError):
    """A policy file with an unknown key or a value out of range."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Admission and routing knobs a simulation varies."""

    rate_limit_high: int
    rate_limit_medium: int
    rate_limit_low: int
    rate_limit_window_seconds: int
    dedupe_window_seconds: int
    email_fallback_seconds: float

    def admission(self) -> AdmissionPolicy:
        """The policy ``decide_admission`` takes."""
        limits = default_limits(
            self.rate_limit_high, self.rate_limit_medium, self.rate_limit_low, self.rate_limit_window_seconds
        )
        return AdmissionPolicy(limits, self.dedupe_window_seconds)

    def with_file(self, raw: Mapping[str, Any]) -> Policy:
        """This policy with the values of a policy file (``POLICY_KEYS``) instead."""
        unknown = sorted(set(raw) - set(POLICY_KEYS))
        if unknown:
            raise BadPolicy(f"unknown policy key(s) {', '.join(unknown)} (known: {', '.join(POLICY_KEYS)})")
        values = {k: getattr(self, k) for k in POLICY_KEYS}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise BadPolicy(f"{key} must be a non-negative number, not {value!r}")
            if key != "email_fallback_seconds" and (value < 1 or int(value) != value):
                raise BadPolicy(f"{key} must be a whole number of at least 1, not {value!r}")
            values[key] = value if key == "email_fallback_seconds" else int(value)
        return Policy(**values)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded fact the simulation reads (decision or read), in log order per user."""

    type: str
    time: datetime
    user_id: str
    notification_id: str
    priority: str = "medium"
    idempotency_key: str | None = None
    channels: tuple[str, ...] = ()


@dataclass(slots=True)
class Report:
    """Recorded versus candidate outcomes."""

    recorded: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(priority, outcome) -> count, as the log says."""
    candidate: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(priority, outcome) -> count under the candidate policy."""
    user_changes: Counter[str] = field(default_factory=Counter)
    """User -> candidate minus recorded acceptances."""
    fallback: Counter[tuple[str, str]] = field(default_factory=Counter)
    """("recorded"|"candidate", "sent"|"cancelled") -> email fallbacks."""

    def lines(self, top: int = 10) -> list[str]:
        """The report for a terminal."""
        out = ["priority  outcome        recorded  candidate    change"]
        for priority in ("high", "medium", "low"):
            for outcome in ("accepted", "rate_limited", "duplicate"):
                a, b = self.recorded[(priority, outcome)], self.candidate[(priority, outcome)]
                out.append(f"{priority:<9} {outcome:<13} {a:>9} {b:>10} {b - a:>+9}")
        sent, cancelled = self.fallback[("recorded", "sent")], self.fallback[("recorded", "cancelled")]
        c_sent, c_cancelled = self.fallback[("candidate", "sent")], self.fallback[("candidate", "cancelled")]
        out.append(
            f"email fallbacks: recorded {sent} sent / {cancelled} cancelled by a read;"
            f" candidate {c_sent} sent / {c_cancelled} cancelled"
        )
        moved = [(u, d) for u, d in self.user_changes.most_common() if d]
        moved.sort(key=lambda item: (-abs(item[1]), item[0]))
        if moved:
            out.append(f"users who change most (accepted, candidate minus recorded; top {top}):")
            out.extend(f"  {user}: {delta:+d}" for user, delta in moved[:top])
        else:
            out.append("no user's acceptances change")
        return out

    def as_json(self, top: int = 10) -> dict[str, Any]:
        """The report as JSON."""

        def table(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for (priority, outcome), n in sorted(counts.items()):
                out.setdefault(priority, {})[outcome] = n
            return out

        moved = sorted(((u, d) for u, d in self.user_changes.items() if d), key=lambda i: (-abs(i[1]), i[0]))
        return {
            "recorded": table(self.recorded),
            "candidate": table(self.candidate),
            "email_fallbacks": {f"{w}_{o}": n for (w, o), n in sorted(self.fallback.items())},
            "users_changing_most": [{"user_id": u, "accepted_change": d} for u, d in moved[:top]],
        }


def simulate(facts: Iterable[Recorded], current: Policy, candidate: Policy) -> Report:
    """Replay ``facts`` (log order within each user) through ``candidate``; compare with the log."""
    report = Report()
    admission = candidate.admission()
    states: dict[str, Admission] = {}
    fallbacks: dict[str, datetime] = {}
    reads: dict[str, datetime] = {}
    for fact in facts:
        if fact.type == "notification.read":
            reads.setdefault(fact.notification_id, fact.time)
            continue
        if fact.type not in OUTCOME:
            continue
        report.recorded[(fact.priority, OUTCOME[fact.type])] += 1
        state = states.get(fact.user_id, Admission())
        request = _request(fact)
        source = f"simulation/{fact.notification_id}"
        outcome = decide_admission(state, request, source=source, policy=admission, now=fact.time)
        states[fact.user_id] = evolve(state, outcome, source=source, policy=admission)
        kind = _kind(outcome)
        report.candidate[(fact.priority, kind)] += 1
        report.user_changes[fact.user_id] += (kind == "accepted") - (fact.type == "notification.accepted")
        if kind == "accepted" and {"websocket", "email"} <= set(fact.channels):
            fallbacks[fact.notification_id] = fact.time
    for nid, at in fallbacks.items():
        read = reads.get(nid)
        for which, delay in (
            ("recorded", current.email_fallback_seconds),
            ("candidate", candidate.email_fallback_seconds),
        ):
            if delay <= 0:
                continue  # no fallback: the email went (or would go) at once
            late = read is None or (read - at).total_seconds() > delay
            report.fallback[(which, "sent" if late else "cancelled")] += 1
    return report


def recorded_fact(event: Mapping[str, Any]) -> Recorded | None:
    """The fact a CloudEvent (as parsed JSON) records, if the simulation reads it."""
    kind, data = event.get("type"), event.get("data")
    if kind not in (*DECISIONS, "notification.read") or not isinstance(data, Mapping):
        return None
    user, nid, stamp = data.get("user_id"), data.get("notification_id"), event.get("time")
    if not (isinstance(user, str) and isinstance(nid, str) and isinstance(stamp, str)):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    priority = data.get("priority") or event.get("priority") or "medium"
    if priority not in ("high", "medium", "low"):
        priority = "medium"
    key = data.get("idempotency_key")
    if kind == "notification.duplicate" and key == nid:
        key = None  # the request repeated an id, not a key
    channels = tuple(c for c in data.get("channels") or () if isinstance(c, str))
    return Recorded(str(kind), when, user, nid, str(priority), key if isinstance(key, str) else None, channels)


def _request(fact: Recorded) -> Envelope:
    accepted = NotificationAccepted(
        notification_id=fact.notification_id,
        user_id=fact.user_id,
        title="",
        body="",
        priority=fact.priority,
        channels=fact.channels or ("websocket",),
        category="",
        data={},
        requested_at=fact.time,
        idempotency_key=fact.idempotency_key,
    )
    return Envelope(id=fact.notification_id, source="simulation", time=fact.time, data=accepted, userid=fact.user_id)


def _kind(outcome: Envelope) -> str:
    if isinstance(outcome.data, NotificationDuplicate):
        return "duplicate"
    if isinstance(outcome.data, NotificationRateLimited):
        return "rate_limited"
    return "accepted"
