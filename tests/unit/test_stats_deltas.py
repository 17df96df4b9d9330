"""The split of a batch's stat deltas between ``user_stats`` rows and ``stat_counters`` rows."""

from __future__ import annotations

from engine.channels import CHANNELS
from engine.notification_status import CHANNEL_STATES, STATUSES
from projections import stats
from projections.models import USER_COUNTERS


def test_every_counter_a_notification_adds_to_has_a_column_today() -> None:
    """A channel added to the registry works without a column (its counters stay in
    ``stat_counters``), but costs an upsert per counter again: give it columns in a migration."""
    wanted = {("total", ""), ("unread", "")}
    wanted |= {("status", s) for s in STATUSES}
    wanted |= {("priority", p) for p in ("high", "medium", "low")}
    wanted |= {("channel", f"{c.name}.{s}") for c in CHANNELS for s in CHANNEL_STATES}
    assert wanted == set(stats.USER_COLUMNS)
    assert len(USER_COUNTERS) == len(wanted)


def test_user_rows_are_dense_sorted_and_leave_out_users_nothing_moved_for() -> None:
    deltas = stats.Deltas()
    total, pending = stats.USER_COLUMNS[("total", "")], stats.USER_COLUMNS[("status", "pending")]
    deltas.users[("zoe", total)] = 1
    deltas.users[("zoe", pending)] = 1
    deltas.users[("adam", pending)] = -1
    deltas.users[("mia", total)] = 0
    deltas.counters[("p:1", "total", "")] = 1
    deltas.counters[("p:0", "total", "")] = 0
    rows = deltas.user_rows()
    assert [row[0] for row in rows] == ["adam", "zoe"]
    assert all(len(row) == 1 + stats.USER_WIDTH for row in rows)
    assert rows[1][1 + total] == rows[1][1 + pending] == 1
    assert sum(rows[1][1:]) == 2
    assert deltas.counter_rows() == [("p:1", "total", "", 1)]

    more = stats.Deltas()
    more.users[("adam", pending)] = 1
    more.counters[("p:1", "total", "")] = 2
    deltas.update(more)
    assert [row[0] for row in deltas.user_rows()] == ["zoe"]  # adam's moves cancelled out
    assert deltas.counter_rows() == [("p:1", "total", "", 3)]


def test_the_cached_contributions_are_those_of_every_state() -> None:
    """``projections.batch`` caches a notification's contributions by what they depend on: the
    cache must answer what ``contributions`` says, for every status, priority, channel state,
    read or not, deleted or not, whatever order the channels were added in."""
    from datetime import UTC, datetime

    from projections.batch import _contributions
    from projections.notifications import ChannelState, NotificationState, contributions

    when = datetime(2026, 1, 1, tzinfo=UTC)
    names = [c.name for c in CHANNELS][:3]
    checked = 0
    for status in STATUSES:
        for priority in ("high", "medium", "low"):
            for first, second in [(a, b) for a in CHANNEL_STATES for b in CHANNEL_STATES][::7]:
                for read in (None, when):
                    for deleted in (None, when):
                        for order in (names, names[::-1]):
                            state = NotificationState(
                                id="n", user_id="u", status=status, created_at=when, priority=priority
                            )
                            state.read_at, state.deleted_at = read, deleted
                            for name, ch_state in zip(order, (first, second, "pending"), strict=True):
                                state.channel_states[name] = ChannelState(state=ch_state)
                            positions, others = _contributions(state)
                            expected = contributions(state)
                            assert sorted(positions) == sorted(
                                stats.USER_COLUMNS[pair] for pair in expected if pair in stats.USER_COLUMNS
                            )
                            assert list(others) == [pair for pair in expected if pair not in stats.USER_COLUMNS]
                            checked += 1
    assert checked > 1000
