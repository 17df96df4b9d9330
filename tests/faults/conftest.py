"""The fault-tolerance suite (``make faults``): each role a real OS process, faults injected from outside.

Every test under ``tests/faults/`` carries the ``faults`` marker; ``make test`` deselects it
(``-m "not faults"`` in pyproject.toml) because the suite needs minutes and several processes,
and ``.ci/run`` runs it after ``make test`` as ``make faults``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.settings import Settings
from herald.apns_emulator import ApnsEmulator, generate_signing_key
from herald.smtp_capture import SmtpCapture
from tests.faults.topology import PARTITIONS, Topology
from tests.support.api import own_database
from tests.support.apns import apns_settings, emulator_for
from tests.support.settings import isolated_settings

HERE = Path(__file__).parent


ALONE_FIRST = ("test_worker_crash.py",)
"""Scenarios that run before the shared topology starts: the session-scoped topology (7 role processes,
50 clients, a steady load) stays up until the session ends, and a 20,000-request burst needs the two
cores to itself to measure the worker rather than the neighbours (a CI run with both up timed out)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)
    items.sort(key=lambda item: Path(str(item.path)).name not in ALONE_FIRST)  # stable: the rest keep their order


# -- the topology every scenario runs on (tests/faults/topology.py) -------------------------------

TUNING: dict[str, dict[str, Any]] = {
    # Group timeouts of the workers in this suite only (production defaults: 30 s / 3 s / 60 s). A dead worker
    # is noticed after its session timeout and the survivors rejoin within a heartbeat, so the session timeout
    # is most of the gap: measured 10.6 s to recover with the 6 s of tests/support/settings.py, 6.9 s with 2.5 s,
    # 3.7-4.6 s with 1.5 s (docs/reliability.md). Tansu accepts 1.5 s; Apache Kafka refuses sessions shorter
    # than its group.min.session.timeout.ms (6 s by default), hence test configuration, not a default.
    "worker": {"kafka_session_timeout": 1.5, "kafka_heartbeat_interval": 0.25, "kafka_rebalance_timeout": 3.0},
    # The surviving projector takes a dead one's partitions after its session timeout (8.8 s with 6 s).
    "projector": {"kafka_session_timeout": 2.0, "kafka_heartbeat_interval": 0.3, "kafka_rebalance_timeout": 4.0},
}
"""Per-role settings on top of the shared test configuration (``tests/support/settings.py``)."""


@pytest.fixture(scope="session")
def faults_database() -> Iterator[str]:
    """A Postgres database of the fault suite's own, dropped afterwards."""
    with own_database("herald_faults") as url:
        yield url


@pytest.fixture(scope="session")
async def faults_smtp() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture(max_kept=1_000_000) as server:
        yield server


@pytest.fixture(scope="session")
async def faults_apns() -> AsyncIterator[tuple[ApnsEmulator, str]]:
    """The APNs emulator and the private key Herald signs with."""
    private, public = generate_signing_key()
    async with emulator_for(public) as emulator:
        yield emulator, private


@pytest.fixture(scope="session")
def faults_settings(
    kafka_bootstrap: str,
    redis_url: str,
    faults_database: str,
    faults_smtp: SmtpCapture,
    faults_apns: tuple[ApnsEmulator, str],
) -> Settings:
    emulator, private = faults_apns
    return isolated_settings(
        kafka_bootstrap,
        redis_url,
        database_url=faults_database,
        topic_partitions=PARTITIONS,
        rate_limit_high=1_000_000,
        rate_limit_medium=1_000_000,
        rate_limit_low=1_000_000,
        smtp_host=faults_smtp.host,
        smtp_port=faults_smtp.port,
        smtp_tls="none",  # the capture server is on loopback and has no TLS
        retry_base_delay_seconds=0.5,
        retry_jitter=0.1,
        scheduler_tick_seconds=0.2,
        log_level="INFO",
        **apns_settings(emulator, private),
    )


@pytest.fixture(scope="session")
async def topology(
    faults_settings: Settings, faults_smtp: SmtpCapture, faults_apns: tuple[ApnsEmulator, str], output_dir: Path
) -> AsyncIterator[Topology]:
    """3 workers, 2 projectors, 2 gateways as processes, 50 WebSocket clients, 4 offline users, steady load."""
    topo = Topology(
        faults_settings,
        smtp=faults_smtp,
        emulator=faults_apns[0],
        output_dir=output_dir,
        worker_overrides=TUNING["worker"],
        projector_overrides=TUNING["projector"],
    )
    started = time.monotonic()
    try:
        await topo.start()
        print(f"\n[faults] topology up and delivering in {time.monotonic() - started:.1f} s", flush=True)
        yield topo
    finally:
        print("\n" + topo.overall(), flush=True)
        await topo.stop()
