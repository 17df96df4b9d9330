"""Presence: which gateway nodes hold which users, the per-user connection limit, and the
channel frames arrive on.

Redis layout (every key carries the deployment prefix):
- ``presence:<user>`` hash, node id -> expiry (unix seconds): read by the WebSocket sink.
- ``connections:<user>`` sorted set, ``<node>/<connection>`` scored by expiry: the
  cluster-wide connection count the limit is enforced on, atomically, in one script.
Every gateway refreshes its entries every third of the TTL; a crashed gateway's
entries expire on their own and are ignored by readers from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from engine.presence import gateway_channel, live_nodes, presence_key

log = logging.getLogger(__name__)

REFRESH_CHUNK = 500
"""Users refreshed per Redis round trip (one script call each: see ``_REFRESH``)."""

Deliver = Callable[[str, dict[str, Any], str | None], Awaitable[int]]
"""``(user, frame, text)``: ``text`` is the frame as the worker rendered it (sent as it is), if known."""
Held = Callable[[], Collection[tuple[str, str]]]
"""``(user, connection)`` pairs this node holds now."""
Resync = Callable[[], Awaitable[None]]
"""Called when this node's frame channel was lost and is back: frames may have been missed."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One gateway node holding a user."""

    node_id: str
    connections: int
    expires_at: float


def connections_key(prefix: str, user_id: str) -> str:
    """Redis sorted set of ``<node>/<connection>`` members scored by expiry."""
    return f"{prefix}connections:{user_id}"


class Presence(Protocol):
    """Port used by the gateway."""

    node_id: str

    async def start(self, deliver: Deliver, held: Held, resync: Resync | None = None) -> None:
        """Begin receiving frames for this node (``deliver(user, frame)``) and refreshing ``held()``;
        ``resync()`` once the frame channel is back after a loss (Redis restarted or cut off)."""
        ...

    async def join(self, user_id: str, connection: str, limit: int) -> bool:
        """Admit one more connection of ``user_id`` unless it already has ``limit`` (then ``False``)."""
        ...

    async def leave(self, user_id: str, connection: str, *, last_here: bool) -> None:
        """The connection closed; ``last_here`` when the node holds no other connection of the user."""
        ...

    async def nodes(self, user_id: str) -> list[NodeEntry]:
        """Live nodes holding ``user_id``, with their connection counts."""
        ...

    async def close(self) -> None:
        """Stop; entries of this node expire on their own if this is never called."""
        ...


class LocalPresence:
    """In-process presence for ``herald dev``: one node, the sink calls the hub directly."""

    def __init__(self, node_id: str, ttl: int) -> None:
        self.node_id = node_id
        self._ttl = ttl
        self._connections: dict[str, set[str]] = {}

    async def start(self, deliver: Deliver, held: Held, resync: Resync | None = None) -> None:
        return None

    async def join(self, user_id: str, connection: str, limit: int) -> bool:
        held = self._connections.setdefault(user_id, set())
        if connection not in held and len(held) >= limit:
            return False
        held.add(connection)
        return True

    async def leave(self, user_id: str, connection: str, *, last_here: bool) -> None:
        held = self._connections.get(user_id, set())
        held.discard(connection)
        if not held:
            self._connections.pop(user_id, None)

    async def nodes(self, user_id: str) -> list[NodeEntry]:
        count = len(self._connections.get(user_id, ()))
        return [NodeEntry(self.node_id, count, time.time() + self._ttl)] if count else []

    async def close(self) -> None:
        return None


# Drop expired members, refuse when the user is at the limit, else add the member and
# mark the node present: one round trip, atomic, so two gateways cannot both admit the
# limit's last slot.
_JOIN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""


