"""REST: bulk send — one request per user or APNs device token, tracked by a bulk id.

The bulk id is the correlation id of every request (and so of every event they cause),
which is how ``GET /api/notifications/bulk/{bulk_id}`` and ``?bulk_id=`` find them.
A bulk answers once every request is on the broker, without waiting for projection:
its status endpoint shows progress.

A target refused before publishing (an unknown or inactive device token, a user id no
request can carry) gets no request, so the API appends a ``bulk.target_refused`` fact for
it to the event log, with the id its request would have had: the projector lists it with
the bulk (``rejected``, with the reason), and ``herald why`` explains it. At most one fact
per target, each bounded by its schema.

Amplification is bounded before anything is published (a user token, which reaches only
its own devices, names at most ``HERALD_MAX_DEVICES_PER_USER`` device tokens): at most ``HERALD_BULK_MAX_TARGETS``
targets; the request for the longest target is encoded once, and a bulk whose requests
would each exceed ``HERALD_MAX_REQUEST_BYTES`` (ingest would dead-letter every copy) or
together exceed ``HERALD_BULK_MAX_ENCODED_BYTES`` is refused with 413.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from api.auth import SCOPE_ADMIN, SCOPE_WRITE, TokenVerifier
from api.problems import Problem
from api.publisher import Publisher, RawRecord
from api.rest.envelopes import DEVICE_TOKEN_CHANNEL, REQUEST_FIELDS, SOURCE, build_request, check_address
from api.rest.params import json_body, path_id
from engine.settings import Settings
from engine.topics import TopicNames
from projections.queries import NotificationQueries
from schemas.codec import encode, envelope_to_dict, schema
from schemas.envelope import Envelope
from schemas.events import BulkTargetRefused
from schemas.ids import derived_id, uuid7

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest bulk body (its targets are bounded by the settings, its content by the request limit)."""
DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_FIELDS = REQUEST_FIELDS - {"user_id", "device_token", "idempotency_key"}
FIELD_LIMIT = 200
"""Longest id, target or user a ``bulk.target_refused`` carries (its schema's limit)."""
CONTENT_PROBE_USER = "bulk-content-check"
"""A valid user id the content is checked with, once per bulk."""
REASON_LIMIT = 1000
"""Longest reason a ``bulk.target_refused`` carries."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A target refused before publishing."""

    target: str
    reason: str
    device: bool
    """Whether ``target`` is a device token (else a user id)."""
    user_id: str | None = None
    """The recipient, when the caller may know it (the owner of an inactive token)."""

    def notification_id(self, bulk_id: str) -> str:
        """The id the target's request would have had (as ``create`` derives it)."""
        if self.device:
            return derived_id(bulk_id, self.user_id or "", self.target)
        return derived_id(bulk_id, self.target, "")

    def answer(self, bulk_id: str) -> dict[str, str]:
        """The refusal as the 202 answer lists it."""
        return {"target": self.target, "reason": self.reason, "notification_id": self.notification_id(bulk_id)}

    def fact(self, bulk_id: str, requested_by: str, priority: str) -> Envelope:
        """The ``bulk.target_refused`` that records it (same id for the same bulk and target)."""
        nid = self.notification_id(bulk_id)
        user = self.user_id if self.user_id is None or len(self.user_id) <= FIELD_LIMIT else None
        event = BulkTargetRefused(
            notification_id=nid,
            bulk_id=bulk_id,
            target=self.target[:FIELD_LIMIT],
            target_kind="device_token" if self.device else "user_id",
            reason=self.reason[:REASON_LIMIT],
            requested_by=requested_by[:FIELD_LIMIT],
            user_id=user,
        )
        return Envelope(
            id=derived_id(nid, event.TYPE),
            source=SOURCE,
            time=datetime.now(UTC),
            data=event,
            subject=nid,
            userid=user,
            priority=priority,
            correlationid=bulk_id,
        )


