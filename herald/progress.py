"""Progress of a long command (``herald rebuild``): a bar on a terminal, plain lines otherwise.

No dependency: one line redrawn in place (carriage return) when the stream is a TTY,
and one line every few seconds when it is a file or a pipe (CI logs, ``docker logs``).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
"""Characters of the bar itself."""
TTY_REFRESH = 0.1
"""Seconds between two redraws on a terminal."""
LINE_INTERVAL = 5.0
"""Seconds between two progress lines when not on a terminal."""


class Progress:
    """Call it with ``(done, total)`` as work advances; ``close()`` at the end."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._shown = 0.0
        self._last: tuple[int, int] = (0, 0)

    def __call__(self, done: int, total: int) -> None:
        """Record progress; redraw if it is time to.

        ``total`` is an estimate (a broker may report its end offsets late): never shown
        below ``done``, so a finished replay reads ``N/N (100%)``, not ``N/M`` with M < N.
        """
        self._last = (done, max(done, total))
        now = time.monotonic()
        if now - self._shown >= (TTY_REFRESH if self._tty else LINE_INTERVAL):
            self._shown = now
            self._draw(now)

    def close(self) -> None:
        """Show the final state (and end the bar's line on a terminal)."""
        self._draw(time.monotonic())
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()

    def _draw(self, now: float) -> None:
        done, total = self._last
        elapsed = max(now - self._started, 1e-9)
        rate = done / elapsed
        share = min(done / total, 1.0) if total else 1.0
        eta = f", {(total - done) / rate:,.0f} s left" if rate and total > done else ""
        figures = f"{done:,}/{total:,} ({share:.0%}), {rate:,.0f}/s, {elapsed:,.0f} s{eta}"
        if self._tty:
            filled = round(share * BAR_WIDTH)
            self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {figures}\033[K")
        else:
            self._stream.write(f"{self._label}: {figures}\n")
        self._stream.flush()
