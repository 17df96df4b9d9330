"""Derived event ids (``schemas.ids.derived_id``) are the UUIDv5 of their parts, as they always were.

The id is computed from the SHA-1 digest directly; an id that changed would make the
projector see a reprocessed request's events as new ones, so it is compared with
``uuid.uuid5`` over arbitrary parts.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from schemas.ids import _NAMESPACE, derived_id

# Text a request id, type or channel can hold (valid UTF-8: no lone surrogates).
_PART = st.text(st.characters(codec="utf-8"), max_size=250)


@given(st.lists(_PART, min_size=1, max_size=5))
def test_a_derived_id_is_the_uuid5_of_its_parts(parts: list[str]) -> None:
    assert derived_id(*parts) == str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def test_a_known_id_is_unchanged() -> None:
    expected = str(uuid.uuid5(uuid.UUID("5f0d3c9e-6a8b-4c1e-9d2f-7b1a0e4c8d11"), "n-1\x1fnotification.accepted"))
    assert derived_id("n-1", "notification.accepted") == expected
    assert uuid.UUID(expected).version == 5
