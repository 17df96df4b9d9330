"""The operator console (/console) in a real browser: Debian's chromium, driven by Playwright.

Against a whole stack (real broker, Postgres, Redis, every role) and the real admin API:
a user's token is refused with the server's reason; an operator finds a notification
published in the test by searching and opens its targets and decision trail (partition,
offset); the overview charts draw and keep refreshing; a dead letter is listed with its
reason and source offset and re-driven from the page. Screenshots go to test-output/.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from playwright.async_api import Browser, Page, async_playwright, expect

from api.auth import SCOPE_ADMIN, mint_token
from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from schemas.channels import REGISTRY
from tests.support.clients import missed_notifications
from tests.support.kafka import publish, request
from tests.support.log_reader import log_records, of_type
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
EMPTY = "\u2013"  # what the console shows for a missing value
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    # One low-priority request per user and window: the bulk test's second one is refused (rate limited).
    async with run_stack(settings.replace(dev_mode=True, rate_limit_low=1)) as running:
        yield running


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One chromium for the module; each test's page has a browser context of its own (``new_page``)."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class Console:
    """A console page with its base URL and the browser problems it reported."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        self.external: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(str(exc)))
        page.on("request", lambda req: None if req.url.startswith(base) else self.external.append(req.url))

    def _console(self, msg: Any) -> None:
        # A refused request is logged by chromium as a console error: those are what the tests provoke.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.problems.append(msg.text)

    async def open(self) -> None:
        await self.page.goto(self.base + "/console")

    async def paste_token(self, token: str) -> None:
        await self.page.fill("#token", token)
        await self.page.click("#login-submit")

    def assert_clean(self) -> None:
        assert self.problems == []
        assert self.external == [], "the console must not load anything from another origin"


@pytest.fixture
async def console(stack: Stack, browser: Browser) -> AsyncIterator[Console]:
    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        yield Console(page, f"http://127.0.0.1:{stack.http_port}")
    finally:
        await page.close()


def _admin(settings: Settings) -> str:
    return mint_token(settings, "ops", scopes=(SCOPE_ADMIN,))


async def _publish(settings: Settings, user: str, title: str, priority: str = "high") -> str:
    req = request(user, title, body=f"{title} (body)", priority=priority)
    topic = TopicNames(settings.topic_prefix).request(priority)
    record: list[tuple[bytes | None, bytes | None]] = [(user.encode(), json.dumps(req).encode())]
    await publish(settings.kafka_bootstrap, topic, record)
    return str(req["id"])


async def _event_at(settings: Settings, event_type: str, match: Callable[[dict[str, Any]], bool]) -> tuple[int, int]:
    """Partition and offset of the first event of ``event_type`` in the log whose data matches."""
    topic = TopicNames(settings.topic_prefix).events

    async def probe() -> tuple[int, int] | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        event = json.loads(r.value)
                        if event.get("type") == event_type and match(event["data"]):
                            return r.partition, r.offset
            return None
        finally:
            await consumer.stop()

    return await eventually(probe, timeout=30, interval=0.3, what=f"{event_type} in the event log")


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()
    return consumer.partitions_for_topic(topic) or set()


