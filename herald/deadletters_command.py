"""``herald deadletters list|redrive``: the console's dead-letter page from a shell.

Both go through the REST API (``/api/admin/deadletters``, see ``docs/api.md``), like the
console, so a re-drive from a shell is the same recorded ``deadletter.redriven`` as one from
the page, with the same checks. The admin token is ``--token``, else ``HERALD_ADMIN_TOKEN``,
else one minted for ``--operator`` (default: the login name) with the configured secret.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from typing import Any

from engine.settings import Settings

_COORDS = re.compile(r"^(\d+):(\d+)$")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``herald deadletters list`` and ``herald deadletters redrive``."""
    cmd = sub.add_parser("deadletters", help="browse dead letters, re-drive them to their source topic (admin)")
    actions = cmd.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="dead letters, newest first")
    listing.add_argument("--limit", type=int, default=50, help="how many (1-200)")
    listing.add_argument("--before", help="partition:offset: older than this one (a previous listing's next)")
    listing.add_argument("--source-topic", help="only those read from this topic")
    listing.add_argument("--reason", help="only those whose reason contains this text")
    listing.add_argument("--json", action="store_true", help="print the API's JSON answer")
    redrive = actions.add_parser("redrive", help="produce dead letters to their source topic again")
    redrive.add_argument("records", nargs="*", metavar="P:O", help="dead letters by partition:offset (up to 500)")
    redrive.add_argument("--source-topic", help="instead of P:O: those read from this topic")
    redrive.add_argument("--reason", help="instead of P:O: those whose reason contains this text")
    redrive.add_argument("--max", type=int, default=500, help="with a filter: how many at most (1-500)")
    redrive.add_argument("--force", action="store_true", help="re-drive records re-driven before too")
    for parser in (listing, redrive):
        parser.add_argument("--api", help="base URL of `herald api` (default: HERALD_HTTP_HOST and HERALD_HTTP_PORT)")
        parser.add_argument("--token", help="admin token (default: HERALD_ADMIN_TOKEN, else one minted)")
        parser.add_argument("--operator", help="subject of a minted token: who re-drives (default: the login name)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """List or re-drive; one line on stderr and status 2 (bad use) or 1 (the API refused) on failure."""
    try:
        if args.action == "list":
            params = {"limit": str(args.limit)}
            for name in ("before", "source_topic", "reason"):
                if getattr(args, name):
                    params[name] = getattr(args, name)
            status, body = asyncio.run(_call(args, settings, "GET", "", params=params))
        else:
            status, body = asyncio.run(_call(args, settings, "POST", "/redrive", json_body=_redrive_body(args)))
    except ValueError as exc:
        sys.stderr.write(f"herald deadletters: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"herald deadletters: cannot reach the API: {exc}\n")
        return 1
    if status >= 400:
        detail = body.get("detail") or body.get("title") if isinstance(body, dict) else body
        sys.stderr.write(f"herald deadletters: {status} {detail}\n")
        return 1
    if args.action == "list":
        if args.json:
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
        else:
            for item in body["items"]:
                sys.stdout.write(_line(item) + "\n")
            sys.stdout.write(f"next: {body['next'] or '-'}\n")
        return 0
    for skip in body["skipped"]:
        sys.stdout.write(f"skipped {skip['partition']}:{skip['offset']}: {skip['why']}\n")
    sys.stdout.write(f"re-drove {body['redriven']}\n")
    return 0


def _redrive_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.records and (args.source_topic or args.reason):
        raise ValueError("name records (P:O) or give a filter (--source-topic, --reason), not both")
    body: dict[str, Any] = {"force": bool(args.force)}
    if args.records:
        coords = []
        for text in args.records:
            match = _COORDS.match(text)
            if match is None:
                raise ValueError(f"{text!r} is not partition:offset")
            coords.append({"partition": int(match[1]), "offset": int(match[2])})
        body["records"] = coords
    elif args.source_topic or args.reason:
        spec = {k: v for k, v in (("source_topic", args.source_topic), ("reason", args.reason)) if v}
        body["filter"] = spec
        body["max"] = args.max
    else:
        raise ValueError("name records (P:O) or give a filter (--source-topic, --reason)")
    return body


def _line(item: dict[str, Any]) -> str:
    source = f"{item['source_topic']}/{item['source_partition']}/{item['source_offset']}"
    mark = " [re-driven]" if item["redriven"] else ""
    copy = f" (copy of {item['redriven_from']})" if item.get("redriven_from") else ""
    return f"{item['partition']}:{item['offset']}  {item['timestamp']}  {source}{mark}{copy}  {item['reason']}"


def _token(args: argparse.Namespace, settings: Settings) -> str:
    token = args.token or os.environ.get("HERALD_ADMIN_TOKEN")
    if token:
        return str(token)
    from api.auth import SCOPE_ADMIN, mint_token

    operator = (args.operator or getpass.getuser() or "unknown").strip()
    return mint_token(settings, operator, scopes=(SCOPE_ADMIN,), ttl=min(300, settings.jwt_max_lifetime_seconds))


async def _call(
    args: argparse.Namespace,
    settings: Settings,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    import aiohttp

    wildcard = settings.http_host in ("0.0.0.0", "::", "")  # noqa: S104 - reached on loopback
    host = "127.0.0.1" if wildcard else settings.http_host
    base = (args.api or f"http://{host}:{settings.http_port}").rstrip("/")
    headers = {"Authorization": f"Bearer {_token(args, settings)}"}
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, f"{base}/api/admin/deadletters{path}", params=params, json=json_body, headers=headers
            ) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except json.JSONDecodeError:
                return resp.status, text[:200]
    except aiohttp.ClientError as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