# Push the expiry of this node's entries forward: per user (two keys each, in KEYS), its
# connections' members in the sorted set, the node in the hash, both keys' TTL. ARGV: the
# expiry, the node, the TTL, then per user the count of its members and the members. One
# command for a chunk of users: redis-py builds and parses four commands per user in Python
# otherwise (about 11 us each: a 2,000-user chunk held the event loop for tens of ms).
_REFRESH = """
local expiry, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local at = 4
for i = 1, #KEYS, 2 do
  local count = tonumber(ARGV[at])
  for j = 1, count do
    redis.call('ZADD', KEYS[i], expiry, ARGV[at + j])
  end
  at = at + count + 1
  redis.call('HSET', KEYS[i + 1], node, expiry)
  redis.call('EXPIRE', KEYS[i + 1], ttl)
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS / 2
"""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPresence:
    """Production presence on Redis; frames for this node arrive on its pub/sub channel."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, ttl: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.node_id = node_id
        self._ttl = ttl
        self._tasks: list[asyncio.Task[None]] = []
        self._join = redis.register_script(_JOIN)
        self._refresh = redis.register_script(_REFRESH)

    async def start(self, deliver: Deliver, held: Held, resync: Resync | None = None) -> None:
        pubsub = self._redis.pubsub()
        # Subscribed before start() returns: a frame published right after is not missed.
        await pubsub.subscribe(gateway_channel(self._prefix, self.node_id))
        self._tasks = [
            asyncio.create_task(self._listen_forever(pubsub, deliver, resync), name="presence-listen"),
            asyncio.create_task(self._refresh_forever(held), name="presence-refresh"),
        ]

    async def join(self, user_id: str, connection: str, limit: int) -> bool:
        now = time.time()
        keys = [connections_key(self._prefix, user_id), presence_key(self._prefix, user_id)]
        args: list[str | float | int] = [
            self._member(connection),
            now,
            now + self._ttl,
            limit,
            self.node_id,
            self._ttl + 1,
        ]
        return bool(await self._join(keys=keys, args=args))

    async def leave(self, user_id: str, connection: str, *, last_here: bool) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(connections_key(self._prefix, user_id), self._member(connection))
            if last_here:
                pipe.hdel(presence_key(self._prefix, user_id), self.node_id)
            await pipe.execute()

    async def nodes(self, user_id: str) -> list[NodeEntry]:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(presence_key(self._prefix, user_id))
            pipe.zrangebyscore(connections_key(self._prefix, user_id), now, "+inf")
            raw_entries, raw_members = await pipe.execute()
        # Replies are str from the roles' client (decode_responses=True), bytes from a bare one.
        entries = {_text(node): _text(expiry) for node, expiry in raw_entries.items()}
        counts: dict[str, int] = {}
        for member in raw_members:
            node = _text(member).rpartition("/")[0]
            counts[node] = counts.get(node, 0) + 1
        return [NodeEntry(node, counts.get(node, 0), float(entries[node])) for node in live_nodes(entries, now=now)]

    async def refresh(self, held: Collection[tuple[str, str]]) -> None:
        """Push this node's entries' expiry forward (one script call per ``REFRESH_CHUNK`` users, so
        the loop stays responsive)."""
        expiry = time.time() + self._ttl
        by_user: dict[str, list[str]] = {}
        for user, connection in held:
            by_user.setdefault(user, []).append(connection)
        users = list(by_user)
        stamp = repr(expiry)
        for start in range(0, len(users), REFRESH_CHUNK):
            keys: list[str] = []
            args: list[str | int] = [stamp, self.node_id, self._ttl + 1]
            for user in users[start : start + REFRESH_CHUNK]:
                keys += (connections_key(self._prefix, user), presence_key(self._prefix, user))
                members = by_user[user]
                args.append(len(members))
                args += (self._member(connection) for connection in members)
            await self._refresh(keys=keys, args=args)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _member(self, connection: str) -> str:
        return f"{self.node_id}/{connection}"

    async def _refresh_forever(self, held: Held) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self.refresh(list(held()))
            except Exception:
                log.exception("presence refresh failed", extra={"node_id": self.node_id})

    async def _listen_forever(self, pubsub: Any, deliver: Deliver, resync: Resync | None) -> None:
        channel = gateway_channel(self._prefix, self.node_id)
        current: Any = pubsub
        try:
            while True:
                try:
                    if current is None:
                        current = self._redis.pubsub()
                        await current.subscribe(channel)
                        # While unsubscribed, frames for this node found no receiver (the sink
                        # then records the users offline) and a restarted Redis forgot who is
                        # where: the node's clients must resume to get what they missed.
                        log.warning("gateway subscription restored", extra={"node_id": self.node_id})
                        if resync is not None:
                            await resync()
                    await self._listen(current, deliver)
                    raise ConnectionError("gateway subscription ended")
                except Exception:
                    log.exception("gateway subscription lost; resubscribing", extra={"node_id": self.node_id})
                    broken, current = current, None
                    if broken is not None:
                        await _close_quietly(broken)
                    await asyncio.sleep(0.5)
        finally:
            if current is not None:
                await _close_quietly(current)

    async def _listen(self, pubsub: Any, deliver: Deliver) -> None:
        stream = _raw_stream(pubsub)
        if stream is not None:
            await _listen_raw(stream, deliver)
            return
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                data = message["data"]
                payload = orjson.loads(data)
                await deliver(payload["user_id"], payload["frame"], frame_text(data))
            except Exception:
                log.exception("gateway frame not delivered", extra={"node_id": self.node_id})


READ_SIZE = 256 * 1024
"""Bytes read from the subscription's socket at a time."""


