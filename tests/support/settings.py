"""Settings for tests: isolated per call, with the Tansu workarounds of docs/architecture.md.

The workarounds live here, in test configuration only: batches of one record (Tansu's
end offsets), short group timeouts (Tansu's slow joins) and a short fetch wait (Tansu
holds a fetch for its whole max wait even when data arrives).
"""

from __future__ import annotations

import atexit
import os
import uuid
from typing import Any

import psycopg

from engine.settings import Settings
from streams.app import remove_faust_datadirs

TEST_JWT_SECRET = "herald-test-secret-not-the-dev-one-0123456789"
"""Tests sign with their own secret, as a production role must (``herald api`` refuses the dev one)."""


SESSION_TIMEOUT = 6.0 if os.environ.get("HERALD_TEST_KAFKA") else 2.0
"""Consumer-group session timeout (seconds). Tansu answers a group join half a session timeout
after it is asked (measured: 3.0 s at 6 s, 1.0 s at 2 s), and every stack start joins the
worker's and the projector's groups, so the session's own Tansu gets 2 s (its heartbeat every
0.5 s). An external broker (``HERALD_TEST_KAFKA``) gets 6 s: Apache Kafka refuses sessions
shorter than its ``group.min.session.timeout.ms`` (6 s by default)."""


_APP_IDS: set[str] = set()
"""The Faust app ids of this test session, whose (empty) data directories go when it ends."""


# Each test's worker has an app id of its own, and so a directory of its own under /tmp.
atexit.register(remove_faust_datadirs, _APP_IDS)


def isolated_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings with their own topics, groups and node id; ``overrides`` win."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_prefix": f"t{tag}.",
        "app_id": f"herald-test-{tag}",
        "projector_group": f"herald-projector-{tag}",
        "redis_url": redis_url,
        "http_port": 0,
        "node_id": f"node-{tag}",
        "producer_max_batch_size": 1,
        "kafka_session_timeout": SESSION_TIMEOUT,
        "kafka_heartbeat_interval": SESSION_TIMEOUT / 4,
        "kafka_rebalance_timeout": 6.0,
        "kafka_fetch_max_wait_ms": 20,
        "log_level": "WARNING",
        "jwt_secret": TEST_JWT_SECRET,
        "apns_sandbox": True,  # required with an APNs key; the tests' APNs is the emulator
    }
    values.update(overrides)
    _APP_IDS.add(f"herald-test-{tag}")  # the generated id only: an override's directory is not the session's
    return Settings.from_env({}, **values)


def reset_schema(database_url: str) -> None:
    """Empty the session database (the stack re-creates the tables); a no-op for an external one."""
    if os.environ.get("HERALD_TEST_DATABASE_URL"):
        return
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
