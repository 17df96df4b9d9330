"""The fault-tolerance suite (``make faults``): each role a real OS process, faults injected from outside.

Every test under ``tests/faults/`` carries the ``faults`` marker; ``make test`` deselects it
(``-m "not faults"`` in pyproject.toml) because the suite needs minutes and several processes,
and ``.ci/run`` runs it after ``make test`` as ``make faults``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)
