"""A worker without sinks copies the sink group's contacts (``streams.device_registry.ContactsOnly``).

Its source is the changelog topic of the ``herald-contacts`` table the sink group's registry
declares: the name and the record encoding are Faust's, so they are taken here from a real
Faust app and table (an upgrade that renames the changelog or changes its key or value
encoding fails these tests, not the routing of high requests in production). The copy
keeps each user's latest contact, deletes on a tombstone, and skips a record it cannot read.
"""

from __future__ import annotations

from typing import Any

import faust
import pytest

from engine.settings import Settings
from streams.app import sink_app_id
from streams.device_registry import ContactsOnly, DeviceRegistry, contacts_changelog
from streams.topics import declare

PARTITIONS = 4


def _sink_registry(app_id: str) -> DeviceRegistry:
    """The sink group's registry, bound to a Faust app of that id (no broker needed to declare)."""
    settings = Settings.from_env({}, app_id=app_id, topic_partitions=PARTITIONS, jwt_secret="s" * 40)
    app = faust.App(app_id, broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False, loghandlers=[])
    registry = DeviceRegistry()
    registry.bind(app, declare(app, settings), PARTITIONS)
    return registry


def _record(registry: DeviceRegistry, user_id: str, contact: dict[str, Any] | None) -> tuple[bytes, bytes | None]:
    """Key and value as the sink group's table writes them to its changelog."""
    topic = registry.contacts.changelog_topic
    key, _ = topic.prepare_key(user_id, None)
    value, _ = topic.prepare_value(contact, None) if contact is not None else (None, None)
    return key, value


def _copier(source: str) -> ContactsOnly:
    copier = ContactsOnly(source)
    copier.contacts = {}  # the table's mapping interface; the agent's partition context is Faust's
    return copier


def test_the_source_is_the_changelog_of_the_sink_group_s_contacts_table() -> None:
    settings = Settings.from_env({}, app_id="acme-herald", jwt_secret="s" * 40)
    sink = _sink_registry(sink_app_id(settings))
    assert sink_app_id(settings) == "acme-herald"  # the group that ingests low keeps the app id
    assert sink.contacts.changelog_topic.get_topic_name() == contacts_changelog(sink_app_id(settings))


def test_each_user_s_latest_contact_is_copied_and_read_as_routing_preferences() -> None:
    sink = _sink_registry("herald")
    copier = _copier(contacts_changelog("herald"))
    first = {"email": "a@example.test", "channels": ["websocket", "email"], "email_fallback_minutes": 5}
    latest = {"email": "a@example.test", "channels": ["websocket"], "email_fallback_minutes": None}
    copier.copy(*_record(sink, "ada", first))
    copier.copy(*_record(sink, "ada", latest))
    copier.copy(*_record(sink, "bob", first))

    ada = copier.preferences("ada")
    assert ada is not None and ada.channels == frozenset({"websocket"}) and ada.email_fallback_minutes is None
    bob = copier.preferences("bob")
    assert bob is not None and bob.channels == frozenset({"websocket", "email"}) and bob.email_fallback_minutes == 5
    assert copier.contact("ada") == latest
    assert copier.preferences("carol") is None


def test_a_tombstone_deletes_and_an_unreadable_record_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    sink = _sink_registry("herald")
    copier = _copier(contacts_changelog("herald"))
    contact = {"email": "a@example.test", "channels": ["email"]}
    copier.copy(*_record(sink, "ada", contact))
    copier.copy(*_record(sink, "ada", None))
    assert copier.contact("ada") is None

    copier.copy(*_record(sink, "bob", contact))
    key, _ = _record(sink, "bob", contact)
    copier.copy(key, b"{not json")
    copier.copy(key, b"[1, 2]")
    copier.copy(b"\xff not a key", b"{}")
    copier.copy(None, b"{}")
    assert copier.contact("bob") == contact  # what it had is kept
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 4
