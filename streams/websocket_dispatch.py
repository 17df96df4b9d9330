"""How the WebSocket sink reaches the gateway nodes holding a user."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from engine.presence import gateway_channel, live_nodes, presence_key


class Dispatcher(Protocol):
    """Port: hand a frame to every gateway connection of a user."""

    async def dispatch(self, user_id: str, frame: Mapping[str, Any]) -> list[str]:
        """Hand ``frame`` to the gateways holding ``user_id``; return the nodes that took it.

        Taking it is not delivering it: a gateway records ``delivery.succeeded`` once the
        frame is on a socket, so a user who left in between is replayed it on reconnect.
        """
        ...

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:
        """Publish pre-rendered pub/sub messages (``render_message``) for many users at once;
        per item, the nodes that took it."""
        ...


def render_message(user_id: str, frame_json: bytes) -> bytes:
    """The pub/sub message a gateway receives: the user and the frame, rendered once."""
    return b'{"user_id":' + json.dumps(user_id).encode() + b',"frame":' + frame_json + b"}"


# Presence and publish of a whole batch in one round trip, atomically. KEYS: the presence
# hash of each distinct user of the batch; ARGV: now (unix seconds), the gateway channel
# prefix, then per frame its user's index in KEYS and the message. Per frame, the nodes
# whose subscriber took it: nodes are those whose entry has not expired, in order, as
# ``engine.presence.live_nodes`` picks them (an unreadable expiry: absent). The reply is
# flat, so the client parses a few elements per batch rather than an array per frame
# (redis-py's parser is pure Python here): first one string, each frame's nodes as
# 1-based indexes into the rest of the reply, joined by "," and the frames by ";"; then
# the names of the nodes reached, each once.
_DISPATCH = """
local now = tonumber(ARGV[1])
local nodes = {}
for i, key in ipairs(KEYS) do
  local entries = redis.call('HGETALL', key)
  local live = {}
  for j = 1, #entries, 2 do
    local expiry = tonumber(entries[j + 1])
    if expiry and expiry > now then live[#live + 1] = entries[j] end
  end
  table.sort(live)
  nodes[i] = live
end
local names = {''}
local numbers = {}
local frames = {}
for k = 3, #ARGV, 2 do
  local reached = {}
  for _, node in ipairs(nodes[tonumber(ARGV[k])]) do
    if redis.call('PUBLISH', ARGV[2] .. node, ARGV[k + 1]) > 0 then
      local number = numbers[node]
      if not number then
        names[#names + 1] = node
        number = #names - 1
        numbers[node] = number
      end
      reached[#reached + 1] = number
    end
  end
  frames[#frames + 1] = table.concat(reached, ',')
end
names[1] = table.concat(frames, ';')
return names
"""


class RedisDispatcher:
    """Production adapter: presence hash in Redis, then PUBLISH to each live gateway's channel."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._dispatch = redis.register_script(_DISPATCH)
        self._connection: Any = None
        self._lock = asyncio.Lock()

    async def dispatch(self, user_id: str, frame: Mapping[str, Any]) -> list[str]:
        """Publish to the live gateways present for ``user_id``; a node counts if its subscriber got it
        (a crashed node whose entry has not expired yet has no subscriber: not counted)."""
        raw = await self._redis.hgetall(presence_key(self._prefix, user_id))
        entries = {_text(node): _text(expiry) for node, expiry in raw.items()}
        message = json.dumps({"user_id": user_id, "frame": frame}, separators=(",", ":"))
        reached = []
        for node in live_nodes(entries, now=time.time()):
            receivers = await self._redis.publish(gateway_channel(self._prefix, node), message)
            if receivers:
                reached.append(node)
        return reached

    async def dispatch_many(self, items: Sequence[tuple[str, bytes]]) -> list[list[str]]:
        """One round trip for the whole batch: every user's presence and every publish, in one script."""
        if not items:
            return []
        index: dict[str, int] = {}
        args: list[str | bytes | float | int] = [time.time(), gateway_channel(self._prefix, "")]
        for user, message in items:
            args.append(index.setdefault(user, len(index) + 1))
            args.append(message)
        keys = [presence_key(self._prefix, user) for user in index]
        async with self._lock:
            reply = await self._run_script(keys, args)
        return _reached(reply, len(items))

    async def _run_script(self, keys: list[str], args: list[str | bytes | float | int]) -> Any:
        """The dispatch script on a connection this dispatcher keeps from the client's pool.

        The batches go one at a time (the live dispatch's task), so one connection serves them,
        without the client's per-command path (a pool checkout and release, the retry wrapper,
        the observability hooks): about a third of a small batch's CPU. A failure (Redis gone,
        a cancel mid-reply) closes the connection and hands it back to the pool, then raises:
        the live dispatch retries the batch, on a new connection. The pool closes a kept one
        when the client closes. A server that lost the script (restarted) gets it with ``EVAL``.
        The command is packed here (``pack_command``), the bytes redis-py would write.
        """
        connection = self._connection
        pool = self._redis.connection_pool
        if connection is None:
            connection = self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                packed = pack_command(
                    connection.encoder.encode, ("EVALSHA", self._dispatch.sha, len(keys), *keys, *args)
                )
                await connection.send_packed_command(packed)
                return await connection.read_response()
            except NoScriptError:
                packed = pack_command(connection.encoder.encode, ("EVAL", _DISPATCH, len(keys), *keys, *args))
                await connection.send_packed_command(packed)
                return await connection.read_response()
        except BaseException:
            self._connection = None
            try:
                await connection.disconnect()
            finally:
                await pool.release(connection)
            raise

    async def close(self) -> None:
        """Hand the kept connection back to the client's pool (at shutdown, once the live dispatch has
        stopped; not behind a batch in flight, which may wait on a Redis that is gone)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._redis.connection_pool.release(connection)


def pack_command(encode: Callable[[Any], Any], args: Sequence[Any]) -> bytes:
    """``args`` as one Redis protocol (RESP) command: the bytes redis-py's ``Connection.pack_command``
    writes for them, in one piece.

    redis-py builds a command by joining its buffer again for every argument (up to 6 kB at a
    time): 3-5 us per frame of a dispatch batch, about half that here. ``encode`` is the
    connection's encoder's (bytes as they are, ``str``, ``int`` and ``float`` as it writes them,
    anything else refused as it refuses it). The command name must be one word (redis-py
    would split ``"CONFIG GET"``).
    """
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is int:  # not a bool (refused by ``encode``): its repr, as the encoder writes it
            data = b"%d" % arg
        else:
            data = encode(arg)
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _reached(reply: Sequence[bytes | str], frames: int) -> list[list[str]]:
    """Per frame, the nodes that took it, from the script's flat reply (see ``_DISPATCH``)."""
    names = [_text(name) for name in reply[1:]]
    if not names:  # no frame reached a gateway: nothing to look up
        return [[] for _ in range(frames)]
    return [[names[int(i) - 1] for i in part.split(",")] if part else [] for part in _text(reply[0]).split(";")]


def _text(value: bytes | str) -> str:
    # The client may or may not decode responses; presence entries are ASCII either way.
    return value.decode() if isinstance(value, bytes) else value
