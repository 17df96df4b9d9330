"""``herald inbox --as-of``: the projector's fold over the records up to an instant."""

from __future__ import annotations

from herald.inbox_history import LoggedRecord, inbox_at, lines, view
from schemas.codec import encode
from tests.support.event_log import Log


def _records(log: Log) -> list[LoggedRecord]:
    out = []
    for offset, env in enumerate(log.envelopes):
        key = (env.userid or "").encode()
        out.append(LoggedRecord(offset, int(env.time.timestamp() * 1000), key, encode(env)))
    return out


def test_the_inbox_at_each_instant_follows_the_log() -> None:
    log = Log()
    first = log.accepted("ann")
    log.deferred("ann", first)
    after_deferral = int(log.now.timestamp() * 1000)
    log.succeeded("ann", first)
    log.read("ann", first)
    second = log.accepted("ann")
    log.accepted("bob")
    log.deleted("ann", second)
    records = _records(log)

    early = inbox_at(records, "ann", after_deferral, None).states
    assert list(early) == [first]
    assert early[first].channel_states["websocket"].state == "deferred" and early[first].read_at is None

    late = inbox_at(records, "ann", None, None).states
    assert set(late) == {first, second}
    assert view(late[first])["channels"]["websocket"]["state"] == "delivered"
    assert late[first].read_at is not None and late[second].deleted_at is not None
    text = lines("ann", "now", late, show_deleted=False)
    assert text[0] == "inbox of ann as of now: 1 notification(s), 0 unread"
    assert "1 deleted notification(s) not shown" in text[-1]


def test_an_event_twice_counts_once_and_unreadable_records_are_skipped() -> None:
    log = Log()
    nid = log.accepted("ann")
    log.failed("ann", nid, "websocket", attempt=1, retriable=True)
    records = _records(log)
    garbage = LoggedRecord(99, records[-1].timestamp_ms, b"ann", b"{not json")
    history = inbox_at([*records, records[-1], garbage], "ann", None, None)
    assert history.applied == 2 and history.unreadable == 1
    assert history.states[nid].channel_states["websocket"].attempts == 1
