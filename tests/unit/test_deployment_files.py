"""docker-compose.yml, the Dockerfile and the README stay true to the code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from engine.settings import Settings

ROOT = Path(__file__).parents[2]
FIELDS = {f"HERALD_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def test_compose_runs_every_production_role_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    roles = {next(iter(s["command"])) for s in services.values() if "command" in s}
    assert {"worker", "projector", "api"} <= roles
    for name, service in services.items():
        env = service.get("environment", {})
        unknown = {k for k in env if k.startswith("HERALD_")} - FIELDS
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
    assert {"kafka", "postgres", "redis"} <= set(services)


def test_dockerfile_ships_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("schemas", "engine", "streams", "projections", "api", "herald"):
        assert f"COPY {package} {package}" in dockerfile


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_section = readme.split("\n## ")[1]
    assert first_section.startswith("Two commands")
    assert "make dev" in first_section and "make test" in first_section
