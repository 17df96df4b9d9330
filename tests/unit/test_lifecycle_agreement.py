"""The worker's device registry and the ``devices`` read model agree, whatever the log holds.

Both fold device events with ``engine.device_lifecycle.evolve``: the registry on plain
dicts standing in for its Faust tables (the tables are mappings), the read model on a
real SQLite database through ``projections.devices.apply_device``. For any sequence of
registrations, unregistrations and invalidations (clocks skewed, APNs' ``invalid_since``
before or after the registration) of devices of two platforms (the same token strings on
both: a device is its platform and its token), every device's owner and status is the
same on both sides; replaying a log gives the same state, and folding every event twice (a worker
re-reading what it folded before a crash) gives the state of folding it once.

The notification fold (``engine.notification_status``) is checked the same way: replay
is deterministic, and a record that reached the log twice changes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.device_lifecycle import ACTIVE, UNREGISTERED, device_key, key_of
from engine.devices import ActiveDevice, decide_registration
from engine.notification_status import States, fold
from projections.database import create_engine, migrate
from projections.devices import apply_device
from projections.models import DeviceRow
from schemas.envelope import Envelope
from schemas.events import (
    DeliveryDeferred,
    DeliveryFailed,
    DeliveryRetryScheduled,
    DeliverySucceeded,
    DeviceInvalidated,
    DeviceRegistered,
    DeviceUnregistered,
    Event,
    NotificationAccepted,
    NotificationDeleted,
    NotificationExpired,
    NotificationRead,
)
from schemas.ids import uuid7
from streams.device_registry import DeviceRegistry, entry_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = ("alice", "bob", "carol")
TOKENS = tuple(f"{i:064x}" for i in range(4))
PLATFORMS = ("ios", "pageros")
"""The folds take any platform string: no decoding here, so the test platform needs no declaring."""
Step = tuple[str, str, str, str, int, int | None]
"""(what, user, platform, token, clock skew of the event time, APNs' invalid_since relative to it)."""


def _env(event: Event, at: datetime) -> Envelope:
    return Envelope(id=uuid7(), source="tests", time=at, data=event, subject=None, userid=event.user_id)


def _registry(cap: int) -> DeviceRegistry:
    registry = DeviceRegistry(max_devices=cap)
    registry.tokens, registry.index, registry.contacts = {}, {}, {}
    return registry


@dataclass(frozen=True)
class Row:
    """What REST shows of a token."""

    owner: str
    status: str
    registered_at: datetime


class Sides:
    """The registry and the read model, fed the same log in the same order."""

    def __init__(self, conn: AsyncConnection, cap: int) -> None:
        self.conn, self.registry, self.log = conn, _registry(cap), list[Envelope]()

    async def append(self, env: Envelope, *, times: int = 1) -> None:
        """``env`` reaches the log; both sides fold it (and what the registry appends in turn)."""
        self.log.append(env)
        for _ in range(times):
            evicted = self.registry.apply(env)
            await apply_device(self.conn, env)
            for more in evicted:
                await self.append(more, times=times)

    async def rows(self) -> dict[str, Row]:
        """What REST shows, by ``device_key`` (an ios device's key is its token)."""
        rows = (await self.conn.execute(select(DeviceRow))).all()
        return {device_key(r.platform, r.device_token): Row(r.user_id, r.status, r.registered_at) for r in rows}

    def registry_view(self, user: str, key: str) -> Row | None:
        raw = self.registry.tokens.get(entry_key(user, key))
        if raw is None:
            return None
        return Row(user, raw["state"], datetime.fromisoformat(raw["registered_at"].replace("Z", "+00:00")))


async def _with_database(body, url: str | None = None):  # type: ignore[no-untyped-def]
    """Run ``body`` on a connection to a migrated database (a fresh SQLite file unless ``url``)."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url or f"sqlite+aiosqlite:///{Path(tmp) / 'devices.db'}")
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                return await body(conn)
        finally:
            await engine.dispose()


_STEP = st.tuples(
    st.sampled_from(["register", "unregister", "invalidate"]),
    st.sampled_from(USERS),
    st.sampled_from(PLATFORMS),
    st.sampled_from(TOKENS),
    st.integers(-3, 3),
    st.one_of(st.none(), st.integers(-5, 5)),
)
_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raw_events(steps: list[Step]) -> list[tuple[Event, datetime]]:
    out: list[tuple[Event, datetime]] = []
    for i, (kind, user, platform, token, skew, since) in enumerate(steps):
        at = T0 + timedelta(seconds=2 * i + skew)  # clocks skewed: times may invert, across users or not
        event: Event
        if kind == "register":
            event = DeviceRegistered(user, token, platform=platform)
        elif kind == "unregister":
            event = DeviceUnregistered(user, token, platform=platform)
        else:
            invalid_since = None if since is None else at + timedelta(seconds=since)
            event = DeviceInvalidated(user, token, "Unregistered", platform=platform, invalid_since=invalid_since)
        out.append((event, at))
    return out


@_SETTINGS
@given(st.lists(_STEP, max_size=40), st.integers(1, 3))
def test_for_any_log_rest_shows_each_token_as_its_owner_s_registry_entry(steps: list[Step], cap: int) -> None:
    async def body(conn: AsyncConnection) -> None:
        sides = Sides(conn, cap)
        for event, at in _raw_events(steps):
            await sides.append(_env(event, at))
        for key, row in (await sides.rows()).items():
            assert sides.registry_view(row.owner, key) == row, key

    asyncio.run(_with_database(body))


async def _api_log(sides: Sides, steps: list[Step], cap: int, times: int) -> None:
    """The log as the API and the sinks write it: a registration unregisters the previous owner first."""
    for event, at in _raw_events(steps):
        if isinstance(event, DeviceRegistered):
            rows = await sides.rows()
            owner = rows.get(key_of(event))
            mine = [
                ActiveDevice(t, r.registered_at, p)
                for p in PLATFORMS
                for t in TOKENS
                if (r := rows.get(device_key(p, t))) is not None and (r.owner, r.status) == (event.user_id, ACTIVE)
            ]
            previous = owner.owner if owner is not None and owner.status == ACTIVE else None
            decision = decide_registration(event, previous_owner=previous, active=mine, cap=cap)
            for e in decision.events:
                await sides.append(_env(e, at), times=times)
        elif isinstance(event, DeviceUnregistered):
            owner = (await sides.rows()).get(key_of(event))
            if owner is not None and owner.status == ACTIVE:  # DELETE /api/devices unregisters the owner's
                gone = DeviceUnregistered(owner.owner, event.device_token, platform=event.platform)
                await sides.append(_env(gone, at), times=times)
        else:  # the APNs sink reports a token it pushed to for one of its users
            await sides.append(_env(event, at), times=times)


def _pushed_to(sides: Sides, user: str) -> list[str]:
    """The devices (``device_key``) the sinks of every platform push to for ``user``."""
    return sorted(device_key(p, t) for p in PLATFORMS for t in sides.registry.active_tokens(user, p))


async def _state(conn: AsyncConnection, sides: Sides) -> tuple[dict[str, Row], dict[str, list[str]]]:
    return await sides.rows(), {u: _pushed_to(sides, u) for u in USERS}


@_SETTINGS
@given(st.lists(_STEP, max_size=40), st.integers(1, 3))
def test_with_the_api_s_log_the_sink_pushes_to_exactly_the_tokens_rest_shows_active(
    steps: list[Step], cap: int
) -> None:
    async def body(conn: AsyncConnection) -> None:
        sides = Sides(conn, cap)
        await _api_log(sides, steps, cap, times=1)
        rows = await sides.rows()
        for user in USERS:
            rest = sorted(k for k, r in rows.items() if r.owner == user and r.status == ACTIVE)
            assert _pushed_to(sides, user) == rest, user
            assert len(rest) <= cap

    asyncio.run(_with_database(body))


@_SETTINGS
@given(st.lists(_STEP, max_size=30), st.integers(1, 3))
def test_replaying_the_log_gives_the_same_state_and_folding_twice_is_folding_once(steps: list[Step], cap: int) -> None:
    async def body(conn: AsyncConnection) -> None:
        once = Sides(conn, cap)
        await _api_log(once, steps, cap, times=1)
        expected = await _state(conn, once)
        log = once.log
        await conn.execute(DeviceRow.__table__.delete())
        replayed = Sides(conn, cap)
        for env in log:
            replayed.log.append(env)
            replayed.registry.apply(env)  # the evicted events are in the log already
            await apply_device(conn, env)
        assert await _state(conn, replayed) == expected
        await conn.execute(DeviceRow.__table__.delete())
        twice = Sides(conn, cap)
        await _api_log(twice, steps, cap, times=2)
        assert await _state(conn, twice) == expected

    asyncio.run(_with_database(body))


# -- the cases where the two folds used to disagree (each failed on the read model's old rules)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str | None:
    """The read model's database: SQLite (``herald dev``) or Postgres (deployments: rows locked)."""
    return request.getfixturevalue("database_url") if request.param == "postgresql" else None


async def _both(events: list[tuple[Event, datetime]], url: str | None) -> tuple[dict[str, Row], Sides]:
    async def body(conn: AsyncConnection) -> tuple[dict[str, Row], Sides]:
        sides = Sides(conn, cap=20)
        for event, at in events:
            await sides.append(_env(event, at))
        return await sides.rows(), sides

    result: tuple[dict[str, Row], Sides] = await _with_database(body, url)
    return result


async def test_a_token_re_registered_after_apns_saw_it_die_is_active_in_rest_too(db: str | None) -> None:
    token = secrets.token_hex(32)
    rows, sides = await _both(
        [
            (DeviceRegistered("alice", token), T0),
            (DeviceRegistered("alice", token), T0 + timedelta(minutes=5)),  # reinstalled
            # the report of a push to the old install arrives later; APNs dates the death before
            (
                DeviceInvalidated("alice", token, "Unregistered", invalid_since=T0 + timedelta(minutes=1)),
                T0 + timedelta(minutes=6),
            ),
        ],
        db,
    )
    assert sides.registry.active_tokens("alice") == [token]
    assert rows[token].status == ACTIVE  # was "invalid": REST showed dead a token the sink pushed to


async def test_an_invalidation_reported_for_the_previous_owner_leaves_the_new_owner_s_token_active(
    db: str | None,
) -> None:
    token = secrets.token_hex(32)
    rows, sides = await _both(
        [
            (DeviceRegistered("alice", token), T0),
            (DeviceUnregistered("alice", token), T0 + timedelta(minutes=1)),  # the phone is sold
            (DeviceRegistered("bob", token), T0 + timedelta(minutes=1)),
            # a push for alice that was in flight fails; the report names alice
            (DeviceInvalidated("alice", token, "BadDeviceToken"), T0 + timedelta(minutes=2)),
        ],
        db,
    )
    assert sides.registry.active_tokens("bob") == [token]
    assert (rows[token].owner, rows[token].status) == ("bob", ACTIVE)  # was "invalid" in REST only


async def test_an_unregistration_stamped_before_its_registration_still_unregisters(db: str | None) -> None:
    token = secrets.token_hex(32)
    rows, sides = await _both(
        [
            (DeviceRegistered("alice", token), T0 + timedelta(seconds=2)),
            # DELETE through another API replica whose clock is two seconds behind
            (DeviceUnregistered("alice", token), T0 + timedelta(seconds=1)),
        ],
        db,
    )
    assert sides.registry.active_tokens("alice") == []
    assert rows[token].status == UNREGISTERED  # was still "active" in REST: its time was older


# -- the notification fold

_WHEN = st.integers(0, 50).map(lambda s: T0 + timedelta(seconds=s))
_NIDS = st.sampled_from(["n1", "n2"])
_CHANNELS = st.sampled_from(["websocket", "email", "apns"])


def _notification_event(draw: st.DrawFn) -> Event:
    nid = draw(_NIDS)
    kind = draw(st.integers(0, 8))
    ch = draw(_CHANNELS)
    if kind == 0:
        return NotificationAccepted(
            notification_id=nid,
            user_id="alice",
            title="t",
            body="b",
            priority="high",
            channels=("websocket", "email"),
            category="",
            data={},
            requested_at=T0,
        )
    if kind == 1:
        attempt = draw(st.integers(1, 3))
        return DeliverySucceeded(nid, "alice", ch, target="t", latency_ms=1.0, attempt=attempt)
    if kind == 2:
        attempt, retriable = draw(st.integers(1, 3)), draw(st.booleans())
        return DeliveryFailed(nid, "alice", ch, target="t", attempt=attempt, retriable=retriable, error="e")
    if kind == 3:
        return DeliveryRetryScheduled(nid, "alice", ch, target="t", attempt=2, due_at=T0, delay_seconds=1.0)
    if kind == 4:
        return DeliveryDeferred(notification_id=nid, user_id="alice", channel=ch, reason="offline")
    if kind == 5:
        return NotificationExpired(nid, "alice", expires_at=T0, channel=draw(st.one_of(st.none(), _CHANNELS)))
    if kind == 6:
        return NotificationRead(notification_id=nid, user_id="alice")
    return NotificationDeleted(notification_id=nid, user_id="alice")


@st.composite
def _notification_log(draw: st.DrawFn) -> list[Envelope]:
    return [_env(_notification_event(draw), draw(_WHEN)) for _ in range(draw(st.integers(0, 25)))]


def _fold_all(log: list[Envelope], times: int = 1) -> States:
    states: States = {}
    for env in log:
        for _ in range(times):
            fold(states, env)
    return states


@settings(max_examples=200, deadline=None)
@given(_notification_log())
def test_the_notification_fold_replays_deterministically_and_a_duplicate_record_changes_nothing(
    log: list[Envelope],
) -> None:
    once = _fold_all(log)
    assert _fold_all(copy.deepcopy(log)) == once
    assert _fold_all(log, times=2) == once
