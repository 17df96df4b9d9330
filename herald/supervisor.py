"""Supervision of a role's background work: a role is either working or visibly failed.

Without it a dead task is silent: the projector task ending left the process up, ``/readyz``
green and the read models frozen for every user. The ``Supervisor`` watches

- the role's own tasks (``watch``): the projector loop (``herald.stack``);
- the long-lived tasks components start themselves, recognised by their names through
  the event loop's task factory (``install``), so those components need no reference
  to it: the gateway's receipt drain, presence listener and refresher, the WebSocket
  live dispatcher, the replay's log-position pollers, the JWKS refresher;
- the Faust app (``watch_faust``): every agent's error hook, and the app, its consumer
  and producer services crashing.

A failure is logged at ERROR once, fails ``/readyz`` at once (``check``) and sets
``failed``; ``herald worker|projector|api`` then stop and exit with status 1, so compose
or Kubernetes restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import faust

log = logging.getLogger(__name__)

FOREVER_TASKS = frozenset(
    {"receipts-drain", "presence-listen", "presence-refresh", "websocket-live-dispatch", "jwks-refresh"}
)
"""Tasks that run for the whole life of their role: ending at all, before shutdown, is a failure."""
SHORT_TASK_PREFIXES = ("projector-position-",)
"""Tasks that may finish (their work done) but must not fail or be cancelled before shutdown."""
FAUST_POLL_SECONDS = 0.25
"""How often the Faust app's services are checked for a crash (agent errors are reported at once)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One piece of background work that died."""

    what: str
    """The task or service, e.g. ``projector`` or ``agent herald.sink.email``."""
    reason: str
    """Why: the exception, or how it ended."""


class Supervisor:
    """Collects failures of background work; see the module docstring."""

    def __init__(self) -> None:
        self.failed = asyncio.Event()
        """Set at the first failure."""
        self.failures: list[Failure] = []
        """Every failure seen, in order."""
        self.stopping = False
        """Set when the role shuts down on purpose: tasks ending then are not failures."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: contextvars.Token[Supervisor | None] | None = None
        self._poller: asyncio.Task[None] | None = None

    def fail(self, what: str, reason: str, exc: BaseException | None = None) -> None:
        """Record that ``what`` died (logged at ERROR) unless the role is stopping anyway."""
        if self.stopping:
            return
        self.failures.append(Failure(what, reason))
        log.error(
            "%s died: %s; the role stops (exit status 1)",
            what,
            reason,
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
            extra={"task": what, "error": reason},
        )
        self.failed.set()

    def check(self) -> None:
        """Raise if anything died (a ``/readyz`` check)."""
        if self.failures:
            raise RuntimeError(f"{self.failures[0].what} died")

    def watch(self, task: asyncio.Task[Any], what: str, *, forever: bool = True) -> None:
        """Report ``task`` when it fails, is cancelled, or (``forever``) returns, before shutdown."""
        task.add_done_callback(lambda done: self._ended(done, what, forever=forever))

    def _ended(self, task: asyncio.Task[Any], what: str, *, forever: bool) -> None:
        if self.stopping:
            return
        if task.cancelled():
            self.fail(what, "cancelled")
        elif (exc := task.exception()) is not None:
            self.fail(what, f"{type(exc).__name__}: {exc}", exc)
        elif forever:
            self.fail(what, "returned before shutdown")

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the named long-lived tasks created on ``loop`` from now on.

        Tasks created in this supervisor's context (the role's own task and what it
        starts) are its own; with several stacks in one process (tests), a task created
        outside any of them is reported to all.
        """
        self._loop = loop
        supervisors = _ON_LOOP.get(loop)
        if supervisors is None:
            supervisors = _ON_LOOP[loop] = []
            loop.set_task_factory(_factory(loop.get_task_factory()))  # type: ignore[arg-type]
        supervisors.append(self)
        self._token = _CURRENT.set(self)

    def watch_faust(self, app: faust.App) -> None:
        """Report any agent's error at once, and the app's services crashing (polled)."""
        for name, agent in app.agents.items():
            previous = agent._on_error  # faust-streaming: the agent error hook

            async def on_error(agent: Any, exc: BaseException, *, name: str = name, previous: Any = previous) -> None:
                # faust-streaming calls this, then restarts the actor; a crashed agent has
                # dropped the record it was handling, so the role stops and is restarted whole.
                if previous is not None:
                    await previous(agent, exc)
                self.fail(f"agent {name}", f"{type(exc).__name__}: {exc}", exc)

            agent._on_error = on_error  # no public setter; read by Agent._execute_actor
        self._poller = asyncio.get_running_loop().create_task(self._poll_faust(app), name="supervisor-faust")

    async def _poll_faust(self, app: faust.App) -> None:
        # Call after app.start(): its consumer and producer exist by then.
        services: list[tuple[str, Any]] = [("faust app", app), ("faust consumer", app.consumer)]
        services.append(("faust producer", app.producer))
        while not self.stopping:
            for what, service in services:
                if service.crashed:
                    self.fail(what, f"crashed: {service.crash_reason!r}")
                    return
            await asyncio.sleep(FAUST_POLL_SECONDS)

    def uninstall(self) -> None:
        """Stop watching (the role is shutting down)."""
        self.stopping = True
        if self._poller is not None:
            self._poller.cancel()
        if self._loop is not None:
            with contextlib.suppress(ValueError):
                _ON_LOOP.get(self._loop, []).remove(self)
            self._loop = None
        if self._token is not None:
            with contextlib.suppress(ValueError):  # reset from another context: harmless
                _CURRENT.reset(self._token)
            self._token = None


_CURRENT: contextvars.ContextVar[Supervisor | None] = contextvars.ContextVar("herald_supervisor", default=None)
_ON_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Supervisor]] = weakref.WeakKeyDictionary()


def _factory(previous: Any) -> Any:
    """A task factory (chained to ``previous``) that hands watched tasks to their supervisor."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Future[Any]:
        task = previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
        if isinstance(task, asyncio.Task):
            owner = _CURRENT.get()
            if "name" in kwargs:
                _adopt(loop, task, owner)
            else:  # Python 3.11 names the task only after the factory returns
                loop.call_soon(_adopt, loop, task, owner)
        return task

    return factory


def _adopt(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], owner: Supervisor | None) -> None:
    name = task.get_name()
    forever = name in FOREVER_TASKS
    if forever or name.startswith(SHORT_TASK_PREFIXES):
        active = _ON_LOOP.get(loop, [])
        for supervisor in [owner] if owner is not None and owner in active else list(active):
            supervisor.watch(task, name, forever=forever)
