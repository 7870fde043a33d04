"""Browser check: a declarative journey in headless Chromium driven by Playwright (the
`browser` extra), pointed at the host's Chromium (Debian's `chromium`, or
PROBEFLEET_CHROMIUM): a maintained driver that gives web vitals and screenshots without
hand-written CDP.

Caps per run: the job's timeout for the whole journey; memory, by a watchdog that sums
the proportional memory (PSS) of this run's browser processes (found by a marker switch on the
command line) and kills them above `max_memory_mb`, with V8's heap capped below it; CPU,
by running the browser at the lowest priority (nice 19) and one renderer process. Web
vitals: LCP and CLS from PerformanceObserver, TTFB from the navigation timing, of the last
page. A failing run keeps a JPEG screenshot (at most 256 KiB, base64) in its details.

Source address: Chromium has no switch to bind its connections to a local address, so
with one the browser is pointed at a SOCKS5 relay of this run (_socks_relay, loopback,
CONNECT only) that opens each of the page's connections from that address. Loopback
targets go through it too (Playwright removes Chromium's implicit loopback bypass), and
host names are resolved by the relay, as a probe's other kinds resolve them. Chromium
cannot authenticate to a SOCKS5 proxy (no RFC 1929 username/password), so the relay
serves only connections from sockets of the probe's own user (the owner of the peer's
socket in /proc/net/tcp): another local user cannot borrow the probe's address through it
while a journey runs.
"""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import BrowserSpec, BrowserStep, Reason

