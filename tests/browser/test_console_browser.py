"""The console in a real headless Chromium (Debian's chromium and chromium-driver over plain
WebDriver HTTP), against a real controller, probes in three regions and a target:
log in, create an HTTP monitor with the form, see it go up, make the target fail and see
it turn down without a reload, test it now from the edit form, create a maintenance window
with its form (a field error first), edit a status page's sections with their buttons and
monitor picker, create a channel with its kind's settings (a field error beside its control,
the untouched edit form keeping the secret URL it never shows), acknowledge the incident,
log out; a viewer sees no edit controls and gets 403 on a crafted request; markup in names
and tags shows as text.

Screenshots of every page, light and dark, desktop and phone, are saved under
$PROBEFLEET_SCREENSHOTS (default: tests/artifacts/console/, kept after the run), and the
test checks that each page's four are there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
from probefleet.controller.console import accounts
from probefleet.controller.storage import notifications as notify_store
from tests.controller.conftest import start_controller
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

PASSWORD = "correct horse battery"


def status_js(monitor_id: int) -> str:
    """A script answering the monitor's status as its overview row shows it."""
    row = f'[data-monitor-id="{monitor_id}"]'
    return f"return document.querySelector('{row} [data-field=status]')?.textContent"


XSS_NAME = '<img src=x onerror="window.__xss=1">shop <b>api</b>'
XSS_TAG = "<script>window.__xss=2</script>"
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
SCHEMES = ("light", "dark")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
# Every page of the console the test shows (each in SIZES x SCHEMES).
PAGES = (
    "login",
    "overview",
    "monitor",
    "monitor-form",
    "incidents",
    "incident",
    "fleet",
    "heartbeats",
    "heartbeat",
    "heartbeat-form",
    "channels",
    "channel-form",
    "channel-edit",
    "rules",
    "rule-form",
    "maintenance",
    "maintenance-form",
    "status-pages",
    "status-page-form",
    "keys",
    "users",
    "audit",
)


def _ensure_chromium() -> tuple[str, str]:
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


class Chromium:
    """The few W3C WebDriver commands the test needs."""

    def __init__(self, http: aiohttp.ClientSession, base: str, sid: str, shots: Path) -> None:
        self.http, self.base, self.sid, self.shots = http, base, sid, shots

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, f"{self.base}/session/{self.sid}{path}", json=body) as r:
            data = await r.json()
            assert r.status == 200, data
            return data["value"]

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def go(self, url: str) -> None:
        await self.call("POST", "/url", {"url": url})

    async def wait(self, script: str, what: str, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        """The script's value once truthy, polling the page (bounded)."""
        return await eventually(lambda: self.js(script), timeout=timeout, interval=0.1, what=what)

    async def cdp(self, cmd: str, **params: Any) -> Any:
        return await self.call("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    async def screenshots(self, page: str) -> None:
        """The current page in light and dark, desktop and phone."""
        for size, (w, h) in SIZES.items():
            await self.cdp(
                "Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False
            )
            for scheme in SCHEMES:
                await self.cdp(
                    "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": scheme}]
                )
                png = base64.b64decode(await self.call("GET", "/screenshot"))
                assert png.startswith(b"\x89PNG")
                (self.shots / f"console-{page}-{size}-{scheme}.png").write_bytes(png)
        await self.cdp("Emulation.clearDeviceMetricsOverride")
        await self.cdp("Emulation.setEmulatedMedia", features=[])


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    binary, driver = _ensure_chromium()
    shots = Path(os.environ.get("PROBEFLEET_SCREENSHOTS") or ARTIFACTS)
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("console-*.png"):  # a page no longer shown leaves no stale picture
        old.unlink()
    port = _free_port()
    proc = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TZ": "Europe/Berlin"},  # the viewer's zone, not the machine's
    )
    base = f"http://127.0.0.1:{port}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900"]
    caps = {
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": [*flags, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"],
                },
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
            browser = Chromium(http, base, created["value"]["sessionId"], shots)
            try:
                yield browser
            finally:
                await http.delete(f"{base}/session/{browser.sid}")
    finally:
        proc.terminate()
        proc.wait(10)


