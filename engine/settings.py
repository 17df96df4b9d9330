"""Configuration: read once from ``HERALD_*`` variables into a frozen object.

Nothing else in Herald reads ``os.environ``; the composition root calls
``Settings.from_env()`` and passes the result down. ``Settings`` is built on pydantic-settings:
one class per concern (``KafkaSettings``, ``EmailSettings``, ...) declares its settings, their
types and the rules on each value; ``Settings`` combines them into one flat, immutable object so
every part of Herald reads ``settings.foo_bar``. Rules across settings of a concern (``validate``)
are checked by ``from_env``. A ``HERALD_*`` variable that is not a setting (a typo such as
``HERALD_RATE_LIMIT_HIHG``) is refused with the closest valid name rather than silently ignored:
every role and tool then exits with status 2 at start. docs/configuration.md lists every setting
by concern (``SECTIONS``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.priority import Priority
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

PRIORITIES: tuple[str, ...] = tuple(Priority)
"""The request priorities, highest first."""

PREFIX = "HERALD_"
"""Setting ``foo_bar`` is the variable ``HERALD_FOO_BAR``."""

AtLeastOne = Annotated[int, Field(ge=1)]
"""A count or a duration in whole seconds that must be 1 or more."""
Positive = Annotated[float, Field(gt=0)]
"""A rate or a duration in seconds that must be more than 0."""


class _Concern(BaseSettings):
    """The settings of one concern. The constructor checks each value's type and rules and raises
    ``ConfigError`` naming the variable; it reads nothing from the environment (``from_env`` does)."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_prefix=PREFIX,
        case_sensitive=False,
        extra="forbid",
        # Not ``use_attribute_docstrings``: reading the source costs every process ~25 ms at start;
        # docs/configuration.md's test reads the docstrings itself.
    )
    title: ClassVar[str] = ""
    """The concern's heading in docs/configuration.md."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only the constructor's arguments: ``Settings()`` is the defaults whatever the
        # environment holds; ``from_env`` reads the variables it is given (a test's own mapping).
        return (init_settings,)

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Pydantic's errors as one ``ConfigError`` line naming each variable (never a secret's value)."""
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(cls.model_fields, error) for error in exc.errors())) from None

    def _check(self) -> None:
        """Rules across this concern's settings (``validate``); each concern adds its own."""


