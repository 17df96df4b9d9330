"""The aiokafka/Faust private attributes ``streams.lingering`` reaches are there in the installed versions."""

from __future__ import annotations

from streams import lingering
from streams.internals import check_internals


def test_the_installed_libraries_have_every_attribute_the_lingering_push_uses() -> None:
    check_internals(lingering.REQUIRED)  # raises LibraryInternalsChanged naming a missing one


def test_building_the_hook_checks_them_and_a_producer_not_started_yet_is_skipped() -> None:
    push = lingering.lingering_sender(lambda: None)
    push()  # no producer yet: nothing to send, no error