class BulkRoutes:
    """Handlers of ``/api/notifications/bulk``."""

    def __init__(
        self, verifier: TokenVerifier, queries: NotificationQueries, publisher: Publisher | None, settings: Settings
    ) -> None:
        self._verifier = verifier
        self._queries = queries
        self._publisher = publisher
        self._settings = settings

    def register(self, app: web.Application) -> None:
        """Add the routes (before ``/api/notifications/{id}`` so ``bulk`` is not taken for an id)."""
        app.router.add_post("/api/notifications/bulk", self.create)
        app.router.add_get("/api/notifications/bulk/{bulk_id}", self.status)

    async def create(self, request: web.Request) -> web.Response:
        """``POST /api/notifications/bulk``: ``user_ids`` or ``device_tokens`` plus the content."""
        principal = self._verifier.from_request(request)
        if self._publisher is None:
            raise Problem(503, "Service Unavailable", "this API instance has no broker connection")
        body = await json_body(request, max_bytes=MAX_BODY_BYTES)
        users, tokens = body.pop("user_ids", None), body.pop("device_tokens", None)
        unknown = sorted(set(body) - _CONTENT_FIELDS)
        if unknown:
            raise Problem(422, "Unprocessable Content", f"unknown field(s): {', '.join(unknown)}")
        check_address(body, may_write=principal.has(SCOPE_WRITE))
        if (users is None) == (tokens is None):
            raise Problem(422, "Unprocessable Content", "give exactly one of user_ids or device_tokens")
        targets = users if users is not None else tokens
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise Problem(422, "Unprocessable Content", "targets must be a non-empty list of non-empty strings")
        limit = self._settings.bulk_max_targets
        if len(targets) > limit:
            raise Problem(
                413, "Payload Too Large", f"{len(targets)} targets; at most {limit} per bulk request: split it"
            )
        targets = list(dict.fromkeys(targets))
        devices = self._settings.max_devices_per_user
        if tokens is not None and not principal.has(SCOPE_WRITE) and len(targets) > devices:
            # A user reaches only their own devices: more tokens than anyone may own would only
            # record refusals (one fact each), so a user token cannot flood the log with them.
            raise Problem(
                413, "Payload Too Large", f"{len(targets)} device tokens; a user token may name at most {devices}"
            )
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 200 characters")
        bulk_id = derived_id("api-bulk", principal.subject, key) if key is not None else uuid7()
        refused: list[Refusal] = []
        recipients: list[tuple[str, str | None]]  # (user, device token)
        if users is not None:
            if not principal.has(SCOPE_WRITE) and any(u != principal.subject for u in targets):
                raise Problem(403, "Forbidden", "sending to other users needs the notifications:write scope")
            recipients = [(u, None) for u in targets]
        else:
            recipients = await self._resolve_tokens(principal.subject, principal.has(SCOPE_WRITE), targets, refused)
            body["channels"] = [DEVICE_TOKEN_CHANNEL]
        # The content is checked once, whoever the targets: bad content is a 422, never a refusal per target.
        build_request({**body, "user_id": CONTENT_PROBE_USER}, notification_id=bulk_id, correlation_id=bulk_id)
        size = self._check_size(body, bulk_id, recipients)
        names = self._publisher.names
        template = _Template.of(body, bulk_id, names)
        requests: list[RawRecord] = []
        for user_id, token in recipients:
            nid = derived_id(bulk_id, user_id, token or "")
            if token is None and template.fits(user_id):
                requests.append(template.record(nid, user_id))
                continue
            data: dict[str, Any] = {**body, "user_id": user_id, "device_token": token}
            try:
                env, priority_ = build_request(data, notification_id=nid, correlation_id=bulk_id, now=template.now)
            except Problem as exc:  # this target's own fault (e.g. an overlong user id)
                refused.append(Refusal(token or user_id, exc.detail, device=token is not None, user_id=user_id))
                continue
            requests.append(RawRecord(names.request(priority_), user_id.encode(), encode(env), []))
        priority = str(body.get("priority") or "medium")
        facts = [r.fact(bulk_id, principal.subject, priority) for r in refused]
        records = [RawRecord(names.events, (f.userid or "").encode(), encode(f), []) for f in facts]
        self._check_budget(size, len(requests), sum(len(r.value or b"") for r in records))
        # The refusals first: a bulk whose answer is lost and is retried (same Idempotency-Key)
        # records them once (derived ids), and never publishes requests whose refusals are missing.
        await self._publisher.forward(records)
        await self._publisher.forward(requests)
        location = f"/api/notifications/bulk/{bulk_id}"
        answer = [r.answer(bulk_id) for r in refused]
        return web.json_response(
            {"bulk_id": bulk_id, "requested": len(requests), "refused": answer, "status_url": location},
            status=202,
            headers={"Location": location},
        )

    def _check_size(self, body: dict[str, Any], bulk_id: str, recipients: list[tuple[str, str | None]]) -> int:
        """413 unless every request fits ingest's limit and all of them the bulk budget (one encode);
        the encoded size of the largest request."""
        if not recipients:
            return 0
        longest = max(recipients, key=_target_length)
        size = 0
        for user_id, token in (longest, recipients[0]):
            data: dict[str, Any] = {**body, "user_id": user_id, "device_token": token}
            nid = derived_id(bulk_id, user_id, token or "")
            try:
                env, _ = build_request(data, notification_id=nid, correlation_id=bulk_id)
            except Problem:
                continue  # a target the loop refuses on its own (e.g. an overlong user id): size the first
            # A target appears at most three times in a request (user id attribute and field, token),
            # at most 6 bytes per character once escaped: an upper bound for the longest target.
            size = len(encode(env)) + 18 * (_target_length(longest) - _target_length((user_id, token)))
            break
        limit = self._settings.max_request_bytes
        if size > limit:
            raise Problem(
                413,
                "Payload Too Large",
                f"each notification of this bulk encodes to {size} bytes; at most {limit} are accepted",
            )
        total, budget = size * len(recipients), self._settings.bulk_max_encoded_bytes
        if total > budget:
            raise Problem(
                413,
                "Payload Too Large",
                f"{len(recipients)} notifications of {size} bytes make {total} bytes; at most {budget} per bulk:"
                " split it or shorten the content",
            )
        return size

    def _check_budget(self, size: int, requests: int, refusals: int) -> None:
        """413 unless the requests and the refusals' facts (``refusals`` bytes) fit the bulk budget together."""
        total, budget = size * requests + refusals, self._settings.bulk_max_encoded_bytes
        if total > budget:
            raise Problem(
                413,
                "Payload Too Large",
                f"{requests} notifications of {size} bytes and {refusals} bytes of refused targets make {total}"
                f" bytes; at most {budget} per bulk: split it",
            )

    async def _resolve_tokens(
        self, caller: str, may_write: bool, tokens: list[str], refused: list[Refusal]
    ) -> list[tuple[str, str | None]]:
        bad = [t for t in tokens if not DEVICE_TOKEN.match(t)]
        if bad:
            raise Problem(
                422, "Unprocessable Content", f"{len(bad)} device token(s) are not 64 hex characters", invalid=bad[:20]
            )
        owners = await self._queries.device_owners(tokens)
        out: list[tuple[str, str | None]] = []
        for token in tokens:
            owner = owners.get(token)
            # A caller without the write scope learns nothing about other users' tokens.
            if owner is None or (not may_write and owner[0] != caller):
                refused.append(Refusal(token, "unknown device token", device=True))
            elif not owner[1]:
                refused.append(Refusal(token, "device token is not active", device=True, user_id=owner[0]))
            else:
                out.append((owner[0], token))
        return out

    async def status(self, request: web.Request) -> web.Response:
        """``GET /api/notifications/bulk/{bulk_id}``: how many of a bulk's notifications are in which status."""
        principal = self._verifier.from_request(request)
        if not (principal.has(SCOPE_WRITE) or principal.has(SCOPE_ADMIN)):
            raise Problem(403, "Forbidden", "bulk status needs the notifications:write scope")
        bulk_id = path_id(request, "bulk_id")
        by_status = await self._queries.bulk_summary(bulk_id)
        if not by_status:
            raise Problem(404, "Not Found", "no notification of this bulk has been projected (yet)")
        return web.json_response({"bulk_id": bulk_id, "projected": sum(by_status.values()), "by_status": by_status})


