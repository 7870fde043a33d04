"""The console with many monitors, in a real headless Chromium (Debian's chromium and
chromium-driver over WebDriver): first paint of the overview, and a filter (status select
changed, htmx swaps the rows) from the event to the settled table, both from the
browser's own timing (Navigation Timing, Paint Timing, performance.now()).

    .venv/bin/python -m bench.console [--monitors 10000] [--runs 5] [--no-record] [--screenshot PATH]

The controller runs in this process on the embedded PostgreSQL and NATS; the monitors are
inserted with SQL (no probe runs them: the page's cost does not depend on their checks).
Results go to bench/RESULTS.md under "Console (issue 19)".
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import click
from aiohttp import web

from bench.common import percentile, record
from probefleet.controller import keys
from probefleet.controller.app import build_app
from probefleet.controller.config import ControllerConfig, Region
from probefleet.controller.console import accounts
from probefleet.shared.devstack import create_database, embedded_stack

PASSWORD = "bench password 1"
REGIONS = ["us-east", "eu-west", "ap-south"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Driver:
    def __init__(self, http: aiohttp.ClientSession, base: str, sid: str) -> None:
        self.http, self.base, self.sid = http, base, sid

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, f"{self.base}/session/{self.sid}{path}", json=body) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(data)
            return data["value"]

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def js_async(self, script: str, *args: Any) -> Any:
        return await self.call("POST", "/execute/async", {"script": script, "args": list(args)})


async def seed(pool: Any, monitors: int) -> None:
    """Monitors of three kinds and statuses, tags from a small set, one result per region."""
    await pool.execute(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, tags, status, last_check,"
        " response_time_ms)"
        " SELECT 'service ' || lpad(g::text, 6, '0'), 'http',"
        " jsonb_build_object('url', 'http://127.0.0.1:9/' || g), 60, 5, $2::text[],"
        " ARRAY['team-' || (g % 20), CASE WHEN g % 3 = 0 THEN 'shop' ELSE 'web' END],"
        " CASE WHEN g % 50 = 0 THEN 'down' WHEN g % 17 = 0 THEN 'degraded' ELSE 'up' END,"
        " now(), 20 + g % 300"
        " FROM generate_series(1, $1) g",
        monitors,
        REGIONS,
    )
    await pool.execute("ANALYZE monitors")


async def measure(base: str, runs: int, screenshot: Path | None) -> dict[str, Any]:
    driver_bin, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not (driver_bin and chromium):
        raise click.ClickException(
            "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [driver_bin, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wd = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="pf-bench-chromium-")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ]
    caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": chromium, "args": flags}}}}
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with http.get(f"{wd}/status") as r:
                            if (await r.json())["value"]["ready"]:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            async with http.post(f"{wd}/session", json=caps) as r:
                sid = (await r.json())["value"]["sessionId"]
            d = Driver(http, wd, sid)
            try:
                await d.call("POST", "/url", {"url": f"{base}/login"})
                await d.js(
                    "document.getElementById('username').value = 'bench';"
                    "document.getElementById('password').value = arguments[0];"
                    "document.querySelector('form[action=\"/login\"]').submit();",
                    PASSWORD,
                )
                for _ in range(200):  # the overview after the login's redirect (bounded)
                    if await d.js("return location.pathname === '/' && !!document.getElementById('rows')"):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise click.ClickException("the login did not reach the overview")
                paints, responses, filters, searches, rows = [], [], [], [], 0
                for _ in range(runs):
                    await d.call("POST", "/url", {"url": f"{base}/"})
                    timing = await d.js_async(
                        "const done = arguments[arguments.length - 1];"
                        "const n = performance.getEntriesByType('navigation')[0];"
                        "const rows = document.querySelectorAll('[data-monitor-id]').length;"
                        "new PerformanceObserver((list, obs) => { for (const e of list.getEntries()) {"
                        " if (e.name === 'first-contentful-paint') { obs.disconnect();"
                        " done({fcp: e.startTime, response: n.responseEnd - n.requestStart, rows});"
                        " } } })"
                        ".observe({type: 'paint', buffered: true});"
                    )
                    paints.append(timing["fcp"])
                    responses.append(timing["response"])
                    rows = timing["rows"]
                for i in range(runs):
                    status = ("down", "degraded", "up")[i % 3]
                    elapsed = await d.js_async(
                        "const done = arguments[arguments.length - 1];"
                        "const t0 = performance.now();"
                        "document.body.addEventListener('htmx:afterSettle',"
                        " () => done(performance.now() - t0), {once: true});"
                        "const s = document.getElementById('f-status'); s.value = arguments[0];"
                        "s.dispatchEvent(new Event('change', {bubbles: true}));",
                        status,
                    )
                    filters.append(elapsed)
                for i in range(runs):
                    # A name search (with the status filter cleared), from the form's submit
                    # (typing waits 250 ms for a pause first) to the settled table.
                    query = f"service {i * 7 + 4:03d}"  # names are "service 000123"
                    elapsed = await d.js_async(
                        "const done = arguments[arguments.length - 1];"
                        "document.getElementById('f-status').value = '';"
                        "document.getElementById('search').value = arguments[0];"
                        "document.body.addEventListener('htmx:afterSettle',"
                        " () => done(performance.now() - t0), {once: true});"
                        "const t0 = performance.now();"
                        "document.querySelector('form.filters').requestSubmit();",
                        query,
                    )
                    searches.append(elapsed)
                if screenshot is not None:
                    await d.call("POST", "/url", {"url": f"{base}/?sort=name:asc"})
                    png = base64.b64decode(await d.call("GET", "/screenshot"))
                    screenshot.write_bytes(png)
            finally:
                await http.delete(f"{wd}/session/{sid}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    return {"paints": paints, "responses": responses, "filters": filters, "searches": searches, "rows": rows}


async def run(monitors: int, runs: int, screenshot: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pf-bench-console-") as tmp, embedded_stack(Path(tmp)) as stack:
        await create_database(stack.postgres.dsn(), "bench", drop=True)
        cfg = ControllerConfig(
            database_url=stack.postgres.dsn("bench"),
            nats_url=stack.nats.url,
            regions=[Region(id=r) for r in REGIONS],
            nats_insecure=True,
        )
        app = build_app(cfg)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            t0 = time.perf_counter()
            await seed(app[keys.POOL], monitors)
            seeded = time.perf_counter() - t0
            await accounts.create_user(app[keys.POOL], "bench", PASSWORD, "admin")
            result = await measure(base, runs, screenshot)
        finally:
            await runner.cleanup()
    return {**result, "monitors": monitors, "runs": runs, "seed_s": seeded}


def report(r: dict[str, Any]) -> str:
    def cell(values: list[float]) -> str:
        return f"{percentile(values, 0.5):.0f} ms (max {max(values):.0f})"

    return f"""\
{r["monitors"]:,} monitors (3 regions, tags from 22, statuses mixed), the overview at `/` logged in
as an admin in headless Chromium over WebDriver, controller and PostgreSQL on the same machine;
{r["runs"]} runs each, median and max from the browser's own timing.

| what | time |
|---|---:|
| overview first contentful paint (navigation start to FCP, {r["rows"]} rows a page) \
| {cell(r["paints"])} |
| overview HTML response (request start to response end) | {cell(r["responses"])} |
| filter by status: change event to the settled table (htmx swap of the rows) | {cell(r["filters"])} |
| search by name: the form's submit to the settled table | {cell(r["searches"])} |

The page never loads every monitor: one page of 50 rows, counts per status from one
grouped query, the region matrix for the 50 rows on screen only; live updates subscribe
to those 50 monitors.
"""


@click.command()
@click.option("--monitors", default=10_000, show_default=True)
@click.option("--runs", default=5, show_default=True)
@click.option("--no-record", is_flag=True)
@click.option("--screenshot", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(monitors: int, runs: int, no_record: bool, screenshot: Path | None) -> None:
    os.environ.setdefault("PROBEFLEET_LOG_LEVEL", "WARNING")
    result = asyncio.run(run(monitors, runs, screenshot))
    text = report(result)
    print(text)
    if not no_record:
        record("Console (issue 19)", text)


if __name__ == "__main__":
    main()
