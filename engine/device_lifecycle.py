"""The device lifecycle as one pure fold, shared by the worker's registry and the read model.

The worker's registry (``streams.device_registry``, which the APNs sink reads) and the
``devices`` read model (``projections.devices``, which REST reads) both fold
``device.registered``, ``device.unregistered`` and ``device.invalidated``. They used to
fold them with rules of their own, so a push could go to a token that REST showed as
invalid, or the reverse. Both now call ``evolve`` here, each on what it stores: the
registry on the (user, device) entry of the event's user, the read model on the device's
row, whoever owns it. A device is its platform and its token (``device_key``): the same
token string on two platforms is two devices. The rules:

- A registration makes the token active for the registering user. A token has one
  owner: registered by another user, it is the new user's (takeover), unless the row
  already holds a change by another user that is later in time (events of two users are
  in two partitions, with no order between them but their time).
- An unregistration or invalidation by a user who is not the token's owner (any more)
  changes nothing: it is about a registration a takeover already ended. For the owner,
  the log order of their partition decides, not the event time.
- Invalidation (APNs 410 / BadDeviceToken) turns the token off only if it was registered
  before APNs saw it die (``invalid_since`` when given, else the event time): a
  re-registration after that is a live install again.
- The per-user cap (``admit``): a registration beyond it unregisters the user's oldest
  registrations; the registry appends a ``device.unregistered`` for each, which both
  sides then fold like any other.

Replaying the same events gives the same state, and folding an event twice is folding
it once (``evolve(evolve(d, e, t), e, t) == evolve(d, e, t)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from schemas.channels import DEFAULT_PLATFORM
from schemas.events import DeviceInvalidated, DeviceRegistered, DeviceUnregistered

ACTIVE, UNREGISTERED, INVALID = "active", "unregistered", "invalid"
"""A registration's statuses."""
STATUSES = (ACTIVE, UNREGISTERED, INVALID)
"""Every device status, as the API documents them."""
UNREGISTERED_REASON = "unregistered by the user"
"""Reason shown for an unregistered token (by the user, a new owner, or the per-user cap)."""

DeviceEvent = DeviceRegistered | DeviceUnregistered | DeviceInvalidated
"""The events ``evolve`` folds."""


_SEP = "\x1f"
"""Between platform and token in a device key (no platform's token has a control character)."""


def device_key(platform: str, token: str) -> str:
    """One string naming a device: its token for ``ios`` (as every key was before platforms
    were generic, so stored keys keep their meaning), ``<platform>\x1f<token>`` otherwise."""
    return token if platform == DEFAULT_PLATFORM else f"{platform}{_SEP}{token}"


def split_key(key: str) -> tuple[str, str]:
    """``(platform, token)`` of a ``device_key``."""
    platform, sep, token = key.partition(_SEP)
    return (platform, token) if sep else (DEFAULT_PLATFORM, key)


def key_of(event: DeviceEvent) -> str:
    """The device an event is about."""
    return device_key(event.platform, event.device_token)


@dataclass(frozen=True, slots=True)
class Device:
    """A token's registration: who it is for, and whether pushes go to it."""

    owner: str
    """The user the token was (last) registered by."""
    status: str
    """``active``, ``unregistered`` or ``invalid``."""
    registered_at: datetime
    """Time of the registration."""
    updated_at: datetime
    """Time of the event that last changed it."""
    reason: str | None = None
    """Why it is not active (``None`` while active)."""

    @property
    def active(self) -> bool:
        """Whether pushes for ``owner`` go to this token."""
        return self.status == ACTIVE


def evolve(device: Device | None, event: DeviceEvent, at: datetime) -> Device | None:
    """The token's registration after ``event`` (appended at ``at``); ``device`` itself when unchanged."""
    user = event.user_id
    if isinstance(event, DeviceRegistered):
        if device is not None and device.owner != user and device.updated_at > at:
            return device  # another user's later change is already here: this registration is older
        if device is not None and device.owner == user and device.active and device.registered_at == at:
            return device  # the same registration again
        return Device(user, ACTIVE, at, at)
    if device is None or device.owner != user:
        return device  # nothing registered, or the token changed hands since
    if isinstance(event, DeviceUnregistered):
        if device.status == UNREGISTERED:
            return device
        return replace(device, status=UNREGISTERED, updated_at=at, reason=UNREGISTERED_REASON)
    since = event.invalid_since or at
    if device.registered_at > since:
        return device  # re-registered after APNs saw the token die: the registration wins
    if device.status == INVALID and device.reason == event.reason:
        return device
    return replace(device, status=INVALID, updated_at=at, reason=event.reason)


def admit(active: Sequence[str], token: str, *, cap: int) -> tuple[list[str], list[str]]:
    """The user's active devices (oldest registration first) after registering ``token``, and the evicted.

    ``active``: the user's active devices (``device_key``) before, oldest first, of every
    platform: the cap counts a user's devices whatever their platform. ``token`` (the
    registered device's key) goes last (a re-registration moves it there); the oldest
    beyond ``cap`` are evicted.
    """
    order = [t for t in active if t != token] + [token]
    excess = max(0, len(order) - cap)
    return order[excess:], order[:excess]
