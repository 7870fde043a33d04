"""A real headless Chromium (Debian's chromium + chromium-driver, over plain WebDriver HTTP)
loads a status page, reads its components and uptime bars, and sees a monitor's state
change and a new incident post arrive through Server-Sent Events without a reload; then
the page in light and dark (the system's preference, then the visitor's toggle, kept
across a reload) at desktop and phone size, with times in the browser's zone and 30
readable bars on a phone. Screenshots of each go to tests/artifacts/."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from tests.controller.conftest import start_controller
from tests.controller.status_pages.helpers import backfill_rollups, create_monitor, create_page, set_status

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=412,1400",
]


BROWSER_ZONE = "Asia/Kolkata"  # UTC+05:30 all year: no daylight saving to guess


def _ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if not shutil.which("apt-get"):
            pytest.skip("chromium/chromium-driver missing and apt-get is not available to install them")
        try:
            subprocess.run(
                "apt-get update && apt-get install -y chromium chromium-driver",
                shell=True,
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install chromium with apt-get: {e}")
    return str(shutil.which("chromium")), str(shutil.which("chromedriver"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriver:
    """The few W3C WebDriver commands this test needs."""

    def __init__(self, http: aiohttp.ClientSession, base: str, session_id: str) -> None:
        self.http, self.base, self.sid = http, base, session_id

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}/session/{self.sid}{path}"
        async with self.http.request(method, url, json=body) as r:
            data = await r.json()
            assert r.status == 200, data
            return data["value"]

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def cdp(self, cmd: str, **params: Any) -> Any:
        """A Chrome DevTools command through chromedriver (screen size, emulated media)."""
        return await self.call("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    async def screenshot(self, name: str) -> None:
        png = base64.b64decode(await self.call("GET", "/screenshot"))
        assert png.startswith(b"\x89PNG")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / name).write_bytes(png)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[WebDriver]:
    chromium, chromedriver = _ensure_chromium()
    port = _free_port()
    proc = subprocess.Popen(
        [chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The browser's zone, not the machine's: the page must show times in the visitor's.
        env={**os.environ, "TZ": BROWSER_ZONE},
    )
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(dir=tmp_path)
    caps = {
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": [*FLAGS, f"--user-data-dir={profile}"]},
            }
        }
    }
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with http.get(f"{base}/status") as r:
                            if (await r.json())["value"]["ready"]:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            async with http.post(f"{base}/session", json=caps) as r:
                created = await r.json()
                assert r.status == 200, created
            driver = WebDriver(http, base, created["value"]["sessionId"])
            try:
                yield driver
            finally:
                await http.delete(f"{base}/session/{driver.sid}")
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_page_renders_and_updates_live_in_chromium(
    database: str, nats_url: str, browser: WebDriver
) -> None:
    running = await start_controller(database, nats_url)
    try:
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
            ids = [await create_monitor(api, f"m{i}") for i in range(3)]
            for mid in ids:
                await set_status(running.app, mid, "up")
            page = await create_page(
                api,
                name="Browser Co",
                slug="browser",
                sections=[
                    {
                        "name": "Core",
                        "monitors": [
                            {"monitor_id": ids[0], "display_name": "API"},
                            {"monitor_id": ids[1], "display_name": "Website"},
                        ],
                    },
                    {"name": "Extras", "monitors": [{"monitor_id": ids[2], "display_name": "Docs"}]},
                ],
            )
        target = page["sections"][0]["monitors"][1]["component_id"]
        now = dt.datetime.now(dt.UTC)
        await running.app[keys.POOL].executemany(
            "INSERT INTO rounds (monitor_id, due, regions, deadline, closed_at, verdict)"
            " VALUES ($1, $2, '{us-east}', $2, $2, $3)",
            [(ids[0], now - dt.timedelta(days=d), "down" if d == 3 else "up") for d in range(10)],
        )
        await backfill_rollups(running.app[keys.POOL], now - dt.timedelta(days=11))
        await browser.call("POST", "/url", {"url": f"{running.base}/status/browser"})
        names = await browser.js(
            "return Array.from(document.querySelectorAll('.component .name')).map(e => e.textContent)"
        )
        assert names == ["API", "Website", "Docs"]
        assert await browser.js("return document.querySelectorAll('.component .bars i').length") == 3 * 90
        first = await browser.js(
            "return Array.from(document.querySelectorAll('.bars')[0].children).map(e => e.className)"
        )
        assert first[-10:] == ["bo"] * 6 + ["bx"] + ["bo"] * 3 and first[0] == "bn"
        assert (
            await browser.js("return document.getElementById('overall').textContent")
            == "All systems operational"
        )
        # Marks this document: a reload would lose it.
        await browser.js("window.__noReload = 42")
        await asyncio.sleep(0.5)  # let EventSource connect before the change
        await set_status(running.app, ids[1], "down")
        state = None
        async with asyncio.timeout(10):
            while state != "outage":
                state = await browser.js(f"return document.getElementById('c-{target}').dataset.state")
                await asyncio.sleep(0.1)
        assert await browser.js("return window.__noReload") == 42
        assert await browser.js("return document.getElementById('overall').dataset.state") == "partial_outage"
        assert (
            await browser.js(f"return document.querySelector('#c-{target} .state').textContent") == "Outage"
        )
        # An incident post appears without reload too, in place of "No incidents reported".
        async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
            r = await api.post(
                f"/api/v1/status-pages/{page['id']}/posts",
                json={"title": "Website down", "status": "investigating", "message": "Looking into it"},
            )
            post_id = (await r.json())["data"]["id"]
        title = None
        async with asyncio.timeout(10):
            while not title:
                title = await browser.js(
                    f"var p = document.getElementById('p-{post_id}'); return p && p.textContent"
                )
                await asyncio.sleep(0.1)
        assert "Website down" in title and "Looking into it" in title
        assert await browser.js("return document.querySelectorAll('#posts .muted').length") == 0
        assert await browser.js("return window.__noReload") == 42
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(await browser.call("GET", "/screenshot"))
        (ARTIFACTS / "status_page.png").write_bytes(png)
        assert png.startswith(b"\x89PNG")
    finally:
        await running.stop()


async def _until(browser: WebDriver, script: str, want: Any) -> None:
    """Wait (bounded) until the script returns `want`."""
    got = None
    async with asyncio.timeout(10):
        while got != want:
            got = await browser.js(script)
            if got != want:
                await asyncio.sleep(0.05)


SIZES = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
# --bg of status.css in each theme, as getComputedStyle reports it
BACKGROUND = {"light": "rgb(246, 248, 250)", "dark": "rgb(13, 17, 23)"}


async def test_the_page_in_light_and_dark_at_desktop_and_phone_size(
    database: str, nats_url: str, browser: WebDriver
) -> None:
    running = await start_controller(database, nats_url)
    try:
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
            ids = [await create_monitor(api, f"m{i}") for i in range(3)]
            for mid, state in zip(ids, ("up", "up", "degraded"), strict=True):
                await set_status(running.app, mid, state)
            names = ["API", "Website", "Payments"]
            page = await create_page(
                api,
                name="Acme Status",
                slug="looks",
                description="Everything Acme runs",
                footer_text="Acme Inc. · support@acme.test",
                show_response_times=True,
                monitors=[{"monitor_id": m, "display_name": n} for m, n in zip(ids, names, strict=True)],
            )
            r = await api.post(
                f"/api/v1/status-pages/{page['id']}/posts",
                json={"title": "Slow payments", "status": "monitoring", "message": "A fix is rolling out"},
            )
            assert r.status == 201
        now = dt.datetime.now(dt.UTC)
        await running.app[keys.POOL].executemany(
            "INSERT INTO rounds (monitor_id, due, regions, deadline, closed_at, verdict)"
            " VALUES ($1, $2, '{us-east}', $2, $2, $3)",
            [
                (mid, now - dt.timedelta(days=d), "down" if (d + i) % 17 == 0 else "up")
                for i, mid in enumerate(ids)
                for d in range(60)
            ],
        )
        await backfill_rollups(running.app[keys.POOL], now - dt.timedelta(days=61))
        running.app[keys.STATUS_PAGES].forget(page["id"])
        await browser.cdp(
            "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "light"}]
        )
        for size, (width, height, mobile) in SIZES.items():
            await browser.cdp(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=mobile,
            )
            await browser.call("POST", "/url", {"url": f"{running.base}/status/looks"})
            assert await browser.js("return document.title") == "Acme Status"
            # the post's time in the browser's zone, named (server-rendered as UTC)
            shown = await browser.js("return document.querySelector('#posts time').textContent")
            assert "GMT+5:30" in shown, shown
            bars = await browser.js(
                "return Array.from(document.querySelectorAll('.bars')[0].children)"
                ".filter(e => e.offsetWidth > 0).map(e => e.getBoundingClientRect().width)"
            )
            assert len(bars) == (30 if mobile else 90)
            assert min(bars) >= (8 if mobile else 5)  # wide enough to see and to tap
            for theme in ("light", "dark"):
                if theme == "dark":
                    # the system's preference, without any choice of the visitor
                    await browser.cdp(
                        "Emulation.setEmulatedMedia",
                        features=[{"name": "prefers-color-scheme", "value": "dark"}],
                    )
                assert await browser.js("return document.documentElement.dataset.theme || ''") == ""
                assert (
                    await browser.js("return getComputedStyle(document.body).backgroundColor")
                    == BACKGROUND[theme]
                )
                await browser.screenshot(f"status_page_{theme}_{size}.png")
            await browser.cdp(
                "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "light"}]
            )
        # The visitor's toggle wins over the system's preference, and is kept across a reload.
        await browser.cdp(
            "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}]
        )
        # the page hears of the system's change by an event, after the command returns
        await _until(browser, "return document.getElementById('theme-toggle').textContent", "Light mode")
        await browser.js("document.getElementById('theme-toggle').click()")
        await browser.call("POST", "/refresh", {})
        assert await browser.js("return document.documentElement.dataset.theme") == "light"
        assert (
            await browser.js("return getComputedStyle(document.body).backgroundColor") == BACKGROUND["light"]
        )
        assert await browser.js("return document.getElementById('theme-toggle').textContent") == "Dark mode"
        rts = await browser.js("return Array.from(document.querySelectorAll('.rt')).map(e => e.textContent)")
        assert rts == ["no data"] * 3
    finally:
        await running.stop()
