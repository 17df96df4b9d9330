"""``herald why``: the decision chain of one notification in plain words, from log records alone.

Input: the records that concern the notification, from the event log and the
dead-letter topic, as loosely parsed JSON (a record Herald would refuse today is still
explained). Output: the admission decision (accepted, rate limited, duplicate, rejected,
dead-lettered), the channels it was routed to, each target's attempts and outcome, and
every step in log order with its provenance. Pure: no I/O, time comes from the records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DEADLETTER = "deadletter"
"""``Fact.kind`` of a dead-letter record (the event log's facts carry their CloudEvent type)."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One Kafka record about the notification."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    kind: str
    """CloudEvent ``type``, or ``DEADLETTER``."""
    event: Mapping[str, Any] = field(default_factory=dict)
    """The CloudEvent (attributes and ``data``) as far as it could be read."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Kafka headers (dead letters: ``herald-error``, ``herald-source-*``)."""

    @property
    def data(self) -> Mapping[str, Any]:
        """The event's ``data`` object (empty when there is none)."""
        value = self.event.get("data")
        return value if isinstance(value, Mapping) else {}

    @property
    def when(self) -> str:
        """The CloudEvent time if readable, else the record timestamp (RFC 3339, UTC)."""
        value = self.event.get("time")
        if isinstance(value, str) and value:
            return value
        return _iso(self.timestamp_ms)

    @property
    def where(self) -> str:
        """``topic/partition/offset``."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class Step:
    """One thing that happened, in words, with where the log says so."""

    time: str
    text: str
    where: str
    type: str


@dataclass(slots=True)
class TargetStory:
    """The attempts on one target of one channel."""

    attempts: int = 0
    outcome: str = "pending"
    last_error: str | None = None


@dataclass(slots=True)
class ChannelStory:
    """What happened on one channel."""

    outcome: str = "pending"
    targets: dict[str, TargetStory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Explanation:
    """The answer of ``herald why`` and ``GET /api/notifications/{id}/explain``."""

    notification_id: str
    user_id: str | None = None
    decision: str = "unknown"
    """``accepted``, ``rate_limited``, ``duplicate``, ``rejected``, ``dead_lettered`` or ``unknown``."""
    decision_text: str = ""
    channels: dict[str, ChannelStory] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    read_at: str | None = None
    deleted_at: str | None = None
    dead_letter: str | None = None
    """Where the raw request was dead-lettered (`` (from topic/partition/offset)``), if it was."""

    def as_json(self) -> dict[str, Any]:
        """The explanation as a JSON object."""
        return {
            "notification_id": self.notification_id,
            "user_id": self.user_id,
            "decision": self.decision,
            "decision_text": self.decision_text,
            "channels": {
                name: {
                    "outcome": story.outcome,
                    "notes": story.notes,
                    "targets": {
                        t: {"attempts": s.attempts, "outcome": s.outcome, "last_error": s.last_error}
                        for t, s in story.targets.items()
                    },
                }
                for name, story in self.channels.items()
            },
            "read_at": self.read_at,
            "deleted_at": self.deleted_at,
            "dead_letter": self.dead_letter,
            "steps": [{"time": s.time, "type": s.type, "text": s.text, "where": s.where} for s in self.steps],
            "summary": self.lines(),
        }

    def lines(self) -> list[str]:
        """The explanation as plain lines for a terminal."""
        out = [f"notification {self.notification_id}" + (f" for user {self.user_id}" if self.user_id else "")]
        out.append(f"decision: {self.decision_text}")
        if self.channels:
            out.append("routed to: " + ", ".join(self.channels))
        for name, story in self.channels.items():
            out.append(f"  {name}: {story.outcome}")
            out.extend(f"    {note}" for note in story.notes)
            for target, t in story.targets.items():
                tries = f"{t.attempts} attempt{'s' if t.attempts != 1 else ''}"
                error = f" (last error: {t.last_error})" if t.last_error and t.outcome != "delivered" else ""
                out.append(f"    target {target}: {t.outcome} after {tries}{error}")
        if self.read_at:
            out.append(f"read at {self.read_at}")
        if self.deleted_at:
            out.append(f"deleted at {self.deleted_at}")
        out.append("steps:")
        out.extend(f"  {s.time}  {s.text}  [{s.where}]" for s in self.steps)
        return out


def concerns(notification_id: str, event: Mapping[str, Any], headers: Mapping[str, str], raw: bytes) -> bool:
    """Whether a record is about ``notification_id`` (event log or dead letter, parsed or not)."""
    data = event.get("data")
    if isinstance(data, Mapping) and data.get("notification_id") == notification_id:
        return True
    if notification_id in (event.get("id"), event.get("subject"), event.get("correlationid")):
        return True
    if headers.get("ce_id") == notification_id:
        return True
    # A request that never parsed: its id is readable in the raw bytes, or it is not.
    pattern = rb'"id"\s*:\s*' + re.escape(json.dumps(notification_id).encode())
    return re.search(pattern, raw) is not None


def explain(notification_id: str, facts: Sequence[Fact]) -> Explanation:
    """The decision chain of ``notification_id`` from ``facts`` (any order; sorted here)."""
    out = Explanation(notification_id)
    ordered = _in_order(facts)
    deferred: dict[str, str] = {}
    for fact in ordered:
        text = _step(out, fact, deferred)
        if text:
            out.steps.append(Step(fact.when, text, fact.where, fact.kind))
    if out.decision == "unknown" and out.steps:
        out.decision_text = "no admission decision in the log (only later facts were found)"
    return out


def _in_order(facts: Sequence[Fact]) -> list[Fact]:
    """Log facts in offset order (the truth within a partition, whatever the clocks said);
    dead letters, from another topic, slotted in by timestamp."""
    log = sorted((f for f in facts if f.kind != DEADLETTER), key=lambda f: (f.partition, f.offset))
    letters = sorted((f for f in facts if f.kind == DEADLETTER), key=lambda f: (f.timestamp_ms, f.offset))
    out: list[Fact] = []
    for fact in log:
        while letters and letters[0].timestamp_ms <= fact.timestamp_ms:
            out.append(letters.pop(0))
        out.append(fact)
    return out + letters


def _step(out: Explanation, fact: Fact, deferred: dict[str, str]) -> str | None:
    data, kind = fact.data, fact.kind
    user = data.get("user_id") if isinstance(data.get("user_id"), str) else None
    if out.user_id is None and user:
        out.user_id = user
    if kind == DEADLETTER:
        return _dead_letter(out, fact)
    if kind == "notification.accepted":
        channels = [c for c in data.get("channels") or () if isinstance(c, str)]
        if out.decision not in ("accepted",):
            out.decision = "accepted"
            out.decision_text = f"accepted at {fact.when}, priority {data.get('priority')}"
        for name in channels:
            out.channels.setdefault(name, ChannelStory())
        extra = []
        for name in ("deliver_after", "expires_at", "idempotency_key", "collapse_key"):
            if data.get(name):
                extra.append(f"{name.replace('_', ' ')} {data[name]}")
        return f"accepted (priority {data.get('priority')}), routed to {', '.join(channels) or 'no channel'}" + (
            f"; {', '.join(extra)}" if extra else ""
        )
    if kind == "notification.rate_limited":
        text = (
            f"rate limited: the user already had {data.get('limit')} {data.get('priority')}-priority notifications"
            f" accepted in the last {data.get('window_seconds')} s window (limit {data.get('limit')} per"
            f" {data.get('window_seconds')} s); one more would be accepted after"
            f" {_seconds(data.get('retry_after_seconds'))} s"
        )
        return _refused(out, "rate_limited", text)
    if kind == "notification.duplicate":
        text = (
            f"duplicate: key {data.get('idempotency_key')!r} was already used by notification"
            f" {data.get('original_id')} within the dedupe window; nothing delivered again"
        )
        return _refused(out, "duplicate", text)
    if kind == "notification.rejected":
        reasons = "; ".join(str(r) for r in data.get("reasons") or ()) or "no reason given"
        return _refused(out, "rejected", f"rejected: {reasons}")
    if kind == "bulk.target_refused":
        target = _short(str(data.get("target")))
        text = (
            f"refused by the API before publishing: {data.get('reason')} ({data.get('target_kind')} {target},"
            f" bulk {data.get('bulk_id')} sent by {data.get('requested_by')}); no request was published for it"
        )
        return _refused(out, "rejected", text)
    if kind == "notification.read":
        out.read_at = out.read_at or fact.when
        via = data.get("via")
        return f"read by the user{f' (via {via})' if via else ''}"
    if kind == "notification.deleted":
        out.deleted_at = out.deleted_at or fact.when
        return "deleted by the user"
    if kind == "notification.expired":
        channel = data.get("channel")
        for name, story in out.channels.items():
            if (channel in (None, name)) and story.outcome in ("pending", "deferred", "retrying"):
                story.outcome = "expired"
        where = f" on {channel}" if channel else ""
        return f"expired{where}: expires_at {data.get('expires_at')} passed before delivery"
    if kind == "device.invalidated":
        token = str(data.get("device_token"))
        return f"device token {_short(token)} invalidated ({data.get('reason')}): no longer targeted"
    if kind == "deadletter.redriven":
        forced = ", forced" if data.get("forced") else ""
        return (
            f"dead letter {data.get('deadletter_topic')}/{data.get('deadletter_partition')}/"
            f"{data.get('deadletter_offset')} re-driven by {data.get('operator')}{forced} to"
            f" {data.get('source_topic')}/{data.get('redriven_partition')}/{data.get('redriven_offset')}"
        )
    channel = data.get("channel")
    if not isinstance(channel, str):
        return f"{kind}"
    return _delivery(out.channels.setdefault(channel, ChannelStory()), channel, fact, deferred, out)


def _refused(out: Explanation, decision: str, text: str) -> str:
    if out.decision == "dead_lettered" and decision == "rejected":
        out.decision_text = f"not accepted: {text}; the raw request was dead-lettered{out.dead_letter or ''}"
        out.decision = decision
    elif out.decision == "unknown":
        out.decision, out.decision_text = decision, f"not accepted: {text}"
    return text


def _dead_letter(out: Explanation, fact: Fact) -> str:
    reason = fact.headers.get("herald-error") or "no reason recorded"
    source = fact.headers.get("herald-source-topic")
    origin = ""
    if source:
        origin = (
            f" (from {source}/{fact.headers.get('herald-source-partition')}/{fact.headers.get('herald-source-offset')})"
        )
    channel = fact.headers.get("herald-channel")
    if channel:
        story = out.channels.setdefault(channel, ChannelStory())
        story.notes.append(f"work record dead-lettered: {reason}")
        return f"{channel} work dead-lettered{origin}: {reason}"
    out.dead_letter = origin
    if out.decision == "unknown":
        out.decision = "dead_lettered"
        out.decision_text = f"not accepted: the request could not be used and was dead-lettered{origin}: {reason}"
    elif out.decision == "rejected":
        out.decision_text += f"; the raw request was dead-lettered{origin}"
    return f"request dead-lettered{origin}: {reason}"


def _delivery(story: ChannelStory, channel: str, fact: Fact, deferred: dict[str, str], out: Explanation) -> str:
    data, kind = fact.data, fact.kind
    target = str(data.get("target")) if data.get("target") is not None else None
    if kind == "delivery.deferred":
        reason = str(data.get("reason"))
        deferred[channel] = reason
        if story.outcome != "delivered":
            story.outcome = "deferred"
        if reason in ("offline", "disconnected"):
            return f"{channel}: deferred, the user was {reason}; to be replayed when they reconnect"
        return f"{channel}: deferred ({reason})"
    if kind == "delivery.succeeded":
        t = story.targets.setdefault(str(target), TargetStory())
        t.attempts = max(t.attempts, _int(data.get("attempt"), 1))
        t.outcome = "delivered"
        story.outcome = "delivered"
        latency = f" after {data.get('latency_ms')} ms" if data.get("latency_ms") is not None else ""
        if channel == "websocket" and data.get("provider_id") == "replay":
            story.notes.append(f"replayed on reconnect at {fact.when}")
            return f"{channel}: replayed on reconnect to {target}{latency}"
        if channel in deferred and channel == "websocket":
            story.notes.append(f"delivered at {fact.when} after being deferred ({deferred[channel]})")
        provider = f", provider id {data.get('provider_id')}" if data.get("provider_id") else ""
        return f"{channel}: delivered to {_short(str(target))} (attempt {t.attempts}{provider}){latency}"
    if kind == "delivery.failed":
        t = story.targets.setdefault(str(target), TargetStory())
        t.attempts = max(t.attempts, _int(data.get("attempt"), 1))
        error = str(data.get("error"))
        t.last_error = error
        permanent = not data.get("retriable")
        t.outcome = "failed" if permanent else "retrying"
        if story.outcome != "delivered":
            story.outcome = t.outcome
        text = f"{channel}: attempt {t.attempts} to {_short(str(target))} failed ({error})"
        text += ", permanent" if permanent else ", will be retried"
        if "410" in error or "invalidated" in error:
            story.notes.append(f"device token {_short(str(target))} invalidated by APNs ({error})")
            text += "; the device token was invalidated"
        return text
    if kind == "delivery.retry_scheduled":
        t = story.targets.setdefault(str(target), TargetStory())
        t.outcome = "retrying"
        return (
            f"{channel}: attempt {data.get('attempt')} to {_short(str(target))} scheduled for {data.get('due_at')}"
            f" (backoff {_seconds(data.get('delay_seconds'))} s)"
        )
    if kind == "delivery.abandoned":
        t = story.targets.setdefault(str(target), TargetStory())
        t.attempts = max(t.attempts, _int(data.get("attempts"), 0))
        t.outcome, t.last_error = "abandoned", str(data.get("error"))
        if story.outcome != "delivered":
            story.outcome = "abandoned"
        return (
            f"{channel}: gave up on {_short(str(target))} after {data.get('attempts')} attempts ({data.get('error')})"
        )
    if kind == "delivery.requeued":
        if story.outcome != "delivered":
            story.outcome = "requeued"
        where = _short(str(target)) if target else "every target not delivered yet"
        story.notes.append(f"requeued by {data.get('operator')} at {fact.when}: {data.get('reason')}")
        return (
            f"{channel}: requeued to {where} by {data.get('operator')} ({data.get('reason')});"
            f" it was {data.get('previous_status')}"
        )
    if kind == "delivery.cancelled":
        reason = str(data.get("reason"))
        if story.outcome != "delivered":
            story.outcome = "cancelled"
        pending = deferred.get(channel, "")
        if reason == "read" and pending.startswith("fallback"):
            story.notes.append(f"email fallback cancelled by a read at {fact.when}")
            return f"{channel}: fallback cancelled, the notification was read before it was due"
        return f"{channel}: pending work cancelled ({reason})"
    return f"{channel}: {kind}"


def _iso(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _seconds(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _short(target: str) -> str:
    """Device tokens are 64 hex characters: the first 8 and last 4 are enough to tell them apart."""
    if len(target) == 64 and all(c in "0123456789abcdefABCDEF" for c in target):
        return f"{target[:8]}...{target[-4:]}"
    return target
