"""Configuration: read once from ``HERALD_*`` variables into a frozen object.

Nothing else in Herald reads ``os.environ``; the composition root calls
``Settings.from_env()`` and passes the result down.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import HeraldError

DEV_JWT_SECRET = "herald-dev-secret-change-me-in-production-0123456789"  # noqa: S105 - dev default, refused in production


class ConfigError(HeraldError):
    """A ``HERALD_*`` variable is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of Herald. Field ``foo_bar`` is read from ``HERALD_FOO_BAR``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma separated."""
    topic_prefix: str = "herald."
    """Prefix of every topic name."""
    topic_partitions: int = 4
    """Partitions of request, event and delivery topics (all equal: co-partitioning)."""
    topic_replication: int = 1
    """Replication factor for topics Herald creates."""
    app_id: str = "herald"
    """Faust application id (consumer group of the worker)."""
    database_url: str = "sqlite+aiosqlite:///herald.db"
    """SQLAlchemy async URL of the read models (``postgresql+psycopg://...`` in production)."""
    redis_url: str = ""
    """Redis URL for presence and gateway fan-out; empty means in-process (dev only)."""
    http_host: str = "127.0.0.1"
    """Address the API binds."""
    http_port: int = 8000
    """Port the API binds."""
    dev_kafka_port: int = 9092
    """Port of the embedded broker started by ``herald dev``."""
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    """HS256 secret for tokens (production must set its own)."""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    """Accepted JWT algorithms (pinned; never taken from the token)."""
    jwt_public_key: str = ""
    """PEM public key for RS256/ES256 tokens (instead of the secret)."""
    jwt_issuer: str = "herald"
    """``iss`` of minted tokens, required on incoming ones."""
    token_ttl_seconds: int = 24 * 3600
    """Lifetime of tokens minted by ``herald token``."""
    max_request_bytes: int = 16 * 1024
    """Largest request accepted on a request topic or the API."""
    ws_max_connections_per_user: int = 5
    """Concurrent WebSocket connections per user."""
    ws_heartbeat_seconds: float = 30.0
    """Server ping interval; a connection silent for 2 intervals is closed."""
    presence_ttl_seconds: int = 30
    """Presence entries expire after this unless refreshed by the gateway."""
    node_id: str = ""
    """Gateway node id (defaults to host:pid)."""
    projector_group: str = "herald-projector"
    """Consumer group of the projector."""
    projector_batch_size: int = 500
    """Events applied per projector transaction at most."""
    read_your_writes_timeout: float = 5.0
    """Seconds an API write waits for the projector before answering 202 with a retry hint."""
    dev_mode: bool = False
    """True under ``herald dev``: enables dev-only conveniences such as token minting."""
    log_level: str = "INFO"
    """Root log level."""
    kafka_session_timeout: float = 30.0
    """Consumer group session timeout (seconds)."""
    kafka_heartbeat_interval: float = 3.0
    """Consumer group heartbeat interval (seconds)."""
    kafka_rebalance_timeout: float = 60.0
    """Consumer group rebalance timeout (seconds)."""
    producer_max_batch_size: int = 16384
    """Producer batch size in bytes (Tansu test config uses 1: see DESIGN.md)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Unrecognised ``HERALD_*`` variables, kept for error messages."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then ``overrides``."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        for key, raw in source.items():
            if not key.startswith("HERALD_"):
                continue
            name = key[len("HERALD_"):].lower()
            if name in fields:
                values[name] = _parse(key, raw, fields[name].default)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ConfigError`` with a clear message for impossible combinations."""
        if self.topic_partitions < 1:
            raise ConfigError("HERALD_TOPIC_PARTITIONS must be at least 1")
        if self.ws_max_connections_per_user < 1:
            raise ConfigError("HERALD_WS_MAX_CONNECTIONS_PER_USER must be at least 1")
        bad = [a for a in self.jwt_algorithms if a not in {"HS256", "HS384", "HS512", "RS256", "ES256"}]
        if bad:
            raise ConfigError(f"HERALD_JWT_ALGORITHMS: unsupported {bad} (none is never allowed)")
        if any(a.startswith("HS") for a in self.jwt_algorithms) and len(self.jwt_secret) < 32:
            raise ConfigError("HERALD_JWT_SECRET must be at least 32 characters")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _parse(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {type(default).__name__}") from None
    return raw
