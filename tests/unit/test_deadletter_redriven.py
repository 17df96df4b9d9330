"""``deadletter.redriven``: the console's re-drive fact is read by the projector and explained.

Without it in ``EVENT_TYPES`` the projector's reader refuses the event as an unknown type
(a poison event, skipped and counted) and ``herald why`` prints only its type.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.explain import Fact, explain
from projections.batch import prepare
from projections.reader import read
from schemas.codec import decode, encode, event_to_data
from schemas.envelope import Envelope
from schemas.events import DeadletterRedriven


def _fact(**overrides: object) -> DeadletterRedriven:
    values: dict[str, object] = {
        "operator": "ops-ana",
        "deadletter_topic": "herald.deadletter",
        "deadletter_partition": 1,
        "deadletter_offset": 42,
        "source_topic": "herald.requests.high",
        "reason": "request is 20000 bytes; the limit is 16384",
        "redriven_partition": 3,
        "redriven_offset": 77,
        "source_partition": 3,
        "source_offset": 12,
        "request_id": "n-1",
    }
    values.update(overrides)
    return DeadletterRedriven(**values)  # type: ignore[arg-type]


def _envelope(data: DeadletterRedriven) -> Envelope:
    return Envelope(
        id="e-redrive",
        source="herald/console",
        time=datetime(2026, 12, 2, 11, 0, tzinfo=UTC),
        data=data,
        subject="n-1",
        userid="alice",
    )


def test_the_event_round_trips_through_the_codec_and_the_projectors_reader() -> None:
    env = _envelope(_fact(forced=True))
    raw = encode(env)
    assert decode(raw).data == env.data
    read_back = read(raw)
    assert read_back.data == env.data
    prepared = prepare(0, 5, read_back)  # the ledger keeps it; no notification row is touched
    assert prepared.ledger["type"] == "deadletter.redriven"
    assert prepared.ledger["subject"] == "n-1"
    assert prepared.delivery is None


def test_herald_why_says_who_re_drove_what_and_where_it_went() -> None:
    data = event_to_data(_fact())
    facts = [
        Fact("herald.events", 3, 9, 1_000, "deadletter.redriven", {"type": "deadletter.redriven", "data": data}),
    ]
    steps = explain("n-1", facts).steps
    assert [s.text for s in steps] == [
        "dead letter herald.deadletter/1/42 re-driven by ops-ana to herald.requests.high/3/77"
    ]
    forced = event_to_data(_fact(forced=True))
    facts = [Fact("herald.events", 3, 9, 1_000, "deadletter.redriven", {"type": "deadletter.redriven", "data": forced})]
    assert "by ops-ana, forced" in explain("n-1", facts).steps[0].text
