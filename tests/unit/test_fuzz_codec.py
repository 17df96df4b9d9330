"""The codec and the bounded JSON parser against hostile input, without a broker.

Every input either decodes to an envelope that encodes again, or is refused with
``InvalidMessage`` and a reason: never ``RecursionError``, ``ValueError``,
``UnicodeEncodeError`` or anything else that would stop an agent or answer 500.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import decode, encode
from schemas.errors import InvalidMessage, MalformedJSON
from schemas.limits import MAX_ID_LENGTH, MAX_JSON_DEPTH, parse_json
from tests.support.hostile_json import base_request, hostile_document

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _envelope(data_json: str, **attrs: str) -> bytes:
    head = {"specversion": "1.0", "type": "notification.requested", "id": "n-1", "source": "t", **attrs}
    return (json.dumps(head)[:-1] + ',"data":' + data_json + "}").encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_record_nested_5000_deep_is_refused_with_a_reason() -> None:
    with pytest.raises(InvalidMessage, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        decode(_nested(5000).encode())
    with pytest.raises(InvalidMessage, match="nested deeper"):
        decode(_envelope('{"user_id":"u","title":"t","data":{"x":' + _nested(5000) + "}}"))


def test_depth_limit_is_exact() -> None:
    # The envelope is level 1, its data 2, the app payload 3: MAX_JSON_DEPTH - 3 more fit.
    fits = _envelope('{"user_id":"u","title":"t","data":{"x":' + _nested(MAX_JSON_DEPTH - 3) + "}}")
    assert decode(fits).id == "n-1"
    with pytest.raises(InvalidMessage, match="nested deeper"):
        decode(_envelope('{"user_id":"u","title":"t","data":{"x":' + _nested(MAX_JSON_DEPTH - 2) + "}}"))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"user_id":"u","title":"t","badge":NaN}', "NaN"),
        ('{"user_id":"u","title":"t","data":{"x":Infinity}}', "Infinity"),
        ('{"user_id":"u","title":"t","data":{"x":1e999}}', "out of range"),
        ('{"user_id":"u","title":"t","data":{"x":' + "9" * 5000 + "}}", "out of range"),
        ('{"user_id":"u","title":"t","data":{"x":18446744073709551616}}', "out of range"),
        ('{"user_id":"u","title":"t","title":"other"}', "duplicate key 'title'"),
        ('{"user_id":"ab\\ud800","title":"t"}', "lone surrogate"),
        ('{"user_id":"u","title":"t","data":{"\\udfff":1}}', "lone surrogate"),
    ],
)
def test_json_herald_cannot_store_or_re_encode_is_refused(payload: str, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason) as caught:
        decode(_envelope(payload))
    assert not isinstance(caught.value, MalformedJSON)  # HTTP: 422, not 400


def test_a_surrogate_pair_is_ordinary_text() -> None:
    env = decode(_envelope('{"user_id":"u","title":"smile \\ud83d\\ude00"}'))
    assert env.data.title == "smile \U0001f600"  # type: ignore[attr-defined]


def test_utf8_encoded_surrogates_are_invalid_utf8() -> None:
    with pytest.raises(MalformedJSON, match="invalid UTF-8"):
        decode(b'{"id":"\xed\xa0\x80"}')


@pytest.mark.parametrize("attr", ["id", "source", "subject", "userid", "correlationid"])
def test_identifier_attributes_longer_than_the_storage_column_are_refused(attr: str) -> None:
    fits = "i" * MAX_ID_LENGTH
    user = fits if attr == "userid" else "u"
    payload = '{"user_id":"' + user + '","title":"t"}'
    assert decode(_envelope(payload, **{attr: fits}))
    too_long = "i" * (MAX_ID_LENGTH + 1)
    with pytest.raises(InvalidMessage, match=f"attribute {attr} of 201 characters exceeds the 200-character limit"):
        decode(_envelope(payload, **{attr: too_long}))


def test_a_rejection_never_names_an_over_long_id() -> None:
    # The rejection event would be stored in VARCHAR(200) columns: no hint beyond the limit.
    with pytest.raises(InvalidMessage) as caught:
        decode(_envelope('{"user_id":"' + "u" * 201 + '","title":"t"}', id="x" * 201))
    assert caught.value.event_id is None and caught.value.user_id is None


@pytest.mark.parametrize(
    "field", ["user_id", "idempotency_key", "notification_id", "original_id", "device_token", "collapse_key"]
)
def test_every_identifier_field_in_every_schema_has_a_length_limit(field: str) -> None:
    from pathlib import Path

    for path in Path("schemas").glob("*/v1.json"):
        prop = json.loads(path.read_text())["properties"].get(field)
        if prop is not None:
            assert "maxLength" in prop or "pattern" in prop, f"{path}: {field} is unbounded"
            assert prop.get("maxLength", 0) <= MAX_ID_LENGTH


@FUZZ
@given(doc=hostile_document(base_request("fuzz-user")))
def test_any_hostile_request_is_decoded_or_refused_with_a_reason(doc: bytes) -> None:
    try:
        env = decode(doc, max_bytes=16 * 1024)
    except InvalidMessage as exc:
        reason = exc.reason
        assert reason
        return
    again = decode(encode(env))  # what Herald accepted, it can write and read back
    assert again.id == env.id and again.data == env.data


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_parse_json_on_arbitrary_bytes_returns_or_refuses(raw: bytes) -> None:
    reason = "parsed"
    try:
        parse_json(raw)
    except InvalidMessage as exc:
        reason = exc.reason
    assert reason
