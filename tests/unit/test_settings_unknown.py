"""A misspelt ``HERALD_*`` variable stops every role and tool at start, naming the right one.

Before, ``HERALD_RATE_LIMIT_HIHG=500`` was silently ignored: the operator believed the limit
raised while Herald ran with the default. The CLI runs here as a real process, as an operator
starts it. The repository scan keeps ``NOT_SETTINGS`` (the legitimate non-setting ``HERALD_*``
variables of tests, benchmarks and tools) complete: a test knob missing from it would make
every role started by that test refuse to start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.settings import NOT_SETTINGS, ConfigError, Settings

ROOT = Path(__file__).parents[2]
SETTINGS = {f"HERALD_{name.upper()}" for name in Settings.field_names()}
OWN_SECRET = "an-operator-secret-not-the-dev-one-0123456789"
NOT_VARIABLES = {
    "HERALD_LOGGERS": "a constant in tests/integration/test_correlation_logs.py",
    "HERALD_RATE_LIMIT_HIHG": "the typo docs/configuration.md shows refused",
    "HERALD_FOO_BAR": "the naming pattern docs/configuration.md explains",
}
"""Names that look like variables in the repository but are not read from the environment."""
NOT_SCANNED = {Path("engine/settings.py"), Path("tests/unit/test_settings_unknown.py")}
"""The list itself and its examples: the scan must find each listed name somewhere else."""
SKIPPED_DIRS = {".git", ".venv", "node_modules", "test-output", "__pycache__", ".mypy_cache", ".ruff_cache"}
SCANNED = {".py", ".md", ".yml", ".yaml", ".cfg", ".toml", ".sh", ".ini", ".json"}
ROLES_AND_TOOLS = [
    ["worker"],
    ["projector"],
    ["api"],
    ["dev"],
    ["rebuild"],
    ["token", "alice"],
    ["why", "n-1"],
    ["inbox", "--as-of", "2026-01-01T00:00:00Z", "alice"],
    ["deadletters", "list"],
    ["verify"],
    ["apns-emulator"],
]


def _herald(args: list[str], **variables: str) -> subprocess.CompletedProcess[str]:
    """``herald ARGS`` as a process with only ``variables`` of the ``HERALD_*`` ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    # A valid production configuration otherwise: without the typo, roles would start.
    env |= {"HERALD_JWT_SECRET": OWN_SECRET, "HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:1"} | variables
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_misspelt_variable_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"HERALD_RATE_LIMIT_HIHG": "500"})
    assert str(refused.value) == "unknown setting HERALD_RATE_LIMIT_HIHG (did you mean HERALD_RATE_LIMIT_HIGH?)"


def test_every_unknown_variable_is_named_on_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"HERALD_SMTP_PASS": "x", "HERALD_ZZZ": "1", "HERALD_HTTP_PORT": "8000"})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("unknown settings HERALD_SMTP_PASS (did you mean HERALD_SMTP_PASSWORD?), HERALD_ZZZ (")
    assert "no setting has a similar name" in message


def test_a_lower_case_prefix_is_refused_not_ignored() -> None:
    """Environment names are case-sensitive: ``herald_http_port`` was never read."""
    with pytest.raises(ConfigError, match=r"^unknown setting herald_http_port \(did you mean HERALD_HTTP_PORT\?\)$"):
        Settings.from_env({"herald_http_port": "8010"})


def test_variables_that_are_not_settings_but_legitimate_pass() -> None:
    settings = Settings.from_env(dict.fromkeys(NOT_SETTINGS, "1") | {"HERALD_HTTP_PORT": "8010"})
    assert settings.http_port == 8010
    # Overrides and variables without the prefix are not checked.
    assert Settings.from_env({"HERALDX": "1", "PATH": "/bin"}, http_port=8020).http_port == 8020


@pytest.mark.parametrize("args", ROLES_AND_TOOLS, ids=lambda a: a[0])
def test_every_role_and_tool_refuses_a_misspelt_variable_at_start(args: list[str]) -> None:
    done = _herald(args, HERALD_RATE_LIMIT_HIHG="500", HERALD_JWT_SECERT="do-not-print-me-0123456789abcdef")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "herald: configuration error: unknown settings HERALD_JWT_SECERT (did you mean HERALD_JWT_SECRET?),"
        " HERALD_RATE_LIMIT_HIHG (did you mean HERALD_RATE_LIMIT_HIGH?)"
    ]
    assert "do-not-print-me" not in done.stderr + done.stdout  # a misplaced secret's value is not echoed
    assert done.stdout == ""


def test_a_tool_runs_with_the_test_and_benchmark_variables_set() -> None:
    done = _herald(["token", "alice"], HERALD_TEST_KAFKA="127.0.0.1:1", HERALD_FAULTS_RATE="30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT


def test_every_herald_variable_in_the_repository_is_a_setting_or_listed() -> None:
    """A ``HERALD_*`` name used anywhere (code, tests, docs, deployment, CI) is one ``from_env`` accepts."""
    found: dict[str, set[str]] = {}
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if SKIPPED_DIRS & set(relative.parts) or relative in NOT_SCANNED or not path.is_file():
            continue
        if path.suffix not in SCANNED and path.name not in {"Makefile", "Dockerfile", "run", "system-deps"}:
            continue
        text = path.read_text(errors="replace")
        for name in re.findall(r"\bHERALD_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, set()).add(str(relative))
    unknown = {name: sorted(paths) for name, paths in found.items() if name not in SETTINGS | NOT_SETTINGS}
    unknown = {name: paths for name, paths in unknown.items() if name not in NOT_VARIABLES}
    assert not unknown, f"add these to engine.settings.NOT_SETTINGS (or make them settings): {unknown}"
    stale = NOT_SETTINGS - set(found)
    assert not stale, f"NOT_SETTINGS names variables nothing reads any more: {sorted(stale)}"
