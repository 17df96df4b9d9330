"""The audit export format: any modified, deleted, inserted or reordered line is found and named."""

from __future__ import annotations

import json

import pytest

from engine.audit_chain import AuditFileError, Verdict, Writer, header_line, verify
from engine.audit_range import BadRange, parse_range

KEY = b"k" * 32


def _export(records: int = 6, partitions: int = 2, key: bytes | None = None) -> list[bytes]:
    header = header_line("herald.events", "2026-01-01T00:00:00Z", {"user": None})
    writer = Writer(header)
    lines = [header]
    for i in range(records):
        value = json.dumps({"id": f"e{i}", "type": "notification.read", "data": {"n": i}}).encode()
        lines.append(
            writer.record(
                topic="herald.events",
                partition=i % partitions,
                offset=i // partitions,
                timestamp_ms=1_700_000_000_000 + i,
                timestamp="2023-11-14T22:13:20.000Z",
                key=f"user{i % partitions}".encode(),
                value=value,
            )
        )
    lines.append(writer.manifest(key))
    return [line + b"\n" for line in lines]


def _bad_line(lines: list[bytes], key: bytes | None = None) -> int:
    with pytest.raises(AuditFileError) as caught:
        verify(lines, key)
    return caught.value.line


def test_an_untouched_export_verifies() -> None:
    verdict = verify(_export())
    assert isinstance(verdict, Verdict)
    assert verdict.count == 6
    assert {p: (s.count, s.first_offset, s.last_offset) for p, s in verdict.partitions.items()} == {
        0: (3, 0, 2),
        1: (3, 0, 2),
    }
    assert not verdict.signed


def test_a_modified_line_is_named() -> None:
    lines = _export()
    lines[3] = lines[3].replace(b'"n":2}', b'"n":9}')
    assert _bad_line(lines) == 4


def test_a_deleted_line_is_named_at_the_gap() -> None:
    lines = _export()
    del lines[2]
    assert _bad_line(lines) == 3


def test_deleting_the_last_record_is_caught_by_the_manifest() -> None:
    lines = _export()
    del lines[-2]
    assert _bad_line(lines) == len(lines)


def test_an_inserted_copy_is_named() -> None:
    lines = _export()
    lines.insert(4, lines[2])
    assert _bad_line(lines) == 5


def test_reordered_lines_are_named_even_across_partitions() -> None:
    lines = _export()
    lines[2], lines[3] = lines[3], lines[2]  # partitions 1 and 0: each chain alone is intact
    assert _bad_line(lines) == 3
    lines = _export()
    lines[2], lines[4] = lines[4], lines[2]  # same partition
    assert _bad_line(lines) == 3


def test_a_truncated_file_is_refused() -> None:
    lines = _export()
    assert _bad_line(lines[:-1]) == len(lines) - 1  # the manifest is gone
    cut = [*lines[:-2], lines[-2][:40]]  # cut mid-line
    assert _bad_line(cut) == len(cut)


def test_foreign_and_empty_files_are_refused() -> None:
    assert _bad_line([b'{"some":"json"}\n', b"{}\n"]) == 1
    assert _bad_line([b"not json at all\n"]) == 1
    assert _bad_line([]) == 1
    lines = _export()
    lines.insert(3, b'{"n":4,"value":"forged"}\n')
    assert _bad_line(lines) == 4


def test_appended_data_and_a_changed_header_are_refused() -> None:
    lines = _export()
    assert _bad_line([*lines, b"{}\n"]) == len(lines) + 1
    lines[0] = lines[0].replace(b'"user":null', b'"user":"mallory"')
    assert _bad_line(lines) == len(lines)


def test_a_signed_manifest_needs_the_right_key() -> None:
    lines = _export(key=KEY)
    assert verify(lines, KEY).signed
    assert _bad_line(lines, b"other" * 8) == len(lines)
    assert _bad_line(lines) == len(lines)  # signed, no key to check it
    assert _bad_line(_export(), KEY) == len(lines)  # unsigned where a key is configured
    forged = lines[-1].replace(b'"count":6', b'"count":5')
    assert _bad_line([*lines[:-2], forged], KEY) == len(lines) - 1


def test_values_that_are_not_json_survive_the_round_trip() -> None:
    header = header_line("t", "2026-01-01T00:00:00Z", {})
    writer = Writer(header)
    lines = [header]
    for i, value in enumerate([b"\xff\xfe binary", b"plain text", None, b'{"big":123456789012345678901234567890}']):
        lines.append(
            writer.record(topic="t", partition=0, offset=i, timestamp_ms=0, timestamp="", key=b"\xff", value=value)
        )
    lines.append(writer.manifest())
    assert verify(line + b"\n" for line in lines).count == 4
    assert b'"value_b64"' in lines[1] and b'"value_text":"plain text"' in lines[2] and b'"key_b64"' in lines[1]


def test_ranges_parse_times_and_positions() -> None:
    r = parse_range("2026-01-01T00:00:00Z", "0:10,2:5")
    assert r.start.time_ms == 1_767_225_600_000
    assert r.includes(0, 10, 1_767_225_600_000) and not r.includes(0, 11, 1_767_225_600_000)
    assert r.includes(1, 999, 1_767_225_600_000) and not r.includes(1, 0, 1_767_225_599_999)
    for bad in ("yesterday", "0:x", "2026-01-01T00:00:00", "0:1,0:2", ""):
        with pytest.raises(BadRange):
            parse_range(bad, None)
    with pytest.raises(BadRange):
        parse_range("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z")
