"""``streams.websocket_dispatch.pack_command`` writes the bytes redis-py's own ``pack_command`` writes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from streams.websocket_dispatch import pack_command

_arg = st.one_of(
    st.binary(max_size=50),
    st.binary(min_size=5_000, max_size=9_000),  # past redis-py's 6 kB buffer cut-off
    st.text(max_size=40),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["EVALSHA", "EVAL", "PUBLISH", b"HGETALL"]), st.lists(_arg, max_size=120))
def test_a_command_is_packed_as_redis_py_packs_it(name: str | bytes, args: list[Any]) -> None:
    connection = Connection()
    command = (name, *args)
    assert pack_command(connection.encoder.encode, command) == b"".join(connection.pack_command(*command))


def test_a_dispatch_batch_is_packed_as_redis_py_packs_it() -> None:
    connection = Connection()
    frames = [(f"u{i % 7}", b'{"user_id":"u","frame":' + b"x" * 700 + b"}") for i in range(150)]
    command: list[Any] = ["EVALSHA", "f" * 40, 7, *(f"herald:presence:u{i}" for i in range(7)), 1733.25, "gw:"]
    for user, message in frames:
        command += [int(user[1:]) + 1, message]
    assert pack_command(connection.encoder.encode, command) == b"".join(connection.pack_command(*command))


@pytest.mark.parametrize("bad", [True, None, object(), [b"x"]])
def test_what_redis_py_refuses_is_refused(bad: Any) -> None:
    connection = Connection()
    with pytest.raises(DataError):
        connection.pack_command("PUBLISH", "c", bad)
    with pytest.raises(DataError):
        pack_command(connection.encoder.encode, ("PUBLISH", "c", bad))