class KafkaSettings(_Concern):
    """Where the event log is and how Herald's clients talk to it."""

    title: ClassVar[str] = "Kafka"

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma separated."""
    topic_prefix: str = "herald."
    """Prefix of every topic name."""
    topic_partitions: AtLeastOne = 4
    """Partitions of request, event and delivery topics (all equal: co-partitioning)."""
    topic_replication: int = 1
    """Replication factor for topics Herald creates."""
    app_id: str = "herald"
    """Faust application id (consumer group of the worker)."""
    kafka_session_timeout: float = 30.0
    """Consumer group session timeout (seconds)."""
    kafka_heartbeat_interval: float = 3.0
    """Consumer group heartbeat interval (seconds)."""
    kafka_rebalance_timeout: float = 60.0
    """Consumer group rebalance timeout (seconds)."""
    kafka_fetch_max_wait_ms: int = 500
    """Longest a consumer fetch waits for data (Kafka returns early when data arrives; Tansu does not)."""
    kafka_event_log_fetch_interval_ms: Annotated[int, Field(ge=0)] = 0
    """The worker that runs the sinks asks the broker for the event log (which its device and contact
    registry folds; a worker without sinks never reads it) in at most one fetch every this many
    milliseconds; 0: in every fetch, with the requests. Its own
    appends put new records in the log all the time, and on Tansu a fetch that finds new records
    costs in proportion to the record batches already in the partition, so the requests' fetches
    slowed as the log grew (the benchmarks set 100: see docs/architecture.md). The registry then
    sees a device or contact change up to this much later."""
    kafka_max_poll_records: int = 1000
    """Records the worker takes from the broker per poll: small polls keep a backlog on one topic
    from holding up records of another (priority isolation)."""
    producer_max_batch_size: int = 16384
    """Producer batch size in bytes (tests on Tansu use 1: see docs/architecture.md)."""
    producer_linger_ms: int = 2
    """How long a producer waits to fill a batch: a few milliseconds of latency buy many fewer,
    larger produce requests under load."""


class DatabaseSettings(_Concern):
    """The read models and the projector that keeps them."""

    title: ClassVar[str] = "Database and projector"

    database_url: str = "sqlite+aiosqlite:///herald.db"
    """SQLAlchemy async URL of the read models (``postgresql+psycopg://...`` in production)."""
    projector_group: str = "herald-projector"
    """Consumer group of the projector."""
    projector_batch_size: int = 1000  # 10% less CPU per event than 500 (benchmarks.projector, 4 Dec)
    """Events applied per projector transaction at most (a lone write is projected at once)."""
    projector_linger_ms: int = 50
    """With a backlog, the projector collects events for up to this long into one transaction."""
    projector_nice: Annotated[int, Field(ge=0, le=19)] = 0
    """Niceness a projector process adds to itself at start (every thread of it; 0 to 19). The
    projector is off the path of live delivery: on a host whose cores it shares with the worker,
    the API and the broker, at 10 it gives way to them while the cores are busy, batches more
    events per transaction and still takes the CPU they leave; the read models, and so the
    answers of REST writes, may then lag more under load (compose's ``cpu_shares``).
    docs/deployment.md, "CPU priority"."""
    read_your_writes_timeout: float = 5.0
    """Seconds an API write waits for the projector before answering 202 with a retry hint."""


class HttpSettings(_Concern):
    """The REST API: where it listens and what one request or user may ask of it."""

    title: ClassVar[str] = "HTTP API"

    http_host: str = "127.0.0.1"
    """Address the API binds."""
    http_port: int = 8000
    """Port the API binds."""
    metrics_port: int = 0
    """Internal port of the ``/metrics`` endpoint of ``herald worker``, ``projector`` and ``api`` (0: none;
    then the API serves ``/metrics`` on its public port); the worker and projector serve ``/healthz`` and
    ``/readyz`` there too."""
    max_request_bytes: int = 16 * 1024
    """Largest request accepted on a request topic or the API."""
    bulk_max_targets: AtLeastOne = 100_000
    """Targets (users or device tokens) one ``POST /api/notifications/bulk`` may name."""
    bulk_max_encoded_bytes: AtLeastOne = 64 * 1024 * 1024
    """Bytes one bulk may publish in all (targets x encoded request); a larger bulk is refused (413).

    64 MiB: 100,000 requests of up to ~670 bytes each (a title and a short body) fit."""
    max_devices_per_user: AtLeastOne = 20
    """Active APNs device tokens per user; registering one more unregisters the oldest."""
    write_rate_per_second: Positive = 2.0
    """Sustained REST writes per second one user (a token without ``notifications:write``) may make."""
    write_burst: AtLeastOne = 60
    """REST writes one user may make at once before the per-user rate limit answers 429."""


JWT_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "ES256"})
"""The algorithms ``HERALD_JWT_ALGORITHMS`` may name (never ``none``)."""


class AuthSettings(_Concern):
    """Which tokens the API and the gateway accept, and the tokens ``herald token`` mints."""

    title: ClassVar[str] = "Authentication (JWT)"

    jwt_secret: str = Field(default=DEV_JWT_SECRET, repr=False)
    """HS256 secret for tokens (production must set its own)."""
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ("HS256",)
    """Accepted JWT algorithms (pinned; never taken from the token)."""
    jwt_public_key: str = ""
    """PEM public key for RS256/ES256 tokens (instead of the secret)."""
    jwt_issuer: str = "herald"
    """``iss`` of minted tokens, required on incoming ones."""
    jwt_audience: str = Field(default="herald", min_length=1)
    """``aud`` of minted tokens, required on incoming ones (a token for another service is refused)."""
    jwt_max_lifetime_seconds: int = 24 * 3600
    """Longest accepted token lifetime (``exp - iat``); tokens without ``exp`` or ``iat`` are refused."""
    jwt_jwks_url: str = ""
    """JWKS URL of an identity provider whose RS256/ES256 tokens are accepted (instead of a public key)."""
    jwt_jwks_refresh_seconds: float = Field(default=300.0, ge=1)
    """How often the JWKS keys are fetched again (a token with an unknown key id also triggers a fetch)."""
    token_ttl_seconds: AtLeastOne = 24 * 3600
    """Lifetime of tokens minted by ``herald token``."""

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("jwt_algorithms")
    @classmethod
    def _supported(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in JWT_ALGORITHMS]
        if bad:
            raise ValueError(f"HERALD_JWT_ALGORITHMS: unsupported {bad} (none is never allowed)")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _secure(cls, value: str) -> str:
        if value and not _secure_url(value):
            raise ValueError("HERALD_JWT_JWKS_URL must be https:// (http:// only for a loopback host)")
        return value

    def _check(self) -> None:
        if any(a.startswith("HS") for a in self.jwt_algorithms) and len(self.jwt_secret) < 32:
            raise ConfigError("HERALD_JWT_SECRET must be at least 32 characters")
        if self.jwt_max_lifetime_seconds < self.token_ttl_seconds:
            raise ConfigError("HERALD_TOKEN_TTL_SECONDS must be between 1 and HERALD_JWT_MAX_LIFETIME_SECONDS")


