"""A test-only device channel: ``pager``, whose devices are of platform ``pageros``.

It shows what a new device channel (FCM's ``android``, web push's ``web``) brings with
its own declaration and nothing else: its platform and that platform's token rule.
``declared()`` adds it to the channel registry that device code reads
(``schemas.channels.REGISTRY``) for as long as the block runs, so REST accepts
``pageros`` devices, their events decode, and the registry and read model keep them,
while the APNs sink goes on pushing only to ``ios`` ones. The channel has no sink: a
test never sends on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from schemas import channels
from schemas.channels import ChannelSpec, DevicePlatform

PAGEROS = DevicePlatform("pageros", r"[0-9a-zA-Z]{8,64}", "8 to 64 letters or digits (case-sensitive)")
"""A platform whose tokens may look like APNs ones: only the platform tells them apart."""
PAGER = ChannelSpec("pager", bit=61, target="device_token", settings_prefix="", in_all=False, platform=PAGEROS)
"""The channel declaring it (a high storage bit no real channel will take soon)."""


@contextmanager
def declared() -> Iterator[channels.ChannelRegistry]:
    """The registry with ``PAGER`` declared, in force for device code until the block ends."""
    with pytest.MonkeyPatch.context() as patch:
        registry = channels.REGISTRY.plus(PAGER)
        patch.setattr(channels, "REGISTRY", registry)
        yield registry
