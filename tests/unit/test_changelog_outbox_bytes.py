"""The changelog outbox writes a record's key and value with orjson itself when the table's
serialisers are Faust's ``json`` codec: the bytes must be those the table's own write produces."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import faust
import pytest

from streams.changelog_outbox import ChangelogOutbox

KEYS = ["alice\x1fn-1", "ünï\u2028cödé\x1f😀", 'q"uo\\te\x00\x1f\x7f', "", "x" * 300]
VALUES: list[Any] = [
    ["0192f0c2-7a1b-7c3d-8e4f-123456789abc", 1733355525.123456, "herald.requests.high/3/12345", "high"],
    ["n", 1733355525.0, "t/0/1", None],
    {"at": 1733355525.5, "p": 3, "id": None},
    {"at": 1e16, "p": 2**63 - 1, "id": "é😀\u2028", "nested": [True, False, None, -0.0, 5e-324]},
    {1: "a non-string key"},
    [Decimal("1.5")],  # not a native type: Faust's codec (its default hook) writes it
    "a plain string",
    42,
]


@pytest.fixture
def table() -> Any:
    app = faust.App("outbox-bytes", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    return app.Table("herald-outbox-bytes", default=None, partitions=4)


def test_records_are_the_bytes_the_tables_own_codecs_write(table: Any) -> None:
    outbox = ChangelogOutbox(table)
    assert outbox._orjson  # the path under test is taken for such a table
    topic = table.changelog_topic
    for key in KEYS:
        for value in [*VALUES, None]:
            record = outbox.write(key, value, 1)
            assert record.key == topic.prepare_key(key, table.key_serializer)[0]
            if value is None:
                assert record.value is None and key not in table.data
            else:
                assert record.value == topic.prepare_value(value, table.value_serializer)[0]
                assert table.data[key] == value


def test_a_table_with_other_serialisers_keeps_fausts_codecs() -> None:
    app = faust.App("outbox-raw", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald-outbox-raw", default=None, partitions=4)
    table.key_serializer = table.value_serializer = "raw"
    outbox = ChangelogOutbox(table)
    assert not outbox._orjson
    record = outbox.write("k", b"v", 0)
    assert (record.key, record.value) == (b"k", b"v")


def test_a_table_with_a_key_type_keeps_fausts_codecs() -> None:
    app = faust.App("outbox-str", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    table: Any = app.Table("herald-outbox-str", default=None, partitions=4, key_type=str)
    outbox = ChangelogOutbox(table)
    assert not outbox._orjson
    record = outbox.write("n-1\x1fu@example.test", {"at": 1.5, "p": 0, "id": None}, 0)
    assert record.key == table.changelog_topic.prepare_key("n-1\x1fu@example.test", table.key_serializer)[0]
