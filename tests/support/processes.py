"""Herald roles as real OS processes in tests (``python -m herald.cli ROLE``), as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.settings import Settings

ROOT = Path(__file__).parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``HERALD_*`` variable of the shell, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}, **extra}


def role_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a ``herald`` process read exactly ``settings`` (plus ``extra``)."""
    return clean_env(**{**settings.to_env(), **extra})


def start_role(role: str, settings: Settings, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """Start ``herald ROLE``; its output goes to ``log`` (appended, so a restart keeps the first run's)."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "herald.cli", role],
            cwd=ROOT,
            env=role_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_role(proc: subprocess.Popen[bytes], *, within: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not exit ``within`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def thread_niceness(pid: int) -> dict[int, int]:
    """The niceness of each thread of process ``pid`` (``/proc/<pid>/task/<tid>/stat``, field 19)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        out[int(task.name)] = int(fields[16])
    return out
