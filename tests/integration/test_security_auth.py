"""Authentication and the API surface (issue 10, items 4, 5, 13, 14 and 15).

Start-up refusals are checked through the real ``herald`` command in a subprocess; the
HTTP behaviour against a running API (real broker, Postgres, Redis).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import jwt
import psycopg
import pytest

from api.auth import mint_token
from engine.settings import DEV_JWT_SECRET, Settings
from engine.topics import TopicNames
from herald.broker import free_port
from herald.stack import Stack, run_stack
from tests.support.api import PG_ADMIN_URL, isolated_settings, own_database
from tests.support.event_log import Log, append
from tests.support.processes import clean_env
from tests.support.settings import TEST_JWT_SECRET
from tests.support.waiting import eventually

ROOT = Path(__file__).parents[2]
HUNDRED_YEARS = 100 * 365 * 24 * 3600


def _env(**herald: str) -> dict[str, str]:
    """The process environment without any ``HERALD_*`` variable of this shell, plus ``herald``."""
    env = clean_env()
    env.update({f"HERALD_{k.upper()}": v for k, v in herald.items()})
    return env


def _herald(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# --- item 4: no role but `herald dev` starts with the dev secret -----------------------------------------


@pytest.mark.parametrize("role", ["api", "worker", "projector"])
@pytest.mark.parametrize(
    ("case", "env", "names"),
    [
        ("no environment", {}, "HERALD_JWT_SECRET"),
        ("the dev secret", {"jwt_secret": DEV_JWT_SECRET}, "HERALD_JWT_SECRET"),
        ("RS256 without a key", {"jwt_algorithms": "RS256"}, "HERALD_JWT_PUBLIC_KEY or HERALD_JWT_JWKS_URL"),
        ("dev mode", {"jwt_secret": TEST_JWT_SECRET, "dev_mode": "true"}, "HERALD_DEV_MODE"),
    ],
)
def test_production_roles_refuse_to_start_without_their_own_key(
    role: str, case: str, env: dict[str, str], names: str
) -> None:
    # Pointed at a closed port: a role that wrongly starts fails differently, or hangs until the timeout.
    closed = f"127.0.0.1:{free_port()}"
    result = _herald(role, env=_env(kafka_bootstrap=closed, **env), timeout=30)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (case, result.stderr)
    assert lines[0].startswith("herald: configuration error:") and names in lines[0], case
    assert DEV_JWT_SECRET not in result.stderr
    assert result.stdout == ""


def test_herald_token_signs_with_the_configured_secret_and_audience() -> None:
    result = _herald("token", "alice", "--scope", "admin", env=_env(jwt_secret=TEST_JWT_SECRET))
    assert (result.returncode, result.stderr) == (0, "")
    claims = jwt.decode(result.stdout.strip(), TEST_JWT_SECRET, algorithms=["HS256"], audience="herald")
    assert (claims["sub"], claims["scope"], claims["exp"] - claims["iat"]) == ("alice", "admin", 24 * 3600)


def test_herald_token_without_a_secret_says_it_is_for_herald_dev_only() -> None:
    result = _herald("token", "alice", env=_env())
    assert result.returncode == 0
    jwt.decode(result.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"], audience="herald")
    assert "works only with `herald dev`" in result.stderr


def test_herald_token_refuses_a_lifetime_over_the_maximum() -> None:
    result = _herald("token", "alice", "--ttl", str(HUNDRED_YEARS), env=_env(jwt_secret=TEST_JWT_SECRET))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "token lifetime must be 1 to 86400 seconds" in result.stderr


# --- a configured `herald api`: starts, and /metrics only on the internal port (item 15) --------------------


@pytest.fixture(scope="module")
def api_process(
    kafka_bootstrap: str, redis_url: str, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``herald api`` with its own secret and ``HERALD_METRICS_PORT``: (API base, metrics base)."""
    with own_database("herald_auth") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        port, metrics_port = free_port(), free_port()
        env = _env(
            kafka_bootstrap=settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            database_url=url,
            redis_url=redis_url,
            http_port=str(port),
            metrics_port=str(metrics_port),
            jwt_secret=TEST_JWT_SECRET,
            producer_max_batch_size="1",
            kafka_fetch_max_wait_ms="20",
        )
        with (output_dir / "security-auth-api.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "herald.cli", "api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def test_metrics_on_the_internal_port_only(api_process: tuple[str, str]) -> None:
    api, metrics = api_process
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            try:
                async with http.get(api + "/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(ready, timeout=60, interval=0.2, what="herald api with its own secret ready")
        async with http.get(api + "/metrics") as resp:
            assert (resp.status, resp.content_type) == (404, "application/problem+json")
        async with http.get(metrics + "/metrics") as resp:
            assert resp.status == 200
            assert "python_info" in await resp.text()
        token = jwt.encode(_claims(sub="alice"), TEST_JWT_SECRET, algorithm="HS256")
        async with http.get(api + "/api/notifications", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200


# --- HTTP behaviour against a running API -----------------------------------------------------------------


@pytest.fixture(scope="module")
async def running(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings, str]]:
    """API and projector on their own database, with one of alice's notifications and two of bob's."""
    with own_database("herald_auth") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings, worker=False) as stack:
            log = Log()
            ids = [log.accepted("alice"), log.accepted("bob"), log.accepted("bob")]
            await append(kafka_bootstrap, TopicNames(settings.topic_prefix).events, log.envelopes)
            from projections.queries import NotificationQueries

            queries = NotificationQueries(stack.engine)  # type: ignore[arg-type]

            async def projected() -> bool:
                return all([await queries.exists(i) for i in ids])

            await eventually(projected, what="the seeded notifications")
            yield stack, settings, f"http://127.0.0.1:{stack.http_port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _claims(*, sub: str = "bob", lifetime: int = 600, **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": sub, "iss": "herald", "aud": "herald", "iat": now, "exp": now + lifetime, **extra}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_in_the_url_is_refused_on_rest(running: tuple[Stack, Settings, str], http) -> None:  # type: ignore[no-untyped-def]
    _, settings, base = running
    token = mint_token(settings, "bob")
    for path in ("/api/notifications", "/api/notifications/stats", "/api/devices", "/api/presence/bob"):
        for headers in ({}, _bearer(token)):
            async with http.get(f"{base}{path}?token={token}", headers=headers) as resp:
                assert (resp.status, resp.content_type) == (400, "application/problem+json"), path
                assert "/ws/notifications" in (await resp.json())["detail"]
    # The same token in the header works, and the pagination link carries no credential.
    async with http.get(f"{base}/api/notifications?limit=1", headers=_bearer(token)) as resp:
        page = await resp.json()
    assert resp.status == 200
    assert page["next"] is not None and "token" not in page["next"]
    async with http.get(base + page["next"], headers=_bearer(token)) as resp:
        assert (resp.status, len((await resp.json())["results"])) == (200, 1)