REQUIRES = ("playwright",)
MAX_SCREENSHOT = 256 << 10
_VAR = re.compile(r"\{\{\s*secrets\.([A-Za-z0-9_-]+)\s*\}\}")
_VITALS_SCRIPT = """
window.__pfVitals = {lcp: null, cls: 0};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__pfVitals.lcp = e.renderTime || e.loadTime || e.startTime;
}).observe({type: 'largest-contentful-paint', buffered: true});
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.__pfVitals.cls += e.value;
}).observe({type: 'layout-shift', buffered: true});
"""
_READ_VITALS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const v = window.__pfVitals || {};
  return {lcp: v.lcp, cls: v.cls, ttfb: nav ? nav.responseStart - nav.requestStart : null};
}"""
_NET_REASONS = {
    "ERR_CONNECTION_REFUSED": Reason.CONNECTION_REFUSED,
    "ERR_NAME_NOT_RESOLVED": Reason.DNS_ERROR,
    "ERR_CONNECTION_RESET": Reason.CONNECTION_RESET,
    "ERR_CERT_": Reason.CERT_INVALID,
    "ERR_SSL_": Reason.TLS_ERROR,
    "ERR_TIMED_OUT": Reason.TIMEOUT,
    "ERR_ADDRESS_UNREACHABLE": Reason.NETWORK_UNREACHABLE,
    "ERR_UNSAFE_PORT": Reason.INVALID_TARGET,
}


def chromium_path() -> str | None:
    configured = os.environ.get("PROBEFLEET_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def available() -> bool:
    """The capability: a Chromium executable is there (the library is REQUIRES')."""
    return chromium_path() is not None


class _Failure(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _processes_with(marker: str) -> list[int]:
    """Pids of the browser started with `marker` and of all its descendants."""
    parents: dict[int, int] = {}
    roots: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(stat[1])
            if marker.encode() in (entry / "cmdline").read_bytes():
                roots.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return sorted(found)


def _memory_mb(pids: list[int]) -> float:
    """Proportional set size of the processes (shared pages split between them, so a
    browser's many processes are not counted once each for its shared libraries)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total / 1024


async def _watchdog(
    marker: str, limit_mb: int, state: dict[str, float], journey: asyncio.Task[Any] | None = None
) -> None:
    """Lowers the browser's priority once, then kills it when its memory passes the cap, and
    cancels `journey`: a Playwright call in flight when its browser dies may never return."""
    reniced: set[int] = set()
    while True:
        await asyncio.sleep(0.2)
        pids = await asyncio.to_thread(_processes_with, marker)
        for pid in set(pids) - reniced:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, 19)
            reniced.add(pid)
        used = await asyncio.to_thread(_memory_mb, pids)
        state["peak_mb"] = max(state.get("peak_mb", 0.0), used)
        if used > limit_mb:
            state["killed"] = used
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if journey is not None:
                state["cancelled"] = 1.0
                journey.cancel()
            return


def _fill(text: str, secrets: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(1) not in secrets:
            raise _Failure(Reason.VARIABLE_MISSING, f"{{{{secrets.{match.group(1)}}}}} is not defined")
        return secrets[match.group(1)]

    return _VAR.sub(sub, text)


async def _step(
    page: Any, step: BrowserStep, spec: BrowserSpec, console_errors: list[str], ms: float
) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        match step.action:
            case "goto":
                response = await page.goto(step.url or "", wait_until="load", timeout=ms)
                if response is not None and response.status >= 400:
                    raise _Failure(Reason.STATUS_MISMATCH, f"{step.url} answered HTTP {response.status}")
            case "click":
                await page.click(step.selector or "", timeout=ms)
            case "fill":
                await page.fill(step.selector or "", _fill(step.value or "", spec.secrets), timeout=ms)
            case "wait_for_selector":
                await page.wait_for_selector(step.selector or "", timeout=ms)
            case "wait_for_text":
                target = page.locator(step.selector) if step.selector else page.locator("body")
                await target.filter(has_text=step.value or "").first.wait_for(timeout=ms)
            case "assert_text":
                text = await (
                    page.inner_text(step.selector, timeout=ms) if step.selector else page.inner_text("body")
                )
                if (step.value or "") not in text:
                    raise _Failure(Reason.KEYWORD_MISSING, f"{step.value!r} not found")
            case "assert_no_console_errors":
                if console_errors:
                    raise _Failure(
                        Reason.CONSOLE_ERRORS, f"{len(console_errors)} console error(s): {console_errors[0]}"
                    )
    except PlaywrightTimeout:
        what = step.selector or step.value or step.url
        reason = Reason.TIMEOUT if step.action == "goto" else Reason.ELEMENT_MISSING
        raise _Failure(reason, f"{step.action} {what!r}: not there in time") from None


def _console(message: Any, errors: list[str]) -> None:
    """Keeps console errors, but the browser's own complaint about a missing favicon."""
    if message.type != "error":
        return
    url = str((message.location or {}).get("url", ""))
    if url.endswith("/favicon.ico"):
        return
    errors.append(message.text[:200])


# SOCKS5 (RFC 1928) reply codes for the relay's connect errors.
_SOCKS_REPLY = {
    Reason.CONNECTION_REFUSED: 5,
    Reason.NETWORK_UNREACHABLE: 3,
    Reason.DNS_ERROR: 4,
    Reason.TIMEOUT: 6,
}


async def _socks_connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    source_address: str,
    errors: list[BaseException],
) -> None:
    """Serves one SOCKS5 CONNECT without authentication: the target is dialled from
    `source_address` and the two connections are piped together."""
    version, methods = await reader.readexactly(2)
    await reader.readexactly(methods)
    if version != 5:
        writer.close()
        return
    writer.write(b"\x05\x00")
    _, command, _, kind = await reader.readexactly(4)
    if kind == 1:
        host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
    elif kind == 4:
        host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
    else:
        host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    if command != 1:
        writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
        writer.close()
        return
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            host, port, local_addr=(source_address, 0)
        )
    except OSError as exc:
        errors.append(exc)
        code = _SOCKS_REPLY.get(base.reason_for(exc), 1)
        writer.write(bytes([5, code, 0, 1]) + bytes(6))
        writer.close()
        return
    bound_host, bound_port = upstream_writer.get_extra_info("sockname")[:2]
    family = socket.AF_INET6 if ":" in bound_host else socket.AF_INET
    atyp = 4 if family == socket.AF_INET6 else 1
    writer.write(
        bytes([5, 0, 0, atyp]) + socket.inet_pton(family, bound_host) + struct.pack("!H", bound_port)
    )
    await asyncio.gather(base.pipe(reader, upstream_writer), base.pipe(upstream_reader, writer))


def _proc_net_address(host: str, port: int, *, v6: bool) -> str:
    """`host`:`port` as /proc/net/tcp (or tcp6, IPv4-mapped) writes it: the address as the
    kernel's 32-bit words in host byte order, in hex, then the port."""
    packed = socket.inet_pton(socket.AF_INET6, host) if ":" in host else socket.inet_aton(host)
    if v6 and len(packed) == 4:
        packed = bytes(10) + b"\xff\xff" + packed
    if not v6 and len(packed) != 4:
        return ""
    words = (packed[i : i + 4] for i in range(0, len(packed), 4))
    return "".join(f"{int.from_bytes(w, 'little'):08X}" for w in words) + f":{port:04X}"


