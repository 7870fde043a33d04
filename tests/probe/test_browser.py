"""browser against a real aiohttp app on loopback, in Debian's Chromium (installed when
missing, as tests/browser does; skipped with the reason when it cannot be)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe import checkers
from probefleet.probe.checkers import CHECKERS, browser
from probefleet.shared.wire import BrowserSpec, BrowserStep, Reason, Status

from .by_hand import probe_check
from .conftest import start_app
from .test_redis import free_port

SECRET = "hunter2-browser-secret"
LOGIN = """<!doctype html><html><body>
<h1>Shop</h1>
<form id="login"><input id="user"><input id="pw" type="password">
<button id="go" type="button">Log in</button></form>
<div id="out"></div>
<script>
document.getElementById('go').onclick = () => {
  const ok = document.getElementById('pw').value === 'SECRET';
  setTimeout(() => { document.getElementById('out').textContent = ok ? 'Welcome back' : 'Denied'; }, 50);
};
</script></body></html>""".replace("SECRET", SECRET)
BROKEN = (
    "<!doctype html><html><body><p>Broken page</p>"
    "<script>console.error('boom'); undefinedCall();</script></body></html>"
)
# 64 MiB a step outside V8's heap (typed arrays, every page written), so the page grows
# until the watchdog stops it whatever the cap: arrays on the heap stop at V8's heap limit
# (half the cap), and the renderer crashes (Target crashed) unless the browser's own
# memory happens to make up the other half.
HOG = (
    "<!doctype html><html><body><script>const a = [];"
    " setInterval(() => { a.push(new Uint8Array(64 << 20).fill(1)); }, 10);"
    "</script>hog</body></html>"
)


def _ensure_chromium() -> None:
    if browser.chromium_path() is None:
        if not shutil.which("apt-get"):
            pytest.skip("chromium missing and apt-get is not available to install it")
        try:
            subprocess.run(
                "apt-get update && apt-get install -y chromium",
                shell=True,
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install chromium with apt-get: {e}")


def _page(status: int, text: str = "", content_type: str = "text/html") -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text or None, content_type=content_type)

    return handler


async def _peer(request: web.Request) -> web.Response:
    return web.Response(text=f"<p id='peer'>{request.remote}</p>", content_type="text/html")


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[str]:
    _ensure_chromium()
    app = web.Application()
    app.router.add_get("/", _page(200, LOGIN))
    app.router.add_get("/broken", _page(200, BROKEN))
    app.router.add_get("/hog", _page(200, HOG))
    app.router.add_get("/missing", _page(404, "no", "text/plain"))
    app.router.add_get("/favicon.ico", _page(204))
    app.router.add_get("/peer", _peer)
    runner, port = await start_app(app)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def run(spec: BrowserSpec, budget: float = 20.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["browser"](spec, timeout=budget, source_address=None)


def _login(site: str, password: str = "{{secrets.pw}}") -> list[BrowserStep]:
    return [
        BrowserStep(action="goto", url=f"{site}/"),
        BrowserStep(action="fill", selector="#user", value="probe"),
        BrowserStep(action="fill", selector="#pw", value=password),
        BrowserStep(action="click", selector="#go"),
        BrowserStep(action="wait_for_text", selector="#out", value="Welcome"),
        BrowserStep(action="assert_text", selector="h1", value="Shop"),
        BrowserStep(action="assert_no_console_errors"),
    ]


async def test_a_journey_passes_with_web_vitals(site: str) -> None:
    out = await run(BrowserSpec(steps=_login(site), secrets={"pw": SECRET}))
    assert out.status == Status.OK, out
    assert [s["result"] for s in out.details["steps"]] == ["ok"] * 7  # type: ignore[union-attr]
    vitals = out.details["web_vitals"]
    assert isinstance(vitals, dict) and "ttfb" in vitals and "cls" in vitals
    assert out.details["peak_memory_mb"] > 0  # type: ignore[operator]
    assert "browser" in checkers.capabilities()


async def test_a_wrong_password_fails_at_the_wait_with_a_screenshot(site: str) -> None:
    spec = BrowserSpec(steps=_login(site), secrets={"pw": "wrong-" + SECRET})
    out = await run(spec, budget=8.0)
    assert out.reason == Reason.ELEMENT_MISSING, out
    assert out.message.startswith("step 5 (wait_for_text)")
    assert [s["result"] for s in out.details["steps"]][4:] == ["fail", "skipped", "skipped"]  # type: ignore[union-attr]
    shot = base64.b64decode(str(out.details["screenshot_jpeg_base64"]))
    assert shot[:2] == b"\xff\xd8" and len(shot) <= browser.MAX_SCREENSHOT
    assert SECRET not in repr(out)


async def test_console_errors_fail_their_assertion_run_by_hand(site: str, tmp_path: Path) -> None:
    """Through `probefleet probe check --kind browser --spec-file` (the kind's one run by hand)."""
    steps = [{"action": "goto", "url": f"{site}/broken"}, {"action": "assert_no_console_errors"}]
    code, out = await probe_check("browser", {"steps": steps, "screenshot_on_failure": False}, tmp_path)
    assert code == 1 and out["reason"] == "console_errors" and "boom" in out["message"], out
    assert "screenshot_jpeg_base64" not in out["details"]


async def test_a_page_answering_404_and_a_refused_connection(site: str) -> None:
    missing = await run(BrowserSpec(steps=[BrowserStep(action="goto", url=f"{site}/missing")]))
    assert missing.reason == Reason.STATUS_MISMATCH
    closed = free_port()  # not 9: Chromium refuses such ports itself (ERR_UNSAFE_PORT)
    refused = await run(BrowserSpec(steps=[BrowserStep(action="goto", url=f"http://127.0.0.1:{closed}/")]))
    assert refused.reason == Reason.CONNECTION_REFUSED, refused


async def test_it_browses_from_the_probe_source_address(site: str) -> None:
    """Chromium cannot bind an address; its connections go through the run's SOCKS5 relay,
    and the server sees the region's address."""
    steps = [
        BrowserStep(action="goto", url=f"{site}/peer"),
        BrowserStep(action="assert_text", selector="#peer", value="127.0.0.12"),
    ]
    out = await CHECKERS["browser"](BrowserSpec(steps=steps), timeout=20.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
    closed = free_port()
    refused = await CHECKERS["browser"](
        BrowserSpec(
            steps=[BrowserStep(action="goto", url=f"http://127.0.0.1:{closed}/")], screenshot_on_failure=False
        ),
        timeout=20.0,
        source_address="127.0.0.12",
    )
    assert refused.reason == Reason.CONNECTION_REFUSED, refused
    unbound = await CHECKERS["browser"](
        BrowserSpec(steps=steps, screenshot_on_failure=False), timeout=20.0, source_address="192.0.2.1"
    )
    assert unbound.reason == Reason.NETWORK_UNREACHABLE, unbound


async def test_a_page_over_the_memory_cap_is_stopped(site: str) -> None:
    steps = [
        BrowserStep(action="goto", url=f"{site}/hog"),
        BrowserStep(action="wait_for_text", value="never"),
    ]
    out = await run(BrowserSpec(steps=steps, max_memory_mb=300, screenshot_on_failure=False), budget=30.0)
    assert out.reason == Reason.RESOURCE_LIMIT, out


def test_the_api_checks_each_step_has_what_its_action_needs() -> None:
    body = {"name": "b", "type": "browser", "steps": [{"action": "goto", "url": "https://shop.example/"}]}
    assert isinstance(monitor_config.parse(body, ["eu"]).spec, BrowserSpec)
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse(
            {**body, "steps": [{"action": "click"}, {"action": "goto", "url": "file:///etc/passwd"}]}, ["eu"]
        )
    assert {"steps[0].selector", "steps[1].url"} <= caught.value.details.keys()
    with pytest.raises(ValidationError):
        monitor_config.parse({**body, "steps": [{"action": "evaluate", "value": "alert(1)"}]}, ["eu"])


async def test_a_probe_without_chromium_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_CHROMIUM", "/nonexistent/chromium")
    assert "browser" not in checkers.capabilities()
    out = await run(BrowserSpec(steps=[BrowserStep(action="goto", url="http://127.0.0.1/")]))
    assert out.reason == Reason.BROWSER_UNAVAILABLE
