"""What a re-drive sends back: a dead letter's own headers, without what dead-lettering added.

``streams.dead_letters.dead_letter`` appends its headers after the record's own, so the last
``herald-error`` marks where they start; a header the record itself carried (a retry's
``herald-target``) must survive, or a re-driven retry would go to every target again.
"""

from __future__ import annotations

from api.rest.admin.deadletters import REDRIVEN_FROM, Letter


def _letter(*headers: tuple[str, bytes]) -> Letter:
    return Letter(0, 5, 1_000, b"alice", b"{}", headers)


DEAD_LETTERING = (
    ("herald-error", b"delivery abandoned: 550 mailbox unavailable"),
    ("herald-source-topic", b"herald.deliveries.email"),
    ("herald-source-partition", b"2"),
    ("herald-source-offset", b"41"),
    ("herald-channel", b"email"),
    ("herald-attempts", b"5"),
)


def test_the_records_own_headers_are_kept_and_dead_lettering_ones_dropped() -> None:
    letter = _letter(("herald-target", b"a@example.com"), ("x-trace", b"\xff"), *DEAD_LETTERING)
    assert letter.original_headers() == [("herald-target", b"a@example.com"), ("x-trace", b"\xff")]
    assert letter.reason == "delivery abandoned: 550 mailbox unavailable"
    assert (letter.source_topic, letter.int_header("herald-source-partition")) == ("herald.deliveries.email", 2)


def test_a_copy_that_failed_again_loses_its_old_mark_and_the_latest_reason_wins() -> None:
    letter = _letter(
        ("x-trace", b"1"),
        (REDRIVEN_FROM, b"herald.deadletter/0/3"),
        ("herald-error", b"a producer's own header"),  # not Herald's: dead-lettering comes last
        *DEAD_LETTERING,
    )
    assert letter.original_headers() == [("x-trace", b"1"), ("herald-error", b"a producer's own header")]
    assert letter.reason.startswith("delivery abandoned")
    assert letter.header(REDRIVEN_FROM) == "herald.deadletter/0/3"


def test_offsets_that_are_not_plain_digits_are_unknown() -> None:
    letter = _letter(("herald-source-offset", "\u00b2".encode()), ("herald-source-partition", b"-1"))
    assert letter.int_header("herald-source-offset") is None
    assert letter.int_header("herald-source-partition") is None
    assert _letter().reason == "" and _letter().original_headers() == []