def _raw_stream(pubsub: Any) -> asyncio.StreamReader | None:
    """The subscription's socket, when its messages may be read without redis-py's parser.

    redis-py's pure-Python parser costs more per pub/sub message than everything else the
    gateway does with a frame (it is the parser when hiredis is not installed). Its
    connection's stream holds exactly the unread replies once subscribed (the parser keeps
    nothing buffered between replies): read from there. ``None`` (redis-py's own loop is
    used) for any other parser or state.
    """
    connection = getattr(pubsub, "connection", None)
    parser = getattr(connection, "_parser", None)
    stream = getattr(connection, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader) or type(parser).__name__ not in _PYTHON_PARSERS:
        return None
    if getattr(parser, "_buffer", None) or getattr(parser, "_chunks", None):
        return None
    return stream


_PYTHON_PARSERS = frozenset({"_AsyncRESP2Parser", "_AsyncRESP3Parser"})


async def _listen_raw(stream: asyncio.StreamReader, deliver: Deliver) -> None:
    """Deliver every ``message`` reply read from ``stream``; return when Redis closes it."""
    buffer = b""
    while True:
        chunk = await stream.read(READ_SIZE)
        if not chunk:
            raise ConnectionError("the gateway subscription's connection was closed")
        buffer = buffer + chunk if buffer else chunk
        messages, used = parse_replies(buffer)
        buffer = buffer[used:]
        for data in messages:
            try:
                payload = orjson.loads(data)
                await deliver(payload["user_id"], payload["frame"], frame_text(data))
            except Exception:
                log.exception("gateway frame not delivered")


class _More(Exception):
    """The buffer ends inside a reply."""


def parse_replies(buffer: bytes) -> tuple[list[bytes], int]:
    """The data of the pub/sub ``message`` replies complete in ``buffer`` (RESP2 or RESP3), and
    how many bytes they and the other complete replies (subscribe confirmations, pushes) took."""
    messages: list[bytes] = []
    pos = 0
    size = len(buffer)
    while pos < size:
        try:
            reply, end = _reply(buffer, pos)
        except _More:
            break
        pos = end
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message" and isinstance(reply[2], bytes):
            messages.append(reply[2])
    return messages, pos


def _reply(buffer: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2/RESP3 reply at ``pos``: (value, the position after it); ``_More`` if incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _More
    kind = buffer[pos]
    if kind in _BLOBS:
        length = int(buffer[pos + 1 : end])
        if length < 0:
            return None, end + 2
        start = end + 2
        stop = start + length
        if len(buffer) < stop + 2:
            raise _More
        return buffer[start:stop], stop + 2
    if kind in _AGGREGATES:
        count = int(buffer[pos + 1 : end])
        if count < 0:
            return None, end + 2
        if kind in _PAIRED:
            count *= 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = _reply(buffer, at)
            items.append(item)
        if kind == _ATTRIBUTE:  # metadata about the reply that follows it
            return _reply(buffer, at)
        return items, at
    if kind in _LINES:
        return buffer[pos + 1 : end], end + 2
    raise ConnectionError(f"unexpected reply type {chr(kind)!r} on the gateway subscription")


_BLOBS = frozenset(b"$=!")
"""Length-prefixed: bulk string, verbatim string, blob error."""
_AGGREGATES = frozenset(b"*>~%|")
"""Counted: array, push, set, map and attribute (these two count pairs)."""
_PAIRED = frozenset(b"%|")
_ATTRIBUTE = ord("|")
_LINES = frozenset(b"+-:_,#(")
"""One line: simple string, error, integer, null, double, boolean, big number."""


_FRAME_AT = ',"frame":'
"""Between the user and the frame in a message (``streams.websocket_dispatch.render_message``)."""


def frame_text(data: str | bytes) -> str | None:
    """The frame of a pub/sub message as the worker rendered it, to be sent without rendering it again.

    A message is ``{"user_id":<string>,"frame":<frame>}``; a JSON string holds no unescaped
    quote, so the first ``,"frame":`` is the one after the user. ``None`` for another layout.
    """
    text = data.decode() if isinstance(data, bytes) else data
    at = text.find(_FRAME_AT)
    if at < 0 or not text.startswith('{"user_id":') or not text.endswith("}"):
        return None
    return text[at + len(_FRAME_AT) : -1]


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:  # noqa: BLE001 - closing an already broken connection; say so and move on
        log.info("closing a pub/sub connection failed", extra={"error": repr(exc)})
