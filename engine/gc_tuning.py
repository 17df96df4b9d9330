"""Garbage-collection settings of a long-running role (worker, api, projector).

Every role allocates a few dozen short-lived objects per notification or event, nearly all
freed by their reference counts; with Python's default (a young collection every 700
allocations) the collections, and the promotions they cause, cost a measurable share of the
CPU, and a full collection walks every object alive, start-up state included (20-110 ms
pauses in a burst). ``tune_gc`` is called once a role has started.
"""

from __future__ import annotations

import gc


def tune_gc(young_threshold: int) -> None:
    """Freeze what is alive now out of later collections; collect the youngest generation after
    ``young_threshold`` allocations.

    Process-wide and never lowered: roles sharing a process (``herald dev``) keep the
    highest threshold any of them asked for, which costs them a little memory.
    """
    young, middle, old = gc.get_threshold()
    gc.collect()  # nothing unreachable is frozen
    gc.freeze()
    if young < young_threshold:
        gc.set_threshold(young_threshold, middle, old)