class GatewaySettings(_Concern):
    """Presence in Redis and the WebSocket gateway's connections."""

    title: ClassVar[str] = "Redis and WebSocket gateway"

    redis_url: str = ""
    """Redis URL for presence and gateway fan-out; empty means in-process (dev only)."""
    node_id: str = ""
    """Gateway node id (defaults to host:pid)."""
    presence_ttl_seconds: AtLeastOne = 30
    """Presence entries expire after this unless refreshed by the gateway."""
    ws_max_connections_per_user: AtLeastOne = 5
    """Concurrent WebSocket connections per user over all gateway nodes; the next is refused (close 4008)."""
    ws_heartbeat_seconds: float = 30.0
    """Server ping interval; a connection that does not answer a ping within half of it is closed."""
    ws_send_queue_size: AtLeastOne = 256
    """Frames queued for one WebSocket before it is closed as too slow (close code 4009)."""
    ws_client_frame_rate: Positive = 10.0
    """Sustained frames per second a client may send on one WebSocket (excess: an error frame, ignored)."""
    ws_client_frame_burst: AtLeastOne = 100
    """Frames a client may send at once on one WebSocket before the per-connection limit applies."""
    ws_replay_batch_size: AtLeastOne = 100
    """Notifications per ``missed_notifications`` frame when a client reconnects."""
    ws_replay_wait_seconds: float = 5.0
    """Longest a reconnect waits for the projector to catch up with the user's events before replaying."""
    ws_receipt_linger_ms: Annotated[int, Field(ge=0, le=1000)] = 20
    """How long the gateway gathers delivery receipts (``delivery.succeeded``) before appending them in one
    produce request; a client's clean close, or 1,000 receipts waiting, sends them at once. Receipts are
    off the frame's path; fewer, larger appends let the broker answer the requests' fetches and the
    acceptances' appends sooner (see docs/benchmarks.md). 0: every loop turn."""


class AdmissionSettings(_Concern):
    """What the worker admits: per-user rate limits, duplicates and priority order."""

    title: ClassVar[str] = "Rate limits, duplicates and priority"

    rate_limit_high: AtLeastOne = 100
    """High-priority notifications one user may get per rate-limit window."""
    rate_limit_medium: AtLeastOne = 50
    """Medium-priority notifications one user may get per rate-limit window."""
    rate_limit_low: AtLeastOne = 20
    """Low-priority notifications one user may get per rate-limit window."""
    rate_limit_window_seconds: AtLeastOne = 3600
    """Length of the sliding rate-limit window."""
    dedupe_window_seconds: AtLeastOne = 24 * 3600
    """A repeated idempotency key (or request id) within this window is a duplicate."""
    priority_isolation: bool = True
    """Medium and low requests wait while high-priority requests are queued (and low for medium)."""
    worker_priorities: Annotated[tuple[str, ...], NoDecode] = PRIORITIES
    """Priorities whose requests this worker ingests, comma separated (``herald worker --priorities``
    overrides it). A subset runs as its own consumer group (the app id suffixed with the priorities,
    unless it includes ``low``) with its own admission table, so duplicates are detected per group;
    the channel sinks and the scheduler run only in the worker that ingests ``low``
    (docs/deployment.md, "Priority split")."""
    worker_nice: Annotated[int, Field(ge=0, le=19)] = 0
    """Niceness a worker process adds to itself at start (every thread of it; 0 to 19: a worker only
    lowers its own CPU priority). For processes sharing a host: the worker that ingests medium and
    low then gives way, while the cores are busy, to the high-priority worker, the broker and the
    API, and still takes the CPU they leave (containers get the same from CPU weights: compose's
    ``cpu_shares``). docs/deployment.md, "Priority split"."""

    @field_validator("worker_priorities", mode="before")
    @classmethod
    def _priority_list(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("worker_priorities")
    @classmethod
    def _known_priorities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if p not in PRIORITIES]
        if bad:
            raise ValueError(f"HERALD_WORKER_PRIORITIES: unknown priority {bad[0]!r} (high, medium and low exist)")
        if not value:
            raise ValueError("HERALD_WORKER_PRIORITIES must name at least one of high, medium, low")
        if len(set(value)) != len(value):
            raise ValueError(f"HERALD_WORKER_PRIORITIES names a priority twice: {','.join(value)}")
        return tuple(p for p in PRIORITIES if p in value)  # canonical order: one app id per set

    def _check(self) -> None:
        if self.rate_limit_window_seconds > self.dedupe_window_seconds:
            # The rate windows are rebuilt from the dedupe entries after a restart
            # (streams/admission_store.py): the dedupe window must cover the rate window.
            raise ConfigError("HERALD_RATE_LIMIT_WINDOW_SECONDS must not exceed HERALD_DEDUPE_WINDOW_SECONDS")


