"""A projector lane applies the works that queued while it waited for a transaction slot as one
transaction, up to its merge bound, in order, with the later checkpoint; a lone work is applied
as it is, and ``finish`` still applies everything queued."""

from __future__ import annotations

import asyncio

from projections.poison import Skipped
from projections.projector import _Lanes, _Work


def _work(partition: int, first: int, count: int, skipped: int = 0) -> _Work:
    return _Work(
        partition,
        first + count + skipped,
        [],
        [Skipped(first + i, f"e{first + i}", "t", "decode", "x") for i in range(count + skipped)],
    )


async def test_works_queued_behind_a_busy_slot_go_as_one_transaction() -> None:
    applied: list[tuple[int, int, list[int]]] = []
    release = asyncio.Event()

    async def apply(work: _Work) -> None:
        if not applied and work.partition == 0:
            applied.append((work.partition, work.next_offset, [s.offset for s in work.skipped]))
            await release.wait()  # the first transaction holds the only slot
            return
        applied.append((work.partition, work.next_offset, [s.offset for s in work.skipped]))

    lanes = _Lanes(apply, 1, 10, merge_up_to=25)
    lanes.put(_work(0, 0, 5))
    await asyncio.sleep(0.01)  # lane 0 is applying its first work and holds the slot
    lanes.put(_work(1, 0, 3))  # another partition, waiting for the slot
    for first in (5, 15, 25):  # 10 each: the first two fit in 25, the third does not
        lanes.put(_work(0, first, 10))
    await asyncio.sleep(0.01)
    release.set()
    await lanes.finish()
    by_partition = {p: [(n, offsets) for q, n, offsets in applied if q == p] for p in (0, 1)}
    assert by_partition[1] == [(3, [0, 1, 2])]
    assert [n for n, _ in by_partition[0]] == [5, 25, 35]
    assert by_partition[0][1][1] == list(range(5, 25))
    assert by_partition[0][2][1] == list(range(25, 35))


async def test_a_lone_work_and_the_end_of_the_lane() -> None:
    applied: list[int] = []

    async def apply(work: _Work) -> None:
        applied.append(work.size())

    lanes = _Lanes(apply, 1, 10, merge_up_to=1000)
    lanes.put(_work(0, 0, 4))
    await asyncio.sleep(0.01)
    assert applied == [4]
    gate = asyncio.Event()

    async def held(work: _Work) -> None:
        applied.append(work.size())
        await gate.wait()

    other = _Lanes(held, 1, 10, merge_up_to=1000)
    other.put(_work(0, 0, 1))
    await asyncio.sleep(0.01)
    other.put(_work(0, 1, 2))
    other.put(_work(0, 3, 3))
    finishing = asyncio.create_task(other.finish())  # queues the end after them
    await asyncio.sleep(0.01)
    gate.set()
    await finishing
    assert applied == [4, 1, 5]  # the two queued behind the first, merged, then the lane ended
    await lanes.finish()


def test_merged_keeps_the_later_checkpoint_and_the_order() -> None:
    a, b = _work(2, 10, 2, skipped=1), _work(2, 13, 1)
    merged = a.merged(b)
    assert merged.partition == 2 and merged.next_offset == 14
    assert [s.offset for s in merged.skipped] == [10, 11, 12, 13]
    assert b.merged(a).next_offset == 14  # a work that went back (a re-read) never moves it back


def test_merged_leaves_out_what_the_earlier_work_covered() -> None:
    # A partition read again from its stored offset (a rebalance) while works read before waited:
    # applied one after the other, the second's records below the first's end would be below the
    # checkpoint and left out; merged, they are left out too (not applied or recorded twice).
    first = _work(3, 10, 3)  # offsets 10-12, next 13
    again = _work(3, 11, 4)  # offsets 11-14, next 15
    merged = first.merged(again)
    assert [s.offset for s in merged.skipped] == [10, 11, 12, 13, 14]
    assert merged.next_offset == 15
    assert first.merged(_work(3, 5, 4)).skipped == first.skipped  # wholly behind: nothing added
