"""The demo page in a real browser: Debian's chromium, driven by Playwright.

A user logs in with the dev token endpoint, sees a notification published to Kafka
arrive live, disconnects, misses two, reconnects and finds both marked as missed,
marks one read and sends one through the page's form. The screenshot is kept in
test-output/.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from engine.settings import Settings
from engine.topics import TopicNames
from herald.stack import Stack, run_stack
from tests.support.kafka import publish, request
from tests.support.log_reader import log_records, of_type
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(150)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(settings.replace(dev_mode=True)) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _publish(settings: Settings, user: str, title: str, priority: str) -> str:
    req = request(user, title, body=f"{title} (body)", priority=priority)
    topic = TopicNames(settings.topic_prefix).request(priority)
    await publish(settings.kafka_bootstrap, topic, [(user.encode(), json.dumps(req).encode())])
    return str(req["id"])


async def _deferred(settings: Settings, user: str, count: int) -> None:
    async def probe() -> list[dict[str, Any]] | None:
        records = await log_records(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).events)
        found = of_type(records, "delivery.deferred", user=user)
        return found if len(found) >= count else None

    await eventually(probe, timeout=30, what=f"{count} notifications deferred while {user} was offline")


def _card(page: Page, notification_id: str) -> Any:
    return page.locator(f'li.notification[data-id="{notification_id}"]')


async def test_demo_page_live_disconnect_missed_recovery_read_and_send(
    stack: Stack, browser: Browser, settings: Settings, output_dir: Path
) -> None:
    user = f"ada-{uuid.uuid4().hex[:6]}"
    page = await browser.new_page(viewport={"width": 1200, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    external: list[str] = []
    base = f"http://127.0.0.1:{stack.http_port}"
    page.on(
        "request",
        lambda req: (
            external.append(req.url) if not req.url.startswith(("http://127.0.0.1", "ws://127.0.0.1")) else None
        ),
    )

    await page.goto(base + "/")
    await page.fill("#user-id", user)
    await page.click("#login")
    status = page.get_by_test_id("status")
    await expect(status).to_have_text("live", timeout=15000)

    first = await _publish(settings, user, "Build passed", "high")
    await expect(_card(page, first)).to_be_visible(timeout=15000)
    await expect(_card(page, first)).to_have_class("notification priority-high")

    await page.click("#disconnect")
    await expect(status).to_have_attribute("data-state", "offline")
    missed = [
        await _publish(settings, user, "Review requested", "medium"),
        await _publish(settings, user, "Weekly digest", "low"),
    ]
    await _deferred(settings, user, 2)
    for nid in missed:
        assert await _card(page, nid).count() == 0

    await page.click("#connect")
    await expect(status).to_have_text("live", timeout=15000)
    for nid, priority in zip(missed, ("medium", "low"), strict=True):
        card = _card(page, nid)
        await expect(card).to_be_visible()
        await expect(card).to_have_class(f"notification priority-{priority} missed")
        await expect(card.locator(".badge.missed")).to_have_text("missed")
    assert await page.locator("li.notification").count() == 3

    await _card(page, first).locator(".mark-read").click()
    await expect(_card(page, first)).to_have_class("notification priority-high read")
    await expect(page.get_by_test_id("unread")).to_have_text("2 unread")

    await page.fill("#send-title", "Hello from the form")
    await page.select_option("#send-priority", "high")
    await page.click("#send")
    await expect(page.locator("li.notification .title", has_text="Hello from the form")).to_be_visible(timeout=15000)
    assert await page.locator("li.notification").count() == 4

    await page.screenshot(path=str(output_dir / "demo-page.png"), full_page=True, animations="disabled")
    assert problems == []
    assert external == [], "the demo page must not load anything from outside"
