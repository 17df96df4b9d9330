"""``--from`` / ``--to`` of the audit commands: an RFC 3339 time or ``partition:offset`` positions.

A time bounds every partition by record timestamp (both ends inclusive). Positions
(``0:120`` or ``0:120,3:7``) bound only the partitions they name, by offset (inclusive).
Pure: text in, a ``Range`` out; ``BadRange`` with a one-line reason for anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from schemas.errors import HeraldError

_POSITION = re.compile(r"^(\d{1,9}):(\d{1,18})$")


class BadRange(HeraldError):
    """A ``--from``/``--to`` value that is neither a time nor positions, or an empty range."""


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a range."""

    time_ms: int | None = None
    """Record timestamp in milliseconds since the epoch, for every partition."""
    offsets: dict[int, int] = field(default_factory=dict)
    """Offset per named partition."""


@dataclass(frozen=True, slots=True)
class Range:
    """Which records of a topic a command looks at."""

    start: Bound = field(default_factory=Bound)
    end: Bound = field(default_factory=Bound)

    def first_offset(self, partition: int) -> int | None:
        """Offset to start ``partition`` at, when given as a position."""
        return self.start.offsets.get(partition)

    def start_ms(self) -> int | None:
        """Timestamp to start every partition at, when given as a time."""
        return self.start.time_ms

    def includes(self, partition: int, offset: int, timestamp_ms: int) -> bool:
        """Whether the record at ``partition``/``offset`` with ``timestamp_ms`` is in the range."""
        start, end = self.start, self.end
        if start.time_ms is not None and timestamp_ms < start.time_ms:
            return False
        if end.time_ms is not None and timestamp_ms > end.time_ms:
            return False
        low = start.offsets.get(partition)
        if low is not None and offset < low:
            return False
        high = end.offsets.get(partition)
        return high is None or offset <= high

    def last_offset(self, partition: int) -> int | None:
        """Last offset of ``partition`` in the range, when given as a position."""
        return self.end.offsets.get(partition)

    def describe(self) -> dict[str, object]:
        """The range as JSON, for an export's header."""
        return {"from": _describe(self.start), "to": _describe(self.end)}


def parse_bound(text: str, option: str) -> Bound:
    """``text`` of ``option`` (``--from``/``--to``) as a bound."""
    text = text.strip()
    if not text:
        raise BadRange(f"{option}: empty value")
    if ":" in text and "T" not in text.upper():
        offsets: dict[int, int] = {}
        for part in text.split(","):
            match = _POSITION.match(part.strip())
            if match is None:
                raise BadRange(f"{option}: {part!r} is not partition:offset (e.g. 0:120)")
            partition, offset = int(match.group(1)), int(match.group(2))
            if partition in offsets:
                raise BadRange(f"{option}: partition {partition} named twice")
            offsets[partition] = offset
        return Bound(offsets=offsets)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRange(f"{option}: {text!r} is neither an RFC 3339 time nor partition:offset") from None
    if when.tzinfo is None:
        raise BadRange(f"{option}: {text!r} has no UTC offset (add Z or +00:00)")
    return Bound(time_ms=int(when.timestamp() * 1000))


def parse_range(start: str | None, end: str | None) -> Range:
    """The range of ``--from start --to end`` (either may be missing: open)."""
    low = parse_bound(start, "--from") if start is not None else Bound()
    high = parse_bound(end, "--to") if end is not None else Bound()
    if low.time_ms is not None and high.time_ms is not None and low.time_ms > high.time_ms:
        raise BadRange("--from is after --to")
    for partition, offset in low.offsets.items():
        if partition in high.offsets and offset > high.offsets[partition]:
            raise BadRange(f"--from is after --to on partition {partition}")
    return Range(low, high)


def _describe(bound: Bound) -> object:
    if bound.time_ms is not None:
        return {"timestamp_ms": bound.time_ms}
    if bound.offsets:
        return {str(p): o for p, o in sorted(bound.offsets.items())}
    return None