_USER_ID = schema("notification.requested")["properties"]["user_id"]
_USER_ID_LENGTHS = range(int(_USER_ID["minLength"]), int(_USER_ID["maxLength"]) + 1)


@dataclass(frozen=True, slots=True)
class _Template:
    """A bulk's request, encoded once: each user's record is it with the user and the id put in.

    The content was validated once (with ``CONTENT_PROBE_USER``); a user id the request
    schema takes as it is (a string of its lengths) changes nothing else, so its record is
    the template's document with ``id``, ``subject``, ``userid`` and ``data.user_id`` set:
    what ``encode(build_request(...))`` makes of it (tests/unit/test_bulk_template.py),
    without validating and building the same request again per target.
    """

    topic: str
    document: dict[str, Any]
    data: dict[str, Any]
    now: datetime

    @classmethod
    def of(cls, body: dict[str, Any], bulk_id: str, topics: TopicNames) -> _Template:
        now = datetime.now(UTC)
        env, priority = build_request(
            {**body, "user_id": CONTENT_PROBE_USER}, notification_id=bulk_id, correlation_id=bulk_id, now=now
        )
        document = envelope_to_dict(env)
        topic = topics.request(priority)
        return cls(topic, document, document["data"], now)

    def fits(self, user_id: str) -> bool:
        """Whether the schema takes ``user_id`` as it is (else the request is built and checked as usual)."""
        return len(user_id) in _USER_ID_LENGTHS

    def value(self, notification_id: str, user_id: str) -> bytes:
        """The encoded request of ``user_id``."""
        document = self.document.copy()
        document["id"] = document["subject"] = notification_id
        document["userid"] = user_id
        data = document["data"] = self.data.copy()
        data["user_id"] = user_id
        try:
            return orjson.dumps(document)
        except TypeError:  # as schemas.codec.encode: an integer beyond 64 bits in the content
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    def record(self, notification_id: str, user_id: str) -> RawRecord:
        """The request of ``user_id`` for its priority topic."""
        return RawRecord(self.topic, user_id.encode(), self.value(notification_id, user_id), [])


def _target_length(recipient: tuple[str, str | None]) -> int:
    return len(recipient[0]) + len(recipient[1] or "")
