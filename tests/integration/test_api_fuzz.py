"""Schemathesis against the served ``/api/openapi.json``: the API keeps the contract it documents.

``test_api_contract.py`` checks that every route is documented and keeps its hand-written
Hypothesis generator (it sends the ids of seeded notifications, its own and another user's, and
service, garbage and missing tokens); this module lets a well-kept tool generate and judge.
Schemathesis reads the document the running API serves, builds valid and invalid requests for
every operation (parameters, bodies, tokens), sends them to a real stack (Tansu broker, Postgres,
Redis) with a user token and with an admin token, and checks each answer: no 5xx, a documented
status, a documented content type, headers and a body that validate against the document. Its
own runner adds the boundary cases of every parameter (coverage phase) and checks that valid
requests are accepted; one test holds every write to the 429 of the per-user write limit.
Bounded: ``HERALD_FUZZ_EXAMPLES`` examples per token (60; the module takes about 30 s);
deterministic when ``CI`` is set (Hypothesis seed ``HERALD_FUZZ_SEED``, default 13; the
coverage phase is deterministic), so a CI failure replays locally with ``CI=1``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from api.auth import SCOPE_ADMIN, mint_token
from api.rest.openapi import DEV_ONLY_PATHS
from api.rest.write_limit import WRITE_METHODS
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.api import isolated_settings, own_database
from tests.support.event_log import Log, append
from tests.support.waiting import eventually

USER = "fuzz-user"
EXAMPLES = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("HERALD_FUZZ_SEED", "13"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
]

OFF_IN_RUNNER = ["negative_data_rejection", "allow_header_conformance", "object_level_authorization"]


@dataclass
class Served:
    stack: Stack
    settings: Settings
    base: str
    schema: Any  # schemathesis's OpenApiSchema of the served document
    strategy: st.SearchStrategy[Any]


@pytest.fixture(scope="module")
async def served(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[Served]:
    with own_database("herald_fuzz") as url:
        # No worker: writes are published but never accepted, so they answer 202 after a short wait.
        app_settings = isolated_settings(kafka_bootstrap, url, redis_url, read_your_writes_timeout=0.2)
        async with run_stack(app_settings, worker=False) as stack:
            log = Log()
            mine = log.accepted(USER, title="seed", category="c")
            log.succeeded(USER, mine, latency_ms=12.0)
            log.accepted("someone-else")
            await append(kafka_bootstrap, TopicNames(app_settings.topic_prefix).events, log.envelopes)
            assert stack.engine is not None
            from projections.queries import NotificationQueries

            q = NotificationQueries(stack.engine)

            async def seeded() -> bool:
                return await q.exists(mine)

            await eventually(seeded, what="seed notification")
            base = f"http://127.0.0.1:{stack.http_port}"
            async with aiohttp.ClientSession() as http, http.get(base + "/api/openapi.json") as resp:
                assert resp.status == 200
                document = await resp.json()
            for path in DEV_ONLY_PATHS:  # served only by `herald dev`
                document["paths"].pop(path, None)
            schema = schemathesis.openapi.from_dict(document)
            strategy = st.one_of(
                schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
            )
            yield Served(stack, app_settings, base, schema, strategy)


def _call(case: Any, base: str, token: str) -> Any:
    """Send ``case`` and run the checks on its answer (raises with a curl line to reproduce)."""
    with requests.Session() as session:
        return case.call_and_validate(
            base_url=base, session=session, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=10
        )


def _seeded(test: Any) -> Any:
    return seed(SEED)(test) if os.environ.get("CI") else test


@pytest.mark.parametrize("who", ["user", "admin"])
@_seeded
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # a failure replays from its seed (printed), not from a local example store
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(data=st.data())
async def test_every_answer_matches_the_served_document(served: Served, who: str, data: st.DataObject) -> None:
    """Random valid and invalid requests to any operation: every answer is one the document describes."""
    if who == "admin":
        token = mint_token(served.settings, "ops", scopes=(SCOPE_ADMIN,))
    else:
        token = mint_token(served.settings, USER)
    case = data.draw(served.strategy)
    await asyncio.to_thread(_call, case, served.base, token)


@pytest.mark.parametrize("who", ["user", "admin"])
async def test_boundary_requests_of_every_operation_get_documented_answers(
    served: Served, who: str, tmp_path: Path
) -> None:
    """Schemathesis's own runner, examples and coverage phases: boundary and missing values, wrong types.

    The runner's checks (all but ``OFF_IN_RUNNER``) add to those above: a request the document calls
    valid is not refused with 400/422 (``positive_data_acceptance``; not where validity depends on
    data: a page cursor or a ``before`` the API did not issue), a missing required header or token
    is refused. The user token covers the user-facing operations, the admin token the console's
    (``/api/admin``); the other pairing (a user on the console: 403; an admin reading for a user) is
    left to the fuzzing above, which keeps the module within a minute.
    """
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks]\n"
        # off: unknown query parameters are ignored, not refused; OPTIONS on /api/notifications/bulk
        # also lists the methods of /api/notifications/{id} (the same URL with id "bulk")
        + "".join(f"{name}.enabled = false\n" for name in OFF_IN_RUNNER)
        + "positive_data_acceptance.enabled = true\n\n[[operations]]\n"
        'include-path-regex = "^/api/(admin/)?notifications$|^/api/admin/deadletters$"\n'
        "checks.positive_data_acceptance.enabled = false\n"
    )
    if who == "admin":
        token = mint_token(served.settings, "ops", scopes=(SCOPE_ADMIN,))
        scope = ("--include-path-regex", "^/api/admin/")
    else:
        token = mint_token(served.settings, USER)
        scope = ("--exclude-path-regex", "^/api/admin/")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        *(served.base + "/api/openapi.json", *scope),
        *(arg for path in sorted(DEV_ONLY_PATHS) for arg in ("--exclude-path", path)),
        *("--phases", "examples,coverage"),
        *("--header", f"Authorization: Bearer {token}", "--workers", "1", "--request-timeout", "10"),
        *("--seed", str(SEED), "--generation-database", "none", "--no-color", "--suppress-health-check", "all"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-8000:]
    assert " passed" in text and "Tested: 0" not in text, text[-2000:]  # it did reach operations


async def test_a_user_past_the_write_burst_gets_a_documented_429_from_every_write_operation(served: Served) -> None:
    """The rate limit answers before any handler, so every write must document it (found: the re-drive did not)."""
    token = mint_token(served.settings, "burst-user")
    headers = {"Authorization": f"Bearer {token}"}
    writes = [
        op
        for op in (result.ok() for result in served.schema.get_all_operations())
        if op.method.upper() in WRITE_METHODS
    ]
    assert len(writes) >= 8

    async def exhaust(http: aiohttp.ClientSession) -> None:
        async def spend() -> None:
            async with http.post(served.base + "/api/notifications", json={}, headers=headers) as resp:
                await resp.read()

        await asyncio.gather(*(spend() for _ in range(served.settings.write_burst + 5)))

    async with aiohttp.ClientSession() as http:
        for op in writes:
            params = {p.name: "x" for p in op.path_parameters}
            for _ in range(3):  # the bucket refills at the sustained rate: spend it again when a token came back
                await exhaust(http)
                case = op.Case(path_parameters=params, **({"body": {}} if len(op.body) else {}))
                response = await asyncio.to_thread(_call, case, served.base, token)
                if response.status_code == 429:
                    break
            assert response.status_code == 429, f"{op.method.upper()} {op.path}: {response.status_code}"
            assert int(response.headers["retry-after"][0]) >= 1
