"""The ingest agent's inbox (``streams.request_inbox.Inbox``): fetch order, waiting, and a rebalance's clear."""

from __future__ import annotations

import asyncio

from streams.request_inbox import Inbox


async def test_records_come_out_in_fetch_order_and_count_until_taken() -> None:
    inbox = Inbox()
    for record in ("a", "b", "c"):
        inbox.put(record)
    seen: list[str] = []
    while len(inbox):
        first = await inbox.first()
        assert len(inbox) == 3 - len(seen)  # still buffered while it waits its turn
        assert inbox.take(first)
        seen.append(first)
    assert seen == ["a", "b", "c"]


async def test_first_waits_for_a_record() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.first())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    inbox.put("late")
    assert await asyncio.wait_for(waiting, timeout=1) == "late"


async def test_a_record_cleared_while_waiting_its_turn_is_not_taken() -> None:
    inbox = Inbox()
    inbox.put("old")
    first = await inbox.first()
    inbox.clear()  # a rebalance: Faust clears its agents' buffers
    inbox.put("refetched")
    assert not inbox.take(first)
    assert await inbox.first() == "refetched"
