"""The one error root of Herald and the errors of the wire layer."""

from __future__ import annotations


class HeraldError(Exception):
    """Root of every error Herald raises on purpose.

    ``retriable`` says whether doing the same thing again later may succeed
    (a transport hiccup) or never will (bad input, a permanent refusal).
    """

    retriable: bool = False


class InvalidMessage(HeraldError):
    """Bytes that cannot become an event: not JSON, not CloudEvents, or not valid for its schema.

    ``user_id`` and ``event_id`` are filled in when they could be read anyway, so the
    caller can still tell the user's history that a request was rejected.
    """

    retriable = False

    def __init__(self, reason: str, *, user_id: str | None = None, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id
        self.event_id = event_id


class MalformedJSON(InvalidMessage):
    """Bytes that are not JSON at all (syntax, encoding), as opposed to JSON Herald refuses
    (too deep, ``NaN``, duplicate keys...). HTTP answers the first 400, the second 422."""
