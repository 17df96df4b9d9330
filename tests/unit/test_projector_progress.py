"""The rebuild's progress display: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from herald.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    out = Terminal()
    bar = Progress("replaying", out)
    bar(0, 1000)
    bar(500, 1000)  # within the refresh interval: not drawn
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rreplaying [")
    assert text.endswith("\n") and text.count("\n") == 1
    assert "500/1,000 (50%)" in text.splitlines()[-1].split("\r")[-1]
    assert "[" + "#" * 15 + "." * 15 + "]" in text


def test_a_file_gets_plain_lines() -> None:
    out = io.StringIO()
    bar = Progress("replaying", out)
    bar(10, 40)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replaying: 10/40 (25%)")
    assert "\r" not in out.getvalue()


def test_a_total_estimated_too_low_is_never_shown_below_the_count_done() -> None:
    out = io.StringIO()
    bar = Progress("replaying", out)
    bar(1_000_000, 999_361)  # the end offsets read at the start were behind the log
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("replaying: 1,000,000/1,000,000 (100%)")
