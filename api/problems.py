"""RFC 9457 problem details: every API error leaves through one middleware as problem+json."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from schemas.errors import HeraldError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(HeraldError):
    """An error the client caused or must know about, with its HTTP status."""

    def __init__(self, status: int, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int, title: str, detail: str = "", headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map ``Problem``, aiohttp HTTP errors and unexpected exceptions to problem+json."""
    try:
        return await handler(request)
    except Problem as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="herald"'} if exc.status == 401 else None
        return problem_response(exc.status, exc.title, exc.detail, headers=headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # 405 names what is allowed
        return problem_response(
            exc.status,
            exc.reason,
            exc.text if exc.text and not exc.text.startswith(str(exc.status)) else "",
            headers=allow,
        )
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return problem_response(500, "Internal Server Error", "an unexpected error occurred; it has been logged")
