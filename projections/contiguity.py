"""Gap-free reading of the event log: a skipped offset is read again before it is believed.

The event log is never compacted and Herald writes it without transactions, so its
offsets are contiguous: a poll that jumps over an offset means the broker handed out a
later record before an earlier one was readable. Tansu does this when several producers
append to one partition while a consumer reads it (measured: 3 records in 15,000 with
three producers), and the projector would then never apply the skipped event. So the
projector takes only the gap-free prefix of each poll, seeks back to the first missing
offset and reads again. A gap that is still there after ``max_rereads`` reads is real
(transaction markers of a transactional writer, or records lost by the broker): it is
accepted, logged and counted, never waited on forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)

GAPS_REREAD = Counter(
    "projector_offset_gaps_reread_total", "Polls that skipped an offset of the event log and were read again"
)
GAPS_ACCEPTED = Counter(
    "projector_offset_gaps_accepted_total", "Offsets of the event log that stayed missing after re-reading"
)


class _Positioned(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=_Positioned)


class Contiguity:
    """Per partition: the next offset expected, and how often the current gap was re-read."""

    def __init__(self, max_rereads: int = 5) -> None:
        self._max_rereads = max_rereads
        self._expected: dict[int, int] = {}
        self._rereads: dict[int, int] = {}

    def reset(self, partition: int, offset: int | None) -> None:
        """The consumer was positioned at ``offset`` (``None``: the beginning, whatever it is)."""
        self._rereads.pop(partition, None)
        if offset is None:
            self._expected.pop(partition, None)
        else:
            self._expected[partition] = offset

    def admit(self, partition: int, records: Sequence[R]) -> tuple[list[R], int | None]:
        """The gap-free prefix of ``records``, and the offset to seek back to if a gap cut it."""
        expected = self._expected.get(partition)
        kept: list[R] = []
        for record in records:
            if record.offset < (expected if expected is not None else record.offset):
                continue  # already handed on (a re-read overlaps what was taken)
            if expected is not None and record.offset > expected:
                rereads = self._rereads.get(partition, 0)
                if rereads < self._max_rereads:
                    self._rereads[partition] = rereads + 1
                    self._expected[partition] = expected
                    GAPS_REREAD.inc()
                    return kept, expected
                GAPS_ACCEPTED.inc(record.offset - expected)
                log.warning(
                    "event log offsets missing after re-reading; going on",
                    extra={"partition": partition, "first_missing": expected, "next_present": record.offset},
                )
            self._rereads.pop(partition, None)
            kept.append(record)
            expected = record.offset + 1
        if expected is not None:
            self._expected[partition] = expected
        return kept, None
