"""The webhook channel's rules, pure: which URLs may be called, and how a POST is signed.

A receiver must be able to tell Herald's POSTs from anyone else's and refuse a replayed
one, so every POST is signed the Standard Webhooks way: headers ``webhook-id`` (stable
per notification and URL, so a retry is recognisably the same message),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>``
over ``id.timestamp.body``. The secret is ``whsec_`` + base64 (the format of the
Standard Webhooks libraries) or any other text of at least ``MIN_SECRET_BYTES``, used
as is. URLs are https only (a notification is personal data), ``http://`` only to a
loopback host where the deployment allows it (``herald dev``, tests), bounded length, and
never an internal IP literal or ``localhost`` (loopback only where allowed). A host name
is checked where it resolves: ``reachable`` keeps only the resolved addresses Herald may
connect to, and the sink connects only to those (a name of an internal host, or one that
re-resolves to one, is never called).
The I/O is ``streams/webhook_sink.py``; ``verify`` is what a receiver (and the tests) do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from schemas.ids import derived_id

MAX_URL_LENGTH = 2048
"""Longest webhook URL accepted (as ``contact.updated`` allows)."""
MIN_SECRET_BYTES = 24
"""Shortest signing key accepted."""
TOLERANCE_SECONDS = 300
"""How far a receiver lets ``webhook-timestamp`` be from its clock (Standard Webhooks' 5 minutes)."""


class InvalidWebhook(ValueError):
    """A webhook URL or secret Herald will not use; the message says why."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (``whsec_`` + base64, or raw text); ``InvalidWebhook`` if unusable."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            raise InvalidWebhook("a whsec_ secret must be followed by base64") from None
    else:
        key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidWebhook(f"the webhook secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def check_url(url: str, *, allow_loopback_http: bool) -> str:
    """``url`` if Herald may POST to it, else ``InvalidWebhook`` saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidWebhook("a webhook URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # a malformed port raises here
    except ValueError as exc:
        raise InvalidWebhook(f"not a URL: {exc}") from None
    if not host:
        raise InvalidWebhook("a webhook URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("a webhook URL carries no credentials (the signature authenticates Herald)")
    if _internal(host) and not (allow_loopback_http and _loopback(host)):
        # Not a user's server: a URL must not turn Herald into a client of its own network.
        raise InvalidWebhook(f"a webhook URL may not name an internal address ({host})")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_loopback_http and _loopback(host):
        return url
    raise InvalidWebhook(
        "a webhook URL must be https://" + (" (http:// only to a loopback host)" if allow_loopback_http else "")
    )


def message_id(notification_id: str, url: str) -> str:
    """``webhook-id`` of one notification to one URL: the same on every retry."""
    return "msg_" + derived_id(notification_id, "webhook", url)


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signing headers of one POST."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def verify(key: bytes, received: dict[str, str], body: bytes, *, now: float) -> str | None:
    """What a receiver checks: ``None`` if ``received`` headers sign ``body`` freshly, else why not."""
    msg_id = received.get("webhook-id", "")
    stamp = received.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        return "missing webhook-id or webhook-timestamp"
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        return "stale or future webhook-timestamp"
    expected = signature(key, msg_id, int(stamp), body).encode()
    offered = received.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(expected, s.encode()) for s in offered):
        return "no matching v1 signature"
    return None


def address_allowed(address: str, *, allow_loopback: bool) -> bool:
    """Whether Herald may connect to the resolved IP ``address``: a public unicast address, or
    loopback where the deployment allows loopback webhooks (``herald dev``, tests)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


def reachable(host: str, addresses: list[str], *, allow_loopback: bool) -> list[str]:
    """Of the ``addresses`` ``host`` resolved to, those Herald may connect to; ``InvalidWebhook``
    when there are none (the name points inside the network)."""
    kept = [a for a in addresses if address_allowed(a, allow_loopback=allow_loopback)]
    if not kept and addresses:
        shown = ", ".join(sorted(set(addresses))[:4])
        raise InvalidWebhook(f"{host} resolves only to internal addresses ({shown})")
    return kept


def _internal(host: str) -> bool:
    """``localhost`` or an IP literal that is not a public unicast address (loopback, private,
    link-local such as cloud metadata at 169.254.169.254, unspecified, multicast, reserved)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: where it resolves is checked when connecting (``reachable``)
    return not address.is_global or address.is_multicast


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
