"""/api/docs in a real headless Chromium: Swagger UI loads from the controller under its
CSP (no other origin), renders every operation and the descriptions' markdown, and a
request tried out with the user's key gets the controller's answer."""

from __future__ import annotations

from typing import Any

import aiohttp

from probefleet.controller.api import openapi
from tests.browser.test_status_page_browser import WebDriver, browser  # noqa: F401  (the fixture)
from tests.controller.conftest import start_controller
from tests.helpers import eventually


async def until(driver: WebDriver, script: str, what: str) -> Any:
    return await eventually(lambda: driver.js(script), timeout=20, interval=0.1, what=what)


async def test_swagger_ui_renders_and_tries_a_request_with_the_key(
    database: str,
    nats_url: str,
    browser: WebDriver,  # noqa: F811
) -> None:
    running = await start_controller(database, nats_url)
    try:
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
            r = await api.post(
                "/api/v1/monitors", json={"name": "seen-in-docs", "url": "https://example.com/"}
            )
            assert r.status == 201
        await browser.call("POST", "/url", {"url": f"{running.base}/api/docs#/monitors/monitors_list"})
        count = await until(browser, "return document.querySelectorAll('.opblock').length", "operations")
        assert count == sum(len(ops) for ops in openapi.document(running.app)["paths"].values())
        # The description is markdown rendered: code spans, no literal backticks.
        info = await browser.js("return document.querySelector('.info').innerText")
        assert "Authorization: Bearer" in info and "`" not in info
        assert await browser.js("return document.querySelectorAll('.info code').length") > 0
        # The stylesheet applied (the CSP let it load).
        colour = await browser.js(
            "return getComputedStyle(document.querySelector('.opblock-summary-method')).backgroundColor"
        )
        assert colour not in ("", "rgba(0, 0, 0, 0)")
        # Authorize with the key, then try the listing out.
        await browser.js("window.ui.preauthorizeApiKey('bearerAuth', arguments[0])", running.admin_key)
        op = "#operations-monitors-monitors_list"
        await until(browser, f"return document.querySelector('{op} .try-out__btn')", "the listing expanded")
        await browser.js(f"document.querySelector('{op} .try-out__btn').click()")
        await until(browser, f"return document.querySelector('{op} .execute')", "try-it enabled")
        await browser.js(f"document.querySelector('{op} .execute').click()")
        status = await until(
            browser,
            f"var c = document.querySelector('{op} .live-responses-table tbody .response-col_status');"
            " return c && c.innerText.trim()",
            "the answer shown",
        )
        assert status.startswith("200"), status
        body = await browser.js(f"return document.querySelector('{op} .live-responses-table').innerText")
        assert "seen-in-docs" in body
    finally:
        await running.stop()
