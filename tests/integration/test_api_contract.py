"""The OpenAPI document matches the code.

1. Every ``/api`` route the app serves is documented, with its methods, and vice versa.
2. Property-based: Hypothesis builds requests from the document (valid and invalid
   parameters, bodies and tokens) against the running API; no answer is a 5xx, every
   status is documented for its operation, and every body validates against the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from api.auth import SCOPE_ADMIN, SCOPE_WRITE, mint_token
from api.rest.openapi import DEV_ONLY_PATHS, UNDOCUMENTED, document
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.api import isolated_settings, own_database
from tests.support.event_log import Log, append
from tests.support.waiting import eventually

DOC = document()
USER = "prop-user"
DEVICE = "ab" * 32


@pytest.fixture(scope="module")
async def served(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[tuple[Stack, Settings, dict[str, str]]]:
    with own_database() as url:
        # No worker: writes are published but never accepted, so they answer 202 after a short wait.
        app_settings = isolated_settings(kafka_bootstrap, url, redis_url, read_your_writes_timeout=0.2)
        async with run_stack(app_settings, worker=False) as stack:
            log = Log()
            ids = {"mine": log.accepted(USER, title="seed", category="c"), "theirs": log.accepted("someone-else")}
            log.succeeded(USER, ids["mine"], latency_ms=12.0)
            await append(kafka_bootstrap, TopicNames(app_settings.topic_prefix).events, log.envelopes)
            assert stack.engine is not None
            from projections.queries import NotificationQueries

            q = NotificationQueries(stack.engine)

            async def seeded() -> bool:
                return await q.exists(ids["mine"]) and await q.exists(ids["theirs"])

            await eventually(seeded, what="seed notifications")
            yield stack, app_settings, ids


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_api_route_is_documented_and_every_documented_route_exists(served) -> None:  # type: ignore[no-untyped-def]
    stack, _, _ = served
    assert stack.http_app is not None
    served_ops: set[tuple[str, str]] = set()
    for resource in stack.http_app.router.resources():
        path = resource.canonical
        if not path.startswith("/api/") or path in UNDOCUMENTED:
            continue
        for route in resource:
            if route.method != "HEAD":
                served_ops.add((route.method.lower(), _template(path)))
    documented = {
        (method, _template(path)) for path, ops in DOC["paths"].items() if path not in DEV_ONLY_PATHS for method in ops
    }
    assert served_ops == documented
    Draft202012Validator.check_schema({"$ref": "#/components/schemas/Notification", "components": DOC["components"]})


async def test_document_and_docs_page_are_served_without_external_resources(served) -> None:  # type: ignore[no-untyped-def]
    stack, _, _ = served
    base = f"http://127.0.0.1:{stack.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/openapi.json") as resp:
            assert resp.status == 200
            assert (await resp.json())["openapi"] == "3.1.0"
        pages = []
        for path in ("/api/docs", "/api/docs/apidocs.js", "/api/docs/apidocs.css"):
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                pages.append(await resp.text())
        async with http.get(base + "/api/docs/../../etc/passwd") as resp:
            assert resp.status == 404
    html = pages[0]
    assert "apidocs.js" in html
    assert "apidocs.css" in html
    for text in pages:
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the docs page must not load from a CDN"
        assert "cdn" not in text.lower()


# --- property-based: requests generated from the document -------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="/?#%"), min_size=0, max_size=30
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = DOC["components"]["schemas"][name]
    return schema


def _value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid-looking values of a (small subset of) JSON Schema; invalid ones come from elsewhere."""
    schema = _resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "null" in kinds and len(kinds) > 1:
        return st.none() | _value({**schema, "type": next(k for k in kinds if k != "null")})
    if kind == "integer":
        return st.integers(schema.get("minimum", -5), schema.get("maximum", 10**5))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.isoformat())
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind == "array":
        return st.lists(_value(schema.get("items", {})), min_size=schema.get("minItems", 0), max_size=4)
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        return st.fixed_dictionaries(
            {k: _value(props[k]) for k in required if k in props},
            optional={k: _value(v) for k, v in props.items() if k not in required},
        )
    return _JSON


def _query_value(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    def text(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, str) else v

    valid = _value(schema).map(lambda v: str(v).lower() if isinstance(v, bool) else text(v))
    return valid | _TEXT


OPERATIONS = [
    (path, method, op) for path, ops in DOC["paths"].items() if path not in DEV_ONLY_PATHS for method, op in ops.items()
]


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, str]) -> dict[str, Any]:
    path, method, op = draw(st.sampled_from(OPERATIONS))
    url = path
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = draw(st.sampled_from([ids["mine"], ids["theirs"], USER, DEVICE, "x" * 300]) | _TEXT.filter(bool))
            url = url.replace("{" + param["name"] + "}", aiohttp.helpers.quote(value, safe=""))
        elif param["in"] == "query" and draw(st.booleans()):
            query[param["name"]] = draw(_query_value(param["schema"]))
        elif param["in"] == "header" and draw(st.booleans()):
            headers[param["name"]] = draw(st.text(alphabet="abcdefghijklmnop0123456789-", min_size=0, max_size=20))
    body: Any = None
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        body = draw(_value(schema) | _JSON)
    auth = draw(st.sampled_from(["user", "user", "user", "admin", "service", "none", "garbage"]))
    return {"path": path, "method": method, "url": url, "query": query, "headers": headers, "body": body, "auth": auth}


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": DOC["components"]}, format_checker=FormatChecker())


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_generated_requests_get_documented_answers_and_never_5xx(served, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    stack, app_settings, ids = served
    req = data.draw(requests(ids))
    tokens = {
        "user": mint_token(app_settings, USER),
        "admin": mint_token(app_settings, "ops", scopes=(SCOPE_ADMIN,)),
        "service": mint_token(app_settings, "svc", scopes=(SCOPE_WRITE,)),
        "garbage": "garbage",
    }
    headers = dict(req["headers"])
    if req["auth"] in tokens:
        headers["Authorization"] = f"Bearer {tokens[req['auth']]}"
    base = f"http://127.0.0.1:{stack.http_port}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            req["method"].upper(),
            base + req["url"],
            params=req["query"],
            headers=headers,
            data=None if req["body"] is None else json.dumps(req["body"]),
            skip_auto_headers=() if req["body"] is None else ("Content-Type",),
        ) as resp,
    ):
        status, content_type, text = resp.status, resp.content_type, await resp.text()
    where = f"{req['method'].upper()} {req['url']} {req['query']} body={req['body']!r} auth={req['auth']}"
    assert status < 500, f"{where} -> {status}: {text}"
    responses = DOC["paths"][req["path"]][req["method"]]["responses"]
    assert str(status) in responses, f"{where} -> undocumented status {status}: {text}"
    documented = responses[str(status)].get("content", {})
    if status >= 400:
        assert content_type == "application/problem+json", where
    if not documented:
        return
    assert content_type in documented, f"{where} -> {content_type}, documented {list(documented)}"
    errors = sorted(_validator(documented[content_type]["schema"]).iter_errors(json.loads(text)), key=str)
    assert not errors, f"{where} -> {status} body violates the document: {errors[0].message}"
