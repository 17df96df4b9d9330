# Herald — two commands do all the set-up: `make dev` and `make test`.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PACKAGES := schemas engine streams projections api herald

.PHONY: dev test faults check format sync uv system-deps bench

## uv from PyPI when missing, with pip (Debian's python3-pip, installed when missing: as root or with
## password-less sudo). uv is one self-contained binary with no dependencies, so it is installed beside
## Debian's own packages despite PEP 668 (Debian's pip refuses any install outside a venv otherwise).
uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
	  python3 -m pip --version >/dev/null 2>&1 || { \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo -n"; \
	    echo "installing Debian package: python3-pip (to install uv)"; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null; }; \
	  echo "installing uv with pip"; \
	  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet uv; }

sync: uv
	@$(UV) sync --frozen --quiet --compile-bytecode

## Run the whole engine on its embedded default (broker, SQLite, API and demo page on :8000).
dev: sync
	$(UV) run herald dev

## Install everything (Python env, Debian test tools) and run the test suite.
test: sync system-deps
	$(UV) run pytest

## The fault-tolerance suite: several workers, projectors and gateways as processes, faults injected.
faults: sync system-deps
	$(UV) run pytest -m faults tests/faults

## Format check, lint, types.
check: sync
	$(UV) run ruff format --check $(PACKAGES) tests benchmarks
	$(UV) run ruff check $(PACKAGES) tests benchmarks
	$(UV) run mypy $(PACKAGES) benchmarks

format: sync
	$(UV) run ruff format $(PACKAGES) tests benchmarks
	$(UV) run ruff check --fix $(PACKAGES) tests benchmarks

## What the suite needs from the machine: PostgreSQL and Redis (installed when missing, started when down), kcat, chromium, docker-compose.
system-deps:
	@bash .ci/system-deps

## Every throughput benchmark, then one summary table (measure, herald, baseline, ratio, target).
bench: sync
	$(UV) run python -m benchmarks.suite