class DeliverySettings(_Concern):
    """Retries, fallbacks and the timing of every channel's sends."""

    title: ClassVar[str] = "Delivery and retries"

    retry_max_attempts: AtLeastOne = 5
    """Delivery attempts per target before a delivery is abandoned and dead-lettered."""
    retry_base_delay_seconds: float = 60.0
    """Delay before the first retry of a failed delivery; doubles with each attempt."""
    retry_max_delay_seconds: float = 3600.0
    """Cap on one retry delay."""
    retry_jitter: float = 0.2
    """Retry delays are spread over +/- this fraction."""
    email_fallback_seconds: float = 0.0
    """When a request names websocket and email: email only if still unread after this long (0: both at once)."""
    scheduler_tick_seconds: Positive = 1.0
    """How often due work (retries, deliver_after, fallbacks) is looked for."""
    delivery_timeout_seconds: float = 10.0
    """Longest one sink send may take before it counts as a retriable failure."""
    sent_targets_ttl_seconds: float = 0.0
    """How long the email/APNs sinks remember a (notification, target) as sent, so a repeated work
    record is not sent twice; 0: twice the retry horizon, at least an hour. Shorter than the retry
    horizon is refused at start."""

    @field_validator("retry_jitter")
    @classmethod
    def _a_fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("HERALD_RETRY_JITTER must be in [0, 1)")
        return value


SMTP_TLS = ("none", "starttls", "tls")
"""The values of ``HERALD_SMTP_TLS``."""


class EmailSettings(_Concern):
    """The email channel's SMTP server."""

    title: ClassVar[str] = "Email channel (SMTP)"

    smtp_host: str = ""
    """SMTP server for the email channel; empty disables the email sink (``herald dev`` starts a capture server)."""
    smtp_port: int = 25
    """SMTP server port (465 for implicit TLS, 587 for STARTTLS, usually)."""
    smtp_tls: str = "starttls"
    """``starttls`` (upgrade a plain connection, required), ``tls`` (implicit TLS from the start) or
    ``none`` (cleartext: with SMTP credentials only to a loopback host)."""
    smtp_username: str = ""
    """SMTP AUTH user name; empty means no authentication."""
    smtp_password: str = Field(default="", repr=False)
    """SMTP AUTH password."""
    smtp_from: str = "Herald <herald@localhost>"
    """``From`` address of every email."""
    smtp_ca_path: str = ""
    """CA bundle to verify the SMTP server's certificate with (empty: the system store)."""
    smtp_timeout_seconds: float = 5.0
    """Timeout of each SMTP command (connect, MAIL, RCPT, DATA)."""

    @field_validator("smtp_tls")
    @classmethod
    def _a_tls_mode(cls, value: str) -> str:
        if value not in SMTP_TLS:
            raise ValueError("HERALD_SMTP_TLS must be none, starttls or tls")
        return value

    def _check(self) -> None:
        if self.smtp_tls == "none" and (self.smtp_username or self.smtp_password) and not _loopback(self.smtp_host):
            # Credentials in cleartext over a network: refuse rather than leak them.
            raise ConfigError(
                "HERALD_SMTP_TLS=none would send the SMTP credentials in cleartext: use starttls or tls"
                " (none with credentials only for a loopback HERALD_SMTP_HOST)"
            )


