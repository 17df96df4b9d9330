"""Progress of an audit command: a rich bar on a terminal, plain lines otherwise (logs, pipes).

Always on stderr, so stdout stays the command's answer (``herald why`` output, JSON).
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from herald.progress import Progress as LineProgress


class Bar:
    """``advance(n)`` as records are read; ``close()`` at the end. ``total`` ``None``: not known in advance."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._done = 0
        self._total = total or 0
        self._rich: Progress | None = None
        self._lines: LineProgress | None = None
        if self._stream.isatty():
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._rich.add_task(label, total=total)
            self._rich.start()
        else:
            self._lines = LineProgress(label, self._stream)

    def advance(self, n: int) -> None:
        """``n`` more records done."""
        self._done += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self._done)
        elif self._lines is not None:
            self._lines(self._done, self._total)

    def update(self, done: int, total: int) -> None:
        """Set the counts outright (for callers that report totals, like ``rebuild``)."""
        self._total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)
        self.advance(done - self._done)

    def close(self) -> None:
        """Show the final state."""
        if self._rich is not None:
            self._rich.update(self._task, completed=self._done)
            self._rich.stop()
        elif self._lines is not None:
            self._lines.close()
