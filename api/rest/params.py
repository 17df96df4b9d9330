"""Request parsing shared by the REST handlers: query parameters, JSON bodies, whose data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from api.auth import SCOPE_ADMIN, Principal
from api.problems import Problem
from schemas.codec import parse_time
from schemas.errors import InvalidMessage, MalformedJSON
from schemas.limits import MAX_ID_LENGTH as MAX_ID_LENGTH  # re-exported: handlers bound ids with it
from schemas.limits import parse_json


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, "Bad Request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise Problem(400, "Bad Request", f"{name} must be between {low} and {high}")
    return value


def bool_param(request: web.Request, name: str) -> bool | None:
    """``true``/``false`` (also 1/0); ``None`` when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in {"true", "1"}:
        return True
    if lowered in {"false", "0"}:
        return False
    raise Problem(400, "Bad Request", f"{name} must be true or false")


def enum_params(request: web.Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Values of a repeatable (or comma-separated) enum parameter."""
    values: list[str] = []
    for raw in request.query.getall(name, []):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    bad = sorted({v for v in values if v not in allowed})
    if bad:
        raise Problem(400, "Bad Request", f"{name}: unknown value(s) {bad}; expected one of {list(allowed)}")
    return tuple(dict.fromkeys(values))


def time_param(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 timestamp with a timezone."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise Problem(400, "Bad Request", f"{name} must be an RFC 3339 timestamp with a timezone") from None


def str_param(request: web.Request, name: str, *, max_length: int = MAX_ID_LENGTH) -> str | None:
    """A non-empty string parameter of bounded length."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > max_length:
        raise Problem(400, "Bad Request", f"{name} must be 1 to {max_length} characters")
    if "\x00" in raw:
        raise Problem(400, "Bad Request", f"{name} must not contain NUL characters")
    return raw


def path_id(request: web.Request, name: str = "id") -> str:
    """A path segment id; too long means it cannot exist (404, like any unknown id)."""
    value = request.match_info[name]
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise Problem(404, "Not Found", "no such resource")
    return value


def whose(request: web.Request, principal: Principal) -> str:
    """The user whose data a read concerns: the caller, or ``?user_id=`` for an admin."""
    asked = str_param(request, "user_id")
    if asked is None or asked == principal.subject:
        return principal.subject
    if not principal.has(SCOPE_ADMIN):
        raise Problem(403, "Forbidden", "reading another user's data needs the admin scope")
    return asked


async def json_body(request: web.Request, *, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, read with an explicit size limit."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise Problem(413, "Payload Too Large", f"the body may be at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "Payload Too Large", f"the body may be at most {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = parse_json(raw)  # bounded: depth, numbers, duplicate keys, lone surrogates
    except MalformedJSON as exc:
        raise Problem(400, "Bad Request", exc.reason) from None
    except InvalidMessage as exc:
        raise Problem(422, "Unprocessable Content", exc.reason) from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the body must be a JSON object")
    return body
