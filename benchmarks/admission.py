"""Admission cost per request: a fresh user vs a user with K requests inside the dedupe window.

Measures the worker's admission step as ingest runs it (``AdmissionStore.admit``: the
common case, keys unused and the id not in the rate window, decided on the window in place;
anything else read from the key entries, ``decide_admission``, ``evolve``, what changed written) over a
dict standing in for the Faust table, and the changelog bytes that step writes (what a
table write sends to Kafka: the JSON of the changed entries). Baseline in the same run:
the same user measured fresh. For contrast it also runs the previous design (one record
per user holding every key of the window, decoded and re-encoded on each request).

It also prints the CPU and the Python function calls (cProfile's count, which the machine's
load does not move) of ingest's whole in-process step per request, as the throughput
benchmark's burst feeds it: decode and validate the request bytes, ``decide_request``,
the admission step, encode the outcome (the Kafka sends and the table's changelog aside).

    uv run python -m benchmarks.admission [--keys 4000] [--requests 2000] [--ingest-requests 10000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from engine.admission import Admission, AdmissionPolicy, decide_admission, evolve
from engine.notification import decide_request
from engine.priority import Priority
from engine.rate_limit import default_limits
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationRequested
from streams.admission_store import AdmissionStore

POLICY = AdmissionPolicy(default_limits(100, 50, 20, 3600), dedupe_window_seconds=24 * 3600)
START = datetime(2026, 12, 1, tzinfo=UTC)


def accepted(rid: str, at: datetime) -> Envelope:
    req = Envelope(
        id=rid,
        source="bench",
        time=at,
        data=NotificationRequested(user_id="alice", title="t", idempotency_key=f"k-{rid}"),
    )
    [env] = decide_request(req, topic_priority=Priority.HIGH, now=at)
    return env


class Recording(dict[str, object]):
    """A dict table that counts the changelog bytes its writes would send."""

    written = 0
    writes = 0
    """Acceptances: writes of a notification id's own entry (or of the user's record)."""

    def __setitem__(self, key: str, value: object) -> None:
        self.written += len(json.dumps(key)) + len(json.dumps(value))
        if key == "alice" or (isinstance(value, list) and value[3]):
            self.writes += 1
        super().__setitem__(key, value)


def store_step(store: AdmissionStore, env: Envelope, source: str) -> None:
    """The step as ``streams.ingest`` runs it: expire, then ``AdmissionStore.admit``."""
    data = env.data
    assert isinstance(data, NotificationAccepted)
    store.expire(0, now=env.time.timestamp())
    store.admit(env, data, source=source, partition=0, now=env.time)


def record_step(table: Recording, env: Envelope, source: str) -> None:
    """The previous design: the user's whole state is one record."""
    state = Admission.from_json(table.get("alice"))  # type: ignore[arg-type]
    outcome = decide_admission(state, env, source=source, policy=POLICY, now=env.time)
    after = evolve(state, outcome, source=source, policy=POLICY)
    if after != state:
        table["alice"] = after.to_json()


def measure(step: str, prior_keys: int, requests: int) -> tuple[float, float, float]:
    """(us per request, changelog bytes per request, per acceptance) after ``prior_keys`` requests."""
    table = Recording()
    store = AdmissionStore(table, POLICY)

    def run_store(env: Envelope, src: str) -> None:
        store_step(store, env, src)

    def run_record(env: Envelope, src: str) -> None:
        record_step(table, env, src)

    run = run_store if step == "store" else run_record
    spacing = (20 * 3600) / max(1, prior_keys)  # the prior requests spread over 20 h of the 24 h window
    for i in range(prior_keys):
        run(accepted(f"p{i}", START + timedelta(seconds=i * spacing)), f"t/0/{i}")
    now = START + timedelta(hours=20, seconds=1)
    envs = [accepted(f"m{i}", now + timedelta(milliseconds=i)) for i in range(requests)]
    table.written = 0
    table.writes = 0
    started = time.perf_counter()
    for i, env in enumerate(envs):
        run(env, f"t/0/{prior_keys + i}")
    elapsed = time.perf_counter() - started
    acceptances = max(1, table.writes)
    return elapsed / requests * 1e6, table.written / requests, table.written / acceptances