async def _log_in(b: Chromium, base: str, username: str) -> None:
    await b.go(f"{base}/login")
    await b.js(
        "document.getElementById('username').value = arguments[0];"
        "document.getElementById('password').value = arguments[1];"
        "document.querySelector('form[action=\"/login\"]').submit();",
        username,
        PASSWORD,
    )
    await b.wait(
        "return location.pathname === '/' && document.querySelector('#rows') !== null", "the overview"
    )


async def test_an_operator_runs_the_console_in_chromium(
    database: str, nats_url: str, chromium: Chromium
) -> None:
    b = chromium
    running = await start_controller(database, nats_url)
    agents = await start_probes(nats_url)
    target = RegionalTarget()
    url = await target.start()
    try:
        pool = running.app[keys.POOL]
        await accounts.create_user(pool, "ops", PASSWORD, "admin")
        await accounts.create_user(pool, "watcher", PASSWORD, "viewer")
        base = running.base

        await b.go(f"{base}/login")
        await b.screenshots("login")
        await _log_in(b, base, "ops")
        zone = await b.wait("return document.getElementById('tz').textContent", "the zone name")
        assert zone == "Times in Europe/Berlin"

        # Create an HTTP monitor with the form; the server's field errors show beside fields.
        await b.go(f"{base}/console/monitors/new?type=http")
        await b.js("document.getElementById('save').click()")
        error = await b.wait("return document.getElementById('e-name').textContent", "the name field's error")
        assert (
            error
            and await b.js("return document.getElementById('f-name').getAttribute('aria-invalid')") == "true"
        )
        await b.screenshots("monitor-form")
        await b.js(
            "const set = (n, v) => { document.getElementById('f-' + n).value = v; };"
            "set('name', arguments[0]); set('url', arguments[1]); set('check_interval', '1');"
            "set('timeout', '2'); set('locations', 'us-east, eu-west, ap-south'); set('tags', arguments[2]);"
            "document.getElementById('save').click();",
            XSS_NAME,
            url,
            XSS_TAG,
        )
        path = await b.wait(
            "return /^\\/console\\/monitors\\/\\d+$/.test(location.pathname) && location.pathname",
            "the new monitor",
        )
        monitor_id = int(path.rsplit("/", 1)[1])

        # It goes up (the overview is reloaded until it does), then down live.
        async def is_up() -> bool:
            await b.go(f"{base}/")
            return bool(await b.js(status_js(monitor_id)) == "up")

        await eventually(is_up, timeout=20, interval=0.3, what="the monitor to go up")
        assert await b.js("return document.querySelector('.name').textContent") == XSS_NAME
        assert await b.js("return document.querySelector('.tag').textContent") == XSS_TAG
        assert await b.js(
            "return window.__xss === undefined && document.querySelectorAll('img[src=x]').length === 0"
        )
        await b.wait("return document.body.dataset.ws === 'subscribed'", "the live subscription")
        await b.screenshots("overview")
        await b.js("window.__noReload = 42")
        target.fail_all()
        await b.wait(
            status_js(monitor_id) + " === 'down'",
            "the monitor to turn down live",
        )
        assert await b.js("return window.__noReload") == 42
        assert await b.js("return document.querySelector('[data-count=down]').textContent") == "1"

        # The monitor page: per-region state and the chart.
        await b.go(f"{base}/console/monitors/{monitor_id}")
        await b.wait(
            "const c = document.getElementById('chart'); return c.dataset.drawn || c.textContent",
            "the chart",
        )
        # Today's uptime bar shows the outage (the older days ran nothing).
        bars = await b.js("return [...document.querySelectorAll('.bars .bar')].map(e => e.className)")
        assert len(bars) == 90 and bars[-1] == "bar b-outage" and set(bars[:-1]) == {"bar b-none"}, bars[-3:]
        await b.screenshots("monitor")

        # Test now on the edit form: each region's result beside the form, nothing saved.
        await b.go(f"{base}/console/monitors/{monitor_id}/edit")
        await b.js("document.getElementById('test-now').click()")
        regions = await b.wait(
            "return document.getElementById('test-results').dataset.done"
            " && [...document.querySelectorAll('#test-results tr[data-region]')].map(r => r.dataset.region)",
            "the test run's regions",
        )
        assert sorted(regions) == ["ap-south", "eu-west", "us-east"]

        # A maintenance window with its form: the API's error beside the field, then saved.
        await b.go(f"{base}/console/maintenance/new")
        await b.js(
            "const set = (n, v) => { document.getElementById('f-' + n).value = v; };"
            "set('name', 'nightly <b>db</b>'); set('tags', 'web'); set('days', 'mon, tue');"
            "set('start_time', '25:99'); set('duration', '3600');"
            "document.querySelector('form[data-action] button[type=submit]').click();"
        )
        error = await b.wait(
            "return document.getElementById('e-start_time').textContent", "the start time's error"
        )
        assert "02:30" in error
        await b.screenshots("maintenance-form")
        await b.js(
            "document.getElementById('f-start_time').value = '02:30';"
            "document.querySelector('form[data-action] button[type=submit]').click();"
        )
        await b.wait(
            "return location.pathname === '/console/maintenance'"
            " && document.querySelector('td')?.textContent === 'nightly <b>db</b>'",
            "the new window in the list",
        )
        await b.screenshots("maintenance")

        # A status page's sections with buttons: add two, a component picked by searching the
        # monitors, move the second up, remove the first, save; the edit form shows what was saved.
        await b.go(f"{base}/console/status-pages/new")
        await b.js(
            "document.getElementById('f-name').value = 'Shop';"
            "document.getElementById('f-slug').value = 'shop';"
            "const add = document.querySelector('[data-add-section]'); add.click(); add.click();"
            "const names = document.querySelectorAll('[data-section-name]');"
            "names[0].value = 'First'; names[1].value = 'Shop <b>';"
            "document.querySelectorAll('[data-add-component]')[1].click();"
        )
        # Saved before a monitor is chosen: the API's error shows on that component's row.
        await b.js("document.querySelector('form[data-action] button[type=submit]').click()")
        row_error = await b.wait(
            "return document.querySelector('[data-component] .row-error').textContent",
            "the component's error",
        )
        assert row_error == "monitor_id: required: a monitor id", row_error
        await b.js(
            "const q = document.querySelector('[data-monitor-search]'); q.value = 'shop';"
            "q.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        await b.wait(
            "return [...document.querySelectorAll('[data-monitor-pick] option')]"
            f".some(o => o.value === '{monitor_id}')",
            "the monitor found by the picker's search",
        )
        order = await b.js(
            "document.querySelector('[data-monitor-pick]').value = String(arguments[0]);"
            "document.querySelector('[data-display-name]').value = 'Web <i>';"
            "document.querySelector('[data-description]').value = 'The <u>shop</u>';"
            "const second = document.querySelectorAll('[data-section]')[1];"
            "const up = second.querySelector('.section-head [data-move=\"-1\"]'); up.click();"
            "const moved = document.activeElement === up;"
            "const first = document.querySelectorAll('[data-section]')[1];"
            "first.querySelector('.section-head [data-remove-row]').click();"
            "return [moved, up.getAttribute('aria-label'),"
            " [...document.querySelectorAll('[data-section-name]')].map(i => i.value)];",
            monitor_id,
        )
        assert order == [True, "Move Shop <b> up", ["Shop <b>"]], order
        await b.screenshots("status-page-form")
        await b.js("document.querySelector('form[data-action] button[type=submit]').click()")
        saved = await b.wait(
            "return /\\/edit$/.test(location.pathname) && document.querySelector('[data-section-name]')"
            " && [[...document.querySelectorAll('[data-section-name]')].map(i => i.value),"
            " document.querySelector('[data-monitor-pick]').value,"
            " document.querySelector('[data-display-name]').value,"
            " document.querySelector('[data-description]').value]",
            "the saved status page's editor",
        )
        assert saved == [["Shop <b>"], str(monitor_id), "Web <i>", "The <u>shop</u>"], saved

        # A channel's settings: the kind's fieldset, a field error beside its control, and
        # the untouched edit form keeps the secret URL it never shows.
        await b.go(f"{base}/console/channels/new")
        await b.js(
            "const kind = document.getElementById('f-kind'); kind.value = 'slack';"
            "kind.dispatchEvent(new Event('change', {bubbles: true}));"
            "document.getElementById('f-name').value = 'team';"
            "document.getElementById('k-slack-f-config.url').value = 'nope';"
            "document.querySelector('form[data-action] button[type=submit]').click();"
        )
        error = await b.wait(
            "return document.getElementById('k-slack-e-config.url').textContent", "the slack URL's error"
        )
        assert await b.js("return document.querySelector('[data-kind-settings=webhook]').disabled") is True
        await b.screenshots("channel-form")
        secret_url = "http://127.0.0.1:9/services/T0/B0/s3cretpart"
        await b.js(
            "document.getElementById('k-slack-f-config.url').value = arguments[0];"
            "document.querySelector('form[data-action] button[type=submit]').click();",
            secret_url,
        )
        await b.wait("return location.pathname === '/console/channels'", "the channel list")
        await b.screenshots("channels")
        channel = (await notify_store.list_channels(pool, limit=10))[0]
        await b.go(f"{base}/console/channels/{channel['id']}/edit")
        assert "s3cretpart" not in await b.js("return document.documentElement.outerHTML")
        await b.screenshots("channel-edit")
        await b.js("document.querySelector('form[data-action] button[type=submit]').click()")
        await b.wait("return location.pathname === '/console/channels'", "the channel list after saving")
        kept = await notify_store.get_channel(pool, channel["id"])
        assert kept is not None and kept["config"]["url"] == secret_url, error

        # A rule: its channel ticked by name, its monitor found by the picker's search and
        # added with a button (the focus back in the search box), saved.
        await b.go(f"{base}/console/rules/new")
        await b.js(
            "document.getElementById('f-name').value = 'page <b>ops</b>';"
            "document.querySelector('[data-field=channel_ids] [data-choice]').checked = true;"
            "document.querySelector('[data-field=events] [value=\"monitor.down\"]').checked = true;"
            "const q = document.querySelector('[data-field=monitor_ids] [data-monitor-find]');"
            "q.value = 'shop';"
            "q.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        add = f"[data-field=monitor_ids] [data-choose='{monitor_id}']"
        await b.wait(f'return document.querySelector("{add}")', "the monitor offered by the rule's search")
        chosen = await b.js(
            f'document.querySelector("{add}").click();'
            "return [document.activeElement.matches('[data-monitor-find]'),"
            " [...document.querySelectorAll('[data-field=monitor_ids] [data-chosen-id]')]"
            "  .map(li => [li.dataset.chosenId, li.querySelector('[data-chosen-name]').textContent])];"
        )
        assert chosen == [True, [[str(monitor_id), f"{XSS_NAME} (#{monitor_id})"]]], chosen
        await b.screenshots("rule-form")
        await b.js("document.querySelector('form[data-action] button[type=submit]').click()")
        await b.wait(
            "return location.pathname === '/console/rules'"
            " && document.querySelector('td')?.textContent === 'page <b>ops</b>'",
            "the new rule in the list",
        )
        rule = (await notify_store.list_rules(pool))[0]
        assert (rule["channel_ids"], rule["monitor_ids"], rule["events"]) == (
            [channel["id"]],
            [monitor_id],
            ["monitor.down"],
        ), rule
        await b.screenshots("rules")

        # A heartbeat: its ping URL shown once after saving, then its page and the list.
        await b.go(f"{base}/console/heartbeats/new")
        await b.js(
            "document.getElementById('f-name').value = 'backup <i>job</i>';"
            "document.getElementById('f-run_interval').value = '3600';"
            "document.querySelector('form[data-action] button[type=submit]').click();"
        )
        ping = await b.wait(
            "return !document.getElementById('shown').hidden"
            " && document.getElementById('shown-value').textContent",
            "the new heartbeat's ping URL",
        )
        assert "/api/v1/heartbeat/" in ping, ping
        await b.screenshots("heartbeat-form")
        await b.js("document.getElementById('continue').click()")
        await b.wait(
            "return /^\\/console\\/heartbeats\\/\\d+$/.test(location.pathname)", "the heartbeat's page"
        )
        await b.screenshots("heartbeat")
        await b.go(f"{base}/console/heartbeats")
        await b.screenshots("heartbeats")

        # Acknowledge the incident.
        await b.go(f"{base}/console/incidents")
        await b.wait("return document.querySelector('[data-incident-id] [data-api]')", "the open incident")
        await b.js("document.querySelector('[data-incident-id] button[data-done=Acknowledged]').click()")
        await b.wait(
            "return document.querySelector('[data-live=incidents] [data-field=status]')?.textContent"
            " === 'acknowledged'",
            "the acknowledged incident",
        )
        await b.screenshots("incidents")
        await b.js("document.querySelector('[data-live=incidents] a[href^=\"/console/incidents/\"]').click()")
        await b.wait(
            "return /^\\/console\\/incidents\\/\\d+$/.test(location.pathname)", "the incident's page"
        )
        await b.screenshots("incident")
        for page in ("fleet", "status-pages", "keys", "users", "audit"):
            await b.go(f"{base}/console/{page}")
            await b.screenshots(page)
        # The audit log names who made each change (the last page shown).
        logged = await b.js(
            "return [...document.querySelectorAll('tbody tr')].map(r => r.textContent).join('|')"
        )
        assert "user:ops" in logged and "/api/v1/notification-rules" in logged, logged

        # Log out.
        await b.js("document.getElementById('logout').click()")
        await b.wait("return location.pathname === '/login'", "the login form after logout")

        # A viewer: no edit controls, and a crafted request is refused.
        await _log_in(b, base, "watcher")
        assert await b.js("return document.getElementById('new-monitor')") is None
        await b.go(f"{base}/console/monitors/{monitor_id}")
        assert await b.js("return document.querySelectorAll('[data-api]').length") == 0
        status = await b.call(
            "POST",
            "/execute/async",
            {
                "script": "const done = arguments[arguments.length - 1];"
                "const token = document.querySelector('meta[name=csrf-token]').content;"
                "fetch('/api/v1/monitors/' + arguments[0] + '/pause',"
                " {method: 'POST', headers: {'X-CSRF-Token': token}}).then(r => done(r.status));",
                "args": [monitor_id],
            },
        )
        assert status == 403
        shots = {p.name for p in b.shots.glob("console-*.png")}
        expected = {f"console-{p}-{s}-{c}.png" for p in PAGES for s in SIZES for c in SCHEMES}
        assert shots == expected, (sorted(expected - shots), sorted(shots - expected))
    finally:
        # Leave the console first: its open WebSocket held the controller's shutdown for
        # its 30 s grace.
        with contextlib.suppress(AssertionError, aiohttp.ClientError):
            await b.go("about:blank")
        await target.stop()
        await stop_probes(agents)
        await running.stop()
