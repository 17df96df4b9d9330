"""Dependencies point inward: engine/ and schemas/ stay free of I/O frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FORBIDDEN = {
    "schemas": {
        "faust",
        "aiokafka",
        "aiohttp",
        "sqlalchemy",
        "redis",
        "aiosmtplib",
        "aioapns",
        "psycopg",
        "engine",
        "streams",
        "api",
        "projections",
        "herald",
    },
    "engine": {
        "faust",
        "aiokafka",
        "aiohttp",
        "sqlalchemy",
        "redis",
        "aiosmtplib",
        "aioapns",
        "psycopg",
        "streams",
        "api",
        "projections",
        "herald",
    },
    "streams": {"api", "projections", "herald"},
    "projections": {"streams", "api", "herald"},
    "api": {"streams", "herald"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_inward(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
