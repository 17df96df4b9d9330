"""Herald's roles as separate OS processes, as in production (``herald worker|projector|api``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "test-output" / "bench-logs"


def role_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a ``herald`` process read exactly ``settings`` (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return {**env, **settings.to_env(), **extra}


def bench_secret() -> str:
    """A fresh HS256 secret per run (production roles refuse the dev default)."""
    return secrets.token_urlsafe(48)


@dataclasses.dataclass
class Role:
    """A running ``herald`` process."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.asynccontextmanager
async def role(
    name: str,
    settings: Settings,
    *,
    tag: str = "",
    root: Path | None = None,
    nice: int = 0,
    cprofile: Path | None = None,
    **extra: str,
) -> AsyncIterator[Role]:
    """``herald NAME`` in its own process for the duration of the block; its log in test-output.

    ``root``: run the code of another checkout of the project (its directory comes first on
    the import path), e.g. to compare a role's CPU between two commits in one run.
    ``nice``: the process's scheduling niceness (``nice -n``; every thread has it; a negative one
    needs privilege), as an operator gives a role more or less CPU weight.
    ``cprofile``: run the role under cProfile, its stats written to this file when it stops
    (the count of Python calls is a cost figure a busy machine does not move).
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}{tag}.log"
    env = role_env(settings, **extra)
    if root is not None:
        # Only the settings that checkout knows: it refuses to start on an unknown HERALD_* name.
        known = await _setting_variables(root)
        env = {k: v for k, v in env.items() if not k.startswith("HERALD_") or k in known}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    with log.open("wb") as out:
        niced = ["nice", "-n", str(nice)] if nice else []  # nice execs the role: the same pid
        proc = await asyncio.create_subprocess_exec(
            *niced,
            sys.executable,
            *(["-m", "cProfile", "-o", str(cprofile)] if cprofile is not None else []),
            "-m",
            "herald.cli",
            name,
            env=env,
            cwd=root or ROOT,
            stdout=out,
            stderr=out,
        )
        running = Role(name, proc, log)
        try:
            yield running
        finally:
            await stop(running)


_SETTING_VARIABLES: dict[Path, frozenset[str]] = {}


async def _setting_variables(root: Path) -> frozenset[str]:
    """The ``HERALD_*`` variable names the checkout at ``root`` defines (asked once per checkout)."""
    known = _SETTING_VARIABLES.get(root)
    if known is None:
        script = (
            "from engine.settings import PREFIX, Settings; print(*(PREFIX + n.upper() for n in Settings.field_names()))"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=PIPE
        )
        out, _ = await proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"could not read the settings of {root}")
        known = _SETTING_VARIABLES[root] = frozenset(out.decode().split())
    return known


async def stop(running: Role, *, kill: bool = False) -> None:
    """Stop a role (SIGTERM, or SIGKILL with ``kill``) and reap it."""
    proc = running.proc
    if proc.returncode is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def wait_ready(base: str, running: Role, *, within: float = 120.0) -> None:
    """Until ``GET base/readyz`` answers 200 (fails at once if the process exits)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            if running.proc.returncode is not None:
                raise RuntimeError(f"{running.name} exited with {running.proc.returncode}; see {running.log}")
            try:
                async with http.get(base + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{running.name} not ready after {within} s; see {running.log}")
            await asyncio.sleep(0.2)
