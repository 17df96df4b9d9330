"""Configuration: read once from ``HERALD_*`` variables into a frozen object.

Nothing else in Herald reads ``os.environ``; the composition root calls
``Settings.from_env()`` and passes the result down. A ``HERALD_*`` variable that is not a
setting (a typo such as ``HERALD_RATE_LIMIT_HIHG``) is refused with the closest valid name
rather than silently ignored: every role and tool then exits with status 2 at start.
docs/configuration.md lists every setting by concern (``SECTIONS``).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.webhook import InvalidWebhook, signing_key
from schemas.errors import HeraldError

DEV_JWT_SECRET = "herald-dev-secret-change-me-in-production-0123456789"  # noqa: S105 - dev default, refused in production


class ConfigError(HeraldError):
    """A ``HERALD_*`` variable is missing, malformed or unknown."""


NOT_SETTINGS = frozenset(
    {
        # Tools: the admin token `herald deadletters` sends (herald/deadletters_command.py).
        "HERALD_ADMIN_TOKEN",
        # The test suite's services and knobs (tests/conftest.py, tests/support/, tests/integration/).
        "HERALD_TEST_KAFKA",
        "HERALD_TEST_DATABASE_URL",
        "HERALD_TEST_REDIS_URL",
        "HERALD_TEST_PG_ADMIN",
        "HERALD_TEST_CRASH_BURST",
        "HERALD_FUZZ_EXAMPLES",
        "HERALD_FUZZ_SEED",
        # The fault suite's topology and targets (tests/faults/, docs/reliability.md).
        "HERALD_FAULTS_WORKERS",
        "HERALD_FAULTS_PROJECTORS",
        "HERALD_FAULTS_GATEWAYS",
        "HERALD_FAULTS_ONLINE_USERS",
        "HERALD_FAULTS_OFFLINE_USERS",
        "HERALD_FAULTS_RATE",
        "HERALD_FAULTS_SETTLE_TIMEOUT",
        "HERALD_FAULTS_RECOVER_GUARD",
        "HERALD_FAULTS_P99_GUARD",
        "HERALD_FAULTS_RESTART_GUARD",
        "HERALD_FAULTS_ALL_THREE_GUARD",
        # Benchmarks (benchmarks/, docs/benchmarks.md).
        "HERALD_BENCH_KAFKA",
        "HERALD_BENCH_PG_ADMIN",
        "HERALD_BENCH_REDIS",
        "HERALD_BENCH_REDIS_URL",
        "HERALD_BENCH_PROFILE",
    }
)
"""``HERALD_*`` variables that are legitimately set but are not settings: ``from_env`` lets them
pass. Tests and benchmarks start roles as processes that inherit them."""


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
    jwt_audience: str = "herald"
    """``aud`` of minted tokens, required on incoming ones (a token for another service is refused)."""
    jwt_max_lifetime_seconds: int = 24 * 3600
    """Longest accepted token lifetime (``exp - iat``); tokens without ``exp`` or ``iat`` are refused."""
    jwt_jwks_url: str = ""
    """JWKS URL of an identity provider whose RS256/ES256 tokens are accepted (instead of a public key)."""
    jwt_jwks_refresh_seconds: float = 300.0
    """How often the JWKS keys are fetched again (a token with an unknown key id also triggers a fetch)."""
    token_ttl_seconds: int = 24 * 3600
    """Lifetime of tokens minted by ``herald token``."""
    max_request_bytes: int = 16 * 1024
    """Largest request accepted on a request topic or the API."""
    bulk_max_targets: int = 100_000
    """Targets (users or device tokens) one ``POST /api/notifications/bulk`` may name."""
    bulk_max_encoded_bytes: int = 64 * 1024 * 1024
    """Bytes one bulk may publish in all (targets x encoded request); a larger bulk is refused (413).

    64 MiB: 100,000 requests of up to ~670 bytes each (a title and a short body) fit."""
    max_devices_per_user: int = 20
    """Active APNs device tokens per user; registering one more unregisters the oldest."""
    write_rate_per_second: float = 2.0
    """Sustained REST writes per second one user (a token without ``notifications:write``) may make."""
    write_burst: int = 60
    """REST writes one user may make at once before the per-user rate limit answers 429."""
    ws_max_connections_per_user: int = 5
    """Concurrent WebSocket connections per user over all gateway nodes; the next is refused (close 4008)."""
    ws_heartbeat_seconds: float = 30.0
    """Server ping interval; a connection that does not answer a ping within half of it is closed."""
    presence_ttl_seconds: int = 30
    """Presence entries expire after this unless refreshed by the gateway."""
    ws_send_queue_size: int = 256
    """Frames queued for one WebSocket before it is closed as too slow (close code 4009)."""
    ws_client_frame_rate: float = 10.0
    """Sustained frames per second a client may send on one WebSocket (excess: an error frame, ignored)."""
    ws_client_frame_burst: int = 100
    """Frames a client may send at once on one WebSocket before the per-connection limit applies."""
    ws_replay_batch_size: int = 100
    """Notifications per ``missed_notifications`` frame when a client reconnects."""
    ws_replay_wait_seconds: float = 5.0
    """Longest a reconnect waits for the projector to catch up with the user's events before replaying."""
    node_id: str = ""
    """Gateway node id (defaults to host:pid)."""
    projector_group: str = "herald-projector"
    """Consumer group of the projector."""
    projector_batch_size: int = 500
    """Events applied per projector transaction at most."""
    projector_linger_ms: int = 50
    """With a backlog, the projector collects events for up to this long into one transaction."""
    read_your_writes_timeout: float = 5.0
    """Seconds an API write waits for the projector before answering 202 with a retry hint."""
    dev_mode: bool = False
    """True under ``herald dev``: enables dev-only conveniences such as token minting."""
    metrics_port: int = 0
    """Internal port of the ``/metrics`` endpoint of ``herald worker``, ``projector`` and ``api`` (0: none;
    then the API serves ``/metrics`` on its public port)."""
    log_level: str = "INFO"
    """Root log level."""
    kafka_session_timeout: float = 30.0
    """Consumer group session timeout (seconds)."""
    kafka_heartbeat_interval: float = 3.0
    """Consumer group heartbeat interval (seconds)."""
    kafka_rebalance_timeout: float = 60.0
    """Consumer group rebalance timeout (seconds)."""
    kafka_fetch_max_wait_ms: int = 500
    """Longest a consumer fetch waits for data (Kafka returns early when data arrives; Tansu does not)."""
    producer_max_batch_size: int = 16384
    """Producer batch size in bytes (tests on Tansu use 1: see docs/architecture.md)."""
    producer_linger_ms: int = 2
    """How long a producer waits to fill a batch: a few milliseconds of latency buy many fewer,
    larger produce requests under load."""
    rate_limit_high: int = 100
    """High-priority notifications one user may get per rate-limit window."""
    rate_limit_medium: int = 50
    """Medium-priority notifications one user may get per rate-limit window."""
    rate_limit_low: int = 20
    """Low-priority notifications one user may get per rate-limit window."""
    rate_limit_window_seconds: int = 3600
    """Length of the sliding rate-limit window."""
    dedupe_window_seconds: int = 24 * 3600
    """A repeated idempotency key (or request id) within this window is a duplicate."""
    priority_isolation: bool = True
    """Medium and low requests wait while high-priority requests are queued (and low for medium)."""
    kafka_max_poll_records: int = 1000
    """Records the worker takes from the broker per poll: small polls keep a backlog on one topic
    from holding up records of another (priority isolation)."""
    retry_max_attempts: int = 5
    """Delivery attempts per target before a delivery is abandoned and dead-lettered."""
    retry_base_delay_seconds: float = 60.0
    """Delay before the first retry of a failed delivery; doubles with each attempt."""
    retry_max_delay_seconds: float = 3600.0
    """Cap on one retry delay."""
    retry_jitter: float = 0.2
    """Retry delays are spread over +/- this fraction."""
    email_fallback_seconds: float = 0.0
    """When a request names websocket and email: email only if still unread after this long (0: both at once)."""
    scheduler_tick_seconds: float = 1.0
    """How often due work (retries, deliver_after, fallbacks) is looked for."""
    delivery_timeout_seconds: float = 10.0
    """Longest one sink send may take before it counts as a retriable failure."""
    sent_targets_ttl_seconds: float = 0.0
    """How long the email/APNs sinks remember a (notification, target) as sent, so a repeated work
    record is not sent twice; 0: twice the retry horizon, at least an hour. Shorter than the retry
    horizon is refused at start."""
    smtp_host: str = ""
    """SMTP server for the email channel; empty disables the email sink (``herald dev`` starts a capture server)."""
    smtp_port: int = 25
    """SMTP server port (465 for implicit TLS, 587 for STARTTLS, usually)."""
    smtp_tls: str = "starttls"
    """``starttls`` (upgrade a plain connection, required), ``tls`` (implicit TLS from the start) or
    ``none`` (cleartext: with SMTP credentials only to a loopback host)."""
    smtp_username: str = ""
    """SMTP AUTH user name; empty means no authentication."""
    smtp_password: str = field(default="", repr=False)
    """SMTP AUTH password."""
    smtp_from: str = "Herald <herald@localhost>"
    """``From`` address of every email."""
    smtp_ca_path: str = ""
    """CA bundle to verify the SMTP server's certificate with (empty: the system store)."""
    smtp_timeout_seconds: float = 5.0
    """Timeout of each SMTP command (connect, MAIL, RCPT, DATA)."""
    apns_key_path: str = ""
    """Path of the APNs token-auth signing key (.p8); this or ``HERALD_APNS_KEY`` enables the APNs sink."""
    apns_key: str = field(default="", repr=False)
    """The .p8 signing key itself (PEM), instead of a path."""
    apns_key_id: str = ""
    """Key id of the signing key (10 characters, from the Apple developer account)."""
    apns_team_id: str = ""
    """Apple team id (the ``iss`` of provider tokens)."""
    apns_topic: str = ""
    """The app's bundle id (``apns-topic``)."""
    apns_sandbox: bool | None = None
    """Use Apple's sandbox (development) service (true) or production (false); required with an APNs key."""
    apns_server: str = ""
    """``host:port`` to send to instead of Apple (the APNs emulator); empty means Apple."""
    apns_ca_path: str = ""
    """CA to trust for ``apns_server`` (the emulator's ``ca.pem``); empty means the system store."""
    apns_timeout_seconds: float = 5.0
    """Longest one APNs send may take; the client is recreated after a timeout."""
    apns_max_connections: int = 10
    """HTTP/2 connections aioapns may open to APNs."""
    apns_max_in_flight: int = 100
    """Pushes one worker sends at once (awaiting APNs' answers together); 1 sends one after the other."""
    webhook_secret: str = field(default="", repr=False)
    """Signing secret of the webhook channel (``whsec_`` + base64, or text of 24+ bytes); empty: no webhook sink."""
    webhook_timeout_seconds: float = 5.0
    """Longest one webhook POST may take (connection and answer)."""
    webhook_allow_loopback_http: bool = False
    """Accept ``http://`` webhook URLs to a loopback host (``herald dev``, tests); otherwise https only."""
    dev_smtp_port: int = 0
    """Port of ``herald dev``'s SMTP capture server (0: a free port, printed at start-up)."""
    dev_apns_port: int = 0
    """Port of ``herald dev``'s APNs emulator (0: a free port, printed at start-up)."""
    dev_apns_inspect_port: int = 0
    """Port of the emulator's inspection API under ``herald dev`` (0: a free port)."""
    audit_hmac_key: str = field(default="", repr=False)
    """Key of the HMAC-SHA256 signature on ``herald audit export`` manifests (empty: a digest manifest, unsigned)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Always empty: an unrecognised ``HERALD_*`` variable is refused by ``from_env`` (kept for callers)."""

    def to_env(self) -> dict[str, str]:
        """The ``HERALD_*`` variables that make ``from_env`` build these settings again
        (for starting a role as a process with exactly this configuration)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[f"HERALD_{f.name.upper()}"] = str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then ``overrides``.

        Raises ``ConfigError`` for a ``HERALD_*`` name that is neither a setting nor in
        ``NOT_SETTINGS``, naming the closest valid one."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        unknown = sorted(
            key
            for key in source
            # ``herald_x`` too: environment names are case-sensitive, so it would be ignored.
            if key.upper().startswith("HERALD_")
            and key not in NOT_SETTINGS
            and not (key.startswith("HERALD_") and key[len("HERALD_") :].lower() in fields)
        )
        if unknown:
            raise ConfigError(_unknown_message(unknown, [f"HERALD_{name.upper()}" for name in fields]))
        for key, raw in source.items():
            if not key.startswith("HERALD_"):
                continue
            name = key[len("HERALD_") :].lower()
            if name in fields:
                # An optional bool (no default) parses like a bool.
                sample = False if fields[name].type == "bool | None" else fields[name].default
                values[name] = _parse(key, raw, sample)
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
        if min(self.rate_limit_high, self.rate_limit_medium, self.rate_limit_low, self.rate_limit_window_seconds) < 1:
            raise ConfigError("HERALD_RATE_LIMIT_* values must be at least 1")
        if self.retry_max_attempts < 1 or self.dedupe_window_seconds < 1 or self.scheduler_tick_seconds <= 0:
            raise ConfigError(
                "HERALD_RETRY_MAX_ATTEMPTS, HERALD_DEDUPE_WINDOW_SECONDS and HERALD_SCHEDULER_TICK_SECONDS"
                " must be positive"
            )
        if self.rate_limit_window_seconds > self.dedupe_window_seconds:
            # The rate windows are rebuilt from the dedupe entries after a restart
            # (streams/admission_store.py): the dedupe window must cover the rate window.
            raise ConfigError("HERALD_RATE_LIMIT_WINDOW_SECONDS must not exceed HERALD_DEDUPE_WINDOW_SECONDS")
        if not 0 <= self.retry_jitter < 1:
            raise ConfigError("HERALD_RETRY_JITTER must be in [0, 1)")
        if self.ws_send_queue_size < 1 or self.ws_replay_batch_size < 1:
            raise ConfigError("HERALD_WS_SEND_QUEUE_SIZE and HERALD_WS_REPLAY_BATCH_SIZE must be at least 1")
        if min(self.bulk_max_targets, self.bulk_max_encoded_bytes, self.max_devices_per_user) < 1:
            raise ConfigError(
                "HERALD_BULK_MAX_TARGETS, HERALD_BULK_MAX_ENCODED_BYTES and HERALD_MAX_DEVICES_PER_USER"
                " must be at least 1"
            )
        if min(self.write_rate_per_second, self.ws_client_frame_rate) <= 0:
            raise ConfigError("HERALD_WRITE_RATE_PER_SECOND and HERALD_WS_CLIENT_FRAME_RATE must be positive")
        if min(self.write_burst, self.ws_client_frame_burst) < 1:
            raise ConfigError("HERALD_WRITE_BURST and HERALD_WS_CLIENT_FRAME_BURST must be at least 1")
        if self.smtp_tls not in {"none", "starttls", "tls"}:
            raise ConfigError("HERALD_SMTP_TLS must be none, starttls or tls")
        if self.smtp_tls == "none" and (self.smtp_username or self.smtp_password) and not _loopback(self.smtp_host):
            # Credentials in cleartext over a network: refuse rather than leak them.
            raise ConfigError(
                "HERALD_SMTP_TLS=none would send the SMTP credentials in cleartext: use starttls or tls"
                " (none with credentials only for a loopback HERALD_SMTP_HOST)"
            )
        if (self.apns_key_path or self.apns_key) and not (self.apns_key_id and self.apns_team_id and self.apns_topic):
            raise ConfigError(
                "HERALD_APNS_KEY_ID, HERALD_APNS_TEAM_ID and HERALD_APNS_TOPIC are required with an APNs key"
            )
        if (self.apns_key_path or self.apns_key) and self.apns_sandbox is None:
            # Guessing either way is wrong: sandbox in production invalidates every real device.
            raise ConfigError(
                "HERALD_APNS_SANDBOX is required with an APNs key: true for Apple's sandbox (development builds),"
                " false for production"
            )
        if self.apns_server and not self.apns_server.rpartition(":")[2].isdigit():
            raise ConfigError("HERALD_APNS_SERVER must be host:port")
        if not 1 <= self.apns_max_in_flight <= 1000:
            raise ConfigError("HERALD_APNS_MAX_IN_FLIGHT must be from 1 to 1000")
        if self.webhook_secret:
            try:
                signing_key(self.webhook_secret)
            except InvalidWebhook as exc:
                raise ConfigError(f"HERALD_WEBHOOK_SECRET: {exc}") from None
        if self.webhook_timeout_seconds <= 0:
            raise ConfigError("HERALD_WEBHOOK_TIMEOUT_SECONDS must be positive")
        if self.presence_ttl_seconds < 1:
            raise ConfigError("HERALD_PRESENCE_TTL_SECONDS must be at least 1")
        bad = [a for a in self.jwt_algorithms if a not in {"HS256", "HS384", "HS512", "RS256", "ES256"}]
        if bad:
            raise ConfigError(f"HERALD_JWT_ALGORITHMS: unsupported {bad} (none is never allowed)")
        if any(a.startswith("HS") for a in self.jwt_algorithms) and len(self.jwt_secret) < 32:
            raise ConfigError("HERALD_JWT_SECRET must be at least 32 characters")
        if self.token_ttl_seconds < 1 or self.jwt_max_lifetime_seconds < self.token_ttl_seconds:
            raise ConfigError("HERALD_TOKEN_TTL_SECONDS must be between 1 and HERALD_JWT_MAX_LIFETIME_SECONDS")
        if not self.jwt_audience:
            raise ConfigError("HERALD_JWT_AUDIENCE must not be empty")
        if self.jwt_jwks_url and not _secure_url(self.jwt_jwks_url):
            raise ConfigError("HERALD_JWT_JWKS_URL must be https:// (http:// only for a loopback host)")
        if self.jwt_jwks_refresh_seconds < 1:
            raise ConfigError("HERALD_JWT_JWKS_REFRESH_SECONDS must be at least 1")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Kafka",
        (
            "kafka_bootstrap",
            "topic_prefix",
            "topic_partitions",
            "topic_replication",
            "app_id",
            "kafka_session_timeout",
            "kafka_heartbeat_interval",
            "kafka_rebalance_timeout",
            "kafka_fetch_max_wait_ms",
            "kafka_max_poll_records",
            "producer_max_batch_size",
            "producer_linger_ms",
        ),
    ),
    (
        "Database and projector",
        ("database_url", "projector_group", "projector_batch_size", "projector_linger_ms", "read_your_writes_timeout"),
    ),
    (
        "HTTP API",
        (
            "http_host",
            "http_port",
            "metrics_port",
            "max_request_bytes",
            "bulk_max_targets",
            "bulk_max_encoded_bytes",
            "max_devices_per_user",
            "write_rate_per_second",
            "write_burst",
        ),
    ),
    (
        "Authentication (JWT)",
        (
            "jwt_secret",
            "jwt_algorithms",
            "jwt_public_key",
            "jwt_issuer",
            "jwt_audience",
            "jwt_max_lifetime_seconds",
            "jwt_jwks_url",
            "jwt_jwks_refresh_seconds",
            "token_ttl_seconds",
        ),
    ),
    (
        "Redis and WebSocket gateway",
        (
            "redis_url",
            "node_id",
            "presence_ttl_seconds",
            "ws_max_connections_per_user",
            "ws_heartbeat_seconds",
            "ws_send_queue_size",
            "ws_client_frame_rate",
            "ws_client_frame_burst",
            "ws_replay_batch_size",
            "ws_replay_wait_seconds",
        ),
    ),
    (
        "Rate limits, duplicates and priority",
        (
            "rate_limit_high",
            "rate_limit_medium",
            "rate_limit_low",
            "rate_limit_window_seconds",
            "dedupe_window_seconds",
            "priority_isolation",
        ),
    ),
    (
        "Delivery and retries",
        (
            "retry_max_attempts",
            "retry_base_delay_seconds",
            "retry_max_delay_seconds",
            "retry_jitter",
            "email_fallback_seconds",
            "scheduler_tick_seconds",
            "delivery_timeout_seconds",
            "sent_targets_ttl_seconds",
        ),
    ),
    (
        "Email channel (SMTP)",
        (
            "smtp_host",
            "smtp_port",
            "smtp_tls",
            "smtp_username",
            "smtp_password",
            "smtp_from",
            "smtp_ca_path",
            "smtp_timeout_seconds",
        ),
    ),
    (
        "Push channel (APNs)",
        (
            "apns_key_path",
            "apns_key",
            "apns_key_id",
            "apns_team_id",
            "apns_topic",
            "apns_sandbox",
            "apns_server",
            "apns_ca_path",
            "apns_timeout_seconds",
            "apns_max_connections",
            "apns_max_in_flight",
        ),
    ),
    ("Webhook channel", ("webhook_secret", "webhook_timeout_seconds", "webhook_allow_loopback_http")),
    ("herald dev", ("dev_mode", "dev_kafka_port", "dev_smtp_port", "dev_apns_port", "dev_apns_inspect_port")),
    ("Operations", ("log_level", "audit_hmac_key")),
)
"""Every setting by concern, in the order docs/configuration.md shows them (one flat ``Settings``
keeps every caller's ``settings.foo`` working; the grouping is documentation, checked by a test)."""


def _unknown_message(unknown: list[str], settings: list[str]) -> str:
    """One line: ``unknown setting HERALD_X (did you mean HERALD_Y?)``, every unknown name in it."""
    # Compared without the common prefix: it would make every name look close to every other.
    known = {name.removeprefix("HERALD_"): name for name in [*settings, *sorted(NOT_SETTINGS)]}
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key[len("HERALD_") :].upper(), list(known), n=1, cutoff=0.6)
        hint = (
            f"did you mean {known[close[0]]}?" if close else "no setting has a similar name: see docs/configuration.md"
        )
        parts.append(f"{key} ({hint})")
    return f"unknown setting{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


def _secure_url(url: str) -> bool:
    """``https://``, or ``http://`` to a loopback host (tests, a sidecar): keys must not travel in clear."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    return scheme == "https" or (scheme == "http" and host in {"127.0.0.1", "localhost", "::1"})


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``): traffic never leaves it."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
