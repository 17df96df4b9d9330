"""``herald why NOTIFICATION_ID``: the decision chain of one notification, from the log.

The read models (``HERALD_DATABASE_URL``) only say where in the log to look; without
them the whole log is scanned. See ``api.rest.explain`` and ``docs/audit.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from engine.settings import Settings

if TYPE_CHECKING:
    from engine.explain import Explanation


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald why``."""
    why = sub.add_parser("why", help="explain from the event log what happened to one notification")
    why.add_argument("notification_id")
    why.add_argument("--json", action="store_true", help="the explanation as JSON (as the REST endpoint)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the explanation; one line on stderr and status 1 for an unknown id or an unreachable broker."""
    # The log reader (Kafka, SQLAlchemy) loads only for this command: `herald token` stays quick.
    from api.rest.explain import LogUnreachable

    nid = args.notification_id.strip()
    if not nid:
        sys.stderr.write("herald why: empty notification id\n")
        return 2
    try:
        found = asyncio.run(_explain(settings, nid))
    except LogUnreachable as exc:
        sys.stderr.write(f"herald why: {exc}\n")
        return 1
    if found is None:
        sys.stderr.write(f"herald why: unknown notification id {nid}: no record of the event log or dead letters\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(found.as_json(), indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(found.lines()) + "\n")
    return 0


async def _explain(settings: Settings, nid: str) -> Explanation | None:
    from api.rest.explain import explain_notification
    from herald.audit_progress import Bar
    from projections.database import create_engine
    from projections.queries import NotificationQueries

    engine = create_engine(settings.database_url)
    bar = Bar("reading the log", None)
    try:
        return await explain_notification(settings, nid, NotificationQueries(engine), progress=bar.advance)
    finally:
        bar.close()
        await engine.dispose()
