"""``benchmarks.throughput --stages``: the garbage collections and event-loop stalls beside the stage table."""

from __future__ import annotations

import asyncio
import gc
import time

from benchmarks.throughput import LoopStalls, Phase, _record_gc_pauses, gc_report, stage_report, stall_report


def rows(count: int, *, slow_from: int) -> dict[str, dict[str, float]]:
    """Notifications sent a millisecond apart, 5 ms each, the ones from ``slow_from`` on 50 ms."""
    out = {}
    for i in range(count):
        sent = 1000.0 + i / 1000
        out[f"n{i}"] = {"sent": sent, "client": sent + (0.050 if i >= slow_from else 0.005)}
    return out


def test_the_collections_and_stalls_of_each_role_inside_the_phase_and_the_slowest_they_held_up() -> None:
    phase_rows = rows(200, slow_from=198)  # the slowest 1%: n198, n199
    in_flight = phase_rows["n199"]["client"] - 0.0005  # after n198 reached its client
    pauses = {
        "worker": [(in_flight, 0.004, 0), (in_flight, 0.012, 2), (900.0, 1.0, 2)],  # the last: before the phase
        "api": [(1000.0, 0.001, 1)],
    }
    lines = gc_report(phase_rows, pauses)
    assert lines[1] == "    worker: gen0 1, 4.0, 4.0; gen2 1, 12.0, 12.0"
    assert lines[2] == "    api: gen1 1, 1.0, 1.0"
    assert (
        "the slowest 2 notifications: 1 had a worker collection in flight (longest of each, median 12.0 ms)"
        in (lines[3])
    )
    assert lines[4].endswith("0 had a api collection in flight")

    stalls = {"worker": [(in_flight, 0.020, "here < there"), (1000.0, 0.010, "")], "api": []}
    lines = stall_report(phase_rows, stalls)
    assert lines[1].startswith("    worker: 2 stalls, 30 ms in all, median 15.0 ms, longest 20.0 ms;")
    assert lines[1].endswith("1 of the slowest 2 notifications overlapped one")
    assert lines[2] == "      1 stalls, 20 ms: here < there"
    assert lines[3] == "      1 stalls, 10 ms: (not sampled)"
    assert lines[4] == "    api: none"


def test_the_stage_table_ends_with_them_when_the_roles_sent_them() -> None:
    phase = Phase()
    wall = time.time() - time.monotonic()
    for nid, stamps in rows(10, slow_from=9).items():
        phase.sent[nid] = stamps["sent"] - wall
        phase.received[nid] = stamps["client"] - wall
    bare = stage_report(phase, {})
    full = stage_report(phase, {}, {"worker": []}, {"worker": []})
    assert full[: len(bare)] == bare
    assert full[len(bare)] == "  garbage collections during the phase (count, total ms, longest ms, by generation):"
    assert "  event-loop stalls of 10 ms or more during the phase:" in full


def test_a_process_records_its_collections_and_its_loop_stalls() -> None:
    pauses = _record_gc_pauses()
    try:
        gc.collect(1)
        assert pauses and pauses[-1][2] == 1 and pauses[-1][1] >= 0
    finally:
        gc.callbacks.pop()

    stalls = LoopStalls(step=0.001, threshold=0.02)

    async def stall() -> None:
        stalls.start()
        await asyncio.sleep(0.01)
        # The loop runs nothing else until the watcher has seen where it is (however loaded the machine).
        busy_until = time.perf_counter() + 30
        while not stalls._stack and time.perf_counter() < busy_until:
            pass
        await asyncio.sleep(0.01)

    asyncio.run(stall())
    longest = max(stalls.seen, key=lambda seen: seen[1])
    assert longest[1] >= 0.02
    assert "test_throughput_stages.py:stall" in longest[2]  # where the loop's thread was in it


def test_the_hop_to_the_worker_splits_at_the_publish_acknowledgement_and_the_fetch_that_carried_it() -> None:
    phase = Phase()
    wall = time.time() - time.monotonic()
    stamps: dict[str, dict[str, float]] = {}
    for nid, row in rows(10, slow_from=10).items():  # 5 ms each
        phase.sent[nid] = row["sent"] - wall
        phase.received[nid] = row["client"] - wall
        phase.appended[nid] = row["sent"] + 0.001 - wall
        stamps[nid] = {
            "fetch sent": row["sent"] + 0.0005,
            "fetched": row["sent"] + 0.003,
            "polled": row["sent"] + 0.0031,
        }
    lines = stage_report(phase, stamps)
    table = {line.split()[0]: line for line in lines if line.startswith("  ") and not line.startswith("    ")}
    assert table["appended"].split()[1:5] == ["1.0", "/", "1.0", "1.0"]
    assert table["fetched"].split()[1:6] == ["3.0", "/", "3.0", "2.0", "/"]  # the step from appended
    assert table["polled"].split()[4] == "0.1"
    assert (
        "    appended -> fetch sent: -0.5 / -0.5  the append to the sending of the fetch that carried it"
        in "\n".join(lines)
    )
    assert any(line.startswith("    fetch sent -> fetched: 2.5 / 2.5") for line in lines)