async def _events(settings: Settings, event_type: str, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        records = await log_records(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events)
        return [r for r in of_type(records, event_type) if match(r["data"])] or None

    return await eventually(probe, timeout=30, what=f"{event_type} in the event log")


async def test_user_token_is_refused_and_the_page_says_why(
    console: Console, settings: Settings, output_dir: Path
) -> None:
    page = console.page
    await console.open()
    await expect(page.get_by_test_id("login")).to_be_visible()
    await expect(page.locator("#console")).to_be_hidden()

    await console.paste_token(mint_token(settings, "mallory"))  # a user's token: no admin scope
    error = page.get_by_test_id("login-error")
    await expect(error).to_contain_text("403", timeout=15000)
    await expect(error).to_contain_text("admin scope")
    await expect(page.locator("#console")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('herald-console-token')") is None

    await console.paste_token("not-a-jwt")
    await expect(error).to_contain_text("401", timeout=15000)
    await expect(page.locator("#console")).to_be_hidden()
    await page.screenshot(path=str(output_dir / "console-refused.png"), animations="disabled")
    console.assert_clean()


async def test_admin_finds_a_notification_and_reads_its_targets_and_trail(
    console: Console, settings: Settings, output_dir: Path
) -> None:
    page = console.page
    user = f"ada-{uuid.uuid4().hex[:6]}"
    title = f"Deploy {uuid.uuid4().hex[:8]} finished"
    nid = await _publish(settings, user, title)
    partition, offset = await _event_at(settings, "notification.accepted", lambda d: d["notification_id"] == nid)

    await console.open()
    await console.paste_token(_admin(settings))
    await expect(page.get_by_test_id("operator")).to_have_text("operator: ops")
    await page.click("[data-tab=notifications]")
    await page.fill("#search-form [name=q]", title.upper().split()[1].lower())  # a substring, other case
    await page.fill("#search-form [name=user]", user)
    await page.select_option("#search-form [name=priority]", "high")
    await page.select_option("#search-form [name=channel]", "websocket")  # an option read from the registry

    row = page.locator(f'#search-rows tr[data-id="{nid}"]')

    async def searched() -> bool:
        await page.click("#search")
        try:
            await expect(row).to_be_visible(timeout=1000)
        except AssertionError:
            return False
        return True

    await eventually(searched, timeout=30, interval=0.5, what="the notification in the search results")
    assert await page.locator("#search-rows tr").count() == 1
    await page.screenshot(path=str(output_dir / "console-search.png"), full_page=True)
    await expect(row).to_contain_text(title)
    await expect(row).to_contain_text(user)

    # Filters that exclude it: another priority; a time range after it (the form's times are UTC).
    await page.select_option("#search-form [name=priority]", "low")
    await page.click("#search")
    await expect(page.locator("#search-empty")).to_be_visible()
    await page.select_option("#search-form [name=priority]", "high")
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    await page.fill("#search-form [name=since]", later)
    await page.click("#search")
    await expect(page.locator("#search-empty")).to_be_visible()
    await page.fill("#search-form [name=until]", later)
    await page.fill(
        "#search-form [name=since]", (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    await page.click("#search")
    await expect(row).to_be_visible()
    await row.click()

    detail = page.get_by_test_id("detail")
    await expect(detail).to_be_visible()
    await expect(detail).to_have_attribute("data-id", nid)
    await expect(page.locator("#detail-title")).to_have_text(title)
    assert page.url.endswith(f"#notifications/{nid}")
    await expect(page.locator('#targets-rows tr[data-channel="websocket"]')).to_be_visible()
    accepted_row = page.locator('#trail-rows tr[data-type="notification.accepted"]')
    await expect(accepted_row).to_have_count(1)
    cells = accepted_row.locator("td")
    await expect(cells.nth(2)).to_have_text(str(partition))
    await expect(cells.nth(3)).to_have_text(str(offset))
    await expect(page.get_by_test_id("explanation").locator("li").first).to_be_visible()
    await page.screenshot(path=str(output_dir / "console-notification.png"), full_page=True)

    # The detail is a link: reloading keeps the session (sessionStorage) and the view.
    await page.reload()
    await expect(page.get_by_test_id("detail")).to_have_attribute("data-id", nid)

    # An unknown id: the API's problem+json is shown as it is, and the operator stays logged in.
    await page.goto(f"{console.base}/console#notifications/no-such-{uuid.uuid4().hex[:6]}")
    await expect(page.get_by_test_id("error")).to_contain_text("404 Not Found")
    await expect(page.get_by_test_id("operator")).to_have_text("operator: ops")
    console.assert_clean()


async def test_search_results_are_paginated(console: Console, settings: Settings) -> None:
    page = console.page
    user = f"pg-{uuid.uuid4().hex[:6]}"
    records: list[tuple[bytes | None, bytes | None]] = [
        (user.encode(), json.dumps(request(user, f"Item {i:02d}", priority="medium")).encode()) for i in range(12)
    ]
    await publish(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).request("medium"), records)

    await console.open()
    await console.paste_token(_admin(settings))
    await page.click("[data-tab=notifications]")
    await page.fill("#search-form [name=user]", user)
    await page.select_option("#search-form [name=limit]", "10")
    rows = page.locator("#search-rows tr")

    async def all_projected() -> bool:
        await page.click("#search")
        await expect(page.locator("#search-page")).to_contain_text("page 1")
        return await rows.count() == 10 and await page.locator("#search-next").is_enabled()

    await eventually(all_projected, timeout=30, interval=0.5, what="a full first page and a next one")
    first = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    await page.click("#search-next")
    await expect(page.locator("#search-page")).to_have_text("page 2 · 2 shown")
    second = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(set(first) | set(second)) == 12, "the two pages hold all twelve, none twice"
    await expect(page.locator("#search-next")).to_be_disabled()
    await page.click("#search-first")
    await expect(page.locator("#search-page")).to_have_text("page 1 · 10 shown")
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == first
    console.assert_clean()


async def test_overview_charts_draw_and_refresh(
    console: Console, stack: Stack, settings: Settings, output_dir: Path
) -> None:
    page = console.page
    user = f"bo-{uuid.uuid4().hex[:6]}"
    ws_url = f"ws://127.0.0.1:{stack.http_port}/ws/notifications?token={mint_token(settings, user)}"
    await console.open()
    await page.click("#dev-login")  # `herald dev` mints the operator's token (loopback only)
    await expect(page.get_by_test_id("operator")).to_have_text("operator: ops")
    dev_token = f"http://127.0.0.1:{stack.http_port}/api/dev/token"
    async with (  # and no scope but those two
        aiohttp.ClientSession() as http,
        http.post(dev_token, json={"user_id": "ops", "scope": "root"}) as resp,
    ):
        assert resp.status == 400
        assert "scope" in (await resp.json())["detail"]
    overview = page.get_by_test_id("overview")
    await expect(overview).to_be_visible()
    for chart in ("accepted", "delivered", "failed", "delivered-priority", "failed-priority", "latency", "lag", "dead"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1, timeout=15000)

    await expect(overview).to_have_attribute("data-refreshes", re.compile(r"\d+"))
    first = int(await overview.get_attribute("data-refreshes") or 0)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:  # the user is online: delivered live
        # The connection's replay first (nothing missed yet): published before it ends, the two
        # could reach the read model in time to come as replay, and live frames are never repeated.
        assert await missed_notifications(ws) == []
        await _publish(settings, user, "Counted on the overview")
        await _publish(settings, user, "Counted again", priority="low")
        frames = 0
        # The stack's worker may still be joining its group on a loaded machine (tens of seconds).
        async with asyncio.timeout(90):
            while frames < 2:
                frames += json.loads((await ws.receive()).data).get("type") == "notification"
    await expect(page.get_by_test_id("ov-accepted")).to_have_text("2", timeout=30000)
    await expect(page.get_by_test_id("ov-delivered")).to_have_text("2", timeout=30000)
    await expect(page.get_by_test_id("ov-latency")).to_contain_text("(2)")
    # The accepted chart's data holds them: one high, one low (per-second rates times the bucket length).
    sums = await page.evaluate(
        """() => {
          const u = state.charts["chart-accepted"].plot;
          const total = (i) => u.data[i].reduce((a, b) => a + (b || 0), 0);
          return u.series.slice(1).map((s, i) => [s.label, Math.round(total(i + 1) * state.bucketSeconds)]);
        }"""
    )
    assert sums == [["high", 1], ["medium", 0], ["low", 1]]
    delivered = await page.evaluate(
        """() => state.charts["chart-delivered"].plot.data[1].reduce((a, b) => a + (b || 0), 0) * state.bucketSeconds"""
    )
    assert round(delivered) == 2, "both delivered over the WebSocket channel"
    by_priority = await page.evaluate(
        """() => {
          const u = state.charts["chart-delivered-priority"].plot;
          const total = (i) => u.data[i].reduce((a, b) => a + (b || 0), 0);
          return u.series.slice(1).map((s, i) => [s.label, Math.round(total(i + 1) * state.bucketSeconds)]);
        }"""
    )
    assert by_priority == [["high", 1], ["medium", 0], ["low", 1]], "delivered by priority: one high, one low"
    # The channels drawn and offered come from the registry (GET /api/admin/channels), not the page.
    labels = await page.evaluate("""() => state.charts["chart-delivered"].plot.series.slice(1).map((s) => s.label)""")
    assert labels == list(REGISTRY.names)
    options = await page.locator("#search-form [name=channel] option").all_inner_texts()
    assert options == ["any", *REGISTRY.names]
    await expect(page.locator("#lag-rows tr").first).to_be_visible()

    async def refreshed() -> bool:
        return int(await overview.get_attribute("data-refreshes") or 0) >= first + 3

    await eventually(refreshed, timeout=15, interval=0.2, what="the overview refreshing on its own every 2 s")
    await page.screenshot(path=str(output_dir / "console-overview.png"), full_page=True)
    console.assert_clean()


async def test_dead_letter_is_listed_and_redriven(console: Console, settings: Settings, output_dir: Path) -> None:
    page = console.page
    topics = TopicNames(settings.topic_prefix)
    source = topics.request("medium")
    marker = uuid.uuid4().hex[:8]
    poison: list[tuple[bytes | None, bytes | None]] = [(f"dl-{marker}".encode(), f"{{not json {marker}".encode())]
    await publish(settings.kafka_bootstrap, source, poison)

    await console.open()
    await console.paste_token(_admin(settings))
    await page.click("[data-tab=deadletters]")
    # Re-drive by filter without a filter: the API's 422 detail is shown, nothing is sent.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#dl-redrive-filter")
    await expect(page.get_by_test_id("dl-result")).to_contain_text("422")
    await expect(page.get_by_test_id("dl-result")).to_contain_text("filter needs source_topic or reason")

    await page.fill("#dl-form [name=source_topic]", source)
    row = page.locator("#dl-rows tr", has_text=f"dl-{marker}")

    async def listed() -> bool:
        await page.click("#dl-search")
        try:
            await expect(row.first).to_be_visible(timeout=1000)
        except AssertionError:
            return False
        return True

    await eventually(listed, timeout=30, interval=0.5, what="the dead letter in the console")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(source)
    await expect(row.locator("td").nth(7)).to_have_text("no")
    reason = (await row.locator("td.reason").inner_text()).strip()
    assert reason and reason != EMPTY
    await page.screenshot(path=str(output_dir / "console-deadletters.png"), full_page=True)

    await row.locator("input[type=checkbox]").check()
    await expect(page.locator("#dl-selected")).to_have_text("1 selected")
    await page.click("#dl-redrive-selected")
    await expect(page.get_by_test_id("dl-result")).to_contain_text("Re-driven: 1", timeout=15000)

    redriven = await _events(settings, "deadletter.redriven", lambda d: d["source_topic"] == source)
    assert [r["data"]["operator"] for r in redriven] == ["ops"], "the re-drive is recorded, naming the operator"

    def _rows(count: int) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            await page.click("#dl-search")
            try:
                await expect(row).to_have_count(count, timeout=1000)
            except AssertionError:
                return False
            return True

        return probe

    # The record still fails (nothing was fixed): it is back in the dead letters, the first one marked re-driven.
    await eventually(_rows(2), timeout=30, interval=0.5, what="the re-driven record back in the dead letters")
    await expect(page.locator("#dl-rows tr.redriven", has_text=f"dl-{marker}")).to_have_count(1)
    copy = page.locator("#dl-rows tr:not(.redriven)", has_text=f"dl-{marker}")
    await expect(copy.locator("td").nth(7)).to_contain_text("a copy of")

    # By filter (after a confirmation): only the copy goes; the original was re-driven already.
    await page.fill("#dl-form [name=reason]", "MALFORMED json")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#dl-redrive-filter")
    await expect(page.get_by_test_id("dl-result")).to_contain_text("Re-driven: 1.", timeout=15000)
    await eventually(_rows(3), timeout=30, interval=0.5, what="the second copy back in the dead letters")
    await expect(page.locator("#dl-rows tr.redriven", has_text=f"dl-{marker}")).to_have_count(2)
    await page.screenshot(path=str(output_dir / "console-redriven.png"), full_page=True)
    console.assert_clean()


async def test_users_and_bulk_sends(console: Console, stack: Stack, settings: Settings, output_dir: Path) -> None:
    page = console.page
    user, other = f"cy-{uuid.uuid4().hex[:6]}", f"di-{uuid.uuid4().hex[:6]}"
    device = uuid.uuid4().hex + uuid.uuid4().hex
    admin = _admin(settings)
    api = f"http://127.0.0.1:{stack.http_port}/api"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as http:
        async with http.post(f"{api}/devices", json={"device_token": device, "user_id": user}) as resp:
            assert resp.status in (201, 202), await resp.text()
        body = {"email": f"{user}@example.com", "channels": ["websocket", "email"]}
        async with http.put(f"{api}/users/{user}/contact", json=body) as resp:
            assert resp.status in (200, 202), await resp.text()
        await _publish(settings, user, "Your first digest", priority="low")
        await _event_at(settings, "notification.accepted", lambda d: d["user_id"] == user)
        campaign = {"user_ids": [user, other], "title": "Spring campaign", "priority": "low"}
        async with http.post(f"{api}/notifications/bulk", json=campaign) as resp:
            assert resp.status == 202, await resp.text()
            bulk_id = (await resp.json())["bulk_id"]

    await console.open()
    await console.paste_token(admin)
    await page.click("[data-tab=users]")
    await page.fill("#user-id", user)

    async def shown() -> bool:
        await page.click("#user-show")
        try:
            await expect(page.locator("#inbox-rows tr", has_text="Your first digest")).to_be_visible(timeout=1000)
        except AssertionError:
            return False
        return True

    await eventually(shown, timeout=30, interval=0.5, what="the user's inbox in the console")
    await expect(page.locator("#device-rows tr", has_text=device)).to_contain_text("active")
    await expect(page.get_by_test_id("contact")).to_contain_text(f"{user}@example.com")
    await expect(page.locator('#rate-rows tr[data-priority="low"]')).to_contain_text("1 / 1")
    await expect(page.locator('#rate-rows tr[data-priority="high"]')).to_contain_text("0 / 100")
    await expect(page.get_by_test_id("user-presence")).to_contain_text("offline")
    await page.screenshot(path=str(output_dir / "console-user.png"), full_page=True)

    await page.click("[data-tab=bulks]")
    bulk_row = page.locator(f'#bulk-rows tr[data-bulk="{bulk_id}"]')

    async def progressed() -> bool:
        await page.click("#bulks-refresh")
        try:
            await expect(bulk_row.locator("td").nth(4)).to_have_text("1", timeout=1000)  # one refused
        except AssertionError:
            return False
        return True

    await eventually(progressed, timeout=30, interval=0.5, what="the bulk with its refused target")
    await expect(bulk_row.locator("td").nth(2)).to_have_text("2")
    await bulk_row.click()
    detail = page.get_by_test_id("bulk-detail")
    await expect(detail).to_have_attribute("data-bulk", bulk_id)
    await expect(page.locator("#refused-rows tr")).to_have_count(1)
    await expect(page.locator("#refused-rows tr")).to_contain_text(user)
    await expect(page.locator("#bulk-bar .part")).not_to_have_count(0)
    await page.screenshot(path=str(output_dir / "console-bulk.png"), full_page=True)
    console.assert_clean()
