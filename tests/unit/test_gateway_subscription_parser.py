"""The gateway reads its pub/sub messages off the socket itself: RESP2 and RESP3 replies, in any chunks."""

from __future__ import annotations

import pytest

from api.ws.presence import parse_replies


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _message(kind: bytes, channel: bytes, data: bytes) -> bytes:
    return kind + b"3\r\n" + _bulk(b"message") + _bulk(channel) + _bulk(data)


PAYLOADS = [b'{"user_id":"ana","frame":{"type":"notification"}}', b"", b"with\r\ncrlf inside", "ünï".encode() * 50]


@pytest.mark.parametrize("kind", [b"*", b">"], ids=["resp2", "resp3"])
def test_messages_between_other_replies_are_found_whatever_the_chunks(kind: bytes) -> None:
    stream = (
        kind + b"3\r\n" + _bulk(b"subscribe") + _bulk(b"gw:n1") + b":1\r\n"
        + b"".join(_message(kind, b"gw:n1", p) for p in PAYLOADS[:2])
        + b"|1\r\n+key\r\n+value\r\n" + _message(kind, b"gw:n1", PAYLOADS[2])  # RESP3 attribute before a reply
        + b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"  # another push: skipped
        + b"%1\r\n+a\r\n_\r\n~1\r\n#t\r\n,1.5\r\n(12\r\n=7\r\ntxt:abc\r\n$-1\r\n*-1\r\n"
        + _message(kind, b"gw:n1", PAYLOADS[3])
    )  # fmt: skip
    for cut in range(1, len(stream) + 1):
        # Everything up to ``cut`` arrives first, the rest later: the first parse takes what is complete.
        first, used = parse_replies(stream[:cut])
        rest, used_rest = parse_replies(stream[used:])
        assert first + rest == PAYLOADS, cut
        assert used + used_rest == len(stream)


def test_an_unknown_reply_type_breaks_the_subscription() -> None:
    with pytest.raises(ConnectionError):
        parse_replies(b"?what\r\n")
