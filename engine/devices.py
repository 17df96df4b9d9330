"""Device registration decisions: takeover of a token from another user, and the per-user cap.

A device token (of its platform: an APNs token for ``ios``) identifies one app install on one
phone. When another user registers it (the phone was sold, or a shared tablet changed hands),
the previous owner must stop receiving pushes on it at once, so a takeover unregisters the token
for its previous owner before the new registration. A user holds at most ``cap`` active tokens:
a registration beyond the cap unregisters the user's oldest tokens (a phone unused for longest
is the one most likely gone). Both choices are events, so the worker's registry and the read
model see the same thing in the same order. A device is (platform, token); the cap counts the
user's devices of every platform."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.channels import DEFAULT_PLATFORM
from schemas.events import DeviceRegistered, DeviceUnregistered


@dataclass(frozen=True, slots=True)
class ActiveDevice:
    """One of the user's active tokens, as the read model or the registry knows it."""

    token: str
    """The device token (APNs: lower-case hex)."""
    registered_at: datetime
    """When it was (last) registered: the oldest goes first when the cap is reached."""
    platform: str = DEFAULT_PLATFORM
    """The device's platform."""


@dataclass(frozen=True, slots=True)
class Registration:
    """What registering one token means: the events to append, in this order."""

    unregistered: tuple[DeviceUnregistered, ...]
    """Takeover from the previous owner first, then the user's own tokens evicted by the cap."""
    registered: DeviceRegistered
    """The registration itself."""

    @property
    def events(self) -> tuple[DeviceUnregistered | DeviceRegistered, ...]:
        """Every event, unregistrations first (so the cap is never exceeded, even briefly)."""
        return (*self.unregistered, self.registered)


def over_cap(
    active: Sequence[ActiveDevice], token: str, *, cap: int, platform: str = DEFAULT_PLATFORM
) -> tuple[ActiveDevice, ...]:
    """The user's devices to unregister so that (``platform``, ``token``) fits within ``cap``, oldest first."""
    others = sorted(
        (d for d in active if (d.platform, d.token) != (platform, token)),
        key=lambda d: (d.registered_at, d.platform, d.token),
    )
    excess = len(others) + 1 - cap
    return tuple(others[: max(0, excess)])


def decide_registration(
    registered: DeviceRegistered, *, previous_owner: str | None, active: Sequence[ActiveDevice], cap: int
) -> Registration:
    """Events for ``registered``, given who holds the token now and the user's active tokens.

    ``previous_owner``: the user the device (its platform's token) is active for now
    (``None`` if nobody or the registering user); that user's registration ends.
    ``active``: the registering user's active devices, of every platform.
    """
    user, token, platform = registered.user_id, registered.device_token, registered.platform
    out: list[DeviceUnregistered] = []
    if previous_owner is not None and previous_owner != user:
        out.append(DeviceUnregistered(user_id=previous_owner, device_token=token, platform=platform))
    evicted = over_cap(active, token, cap=cap, platform=platform)
    out.extend(DeviceUnregistered(user_id=user, device_token=d.token, platform=d.platform) for d in evicted)
    return Registration(tuple(out), registered)
