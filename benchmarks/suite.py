"""``make bench``: every benchmark of the throughput targets, one summary table at the end.

Each program measures Herald next to a baseline in the same run (see its docstring and
docs/benchmarks.md); this runner calls them one after the other (never two at once: they
would share the two cores) and prints one table: measure, Herald, baseline, ratio, target.

    uv run python -m benchmarks.suite [--quick]

``--quick`` runs smaller sizes and one round (a smoke run; the figures are not the targets').
A program that fails prints its error in the table and the runner exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any

Row = tuple[str, str, str, str, str]

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
    header: Row = ("measure", "herald", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(5)]
    print()
    for row in [header, tuple("-" * w for w in widths), *table]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
