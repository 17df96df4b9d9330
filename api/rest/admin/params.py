"""Query parameters of the admin API: ``api/rest/params.py``'s parsers, answering 422 with the parameter named.

The console's contract (``docs/api.md``, Console API) says a bad query parameter is a 422
problem+json whose ``parameter`` member names it, so a page can mark the field; the
shared parsers answer 400 for the user API, and are reused here rather than copied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from aiohttp import web

from api.problems import Problem
from api.rest import params

T = TypeVar("T")


def invalid(name: str, detail: str) -> Problem:
    """The 422 of a bad parameter ``name``."""
    return Problem(422, "Unprocessable Content", detail, parameter=name)


def _checked(name: str, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except Problem as exc:
        if exc.status != 400:
            raise
        raise invalid(name, exc.detail) from None


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer within [low, high]."""
    return _checked(name, lambda: params.int_param(request, name, default, low=low, high=high))


def str_param(request: web.Request, name: str, *, max_length: int = params.MAX_ID_LENGTH) -> str | None:
    """A non-empty string of at most ``max_length`` characters, without NUL."""
    return _checked(name, lambda: params.str_param(request, name, max_length=max_length))


def time_param(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 timestamp with a timezone."""
    return _checked(name, lambda: params.time_param(request, name))


def enum_params(request: web.Request, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Values of a repeatable (or comma-separated) enum parameter."""
    return _checked(name, lambda: params.enum_params(request, name, allowed))


def enum_param(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """At most one value of an enum parameter."""
    values = enum_params(request, name, allowed)
    if len(values) > 1:
        raise invalid(name, f"{name} takes one value")
    return values[0] if values else None