def _socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid owning the TCP socket bound at `local` and connected to `remote` on this
    host (Linux' /proc/net/tcp and tcp6), or None when there is none to be seen. The kernel
    writes the tables a chunk at a time, walking them again for each: a socket can be
    missed while others open and close, so a miss is read again, up to three times."""
    for _ in range(3):
        for name, v6 in (("tcp", False), ("tcp6", True)):
            want = (_proc_net_address(*local, v6=v6), _proc_net_address(*remote, v6=v6))
            try:
                with open(f"/proc/net/{name}", buffering=1 << 20) as table:
                    lines = table.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 7 and (fields[1], fields[2]) == want:
                    return int(fields[7])
    return None


async def _own_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the relay's client (a loopback connection) is a socket of this process's
    user. Read in a thread: /proc/net/tcp lists every socket of the host."""
    peer = writer.get_extra_info("peername")
    local = writer.get_extra_info("sockname")
    if not peer or not local:
        return False
    owner = await asyncio.to_thread(_socket_owner, peer[:2], local[:2])
    return owner is not None and owner == os.geteuid()


@contextlib.asynccontextmanager
async def _socks_relay(source_address: str) -> AsyncIterator[tuple[str, list[BaseException]]]:
    """A SOCKS5 relay on a free loopback port for one run, serving this user's sockets only:
    its proxy URL, and the errors met connecting to targets (the browser only reports a
    failed tunnel)."""
    errors: list[BaseException] = []
    relays: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.add(task)
        try:
            if not await _own_user(writer):
                # Another local user's connection: closed before the SOCKS greeting.
                writer.close()
                return
            await _socks_connect(reader, writer, source_address, errors)
        except (OSError, asyncio.IncompleteReadError, UnicodeError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"socks5://127.0.0.1:{port}", errors
    finally:
        server.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


def _net_reason(message: str) -> Reason:
    for code, reason in _NET_REASONS.items():
        if code in message:
            return reason
    return Reason.PROTOCOL_ERROR


async def check(spec: BrowserSpec, *, timeout: float, source_address: str | None) -> Outcome:
    executable = chromium_path()
    if executable is None:
        return base.failed(
            Reason.BROWSER_UNAVAILABLE, "no Chromium on this probe (PROBEFLEET_CHROMIUM, chromium)"
        )
    if not source_address:
        return await _journey(spec, timeout, executable, None, [])
    async with _socks_relay(source_address) as (proxy, relay_errors):
        return await _journey(spec, timeout, executable, proxy, relay_errors)


def _relayed_reason(message: str, relay_errors: list[BaseException]) -> Reason:
    """The reason of a failed navigation; when the relay could not reach the target, its
    own error's (Chromium reports only that the SOCKS tunnel failed)."""
    if relay_errors and ("ERR_SOCKS" in message or "ERR_PROXY" in message or "ERR_TUNNEL" in message):
        return base.reason_for(relay_errors[-1])
    return _net_reason(message)


async def _journey(
    spec: BrowserSpec, timeout: float, executable: str, proxy: str | None, relay_errors: list[BaseException]
) -> Outcome:
    start = time.perf_counter()
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    marker = f"--probefleet-run={uuid.uuid4().hex}"
    heap_mb = max(64, spec.max_memory_mb // 2)
    args = [
        marker,
        "--no-sandbox",
        "--renderer-process-limit=1",
        f"--js-flags=--max-old-space-size={heap_mb}",
    ]
    state: dict[str, float] = {}
    steps: list[dict[str, object]] = []
    console_errors: list[str] = []
    details: dict[str, object] = {"steps": steps}
    failure: _Failure | None = None
    screenshot: bytes | None = None
    watchdog: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(timeout), async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=executable,
                args=args,
                headless=True,
                proxy={"server": proxy, "bypass": "<-loopback>"} if proxy else None,
            )
            watchdog = asyncio.create_task(
                _watchdog(marker, spec.max_memory_mb, state, asyncio.current_task())
            )
            try:
                page = await browser.new_page(
                    viewport={"width": spec.viewport_width, "height": spec.viewport_height}
                )
                await page.add_init_script(_VITALS_SCRIPT)
                page.on(
                    "console", lambda m: console_errors.append(m.text[:200]) if m.type == "error" else None
                )
                page.on("pageerror", lambda e: console_errors.append(str(e)[:200]))
                for i, step in enumerate(spec.steps, start=1):
                    if failure is not None:
                        steps.append({"step": i, "action": step.action, "result": "skipped"})
                        continue
                    t0 = time.perf_counter()
                    # The step's own wait ends before the journey's deadline, so that a
                    # missing element is reported as such, with its screenshot.
                    left = timeout - (t0 - start)
                    left_ms = max(1.0, (left - min(1.5, left / 5)) * 1000)
                    try:
                        await _step(page, step, spec, console_errors, left_ms)
                        steps.append(
                            {"step": i, "action": step.action, "result": "ok", "ms": base.elapsed_ms(t0)}
                        )
                    except _Failure as exc:
                        failure = _Failure(exc.reason, f"step {i} ({step.action}): {exc}")
                        steps.append(
                            {"step": i, "action": step.action, "result": "fail", "ms": base.elapsed_ms(t0)}
                        )
                        if spec.screenshot_on_failure:
                            screenshot = await _screenshot(page)
                    except PlaywrightError as exc:
                        if "killed" in state:
                            raise
                        text = str(exc).splitlines()[0][:200]
                        failure = _Failure(
                            _relayed_reason(text, relay_errors), f"step {i} ({step.action}): {text}"
                        )
                        steps.append(
                            {"step": i, "action": step.action, "result": "fail", "ms": base.elapsed_ms(t0)}
                        )
                        if spec.screenshot_on_failure:
                            screenshot = await _screenshot(page)
                with contextlib.suppress(PlaywrightError):
                    vitals = await page.evaluate(_READ_VITALS)
                    details["web_vitals"] = {k: round(v, 3) for k, v in vitals.items() if v is not None}
            finally:
                # Bounded: closing a browser the watchdog killed must not hang the check.
                with contextlib.suppress(PlaywrightError, TimeoutError):
                    async with asyncio.timeout(5):
                        await browser.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        # Only the watchdog's own cancel is absorbed; one from outside (a stopping probe) goes on.
        if not state.get("cancelled") or task is None or task.uncancel() > 0:
            raise
        failure = _Failure(
            Reason.RESOURCE_LIMIT,
            f"the browser used {state['killed']:.0f} MiB, over {spec.max_memory_mb} MiB",
        )
    except TimeoutError:
        failure = failure or _Failure(Reason.TIMEOUT, "the journey did not finish in time")
    except PlaywrightError as exc:
        if "killed" in state:
            failure = _Failure(
                Reason.RESOURCE_LIMIT,
                f"the browser used {state['killed']:.0f} MiB, over {spec.max_memory_mb} MiB",
            )
        else:
            failure = failure or _Failure(
                _relayed_reason(str(exc), relay_errors), str(exc).splitlines()[0][:300]
            )
    finally:
        if watchdog is not None:
            watchdog.cancel()
    if "killed" in state and (failure is None or failure.reason != Reason.RESOURCE_LIMIT):
        failure = _Failure(
            Reason.RESOURCE_LIMIT,
            f"the browser used {state['killed']:.0f} MiB, over {spec.max_memory_mb} MiB",
        )
    total = base.elapsed_ms(start)
    if "peak_mb" in state:
        details["peak_memory_mb"] = round(state["peak_mb"], 1)
    if console_errors:
        details["console_errors"] = console_errors[:10]
    timings: dict[str, float] = {"total": total}
    vitals_out = details.get("web_vitals")
    if isinstance(vitals_out, dict):
        timings.update({k: v for k, v in vitals_out.items() if k in ("lcp", "ttfb")})
    if failure is not None:
        if screenshot is not None:
            details["screenshot_jpeg_base64"] = base64.b64encode(screenshot).decode()
        for value in spec.secrets.values():
            if value:
                failure = _Failure(failure.reason, str(failure).replace(value, "<redacted>"))
        return base.failed(failure.reason, str(failure)[:300], timings=timings, details=details)
    return base.passed(total, spec.degraded_ms, timings=timings, details=details)


async def _screenshot(page: Any) -> bytes | None:
    """A JPEG of the viewport, at lower quality until it fits MAX_SCREENSHOT (or none)."""
    from playwright.async_api import Error as PlaywrightError

    for quality in (60, 35, 15):
        try:
            data: bytes = await page.screenshot(type="jpeg", quality=quality, timeout=3000)
        except PlaywrightError:
            return None
        if len(data) <= MAX_SCREENSHOT:
            return data
    return None