async def test_token_in_the_url_still_opens_a_websocket(running: tuple[Stack, Settings, str], http) -> None:  # type: ignore[no-untyped-def]
    _, settings, base = running
    async with http.ws_connect(f"{base}/ws/notifications?token={mint_token(settings, 'bob')}") as ws:
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "missed_notifications"  # the replay of what bob missed: he is connected


async def test_audience_and_lifetime_are_required(running: tuple[Stack, Settings, str], http) -> None:  # type: ignore[no-untyped-def]
    _, settings, base = running
    secret = settings.jwt_secret
    without = {name: {k: v for k, v in _claims().items() if k != name} for name in ("aud", "iat", "exp")}
    refused = {
        "a 100-year token": jwt.encode(_claims(lifetime=HUNDRED_YEARS), secret, algorithm="HS256"),
        "one second over the maximum": jwt.encode(_claims(lifetime=24 * 3600 + 1), secret, algorithm="HS256"),
        "no audience": jwt.encode(without["aud"], secret, algorithm="HS256"),
        "another audience": jwt.encode(_claims(aud="billing"), secret, algorithm="HS256"),
        "no iat": jwt.encode(without["iat"], secret, algorithm="HS256"),
        "no exp": jwt.encode(without["exp"], secret, algorithm="HS256"),
        "iat in the future": jwt.encode(
            {**_claims(), "iat": int(time.time()) + 3600, "exp": int(time.time()) + 4000}, secret, algorithm="HS256"
        ),
    }
    for case, token in refused.items():
        async with http.get(base + "/api/notifications", headers=_bearer(token)) as resp:
            assert (resp.status, resp.content_type) == (401, "application/problem+json"), case
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), case
        async with http.get(f"{base}/ws/notifications?token={token}") as resp:
            assert resp.status == 401, case  # refused before the upgrade
    async with http.get(base + "/api/notifications", headers=_bearer(refused["a 100-year token"])) as resp:
        assert "lifetime" in (await resp.json())["detail"]
    for case, token in {
        "the maximum lifetime": jwt.encode(_claims(lifetime=24 * 3600), secret, algorithm="HS256"),
        "an audience list naming herald": jwt.encode(_claims(aud=["billing", "herald"]), secret, algorithm="HS256"),
        "a minted token": mint_token(settings, "bob"),
    }.items():
        async with http.get(base + "/api/notifications", headers=_bearer(token)) as resp:
            assert resp.status == 200, case


