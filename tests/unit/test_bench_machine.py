"""``make bench``'s first rows: how fast the machine was, so a table is read against its conditions."""

from __future__ import annotations

from benchmarks.suite import REFERENCE_LOOP_SECONDS, cpu_times, machine_rows


def test_the_slower_of_the_two_loop_timings_is_compared_with_the_usual_speed() -> None:
    rows = machine_rows(0.44, 0.48, (100, 10_000), (400, 20_000))
    speed, steal = rows
    assert speed[1] == "0.44 / 0.48 s"
    assert speed[3] == f"{0.48 / REFERENCE_LOOP_SECONDS:.1f}x"
    assert steal[1] == "3.0%"  # 300 of 10,000 jiffies


def test_no_steal_row_without_cpu_accounting() -> None:
    assert [row[0] for row in machine_rows(0.2, 0.2, None, None)] == [
        "machine: bare Python loop, start / end of the run"
    ]


def test_cpu_times_reads_this_machines_counters() -> None:
    first = cpu_times()
    assert first is not None  # Linux: /proc/stat
    second = cpu_times()
    assert second is not None and second[1] >= first[1] and 0 <= second[0] <= second[1]