class ApnsSettings(_Concern):
    """The push channel: Apple's service (or the emulator) and the provider key."""

    title: ClassVar[str] = "Push channel (APNs)"

    apns_key_path: str = ""
    """Path of the APNs token-auth signing key (.p8); this or ``HERALD_APNS_KEY`` enables the APNs sink."""
    apns_key: str = Field(default="", repr=False)
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

    @field_validator("apns_server")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and not value.rpartition(":")[2].isdigit():
            raise ValueError("HERALD_APNS_SERVER must be host:port")
        return value

    @field_validator("apns_max_in_flight")
    @classmethod
    def _bounded(cls, value: int) -> int:
        if not 1 <= value <= 1000:
            raise ValueError("HERALD_APNS_MAX_IN_FLIGHT must be from 1 to 1000")
        return value

    def _check(self) -> None:
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


class WebhookSettings(_Concern):
    """The webhook channel's signing secret and HTTP client."""

    title: ClassVar[str] = "Webhook channel"

    webhook_secret: str = Field(default="", repr=False)
    """Signing secret of the webhook channel (``whsec_`` + base64, or text of 24+ bytes); empty: no webhook sink."""
    webhook_timeout_seconds: Positive = 5.0
    """Longest one webhook POST may take (connection and answer)."""
    webhook_allow_loopback_http: bool = False
    """Accept ``http://`` webhook URLs to a loopback host (``herald dev``, tests); otherwise https only."""

    @field_validator("webhook_secret")
    @classmethod
    def _a_signing_key(cls, value: str) -> str:
        if value:
            try:
                signing_key(value)
            except InvalidWebhook as exc:
                raise ValueError(f"HERALD_WEBHOOK_SECRET: {exc}") from None
        return value


class DevSettings(_Concern):
    """``herald dev``: everything in one process, with local stand-ins for the channels."""

    title: ClassVar[str] = "herald dev"

    dev_mode: bool = False
    """True under ``herald dev``: enables dev-only conveniences such as token minting."""
    dev_kafka_port: int = 9092
    """Port of the embedded broker started by ``herald dev``."""
    dev_smtp_port: int = 0
    """Port of ``herald dev``'s SMTP capture server (0: a free port, printed at start-up)."""
    dev_apns_port: int = 0
    """Port of ``herald dev``'s APNs emulator (0: a free port, printed at start-up)."""
    dev_apns_inspect_port: int = 0
    """Port of the emulator's inspection API under ``herald dev`` (0: a free port)."""


class OperationsSettings(_Concern):
    """Logs and audit exports."""

    title: ClassVar[str] = "Operations"

    log_level: str = "INFO"
    """Root log level."""
    audit_hmac_key: str = Field(default="", repr=False)
    """Key of the HMAC-SHA256 signature on ``herald audit export`` manifests (empty: a digest manifest, unsigned)."""


CONCERNS: tuple[type[_Concern], ...] = (
    KafkaSettings,
    DatabaseSettings,
    HttpSettings,
    AuthSettings,
    GatewaySettings,
    AdmissionSettings,
    DeliverySettings,
    EmailSettings,
    ApnsSettings,
    WebhookSettings,
    DevSettings,
    OperationsSettings,
)
"""Every concern, in the order docs/configuration.md shows them."""


