"""One email address, strictly: what a contact's ``email`` may be.

The address ends up in a ``To`` header and an SMTP ``RCPT TO``. Header syntax allows a
list (``a@x.com, evil@y.com``), display names, comments and quoted parts, and a mail
library that parses the header sends to every address in it. So a contact takes one
bare ``local@domain`` in the common dot-atom form, ASCII only (internationalised
domains in their ``xn--`` form), and anything else is refused with a reason.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

MAX_LENGTH = 254
"""Longest address that fits SMTP's path limit (RFC 5321, 256 octets with the brackets)."""
MAX_LOCAL = 64
"""Longest local part (RFC 5321)."""

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class InvalidAddress(ValueError):
    """Not exactly one plain email address; the message says why."""


def single_address(raw: str) -> str:
    """``raw`` if it is exactly one plain address (surrounding blanks removed); else ``InvalidAddress``."""
    value = raw.strip()
    if not value:
        raise InvalidAddress("email must not be empty (use null to remove it)")
    if len(value) > MAX_LENGTH:
        raise InvalidAddress(f"email must be at most {MAX_LENGTH} characters")
    # What a mail library would make of it as a header: more than one address is the attack.
    parsed = getaddresses([value])
    if len(parsed) != 1 or value.count("@") != 1:
        raise InvalidAddress("email must be exactly one address (no lists, names or groups)")
    if not value.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidAddress("email must be ASCII without spaces or control characters")
    name, address = parsed[0]
    if name or address != value:
        raise InvalidAddress("email must be a plain address like user@example.com (no display name or <...>)")
    local, _, domain = value.partition("@")
    if not local or len(local) > MAX_LOCAL or not _LOCAL.match(local):
        raise InvalidAddress(f"email: the part before '@' must be 1 to {MAX_LOCAL} characters of a plain address")
    labels = domain.split(".")
    if not domain or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress("email: the domain must be host names separated by dots (e.g. example.com)")
    return value