async def test_security_headers_on_every_response(running: tuple[Stack, Settings, str], http) -> None:  # type: ignore[no-untyped-def]
    base = running[2]
    for method, path, status in (
        ("GET", "/", 200),
        ("GET", "/api/docs", 200),
        ("GET", "/api/docs/apidocs.js", 200),
        ("GET", "/static/demo.js", 200),
        ("GET", "/api/openapi.json", 200),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/api/notifications", 401),
        ("GET", "/no/such/page", 404),
        ("POST", "/api/dev/token", 404),  # not under `herald dev`: the route does not exist
    ):
        async with http.request(method, base + path) as resp:
            assert resp.status == status, path
            csp = resp.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert resp.headers["Referrer-Policy"] == "no-referrer", path
            assert resp.headers["X-Frame-Options"] == "DENY", path
    # The metrics port is not configured here: the API port serves them, with the same headers.
    async with http.get(base + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


# --- item 5: the dev token endpoint, loopback clients only -------------------------------------------------


def _outbound_address() -> str:
    """This host's address on its network interface (not loopback); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        address: str = probe.getsockname()[0]
    assert not address.startswith("127."), "the test needs a non-loopback interface"
    return address


async def test_dev_token_endpoint_answers_loopback_clients_only(kafka_bootstrap: str, redis_url: str, http) -> None:  # type: ignore[no-untyped-def]
    with own_database("herald_auth") as url:
        settings = isolated_settings(kafka_bootstrap, url, redis_url, dev_mode=True, http_host="0.0.0.0")  # noqa: S104
        async with run_stack(settings, worker=False, projector=False) as stack:
            loopback = f"http://127.0.0.1:{stack.http_port}/api/dev/token"
            async with http.post(loopback, json={"user_id": "alice"}) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            assert jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience="herald")["sub"] == "alice"
            network = f"http://{_outbound_address()}:{stack.http_port}/api/dev/token"
            async with http.post(network, json={"user_id": "alice"}) as resp:
                assert (resp.status, resp.content_type) == (403, "application/problem+json")
                body = await resp.json()
            assert "loopback" in body["detail"] and "token" not in body


# --- item 15: readiness without internals ------------------------------------------------------------------


async def test_readiness_names_the_failed_check_without_internals(
    kafka_bootstrap: str,
    redis_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with own_database("herald_auth_gone") as url:
        name = url.rsplit("/", 1)[1]
        settings = isolated_settings(kafka_bootstrap, url, redis_url)
        async with run_stack(settings, worker=False, projector=False) as stack:
            base = f"http://127.0.0.1:{stack.http_port}"
            async with http.get(base + "/readyz") as resp:
                assert resp.status == 200
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:  # a real outage: the database is gone
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            async with http.get(base + "/readyz") as resp:
                assert (resp.status, resp.content_type) == (503, "application/problem+json")
                text = await resp.text()
                body = await resp.json()
            assert body["failed"] == ["database"]
            assert body["detail"] == "not ready"
            for internal in (name, "Error", "postgres", "127.0.0.1", "5432"):
                assert internal not in text, internal
    # ... but the log has them, for the operator.
    logged = [r for r in caplog.records if r.getMessage() == "readiness check failed"]
    assert logged and getattr(logged[0], "check", None) == "database"
