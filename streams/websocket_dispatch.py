"""How the WebSocket sink reaches the gateway nodes holding a user."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

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
# prefix, then per frame its user's index in KEYS and the message. Returns, per frame,
# the nodes whose subscriber took it. Nodes are those whose entry has not expired, in
# order, as ``engine.presence.live_nodes`` picks them (an unreadable expiry: absent).
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
local out = {}
for k = 3, #ARGV, 2 do
  local reached = {}
  for _, node in ipairs(nodes[tonumber(ARGV[k])]) do
    if redis.call('PUBLISH', ARGV[2] .. node, ARGV[k + 1]) > 0 then reached[#reached + 1] = node end
  end
  out[#out + 1] = reached
end
return out
"""


class RedisDispatcher:
    """Production adapter: presence hash in Redis, then PUBLISH to each live gateway's channel."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._dispatch = redis.register_script(_DISPATCH)

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
        reached = await self._dispatch(keys=keys, args=args)
        return [[_text(node) for node in nodes] for nodes in reached]


def _text(value: bytes | str) -> str:
    # The client may or may not decode responses; presence entries are ASCII either way.
    return value.decode() if isinstance(value, bytes) else value
