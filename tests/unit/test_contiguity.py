"""The projector never steps over an offset of the event log it has not read."""

from __future__ import annotations

from dataclasses import dataclass

from projections.contiguity import Contiguity


@dataclass(frozen=True)
class Rec:
    offset: int


def offsets(records: list[Rec]) -> list[int]:
    return [r.offset for r in records]


def test_a_skipped_offset_cuts_the_poll_and_is_read_again() -> None:
    gaps = Contiguity()
    gaps.reset(0, 10)
    kept, reread = gaps.admit(0, [Rec(10), Rec(11), Rec(13), Rec(14)])
    assert offsets(kept) == [10, 11]
    assert reread == 12
    # Read again from 12: this time the broker has it; the overlap is not handed on twice.
    kept, reread = gaps.admit(0, [Rec(12), Rec(13), Rec(14)])
    assert (offsets(kept), reread) == ([12, 13, 14], None)
    kept, _ = gaps.admit(0, [Rec(13), Rec(14), Rec(15)])
    assert offsets(kept) == [15]


def test_a_gap_that_stays_is_accepted_after_a_few_reads() -> None:
    gaps = Contiguity(max_rereads=3)
    gaps.reset(1, 0)
    for _ in range(3):
        kept, reread = gaps.admit(1, [Rec(2), Rec(3)])
        assert (kept, reread) == ([], 0)
    kept, reread = gaps.admit(1, [Rec(2), Rec(3)])
    assert (offsets(kept), reread) == ([2, 3], None)


def test_partitions_are_independent_and_an_unknown_start_takes_the_first_record() -> None:
    gaps = Contiguity()
    gaps.reset(0, None)
    kept, reread = gaps.admit(0, [Rec(7), Rec(8)])
    assert (offsets(kept), reread) == ([7, 8], None)
    gaps.reset(1, 5)
    assert gaps.admit(1, [Rec(6)]) == ([], 5)
    assert offsets(gaps.admit(0, [Rec(9)])[0]) == [9]
