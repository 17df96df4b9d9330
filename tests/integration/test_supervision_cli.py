"""``herald projector``, ``herald worker`` and ``herald api`` as real OS processes: when their background
work dies, they log it at ERROR and exit with status 1 (so compose or Kubernetes restarts
them), instead of staying up with nothing working (issue 14, fault 1).

The fault itself is injected (a bug cannot be produced on demand): the child process
replaces one method with one that raises, then runs the real CLI. Everything else (the
CLI, the stack, the broker, Postgres, Redis) is real. Before the supervisor both
processes stayed up until a signal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from engine.settings import Settings
from engine.topics import TopicNames
from herald.broker import free_port
from streams.admin import ensure_topics
from tests.support.api import isolated_settings, own_database
from tests.support.kafka import publish, request
from tests.support.processes import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).parents[2]
FIELDS = (
    "kafka_bootstrap",
    "topic_prefix",
    "app_id",
    "projector_group",
    "redis_url",
    "database_url",
    "node_id",
    "producer_max_batch_size",
    "kafka_session_timeout",
    "kafka_heartbeat_interval",
    "kafka_rebalance_timeout",
    "kafka_fetch_max_wait_ms",
)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update({f"HERALD_{name.upper()}": str(getattr(settings, name)) for name in FIELDS})
    env.update(HERALD_JWT_SECRET=uuid.uuid4().hex + uuid.uuid4().hex, HERALD_LOG_LEVEL="INFO", **extra)
    return env


def _start(script: str, env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _exit_status(proc: subprocess.Popen[bytes], within: float) -> int | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = proc.poll()
        if status is not None:
            return status
        time.sleep(0.1)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _dying(module: str, attribute: str, args: str, bug: str, role: str) -> str:
    """A script that replaces ``module.attribute`` (a coroutine method) with one raising ``bug``, then runs ``role``."""
    owner, _, method = attribute.rpartition(".")
    return f"""
        import {module} as target

        async def dying(self, {args}):
            raise RuntimeError("{bug} (injected by the test)")

        target.{owner}.{method} = dying
        from herald.cli import main
        raise SystemExit(main(["{role}"]))
    """


def _exit_of(script: str, settings: Settings, log: Path, **extra: str) -> tuple[int | None, str]:
    proc = _start(script, _env(settings, **extra), log)
    try:
        status = _exit_status(proc, within=60)
    finally:
        _stop(proc)
    return status, log.read_text()


async def test_herald_projector_exits_1_when_its_projector_task_dies(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    script = _dying("projections.projector", "Projector.run", "stopping", "projector bug", "projector")
    with own_database("herald_supervision_cli") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        status, text = _exit_of(script, settings, output_dir / "supervision-projector.log")
    assert status == 1, f"the process should exit 1 after its projector died; it gave {status}:\n{text[-3000:]}"
    assert "projector died" in text and "projector bug (injected by the test)" in text
    assert "ERROR" in text


async def test_herald_worker_exits_1_when_an_agent_crashes(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    script = """
        import streams.email_sink as email_sink

        async def targets(self, accepted):
            raise RuntimeError("sink bug (injected by the test)")

        email_sink.EmailSink.targets = targets
        from herald.cli import main
        raise SystemExit(main(["worker"]))
    """
    log = output_dir / "supervision-worker.log"
    with own_database("herald_supervision_cli") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        env = _env(settings, HERALD_SMTP_HOST="127.0.0.1", HERALD_SMTP_PORT=str(free_port()), HERALD_SMTP_TLS="none")
        await ensure_topics(settings)  # as the worker will: the request can be published at once
        proc = _start(script, env, log)
        try:
            user = f"crash-{uuid.uuid4().hex[:6]}"
            body = request(user, "boom", channels=["email"], email=f"{user}@example.test")
            topic = TopicNames(settings.topic_prefix).request("high")
            await publish(kafka_bootstrap, topic, [(user.encode(), json.dumps(body).encode())])  # type: ignore[arg-type]
            status = _exit_status(proc, within=90)
        finally:
            _stop(proc)
    text = log.read_text()
    assert status == 1, f"the worker should exit 1 after an agent crashed; it gave {status}:\n{text[-3000:]}"
    assert "agent herald.sink.email died" in text and "sink bug (injected by the test)" in text


async def test_herald_api_exits_1_when_a_gateway_task_dies(
    kafka_bootstrap: str, redis_url: str, output_dir: Path
) -> None:
    script = _dying("api.ws.presence", "RedisPresence._refresh_forever", "held", "presence bug", "api")
    with own_database("herald_supervision_cli") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        log = output_dir / "supervision-api.log"
        status, text = _exit_of(script, settings, log, HERALD_HTTP_PORT=str(free_port()))
    assert status == 1, f"the API should exit 1 after its presence refresher died; it gave {status}:\n{text[-3000:]}"
    assert "presence-refresh" in text and "presence bug (injected by the test)" in text
    assert "ERROR" in text
