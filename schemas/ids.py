"""Event ids: UUIDv7 (time-ordered), and deterministic ids derived from another id."""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def uuid7() -> str:
    """A new RFC 9562 UUIDv7 string: 48-bit Unix milliseconds, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


_NAMESPACE = uuid.UUID("5f0d3c9e-6a8b-4c1e-9d2f-7b1a0e4c8d11")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def derived_id(*parts: str) -> str:
    """A stable id for the event caused by ``parts`` (e.g. request id + event type).

    Processing the same input twice yields the same id, so a redelivered Kafka record
    produces events the projector recognises as already applied. Equal to
    ``str(uuid.uuid5(_NAMESPACE, "\\x1f".join(parts)))``, computed from the SHA-1 digest
    directly: ``uuid.UUID``'s checks and formatting cost more than the hash, and the
    worker derives a few ids per notification. The version and variant bits are set on the
    hex digits (the 13th is the version, 5; the 17th keeps its two low bits under the
    variant's ``10``), without copying the digest into a bytearray and back.
    """
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A hex digit -> the digit after setting the RFC 4122 variant (``10``) in its two high bits."""