class Settings(  # Bases last to first: pydantic orders the fields from the last base (Kafka first).
    OperationsSettings,
    DevSettings,
    WebhookSettings,
    ApnsSettings,
    EmailSettings,
    DeliverySettings,
    AdmissionSettings,
    GatewaySettings,
    AuthSettings,
    HttpSettings,
    DatabaseSettings,
    KafkaSettings,
):
    """Every knob of Herald, all concerns in one flat object. Field ``foo_bar`` is read from ``HERALD_FOO_BAR``.

    ``Settings(foo_bar=...)`` checks each value (type and rules) and raises ``ConfigError``;
    ``from_env`` also checks the rules across settings (``validate``)."""

    extra: Mapping[str, str] = Field(default_factory=dict)
    """Always empty: an unrecognised ``HERALD_*`` variable is refused by ``from_env`` (kept for callers)."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every setting's name, by concern (``extra`` is not a setting)."""
        return tuple(name for _, names in SECTIONS for name in names)

    def to_env(self) -> dict[str, str]:
        """The ``HERALD_*`` variables that make ``from_env`` build these settings again
        (for starting a role as a process with exactly this configuration)."""
        out: dict[str, str] = {}
        for name in self.field_names():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[f"{PREFIX}{name.upper()}"] = str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then ``overrides``.

        Raises ``ConfigError`` for a ``HERALD_*`` name that is neither a setting nor in
        ``NOT_SETTINGS``, naming the closest valid one."""
        source = os.environ if env is None else env
        names = set(cls.field_names())
        unknown = sorted(
            key
            for key in source
            # ``herald_x`` too: environment names are case-sensitive, so it would be ignored.
            if key.upper().startswith(PREFIX)
            and key not in NOT_SETTINGS
            and not (key.startswith(PREFIX) and key[len(PREFIX) :].lower() in names)
        )
        if unknown:
            raise ConfigError(_unknown_message(unknown, [f"{PREFIX}{name.upper()}" for name in sorted(names)]))
        given = {key: value for key, value in source.items() if key.startswith(PREFIX) and key not in NOT_SETTINGS}
        values = _Variables(cls, given)()
        settings = cls(**(values | overrides))
        settings.validate()
        return settings

    def validate(self) -> None:  # type: ignore[override]  # BaseModel.validate is pydantic v1's, deprecated
        """Raise ``ConfigError`` with a clear message for impossible combinations of settings.

        Each value on its own was checked when the object was built."""
        for concern in CONCERNS:
            concern._check(self)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (each changed value checked as by the constructor)."""
        return type(self)(**(self._values() | changes))

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}


SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (concern.title, tuple(concern.model_fields)) for concern in CONCERNS
)
"""Every setting by concern, in the order docs/configuration.md shows them: each concern's class
declares its settings (one flat ``Settings`` keeps every caller's ``settings.foo`` working)."""


class _Variables(EnvSettingsSource):
    """pydantic-settings' reading of ``HERALD_*`` variables, from a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Matched case-insensitively (the settings' configuration), so names are lower-cased.
        return {key.lower(): value for key, value in self._variables.items()}


def _describe(fields: Mapping[str, FieldInfo], error: Any) -> str:
    """One of pydantic's errors as a sentence naming the variable."""
    name = str(error["loc"][0]) if error["loc"] else ""
    variable = f"{PREFIX}{name.upper()}"
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(context["error"])
    if kind == "greater_than_equal":
        return f"{variable} must be at least {context['ge']}"
    if kind == "less_than_equal":
        return f"{variable} must be at most {context['le']}"
    if kind == "greater_than" and context["gt"] == 0:
        return f"{variable} must be positive"
    if kind == "string_too_short":
        return f"{variable} must not be empty"
    if kind == "extra_forbidden" or name not in fields:
        return f"{name!r} is not a setting"
    field = fields[name]
    # A secret's value is never printed, even a mistyped one.
    shown = "" if field.repr is False else f"={error['input']!r}"
    return f"{variable}{shown} is not a valid {_type_name(field.annotation)}"


def _type_name(annotation: Any) -> str:
    """``int``, ``float``, ``bool`` (``bool | None`` too), ``str`` or ``tuple``."""
    arguments = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if getattr(annotation, "__origin__", None) is tuple:
        return "tuple"
    if arguments and not isinstance(annotation, type):
        return _type_name(arguments[0])
    return getattr(annotation, "__name__", str(annotation))


def _unknown_message(unknown: list[str], settings: list[str]) -> str:
    """One line: ``unknown setting HERALD_X (did you mean HERALD_Y?)``, every unknown name in it."""
    # Compared without the common prefix: it would make every name look close to every other.
    known = {name.removeprefix(PREFIX): name for name in [*settings, *sorted(NOT_SETTINGS)]}
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key[len(PREFIX) :].upper(), list(known), n=1, cutoff=0.6)
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