def ingest_step(requests: int, users: int = 200, limit: int = 500) -> tuple[float, float]:
    """(CPU us, Python calls) per request of ingest's in-process step, over a burst round-robin over ``users``.

    Requests as ``benchmarks.throughput`` sends them (no idempotency key), with its rate limit,
    so each user's rate window grows to ``requests / users`` admissions.
    """
    policy = AdmissionPolicy(default_limits(limit, 50, 20, 3600), dedupe_window_seconds=24 * 3600)
    raws = [
        json.dumps(
            {
                "specversion": "1.0",
                "type": "notification.requested",
                "id": str(uuid.uuid4()),
                "source": "bench",
                "data": {"user_id": f"user-{i % users}", "title": f"burst {i}", "body": "x" * 200, "data": {"n": 1}},
            }
        ).encode()
        for i in range(requests)
    ]

    def burst() -> None:
        store = AdmissionStore({}, policy)
        for i, raw in enumerate(raws):
            request = decode(raw, max_bytes=1 << 20)
            now = datetime.now(UTC)
            [decided] = decide_request(request, topic_priority=Priority.HIGH, now=now)
            data = decided.data
            assert isinstance(data, NotificationAccepted)
            source = f"herald.requests.high/0/{i}"
            store.expire(0, now=now.timestamp())
            encode(store.admit(decided, data, source=source, partition=0, now=now))

    started = time.process_time()
    burst()
    cpu = time.process_time() - started
    profile = cProfile.Profile()
    profile.runcall(burst)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return cpu / requests * 1e6, calls / requests


Row = tuple[str, str, str, str, str]


def summary_rows(args: argparse.Namespace) -> list[Row]:
    """The ``make bench`` rows: busy user vs fresh user, cost and changelog bytes per acceptance."""
    med = run(args)
    fresh, busy = med[("store", 0)], med[("store", args.keys)]
    return [
        (
            f"admission, user with {args.keys:,} requests in the dedupe window",
            f"{busy[0]:.1f} us/request",
            f"{fresh[0]:.1f} us (fresh user)",
            f"{busy[0] / fresh[0]:.2f}x",
            "<= 2x",
        ),
        (
            "admission, changelog bytes per acceptance",
            f"{busy[2]:.0f} B",
            f"{fresh[2]:.0f} B (fresh user)",
            f"{busy[2] / fresh[2]:.2f}x",
            "does not grow",
        ),
    ]


def run(args: argparse.Namespace) -> dict[tuple[str, int], tuple[float, float, float]]:
    """Median (us per request, bytes per request, bytes per acceptance) by (design, prior keys)."""
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for step in ("store", "record"):
            for prior in (0, args.keys):
                results.setdefault((step, prior), []).append(measure(step, prior, args.requests))
    return {
        k: (
            statistics.median(u for u, _, _ in v),
            statistics.median(b for _, b, _ in v),
            statistics.median(a for _, _, a in v),
        )
        for k, v in results.items()
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=4000, help="requests the busy user made inside the window")
    p.add_argument("--requests", type=int, default=2000, help="requests measured")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ingest-requests", type=int, default=10_000, help="burst for the ingest step's cost (0: skip)")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.ingest_requests:
        cpu, calls = ingest_step(args.ingest_requests)
        print(
            f"ingest step (decode, decide, admission, encode), burst of {args.ingest_requests:,} over 200 users: "
            f"{cpu:.1f} us CPU and {calls:.0f} Python calls per request"
        )
    med = run(args)
    for step, name in (("store", "herald (one entry per key)"), ("record", "previous (one record per user)")):
        fresh, busy = med[(step, 0)], med[(step, args.keys)]
        print(
            f"{name:<34} fresh user {fresh[0]:7.1f} us {fresh[2]:6.0f} B/acceptance | {args.keys:,} keys in window "
            f"{busy[0]:7.1f} us {busy[2]:6.0f} B/acceptance | cost ratio {busy[0] / fresh[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
