"""The start-up self-check of the Faust/aiokafka private attributes Herald uses (``streams.internals``)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from streams.internals import (
    AIOKAFKA,
    FAUST,
    REQUIRED,
    Internal,
    LibraryInternalsChanged,
    check_internals,
    committable_offset,
)

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


def test_a_missing_module_attribute_is_named_with_its_module() -> None:
    import faust.streams

    with pytest.raises(LibraryInternalsChanged, match=r"faust\.streams has no attribute '_current_stream_event'"):
        check_internals([Internal(FAUST, faust.streams, "_current_stream_event", "taking request records")])
    check_internals([Internal(FAUST, faust.streams, "_current_event", "taking request records")])


class _Acks:
    """The state Faust's consumer keeps per partition for its commit decision."""

    def __init__(self, committed: int | None, acked: list[int], gaps: tuple[tuple[int, int], ...] = ()) -> None:
        from collections import defaultdict

        from intervaltree import IntervalTree

        self._acked = defaultdict(list, {"tp": list(acked)})
        self._acked_index = defaultdict(set, {"tp": set(acked)})
        self._gap = defaultdict(IntervalTree)
        for begin, end in gaps:
            self._gap["tp"].addi(begin, end)
        self._committed_offset = defaultdict(lambda: None, {"tp": committed})


def test_a_record_not_yet_processed_right_after_the_committed_offset_is_never_committed_over() -> None:
    # Faust's own guard lets exactly this through (first acked one past the committed offset).
    from faust.transport.consumer import Consumer as FaustConsumer

    faust_state = _Acks(committed=8, acked=[9, 10])
    assert FaustConsumer._new_offset(faust_state, "tp") == 11  # type: ignore[arg-type]  # the library's bug
    state = _Acks(committed=8, acked=[9, 10])
    assert committable_offset(state, "tp") is None
    state._acked["tp"].append(8)
    state._acked_index["tp"].add(8)
    assert committable_offset(state, "tp") == 11


def test_the_commit_guard_still_steps_over_known_gaps_and_stops_at_holes() -> None:
    assert committable_offset(_Acks(committed=8, acked=[9, 10], gaps=((8, 9),)), "tp") == 11
    assert committable_offset(_Acks(committed=8, acked=[8, 9, 11, 12]), "tp") == 10
    assert committable_offset(_Acks(committed=None, acked=[3, 4]), "tp") == 5
    assert committable_offset(_Acks(committed=8, acked=[]), "tp") is None
