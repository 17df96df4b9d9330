"""``make bench``: every benchmark of the throughput targets, one summary table at the end.

Each program measures Herald next to a baseline in the same run (see its docstring and
docs/benchmarks.md); this runner calls them one after the other (never two at once: they
would share the two cores) and prints one table: measure, Herald, baseline, ratio, target.

    uv run python -m benchmarks.suite [--quick]

``--quick`` runs smaller sizes and one round (a smoke run; the figures are not the targets').
A program that fails prints its error in the table and the runner exits non-zero at the end.

The table's first rows say how fast the machine was (the targets are absolute figures, and a
shared 2-core machine's speed varies from day to day): the time of a bare CPU-bound Python loop
before and after the run, against the speed the targets were set on, and the share of CPU time
the host took from this machine (``steal`` in ``/proc/stat``) over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

Row = tuple[str, str, str, str, str]

CALIBRATION_LOOP = 10_000_000
"""Iterations of the bare loop that gauges the machine's speed."""
CALIBRATION = compile(f"for i in range({CALIBRATION_LOOP}): pass", "<calibration>", "exec")
"""The loop at module level, exactly as ``python3 -c "for i in range(10_000_000): pass"`` runs it
(its variable a global: slower than in a function), the form ``REFERENCE_LOOP_SECONDS`` was timed in."""
REFERENCE_LOOP_SECONDS = 0.21
"""The loop's time on this 2-core machine at its usual speed (the nights the targets were measured on)."""

# (module, arguments of its parser for a full run, for a quick run)
PROGRAMS: list[tuple[str, list[str], list[str]]] = [
    (
        "benchmarks.throughput",
        [],
        ["--burst", "3000", "--rate", "200", "--seconds", "3", "--users", "50", "--rounds", "1"],
    ),
    ("benchmarks.projector", [], ["--quick"]),
    ("benchmarks.admission", [], ["--rounds", "1", "--requests", "500"]),
    ("benchmarks.bulk", [], ["--quick"]),
    ("benchmarks.priority", ["--runs", "5", "--split"], ["--runs", "1", "--high", "50", "--low", "2000"]),
]


def loop_seconds() -> float:
    """Seconds of the calibration loop: the fastest of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        exec(CALIBRATION, {})  # noqa: S102 - a constant loop
        best = min(best, time.perf_counter() - started)
    return best


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of every CPU since boot from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def machine_rows(before: float, after: float, start: tuple[int, int] | None, end: tuple[int, int] | None) -> list[Row]:
    """The rows saying how fast the machine was over the run (see the module's docstring)."""
    slower = max(before, after) / REFERENCE_LOOP_SECONDS
    rows: list[Row] = [
        (
            "machine: bare Python loop, start / end of the run",
            f"{before:.2f} / {after:.2f} s",
            f"{REFERENCE_LOOP_SECONDS:.2f} s usual",
            f"{slower:.1f}x",
            "~1x: figures comparable to the targets",
        )
    ]
    if start is not None and end is not None and end[1] > start[1]:
        share = (end[0] - start[0]) / (end[1] - start[1])
        rows.append(("machine: CPU time taken by the host (steal)", f"{share:.1%}", "", "", "~0%"))
    return rows


async def rows_of(module_name: str, argv: list[str]) -> list[Row]:
    """Run one program's ``summary_rows(args)`` (sync or async) with its own parser."""
    module = importlib.import_module(module_name)
    parser: Callable[[], argparse.ArgumentParser] = module.parser
    args = parser().parse_args(argv)
    produced: Any = module.summary_rows(args)
    if inspect.isawaitable(produced):
        produced = await produced
    return list(produced)


async def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    cli.add_argument("--only", action="append", default=[], help="run only these modules (repeatable)")
    options = cli.parse_args()
    table: list[Row] = []
    failed = False
    before, start = loop_seconds(), cpu_times()
    for module_name, full, quick in PROGRAMS:
        if options.only and module_name.rsplit(".", 1)[-1] not in options.only:
            continue
        print(f"== {module_name}", flush=True)
        try:
            table.extend(await rows_of(module_name, quick if options.quick else full))
        except Exception as exc:
            traceback.print_exc()
            table.append((module_name, f"FAILED: {type(exc).__name__}: {exc}"[:80], "", "", ""))
            failed = True
    table[:0] = machine_rows(before, loop_seconds(), start, cpu_times())
    header: Row = ("measure", "herald", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(5)]
    print()
    for row in [header, tuple("-" * w for w in widths), *table]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
