"""APNs emulator: a real HTTP/2-over-TLS stand-in for Apple's push service.

For local development (``herald apns-emulator``) and integration tests.  See
``docs/apns-emulator.md``.
"""

from herald.apns_emulator._auth import PublicKeyLike, generate_signing_key
from herald.apns_emulator._emulator import ApnsEmulator, serve
from herald.apns_emulator._state import ReceivedNotification
from herald.apns_emulator._validation import PUSH_TYPES

__all__ = [
    "PUSH_TYPES",
    "ApnsEmulator",
    "PublicKeyLike",
    "ReceivedNotification",
    "generate_signing_key",
    "serve",
]
