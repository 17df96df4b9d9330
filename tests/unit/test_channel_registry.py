"""The channel registry: stored channel bits are explicit, and everything else derives from it.

Before the registry, ``CHANNEL_BITS`` was the enum's order: moving a channel in the enum
silently made every stored ``channel_mask`` mean other channels.
"""

from __future__ import annotations

import random

import pytest

from engine.audit_redelivery import CHANNELS as REDELIVERABLE
from engine.channels import CHANNELS, REGISTRY, ChannelRegistry, ChannelRegistryError, ChannelSpec
from engine.priority import ALL_CHANNELS, resolve_channels
from engine.routing import fallback_channels
from engine.settings import Settings
from engine.topics import TopicNames
from projections.notifications import CHANNEL_BITS, channel_mask
from projections.queries import HANDED_OFF_CHANNELS
from streams.channel_registry import SINKS
from streams.channels import configured_sinks

STORED_BITS = {"websocket": 1, "email": 2, "apns": 4, "webhook": 8}
"""Masks already written to ``notifications.channel_mask`` use exactly these."""


def test_the_stored_bits_of_the_existing_channels_are_those_masks_were_written_with() -> None:
    assert CHANNEL_BITS == STORED_BITS
    assert channel_mask(["websocket", "apns"]) == 5


@pytest.mark.parametrize("seed", range(20))
def test_reordering_the_declarations_changes_no_bit_and_no_canonical_order(seed: int) -> None:
    shuffled = list(CHANNELS)
    random.Random(seed).shuffle(shuffled)
    reordered = ChannelRegistry.of(shuffled)
    assert reordered.bits == STORED_BITS
    assert reordered.names == ALL_CHANNELS == ("websocket", "email", "apns", "webhook")
    assert reordered.fallbacks == {"email": "websocket"}


def test_a_repeated_bit_or_name_or_an_unknown_fallback_is_refused() -> None:
    with pytest.raises(ChannelRegistryError, match="bits repeat"):
        ChannelRegistry.of([*CHANNELS, ChannelSpec("fcm", bit=2, target="device_token", settings_prefix="fcm_")])
    with pytest.raises(ChannelRegistryError, match="names repeat"):
        ChannelRegistry.of([*CHANNELS, ChannelSpec("email", bit=9, target="address", settings_prefix="x_")])
    with pytest.raises(ChannelRegistryError, match="unknown"):
        ChannelRegistry.of([ChannelSpec("sms", bit=5, target="address", settings_prefix="", fallback_after="fax")])
    with pytest.raises(ChannelRegistryError, match="outside"):
        ChannelRegistry.of([ChannelSpec("sms", bit=63, target="address", settings_prefix="")])


def test_all_keeps_meaning_the_first_three_channels_and_webhook_is_named_to_be_used() -> None:
    assert resolve_channels(("all",)) == ("websocket", "email", "apns")
    assert resolve_channels(("webhook", "all")) == ("websocket", "email", "apns", "webhook")
    assert resolve_channels(("webhook",)) == ("webhook",)


def test_redelivery_and_target_status_cover_every_channel_on_the_retry_path() -> None:
    assert REDELIVERABLE == HANDED_OFF_CHANNELS == ("email", "apns", "webhook")


def test_the_fallback_chain_comes_from_the_declarations() -> None:
    assert fallback_channels(("websocket", "email", "webhook")) == ("email",)
    assert fallback_channels(("email", "webhook")) == ()


def test_every_channel_has_a_delivery_topic_a_sink_entry_and_a_settings_section() -> None:
    fields = set(Settings.field_names())
    assert set(SINKS) == set(ALL_CHANNELS)
    assert TopicNames("herald.").delivery("webhook") == "herald.deliveries.webhook"
    for spec in REGISTRY.specs:
        assert any(f.startswith(spec.settings_prefix) for f in fields), spec.name


def test_configured_sinks_follow_the_settings_of_each_channel() -> None:
    assert configured_sinks(Settings()) == []
    configured = Settings(
        smtp_host="127.0.0.1", smtp_tls="none", webhook_secret="whsec_" + "QUJD" * 10, webhook_allow_loopback_http=True
    )
    assert [s.channel for s in configured_sinks(configured)] == ["email", "webhook"]
