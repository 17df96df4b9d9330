"""The start-up self-check of the Faust/aiokafka private attributes Herald uses (``streams.internals``)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from streams.internals import AIOKAFKA, FAUST, REQUIRED, Internal, LibraryInternalsChanged, check_internals

ROOT = Path(__file__).parents[2]


def test_the_installed_libraries_have_every_private_attribute_herald_uses() -> None:
    check_internals()  # raises on a missing one
    assert {item.library for item in REQUIRED} == {FAUST, AIOKAFKA}


def test_the_installed_versions_are_within_the_bounds_pyproject_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {Requirement(dep).name: Requirement(dep).specifier for dep in project["dependencies"]}
    for library in (FAUST, AIOKAFKA):
        assert any(spec.operator == "<" for spec in bounds[library]), f"{library} needs an upper bound"
        assert version(library) in bounds[library], f"{library} {version(library)} outside {bounds[library]}"


class _Consumer:
    """A stand-in for a library class after an upgrade renamed one attribute."""

    def __init__(self) -> None:
        self._fetch_wait_ms = 500  # was _fetch_max_wait_ms

    def _getmany(self) -> None:
        return None

    def _commit_offsets(self) -> None:
        self.flush_everything()

    def flush_everything(self) -> None:
        return None


def test_a_missing_class_attribute_is_named_with_the_library_version() -> None:
    missing = Internal(FAUST, _Consumer, "_new_consumer_thread", "the consumer fetch wait")
    with pytest.raises(LibraryInternalsChanged) as caught:
        check_internals([Internal(FAUST, _Consumer, "_getmany", "the priority poll"), missing])
    message = str(caught.value)
    assert f"faust-streaming {version(FAUST)}" in message
    assert "_Consumer has no attribute '_new_consumer_thread'" in message
    assert "the consumer fetch wait" in message
    assert "_getmany" not in message, "only what is missing is reported"


def test_an_instance_attribute_no_longer_assigned_is_named() -> None:
    with pytest.raises(
        LibraryInternalsChanged, match=rf"aiokafka {version(AIOKAFKA)}: .*no longer assigns self\._fetch_max_wait_ms"
    ):
        check_internals([Internal(AIOKAFKA, _Consumer, "_fetch_max_wait_ms", "the consumer fetch wait", assigned=True)])
    check_internals([Internal(AIOKAFKA, _Consumer, "_fetch_wait_ms", "the consumer fetch wait", assigned=True)])


def test_a_method_that_stopped_calling_what_herald_hooks_is_named() -> None:
    needs_flush = Internal(
        FAUST, _Consumer, "_commit_offsets", "commits waiting for live frames", calls="producer.flush()"
    )
    with pytest.raises(LibraryInternalsChanged, match=r"_commit_offsets no longer calls producer\.flush\(\)"):
        check_internals([needs_flush])
