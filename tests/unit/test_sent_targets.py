"""``SentTargets`` expiry logic over a plain mapping (the Faust table's dict interface):
remembered for the TTL, forgotten after it, oldest first and bounded per event, and the
index rebuilt from the table after a rebalance."""

from __future__ import annotations

from streams.sent_targets import EXPIRE_PER_EVENT, SentTargets


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_pair_is_sent_within_the_ttl_and_forgotten_after_it() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=60, clock=clock)
    key = SentTargets.key("n1", "a@example.test")
    sent.add(key, "<id>", partition=0)
    clock.now += 59
    assert sent.sent(key) and sent.expire(0) == 0
    clock.now += 2
    assert not sent.sent(key)  # past the TTL it no longer blocks, even before deletion
    assert sent.expire(1) == 0  # another partition's event leaves it alone
    assert sent.expire(0) == 1 and key not in table


def test_expiry_is_bounded_per_event_and_oldest_first() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    for i in range(EXPIRE_PER_EVENT + 5):
        sent.add(SentTargets.key(f"n{i}", "t"), None, partition=3)
        clock.now += 0.001
    clock.now += 11
    assert sent.expire(3) == EXPIRE_PER_EVENT
    assert sorted(table) == sorted(SentTargets.key(f"n{i}", "t") for i in range(EXPIRE_PER_EVENT, EXPIRE_PER_EVENT + 5))
    assert sent.expire(3) == 5 and not table


def test_the_index_is_rebuilt_from_the_table_after_a_rebalance() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    writer = SentTargets(table, ttl=10, clock=clock)
    writer.add("old", None, partition=1)
    writer.add("other", None, partition=2)
    table["legacy"] = "sent"  # before expiry existed: kept, still counts as sent
    reader = SentTargets(table, ttl=10, clock=clock)  # another worker, or this one after a rebalance
    reader.invalidate()
    clock.now += 11
    assert reader.expire(1) == 1 and "old" not in table
    assert reader.expire(2) == 1 and "other" not in table
    assert reader.sent("legacy") and "legacy" in table


def test_a_pair_sent_again_after_expiry_is_not_deleted_by_its_old_index_entry() -> None:
    table: dict[str, object] = {}
    clock = Clock()
    sent = SentTargets(table, ttl=10, clock=clock)
    sent.add("k", None, partition=0)
    clock.now += 11
    sent.add("k", None, partition=0)  # re-sent (a new work record after the horizon)
    assert sent.expire(0) == 0 and "k" in table
    clock.now += 11
    assert sent.expire(0) == 1 and "k" not in table
