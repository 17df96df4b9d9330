"""The API docs page under the security headers, in a real browser (issue 10, item 15).

The demo page is covered by ``test_demo_page.py`` (it runs under the same policy); here
``/api/docs`` renders and calls the API with no policy violation, and no other origin can
frame Herald's pages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from api.auth import mint_token
from engine.settings import Settings
from herald.stack import Stack, run_stack
from tests.e2e.test_demo_page import CHROMIUM, CHROMIUM_ARGS
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with run_stack(settings, worker=False, projector=False) as running:
        yield running


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_api_docs_work_under_the_policy_and_cannot_be_framed(
    stack: Stack, chromium: Browser, settings: Settings
) -> None:
    base = f"http://127.0.0.1:{stack.http_port}"
    page = await chromium.new_page()
    await page.add_init_script(VIOLATIONS)
    errors: list[str] = []
    # The docs page has no icon link, so the browser asks for /favicon.ico (a 404): not an error of the page.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await page.goto(base + "/api/docs")
    listing = page.locator("details.op", has=page.locator(".path", has_text="/api/notifications")).first
    await expect(listing).to_be_visible(timeout=15000)
    await page.fill("#token", mint_token(settings, "alice"))
    await listing.locator("summary").click()
    await listing.get_by_role("button", name="Try it").click()
    await expect(listing.locator("pre")).to_contain_text("200", timeout=15000)
    await expect(listing.locator("pre")).to_contain_text('"results"')
    assert await page.evaluate("window.__violations") == []
    assert errors == []

    # Another origin (here: a document with no origin) tries to frame the demo page.
    framer = await chromium.new_page()
    refused: list[str] = []
    framer.on("console", lambda msg: refused.append(msg.text))
    await framer.set_content(f'<iframe src="{base}/"></iframe>')

    async def blocked() -> bool:
        return any("frame-ancestors" in text for text in refused)

    await eventually(blocked, timeout=15, what="the browser refusing to frame the demo page")
    frame = framer.frames[-1]
    assert frame is not framer.main_frame
    assert await frame.locator("#login").count() == 0
