"""A contact's email is exactly one plain address (issue 10, item 12)."""

from __future__ import annotations

import pytest

from engine.email_address import InvalidAddress, single_address


@pytest.mark.parametrize("good", ["a@x.com", "first.last+tag@mail.example.co.uk", "ops@localhost", " a@x.com "])
def test_plain_addresses_are_accepted(good: str) -> None:
    assert single_address(good) == good.strip()


@pytest.mark.parametrize(
    "bad",
    [
        "a@x.com, evil@y.com",
        "a@x.com,evil@y.com",
        "a@x.com;evil@y.com",
        "Alice <a@x.com>",
        "<a@x.com>",
        "undisclosed:a@x.com,b@y.com;",
        "a@x.com (comment)",
        '"a b"@x.com',
        "a@x.com\r\nBcc: evil@y.com",
        "a@b@x.com",
        "a..b@x.com",
        "a@-x.com",
        "a@[127.0.0.1]",
        "ä@x.com",
        "no-at-sign",
        "",
        "a" * 65 + "@x.com",
        "a@" + "b" * 260 + ".com",
    ],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        single_address(bad)
